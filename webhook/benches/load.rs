//! `cargo bench -p wi-webhook --bench load`: the `wi-webhook serve` binary under load, against its null baseline.
//!
//! The binary runs as in a cluster, with its caches filled from a fake kube-apiserver (in this process) holding
//! 10,000 ServiceAccounts in 100 namespaces. A load generator in this process keeps a fixed number of HTTPS
//! keep-alive connections busy with AdmissionReview requests (the captured Deployment pod, 04-deployment-pod.json):
//!
//! - null: the same pod labelled `azure.workload.identity/use: "false"`: the same TLS, HTTP, body reading and JSON
//!   parsing, answered "allowed" without a patch (the server's opt-out path);
//! - mutate: the pod labelled `"true"`: the ServiceAccount from the cache, the engine, the patch.
//!
//! Prints requests per second, p50 and p99 latency for each and their ratio, then the server's resident memory with
//! 10 and with 10,000 ServiceAccounts cached. Server and load generator share the machine's cores.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/fake_api.rs"]
mod fake_api;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wi_runtime::procfs;

use bytes::Bytes;
use fake_api::{admission_fixture, fake_api, kubeconfig};
use http_body_util::{BodyExt, Full};
use serde_json::json;

const CONCURRENCY: usize = 16;
const WARMUP: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(5);
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

struct Server {
    child: tokio::process::Child,
    admission: SocketAddr,
    ca: rustls::pki_types::CertificateDer<'static>,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    stream.read_to_string(&mut out).await.ok()?;
    Some(out)
}

async fn start_server(accounts: usize) -> Server {
    let api = fake_api(accounts).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.path().join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("tls.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.path().join("kubeconfig"), kubeconfig(api)).unwrap();
    let (listen, admin) = (free_port(), free_port());
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wi-webhook"))
        .args(["serve", "--tenant-id", TENANT, "--log-level", "warn"])
        .args([
            "--listen",
            &format!("127.0.0.1:{listen}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin}"),
        ])
        .arg("--tls-cert-file")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key-file")
        .arg(dir.path().join("tls.key"))
        .env_clear()
        .env("KUBECONFIG", dir.path().join("kubeconfig"))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let mut ready = false;
    for _ in 0..600 {
        if http_get(admin_addr, "/readyz")
            .await
            .is_some_and(|r| r.starts_with("HTTP/1.1 200"))
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "wi-webhook never became ready");
    let metrics = http_get(admin_addr, "/metrics").await.unwrap();
    let cached = metrics
        .lines()
        .find(|l| l.starts_with("wi_webhook_cache_objects{kind=\"serviceaccounts\"}"))
        .unwrap_or_default()
        .to_owned();
    assert!(cached.ends_with(&format!(" {accounts}")), "cache: {cached}");
    Server {
        child,
        admission: format!("127.0.0.1:{listen}").parse().unwrap(),
        ca: cert_der(&ca),
        _dir: dir,
    }
}

fn cert_der(cert: &rcgen::Certificate) -> rustls::pki_types::CertificateDer<'static> {
    cert.der().clone()
}

/// One keep-alive HTTPS connection sending `body` until `until`; returns the latencies after `measure_from`.
async fn worker(
    server: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    body: Bytes,
    measure_from: Instant,
    until: Instant,
) -> Vec<Duration> {
    let tcp = tokio::net::TcpStream::connect(server).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let connector = tokio_rustls::TlsConnector::from(tls);
    let stream = connector
        .connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut latencies = Vec::new();
    loop {
        let now = Instant::now();
        if now >= until {
            return latencies;
        }
        let request = hyper::Request::post("/mutate-v1-pod")
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(body.clone()))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let answer = response.into_body().collect().await.unwrap().to_bytes();
        assert!(
            answer.windows(14).any(|w| w == b"\"allowed\":true"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        if now >= measure_from {
            latencies.push(now.elapsed());
        }
    }
}

struct Run {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

async fn drive(server: &Server, body: Bytes) -> Run {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server.ca.clone()).unwrap();
    let tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let start = Instant::now();
    let (measure_from, until) = (start + WARMUP, start + WARMUP + MEASURE);
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| tokio::spawn(worker(server.admission, tls.clone(), body.clone(), measure_from, until)))
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    all.sort();
    let at = |p: f64| all[((all.len() as f64 - 1.0) * p).round() as usize];
    Run {
        rps: all.len() as f64 / MEASURE.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn review(opt_in: &str) -> Bytes {
    let mut review = admission_fixture("04-deployment-pod.json");
    review["request"]["object"]["metadata"]["labels"]["azure.workload.identity/use"] = json!(opt_in);
    Bytes::from(serde_json::to_vec(&review).unwrap())
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "wi-webhook serve under load: {CONCURRENCY} keep-alive HTTPS connections, {} s per run after {} s of warm-up, \
         {cores} cores shared by server and load generator; 10,000 ServiceAccounts cached\n",
        MEASURE.as_secs(),
        WARMUP.as_secs()
    );
    let mut server = start_server(10_000).await;
    let pid = server.child.id().unwrap();
    let idle_rss = procfs::memory(Some(pid)).unwrap().rss_kib;
    let (null_body, mutate_body) = (review("false"), review("true"));
    println!("request body: {} bytes (04-deployment-pod.json)", mutate_body.len());
    println!("| run | requests/s | p50 | p99 | requests/s vs null | p99 vs null |");
    println!("|---|---|---|---|---|---|");
    for round in 1..=2 {
        let null = drive(&server, null_body.clone()).await;
        let mutate = drive(&server, mutate_body.clone()).await;
        println!(
            "| null (round {round}) | {:.0} | {} | {} | 1.00x | 1.00x |",
            null.rps,
            ms(null.p50),
            ms(null.p99)
        );
        println!(
            "| mutate (round {round}) | {:.0} | {} | {} | {:.2}x | {:.2}x |",
            mutate.rps,
            ms(mutate.p50),
            ms(mutate.p99),
            mutate.rps / null.rps,
            mutate.p99.as_secs_f64() / null.p99.as_secs_f64()
        );
    }
    let procfs::Memory {
        rss_kib: loaded_rss,
        peak_kib: peak,
    } = procfs::memory(Some(pid)).unwrap();
    server.child.kill().await.unwrap();

    let mut small = start_server(10).await;
    let small_rss = procfs::memory(Some(small.child.id().unwrap())).unwrap().rss_kib;
    small.child.kill().await.unwrap();
    println!("\nresident memory of wi-webhook serve");
    println!("| ServiceAccounts cached | RSS idle | RSS after the load | peak |");
    println!("|---|---|---|---|");
    println!("| 10 (baseline) | {small_rss} KiB | | |");
    println!(
        "| 10,000 | {idle_rss} KiB ({:+} KiB, {:.0} bytes per account) | {loaded_rss} KiB | {peak} KiB |",
        idle_rss as i64 - small_rss as i64,
        (idle_rss as f64 - small_rss as f64) * 1024.0 / 9990.0
    );
}
