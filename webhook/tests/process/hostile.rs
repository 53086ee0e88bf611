//! `wi-webhook serve` (the release binary) under hostile clients (issue 30): slow clients, 10,000 idle TLS
//! connections, HTTP/2 rapid reset. What is asserted is what must hold (dropped, still serving, bounded); the times,
//! memory and CPU are printed as figures (docs/reliability.md), not asserted, on this noisy 2-core machine.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::common::fake_api::admission_fixture;
use crate::common::process::report;
use crate::common::*;
use crate::serve_process::{Served, serve_ready};

/// A value of /proc/PID/status, in kB for the memory lines.
fn status_of(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// CPU time (user + system) of a process so far.
fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command's closing parenthesis; utime and stime are the 12th and 13th of those.
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    Duration::from_millis((fields[11] + fields[12]) * 10) // USER_HZ is 100 on Linux
}

fn percentile(latencies: &mut [Duration], p: f64) -> Duration {
    latencies.sort();
    let index = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
    latencies[index]
}

/// `count` admissions of the plain pod, 4 at a time, each on a new TLS connection; their latencies.
async fn admissions(listen: SocketAddr, ca: &CertificateDer<'static>, count: usize) -> Vec<Duration> {
    let body = serde_json::to_vec(&admission_fixture("01-plain-pod.json")).unwrap();
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count / 4 {
        let round = futures::future::join_all((0..4).map(|_| {
            let body = body.clone();
            async move {
                let started = Instant::now();
                let reply = admit(listen, ca, body).await.unwrap();
                assert_eq!(reply.status, http::StatusCode::OK);
                started.elapsed()
            }
        }))
        .await;
        latencies.extend(round);
    }
    latencies
}

/// A slow client: TLS, then either its headers a byte every 200 ms, or complete headers announcing a 100 KB body
/// sent a byte every 200 ms. How long until the server closed the connection.
async fn slow_client(listen: SocketAddr, ca: CertificateDer<'static>, body: bool) -> Duration {
    let mut tls = tls_connect(listen, &ca, b"http/1.1").await.unwrap();
    let started = Instant::now();
    let head: &[u8] = if body {
        b"POST /mutate-v1-pod HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n{"
    } else {
        b"POST /mutate-v1-pod HTTP/1.1\r\nhost: x\r\n"
    };
    tls.write_all(head).await.unwrap();
    let mut buffer = [0u8; 1024];
    loop {
        if tls.write_all(b"x").await.is_err() {
            return started.elapsed();
        }
        match tokio::time::timeout(Duration::from_millis(200), tls.read(&mut buffer)).await {
            // A 408 may come first; the close follows.
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return started.elapsed(),
            Err(_) => {}
        }
        if started.elapsed() > Duration::from_secs(30) {
            return started.elapsed();
        }
    }
}

/// 200 slow clients at once (half trickling their headers, half a body) against `--request-timeout 2s`: every one
/// is dropped within the timeout and a margin, and admissions meanwhile all succeed. Rounds with and without the
/// attack alternate (four of each); the p99 of 100 admissions per round is printed, medians over the rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_clients_are_dropped_after_the_request_timeout_while_admissions_go_on() {
    let Served {
        webhook, pki, listen, ..
    } = serve_ready(&["--request-timeout", "2s"]).await;
    let ca = pki.ca_der();
    let (mut calm, mut attacked, mut held) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..8 {
        if round % 2 == 0 {
            calm.push(percentile(&mut admissions(listen, &ca, 100).await, 0.99));
            continue;
        }
        let attackers: Vec<_> = (0..200)
            .map(|i| tokio::spawn(slow_client(listen, ca.clone(), i % 2 == 1)))
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        attacked.push(percentile(&mut admissions(listen, &ca, 100).await, 0.99));
        for attacker in attackers {
            held.push(attacker.await.unwrap());
        }
    }
    let longest = *held.iter().max().unwrap();
    assert!(
        longest < Duration::from_secs(6),
        "a slow client held its connection for {longest:?} (--request-timeout 2s)\n{}",
        webhook.log()
    );
    let (calm_p99, attacked_p99) = (percentile(&mut calm, 0.5), percentile(&mut attacked, 0.5));
    report(
        "hostile",
        &format!(
            "800 slow clients (4 rounds of 200) all dropped, the longest after {longest:.2?} (--request-timeout 2s); \
             admission p99 {attacked_p99:.1?} under attack vs {calm_p99:.1?} without (medians of 4 alternating \
             rounds of 100; {:.2}x; spread under attack {:.1?}-{:.1?})",
            attacked_p99.as_secs_f64() / calm_p99.as_secs_f64(),
            attacked.iter().min().unwrap(),
            attacked.iter().max().unwrap(),
        ),
    );
}

