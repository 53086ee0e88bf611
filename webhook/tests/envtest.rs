//! Against a real kube-apiserver and etcd, envtest style: runs when `KUBEBUILDER_ASSETS` names a folder with
//! `kube-apiserver` and `etcd` (as `setup-envtest` lays it out), and says why it skips otherwise.
//!
//! Starts both, serves the webhook in-process with the real Kubernetes lookups, registers a
//! MutatingWebhookConfiguration with `clientConfig.url` and a caBundle, and checks what the API server stored:
//! a labelled pod under an annotated ServiceAccount, an unlabelled pod in a labelled namespace, and a pod that
//! opts out of its labelled namespace.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use wi_webhook::lookup::KubeLookup;
use wi_webhook::server::Webhook;

const CLIENT_ID: &str = "dc93f674-70ec-43e3-be7b-bf11ac753aa3";

fn assets() -> Result<PathBuf, String> {
    let dir = std::env::var_os("KUBEBUILDER_ASSETS").ok_or("KUBEBUILDER_ASSETS is not set")?;
    let dir = PathBuf::from(dir);
    for binary in ["kube-apiserver", "etcd"] {
        if !dir.join(binary).is_file() {
            return Err(format!("KUBEBUILDER_ASSETS={} has no {binary}", dir.display()));
        }
    }
    Ok(dir)
}

/// The assets folder, or `None` after printing why the test skips.
fn assets_or_skip() -> Option<PathBuf> {
    assets()
        .inspect_err(|reason| eprintln!("skipped: {reason} (envtest needs a folder with kube-apiserver and etcd)"))
        .ok()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Kills the process when the test ends, however it ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(binary: &Path, args: &[String], log: &Path) -> Process {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(binary)
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    Process(child)
}

struct ControlPlane {
    client: kube::Client,
    _etcd: Process,
    _apiserver: Process,
    dir: tempfile::TempDir,
}

async fn control_plane(assets: &Path) -> ControlPlane {
    let dir = tempfile::tempdir().unwrap();
    let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
    let etcd = spawn(
        &assets.join("etcd"),
        &[
            format!("--data-dir={}", dir.path().join("etcd").display()),
            format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"),
            format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
            "--unsafe-no-fsync=true".to_owned(),
        ],
        &dir.path().join("etcd.log"),
    );
    let sa_key = rcgen::KeyPair::generate().unwrap();
    let sa_key_path = dir.path().join("sa.key");
    std::fs::write(&sa_key_path, sa_key.serialize_pem()).unwrap();
    let token = "envtest-admin-token";
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, format!("{token},admin,admin-uid,system:masters\n")).unwrap();
    let apiserver = spawn(
        &assets.join("kube-apiserver"),
        &[
            format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
            "--bind-address=127.0.0.1".to_owned(),
            format!("--secure-port={api_port}"),
            format!("--cert-dir={}", dir.path().join("certs").display()),
            format!("--token-auth-file={}", tokens.display()),
            "--authorization-mode=RBAC".to_owned(),
            "--service-account-issuer=https://kubernetes.default.svc".to_owned(),
            format!("--service-account-key-file={}", sa_key_path.display()),
            format!("--service-account-signing-key-file={}", sa_key_path.display()),
            "--service-cluster-ip-range=10.0.0.0/24".to_owned(),
            "--enable-priority-and-fairness=false".to_owned(),
        ],
        &dir.path().join("kube-apiserver.log"),
    );
    let mut config = kube::Config::new(format!("https://127.0.0.1:{api_port}").parse().unwrap());
    config.accept_invalid_certs = true;
    config.auth_info.token = Some(token.to_owned().into());
    let client = kube::Client::try_from(config).unwrap();
    let ready = eventually(Duration::from_secs(60), async || {
        Api::<Namespace>::all(client.clone())
            .get_opt("default")
            .await
            .is_ok_and(|ns| ns.is_some())
    })
    .await;
    if !ready {
        let log = std::fs::read_to_string(dir.path().join("kube-apiserver.log")).unwrap_or_default();
        panic!("kube-apiserver did not become ready in 60 s:\n{log}");
    }
    ControlPlane {
        client,
        _etcd: etcd,
        _apiserver: apiserver,
        dir,
    }
}

async fn create<K>(api: &Api<K>, object: serde_json::Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(&PostParams::default(), &serde_json::from_value(object).unwrap())
        .await
        .unwrap()
}

fn env_names(pod: &Pod) -> Vec<String> {
    pod.spec.as_ref().unwrap().containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| e.name.clone())
        .collect()
}

