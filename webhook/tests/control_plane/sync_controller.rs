//! `wi-controller` as installed by `manifests/base`, behind a real API server (envtest; see `common/envtest.rs` for
//! when it runs): two replicas of the binary, each with exactly the args and env of the rendered Deployment and a
//! kubeconfig holding a token of its own ServiceAccount (so a missing RBAC rule fails here), kube-controller-manager's
//! garbage collector, and the emulated Entra ID + Key Vault trusting the API server as the cluster's issuer. No pod
//! is ever created: the Secrets come from the classes alone.
//!
//! In order: the Secrets appear with the bytes expected (Opaque, a TLS pair `openssl` accepts whose key matches its
//! certificate, dockerconfigjson); re-syncs change nothing (resourceVersions kept) and cost one Key Vault request
//! per object per sync; a new version reaches the Secret and rolls the opted-in Deployment exactly once; a 429
//! storm keeps the Secret, backs off with Retry-After and recovers; a foreign Secret, an identity without
//! federated trust and a missing ServiceAccount get an Event and no write; an entry made unreadable keeps its Secret, an entry removed deletes
//! it; the leader killed, the other replica takes the Lease and syncs; the class deleted, the garbage collector
//! deletes its Secrets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams};
use serde_json::{Value, json};

use crate::common::envtest::Options;
use crate::common::eventually;
use crate::common::process::{WebhookProcess, free_port, http_get, report};
use crate::emulator::Emulator;
use crate::install::{ONE_AT_A_TIME, apply, built, deployment_container, install, token_of};

const TENANT_ID: &str = "d2f0c8a4-3b1e-4c6d-9e8f-7a6b5c4d3e2f";
const VAULT: &str = "kv-sync-001";
const TEAM: &str = "team-sync";
const DOCKER_CONFIG: &str = r#"{"auths":{"myregistry.azurecr.io":{"username":"puller","password":"pull-token-1","auth":"cHVsbGVyOnB1bGwtdG9rZW4tMQ=="}}}"#;

/// One replica of the controller, as the Deployment runs it, on its own admin port.
struct Replica {
    name: String,
    process: WebhookProcess,
    admin: SocketAddr,
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics(replica: &Replica) -> String {
    http_get(replica.admin, "/metrics")
        .await
        .map(|(_, body)| body)
        .unwrap_or_default()
}

fn data(secret: &Secret, key: &str) -> Vec<u8> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .unwrap_or_else(|| panic!("no {key} in Secret {:?}", secret.metadata.name))
}

fn class(name: &str, service_account: &str, secret_objects: Value) -> String {
    json!({
        "apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
        "metadata": {"name": name, "namespace": TEAM,
                     "annotations": {"workload-identity.rs/sync-service-account": service_account}},
        "spec": {"provider": "azure",
                 "parameters": {"keyvaultName": VAULT, "tenantId": TENANT_ID,
                                "objects": "array:\n  - |\n    objectName: db-password\n    objectType: secret\n  - |\n    objectName: site\n    objectType: secret\n  - |\n    objectName: registry\n    objectType: secret\n"},
                 "secretObjects": secret_objects}})
    .to_string()
}

fn app_objects(with_registry: bool) -> Value {
    let mut objects = vec![
        json!({"secretName": "app-env", "type": "Opaque", "labels": {"team": "sync"},
               "data": [{"objectName": "db-password", "key": "DB_PASSWORD"}]}),
        json!({"secretName": "app-tls", "type": "kubernetes.io/tls",
               "data": [{"objectName": "site", "key": "tls.key"}, {"objectName": "site", "key": "tls.crt"}]}),
    ];
    if with_registry {
        objects.push(
            json!({"secretName": "regcred", "type": "kubernetes.io/dockerconfigjson",
                            "data": [{"objectName": "registry", "key": ".dockerconfigjson"}]}),
        );
    }
    Value::Array(objects)
}

async fn events(client: &kube::Client, class: &str) -> Vec<(String, String)> {
    Api::<Event>::namespaced(client.clone(), TEAM)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(class))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

