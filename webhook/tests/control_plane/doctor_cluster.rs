//! `wi-webhook doctor --cluster` and `doctor pod NAME` against a real kube-apiserver and etcd (envtest style, see
//! `common/envtest.rs`): the walkthrough's manifests applied with kubectl, the webhook's MutatingWebhookConfiguration
//! from `manifests/base` with no caBundle and no endpoint behind its Service, the binary run with a kubeconfig as
//! users run it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crate::common::envtest::{ADMIN_TOKEN, ControlPlane, Options, SECRET_PROVIDER_CLASS_CRD, run_with_kubeconfig};
use serde_json::Value;

const TENANT: &str = "d2f0c8a4-3b1e-4c6d-9e8f-7a6b5c4d3e2f";

fn run(program: &str, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    run_with_kubeconfig(program, kubeconfig, args, stdin)
}

fn apply(kubeconfig: &Path, yaml: &str) {
    let out = run("kubectl", kubeconfig, &["apply", "-f", "-"], Some(yaml));
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn doctor(kubeconfig: &Path, args: &[&str]) -> Output {
    run(
        env!("CARGO_BIN_EXE_wi-webhook"),
        kubeconfig,
        &[&["doctor"], args].concat(),
        None,
    )
}

fn codes(out: &Output) -> Vec<String> {
    let report: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let mut codes: Vec<String> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap().to_owned())
        .collect();
    codes.sort();
    codes
}

