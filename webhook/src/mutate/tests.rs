use std::collections::BTreeMap;

use json_patch::PatchOperation;
use serde_json::{Map, json};

use super::*;
use crate::config::Cloud;
use crate::diagnostics::{Code, Subject, Warning};
use rstest::rstest;

const CLIENT: &str = "dc93f674-70ec-43e3-be7b-bf11ac753aa3";
const OTHER_CLIENT: &str = "76adb878-a0df-48e0-a76d-cf5ee3bf0200";
const TENANT: &str = "15c361b7-5906-4328-b3f0-4ff62413e436";

fn sa(annotations: &[(&str, &str)]) -> ServiceAccount {
    ServiceAccount {
        name: "app-sa".into(),
        namespace: "apps".into(),
        annotations: annotations.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
        labels: BTreeMap::new(),
    }
}

fn annotated_sa() -> ServiceAccount {
    sa(&[(CLIENT_ID_ANNOTATION, CLIENT)])
}

fn config() -> Config {
    Config {
        tenant_id: Some(TENANT.into()),
        ..Config::default()
    }
}

fn pod(annotations: Value, containers: Value) -> Value {
    json!({
        "metadata": {"name": "p", "namespace": "apps",
                     "labels": {USE_LABEL: "true"}, "annotations": annotations},
        "spec": {"serviceAccountName": "app-sa", "containers": containers},
    })
}

fn run(pod: &Value, sa: &ServiceAccount, spc: Option<&Value>) -> Result<Mutation, Denial> {
    let inputs = Inputs {
        namespace_labels: None,
        service_account: sa,
        secret_provider_class: spc.into(),
    };
    mutate(pod, &inputs, &config())
}

fn apply(pod: &Value, mutation: &Mutation) -> Value {
    let mut out = pod.clone();
    json_patch::patch(&mut out, &mutation.patch.to_json_patch().unwrap()).unwrap();
    out
}