/// `openssl x509 -pubkey` of the certificate and `openssl pkey -pubout` of the key: equal when they match.
fn openssl_public_keys(dir: &std::path::Path, crt: &[u8], key: &[u8]) -> (String, String) {
    let (crt_file, key_file) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&crt_file, crt).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    (
        run(&["x509", "-in", crt_file.to_str().unwrap(), "-noout", "-pubkey"]),
        run(&["pkey", "-in", key_file.to_str().unwrap(), "-pubout"]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(envtest),
    ignore = "needs a control plane: KUBEBUILDER_ASSETS does not name a folder with kube-apiserver and etcd"
)]
async fn secrets_follow_key_vault_without_pods() {
    let _one = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let figure = |line: String| report("sync controller", &format!("[{:>5.1?}] {line}", started.elapsed()));

    // The cloud: the emulator as Entra ID and Key Vault.
    let scratch = tempfile::tempdir().unwrap();
    let emulator = Emulator::start(scratch.path(), VAULT, TENANT_ID).await;

    // The platform team's install, with the cloud's endpoints in config.env and syncs every 2 s.
    let installed = install(
        Options {
            aggregator_routing: false,
            issuer_is_the_api_server: true,
        },
        &[
            ("WI_CLOUD", &emulator.authority),
            ("WI_VAULT_URL_TEMPLATE", &emulator.vault_url),
            ("WI_CA_FILE", &emulator.ca_file),
            ("WI_VERIFY_CHALLENGE_RESOURCE", "false"),
            ("WI_SYNC_INTERVAL", "2s"),
        ],
    )
    .await;
    let mut plane = installed.plane;
    plane.start_controller_manager("garbagecollector");
    let client = plane.client.clone();
    let (issuer, _) = emulator.trust(&plane).await;
    let syncer = emulator
        .federated_identity(TENANT_ID, VAULT, &issuer, TEAM, "syncer", true)
        .await;
    let untrusted = emulator
        .federated_identity(TENANT_ID, VAULT, &issuer, TEAM, "untrusted", false)
        .await;
    let put = |name: &'static str, value: String| {
        emulator.call(
            "PUT",
            format!("/vaults/{VAULT}/secrets/{name}"),
            json!({"value": value}),
        )
    };
    put("db-password", "p@ss-1".into()).await;
    let pki = crate::common::Pki::new();
    let leaf = pki.leaf();
    let site = format!("{}{}{}", leaf.key_pem, leaf.cert_pem, pki.ca_pem());
    put("site", site.clone()).await;
    put("registry", DOCKER_CONFIG.into()).await;

    // Two replicas, as the Deployment runs them.
    let runs = deployment_container(&installed.docs, "wi-controller");
    let token = token_of(&plane, &runs.namespace, &runs.service_account).await;
    let kubeconfig = plane.kubeconfig("wi-controller.kubeconfig", &token);
    let start_replica = |name: &str| {
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut env = runs.env.clone();
        env.retain(|(k, _)| k != "WI_POD_NAME");
        env.push(("WI_POD_NAME".to_owned(), name.to_owned()));
        env.push(("WI_ADMIN_LISTEN".to_owned(), admin.to_string()));
        env.push(("KUBECONFIG".to_owned(), kubeconfig.display().to_string()));
        let log = plane.dir.path().join(format!("{name}.log"));
        Replica {
            name: name.to_owned(),
            process: WebhookProcess::spawn(&built("wi-controller"), &runs.args, &env, &log),
            admin,
        }
    };
    let mut replicas = vec![start_replica("wi-controller-a"), start_replica("wi-controller-b")];
    for replica in &mut replicas {
        replica
            .process
            .wait_ready(replica.admin, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let logs = |replicas: &[Replica]| {
        replicas
            .iter()
            .map(|r| format!("--- {}\n{}", r.name, r.process.log()))
            .collect::<Vec<_>>()
            .join("\n")
    };

    // The app team: a namespace, the sync ServiceAccount, the class, and two Deployments reading app-env (one opted in
    // to restarts). No pod: nothing runs the Deployments here.
    let deployment = |name: &str, opted_in: bool| {
        let annotations = match opted_in {
            true => json!({"workload-identity.rs/restart-on-secret-change": "true"}),
            false => json!({}),
        };
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": name, "namespace": TEAM, "annotations": annotations},
               "spec": {"selector": {"matchLabels": {"app": name}},
                        "template": {"metadata": {"labels": {"app": name}},
                                     "spec": {"containers": [{"name": "app", "image": "busybox",
                                                              "envFrom": [{"secretRef": {"name": "app-env"}}]}]}}}})
        .to_string()
    };
    apply(
        &installed.admin,
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {TEAM}\n---\napiVersion: v1\nkind: ServiceAccount\n\
             metadata:\n  name: syncer\n  namespace: {TEAM}\n  annotations:\n    azure.workload.identity/client-id: {syncer}\n\
             ---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: untrusted\n  namespace: {TEAM}\n  annotations:\n    \
             azure.workload.identity/client-id: {untrusted}\n---\n{}\n---\n{}\n---\n{}\n",
            deployment("web", true),
            deployment("batch", false),
            class("app", "syncer", app_objects(true)),
        ),
    );
    let secrets = Api::<Secret>::namespaced(client.clone(), TEAM);
    let deployments = Api::<Deployment>::namespaced(client.clone(), TEAM);
    let mut synced = BTreeMap::new();
    let appeared = eventually(Duration::from_secs(60), async || {
        for name in ["app-env", "app-tls", "regcred"] {
            if let Ok(Some(secret)) = secrets.get_opt(name).await {
                synced.insert(name, secret);
            }
        }
        synced.len() == 3
    })
    .await;
    assert!(appeared, "Secrets synced: {:?}\n{}", synced.keys(), logs(&replicas));
    figure("app-env, app-tls and regcred synced from the class alone (no pod)".into());
    let app_env = &synced["app-env"];
    assert_eq!(data(app_env, "DB_PASSWORD"), b"p@ss-1");
    assert_eq!(app_env.type_.as_deref(), Some("Opaque"));
    let labels = app_env.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("team").map(String::as_str),
        Some("sync"),
        "the class's labels are copied"
    );
    assert_eq!(
        labels.get("app.kubernetes.io/managed-by").map(String::as_str),
        Some("wi-controller")
    );
    let owner = &app_env.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("SecretProviderClass", "app")
    );
    let tls = &synced["app-tls"];
    assert_eq!(tls.type_.as_deref(), Some("kubernetes.io/tls"));
    let (crt, key) = (data(tls, "tls.crt"), data(tls, "tls.key"));
    assert_eq!(
        String::from_utf8(crt.clone()).unwrap(),
        format!("{}{}", leaf.cert_pem, pki.ca_pem())
    );
    let (from_cert, from_key) = openssl_public_keys(scratch.path(), &crt, &key);
    assert_eq!(from_cert, from_key, "tls.key is the private key of tls.crt's leaf");
    assert!(
        String::from_utf8(key)
            .unwrap()
            .starts_with("-----BEGIN EC PRIVATE KEY-----")
    );
    let regcred = &synced["regcred"];
    assert_eq!(regcred.type_.as_deref(), Some("kubernetes.io/dockerconfigjson"));
    assert_eq!(data(regcred, ".dockerconfigjson"), DOCKER_CONFIG.as_bytes());
    figure("bytes as expected: Opaque; TLS key and chain split, openssl: key matches cert; dockerconfigjson".into());

    // Which replica leads.
    let leases = Api::<Lease>::namespaced(client.clone(), &runs.namespace);
    let holder = || async {
        leases
            .get("wi-controller")
            .await
            .ok()
            .and_then(|l| l.spec?.holder_identity)
            .unwrap_or_default()
    };
    let leader_name = holder().await;
    let leader = replicas
        .iter()
        .position(|r| r.name == leader_name)
        .unwrap_or_else(|| panic!("the Lease holder {leader_name:?} is not a replica\n{}", logs(&replicas)));
    let follower = 1 - leader;
    assert_eq!(
        metric(
            &metrics(&replicas[follower]).await,
            "wi_controller_keyvault_requests_total"
        ),
        0.0
    );

    // Re-syncs: nothing written, one Key Vault request per object per sync.
    let versions = async || {
        let mut out = Vec::new();
        for name in ["app-env", "app-tls", "regcred"] {
            out.push(secrets.get(name).await.unwrap().metadata.resource_version.unwrap());
        }
        out
    };
    let before = versions().await;
    let web_generation = deployments.get("web").await.unwrap().metadata.generation;
    let counters = async || emulator.call("GET", "/counters".into(), json!({})).await;
    let gets = |c: &Value| c[format!("{VAULT} get-secret")].as_f64().unwrap_or(0.0);
    let (text0, c0) = (metrics(&replicas[leader]).await, counters().await);
    tokio::time::sleep(Duration::from_secs(9)).await;
    let (text1, c1) = (metrics(&replicas[leader]).await, counters().await);
    let syncs = metric(&text1, "wi_controller_syncs_total{result=\"unchanged\"}")
        - metric(&text0, "wi_controller_syncs_total{result=\"unchanged\"}");
    let requests = gets(&c1) - gets(&c0);
    assert!(syncs >= 3.0, "3 or more re-syncs in 9 s at 2 s: {syncs}\n{text1}");
    assert!(
        (requests - 3.0 * syncs).abs() <= 3.0,
        "{requests} Key Vault reads for {syncs} syncs of 3 objects"
    );
    assert_eq!(versions().await, before, "an unchanged re-sync writes nothing");
    assert_eq!(
        deployments.get("web").await.unwrap().metadata.generation,
        web_generation
    );
    figure(format!(
        "{syncs} unchanged re-syncs in 9 s: {requests} Key Vault reads (3 objects each), resourceVersions unchanged"
    ));

    // A new version: the Secret follows within an interval, the opted-in Deployment rolls once, the other does not.
    let batch_generation = deployments.get("batch").await.unwrap().metadata.generation;
    let rotated_at = Instant::now();
    put("db-password", "p@ss-2".into()).await;
    let rotated = eventually(Duration::from_secs(10), async || {
        data(&secrets.get("app-env").await.unwrap(), "DB_PASSWORD") == b"p@ss-2"
    })
    .await;
    assert!(rotated, "app-env did not follow Key Vault\n{}", logs(&replicas));
    figure(format!("new version in app-env after {:?}", rotated_at.elapsed()));
    let rolled = eventually(Duration::from_secs(10), async || {
        deployments.get("web").await.unwrap().metadata.generation != web_generation
    })
    .await;
    assert!(rolled, "web was not rolled\n{}", logs(&replicas));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let web = deployments.get("web").await.unwrap();
    assert_eq!(
        web.metadata.generation,
        web_generation.map(|g| g + 1),
        "rolled exactly once"
    );
    let template_annotations = web
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .annotations
        .unwrap_or_default();
    assert!(template_annotations.contains_key("workload-identity.rs/secrets-hash"));
    assert_eq!(
        deployments.get("batch").await.unwrap().metadata.generation,
        batch_generation
    );
    figure("web rolled once (template hash), batch (not opted in) untouched".into());

    // A 429 storm with Retry-After: the Secret stays, the controller waits as asked, then recovers.
    let env_version = secrets.get("app-env").await.unwrap().metadata.resource_version;
    emulator
        .call(
            "PUT",
            "/faults".into(),
            json!({"target": VAULT, "status": 429, "retry_after": 4}),
        )
        .await;
    let faulted = |c: &Value| c[format!("{VAULT} faulted")].as_f64().unwrap_or(0.0);
    let c0 = counters().await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let c1 = counters().await;
    let storm_requests = faulted(&c1) - faulted(&c0);
    assert_eq!(
        secrets.get("app-env").await.unwrap().metadata.resource_version,
        env_version
    );
    // At most one failed sync (3 objects at once) per Retry-After of 4 s, plus the one under way: 3 x (10/4 + 1).
    assert!(
        storm_requests <= 12.0,
        "{storm_requests} requests in 10 s of 429 with Retry-After: 4"
    );
    let text = metrics(&replicas[leader]).await;
    assert!(
        metric(&text, "wi_controller_syncs_total{result=\"failed\"}") >= 1.0,
        "{text}"
    );
    assert!(
        events(&client, "app")
            .await
            .iter()
            .any(|(reason, note)| reason == "KeyVaultFailed" && note.contains("429")),
        "{:?}",
        events(&client, "app").await
    );
    emulator
        .call("PUT", "/faults".into(), json!({"target": VAULT, "clear": true}))
        .await;
    put("db-password", "p@ss-3".into()).await;
    let recovered = eventually(Duration::from_secs(15), async || {
        data(&secrets.get("app-env").await.unwrap(), "DB_PASSWORD") == b"p@ss-3"
    })
    .await;
    assert!(recovered, "no recovery after the storm\n{}", logs(&replicas));
    figure(format!(
        "429 storm 10 s: {storm_requests} Key Vault requests, app-env unchanged; recovered after it"
    ));

    // A foreign Secret of the same name is left alone; an identity without federated trust, or a ServiceAccount that
    // does not exist, writes nothing.
    apply(
        &installed.admin,
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: handmade\n  namespace: {TEAM}\nstringData:\n  KEY: mine\n\
             ---\n{}\n---\n{}\n",
            class(
                "clash",
                "syncer",
                json!([{"secretName": "handmade", "type": "Opaque",
                        "data": [{"objectName": "db-password", "key": "KEY"}]}])
            ),
            class(
                "untrusted",
                "untrusted",
                json!([{"secretName": "untrusted-env", "type": "Opaque",
                        "data": [{"objectName": "db-password", "key": "KEY"}]}])
            ),
        ),
    );
    apply(
        &installed.admin,
        &class(
            "ghostly",
            "ghost",
            json!([{"secretName": "ghost-env", "type": "Opaque",
                    "data": [{"objectName": "db-password", "key": "KEY"}]}]),
        ),
    );
    let mut seen = (Vec::new(), Vec::new(), Vec::new());
    let told = eventually(Duration::from_secs(20), async || {
        seen = (
            events(&client, "clash").await,
            events(&client, "untrusted").await,
            events(&client, "ghostly").await,
        );
        seen.0.iter().any(|(_, n)| n.contains("Secret handmade already exists"))
            && seen.1.iter().any(|(_, n)| n.contains("AADSTS700213"))
            && seen.2.iter().any(|(reason, n)| {
                reason == "InvalidIdentity"
                    && n.contains("ServiceAccount team-sync/ghost, named by the class's workload-identity.rs/sync-service-account annotation, does not exist")
            })
    })
    .await;
    assert!(told, "Events: {seen:?}\n{}", logs(&replicas));
    assert_eq!(data(&secrets.get("handmade").await.unwrap(), "KEY"), b"mine");
    assert!(secrets.get_opt("untrusted-env").await.unwrap().is_none());
    assert!(secrets.get_opt("ghost-env").await.unwrap().is_none());
    for (_, note) in seen.0.iter().chain(&seen.1) {
        assert!(!note.contains("p@ss"), "a value in an Event: {note}");
    }
    assert_eq!(
        seen.1.iter().map(|(_, n)| n.matches("AADSTS700213:").count()).max(),
        Some(1),
        "the reason once: {seen:?}"
    );
    figure(format!(
        "foreign Secret untouched: {:?}; no federation: {:?}",
        seen.0[0].1, seen.1[0].1
    ));

    // An entry made unreadable (its type deleted by mistake): told, and its Secret kept.
    let mut broken = app_objects(true);
    broken[2].as_object_mut().unwrap().remove("type");
    apply(&installed.admin, &class("app", "syncer", broken));
    let mut app_events = Vec::new();
    let told = eventually(Duration::from_secs(15), async || {
        app_events = events(&client, "app").await;
        app_events
            .iter()
            .any(|(_, n)| n.contains("spec.secretObjects[2].type: missing"))
    })
    .await;
    assert!(told, "{app_events:?}\n{}", logs(&replicas));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        secrets.get_opt("regcred").await.unwrap().is_some(),
        "a typo deleted regcred"
    );

    // An entry removed from secretObjects: its Secret goes.
    apply(&installed.admin, &class("app", "syncer", app_objects(false)));
    let removed = eventually(Duration::from_secs(15), async || {
        secrets.get_opt("regcred").await.unwrap().is_none()
    })
    .await;
    assert!(removed, "regcred still there\n{}", logs(&replicas));
    figure("regcred kept while its entry was unreadable, deleted when the entry left secretObjects".into());

    // The leader dies: the other replica takes the Lease within its duration and keeps syncing.
    let killed_at = Instant::now();
    let dead = replicas.remove(leader);
    drop(dead);
    let survivor = &replicas[0];
    let took_over = eventually(Duration::from_secs(30), async || holder().await == survivor.name).await;
    assert!(
        took_over,
        "{} did not take the Lease\n{}",
        survivor.name,
        logs(&replicas)
    );
    let takeover = killed_at.elapsed();
    put("db-password", "p@ss-4".into()).await;
    let followed = eventually(Duration::from_secs(15), async || {
        data(&secrets.get("app-env").await.unwrap(), "DB_PASSWORD") == b"p@ss-4"
    })
    .await;
    assert!(followed, "the new leader does not sync\n{}", logs(&replicas));
    assert!(
        takeover <= Duration::from_secs(20),
        "takeover took {takeover:?} (Lease 15 s)"
    );
    figure(format!(
        "leader {leader_name} killed: {} leads after {takeover:?} and syncs",
        survivor.name
    ));

    // The class deleted: the garbage collector deletes its Secrets.
    let deleted_at = Instant::now();
    Api::<kube::api::DynamicObject>::namespaced_with(client.clone(), TEAM, &secret_provider_class())
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    let collected = eventually(Duration::from_secs(30), async || {
        secrets.get_opt("app-env").await.unwrap().is_none() && secrets.get_opt("app-tls").await.unwrap().is_none()
    })
    .await;
    assert!(
        collected,
        "app-env/app-tls not garbage-collected:\n{}",
        plane.log_tail("kube-controller-manager.log", 20)
    );
    figure(format!(
        "class deleted: app-env and app-tls garbage-collected after {:?}",
        deleted_at.elapsed()
    ));

    let mut survivor = replicas.remove(0);
    let exit = survivor.process.terminate(Duration::from_secs(20));
    assert!(exit.success(), "exit {exit}:\n{}", survivor.process.log());
    assert!(!survivor.process.log().contains("p@ss"), "a value in the log");
}

fn secret_provider_class() -> kube::api::ApiResource {
    kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        "secrets-store.csi.x-k8s.io",
        "v1",
        "SecretProviderClass",
    ))
}
