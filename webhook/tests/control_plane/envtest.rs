//! Against a real kube-apiserver and etcd, envtest style: runs when `KUBEBUILDER_ASSETS` names a folder with
//! `kube-apiserver` and `etcd` (as `setup-envtest` lays it out) or `CI=true`; reported as ignored, with the reason,
//! otherwise (see `common/envtest.rs`).
//!
//! Starts both, serves the webhook in-process with the real Kubernetes lookups, registers a
//! MutatingWebhookConfiguration with `clientConfig.url` and a caBundle, and checks what the API server stored:
//! a labelled pod under an annotated ServiceAccount, an unlabelled pod in a labelled namespace, and a pod that
//! opts out of its labelled namespace.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::common::envtest::{ControlPlane, Options};
use crate::common::*;
use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use wi_webhook::lookup::KubeLookup;
use wi_webhook::server::Webhook;

const CLIENT_ID: &str = "dc93f674-70ec-43e3-be7b-bf11ac753aa3";

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
#[cfg_attr(
    not(envtest),
    ignore = "needs a control plane: KUBEBUILDER_ASSETS does not name a folder with kube-apiserver and etcd"
)]
async fn a_real_api_server_stores_mutated_pods() {
    let plane = ControlPlane::start(Options::default()).await;
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
#[cfg_attr(
    not(envtest),
    ignore = "needs a control plane: KUBEBUILDER_ASSETS does not name a folder with kube-apiserver and etcd"
)]
async fn self_managed_certificates_patch_a_real_ca_bundle() {
    let plane = ControlPlane::start(Options::default()).await;
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