fn env_of(pod: &Value, container: usize) -> Vec<(String, String)> {
    pod["spec"]["containers"][container]["env"]
        .as_array()
        .map(|env| {
            env.iter()
                .map(|e| {
                    (
                        e["name"].as_str().unwrap().to_owned(),
                        e["value"].as_str().unwrap_or("<valueFrom>").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn env_value(pod: &Value, container: usize, name: &str) -> Option<String> {
    env_of(pod, container)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
}

#[rstest]
#[case(Some("true"), None, true)]
#[case(Some("false"), Some("true"), false)]
#[case(None, Some("true"), true)]
#[case(None, Some("false"), false)]
#[case(None, None, false)]
#[case(Some("True"), None, false)]
#[case(Some("yes"), Some("true"), true)]
fn opt_in_by_pod_or_namespace_label(
    #[case] pod_label: Option<&str>,
    #[case] namespace_label: Option<&str>,
    #[case] injected: bool,
) {
    let mut p = pod(json!({}), json!([{"name": "app"}]));
    match pod_label {
        Some(v) => p["metadata"]["labels"][USE_LABEL] = json!(v),
        None => p["metadata"]["labels"] = json!({"app": "x"}),
    }
    let ns: BTreeMap<String, String> = namespace_label
        .map(|v| (USE_LABEL.to_owned(), v.to_owned()))
        .into_iter()
        .collect();
    let sa = annotated_sa();
    let inputs = Inputs {
        namespace_labels: Some(&ns),
        service_account: &sa,
        secret_provider_class: ClassLookup::NotFound,
    };
    let m = mutate(&p, &inputs, &config()).unwrap();
    assert_eq!(!m.patch.is_empty(), injected, "{m:?}");
}

#[test]
fn a_pod_that_did_not_opt_in_is_left_alone_whatever_it_carries() {
    let p = json!({"metadata": {"annotations": {SECRET_PROVIDER_CLASS_ANNOTATION: "x"}}, "spec": "garbage"});
    let m = run(&p, &annotated_sa(), None).unwrap();
    assert!(m.patch.is_empty() && m.warnings.is_empty());
}

#[test]
fn injects_env_mount_volume_and_marker() {
    let p = pod(
        json!({}),
        json!([{"name": "app", "env": [{"name": "A", "value": "1"}]}]),
    );
    let out = apply(&p, &run(&p, &annotated_sa(), None).unwrap());
    assert_eq!(
        env_of(&out, 0),
        vec![
            ("A".into(), "1".into()),
            (ENV_CLIENT_ID.into(), CLIENT.into()),
            (ENV_TENANT_ID.into(), TENANT.into()),
            (ENV_FEDERATED_TOKEN_FILE.into(), TOKEN_FILE_PATH.into()),
            (ENV_AUTHORITY_HOST.into(), "https://login.microsoftonline.com/".into()),
        ]
    );
    assert_eq!(
        out["spec"]["containers"][0]["volumeMounts"],
        json!([{"name": TOKEN_VOLUME, "mountPath": TOKEN_MOUNT_PATH, "readOnly": true}])
    );
    assert_eq!(
        out["spec"]["volumes"],
        json!([{"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
            "audience": DEFAULT_AUDIENCE, "expirationSeconds": 3600, "path": TOKEN_FILE}}]}}])
    );
    assert!(out["metadata"]["annotations"][INJECTED_ANNOTATION].is_string());
}

#[rstest]
#[case(Cloud::UsGovernment, "https://login.microsoftonline.us/")]
#[case(Cloud::China, "https://login.chinacloudapi.cn/")]
fn authority_host_follows_the_cloud(#[case] cloud: Cloud, #[case] host: &str) {
    let p = pod(json!({}), json!([{"name": "app"}]));
    let sa = annotated_sa();
    let inputs = Inputs {
        namespace_labels: None,
        service_account: &sa,
        secret_provider_class: ClassLookup::NotFound,
    };
    let cfg = Config { cloud, ..config() };
    let out = apply(&p, &mutate(&p, &inputs, &cfg).unwrap());
    assert_eq!(env_value(&out, 0, ENV_AUTHORITY_HOST).as_deref(), Some(host));
}

#[test]
fn sa_tenant_wins_over_the_default_and_empty_values_are_not_injected() {
    let p = pod(json!({}), json!([{"name": "app"}]));
    let other_tenant = "0b6d3d2a-9f5e-4f0e-9a55-1d2c3b4a5f60";
    let s = sa(&[(CLIENT_ID_ANNOTATION, "  "), (TENANT_ID_ANNOTATION, other_tenant)]);
    let m = run(&p, &s, None).unwrap();
    let out = apply(&p, &m);
    assert_eq!(env_value(&out, 0, ENV_CLIENT_ID), None);
    assert_eq!(env_value(&out, 0, ENV_TENANT_ID).as_deref(), Some(other_tenant));
    assert!(
        m.warnings
            .iter()
            .any(|w| w.message.contains("has no azure.workload.identity/client-id")),
        "{m:?}"
    );
}

#[test]
fn user_values_are_never_overridden() {
    let p = pod(
        json!({}),
        json!([{"name": "app", "env": [
            {"name": ENV_CLIENT_ID, "value": OTHER_CLIENT},
            {"name": ENV_TENANT_ID, "valueFrom": {"configMapKeyRef": {"name": "c", "key": "t"}}},
        ]}]),
    );
    let out = apply(&p, &run(&p, &annotated_sa(), None).unwrap());
    let env = env_of(&out, 0);
    assert_eq!(env[0], (ENV_CLIENT_ID.into(), OTHER_CLIENT.into()));
    assert_eq!(env[1], (ENV_TENANT_ID.into(), "<valueFrom>".into()));
    assert_eq!(env.iter().filter(|(n, _)| n == ENV_CLIENT_ID).count(), 1);
    assert_eq!(env.iter().filter(|(n, _)| n == ENV_TENANT_ID).count(), 1);
}

#[test]
fn skip_containers_are_untouched_and_init_containers_are_injected() {
    let mut p = pod(
        json!({SKIP_CONTAINERS_ANNOTATION: " sidecar ; ;istio-proxy"}),
        json!([{"name": "app"}, {"name": "sidecar"}, {"name": "istio-proxy"}]),
    );
    p["spec"]["initContainers"] = json!([{"name": "init", "restartPolicy": "Always"}]);
    let out = apply(&p, &run(&p, &annotated_sa(), None).unwrap());
    assert!(env_value(&out, 0, ENV_CLIENT_ID).is_some());
    assert_eq!(out["spec"]["containers"][1], json!({"name": "sidecar"}));
    assert_eq!(out["spec"]["containers"][2], json!({"name": "istio-proxy"}));
    assert_eq!(out["spec"]["initContainers"][0]["restartPolicy"], "Always");
    assert_eq!(out["spec"]["initContainers"][0]["env"][0]["name"], ENV_CLIENT_ID);
}

#[test]
fn ephemeral_containers_and_unknown_fields_pass_through() {
    let mut p = pod(json!({}), json!([{"name": "app", "x-future-field": {"a": [1, 2]}}]));
    p["spec"]["ephemeralContainers"] = json!([{"name": "debugger", "image": "busybox", "targetContainerName": "app"}]);
    p["spec"]["x-future-spec"] = json!(true);
    let m = run(&p, &annotated_sa(), None).unwrap();
    assert!(
        m.patch
            .to_json_patch()
            .unwrap()
            .0
            .iter()
            .all(|op| !op.path().to_string().contains("ephemeral")),
        "{:?}",
        m.patch
    );
    let out = apply(&p, &m);
    assert_eq!(out["spec"]["ephemeralContainers"], p["spec"]["ephemeralContainers"]);
    assert_eq!(out["spec"]["x-future-spec"], true);
    assert_eq!(out["spec"]["containers"][0]["x-future-field"], json!({"a": [1, 2]}));
}

#[test]
fn a_skip_list_naming_every_container_adds_nothing() {
    let p = pod(json!({SKIP_CONTAINERS_ANNOTATION: "app"}), json!([{"name": "app"}]));
    let m = run(&p, &annotated_sa(), None).unwrap();
    assert!(m.patch.is_empty(), "{:?}", m.patch);
}

#[rstest]
#[case(json!({}), &[], 3600)]
#[case(json!({TOKEN_EXPIRATION_ANNOTATION: "7200"}), &[], 7200)]
#[case(json!({}), &[(TOKEN_EXPIRATION_ANNOTATION, "86400")], 86400)]
#[case(json!({TOKEN_EXPIRATION_ANNOTATION: "3600"}), &[(TOKEN_EXPIRATION_ANNOTATION, "86400")], 3600)]
// Empty is absent, as upstream reads it: the ServiceAccount's, then the default.
#[case(json!({TOKEN_EXPIRATION_ANNOTATION: ""}), &[(TOKEN_EXPIRATION_ANNOTATION, "7200")], 7200)]
#[case(json!({TOKEN_EXPIRATION_ANNOTATION: " "}), &[(TOKEN_EXPIRATION_ANNOTATION, "")], 3600)]
fn token_expiration_from_pod_then_sa(
    #[case] annotations: Value,
    #[case] sa_annotations: &[(&str, &str)],
    #[case] expected: i64,
) {
    let p = pod(annotations, json!([{"name": "app"}]));
    let mut s = sa(sa_annotations);
    s.annotations.insert(CLIENT_ID_ANNOTATION.into(), CLIENT.into());
    let out = apply(&p, &run(&p, &s, None).unwrap());
    assert_eq!(
        out.pointer("/spec/volumes/0/projected/sources/0/serviceAccountToken/expirationSeconds"),
        Some(&json!(expected))
    );
}

#[rstest]
#[case(json!({TOKEN_EXPIRATION_ANNOTATION: "3599"}), &[], "on pod is \"3599\"")]
#[case(json!({TOKEN_EXPIRATION_ANNOTATION: "86401"}), &[], "on pod is \"86401\"")]
#[case(json!({TOKEN_EXPIRATION_ANNOTATION: "1h"}), &[], "on pod is \"1h\"")]
#[case(json!({}), &[(TOKEN_EXPIRATION_ANNOTATION, "-1")], "on ServiceAccount apps/app-sa is \"-1\"")]
fn invalid_token_expiration_is_denied_naming_where(
    #[case] annotations: Value,
    #[case] sa_annotations: &[(&str, &str)],
    #[case] expected: &str,
) {
    let p = pod(annotations, json!([{"name": "app"}]));
    let err = run(&p, &sa(sa_annotations), None).unwrap_err().to_string();
    assert!(
        err.contains(expected) && err.contains("3600") && err.contains("86400"),
        "{err}"
    );
}

#[rstest]
#[case("true", None, true)]
#[case("false", None, false)]
#[case("False", Some("8000"), false)]
fn proxy_sidecar_is_read_by_value(#[case] value: &str, #[case] port: Option<&str>, #[case] warned: bool) {
    let mut annotations = json!({INJECT_PROXY_SIDECAR_ANNOTATION: value});
    if let Some(port) = port {
        annotations[PROXY_SIDECAR_PORT_ANNOTATION] = json!(port);
    }
    let p = pod(annotations, json!([{"name": "app"}]));
    let m = run(&p, &annotated_sa(), None).unwrap();
    assert!(!m.patch.is_empty());
    assert_eq!(
        m.warnings
            .iter()
            .any(|w| w.message.contains("proxy sidecar is not available")),
        warned,
        "{m:?}"
    );
}

#[rstest]
#[case(INJECT_PROXY_SIDECAR_ANNOTATION, "yes")]
#[case(PROXY_SIDECAR_PORT_ANNOTATION, "0")]
#[case(PROXY_SIDECAR_PORT_ANNOTATION, "65536")]
#[case(PROXY_SIDECAR_PORT_ANNOTATION, "http")]
fn invalid_proxy_annotations_are_denied(#[case] key: &str, #[case] value: &str) {
    let p = pod(json!({key: value}), json!([{"name": "app"}]));
    let err = run(&p, &annotated_sa(), None).unwrap_err().to_string();
    assert!(err.contains(key) && err.contains(value), "{err}");
}

fn spc(params: Value) -> Value {
    json!({"apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
           "metadata": {"name": "kv", "namespace": "apps"},
           "spec": {"provider": "azure", "parameters": params}})
}

fn good_spc() -> Value {
    spc(json!({"clientID": CLIENT, "keyvaultName": "kv1", "tenantId": TENANT, "objects": "array: []"}))
}

fn sidecar_spc() -> Value {
    spc(json!({"clientID": CLIENT, "keyvaultName": "kv1", "tenantId": TENANT,
               "objects": "array:\n  - |\n    objectName: db-password\n    objectType: secret\n"}))
}

fn sidecar_pod(containers: Value) -> Value {
    pod(
        json!({SECRET_PROVIDER_CLASS_ANNOTATION: "kv", SECRETS_DELIVERY_ANNOTATION: "sidecar"}),
        containers,
    )
}

fn sidecar_env(container: &Value) -> BTreeMap<String, String> {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().into(), e["value"].as_str().unwrap().into()))
        .collect()
}

