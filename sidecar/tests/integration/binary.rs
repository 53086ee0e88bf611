//! The `wi-sidecar` binary as a pod runs it, against the emulator: configuration and identity from the env the
//! webhook would inject, `once` for an init container, `run` with its admin endpoints and SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;
use wi_testbed::Emulator;

const TENANT: &str = "d2f0c8a4-3b1e-4c6d-9e8f-7a6b5c4d3e2f";
pub(crate) const VAULT: &str = "kv-techventure-001";

/// A plain HTTP/1.1 GET on the sidecar's admin port: the whole response, `None` when nothing answers.
pub(crate) async fn http_get(admin: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(admin).await.ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    Some(response)
}

/// A counter of the sidecar's `/metrics` (0 when absent or unreachable).
async fn counter(admin: &str, series: &str) -> u64 {
    http_get(admin, "/metrics")
        .await
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

pub(crate) struct Pod {
    pub(crate) emulator: Emulator,
    pub(crate) vault_url: String,
    /// The AZURE_* env the webhook would inject.
    env: Vec<(&'static str, String)>,
    pub(crate) dir: tempfile::TempDir,
}

pub(crate) async fn pod() -> Pod {
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
    pub(crate) fn command(&self, args: &[&str], objects: &[&str]) -> Command {
        self.command_in(&[], args, objects)
    }

    /// [`Pod::command`], the binary started by `wrapper` (e.g. `unshare ... --`), with the pod's env.
    pub(crate) fn command_in(&self, wrapper: &[&str], args: &[&str], objects: &[&str]) -> Command {
        let array: String = objects
            .iter()
            .map(|name| format!("    - |\n      objectName: {name}\n      objectType: secret\n"))
            .collect();
        let config = format!("keyvaultName: {VAULT}\ntenantId: {TENANT}\nobjects: |\n  array:\n{array}");
        let binary = env!("CARGO_BIN_EXE_wi-sidecar");
        let mut command = Command::new(wrapper.first().copied().unwrap_or(binary));
        if !wrapper.is_empty() {
            command.args(&wrapper[1..]).arg(binary);
        }
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
    // Standard error is a pipe here, as under a container runtime: no terminal colour codes.
    assert!(!stderr.contains('\u{1b}'), "escape codes on a pipe: {stderr}");
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
    let get = |path: &'static str| http_get(&admin, path);
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

/// Everything the sidecar goes through, with every log it writes captured at debug level (the SDK's HTTP logs
/// included): first sync of a secret, a PKCS#12 certificate converted to PEM and a key; a rotation; a 429 storm;
/// an outage; recovery; an object that does not exist (with `once`). No secret value, private key, PFX or token
/// ever shows in the logs. The storm is paced by Retry-After, counted at the emulator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_hold_a_secret_or_a_token_and_a_429_storm_is_paced_by_retry_after() {
    use base64::Engine as _;
    use wi_testbed::emulator::{CertificateFormat, Fault, FaultTarget, KeyKind};

    let pod = pod().await;
    let emulator = &pod.emulator;
    let cert = emulator
        .create_certificate(VAULT, "web", "web.example", CertificateFormat::Pkcs12)
        .unwrap();
    emulator.create_key(VAULT, "signing", KeyKind::Rsa2048).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        "keyvaultName: {VAULT}\ntenantId: {TENANT}\nobjects: |\n  array:\n    - |\n      objectName: MyWebAppSecret\n      \
         objectType: secret\n    - |\n      objectName: web\n      objectType: secret\n      objectAlias: web.pem\n    \
         - |\n      objectName: signing\n      objectType: key\n"
    );
    let mut command = pod.command(
        &[
            "run",
            "--admin-listen",
            &format!("127.0.0.1:{port}"),
            "--interval",
            "300ms",
        ],
        &[],
    );
    command.env("WI_SECRETS_CONFIG", &config).env("WI_LOG_LEVEL", "debug");
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let logs = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut text = String::new();
        let mut stderr = stderr;
        stderr.read_to_string(&mut text).await.unwrap();
        text
    });
    let file = pod.dir.path().join("secrets/MyWebAppSecret");
    let wait_for = |want: &'static str| {
        let file = file.clone();
        async move {
            for _ in 0..200 {
                if std::fs::read_to_string(&file).is_ok_and(|v| v == want) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("{} never became {want}", file.display());
        }
    };
    wait_for("SuperSecureValue123!").await;
    let pem = std::fs::read_to_string(pod.dir.path().join("secrets/web.pem")).unwrap();
    assert!(pem.starts_with(&cert.key_pem), "the PFX was converted");

    emulator
        .set_secret(VAULT, "MyWebAppSecret", "Rotated-Value-456?", None)
        .unwrap();
    wait_for("Rotated-Value-456?").await;

    // A 429 storm asking for 2 s between attempts: three attempts, each counted as a failed sync, at least about
    // 2 s apart (not the 300 ms interval); the first sends up to one request per object (3), the next ones probe
    // with one.
    let admin = format!("127.0.0.1:{port}");
    let failed = async || counter(&admin, "wi_sidecar_syncs_total{result=\"failed\"}").await;
    let target = FaultTarget::Vault(VAULT.to_owned());
    let faulted = || {
        emulator
            .counters()
            .get(&format!("{VAULT} faulted"))
            .copied()
            .unwrap_or(0)
    };
    let (failed_before, requests_before) = (failed().await, faulted());
    emulator.set_fault(
        target.clone(),
        Some(Fault {
            status: Some(429),
            retry_after: Some(2),
            ..Fault::default()
        }),
    );
    let storm = Instant::now();
    let mut attempts = Vec::new();
    while attempts.len() < 3 {
        assert!(
            storm.elapsed() < Duration::from_secs(20),
            "only {} throttled attempts in 20 s",
            attempts.len()
        );
        if failed().await > failed_before + attempts.len() as u64 {
            attempts.push(storm.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let requests = faulted() - requests_before;
    println!("throttled attempts at {attempts:?}, {requests} requests, with Retry-After: 2");
    for gap in attempts.windows(2).map(|w| w[1] - w[0]) {
        assert!(
            gap >= Duration::from_millis(1800),
            "attempts {attempts:?}: Retry-After not honoured"
        );
    }
    assert!(
        (3..=5).contains(&requests),
        "{requests} requests in three throttled attempts"
    );

    // An outage, then recovery with the value set during it: once an attempt has met the outage, the files are
    // still the last good ones.
    emulator.set_fault(
        target.clone(),
        Some(Fault {
            status: Some(503),
            ..Fault::default()
        }),
    );
    emulator
        .set_secret(VAULT, "MyWebAppSecret", "After-Outage-789#", None)
        .unwrap();
    let outage_before = failed().await;
    let met = Instant::now();
    while failed().await <= outage_before {
        assert!(
            met.elapsed() < Duration::from_secs(20),
            "no attempt met the outage in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "Rotated-Value-456?");
    emulator.set_fault(target, None);
    wait_for("After-Outage-789#").await;

    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    let mut logs = logs.await.unwrap();
    let once = pod
        .command(&["once"], &["MyWebAppSecret", "absent"])
        .env("WI_LOG_LEVEL", "debug")
        .output()
        .await
        .unwrap();
    assert_eq!(once.status.code(), Some(1));
    logs.push_str(&String::from_utf8_lossy(&once.stderr));

    // The logs say what happened...
    for expected in [
        "new version of the secrets written",
        "throttled",
        "503",
        "secret absent: not found",
    ] {
        assert!(logs.contains(expected), "no {expected:?} in the logs:\n{logs}");
    }
    // ...and nothing secret.
    let token = std::fs::read_to_string(pod.dir.path().join("token")).unwrap();
    let pfx = base64::engine::general_purpose::STANDARD.encode(&cert.pfx);
    let key_body: String = cert.key_pem.lines().nth(1).unwrap().to_owned();
    let forbidden = [
        ("a secret value", "SuperSecureValue123!"),
        ("a secret value", "Rotated-Value-456?"),
        ("a secret value", "After-Outage-789#"),
        ("the service account token", token.trim()),
        ("a JWT (access or service account token)", "eyJ"),
        ("the private key", key_body.as_str()),
        ("the PFX", &pfx[..64]),
    ];
    for (what, needle) in forbidden {
        assert!(!logs.contains(needle), "{what} in the logs");
    }
    println!("{} log lines checked", logs.lines().count());
}