/// Creates the pod until the webhook configuration is in effect (the API server picks it up asynchronously),
/// then returns what was stored.
async fn create_pod(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    label: Option<&str>,
    expect_mutated: bool,
) -> Pod {
    let api = Api::<Pod>::namespaced(client.clone(), namespace);
    let mut labels = json!({"app": name});
    if let Some(value) = label {
        labels["azure.workload.identity/use"] = json!(value);
    }
    for _ in 0..50 {
        let pod = create(
            &api,
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": name, "labels": labels},
                   "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "busybox"}]}}),
        )
        .await;
        if env_names(&pod).iter().any(|n| n == "AZURE_FEDERATED_TOKEN_FILE") == expect_mutated {
            return pod;
        }
        api.delete(name, &DeleteParams::default().grace_period(0))
            .await
            .unwrap();
        let _ = eventually(Duration::from_secs(5), async || {
            api.get_opt(name).await.is_ok_and(|p| p.is_none())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("pod {namespace}/{name} was never stored as expected (mutated: {expect_mutated})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_api_server_stores_mutated_pods() {
    let Some(assets) = assets_or_skip() else {
        return;
    };
    let plane = control_plane(&assets).await;
    let client = plane.client.clone();

    let pki = Pki::new();
    let cert_dir = plane.dir.path().join("webhook-tls");
    std::fs::create_dir(&cert_dir).unwrap();
    install_leaf(&cert_dir, &pki.leaf());
    let (lookup, driver) = KubeLookup::start(client.clone());
    tokio::spawn(driver);
    let lookup = Arc::new(lookup);
    let webhook = Webhook::bind(serve_args(&cert_dir, &[]), lookup.clone(), provider())
        .await
        .unwrap();
    let addr = webhook.admission_addr().unwrap();
    let admin = webhook.admin_addr().unwrap();
    tokio::spawn(webhook.run(futures::future::pending()));
    assert!(
        eventually(Duration::from_secs(30), async || admin_get(admin, "/readyz").await.0
            == http::StatusCode::OK)
        .await,
        "the webhook's caches did not sync"
    );

    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(pki.ca_pem());
    let url = format!("https://{addr}/mutate-v1-pod");
    let entry = |name: &str, selector: serde_json::Value| {
        let mut entry = json!({
            "name": name,
            "admissionReviewVersions": ["v1", "v1beta1"],
            "clientConfig": {"url": url, "caBundle": ca_bundle},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "reinvocationPolicy": "IfNeeded",
            "timeoutSeconds": 10,
        });
        entry
            .as_object_mut()
            .unwrap()
            .extend(selector.as_object().unwrap().clone());
        entry
    };
    create(
        &Api::<MutatingWebhookConfiguration>::all(client.clone()),
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
               "metadata": {"name": "wi-webhook-envtest"},
               "webhooks": [
                   entry("pods.workload-identity.rs", json!({"objectSelector": {"matchLabels": {"azure.workload.identity/use": "true"}}})),
                   entry("namespaces.workload-identity.rs", json!({
                       "namespaceSelector": {"matchLabels": {"azure.workload.identity/use": "true"}},
                       "objectSelector": {"matchExpressions": [{"key": "azure.workload.identity/use", "operator": "NotIn", "values": ["false"]}]},
                   })),
               ]}),
    )
    .await;

    for (namespace, labels) in [
        ("wi-pods", json!({})),
        ("wi-labelled", json!({"azure.workload.identity/use": "true"})),
    ] {
        create(
            &Api::<Namespace>::all(client.clone()),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}}),
        )
        .await;
        create(
            &Api::<ServiceAccount>::namespaced(client.clone(), namespace),
            json!({"apiVersion": "v1", "kind": "ServiceAccount",
                   "metadata": {"name": "app", "annotations": {"azure.workload.identity/client-id": CLIENT_ID}}}),
        )
        .await;
    }

    let labelled = create_pod(&client, "wi-pods", "labelled", Some("true"), true).await;
    let spec = labelled.spec.as_ref().unwrap();
    let env = spec.containers[0].env.clone().unwrap();
    assert!(
        env.iter()
            .any(|e| e.name == "AZURE_CLIENT_ID" && e.value.as_deref() == Some(CLIENT_ID))
    );
    assert!(
        env.iter()
            .any(|e| e.name == "AZURE_TENANT_ID" && e.value.as_deref() == Some(TENANT))
    );
    let token = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "azure-identity-token")
        .expect("the token volume");
    let source = token.projected.as_ref().unwrap().sources.as_ref().unwrap()[0]
        .service_account_token
        .clone()
        .unwrap();
    assert_eq!(source.audience.as_deref(), Some("api://AzureADTokenExchange"));
    assert_eq!(source.expiration_seconds, Some(3600));

    let in_namespace = create_pod(&client, "wi-labelled", "unlabelled", None, true).await;
    assert!(env_names(&in_namespace).contains(&"AZURE_CLIENT_ID".to_owned()));

    let opted_out = create_pod(&client, "wi-labelled", "opted-out", Some("false"), false).await;
    assert!(env_names(&opted_out).is_empty());

    let plain = create_pod(&client, "wi-pods", "plain", None, false).await;
    assert!(env_names(&plain).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_managed_certificates_patch_a_real_ca_bundle() {
    let Some(assets) = assets_or_skip() else {
        return;
    };
    let plane = control_plane(&assets).await;
    let client = plane.client.clone();
    create(
        &Api::<Namespace>::all(client.clone()),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "wi-system"}}),
    )
    .await;
    let service = json!({"name": "wi-webhook", "namespace": "wi-system", "path": "/mutate-v1-pod", "port": 443});
    create(
        &Api::<MutatingWebhookConfiguration>::all(client.clone()),
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
               "metadata": {"name": "wi-webhook"},
               "webhooks": [{"name": "pods.workload-identity.rs", "admissionReviewVersions": ["v1"],
                             "sideEffects": "None", "clientConfig": {"service": service},
                             "objectSelector": {"matchLabels": {"azure.workload.identity/use": "true"}},
                             "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]}]}),
    )
    .await;
    let args = serve_args(Path::new("/nonexistent"), &["--cert-mode", "self-managed"]).certs;
    let manager = wi_webhook::server::certs::CertManager::new(client.clone(), args);
    let store = manager.initial(provider()).await.unwrap();

    let stored = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get("wi-webhook")
        .await
        .unwrap();
    let bundle = stored.webhooks.unwrap()[0]
        .client_config
        .ca_bundle
        .clone()
        .expect("a caBundle")
        .0;
    let roots = wi_webhook::server::certs::parse_bundle(&bundle);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(wi_webhook::server::certs::verifies(
        &store.leaf(),
        &roots,
        "wi-webhook.wi-system.svc",
        now
    ));
    let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client, "wi-system")
        .get("wi-webhook-tls")
        .await
        .unwrap();
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
}