#[test]
fn sidecar_delivery_injects_a_native_sidecar_configured_from_the_class() {
    let mut p = sidecar_pod(json!([{"name": "app"}]));
    p["spec"]["initContainers"] = json!([{"name": "migrate"}]);
    let spc = sidecar_spc();
    let m = run(&p, &annotated_sa(), Some(&spc)).unwrap();
    let out = apply(&p, &m);
    let init = out["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(init.len(), 2);
    assert_eq!(
        init[1]["name"], "migrate",
        "the pod's init container runs after the first sync"
    );
    assert_eq!(init[1]["volumeMounts"][1]["name"], SECRETS_VOLUME);
    let sidecar = &init[0];
    assert_eq!(sidecar["name"], SIDECAR_CONTAINER);
    assert_eq!(sidecar["restartPolicy"], "Always");
    assert_eq!(sidecar["image"], crate::config::DEFAULT_SIDECAR_IMAGE);
    assert_eq!(sidecar["startupProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(sidecar["startupProbe"]["httpGet"]["port"], 9441);
    assert_eq!(sidecar["securityContext"]["runAsNonRoot"], true);
    assert_eq!(sidecar["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(sidecar["resources"]["limits"]["memory"], "64Mi");
    let env = sidecar_env(sidecar);
    assert_eq!(env[ENV_CLIENT_ID], CLIENT);
    assert_eq!(env[ENV_TENANT_ID], TENANT);
    assert_eq!(env[ENV_FEDERATED_TOKEN_FILE], TOKEN_FILE_PATH);
    assert_eq!(env[ENV_SECRETS_DIR], DEFAULT_SECRETS_MOUNT_PATH);
    assert_eq!(env[ENV_ROTATION_INTERVAL], "2m");
    // The class parameters, which the sidecar parses back into the same configuration.
    let cfg = wi_contract::spc::parse(&env[ENV_SECRETS_CONFIG]).unwrap();
    assert_eq!(cfg.keyvault_name, "kv1");
    assert_eq!(cfg.objects[0].name, "db-password");
    assert_eq!(
        sidecar["volumeMounts"],
        json!([{"name": TOKEN_VOLUME, "mountPath": TOKEN_MOUNT_PATH, "readOnly": true},
               {"name": SECRETS_VOLUME, "mountPath": DEFAULT_SECRETS_MOUNT_PATH}])
    );
    // The app reads, never writes; the volume lives in memory.
    assert_eq!(
        out["spec"]["containers"][0]["volumeMounts"][1],
        json!({"name": SECRETS_VOLUME, "mountPath": DEFAULT_SECRETS_MOUNT_PATH, "readOnly": true})
    );
    let volumes = out["spec"]["volumes"].as_array().unwrap();
    let secrets = volumes.iter().find(|v| v["name"] == SECRETS_VOLUME).unwrap();
    assert_eq!(secrets["emptyDir"]["medium"], "Memory");
    assert!(volumes.iter().any(|v| v["name"] == TOKEN_VOLUME));
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
}

#[test]
fn sidecar_delivery_converges_on_a_second_pass_and_follows_settings() {
    let p = sidecar_pod(json!([{"name": "app"}]));
    let spc = sidecar_spc();
    let once = apply(&p, &run(&p, &annotated_sa(), Some(&spc)).unwrap());
    // The API server defaults probe and container fields between passes.
    let mut defaulted = once.clone();
    defaulted["spec"]["initContainers"][0]["startupProbe"]["timeoutSeconds"] = json!(1);
    defaulted["spec"]["initContainers"][0]["terminationMessagePath"] = json!("/dev/termination-log");
    let again = run(&defaulted, &annotated_sa(), Some(&spc)).unwrap();
    assert!(again.patch.is_empty(), "{:?}", again.patch);

    // A new image in the webhook's settings replaces the sidecar it injected, in place.
    let mut cfg = config();
    cfg.sidecar.image = "registry.example/wi-sidecar:9".into();
    let sa = annotated_sa();
    let inputs = Inputs {
        namespace_labels: None,
        service_account: &sa,
        secret_provider_class: ClassLookup::Found(&spc),
    };
    let m = mutate(&defaulted, &inputs, &cfg).unwrap();
    assert_eq!(m.patch.len(), 1, "{:?}", m.patch);
    let out = apply(&defaulted, &m);
    assert_eq!(out["spec"]["initContainers"].as_array().unwrap().len(), 1);
    assert_eq!(
        out["spec"]["initContainers"][0]["image"],
        "registry.example/wi-sidecar:9"
    );
}

#[test]
fn sidecar_delivery_with_an_empty_init_list_and_skipped_apps_still_gets_the_token() {
    let mut p = pod(
        json!({SECRET_PROVIDER_CLASS_ANNOTATION: "kv", SECRETS_DELIVERY_ANNOTATION: "sidecar",
               SKIP_CONTAINERS_ANNOTATION: "app", SECRETS_CONTAINERS_ANNOTATION: "app"}),
        json!([{"name": "app"}]),
    );
    p["spec"]["initContainers"] = json!(null);
    let spc = sidecar_spc();
    let out = apply(&p, &run(&p, &annotated_sa(), Some(&spc)).unwrap());
    assert_eq!(out["spec"]["initContainers"][0]["name"], SIDECAR_CONTAINER);
    assert!(out["spec"]["containers"][0].get("env").is_none());
    assert_eq!(out["spec"]["containers"][0]["volumeMounts"][0]["name"], SECRETS_VOLUME);
    let volumes = out["spec"]["volumes"].as_array().unwrap();
    assert!(volumes.iter().any(|v| v["name"] == TOKEN_VOLUME), "{volumes:?}");
}

#[rstest]
#[case(None, "does not exist")]
#[case(Some(spc(json!({"clientID": CLIENT, "objects": "array: []"}))), "keyvaultName")]
#[case(Some(spc(json!({"keyvaultName": "kv1", "objects": "array:\n  - |\n    objectName: a\n    objectType: blob\n"}))), "objectType")]
#[case(Some(spc(json!({"keyvaultName": "kv1", "useVMManagedIdentity": "true", "objects": "array: []"}))), "useVMManagedIdentity")]
fn sidecar_delivery_denies_a_class_it_cannot_use(#[case] class: Option<Value>, #[case] expected: &str) {
    let p = sidecar_pod(json!([{"name": "app"}]));
    let err = run(&p, &annotated_sa(), class.as_ref()).unwrap_err().to_string();
    assert!(err.contains(expected) && err.contains("\"kv\""), "{err}");
}

#[test]
fn sidecar_delivery_denies_an_unreadable_class_asking_for_a_retry() {
    let p = sidecar_pod(json!([{"name": "app"}]));
    let sa = annotated_sa();
    let inputs = Inputs {
        namespace_labels: None,
        service_account: &sa,
        secret_provider_class: ClassLookup::Failed(&std::io::Error::other("forbidden")),
    };
    let err = mutate(&p, &inputs, &config()).unwrap_err().to_string();
    assert!(err.contains("forbidden") && err.contains("retry"), "{err}");
}

#[rstest]
#[case(json!([{"name": "app"}, {"name": "wi-sidecar"}]), "named \"wi-sidecar\"")]
#[case(json!([{"name": "app", "ports": [{"containerPort": 9441}]}]), "port 9441")]
fn sidecar_delivery_denies_name_and_port_conflicts(#[case] containers: Value, #[case] expected: &str) {
    let p = sidecar_pod(containers);
    let spc = sidecar_spc();
    let err = run(&p, &annotated_sa(), Some(&spc)).unwrap_err().to_string();
    assert!(err.contains(expected), "{err}");
}

#[test]
fn csi_delivery_adds_the_volume_and_read_only_mounts() {
    let p = pod(
        json!({SECRET_PROVIDER_CLASS_ANNOTATION: "kv", SKIP_CONTAINERS_ANNOTATION: "proxy"}),
        json!([{"name": "app"}, {"name": "proxy"}]),
    );
    let s = good_spc();
    let m = run(&p, &annotated_sa(), Some(&s)).unwrap();
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    let out = apply(&p, &m);
    let volumes = out["spec"]["volumes"].as_array().unwrap();
    assert!(volumes.contains(
        &json!({"name": SECRETS_VOLUME, "csi": {"driver": CSI_DRIVER, "readOnly": true,
        "volumeAttributes": {"secretProviderClass": "kv"}}})
    ));
    assert!(
        out["spec"]["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": SECRETS_VOLUME, "mountPath": DEFAULT_SECRETS_MOUNT_PATH, "readOnly": true}))
    );
    assert_eq!(out["spec"]["containers"][1], json!({"name": "proxy"}));
}

#[test]
fn secrets_containers_and_mount_path_choose_where_secrets_go() {
    let p = pod(
        json!({SECRET_PROVIDER_CLASS_ANNOTATION: "kv", SECRETS_CONTAINERS_ANNOTATION: "web;ghost",
               SECRETS_MOUNT_PATH_ANNOTATION: "/etc/secrets/"}),
        json!([{"name": "app"}, {"name": "web"}]),
    );
    let s = good_spc();
    let m = run(&p, &annotated_sa(), Some(&s)).unwrap();
    assert_eq!(m.warnings.len(), 1, "{:?}", m.warnings);
    assert!(m.warnings[0].message.contains("\"ghost\""));
    let out = apply(&p, &m);
    let mounts = |i: usize| out["spec"]["containers"][i]["volumeMounts"].clone();
    assert!(
        !mounts(0)
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == SECRETS_VOLUME)
    );
    assert!(
        mounts(1)
            .as_array()
            .unwrap()
            .contains(&json!({"name": SECRETS_VOLUME, "mountPath": "/etc/secrets", "readOnly": true}))
    );
}

#[test]
fn a_mount_path_conflict_is_denied_naming_container_and_path() {
    let p = pod(
        json!({SECRET_PROVIDER_CLASS_ANNOTATION: "kv"}),
        json!([{"name": "app", "volumeMounts": [{"name": "mine", "mountPath": "/mnt/secrets-store/"}]}]),
    );
    let err = run(&p, &annotated_sa(), Some(&good_spc())).unwrap_err();
    assert!(matches!(err, Denial::MountPathConflict { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("\"app\"") && msg.contains("/mnt/secrets-store") && msg.contains("\"mine\""),
        "{msg}"
    );
}

#[test]
fn a_token_path_conflict_is_denied() {
    let p = pod(
        json!({}),
        json!([{"name": "app", "volumeMounts": [{"name": "t", "mountPath": TOKEN_MOUNT_PATH}]}]),
    );
    let msg = run(&p, &annotated_sa(), None).unwrap_err().to_string();
    assert!(msg.contains(TOKEN_MOUNT_PATH) && msg.contains("\"t\""), "{msg}");
}

#[rstest]
#[case(SECRETS_DELIVERY_ANNOTATION, "nfs", "\"csi\" or \"sidecar\"")]
#[case(SECRETS_MOUNT_PATH_ANNOTATION, "relative/path", "absolute")]
#[case(SECRETS_MOUNT_PATH_ANNOTATION, "/mnt/../etc", "absolute")]
#[case(SECRETS_MOUNT_PATH_ANNOTATION, "/", "absolute")]
#[case(SECRETS_MOUNT_PATH_ANNOTATION, TOKEN_MOUNT_PATH, "token")]
fn invalid_secrets_annotations_are_denied(#[case] key: &str, #[case] value: &str, #[case] expected: &str) {
    let p = pod(
        json!({SECRET_PROVIDER_CLASS_ANNOTATION: "kv", key: value}),
        json!([{"name": "app"}]),
    );
    let msg = run(&p, &annotated_sa(), Some(&good_spc())).unwrap_err().to_string();
    assert!(msg.contains(key) && msg.contains(expected), "{msg}");
}

#[test]
fn an_invalid_class_name_is_denied() {
    let p = pod(
        json!({SECRET_PROVIDER_CLASS_ANNOTATION: "Not_A_Name"}),
        json!([{"name": "app"}]),
    );
    let msg = run(&p, &annotated_sa(), None).unwrap_err().to_string();
    assert!(msg.contains("Not_A_Name"), "{msg}");
}

#[test]
fn a_users_volume_under_the_secrets_name_is_a_conflict() {
    let mut p = pod(
        json!({SECRET_PROVIDER_CLASS_ANNOTATION: "kv"}),
        json!([{"name": "app"}]),
    );
    p["spec"]["volumes"] = json!([{"name": SECRETS_VOLUME, "emptyDir": {}}]);
    let err = run(&p, &annotated_sa(), Some(&good_spc())).unwrap_err();
    assert_eq!(err, Denial::VolumeNameConflict(SECRETS_VOLUME));
}

#[rstest]
#[case(None, "was not found in namespace \"apps\"", Code::ClassNotFound)]
#[case(Some(spc(json!({"useVMManagedIdentity": "true", "userAssignedIdentityID": CLIENT, "keyvaultName": "kv1"}))), "node's identity", Code::NodeIdentity)]
#[case(Some(spc(json!({"usePodIdentity": "true", "keyvaultName": "kv1"}))), "usePodIdentity", Code::PodIdentity)]
#[case(Some(spc(json!({"keyvaultName": "kv1"}))), "no clientID", Code::ClassWithoutClientId)]
#[case(Some(spc(json!({"clientID": OTHER_CLIENT, "keyvaultName": "kv1"}))), "differs from the ServiceAccount", Code::ClientIdMismatch)]
#[case(Some(spc(json!({"clientID": CLIENT}))), "no keyvaultName", Code::InvalidVaultName)]
#[case(Some(spc(json!({"clientID": CLIENT, "keyvaultName": "kv-techventure-secrets-001"}))), "(26 characters here)", Code::InvalidVaultName)]
#[case(Some(spc(json!({"clientID": CLIENT, "keyvaultName": "kv1", "tenantId": "0b6d3d2a-9f5e-4f0e-9a55-1d2c3b4a5f60"}))), "differs from the pod's tenant", Code::TenantMismatch)]
fn secret_provider_class_problems_are_warnings(
    #[case] class: Option<Value>,
    #[case] expected: &str,
    #[case] code: Code,
) {
    let p = pod(
        json!({SECRET_PROVIDER_CLASS_ANNOTATION: "kv"}),
        json!([{"name": "app"}]),
    );
    let m = run(&p, &annotated_sa(), class.as_ref()).unwrap();
    assert!(!m.patch.is_empty());
    assert!(
        m.warnings
            .iter()
            .any(|w| w.message.contains(expected) && w.code == code),
        "{:?}",
        m.warnings
    );
}

#[rstest]
#[case(&[("azure.workload.identity/client_id", CLIENT)], &[], "did you mean azure.workload.identity/client-id?")]
#[case(&[("Azure.Workload.Identity/ClientID", CLIENT)], &[], "did you mean azure.workload.identity/client-id?")]
#[case(&[(SKIP_CONTAINERS_ANNOTATION, "x")], &[], "belongs on the pod")]
#[case(&[], &[(CLIENT_ID_ANNOTATION, CLIENT)], "belongs on the ServiceAccount")]
#[case(&[], &[(USE_LABEL, "true")], "must be a pod label")]
#[case(&[], &[("workload-identity.rs/secret-provider-clas", "kv")], "did you mean workload-identity.rs/secret-provider-class?")]
fn look_alike_keys_are_warned_about(
    #[case] sa_annotations: &[(&str, &str)],
    #[case] pod_annotations: &[(&str, &str)],
    #[case] expected: &str,
) {
    let annotations: Map<String, Value> = pod_annotations.iter().map(|(k, v)| ((*k).into(), json!(v))).collect();
    let p = pod(Value::Object(annotations), json!([{"name": "app"}]));
    let m = run(&p, &sa(sa_annotations), None).unwrap();
    assert!(
        m.warnings.iter().any(|w| w.message.contains(expected)),
        "{:?}",
        m.warnings
    );
}

#[test]
fn a_class_that_could_not_be_read_is_a_warning_that_says_why() {
    let p = pod(
        json!({SECRET_PROVIDER_CLASS_ANNOTATION: "kv"}),
        json!([{"name": "app"}]),
    );
    let sa = annotated_sa();
    let inputs = Inputs {
        namespace_labels: None,
        service_account: &sa,
        secret_provider_class: ClassLookup::Failed(&std::io::Error::other("forbidden")),
    };
    let m = mutate(&p, &inputs, &config()).unwrap();
    assert_eq!(
        m.warnings,
        [Warning::new(
            Code::ClassUnreadable,
            Subject::SecretProviderClass("kv".to_owned()),
            "SecretProviderClass \"kv\" could not be checked: forbidden".to_owned()
        )]
    );
    assert!(
        apply(&p, &m)["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == SECRETS_VOLUME)
    );
}

#[test]
fn a_client_id_that_is_not_a_uuid_is_injected_with_a_warning() {
    let p = pod(json!({}), json!([{"name": "app"}]));
    let m = run(&p, &sa(&[(CLIENT_ID_ANNOTATION, "my-app")]), None).unwrap();
    assert_eq!(env_value(&apply(&p, &m), 0, ENV_CLIENT_ID).as_deref(), Some("my-app"));
    assert!(
        m.warnings.iter().any(|w| w.message.contains("not a UUID")),
        "{:?}",
        m.warnings
    );
}

#[test]
fn a_second_pass_is_empty_even_after_api_server_defaulting() {
    let p = pod(
        json!({SECRET_PROVIDER_CLASS_ANNOTATION: "kv"}),
        json!([{"name": "app", "env": null}]),
    );
    let s = good_spc();
    let mut out = apply(&p, &run(&p, &annotated_sa(), Some(&s)).unwrap());
    // Between two webhook passes the API server decodes and defaults the pod.
    out["spec"]["volumes"][0]["projected"]["defaultMode"] = json!(420);
    let again = run(&out, &annotated_sa(), Some(&s)).unwrap();
    assert!(again.patch.is_empty(), "{:?}", again.patch);
}

#[test]
fn reinvocation_with_a_changed_sa_replaces_only_what_was_injected() {
    // Container "app" has the user's own client id; "worker" got the injected one.
    let p = pod(
        json!({}),
        json!([{"name": "app", "env": [{"name": ENV_CLIENT_ID, "value": OTHER_CLIENT}]}, {"name": "worker"}]),
    );
    let first = apply(&p, &run(&p, &annotated_sa(), None).unwrap());
    let new_client = "0f3e5c1a-2b4d-4c6e-8f10-a1b2c3d4e5f6";
    let changed = sa(&[
        (CLIENT_ID_ANNOTATION, new_client),
        (TOKEN_EXPIRATION_ANNOTATION, "7200"),
    ]);
    let m = run(&first, &changed, None).unwrap();
    assert!(
        m.patch
            .to_json_patch()
            .unwrap()
            .0
            .iter()
            .all(|op| matches!(op, PatchOperation::Replace(_))),
        "{:?}",
        m.patch
    );
    let second = apply(&first, &m);
    assert_eq!(env_value(&second, 0, ENV_CLIENT_ID).as_deref(), Some(OTHER_CLIENT));
    assert_eq!(env_value(&second, 1, ENV_CLIENT_ID).as_deref(), Some(new_client));
    assert_eq!(
        second.pointer("/spec/volumes/0/projected/sources/0/serviceAccountToken/expirationSeconds"),
        Some(&json!(7200))
    );
    assert!(run(&second, &changed, None).unwrap().patch.is_empty());
}

#[test]
fn reinvocation_with_an_sa_that_lost_its_client_id_drops_the_stale_one_without_remove() {
    let p = pod(
        json!({}),
        json!([{"name": "app", "env": [{"name": "KEEP", "value": "1"}]}]),
    );
    let first = apply(&p, &run(&p, &annotated_sa(), None).unwrap());
    let m = run(&first, &sa(&[]), None).unwrap();
    assert!(
        !m.patch
            .to_json_patch()
            .unwrap()
            .0
            .iter()
            .any(|op| matches!(op, PatchOperation::Remove(_)))
    );
    let second = apply(&first, &m);
    let names: Vec<String> = env_of(&second, 0).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["KEEP", ENV_TENANT_ID, ENV_FEDERATED_TOKEN_FILE, ENV_AUTHORITY_HOST]
    );
    assert!(run(&second, &sa(&[]), None).unwrap().patch.is_empty());
}

#[test]
fn a_users_own_token_volume_and_mount_are_kept() {
    let mut p = pod(
        json!({}),
        json!([{"name": "app", "volumeMounts": [{"name": TOKEN_VOLUME, "mountPath": TOKEN_MOUNT_PATH, "readOnly": true}]}]),
    );
    p["spec"]["volumes"] = json!([{"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
        "audience": DEFAULT_AUDIENCE, "expirationSeconds": 3600, "path": TOKEN_FILE}}]}}]);
    let m = run(&p, &annotated_sa(), None).unwrap();
    let out = apply(&p, &m);
    assert_eq!(out["spec"]["volumes"], p["spec"]["volumes"]);
    assert_eq!(
        out["spec"]["containers"][0]["volumeMounts"],
        p["spec"]["containers"][0]["volumeMounts"]
    );
    assert_eq!(env_of(&out, 0).len(), 4);
}

