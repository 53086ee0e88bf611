//! Properties of the engine over generated pods: every patch applies, never removes, converges in one pass,
//! never overrides a user's env var, honours the skip list and keeps fields it does not know. And no JSON at all
//! makes it panic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use json_patch::PatchOperation;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use wi_contract::*;
use wi_webhook::config::Config;
use wi_webhook::mutate::{Inputs, ServiceAccount, mutate};

const ENV_NAMES: &[&str] = &[
    ENV_CLIENT_ID,
    ENV_TENANT_ID,
    ENV_FEDERATED_TOKEN_FILE,
    ENV_AUTHORITY_HOST,
    "LOG_LEVEL",
    "PORT",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
    ]
}

fn any_json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn env_entry() -> impl Strategy<Value = Value> {
    (prop::sample::select(ENV_NAMES), ".{0,12}", any::<bool>()).prop_map(|(name, value, from)| {
        if from {
            json!({"name": name, "valueFrom": {"secretKeyRef": {"name": "s", "key": value}}})
        } else {
            json!({"name": name, "value": value})
        }
    })
}

fn mount() -> impl Strategy<Value = Value> {
    (
        "[a-z]{1,6}",
        prop::sample::select(
            &[
                "/data",
                "/cache",
                "/etc/app",
                "/var/run/secrets/azure",
                "/mnt/secrets-store",
            ][..],
        ),
    )
        .prop_map(|(name, path)| json!({"name": name, "mountPath": path}))
}

fn container(name: String) -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop::collection::vec(env_entry(), 0..5)),
        prop::option::of(prop::collection::vec(mount(), 0..2)),
        prop::option::of(("[a-z]{1,5}", leaf())),
        prop::option::of(Just("Always")),
    )
        .prop_map(move |(env, mounts, unknown, restart)| {
            let mut c = json!({"name": name, "image": "busybox"});
            if let Some(env) = env {
                c["env"] = Value::Array(env);
            }
            if let Some(mounts) = mounts {
                c["volumeMounts"] = Value::Array(mounts);
            }
            if let Some((key, value)) = unknown {
                c[format!("x-{key}")] = value;
            }
            if let Some(r) = restart {
                c["restartPolicy"] = json!(r);
            }
            c
        })
}

/// A pod with unique container names, some init containers, random annotations of the contract and unknown
/// fields.
fn pod() -> impl Strategy<Value = Value> {
    let names = prop::collection::btree_set("[a-z]{1,4}", 1..6);
    (names, 0usize..3)
        .prop_flat_map(|(names, init_count)| {
            let names: Vec<String> = names.into_iter().collect();
            let init_count = init_count.min(names.len() - 1);
            let all: Vec<_> = names.iter().cloned().map(container).collect();
            let skip = prop::sample::subsequence(names.clone(), 0..=names.len());
            (
                all,
                Just(init_count),
                skip,
                any::<bool>(),
                prop::option::of(3600i64..=86400),
                any_json(),
            )
        })
        .prop_map(|(containers, init_count, skip, with_secrets, expiration, unknown)| {
            let (init, main) = containers.split_at(init_count);
            let mut annotations = Map::new();
            if !skip.is_empty() {
                annotations.insert(SKIP_CONTAINERS_ANNOTATION.into(), json!(skip.join(";")));
            }
            if with_secrets {
                annotations.insert(SECRET_PROVIDER_CLASS_ANNOTATION.into(), json!("kv"));
            }
            if let Some(e) = expiration {
                annotations.insert(TOKEN_EXPIRATION_ANNOTATION.into(), json!(e.to_string()));
            }
            let mut spec = json!({"containers": main, "x-unknown-spec-field": unknown});
            if !init.is_empty() {
                spec["initContainers"] = json!(init);
            }
            json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "p", "labels": {USE_LABEL: "true"}, "annotations": annotations},
                "spec": spec,
                "status": {},
            })
        })
}

fn sa() -> ServiceAccount {
    ServiceAccount {
        name: "sa".into(),
        namespace: "ns".into(),
        annotations: BTreeMap::from([(
            CLIENT_ID_ANNOTATION.into(),
            "dc93f674-70ec-43e3-be7b-bf11ac753aa3".into(),
        )]),
        labels: BTreeMap::new(),
    }
}

fn spc() -> Value {
    json!({"kind": "SecretProviderClass", "metadata": {"name": "kv"},
           "spec": {"provider": "azure", "parameters": {"clientID": "dc93f674-70ec-43e3-be7b-bf11ac753aa3", "keyvaultName": "kv1"}}})
}

