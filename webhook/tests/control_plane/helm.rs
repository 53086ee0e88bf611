//! The Helm chart (`charts/workload-identity-rs`) behind a real API server (envtest; see `common/envtest.rs`), with
//! the real `helm` (v4, `../shared/helm/setup.sh`): `helm install`, the webhook run with exactly the args and env of
//! the Deployment Helm rendered and a token of the chart's ServiceAccount, a pod of an opted-in namespace injected;
//! then `helm upgrade` (log level, replicas) and `helm rollback` while pods are created at about 5 per second: none
//! refused, none without the identity, and the caBundle the webhook wrote never emptied (the chart renders none, and
//! Helm 4's server-side apply leaves a field it does not own alone); `helm uninstall` deletes the webhook
//! configuration, so pods are not refused once the webhook is gone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::common::envtest::{ADMIN_TOKEN, ControlPlane, SECRET_PROVIDER_CLASS_CRD};
use crate::common::process::report;
use crate::common::{TENANT, eventually};
use crate::install::{
    APP_CLIENT_ID, APPS, Installed, ONE_AT_A_TIME, ROUTED, apply, ca_bundles, create_pods_until, documents, env_of,
};

const RELEASE: &str = "workload-identity-rs";
const NAMESPACE: &str = "wi-system";

/// `helm`: on the PATH, else the one `../shared/helm/setup.sh` unpacks; found once.
fn helm_binary() -> &'static Path {
    static HELM: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    HELM.get_or_init(find_helm)
}

fn find_helm() -> PathBuf {
    if let Ok(output) = std::process::Command::new("helm").arg("version").output()
        && output.status.success()
    {
        return PathBuf::from("helm");
    }
    let setup = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/helm/setup.sh");
    let output = std::process::Command::new("bash").arg(&setup).output().unwrap();
    assert!(
        output.status.success(),
        "no helm on the PATH and {} failed: {}",
        setup.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim()).join("helm")
}

fn chart() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/workload-identity-rs")
        .display()
        .to_string()
}

