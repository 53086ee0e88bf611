//! The `wi-sidecar` binary as a pod runs it, against the emulator: configuration and identity from the env the
//! webhook would inject, `once` for an init container, `run` with its admin endpoints and SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use wi_testbed::Emulator;

const TENANT: &str = "d2f0c8a4-3b1e-4c6d-9e8f-7a6b5c4d3e2f";
const VAULT: &str = "kv-techventure-001";

struct Pod {
    emulator: Emulator,
    vault_url: String,
    /// The AZURE_* env the webhook would inject.
    env: Vec<(&'static str, String)>,
    dir: tempfile::TempDir,
}

async fn pod() -> Pod {
    let emulator = Emulator::start().await.unwrap();
    let vault_url = emulator.create_vault(VAULT, TENANT).await.unwrap();
    let identity = emulator.add_workload_identity("mi-aks-workload", TENANT, "default", "my-app-sa");
    emulator.grant(VAULT, &identity.principal_id, &["get"]);
    emulator
        .set_secret(VAULT, "MyWebAppSecret", "SuperSecureValue123!", None)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = emulator
        .workload_env(&identity, "default", "my-app-sa", &dir.path().join("token"))
        .unwrap();
    Pod {
        emulator,
        vault_url,
        env,
        dir,
    }
}

impl Pod {
    fn command(&self, args: &[&str], objects: &[&str]) -> Command {
        let array: String = objects
            .iter()
            .map(|name| format!("    - |\n      objectName: {name}\n      objectType: secret\n"))
            .collect();
        let config = format!("keyvaultName: {VAULT}\ntenantId: {TENANT}\nobjects: |\n  array:\n{array}");
        let mut command = Command::new(env!("CARGO_BIN_EXE_wi-sidecar"));
        command
            .args(args)
            .env_clear()
            .env("WI_SECRETS_CONFIG", config)
            .env("WI_SECRETS_DIR", self.dir.path().join("secrets"))
            .env("WI_VAULT_URL_TEMPLATE", &self.vault_url)
            .env("WI_CA_FILE", self.emulator.ca_file())
            .env("WI_VERIFY_CHALLENGE_RESOURCE", "false")
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_writes_the_files_and_exits_zero_without_logging_values() {
    let pod = pod().await;
    let out = pod.command(&["once"], &["MyWebAppSecret"]).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let file = pod.dir.path().join("secrets/MyWebAppSecret");
    assert_eq!(std::fs::read_to_string(file).unwrap(), "SuperSecureValue123!");
    assert!(std::fs::read_link(pod.dir.path().join("secrets/..data")).is_ok());
    assert!(!stderr.contains("SuperSecureValue123!"), "{stderr}");
    assert!(stderr.contains("sync complete"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_with_a_missing_object_exits_one_naming_it_and_writes_nothing() {
    let pod = pod().await;
    let out = pod
        .command(&["once"], &["MyWebAppSecret", "absent"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("secret absent: not found in the vault"), "{stderr}");
    assert!(
        !pod.dir.path().join("secrets/MyWebAppSecret").exists(),
        "nothing is written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_becomes_ready_serves_metrics_and_stops_on_sigterm() {
    let pod = pod().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let admin = format!("127.0.0.1:{port}");
    let mut child = pod
        .command(
            &["run", "--admin-listen", &admin, "--interval", "1s"],
            &["MyWebAppSecret"],
        )
        .spawn()
        .unwrap();
    let get = |path: &'static str| {
        let admin = admin.clone();
        async move {
            let mut stream = tokio::net::TcpStream::connect(&admin).await.ok()?;
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            stream
                .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
                .await
                .ok()?;
            let mut response = String::new();
            stream.read_to_string(&mut response).await.ok()?;
            Some(response)
        }
    };
    let mut ready = false;
    for _ in 0..150 {
        if get("/readyz").await.is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "never ready");
    let metrics = get("/metrics").await.unwrap();
    assert!(
        metrics.contains("wi_sidecar_syncs_total{result=\"written\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("wi_sidecar_objects 1"), "{metrics}");

    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}
