//! The engine and the AdmissionReview layer on the requests kube-apiserver v1.36.2 really sent
//! (`tests/fixtures/admission/`, see its README).
//!
//! For every captured request: the response echoes apiVersion and uid; the patch has no `remove` op, applies
//! cleanly to `request.object`, and the result is a valid `k8s_openapi` Pod with exactly the expected env, volumes
//! and mounts, with everything the API server sent still there; a second pass over the patched pod is empty. The
//! patches and warnings are snapshotted, so any change to them shows up in review.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use json_patch::PatchOperation;
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};
use wi_contract::*;
use wi_webhook::admission;
use wi_webhook::config::Config;
use wi_webhook::lookup::StaticLookup;
use wi_webhook::mutate::{Inputs, ServiceAccount, mutate};
use wi_webhook::review::{AdmissionReview, decode_patch};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn read_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    wi_contract::yaml::from_str(&text).unwrap()
}

fn config() -> Config {
    Config {
        tenant_id: Some(TENANT.to_owned()),
        ..Config::default()
    }
}

/// What a fixture must come out with, beyond what holds for all of them.
struct Expect {
    file: &'static str,
    skipped: &'static [&'static str],
    expiration: i64,
    /// Env vars the user set, which must keep their value: (container, name, value).
    user_env: &'static [(&'static str, &'static str, &'static str)],
    client_id: Option<&'static str>,
    warnings: &'static [&'static str],
}

const SA_CLIENT: &str = "dc93f674-70ec-43e3-be7b-bf11ac753aa3";
const SA_TENANT: &str = "15c361b7-5906-4328-b3f0-4ff62413e436";

const CASES: &[Expect] = &[
    Expect {
        file: "01-plain-pod",
        skipped: &[],
        expiration: 3600,
        user_env: &[],
        client_id: Some(SA_CLIENT),
        warnings: &[],
    },
    Expect {
        file: "02-init-containers-user-client-id",
        skipped: &[],
        expiration: 3600,
        user_env: &[("app", ENV_CLIENT_ID, "76adb878-a0df-48e0-a76d-cf5ee3bf0200")],
        client_id: Some(SA_CLIENT),
        warnings: &[],
    },
    Expect {
        file: "03-native-sidecar",
        skipped: &[],
        expiration: 3600,
        user_env: &[],
        client_id: Some(SA_CLIENT),
        warnings: &[],
    },
    Expect {
        file: "04-deployment-pod",
        skipped: &[],
        expiration: 3600,
        user_env: &[],
        client_id: Some(SA_CLIENT),
        warnings: &[],
    },
    Expect {
        file: "05-skip-containers-token-expiration",
        skipped: &["sidecar", "istio-proxy"],
        expiration: 7200,
        user_env: &[],
        client_id: Some(SA_CLIENT),
        warnings: &[],
    },
    Expect {
        file: "06-dry-run-server",
        skipped: &[],
        expiration: 3600,
        user_env: &[],
        client_id: Some(SA_CLIENT),
        warnings: &[],
    },
    Expect {
        file: "07-default-sa-no-annotations",
        skipped: &[],
        expiration: 3600,
        user_env: &[],
        client_id: None,
        warnings: &["ServiceAccount wi-fixtures/default has no azure.workload.identity/client-id annotation"],
    },
    Expect {
        file: "08-inject-proxy-sidecar",
        skipped: &[],
        expiration: 3600,
        user_env: &[],
        client_id: Some(SA_CLIENT),
        warnings: &["the token proxy sidecar is not available"],
    },
    Expect {
        file: "09-preexisting-token-volume",
        skipped: &[],
        expiration: 3600,
        user_env: &[],
        client_id: Some(SA_CLIENT),
        warnings: &[],
    },
    Expect {
        file: "10-csi-volume",
        skipped: &[],
        expiration: 3600,
        user_env: &[],
        client_id: Some(SA_CLIENT),
        warnings: &[],
    },
    Expect {
        file: "11-job-pod",
        skipped: &[],
        expiration: 3600,
        user_env: &[],
        client_id: Some(SA_CLIENT),
        warnings: &[],
    },
    Expect {
        file: "12-plain-pod-v1beta1",
        skipped: &[],
        expiration: 3600,
        user_env: &[],
        client_id: Some(SA_CLIENT),
        warnings: &[],
    },
];

