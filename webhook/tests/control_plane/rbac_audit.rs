//! The RBAC audit (issue 30): what each component's ServiceAccount may do once `manifests/base` is installed on the
//! real API server, as `kubectl auth can-i --list` reports it, equals the list docs/reliability.md gives, and the
//! webhook's Secret access is its own Secret by name (plus create, which RBAC cannot bound by name).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use crate::common::envtest::Options;
use crate::install::{ONE_AT_A_TIME, install};

/// `kubectl auth can-i ARGS` as `system:serviceaccount:NAMESPACE:NAME`, through the admin's impersonation.
fn can_i(admin: &Path, account: &str, args: &[&str]) -> String {
    let output = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(admin)
        .args(["auth", "can-i", "--as", account])
        .args(args)
        .output()
        .expect("kubectl runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The resource rows of `can-i --list -n NAMESPACE`, as `resource [names] [verbs]`, without the rules every
/// authenticated user has (self reviews).
fn rules(admin: &Path, account: &str, namespace: &str) -> Vec<String> {
    let table = can_i(admin, account, &["--list", "-n", namespace, "--no-headers"]);
    let mut rows: Vec<String> = table
        .lines()
        .filter(|line| !line.starts_with(' ') && !line.starts_with("selfsubject"))
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|row| !row.is_empty())
        .collect();
    rows.sort();
    rows
}

/// The rows docs/reliability.md lists for `account in namespace`: the fenced block after the line
/// `<!-- rbac: ACCOUNT in NAMESPACE -->`.
fn documented(account: &str, namespace: &str) -> Vec<String> {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/reliability.md")).unwrap();
    let marker = format!("<!-- rbac: {account} in {namespace} -->");
    let after = doc
        .split_once(&marker)
        .unwrap_or_else(|| panic!("docs/reliability.md has no {marker}"))
        .1;
    let block = after.split("```").nth(1).unwrap();
    let mut rows: Vec<String> = block
        .lines()
        .skip(1)
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect();
    rows.sort();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(envtest),
    ignore = "needs a control plane: KUBEBUILDER_ASSETS does not name a folder with kube-apiserver and etcd"
)]
async fn each_components_service_account_may_do_exactly_the_documented_list() {
    let _one = ONE_AT_A_TIME.lock().await;
    let installed = install(Options::default(), &[]).await;
    let admin = &installed.admin;
    let mut failures = Vec::new();
    for (name, namespace) in [
        ("wi-webhook", "wi-system"),
        ("wi-webhook", "team-apps"),
        ("wi-controller", "wi-system"),
        ("wi-controller", "team-apps"),
    ] {
        let account = format!("system:serviceaccount:wi-system:{name}");
        // The API server's bootstrap RBAC (self reviews for every authenticated user) may land just after start.
        let mut found = rules(admin, &account, namespace);
        for _ in 0..50 {
            if !found.iter().any(|row| row.contains("forbidden")) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            found = rules(admin, &account, namespace);
        }
        let expected = documented(name, namespace);
        if found != expected {
            failures.push(format!(
                "{name} in {namespace}:\n  may do:\n    {}\n  documented:\n    {}",
                found.join("\n    "),
                expected.join("\n    ")
            ));
        }
    }
    // Secrets: the webhook reads and updates only its own serving certificate's Secret.
    let webhook = "system:serviceaccount:wi-system:wi-webhook";
    for (args, answer) in [
        (&["get", "secrets/wi-webhook-tls", "-n", "wi-system"][..], "yes"),
        (&["update", "secrets/wi-webhook-tls", "-n", "wi-system"][..], "yes"),
        (&["get", "secrets/another", "-n", "wi-system"][..], "no"),
        (&["list", "secrets", "-n", "wi-system"][..], "no"),
        (&["watch", "secrets", "-n", "wi-system"][..], "no"),
        (&["get", "secrets/wi-webhook-tls", "-n", "team-apps"][..], "no"),
        (&["create", "secrets", "-n", "team-apps"][..], "no"),
        (&["create", "pods", "-n", "team-apps"][..], "no"),
    ] {
        let said = can_i(admin, webhook, args);
        if said.trim() != answer {
            failures.push(format!(
                "wi-webhook can-i {}: {said:?}, expected {answer}",
                args.join(" ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
