//! `wi-webhook serve` as shipped: the built binary, started as users start it (its own `main`, the default log
//! level and format, and once `--log-format json --log-level debug`), its caches filled from a fake kube-apiserver.
//! It must become ready, admit a pod with a patch, log from its worker threads, and exit 0 on SIGTERM.
//!
//! Regression: `main` once held the stderr lock for the life of the process; the first log line written from a
//! tokio worker thread (`caches synced`) blocked forever, and `/readyz` never answered 200.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::common::fake_api::{Miss, admission_fixture, fake_api_with, kubeconfig};
use crate::common::process::{WebhookProcess, free_port, http_get, report, webhook_binary};
use crate::common::*;
use base64::Engine as _;
use serde_json::Value;

/// `serve` on 127.0.0.1 ports with the tenant, as a user types it, and `extra`.
fn serve_args(listen: u16, admin: u16, extra: &[&str]) -> Vec<String> {
    let (listen, admin) = (format!("127.0.0.1:{listen}"), format!("127.0.0.1:{admin}"));
    [
        "serve",
        "--tenant-id",
        TENANT,
        "--listen",
        &listen,
        "--admin-listen",
        &admin,
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect()
}

/// `wi-webhook serve` started with files for its serving certificate, its caches filled from a fake API server of
/// 10 accounts, and `extra` flags; ready.
pub(crate) struct Served {
    pub(crate) webhook: WebhookProcess,
    pub(crate) pki: Pki,
    pub(crate) listen: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    ready_after: Duration,
    _dir: tempfile::TempDir,
}

pub(crate) async fn serve_ready(extra: &[&str]) -> Served {
    serve_ready_with(Miss::NotFound, extra).await
}

/// [`serve_ready`], with the fake API answering a read of an uncached ServiceAccount as `miss` says.
async fn serve_ready_with(miss: Miss, extra: &[&str]) -> Served {
    let api = fake_api_with(10, miss).await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    install_leaf(dir.path(), &pki.leaf());
    std::fs::write(dir.path().join("kubeconfig"), kubeconfig(api)).unwrap();
    let (listen, admin) = (free_port(), free_port());
    let cert = dir.path().join("tls.crt").display().to_string();
    let key = dir.path().join("tls.key").display().to_string();
    let flags: Vec<&str> = ["--tls-cert-file", &cert, "--tls-key-file", &key]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    let args = serve_args(listen, admin, &flags);
    let env = [(
        "KUBECONFIG".to_owned(),
        dir.path().join("kubeconfig").display().to_string(),
    )];
    let mut webhook = WebhookProcess::spawn(&webhook_binary(), &args, &env, &dir.path().join("stderr.log"));
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], admin));
    let ready_after = webhook
        .wait_ready(admin, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    Served {
        webhook,
        pki,
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], listen)),
        admin,
        ready_after,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_becomes_ready_admits_and_stops_on_sigterm() {
    let Served {
        mut webhook,
        pki,
        listen,
        admin: admin_addr,
        ready_after,
        _dir,
    } = serve_ready(&[]).await;
    report(
        "serve_process",
        &format!("{} ready {ready_after:.2?} after start", webhook_binary().display()),
    );

    // Two requests: each logs `admission reviewed` from a worker thread; the second would hang if the first had.
    for round in 0..2 {
        let body = serde_json::to_vec(&admission_fixture("01-plain-pod.json")).unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(10), admit(listen, &pki.ca_der(), body))
            .await
            .unwrap_or_else(|_| panic!("admission request {round} got no answer in 10 s:\n{}", webhook.log()))
            .unwrap();
        assert_eq!(reply.status, http::StatusCode::OK);
        let review = reply.json();
        let response = &review["response"];
        assert_eq!(response["allowed"], true, "{review}");
        assert_eq!(response["patchType"], "JSONPatch", "{review}");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(response["patch"].as_str().unwrap())
            .unwrap();
        let patch: Value = serde_json::from_slice(&patch).unwrap();
        let text = patch.to_string();
        for expected in ["AZURE_CLIENT_ID", "AZURE_FEDERATED_TOKEN_FILE", "azure-identity-token"] {
            assert!(text.contains(expected), "no {expected} in the patch: {text}");
        }
    }
    let (status, metrics) = http_get(admin_addr, "/metrics").await.unwrap();
    assert_eq!(status, http::StatusCode::OK);
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("result=\"mutated\"") && l.ends_with(" 2")),
        "two mutated requests counted:\n{metrics}"
    );

    let exit = webhook.terminate(Duration::from_secs(30));
    let log = webhook.log();
    assert!(exit.success(), "exit {exit}:\n{log}");
    for line in [
        "serving admission requests",
        "caches synced",
        "admission reviewed",
        "SIGTERM received",
        "drained",
    ] {
        assert!(log.contains(line), "no {line:?} in the log:\n{log}");
    }
    // Written to a file, as a container runtime keeps it: no terminal colour codes.
    assert!(!log.contains('\u{1b}'), "escape codes in a log file:\n{log}");
}