/// A pod upstream v1.6 mutated first (its volume named after the pod, mounted under `/var/run/secrets/azure/wi`,
/// the env naming the file there) keeps that token: no second token volume or mount, which nothing would read. A
/// container whose variable names no token it mounts still gets this webhook's.
#[test]
fn a_container_reading_upstream_v1_6_s_token_gets_no_second_one() {
    let upstream_env = json!([
        {"name": ENV_CLIENT_ID, "value": CLIENT},
        {"name": ENV_TENANT_ID, "value": TENANT},
        {"name": ENV_FEDERATED_TOKEN_FILE, "value": "/var/run/secrets/azure/wi/5f0c/azure-identity-token"},
        {"name": ENV_AUTHORITY_HOST, "value": "https://login.microsoftonline.com/"},
    ]);
    let upstream_mount = json!([{"name": "azure-workload-identity-reserved-5f0c",
                                 "mountPath": "/var/run/secrets/azure/wi/5f0c", "readOnly": true}]);
    let mut p = pod(
        json!({}),
        json!([{"name": "app", "env": upstream_env, "volumeMounts": upstream_mount},
               {"name": "stale", "env": [{"name": ENV_FEDERATED_TOKEN_FILE, "value": "/elsewhere/token"}]}]),
    );
    p["spec"]["volumes"] = json!([{"name": "azure-workload-identity-reserved-5f0c", "projected": {"sources": [
        {"serviceAccountToken": {"path": "azure-identity-token", "expirationSeconds": 3600,
                                 "audience": DEFAULT_AUDIENCE}}]}}]);
    let out = apply(&p, &run(&p, &annotated_sa(), None).unwrap());
    assert_eq!(out["spec"]["containers"][0]["volumeMounts"], upstream_mount);
    assert_eq!(out["spec"]["containers"][0]["env"], upstream_env);
    // The second container names a file in no token mount: it gets this webhook's mount (its own value is kept).
    assert_eq!(out["spec"]["containers"][1]["volumeMounts"][0]["name"], TOKEN_VOLUME);
    let volumes: Vec<&str> = out["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(volumes, ["azure-workload-identity-reserved-5f0c", TOKEN_VOLUME]);
    // Alone, the upstream-injected container adds nothing at all.
    p["spec"]["containers"].as_array_mut().unwrap().pop();
    let m = run(&p, &annotated_sa(), None).unwrap();
    assert!(m.patch.is_empty(), "{:?}", m.patch);
}

/// A pod's own token volume naming the file otherwise (upstream's test pod uses `my-projected-volume`): kept, and
/// AZURE_FEDERATED_TOKEN_FILE names the file each container really sees, under the webhook's mount, under the
/// container's own mount, or at a `subPath` mount of the file itself. Upstream points at its constant path, a file
/// that does not exist then.
#[test]
fn the_token_env_names_the_file_of_the_pods_own_token_volume() {
    let mut p = pod(
        json!({}),
        json!([{"name": "plain"},
               {"name": "mounted", "volumeMounts": [{"name": TOKEN_VOLUME, "mountPath": "/var/run/secrets/tokens"}]},
               {"name": "file", "volumeMounts": [{"name": TOKEN_VOLUME, "mountPath": "/token", "subPath": "my-projected-volume"}]}]),
    );
    p["spec"]["volumes"] = json!([{"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
        "audience": DEFAULT_AUDIENCE, "expirationSeconds": 3600, "path": "my-projected-volume"}}]}}]);
    let m = run(&p, &annotated_sa(), None).unwrap();
    let out = apply(&p, &m);
    assert_eq!(out["spec"]["volumes"], p["spec"]["volumes"], "the pod's volume is kept");
    let token_file = |i: usize| {
        env_of(&out, i)
            .into_iter()
            .find(|(name, _)| name == ENV_FEDERATED_TOKEN_FILE)
            .map(|(_, value)| value)
    };
    assert_eq!(
        token_file(0).as_deref(),
        Some("/var/run/secrets/azure/tokens/my-projected-volume")
    );
    assert_eq!(
        out["spec"]["containers"][0]["volumeMounts"],
        json!([{"name": TOKEN_VOLUME, "mountPath": TOKEN_MOUNT_PATH, "readOnly": true}])
    );
    assert_eq!(
        token_file(1).as_deref(),
        Some("/var/run/secrets/tokens/my-projected-volume")
    );
    assert_eq!(token_file(2).as_deref(), Some("/token"));
    assert!(
        run(&out, &annotated_sa(), None).unwrap().patch.is_empty(),
        "a second pass adds nothing"
    );
}