/// 10,000 TLS connections opened and left idle: the webhook's memory grows by a bounded amount per connection
/// (printed), admissions are still answered while they are held, and the server closes them once they have
/// carried no byte for twice the request timeout. Before, hyper's header timeout never started for a connection
/// that sends nothing, and all 10,000 stayed open.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_idle_tls_connections_are_held_in_bounded_memory_then_closed() {
    const CONNECTIONS: usize = 10_000;
    // Closed after twice the request timeout without a byte.
    const IDLE_LIMIT: Duration = Duration::from_secs(20);
    let Served {
        webhook, pki, listen, ..
    } = serve_ready(&["--request-timeout", "10s"]).await;
    let (pid, ca) = (webhook.pid(), pki.ca_der());
    admissions(listen, &ca, 8).await;
    let rss_before = status_of(pid, "VmRSS:");
    let started = Instant::now();
    let mut idle = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS / 50 {
        let batch = futures::future::join_all((0..50).map(|_| tls_connect(listen, &ca, b"http/1.1"))).await;
        for connection in batch {
            idle.push(connection.unwrap_or_else(|e| panic!("connection {} of {CONNECTIONS}: {e}", idle.len())));
        }
    }
    let opened_in = started.elapsed();
    let rss_held = status_of(pid, "VmRSS:");
    let fds_held = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    let mut during = admissions(listen, &ca, 20).await;
    let during_p99 = percentile(&mut during, 0.99);
    assert!(
        started.elapsed() < IDLE_LIMIT,
        "opening took {opened_in:?}, longer than the idle limit: the figures would not be of 10,000 at once"
    );
    // The last one opened is closed 20 s after it opened.
    tokio::time::sleep((opened_in + IDLE_LIMIT + Duration::from_secs(3)).saturating_sub(started.elapsed())).await;
    let mut closed = 0;
    for connection in &mut idle {
        let mut buffer = [0u8; 16];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(1), connection.read(&mut buffer)).await {
            closed += 1;
        }
    }
    drop(idle);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_after, fds_after) = (
        status_of(pid, "VmRSS:"),
        std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count(),
    );
    assert_eq!(
        closed, CONNECTIONS,
        "idle connections left open by the server after the timeout"
    );
    assert!(fds_after < 100, "{fds_after} descriptors left open");
    let per_connection = (rss_held.saturating_sub(rss_before)) * 1024 / CONNECTIONS as u64;
    report(
        "hostile",
        &format!(
            "{CONNECTIONS} idle TLS connections opened in {opened_in:.1?}: RSS {rss_before} kB -> {rss_held} kB \
             ({per_connection} B each), {fds_held} descriptors; admission p99 {during_p99:.1?} while held; all \
             closed by the server after 20 s without a byte (--request-timeout 10s); then RSS {rss_after} kB, {fds_after} descriptors"
        ),
    );
}