/// `--log-format json --log-level debug`: the `admission reviewed` line names the request itself, and the lines
/// logged while the pod's objects are looked up (here a ServiceAccount missing from the cache, read live and not
/// found) carry the request in the `admission` span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_name_the_request_and_at_debug_the_lookups_lines_carry_it() {
    let mut served = serve_ready(&["--log-format", "json", "--log-level", "debug"]).await;
    let mut review = admission_fixture("01-plain-pod.json");
    review["request"]["object"]["spec"]["serviceAccountName"] = "not-there".into();
    let uid = review["request"]["uid"].as_str().unwrap().to_owned();
    let reply = admit(
        served.listen,
        &served.pki.ca_der(),
        serde_json::to_vec(&review).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(reply.json()["response"]["allowed"], false, "{}", reply.json());

    let exit = served.webhook.terminate(Duration::from_secs(30));
    let log = served.webhook.log();
    assert!(exit.success(), "exit {exit}:\n{log}");
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let reviewed = lines
        .iter()
        .find(|l| l["message"] == "admission reviewed")
        .unwrap_or_else(|| panic!("no admission line:\n{log}"));
    assert_eq!(reviewed["result"], "denied", "{reviewed}");
    assert_eq!(reviewed["uid"], uid.as_str(), "{reviewed}");
    assert_eq!(reviewed["namespace"], "wi-fixtures", "{reviewed}");
    assert_eq!(reviewed["service_account"], "not-there", "{reviewed}");
    let live = lines
        .iter()
        .find(|l| l["message"] == "ServiceAccount not cached; reading it live")
        .unwrap_or_else(|| panic!("no cache-miss line:\n{log}"));
    assert_eq!(live["span"]["name"], "admission", "{live}");
    assert_eq!(live["span"]["uid"], uid.as_str(), "{live}");
    assert_eq!(live["span"]["service_account"], "not-there", "{live}");
}

/// Self-managed certificates: while the Secret and caBundle are being set up (here an API server that accepts
/// connections and never answers), the admin port answers: `/healthz` 200 for the liveness and startup probes,
/// `/readyz` 503 saying why. It once opened only after the setup, so probes got no answer at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_managed_serve_answers_probes_while_the_api_server_is_slow() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            held.push(connection);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kubeconfig"), kubeconfig(api)).unwrap();
    let (listen, admin) = (free_port(), free_port());
    let args = serve_args(listen, admin, &["--cert-mode", "self-managed"]);
    let env = [(
        "KUBECONFIG".to_owned(),
        dir.path().join("kubeconfig").display().to_string(),
    )];
    let webhook = WebhookProcess::spawn(&webhook_binary(), &args, &env, &dir.path().join("stderr.log"));
    let admin_addr = format!("127.0.0.1:{admin}").parse().unwrap();
    let live = eventually(Duration::from_secs(20), async || {
        http_get(admin_addr, "/healthz")
            .await
            .is_some_and(|(status, _)| status == http::StatusCode::OK)
    })
    .await;
    assert!(live, "/healthz never answered 200:\n{}", webhook.log());
    let (status, body) = http_get(admin_addr, "/readyz").await.unwrap();
    assert_eq!(status, http::StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("setting up the serving certificate"), "{body}");
    assert!(
        tokio::net::TcpStream::connect(format!("127.0.0.1:{listen}"))
            .await
            .is_err(),
        "the admission port opens only with a certificate to serve"
    );
}

/// Self-managed settings that would let the caBundle drop the CA of a certificate still served are refused at start,
/// before anything is read or written.
#[test]
fn self_managed_serve_refuses_a_settle_period_shorter_than_the_check_interval() {
    let out = std::process::Command::new(webhook_binary())
        .args(["serve", "--cert-mode", "self-managed", "--tenant-id", TENANT])
        .args(["--ca-rollover-settle", "5s", "--cert-check-interval", "10s"])
        .env_clear()
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--ca-rollover-settle (5s) must be at least --cert-check-interval (10s)"),
        "{stderr}"
    );
}

