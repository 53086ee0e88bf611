//! Tests that run the `wi-webhook` binary as a process, as users start it: `mutate`, `doctor`, `serve`. One test
//! binary, so one link.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod doctor;
mod hostile;
mod serve_process;
mod tls_audit;

/// The `wi-webhook` binary run with `args`, `stdin` written to its standard input, and none of the environment
/// that would change its answer (the `WI_*` engine settings, a kubeconfig).
fn wi_webhook(args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_wi-webhook"))
        .args(args)
        .env_remove("WI_TENANT_ID")
        .env_remove("WI_CLOUD")
        .env_remove("WI_AUDIENCE")
        .env_remove("KUBECONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        // A process that refuses its arguments exits without reading its input: a broken pipe here is its answer.
        match input.write_all(bytes) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            result => result.unwrap(),
        }
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// Output bytes as text.
fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}
