//! The `wi-controller` binary as users start it, without a cluster: its `--help`, and the clear errors of bad flags
//! and of a missing API server, each with exit status 1 and nothing else started. Its work behind a real API server
//! is `webhook/tests/control_plane/sync_controller.rs` (the installation from `manifests/base`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};

fn controller(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wi-controller"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn help_says_what_it_syncs_and_with_whose_identity() {
    let out = controller(&["--help"], &[]);
    assert!(out.status.success());
    // Words, whatever the terminal width wrapped.
    let help = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for text in [
        "workload-identity.rs/sync-service-account",
        "never the controller's own",
        "--interval <DURATION>",
        "[env: WI_TENANT_ID=]",
        "--lease-duration <DURATION>",
        "[default: 0.0.0.0:9442]",
    ] {
        assert!(help.contains(text), "no {text:?} in --help:\n{help}");
    }
}

#[test]
fn bad_flags_are_named() {
    let cases: [(&[&str], &str); 3] = [
        (&["--jitter", "1.5"], "--jitter 1.5 must be at least 0 and below 1"),
        (
            &["--lease-duration", "5s", "--lease-grace", "5s"],
            "--lease-duration (5s) must be longer than --lease-grace (5s)",
        ),
        (
            &["--interval", "soon"],
            "invalid value 'soon' for '--interval <DURATION>'",
        ),
    ];
    for (args, expected) in cases {
        let out = controller(args, &[("KUBECONFIG", "/nonexistent/kubeconfig")]);
        let text = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(if args[0] == "--interval" { 2 } else { 1 }),
            "{args:?}: {text}"
        );
        assert!(text.contains(expected), "{args:?}: {text}");
    }
}

#[test]
fn without_an_api_server_it_says_where_it_looked() {
    let out = controller(&[], &[("KUBECONFIG", "/nonexistent/kubeconfig")]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("wi-controller: no Kubernetes API: in a pod, its ServiceAccount; elsewhere, KUBECONFIG"),
        "{text}"
    );
}
