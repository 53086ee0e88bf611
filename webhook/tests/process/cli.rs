//! `wi-webhook mutate` as a user runs it: the real binary, real files, standard input, exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::type_complexity)]

use std::path::PathBuf;

use serde_json::Value;

use super::{text, wi_webhook};

fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

fn sa() -> String {
    fixture("admission/serviceaccounts/workload-sa.json")
        .display()
        .to_string()
}

#[test]
fn review_mode_prints_the_admission_response() {
    let review = fixture("admission/01-plain-pod.json");
    let out = wi_webhook(
        &[
            "mutate",
            "--review",
            review.to_str().unwrap(),
            "--service-account",
            &sa(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let response: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(response["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(response["response"]["uid"], "8f227573-fe04-4b51-9b83-f4f9cec4e825");
    assert_eq!(response["response"]["patchType"], "JSONPatch");
    let patch = wi_webhook::review::decode_patch(&response).unwrap().unwrap();
    assert_eq!(patch.0.len(), 7);
}

#[test]
fn review_mode_reads_standard_input_and_yaml() {
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("admission/12-plain-pod-v1beta1.json")).unwrap())
            .unwrap();
    let yaml = wi_contract::yaml::to_string(&json).unwrap();
    let out = wi_webhook(
        &["mutate", "--review", "-", "--service-account", &sa()],
        Some(yaml.as_bytes()),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let response: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(response["apiVersion"], "admission.k8s.io/v1beta1");
    assert_eq!(response["response"]["allowed"], true);
}

#[test]
fn pod_mode_mutates_a_deployments_pod_template_with_csi_secrets() {
    let out = wi_webhook(
        &[
            "mutate",
            "--pod",
            fixture("extra/deployment-with-secrets.yaml").to_str().unwrap(),
            "--service-account",
            &sa(),
            "--secret-provider-class",
            fixture("extra/secretproviderclass-kv.yaml").to_str().unwrap(),
            "--tenant-id",
            "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "--cloud",
            "AzureChinaCloud",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
    let pod: Value = wi_contract::yaml::from_str(std::str::from_utf8(&out.stdout).unwrap()).unwrap();
    assert_eq!(pod["kind"], "Pod");
    assert_eq!(pod["metadata"]["generateName"], "web-");
    let env = &pod["spec"]["containers"][0]["env"];
    assert!(
        env.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "AZURE_AUTHORITY_HOST" && e["value"] == "https://login.chinacloudapi.cn/")
    );
    let volumes: Vec<&str> = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(volumes, ["azure-identity-token", "wi-secrets-store"]);
}

#[test]
fn pod_mode_prints_warnings_and_denials_on_stderr_and_exits_zero() {
    let default_sa = fixture("admission/serviceaccounts/default.json");
    let pod = fixture("admission/07-default-sa-no-annotations.yaml");
    let out = wi_webhook(
        &[
            "mutate",
            "--pod",
            pod.to_str().unwrap(),
            "--service-account",
            default_sa.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("warning: ServiceAccount wi-fixtures/default has no azure.workload.identity/client-id"),
        "{stderr}"
    );
    assert!(stderr.contains("warning: no tenant"), "{stderr}");

    let denied = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: wi-fixtures\n  labels: {azure.workload.identity/use: \"true\"}\n  annotations: {azure.workload.identity/service-account-token-expiration: \"60\"}\nspec:\n  serviceAccountName: workload-sa\n  containers: [{name: app, image: x}]\n";
    let out = wi_webhook(
        &["mutate", "--pod", "-", "--service-account", &sa()],
        Some(denied.as_bytes()),
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).starts_with(
            "denied: annotation azure.workload.identity/service-account-token-expiration on pod is \"60\""
        )
    );
}

#[test]
fn unreadable_input_exits_2_with_one_line() {
    let pod = fixture("admission/01-plain-pod.yaml");
    let cases: Vec<(Vec<String>, Option<&[u8]>, &str)> = vec![
        (
            vec![
                "--pod".into(),
                "/nonexistent.yaml".into(),
                "--service-account".into(),
                sa(),
            ],
            None,
            "cannot read /nonexistent.yaml",
        ),
        (
            vec!["--pod".into(), "-".into(), "--service-account".into(), sa()],
            Some(b"kind: [unclosed"),
            "-: invalid YAML",
        ),
        (
            vec!["--review".into(), "-".into(), "--service-account".into(), sa()],
            Some(b"{\"kind\": \"AdmissionReview\"}"),
            "apiVersion is \"\"",
        ),
        (
            vec!["--pod".into(), "-".into(), "--service-account".into(), "-".into()],
            Some(b"{}"),
            "only one input",
        ),
        (
            vec![
                "--pod".into(),
                pod.display().to_string(),
                "--service-account".into(),
                fixture("admission/serviceaccounts/default.json").display().to_string(),
            ],
            None,
            "the pod runs as ServiceAccount \"workload-sa\"",
        ),
        (
            vec![
                "--pod".into(),
                pod.display().to_string(),
                "--service-account".into(),
                sa(),
                "--secret-provider-class".into(),
                fixture("extra/secretproviderclass-kv.yaml").display().to_string(),
            ],
            None,
            "the pod names no SecretProviderClass",
        ),
        (
            vec![
                "--pod".into(),
                fixture("extra/namespace-labelled.yaml").display().to_string(),
                "--service-account".into(),
                sa(),
            ],
            None,
            "kind Namespace has no pod template",
        ),
    ];
    for (args, stdin, expected) in cases {
        let mut all = vec!["mutate"];
        all.extend(args.iter().map(String::as_str));
        let out = wi_webhook(&all, stdin);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn bad_flags_are_usage_errors() {
    let out = wi_webhook(&["mutate", "--service-account", &sa()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--review <FILE>|--pod <FILE>"),
        "{}",
        text(&out.stderr)
    );
    let out = wi_webhook(
        &[
            "mutate",
            "--pod",
            "x",
            "--service-account",
            &sa(),
            "--cloud",
            "AzureGermanCloud",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("unknown cloud \"AzureGermanCloud\""),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn help_explains_the_inputs() {
    let out = wi_webhook(&["mutate", "--help"], None);
    let help = text(&out.stdout);
    for needle in [
        "--review <FILE>",
        "--pod <FILE>",
        "--service-account <FILE>",
        "--namespace <FILE>",
        "--secret-provider-class <FILE>",
        "[env: WI_TENANT_ID=]",
        "AzureUSGovernmentCloud",
        "Exits 0 whether",
    ] {
        assert!(help.contains(needle), "missing {needle:?} in\n{help}");
    }
}

#[test]
fn the_example_manifests_mutate_without_a_warning() {
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples");
    let path = |name: &str| examples.join(name).display().to_string();
    let out = wi_webhook(
        &[
            "mutate",
            "--pod",
            &path("deployment.yaml"),
            "--service-account",
            &path("serviceaccount.yaml"),
            "--secret-provider-class",
            &path("secretproviderclass.yaml"),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stderr), "", "the examples must be correct as shipped");
    let pod: Value = wi_contract::yaml::from_str(std::str::from_utf8(&out.stdout).unwrap()).unwrap();
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    assert!(
        volumes
            .iter()
            .any(|v| v["csi"]["volumeAttributes"]["secretProviderClass"] == "kv-techventure-secrets")
    );
}