#[tokio::test]
#[cfg_attr(
    not(envtest),
    ignore = "needs a control plane: KUBEBUILDER_ASSETS naming a folder with kube-apiserver and etcd"
)]
async fn doctor_reads_the_cluster_and_checks_the_webhook_itself() {
    let plane = ControlPlane::start(Options::default()).await;
    let admin = plane.kubeconfig("admin.kubeconfig", ADMIN_TOKEN);
    apply(&admin, SECRET_PROVIDER_CLASS_CRD);
    let established = crate::common::process::eventually(Duration::from_secs(30), async || {
        run("kubectl", &admin, &["get", "secretproviderclasses", "-A"], None)
            .status
            .success()
    })
    .await;
    assert!(established, "the SecretProviderClass CRD was not served in 30 s");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    apply(
        &admin,
        &std::fs::read_to_string(root.join("tests/doctor/walkthrough/manifests.yaml")).unwrap(),
    );
    // The webhook registered as manifests/base does, with no caBundle yet and nothing behind its Service.
    let base = root.join("../manifests/base");
    let mut webhook = String::new();
    for file in ["namespace.yaml", "service.yaml", "mutatingwebhookconfiguration.yaml"] {
        webhook += &std::fs::read_to_string(base.join(file)).unwrap();
        webhook += "\n---\n";
    }
    apply(&admin, &webhook);
    // The webhook's own settings, as manifests/base deploys them (a ConfigMap from config.env, read through
    // envFrom): doctor takes the tenant from there when --tenant-id is not given. No controller runs, so no pod.
    apply(
        &admin,
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: wi-webhook-config-h8m2, namespace: wi-system}}\n\
             data: {{WI_TENANT_ID: {TENANT}, WI_CLOUD: AzurePublicCloud}}\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: wi-webhook, namespace: wi-system}}\n\
             spec:\n  selector: {{matchLabels: {{app: wi-webhook}}}}\n  template:\n    metadata: {{labels: {{app: wi-webhook}}}}\n\
             \x20   spec:\n      containers:\n      - name: wi-webhook\n        image: wi-webhook\n        args: [serve]\n\
             \x20       envFrom: [{{configMapRef: {{name: wi-webhook-config-h8m2}}}}]\n"
        ),
    );
    // An opted-in workload under the walkthrough's account, which has no tenant-id annotation: the engine runs on
    // its template, and only the webhook's own tenant keeps it from WI204.
    apply(
        &admin,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: opted, namespace: default}\n\
         spec:\n  selector: {matchLabels: {app: opted}}\n  template:\n    metadata:\n      labels: {app: opted, \
         azure.workload.identity/use: \"true\"}\n    spec: {serviceAccountName: my-app-sa, containers: [{name: app, \
         image: nginx}]}\n",
    );
    // A pod the webhook never saw: not labelled, in an unlabelled namespace.
    apply(
        &admin,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: plain, namespace: default}\n\
         spec: {serviceAccountName: my-app-sa, containers: [{name: app, image: nginx}]}\n",
    );

    // No --tenant-id: the webhook's own (from its ConfigMap) is used, so no WI204 "no tenant".
    let all = doctor(&admin, &["--cluster", "-A", "-o", "json"]);
    assert_eq!(all.status.code(), Some(1), "{}", String::from_utf8_lossy(&all.stderr));
    // The walkthrough's three Kubernetes mistakes (the fourth is on the Azure side), the plain pod under the
    // workload identity account, and the webhook without caBundle or endpoints.
    assert_eq!(
        codes(&all),
        ["WI102", "WI102", "WI106", "WI106", "WI107", "WI404", "WI408"]
    );
    let report: Value = serde_json::from_slice(&all.stdout).unwrap();
    for finding in report["findings"].as_array().unwrap() {
        assert!(finding["file"].is_null() && finding["line"].is_null(), "{finding}");
    }
    let endpoints = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "WI107")
        .unwrap();
    assert_eq!(endpoints["object"]["kind"], "Service");
    assert_eq!(endpoints["object"]["namespace"], "wi-system");

    // Another configuration name: neither the registration nor the webhook's tenant is found.
    let elsewhere = doctor(
        &admin,
        &["--cluster", "-A", "-o", "json", "--webhook-configuration", "other"],
    );
    assert_eq!(
        codes(&elsewhere),
        ["WI102", "WI102", "WI105", "WI204", "WI404", "WI408"]
    );

    // One namespace: the webhook findings stay (they are about the cluster), the objects are those of wi-system.
    let scoped = doctor(
        &admin,
        &["--cluster", "-n", "wi-system", "-o", "json", "--tenant-id", TENANT],
    );
    assert_eq!(codes(&scoped), ["WI106", "WI106", "WI107"]);

    // doctor pod: why it was not injected, and what is wrong around it.
    let pod = doctor(&admin, &["pod", "plain", "-n", "default", "--tenant-id", TENANT]);
    let text = String::from_utf8_lossy(&pod.stdout);
    assert_eq!(
        pod.status.code(),
        Some(1),
        "{text}{}",
        String::from_utf8_lossy(&pod.stderr)
    );
    assert!(
        text.starts_with(
            "pod plain was not injected: neither the pod nor its namespace is labelled azure.workload.identity/use"
        ),
        "{text}"
    );
    assert!(text.contains("error WI102 cluster: the pod is not labelled"), "{text}");
    let json = doctor(&admin, &["pod", "plain", "-n", "default", "-o", "json"]);
    let report: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(
        report["verdict"]
            .as_str()
            .unwrap()
            .starts_with("pod plain was not injected"),
        "{report}"
    );
    let missing = doctor(&admin, &["pod", "ghost", "-n", "default"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no pod default/ghost"));

    // Azure Workload Identity's own webhook registered too, as the AKS add-on does: reported with how to disable it.
    apply(
        &admin,
        "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\n\
         metadata: {name: azure-wi-webhook-mutating-webhook-configuration}\nwebhooks:\n\
         - name: mutation.azure-workload-identity.io\n  admissionReviewVersions: [v1]\n  sideEffects: None\n\
         \x20 failurePolicy: Ignore\n\
         \x20 clientConfig: {service: {name: azure-wi-webhook-webhook-service, namespace: kube-system, path: /mutate-v1-pod}}\n\
         \x20 objectSelector: {matchLabels: {azure.workload.identity/use: \"true\"}}\n\
         \x20 rules: [{apiGroups: [\"\"], apiVersions: [v1], operations: [CREATE], resources: [pods]}]\n",
    );
    let both = doctor(
        &admin,
        &["--cluster", "-n", "wi-system", "-o", "json", "--tenant-id", TENANT],
    );
    assert_eq!(codes(&both), ["WI106", "WI106", "WI107", "WI108"]);
    let report: Value = serde_json::from_slice(&both.stdout).unwrap();
    let upstream = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "WI108")
        .unwrap();
    assert_eq!(
        upstream["object"]["name"],
        "azure-wi-webhook-mutating-webhook-configuration"
    );
    assert!(
        upstream["fix"]
            .as_str()
            .unwrap()
            .contains("--disable-workload-identity"),
        "{upstream}"
    );
    let out = run(
        "kubectl",
        &admin,
        &[
            "delete",
            "mutatingwebhookconfiguration",
            "azure-wi-webhook-mutating-webhook-configuration",
        ],
        None,
    );
    assert!(out.status.success());

    // Without the configuration, the webhook is not registered at all.
    let out = run(
        "kubectl",
        &admin,
        &["delete", "mutatingwebhookconfiguration", "wi-webhook"],
        None,
    );
    assert!(out.status.success());
    let gone = doctor(&admin, &["--cluster", "-n", "wi-system", "-o", "json"]);
    assert_eq!(codes(&gone), ["WI105"]);
}