/// A slow client (issue 30): TLS, then a request line and a header byte every 250 ms, never finishing its headers.
/// The connection is closed once `--request-timeout` has passed (2 s here), while another client's admission is
/// answered meanwhile. Before the HTTP/1 header timeout had a timer, such a client kept its connection forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_dropped_after_the_request_timeout() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Served {
        webhook, pki, listen, ..
    } = serve_ready(&["--request-timeout", "2s"]).await;
    let mut tls = tls_connect(listen, &pki.ca_der(), b"http/1.1").await.unwrap();
    let started = std::time::Instant::now();
    tls.write_all(b"POST /mutate-v1-pod HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let slow = async {
        let mut buffer = [0u8; 256];
        loop {
            // One byte of a header that never ends; a closed connection fails the write or ends the read.
            if tls.write_all(b"x").await.is_err() {
                return started.elapsed();
            }
            let read = tokio::time::timeout(Duration::from_millis(250), tls.read(&mut buffer)).await;
            if let Ok(Ok(0) | Err(_)) = read {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "a client trickling its headers is still connected after 15 s:\n{}",
                webhook.log()
            );
        }
    };
    let normal = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let body = serde_json::to_vec(&admission_fixture("01-plain-pod.json")).unwrap();
        admit(listen, &pki.ca_der(), body).await
    };
    let (closed_after, answered) = tokio::join!(slow, normal);
    assert_eq!(answered.unwrap().status, http::StatusCode::OK);
    assert!(
        closed_after >= Duration::from_millis(1500) && closed_after < Duration::from_secs(5),
        "closed after {closed_after:?} (request timeout 2 s)"
    );
    report(
        "serve_process",
        &format!("a client trickling its headers was dropped after {closed_after:.2?} (--request-timeout 2s)"),
    );
}

/// The threads of a process, from /proc.
fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

/// The Kubernetes API answering 429, 500 or nothing to the live read of a ServiceAccount the cache lacks (issue 30):
/// 50 such admissions at once each get an AdmissionReview with a 500 that names the object and the cause, within
/// the request timeout (a stalled read gives up at half of it), and the process gains no threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_api_server_failing_or_stalling_on_a_cache_miss_gives_a_clear_500_in_time() {
    let cases = [
        // kube's client retries a 429 with backoff: the read gives up at the live timeout.
        (Miss::Fails(429), "no answer from the Kubernetes API within 1s"),
        (Miss::Fails(500), "500"),
        (
            Miss::Stalls(Duration::from_secs(60)),
            "no answer from the Kubernetes API within 1s",
        ),
    ];
    for (miss, cause) in cases {
        let Served {
            webhook, pki, listen, ..
        } = serve_ready_with(miss, &["--request-timeout", "2s"]).await;
        let before = threads(webhook.pid());
        let started = std::time::Instant::now();
        let answers = futures::future::join_all((0..50).map(|i| {
            let mut review = admission_fixture("01-plain-pod.json");
            review["request"]["object"]["spec"]["serviceAccountName"] = format!("uncached-{i}").into();
            let (ca, body) = (pki.ca_der(), serde_json::to_vec(&review).unwrap());
            async move {
                let reply = admit(listen, &ca, body).await.unwrap();
                (reply, started.elapsed())
            }
        }))
        .await;
        let mut slowest = Duration::ZERO;
        for (i, (reply, elapsed)) in answers.iter().enumerate() {
            assert_eq!(
                reply.status,
                http::StatusCode::OK,
                "{miss:?}: {}",
                String::from_utf8_lossy(&reply.body)
            );
            let response = &reply.json()["response"];
            assert_eq!(response["allowed"], false, "{miss:?}: {response}");
            assert_eq!(response["status"]["code"], 500, "{miss:?}: {response}");
            let message = response["status"]["message"].as_str().unwrap();
            assert!(
                message.contains(&format!("ServiceAccount wi-fixtures/uncached-{i}")) && message.contains(cause),
                "{miss:?}: {message}"
            );
            slowest = slowest.max(*elapsed);
        }
        assert!(
            slowest < Duration::from_secs(2),
            "{miss:?}: the last answer came after {slowest:?}"
        );
        let after = threads(webhook.pid());
        assert!(after <= before, "{miss:?}: {before} threads before, {after} after");
        report(
            "serve_process",
            &format!(
                "API server {miss:?} on a cache miss: 50 admissions answered 500 within {slowest:.2?}; threads {before} -> {after}"
            ),
        );
    }
}
