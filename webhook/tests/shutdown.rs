//! A real SIGTERM to this test process: the webhook turns unready, finishes the request in flight, stops
//! accepting and returns. The JSON log lines of the run are captured and checked. This file holds one test, so the
//! signal and the global logger concern nothing else, and it is a test binary of its own: a signal sent to the process
//! and a global logger would reach any test beside it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;
use serde_json::Value;
use wi_runtime::log::{LogConfig, LogFormat};
use wi_runtime::shutdown::signal as shutdown_signal;
use wi_webhook::server::Webhook;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_request_in_flight_and_logs_say_what_happened() {
    let logs = Captured::default();
    let writer = logs.clone();
    wi_runtime::log::init_with_writer(
        &LogConfig {
            format: LogFormat::Json,
            level: "info".to_owned(),
        },
        move || writer.clone(),
    )
    .unwrap();
    // Take SIGTERM away from its default action (exit) before anything can send it.
    let _guard = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();

    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    install_leaf(dir.path(), &pki.leaf());
    let args = serve_args(dir.path(), &["--shutdown-delay", "400ms", "--shutdown-grace", "10s"]);
    let lookup = SlowLookup(fixture_lookup(), Duration::from_millis(1500));
    let webhook = Webhook::bind(args, Arc::new(lookup), provider()).await.unwrap();
    let (addr, admin) = (webhook.admission_addr().unwrap(), webhook.admin_addr().unwrap());
    let server = tokio::spawn(webhook.run(shutdown_signal()));
    assert!(
        eventually(Duration::from_secs(5), async || admin_get(admin, "/readyz").await.0
            == StatusCode::OK)
        .await
    );

    let body = std::fs::read(fixture("admission/raw/04-deployment-pod.json")).unwrap();
    let ca = pki.ca_der();
    let in_flight = tokio::spawn(async move { admit(addr, &ca, body).await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let signalled = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        eventually(Duration::from_secs(2), async || {
            admin_get(admin, "/readyz").await == (StatusCode::SERVICE_UNAVAILABLE, "shutting down".to_owned())
        })
        .await,
        "readiness did not turn false"
    );

    let reply = in_flight.await.unwrap().expect("the in-flight request completed");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["response"]["allowed"], true);
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server returned within the grace period")
        .unwrap()
        .unwrap();
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "returned before the shutdown delay: {took:?}"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
    for expected in [
        "serving admission requests",
        "SIGTERM received",
        "stopped accepting; draining in-flight requests",
        "drained",
    ] {
        assert!(
            messages.iter().any(|m| m.starts_with(expected)),
            "no {expected:?} in {messages:?}"
        );
    }
    let reviewed = lines
        .iter()
        .find(|l| l["message"] == "admission reviewed")
        .expect("an admission line");
    assert_eq!(reviewed["result"], "mutated");
    // The request is named on the line itself.
    assert_eq!(reviewed["uid"], "35c07bda-ab02-4145-a163-f69c601e51d6");
    assert_eq!(reviewed["namespace"], "wi-fixtures");
    assert_eq!(reviewed["pod"], "web-5f79fbc677-");
    assert_eq!(reviewed["service_account"], "workload-sa");
    assert_eq!(reviewed["dry_run"], false);
    // The pod spec (env values included) never reaches the log.
    assert!(!text.contains("nginx"), "{text}");
}
