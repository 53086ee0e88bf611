//! The TLS audit (issue 30), with OpenSSL's own client against the shipped binaries: `wi-webhook serve` and
//! `wi-emulator` (whose Key Vault and Entra ID every test and the Python SDK talk to) refuse TLS 1.0 and 1.1, and
//! TLS 1.2 suites without forward secrecy or with CBC, RC4, 3DES, NULL or export ciphers; they complete TLS 1.2 with
//! ECDHE and AEAD and TLS 1.3; and the certificate served verifies for the names it is for, and no other.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use crate::serve_process::{Served, serve_ready};

/// One handshake by `openssl s_client` with `args`; whether it completed with a verified certificate, and what the
/// client printed.
fn handshake(addr: SocketAddr, ca_file: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-CAfile"])
        .arg(ca_file)
        .args(["-verify_return_error", "-brief"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl runs (Debian's openssl package)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let completed = output.status.success() && text.contains("Verification: OK");
    (completed, text)
}

/// Every refusal and acceptance the audit asks of a server whose certificate is for `name` (and not `other.invalid`).
fn audit(what: &str, addr: SocketAddr, ca_file: &Path, name: &str) -> Vec<String> {
    // OpenSSL 3 offers TLS 1.0/1.1 and weak suites only at security level 0.
    let weak = "DEFAULT:@SECLEVEL=0";
    let refused: &[(&str, &[&str])] = &[
        ("TLS 1.0", &["-tls1", "-cipher", weak]),
        ("TLS 1.1", &["-tls1_1", "-cipher", weak]),
        (
            "TLS 1.2 RSA key exchange",
            &["-tls1_2", "-cipher", "AES128-GCM-SHA256:AES256-GCM-SHA384:@SECLEVEL=0"],
        ),
        (
            "TLS 1.2 CBC",
            &[
                "-tls1_2",
                "-cipher",
                "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES256-SHA384:@SECLEVEL=0",
            ],
        ),
        (
            "TLS 1.2 3DES, RC4, NULL, export",
            &["-tls1_2", "-cipher", "3DES:RC4:NULL:EXP:@SECLEVEL=0"],
        ),
        (
            "a name the certificate is not for",
            &["-verify_hostname", "other.invalid"],
        ),
    ];
    let accepted: &[(&str, &[&str])] = &[
        ("TLS 1.3", &["-tls1_3"]),
        (
            "TLS 1.2 ECDHE with AES-GCM",
            &[
                "-tls1_2",
                "-cipher",
                "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256",
            ],
        ),
        (
            "TLS 1.2 ECDHE with ChaCha20-Poly1305",
            &[
                "-tls1_2",
                "-cipher",
                "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305",
            ],
        ),
        ("its name", &["-verify_hostname", name]),
    ];
    let mut failures = Vec::new();
    for (label, args) in accepted {
        let (completed, text) = handshake(addr, ca_file, args);
        if !completed {
            failures.push(format!("{what} refused {label}:\n{text}"));
        }
    }
    for (label, args) in refused {
        let (completed, text) = handshake(addr, ca_file, args);
        // A refusal of the TLS handshake, not of the connection.
        if completed || text.contains("connect:errno") {
            failures.push(format!("{what} accepted {label}, or was not reached:\n{text}"));
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_and_the_emulator_refuse_old_tls_and_weak_suites() {
    let Served {
        webhook: _webhook,
        pki,
        listen,
        ..
    } = serve_ready(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, pki.ca_pem()).unwrap();
    let mut failures = audit("wi-webhook", listen, &ca_file, "wi-webhook.wi-system.svc");

    let emulator = Path::new(env!("CARGO_BIN_EXE_wi-webhook")).with_file_name("wi-emulator");
    assert!(
        emulator.is_file(),
        "{} is not built: cargo test --workspace builds it (or cargo build -p wi-testbed --bins)",
        emulator.display()
    );
    let mut child = tokio::process::Command::new(&emulator)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
    let ready: serde_json::Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    // https://127.0.0.1:PORT/
    let authority = ready["authority_host"].as_str().unwrap();
    let addr: SocketAddr = authority
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    failures.extend(audit(
        "wi-emulator",
        addr,
        Path::new(ready["ca_file"].as_str().unwrap()),
        "vault.localhost",
    ));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