/// HTTP/2 rapid reset (CVE-2023-44487): a client opens streams and resets them at once, in a loop. The server ends
/// the connection after a bounded number of resets (printed with the CPU it spent), and serves others meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http2_rapid_reset_ends_the_connection_and_the_server_goes_on() {
    let Served {
        webhook, pki, listen, ..
    } = serve_ready(&[]).await;
    let (pid, ca) = (webhook.pid(), pki.ca_der());
    let tls = tls_connect(listen, &ca, b"h2").await.unwrap();
    let (mut client, connection) = h2::client::handshake(tls).await.unwrap();
    let connection = tokio::spawn(connection);
    client = client.ready().await.unwrap();
    let cpu_before = cpu_of(pid);
    let started = Instant::now();
    let mut resets = 0u64;
    let body = serde_json::to_vec(&admission_fixture("01-plain-pod.json")).unwrap();
    while resets < 100_000 {
        client = match client.ready().await {
            Ok(client) => client,
            Err(_) => break,
        };
        let request = http::Request::post(format!("https://{listen}/mutate-v1-pod"))
            .header("content-type", "application/json")
            .body(())
            .unwrap();
        let Ok((response, mut stream)) = client.send_request(request, false) else {
            break;
        };
        let _ = stream.send_data(bytes::Bytes::from(body[..64].to_vec()), false);
        stream.send_reset(h2::Reason::CANCEL);
        drop(response);
        resets += 1;
    }
    let elapsed = started.elapsed();
    let ended = tokio::time::timeout(Duration::from_secs(10), connection).await;
    let cpu = cpu_of(pid).saturating_sub(cpu_before);
    assert!(
        resets < 100_000,
        "the server took 100,000 resets without ending the connection ({elapsed:?}, CPU {cpu:?})"
    );
    assert!(ended.is_ok(), "the connection was not ended");
    // Still serving, over HTTP/2 too.
    let reply = https(
        listen,
        &ca,
        "POST",
        "/mutate-v1-pod",
        Some("application/json"),
        body,
        true,
    )
    .await
    .unwrap();
    assert_eq!(reply.status, http::StatusCode::OK);
    report(
        "hostile",
        &format!(
            "HTTP/2 rapid reset: the connection ended after {resets} resets in {elapsed:.2?}, server CPU {} ms \
             (clock ticks of 10 ms); then an HTTP/2 admission answered",
            cpu.as_millis()
        ),
    );
}

/// 1,000 admissions on one HTTP/2 connection, 100 streams at a time: the server bounds the streams it runs at
/// once (its SETTINGS), answers every one, and spends CPU in proportion (printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_http2_streams_are_bounded_and_all_answered() {
    use futures::StreamExt as _;
    const STREAMS: usize = 1_000;
    let Served {
        webhook, pki, listen, ..
    } = serve_ready(&[]).await;
    let (pid, ca) = (webhook.pid(), pki.ca_der());
    let tls = tls_connect(listen, &ca, b"h2").await.unwrap();
    let (client, mut connection) = h2::client::handshake(tls).await.unwrap();
    // The server's SETTINGS arrive with the first frames the connection reads.
    let _ = tokio::time::timeout(Duration::from_millis(200), &mut connection).await;
    let max_streams = connection.max_concurrent_send_streams();
    tokio::spawn(connection);
    let body = bytes::Bytes::from(serde_json::to_vec(&admission_fixture("01-plain-pod.json")).unwrap());
    let cpu_before = cpu_of(pid);
    let started = Instant::now();
    let answered: Vec<http::StatusCode> = futures::stream::iter(0..STREAMS)
        .map(|_| {
            let (client, body) = (client.clone(), body.clone());
            async move {
                let mut client = client.ready().await.unwrap();
                let request = http::Request::post(format!("https://{listen}/mutate-v1-pod"))
                    .header("content-type", "application/json")
                    .body(())
                    .unwrap();
                let (response, mut stream) = client.send_request(request, false).unwrap();
                stream.send_data(body, true).unwrap();
                let response = response.await.unwrap();
                let status = response.status();
                let mut body = response.into_body();
                while let Some(chunk) = body.data().await {
                    let chunk = chunk.unwrap();
                    let _ = body.flow_control().release_capacity(chunk.len());
                }
                status
            }
        })
        .buffer_unordered(100)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let cpu = cpu_of(pid).saturating_sub(cpu_before);
    assert_eq!(answered.len(), STREAMS);
    assert!(
        answered.iter().all(|s| *s == http::StatusCode::OK),
        "not every stream was answered 200"
    );
    assert!(
        (1..=1000).contains(&max_streams),
        "the server allows {max_streams} concurrent streams per connection"
    );
    report(
        "hostile",
        &format!(
            "{STREAMS} admissions on one HTTP/2 connection, 100 streams at a time: all answered 200 in \
             {elapsed:.2?}, server CPU {} ms; streams the server runs at a time: {max_streams}",
            cpu.as_millis()
        ),
    );
}