/// Runs `helm ARGS` against the cluster of `kubeconfig`; its standard output, or a panic with its error.
fn helm(kubeconfig: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new(helm_binary())
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HELM_CACHE_HOME", kubeconfig.with_file_name("helm-cache"))
        .env("HELM_CONFIG_HOME", kubeconfig.with_file_name("helm-config"))
        .env("HELM_DATA_HOME", kubeconfig.with_file_name("helm-data"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Every webhook entry's caBundle, non-empty: sampled every 50 ms until `stop`; the number of samples and of those
/// where some entry's caBundle was empty (or the object gone).
fn watch_ca_bundles(client: kube::Client, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(u32, u32)> {
    tokio::spawn(async move {
        let (mut samples, mut empty) = (0u32, 0u32);
        while !stop.load(Ordering::Acquire) {
            let bundles = ca_bundles(&client).await;
            samples += 1;
            if bundles.is_empty() || bundles.iter().any(Vec::is_empty) {
                empty += 1;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (samples, empty)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(envtest),
    ignore = "needs a control plane: KUBEBUILDER_ASSETS does not name a folder with kube-apiserver and etcd"
)]
async fn helm_install_upgrade_rollback_and_uninstall_never_refuse_a_pod() {
    let _one = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let figure = |line: String| report("helm", &format!("[{:>5.1?}] {line}", started.elapsed()));
    let plane = ControlPlane::start(ROUTED).await;
    let client = plane.client.clone();
    let admin = plane.kubeconfig("admin.kubeconfig", ADMIN_TOKEN);
    apply(&admin, SECRET_PROVIDER_CLASS_CRD);

    // helm install, as the chart's README says.
    let tenant = format!("tenantId={TENANT}");
    helm(
        &admin,
        &[
            "install",
            RELEASE,
            &chart(),
            "-n",
            NAMESPACE,
            "--create-namespace",
            "--set",
            &tenant,
        ],
    );
    let docs = documents(&helm(&admin, &["get", "manifest", RELEASE, "-n", NAMESPACE]));
    assert!(
        ca_bundles(&client).await.iter().all(Vec::is_empty),
        "the chart renders no caBundle"
    );
    let installed = Installed::from_rendered(plane, docs, admin.clone()).await;
    let mut webhook = installed.run_webhook().await;
    figure(format!(
        "helm install: {} objects; the webhook ready with the rendered args",
        installed.docs.len()
    ));
    assert!(
        ca_bundles(&client).await.iter().all(|b| !b.is_empty()),
        "the webhook wrote no caBundle"
    );

    // An opted-in namespace: its pods are injected.
    apply(
        &admin,
        &json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": APPS, "labels": {"azure.workload.identity/use": "true"}}})
        .to_string(),
    );
    apply(
        &admin,
        &json!({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": "app", "namespace": APPS,
                             "annotations": {"azure.workload.identity/client-id": APP_CLIENT_ID}}})
        .to_string(),
    );
    let pods = Api::<Pod>::namespaced(client.clone(), APPS);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "first", "namespace": APPS},
        "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "busybox"}]}}))
    .unwrap();
    let mut first = None;
    eventually(Duration::from_secs(30), async || {
        first = pods.create(&PostParams::default(), &pod).await.ok();
        first.is_some()
    })
    .await;
    let first = first.unwrap_or_else(|| panic!("the first pod was refused:\n{}", webhook.log()));
    assert_eq!(
        env_of(&first).get("AZURE_CLIENT_ID").map(String::as_str),
        Some(APP_CLIENT_ID)
    );

    // Upgrade and roll back while pods are created, the caBundle watched.
    let stop = Arc::new(AtomicBool::new(false));
    let creator = create_pods_until(client.clone(), APPS, "helm-", stop.clone());
    let watcher = watch_ca_bundles(client.clone(), stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let upgraded = Instant::now();
    helm(
        &admin,
        &[
            "upgrade",
            RELEASE,
            &chart(),
            "-n",
            NAMESPACE,
            "--reuse-values",
            "--set",
            "logLevel=debug",
            "--set",
            "webhook.replicas=3",
        ],
    );
    let upgrade_time = upgraded.elapsed();
    let deployments = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), NAMESPACE);
    let replicas = deployments.get("wi-webhook").await.unwrap().spec.unwrap().replicas;
    assert_eq!(replicas, Some(3), "the upgrade did not apply");
    tokio::time::sleep(Duration::from_secs(2)).await;
    helm(&admin, &["rollback", RELEASE, "1", "-n", NAMESPACE]);
    let replicas = deployments.get("wi-webhook").await.unwrap().spec.unwrap().replicas;
    assert_eq!(replicas, Some(2), "the rollback did not apply");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Release);
    let (created, refused, uninjected) = creator.await.unwrap();
    let (samples, empty) = watcher.await.unwrap();
    assert!(refused.is_empty(), "{} pods refused: {refused:?}", refused.len());
    assert!(uninjected.is_empty(), "pods without the identity: {uninjected:?}");
    assert_eq!(empty, 0, "the caBundle was empty in {empty} of {samples} samples");
    assert!(created >= 20, "only {created} pods created");
    let configuration = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get("wi-webhook")
        .await
        .unwrap();
    let owners: Vec<String> = configuration
        .metadata
        .managed_fields
        .unwrap_or_default()
        .iter()
        .filter(|f| {
            f.fields_v1
                .as_ref()
                .is_some_and(|v| v.0.to_string().contains("f:caBundle"))
        })
        .filter_map(|f| f.manager.clone())
        .collect();
    assert_eq!(owners, ["wi-webhook"], "the caBundle's owner (never helm)");
    figure(format!(
        "upgrade ({upgrade_time:.1?}) and rollback under {created} pod creations: 0 refused, 0 without the identity, \
         caBundle non-empty in all {samples} samples (its field manager {owners:?}, never helm)"
    ));

    // Uninstall: the configuration goes with the release, so pods are admitted without the webhook.
    helm(&admin, &["uninstall", RELEASE, "-n", NAMESPACE]);
    assert!(
        Api::<MutatingWebhookConfiguration>::all(client.clone())
            .get_opt("wi-webhook")
            .await
            .unwrap()
            .is_none(),
        "helm uninstall left the webhook configuration"
    );
    let exit = webhook.terminate(Duration::from_secs(60));
    assert!(exit.success(), "exit {exit}:\n{}", webhook.log());
    let after: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "after", "namespace": APPS},
        "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "busybox"}]}}))
    .unwrap();
    let admitted = pods.create(&PostParams::default(), &after).await;
    assert!(admitted.is_ok(), "a pod refused after helm uninstall: {admitted:?}");
    figure("uninstall: the webhook configuration deleted; pods admitted with the webhook stopped".into());
}