/// Runs the admission path the server runs (opt-in, lookups, engine, response), with the ServiceAccount from
/// `serviceaccounts/` and the namespace labels and class given.
fn admit(body: &[u8], namespace_labels: Option<&BTreeMap<String, String>>, spc: Option<&Value>) -> (Value, Value) {
    let review = AdmissionReview::parse(body).unwrap();
    let pod = review.pod_create().expect("every fixture is a pod CREATE");
    let sa_path = fixtures().join(format!("admission/serviceaccounts/{}.json", pod.service_account));
    let sa = ServiceAccount::from_object(&read_json(&sa_path)).unwrap();
    assert_eq!(sa.namespace, pod.namespace);
    let mut lookup = StaticLookup {
        service_accounts: vec![sa],
        ..StaticLookup::default()
    };
    if let Some(labels) = namespace_labels {
        lookup.namespaces.insert(pod.namespace.to_owned(), labels.clone());
    }
    if let Some(spc) = spc {
        let mut spc = spc.clone();
        spc["metadata"]["namespace"] = json!(pod.namespace);
        lookup.secret_provider_classes.push(spc);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let (response, _) = runtime.block_on(admission::review(&review, &lookup, &config()));
    (
        review.request.object.clone().unwrap(),
        serde_json::to_value(response).unwrap(),
    )
}

fn mutate_again(pod: &Value) -> Vec<PatchOperation> {
    let name = pod["spec"]["serviceAccountName"].as_str().unwrap();
    let sa = ServiceAccount::from_object(&read_json(
        &fixtures().join(format!("admission/serviceaccounts/{name}.json")),
    ))
    .unwrap();
    let spc = pod["metadata"]["annotations"]
        .get(SECRET_PROVIDER_CLASS_ANNOTATION)
        .map(|_| read_yaml(&fixtures().join("extra/secretproviderclass-kv.yaml")));
    let inputs = Inputs {
        namespace_labels: None,
        service_account: &sa,
        secret_provider_class: spc.as_ref().into(),
    };
    mutate(pod, &inputs, &config())
        .unwrap()
        .patch
        .to_json_patch()
        .unwrap()
        .0
}

/// Everything in `original` is in `patched` unchanged; lists may only have grown at the end.
fn assert_preserved(original: &Value, patched: &Value, at: &str) {
    match (original, patched) {
        (Value::Object(o), Value::Object(p)) => {
            for (k, v) in o {
                let child = p.get(k).unwrap_or_else(|| panic!("{at}/{k} was removed"));
                assert_preserved(v, child, &format!("{at}/{k}"));
            }
        }
        (Value::Array(o), Value::Array(p)) => {
            assert!(p.len() >= o.len(), "{at} lost items");
            for (i, (ov, pv)) in o.iter().zip(p).enumerate() {
                assert_preserved(ov, pv, &format!("{at}/{i}"));
            }
        }
        _ => assert_eq!(original, patched, "{at} changed"),
    }
}

fn env_named<'a>(c: &'a Container, name: &str) -> Vec<&'a str> {
    c.env
        .iter()
        .flatten()
        .filter(|e| e.name == name)
        .map(|e| e.value.as_deref().unwrap_or("<valueFrom>"))
        .collect()
}

fn check_fixture(case: &Expect) {
    let path = fixtures().join(format!("admission/{}.json", case.file));
    let body = std::fs::read(&path).unwrap();
    let request: Value = serde_json::from_slice(&body).unwrap();
    let (original, response) = admit(&body, None, None);

    assert_eq!(response["apiVersion"], request["apiVersion"], "{}", case.file);
    assert_eq!(response["kind"], "AdmissionReview");
    assert_eq!(response["response"]["uid"], request["request"]["uid"]);
    assert_eq!(response["response"]["allowed"], true, "{}: {response}", case.file);
    let warnings: Vec<String> = serde_json::from_value(
        response["response"]
            .get("warnings")
            .cloned()
            .unwrap_or_else(|| json!([])),
    )
    .unwrap();
    assert_eq!(warnings.len(), case.warnings.len(), "{}: {warnings:?}", case.file);
    for expected in case.warnings {
        assert!(
            warnings.iter().any(|w| w.contains(expected)),
            "{}: {warnings:?}",
            case.file
        );
    }

    let patch = decode_patch(&response).unwrap().expect("a patch");
    assert!(
        !patch.0.iter().any(|op| matches!(op, PatchOperation::Remove(_))),
        "{}: remove op",
        case.file
    );
    insta::assert_json_snapshot!(case.file, json!({"patch": patch, "warnings": warnings}));

    let mut patched = original.clone();
    json_patch::patch(&mut patched, &patch).unwrap();
    assert_preserved(&original, &patched, "");
    let pod: Pod = serde_json::from_value(patched.clone()).unwrap();
    let spec = pod.spec.as_ref().unwrap();

    let token_volumes: Vec<_> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| v.name == TOKEN_VOLUME)
        .collect();
    assert_eq!(token_volumes.len(), 1, "{}", case.file);
    let source = token_volumes[0].projected.as_ref().unwrap().sources.as_ref().unwrap()[0]
        .service_account_token
        .as_ref()
        .unwrap();
    assert_eq!(source.audience.as_deref(), Some(DEFAULT_AUDIENCE));
    assert_eq!(source.expiration_seconds, Some(case.expiration));
    assert_eq!(source.path, TOKEN_FILE);

    let containers = spec.init_containers.iter().flatten().chain(&spec.containers);
    let originals: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .flat_map(|k| original["spec"][k].as_array().into_iter().flatten())
        .collect();
    for (container, before) in containers.zip(originals) {
        if case.skipped.contains(&container.name.as_str()) {
            assert_eq!(&serde_json::to_value(container).unwrap(), before, "{}", case.file);
            continue;
        }
        let user = |name: &str| {
            case.user_env
                .iter()
                .find(|(c, n, _)| *c == container.name && *n == name)
                .map(|(_, _, v)| *v)
        };
        let expected = [
            (ENV_CLIENT_ID, user(ENV_CLIENT_ID).or(case.client_id)),
            (
                ENV_TENANT_ID,
                Some(SA_TENANT).filter(|_| case.client_id.is_some()).or(Some(TENANT)),
            ),
            (ENV_FEDERATED_TOKEN_FILE, Some(TOKEN_FILE_PATH)),
            (ENV_AUTHORITY_HOST, Some("https://login.microsoftonline.com/")),
        ];
        for (name, value) in expected {
            let found = env_named(container, name);
            assert_eq!(
                found,
                value.into_iter().collect::<Vec<_>>(),
                "{} {}",
                case.file,
                container.name
            );
        }
        let mounts: Vec<_> = container
            .volume_mounts
            .iter()
            .flatten()
            .filter(|m| m.name == TOKEN_VOLUME)
            .collect();
        assert_eq!(mounts.len(), 1, "{} {}", case.file, container.name);
        assert_eq!(mounts[0].mount_path, TOKEN_MOUNT_PATH);
        assert_eq!(mounts[0].read_only, Some(true));
    }

    let again = mutate_again(&patched);
    assert!(again.is_empty(), "{}: second pass {again:?}", case.file);
}