#[test]
fn a_subpath_mount_of_another_file_of_the_token_volume_is_warned_about() {
    let mut p = pod(
        json!({}),
        json!([{"name": "app", "volumeMounts": [{"name": TOKEN_VOLUME, "mountPath": "/ca.crt", "subPath": "ca.crt"}]}]),
    );
    p["spec"]["volumes"] = json!([{"name": TOKEN_VOLUME, "projected": {"sources": [
        {"serviceAccountToken": {"audience": DEFAULT_AUDIENCE, "expirationSeconds": 3600, "path": TOKEN_FILE}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}}]);
    let m = run(&p, &annotated_sa(), None).unwrap();
    assert!(
        m.warnings
            .iter()
            .any(|w| w.message.contains("the token is not in that mount")),
        "{:?}",
        m.warnings
    );
}

#[test]
fn a_users_token_volume_of_another_kind_is_kept_with_a_warning() {
    let mut p = pod(json!({}), json!([{"name": "app"}]));
    p["spec"]["volumes"] = json!([{"name": TOKEN_VOLUME, "emptyDir": {}}]);
    let m = run(&p, &annotated_sa(), None).unwrap();
    assert!(
        m.warnings
            .iter()
            .any(|w| w.message.contains("not a projected service account token")),
        "{:?}",
        m.warnings
    );
    assert_eq!(apply(&p, &m)["spec"]["volumes"], p["spec"]["volumes"]);
}

#[test]
fn an_unreadable_marker_is_rewritten_with_a_warning() {
    let p = pod(json!({INJECTED_ANNOTATION: "garbage"}), json!([{"name": "app"}]));
    let m = run(&p, &annotated_sa(), None).unwrap();
    assert!(m.warnings.iter().any(|w| w.message.contains(INJECTED_ANNOTATION)));
    let out = apply(&p, &m);
    assert!(
        out["metadata"]["annotations"][INJECTED_ANNOTATION]
            .as_str()
            .unwrap()
            .starts_with('{')
    );
}

#[rstest]
#[case(json!([1, 2]), "expected a JSON object")]
#[case(json!({"metadata": {"labels": {USE_LABEL: "true"}}}), "spec is missing")]
#[case(json!({"metadata": {"labels": {USE_LABEL: "true"}}, "spec": {"containers": {}}}), "spec.containers is an object")]
#[case(json!({"metadata": {"labels": {USE_LABEL: "true"}}, "spec": {"containers": [{"name": "a", "env": "x"}]}}), "spec.containers[0].env is a string")]
#[case(json!({"metadata": {"labels": {USE_LABEL: "true"}}, "spec": {"containers": [], "volumes": 3}}), "spec.volumes is a number")]
fn malformed_pods_are_denied_with_the_field(#[case] p: Value, #[case] expected: &str) {
    let msg = run(&p, &annotated_sa(), None).unwrap_err().to_string();
    assert!(msg.contains(expected), "{msg}");
}

#[test]
fn annotation_keys_with_slashes_are_escaped_in_the_patch() {
    let p = json!({"metadata": {"labels": {USE_LABEL: "true"}, "annotations": {"a": "b"}},
                   "spec": {"containers": [{"name": "app"}]}});
    let m = run(&p, &annotated_sa(), None).unwrap();
    let last = serde_json::to_value(m.patch.to_json_patch().unwrap().0.last().unwrap()).unwrap();
    assert_eq!(last["path"], "/metadata/annotations/workload-identity.rs~1injected");
    assert_eq!(apply(&p, &m)["metadata"]["annotations"]["a"], "b");
}

#[test]
fn service_account_name_falls_back_like_the_api_server() {
    assert_eq!(
        service_account_name(&json!({"spec": {"serviceAccountName": "a", "serviceAccount": "b"}})),
        "a"
    );
    assert_eq!(service_account_name(&json!({"spec": {"serviceAccount": "b"}})), "b");
    assert_eq!(service_account_name(&json!({"spec": {}})), "default");
}
