//! `wi-demo`, the README's first command, as a test: every step passes on the emulator, the app prints the secret
//! and both rotations; a broken input fails the step that reads it, by number and name, with exit code 1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn demo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wi-demo"))
}

#[test]
fn the_walkthrough_passes_end_to_end() {
    let out = demo().output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for expected in [
        "refused: keyvaultName: \"kv-techventure-secrets-001\"",
        "AZURE_CLIENT_ID=6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b",
        "container \"wi-sidecar\"",
        "startup probe /readyz passed",
        "app: MyWebAppSecret = SuperSecureValue123!",
        "app: MyWebAppSecret = RotatedSecureValue456!",
        "rotated to RotatedAgainValue789!",
        "wi-sidecar exited with exit status: 0",
        "All 13 steps passed",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}\n{stderr}");
    }
    assert!(!stdout.contains("FAILED"), "{stdout}");
}

#[test]
fn a_failing_step_is_named_and_exits_one() {
    let empty = tempfile::tempdir().unwrap();
    let out = demo().arg("--examples").arg(empty.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("step 2 (Read the example manifests (manifests/examples)) failed: cannot read"),
        "{stderr}"
    );
    assert!(stderr.contains("serviceaccount.yaml"), "{stderr}");
}