fn config() -> Config {
    Config {
        tenant_id: Some("72f988bf-86f1-41af-91ab-2d7cd011db47".into()),
        ..Config::default()
    }
}

fn run(pod: &Value) -> Result<Vec<PatchOperation>, String> {
    let sa = sa();
    let spc = spc();
    let inputs = Inputs {
        namespace_labels: None,
        service_account: &sa,
        secret_provider_class: Some(&spc).into(),
    };
    mutate(pod, &inputs, &config())
        .map(|m| m.patch.to_json_patch().unwrap().0)
        .map_err(|d| d.to_string())
}

fn containers(pod: &Value) -> Vec<Value> {
    ["initContainers", "containers"]
        .iter()
        .flat_map(|k| pod["spec"][k].as_array().cloned().unwrap_or_default())
        .collect()
}

fn preserved(original: &Value, patched: &Value) -> bool {
    match (original, patched) {
        (Value::Object(o), Value::Object(p)) => o.iter().all(|(k, v)| p.get(k).is_some_and(|pv| preserved(v, pv))),
        (Value::Array(o), Value::Array(p)) => p.len() >= o.len() && o.iter().zip(p).all(|(a, b)| preserved(a, b)),
        _ => original == patched,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn patches_apply_converge_and_keep_what_the_user_wrote(pod in pod()) {
        let ops = match run(&pod) {
            Ok(ops) => ops,
            // A generated mount may sit where the webhook mounts; the denial names it.
            Err(msg) => {
                prop_assert!(msg.contains("already mounts"), "{}", msg);
                return Ok(());
            }
        };
        prop_assert!(!ops.iter().any(|op| matches!(op, PatchOperation::Remove(_))));
        let mut patched = pod.clone();
        json_patch::patch(&mut patched, &ops).map_err(|e| TestCaseError::fail(e.to_string()))?;

        // Unknown fields and everything else the user wrote are still there.
        prop_assert!(preserved(&pod, &patched));

        let skip: Vec<String> = pod["metadata"]["annotations"][SKIP_CONTAINERS_ANNOTATION]
            .as_str()
            .map(|s| s.split(';').map(str::to_owned).collect())
            .unwrap_or_default();
        for (before, after) in containers(&pod).iter().zip(containers(&patched)) {
            let name = before["name"].as_str().unwrap();
            let before_env = before["env"].as_array().cloned().unwrap_or_default();
            let after_env = after["env"].as_array().cloned().unwrap_or_default();
            // A user's env entries keep their position and value.
            prop_assert_eq!(&after_env[..before_env.len()], &before_env[..]);
            if skip.iter().any(|s| s == name) {
                let with_secrets_mount_only = after["volumeMounts"].as_array().is_none_or(|m| {
                    m.iter().all(|m| m["name"] != TOKEN_VOLUME)
                });
                prop_assert_eq!(before_env.len(), after_env.len(), "skipped container {} got env", name);
                prop_assert!(with_secrets_mount_only, "skipped container {} got the token", name);
            } else {
                for var in [ENV_CLIENT_ID, ENV_TENANT_ID, ENV_FEDERATED_TOKEN_FILE, ENV_AUTHORITY_HOST] {
                    let user_set = before_env.iter().any(|e| e["name"] == var);
                    let count = after_env.iter().filter(|e| e["name"] == var).count();
                    let before_count = before_env.iter().filter(|e| e["name"] == var).count();
                    prop_assert_eq!(count, if user_set { before_count } else { 1 }, "{} in {}", var, name);
                }
            }
        }

        // A second pass adds nothing.
        let again = run(&patched).map_err(TestCaseError::fail)?;
        prop_assert!(again.is_empty(), "second pass: {:?}", again);
    }

    #[test]
    fn any_json_as_a_pod_never_panics(value in any_json()) {
        let _ = run(&value);
        let labelled = json!({"metadata": {"labels": {USE_LABEL: "true"}}, "spec": value});
        if let Ok(ops) = run(&labelled) {
            let mut patched = labelled.clone();
            prop_assert!(json_patch::patch(&mut patched, &ops).is_ok());
        }
    }

    #[test]
    fn any_json_inside_a_container_never_panics(value in any_json(), field in prop::sample::select(&["env", "volumeMounts", "name"][..])) {
        let pod = json!({"metadata": {"labels": {USE_LABEL: "true"}},
                         "spec": {"containers": [{"name": "app", field: value}], "volumes": []}});
        if let Ok(ops) = run(&pod) {
            let mut patched = pod.clone();
            prop_assert!(json_patch::patch(&mut patched, &ops).is_ok(), "{:?}", ops);
        }
    }
}