#[test]
fn every_captured_request_is_mutated_correctly() {
    let mut seen: Vec<String> = std::fs::read_dir(fixtures().join("admission"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .map(|n| n.trim_end_matches(".json").to_owned())
        .collect();
    seen.sort();
    let covered: Vec<String> = CASES.iter().map(|c| c.file.to_owned()).collect();
    assert_eq!(seen, covered, "every fixture has an expectation");
    for case in CASES {
        check_fixture(case);
    }
}

#[test]
fn raw_bodies_give_the_same_answer_as_the_pretty_ones() {
    for case in CASES {
        let pretty = std::fs::read(fixtures().join(format!("admission/{}.json", case.file))).unwrap();
        let raw = std::fs::read(fixtures().join(format!("admission/raw/{}.json", case.file))).unwrap();
        assert_eq!(admit(&pretty, None, None).1, admit(&raw, None, None).1, "{}", case.file);
    }
}

#[test]
fn dry_run_is_answered_like_a_real_create() {
    let dry = std::fs::read(fixtures().join("admission/06-dry-run-server.json")).unwrap();
    let review = AdmissionReview::parse(&dry).unwrap();
    assert_eq!(review.request.dry_run, Some(true));
    let (_, response) = admit(&dry, None, None);
    let mut real: Value = serde_json::from_slice(&dry).unwrap();
    real["request"]["dryRun"] = json!(false);
    real["request"]["options"].as_object_mut().unwrap().remove("dryRun");
    let (_, real_response) = admit(&serde_json::to_vec(&real).unwrap(), None, None);
    assert!(decode_patch(&response).unwrap().is_some());
    assert_eq!(response, real_response);
}

#[test]
fn an_unlabelled_pod_in_a_labelled_namespace_is_mutated_and_one_labelled_false_is_not() {
    let mut request = read_json(&fixtures().join("admission/01-plain-pod.json"));
    let namespace = read_yaml(&fixtures().join("extra/namespace-labelled.yaml"));
    let labels = wi_webhook::mutate::namespace_labels(&namespace).unwrap();

    request["request"]["object"]["metadata"]["labels"] = json!({"app": "plain"});
    let body = serde_json::to_vec(&request).unwrap();
    assert!(decode_patch(&admit(&body, None, None).1).unwrap().is_none());
    assert!(decode_patch(&admit(&body, Some(&labels), None).1).unwrap().is_some());

    request["request"]["object"]["metadata"]["labels"] = json!({USE_LABEL: "false"});
    let body = serde_json::to_vec(&request).unwrap();
    assert!(decode_patch(&admit(&body, Some(&labels), None).1).unwrap().is_none());
}

#[test]
fn csi_delivery_on_a_captured_pod() {
    let mut request = read_json(&fixtures().join("admission/02-init-containers-user-client-id.json"));
    request["request"]["object"]["metadata"]["annotations"][SECRET_PROVIDER_CLASS_ANNOTATION] = json!("azure-kv-spc");
    request["request"]["object"]["metadata"]["annotations"][SECRETS_CONTAINERS_ANNOTATION] = json!("app;worker");
    let spc = read_yaml(&fixtures().join("extra/secretproviderclass-kv.yaml"));
    let body = serde_json::to_vec(&request).unwrap();
    let (original, response) = admit(&body, None, Some(&spc));
    assert!(response["response"].get("warnings").is_none(), "{response}");
    let patch = decode_patch(&response).unwrap().unwrap();
    insta::assert_json_snapshot!("02-with-csi-secrets", patch);
    let mut patched = original.clone();
    json_patch::patch(&mut patched, &patch).unwrap();
    let pod: Pod = serde_json::from_value(patched.clone()).unwrap();
    let spec = pod.spec.unwrap();
    let csi = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == SECRETS_VOLUME)
        .and_then(|v| v.csi.clone())
        .unwrap();
    assert_eq!(csi.driver, CSI_DRIVER);
    assert_eq!(csi.read_only, Some(true));
    assert_eq!(
        csi.volume_attributes,
        Some(BTreeMap::from([(
            "secretProviderClass".to_owned(),
            "azure-kv-spc".to_owned()
        )]))
    );
    let has_secrets = |c: &Container| {
        c.volume_mounts.iter().flatten().any(|m| {
            m.name == SECRETS_VOLUME && m.mount_path == DEFAULT_SECRETS_MOUNT_PATH && m.read_only == Some(true)
        })
    };
    let names: Vec<(&str, bool)> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .map(|c| (c.name.as_str(), has_secrets(c)))
        .collect();
    assert_eq!(
        names,
        [
            ("init-schema", false),
            ("init-config", false),
            ("app", true),
            ("worker", true)
        ]
    );
    assert!(mutate_again(&patched).is_empty());
}

#[test]
fn sidecar_delivery_on_a_captured_pod() {
    // A pod with two init containers of its own: the sidecar goes first, so they too start after the first sync.
    let mut request = read_json(&fixtures().join("admission/02-init-containers-user-client-id.json"));
    let annotations = &mut request["request"]["object"]["metadata"]["annotations"];
    annotations[SECRET_PROVIDER_CLASS_ANNOTATION] = json!("azure-kv-spc");
    annotations[SECRETS_DELIVERY_ANNOTATION] = json!("sidecar");
    annotations[SECRETS_CONTAINERS_ANNOTATION] = json!("app;worker");
    let spc = read_yaml(&fixtures().join("extra/secretproviderclass-kv.yaml"));
    let body = serde_json::to_vec(&request).unwrap();
    let (original, response) = admit(&body, None, Some(&spc));
    assert!(response["response"].get("warnings").is_none(), "{response}");
    let patch = decode_patch(&response).unwrap().unwrap();
    insta::assert_json_snapshot!("02-with-sidecar-secrets", patch);
    let mut patched = original.clone();
    json_patch::patch(&mut patched, &patch).unwrap();
    let pod: Pod = serde_json::from_value(patched.clone()).unwrap();
    let spec = pod.spec.unwrap();
    let init = spec.init_containers.clone().unwrap();
    let names: Vec<&str> = init.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["wi-sidecar", "init-schema", "init-config"]);
    let sidecar = &init[0];
    assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
    assert!(sidecar.startup_probe.is_some());
    let config = sidecar
        .env
        .iter()
        .flatten()
        .find(|e| e.name == ENV_SECRETS_CONFIG)
        .and_then(|e| e.value.clone())
        .unwrap();
    let parsed = wi_contract::spc::parse(&config).unwrap();
    let objects: Vec<&str> = parsed.objects.iter().map(|o| o.file_name.as_str()).collect();
    assert_eq!(objects, ["db-password", "tls.pem"]);
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == SECRETS_VOLUME)
        .and_then(|v| v.empty_dir.clone())
        .unwrap();
    assert_eq!(volume.medium.as_deref(), Some("Memory"));
    for c in &spec.containers {
        let mount = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == SECRETS_VOLUME)
            .unwrap();
        assert_eq!(mount.read_only, Some(true), "{}", c.name);
    }
    assert!(mutate_again(&patched).is_empty());
}

#[test]
fn a_node_identity_class_is_warned_about() {
    let mut request = read_json(&fixtures().join("admission/01-plain-pod.json"));
    request["request"]["object"]["metadata"]["annotations"] = json!({SECRET_PROVIDER_CLASS_ANNOTATION: "azure-kv-spc"});
    let spc = read_yaml(&fixtures().join("extra/secretproviderclass-node-identity.yaml"));
    let (_, response) = admit(&serde_json::to_vec(&request).unwrap(), None, Some(&spc));
    let warnings = response["response"]["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].as_str().unwrap().contains("useVMManagedIdentity"));
}
