//! `cargo bench -p wi-webhook --bench load`: the `wi-webhook serve` binary under load from well-kept load generators,
//! `wrk` (HTTP/1.1) and `h2load` (HTTP/2, nghttp2): kube-apiserver speaks both to webhooks. On Debian:
//! `apt-get install wrk nghttp2-client`.
//!
//! The binary runs as in a cluster (release build, started as users start it), its caches filled from a fake
//! kube-apiserver (in this process) holding 10,000 ServiceAccounts in 100 namespaces. The load generator keeps 16
//! keep-alive HTTPS connections (one client thread) busy with AdmissionReview requests for the captured Deployment
//! pod (`04-deployment-pod.json`):
//!
//! - null: the same pod labelled `azure.workload.identity/use: "false"`: the same TLS, HTTP, body reading and JSON
//!   parsing, answered "allowed" without a patch (the server's opt-out path);
//! - mutate: the pod labelled `"true"`: the ServiceAccount from the cache, the engine, the patch.
//!
//! Each protocol runs 5 rounds of null and mutate (null first in odd rounds, mutate first in even ones, so that the
//! machine's drift during a round favours neither), 6 s each after 1 s of warm-up, on the same server. Every
//! request is checked to have ended as it should through the server's own counter
//! (`wi_webhook_admission_requests_total`). Prints requests per second, p50 and p99 latency and the ratios against
//! null in the same round, then the server's resident memory and its log. Server and load generator share the
//! machine's cores; the server runs with the flags of `manifests/base` and logs each admission (one JSON line) to a
//! file.
//!
//! `--hold` starts the server the same way, prints its pid, URL and the two request bodies, and keeps it running
//! until interrupted, to load and profile it by hand (`perf record -p PID`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/fake_api.rs"]
mod fake_api;
#[path = "../tests/common/process.rs"]
mod process;
mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fake_api::{admission_fixture, fake_api, kubeconfig};
use serde_json::json;
use wi_runtime::procfs;

const CONNECTIONS: usize = 16;
const WARMUP: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(6);
const ROUNDS: usize = 5;
const ACCOUNTS: usize = 10_000;

#[derive(Clone, Copy, PartialEq)]
enum Protocol {
    Http1,
    Http2,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Http1 => "HTTP/1.1 (wrk)",
            Protocol::Http2 => "HTTP/2 (h2load)",
        }
    }
}

struct Run {
    requests: u64,
    rps: f64,
    p50: Duration,
    p99: Duration,
    /// The server's CPU time (user + system, all threads) over the requests it answered, warm-up included.
    cpu_per_request: Duration,
}

fn output(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{command:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `1.06ms`, `830.00us`, `1.20s` as wrk prints them.
fn wrk_duration(text: &str) -> Duration {
    let (number, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic()).unwrap());
    let n: f64 = number.parse().unwrap();
    Duration::from_secs_f64(match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        other => panic!("unknown wrk unit {other}"),
    })
}

/// One wrk run: 1 thread, `CONNECTIONS` connections, `duration`, POSTing the body of `script`.
fn wrk(url: &str, script: &Path, duration: Duration) -> Run {
    let out = output(Command::new("wrk").args([
        "-t1",
        &format!("-c{CONNECTIONS}"),
        &format!("-d{}s", duration.as_secs()),
        "--latency",
        "-s",
        script.to_str().unwrap(),
        url,
    ]));
    assert!(!out.contains("Non-2xx"), "wrk saw failed requests:\n{out}");
    assert!(!out.contains("Socket errors"), "wrk saw socket errors:\n{out}");
    let field = |prefix: &str| {
        out.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in wrk's output:\n{out}"))
            .trim()
            .to_owned()
    };
    let requests = out
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    Run {
        requests,
        rps: field("Requests/sec:").parse().unwrap(),
        p50: wrk_duration(&field("50%")),
        p99: wrk_duration(&field("99%")),
        cpu_per_request: Duration::ZERO,
    }
}

/// One h2load run: 1 thread, `CONNECTIONS` connections, one stream each at a time (as kube-apiserver sends
/// reviews), `duration` after `WARMUP`; latencies from its per-request log.
fn h2load(url: &str, body: &Path, duration: Duration, log: &Path) -> Run {
    let out = output(Command::new("h2load").args([
        "-t1",
        &format!("-c{CONNECTIONS}"),
        "-m1",
        &format!("--duration={}", duration.as_secs()),
        &format!("--warm-up-time={}", WARMUP.as_secs()),
        "-H",
        "content-type: application/json",
        "-d",
        body.to_str().unwrap(),
        &format!("--log-file={}", log.display()),
        url,
    ]));
    assert!(
        out.contains("Application protocol: h2"),
        "h2load did not negotiate HTTP/2:\n{out}"
    );
    let requests_line = out.lines().find(|l| l.starts_with("requests:")).unwrap();
    assert!(
        requests_line.contains(" 0 failed, 0 errored, 0 timeout"),
        "h2load saw failed requests:\n{out}"
    );
    let finished = out.lines().find(|l| l.starts_with("finished in")).unwrap();
    let rps: f64 = finished
        .split(", ")
        .find_map(|p| p.strip_suffix(" req/s"))
        .unwrap()
        .parse()
        .unwrap();
    // Tab-separated: start (us since the epoch), status, microseconds to the end of the response.
    let mut latencies: Vec<u64> = std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| {
            let fields: Vec<&str> = l.split('\t').collect();
            assert_eq!(fields[1], "200", "h2load: {l}");
            fields[2].parse().unwrap()
        })
        .collect();
    latencies.sort_unstable();
    let at = |p: f64| Duration::from_micros(latencies[((latencies.len() as f64 - 1.0) * p).round() as usize]);
    Run {
        requests: latencies.len() as u64,
        rps,
        p50: at(0.50),
        p99: at(0.99),
        cpu_per_request: Duration::ZERO,
    }
}

fn review(opt_in: &str) -> Vec<u8> {
    let mut review = admission_fixture("04-deployment-pod.json");
    review["request"]["object"]["metadata"]["labels"]["azure.workload.identity/use"] = json!(opt_in);
    serde_json::to_vec(&review).unwrap()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn outcome_count(server: &support::Server, result: &str) -> u64 {
    server
        .metric(&format!("wi_webhook_admission_requests_total{{result=\"{result}\"}}"))
        .await
        .unwrap_or(0.0) as u64
}

/// Runs the load and checks that every request it counted ended as `expected` in the server.
async fn measure(server: &support::Server, protocol: Protocol, body: &Path, expected: &str) -> Run {
    // A host name, as kube-apiserver dials a webhook Service: wrk and h2load send it as SNI (an IP address there
    // is not a valid SNI, and the server would warn about each connection).
    let url = format!("https://localhost:{}/mutate-v1-pod", server.admission.port());
    let dir = server.dir.path();
    let script = dir.join(format!("{}.lua", body.file_stem().unwrap().to_string_lossy()));
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n\
             local f = assert(io.open({:?}, \"rb\"))\nwrk.body = f:read(\"*a\")\nf:close()\n",
            body.display().to_string()
        ),
    )
    .unwrap();
    let before: Vec<u64> = futures::future::join_all(
        ["mutated", "unchanged", "denied", "error", "invalid"].map(|r| outcome_count(server, r)),
    )
    .await;
    let cpu_time = || procfs::cpu_time(Some(server.pid())).expect("the server's CPU time in /proc/PID/stat");
    let cpu_before = cpu_time();
    let mut run = tokio::task::block_in_place(|| match protocol {
        Protocol::Http1 => {
            wrk(&url, &script, WARMUP);
            wrk(&url, &script, MEASURE)
        }
        Protocol::Http2 => {
            let log = dir.join("h2load.log");
            // h2load appends to its log.
            let _ = std::fs::remove_file(&log);
            h2load(&url, body, MEASURE, &log)
        }
    });
    let cpu = cpu_time() - cpu_before;
    let after: Vec<u64> = futures::future::join_all(
        ["mutated", "unchanged", "denied", "error", "invalid"].map(|r| outcome_count(server, r)),
    )
    .await;
    for (i, result) in ["mutated", "unchanged", "denied", "error", "invalid"]
        .iter()
        .enumerate()
    {
        let delta = after[i] - before[i];
        if *result == expected {
            run.cpu_per_request = cpu.div_f64(delta.max(1) as f64);
            assert!(
                delta >= run.requests,
                "{delta} {result} in the server for {} requests",
                run.requests
            );
        } else {
            assert_eq!(delta, 0, "{delta} requests ended {result}, expected {expected}");
        }
    }
    run
}

/// The `admission reviewed` lines of the server's log, and its bytes, read a line at a time (a run writes about
/// 500 MB).
fn reviewed_lines(path: &Path) -> std::io::Result<(u64, u64)> {
    const LINE: &[u8] = b"admission reviewed";
    let (mut reviewed, mut bytes) = (0, 0);
    for line in std::io::BufRead::split(std::io::BufReader::new(std::fs::File::open(path)?), b'\n') {
        let line = line?;
        bytes += line.len() as u64 + 1;
        reviewed += u64::from(line.windows(LINE.len()).any(|w| w == LINE));
    }
    Ok((reviewed, bytes))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    for (tool, package) in [("wrk", "wrk"), ("h2load", "nghttp2-client")] {
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!("{tool} is not installed: apt-get install {package}");
            std::process::exit(1);
        }
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let api = fake_api(ACCOUNTS).await;
    let server = support::start_server(&kubeconfig(api), ACCOUNTS)
        .await
        .unwrap_or_else(|e| support::fail("load", &e));
    let idle = procfs::memory(Some(server.pid())).unwrap();
    let (null_body, mutate_body) = (
        server.dir.path().join("null.json"),
        server.dir.path().join("mutate.json"),
    );
    std::fs::write(&null_body, review("false")).unwrap();
    std::fs::write(&mutate_body, review("true")).unwrap();
    if std::env::args().any(|a| a == "--hold") {
        // For profiling: the server and the request bodies, kept until interrupted.
        println!(
            "server pid {} at https://localhost:{}/mutate-v1-pod; bodies {} and {}; log {}; interrupt to stop",
            server.pid(),
            server.admission.port(),
            null_body.display(),
            mutate_body.display(),
            server.log_file.display()
        );
        if let Err(error) = tokio::signal::ctrl_c().await {
            eprintln!("load --hold: cannot wait for Ctrl-C ({error}); stopping the server");
        }
        return;
    }
    println!(
        "wi-webhook serve under load: {CONNECTIONS} keep-alive HTTPS connections from one client thread, {} s per run \
         after {} s of warm-up, {ROUNDS} rounds; {cores} cores shared by server and load generator; {ACCOUNTS} \
         ServiceAccounts cached; request body {} bytes (04-deployment-pod.json)\n",
        MEASURE.as_secs(),
        WARMUP.as_secs(),
        std::fs::metadata(&mutate_body).unwrap().len()
    );
    println!(
        "| protocol | run | requests/s | p50 | p99 | server CPU per request | requests/s vs null | p99 vs null | CPU \
         vs null |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut summary = Vec::new();
    for protocol in [Protocol::Http1, Protocol::Http2] {
        let (mut rps_ratios, mut p99_ratios, mut cpu_ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 1..=ROUNDS {
            // Alternating which goes first, so that a drift of the machine during a round favours neither.
            let (null, mutate) = if round % 2 == 1 {
                let null = measure(&server, protocol, &null_body, "unchanged").await;
                (null, measure(&server, protocol, &mutate_body, "mutated").await)
            } else {
                let mutate = measure(&server, protocol, &mutate_body, "mutated").await;
                (measure(&server, protocol, &null_body, "unchanged").await, mutate)
            };
            let (rps_ratio, p99_ratio) = (mutate.rps / null.rps, mutate.p99.as_secs_f64() / null.p99.as_secs_f64());
            let cpu_ratio = mutate.cpu_per_request.as_secs_f64() / null.cpu_per_request.as_secs_f64();
            println!(
                "| {} | null (round {round}) | {:.0} | {} | {} | {:.1} µs | 1.00x | 1.00x | 1.00x |",
                protocol.name(),
                null.rps,
                ms(null.p50),
                ms(null.p99),
                null.cpu_per_request.as_secs_f64() * 1e6,
            );
            println!(
                "| {} | mutate (round {round}) | {:.0} | {} | {} | {:.1} µs | {rps_ratio:.2}x | {p99_ratio:.2}x | \
                 {cpu_ratio:.2}x |",
                protocol.name(),
                mutate.rps,
                ms(mutate.p50),
                ms(mutate.p99),
                mutate.cpu_per_request.as_secs_f64() * 1e6,
            );
            rps_ratios.push(rps_ratio);
            p99_ratios.push(p99_ratio);
            cpu_ratios.push(cpu_ratio);
        }
        let median = |mut ratios: Vec<f64>| {
            ratios.sort_by(f64::total_cmp);
            ratios[ROUNDS / 2]
        };
        summary.push((protocol, median(rps_ratios), median(p99_ratios), median(cpu_ratios)));
    }
    println!(
        "\nmutate vs null, median of the {ROUNDS} rounds (goal: requests/s at least 0.95x, p99 at most 1.1x; the \
         server's CPU per request, which the machine's drift moves less)"
    );
    println!("| protocol | requests/s | p99 | server CPU per request |");
    println!("|---|---|---|---|");
    for (protocol, rps, p99, cpu) in summary {
        println!("| {} | {rps:.2}x | {p99:.2}x | {cpu:.2}x |", protocol.name());
    }
    let loaded = procfs::memory(Some(server.pid())).unwrap();
    println!(
        "\nresident memory of wi-webhook serve with {ACCOUNTS} ServiceAccounts: {} KiB idle, {} KiB after the load, \
         peak {} KiB",
        idle.rss_kib, loaded.rss_kib, loaded.peak_kib
    );
    let (reviewed, bytes) = match reviewed_lines(&server.log_file) {
        Ok(counted) => counted,
        Err(e) => {
            let message = format!("cannot read {}: {e}", server.log_file.display());
            drop(server);
            support::fail("load", &message);
        }
    };
    let admissions: u64 = futures::future::join_all(["mutated", "unchanged"].map(|r| outcome_count(&server, r)))
        .await
        .iter()
        .sum();
    println!(
        "server log (--log-format json, level info, as manifests/base runs it): {reviewed} \"admission reviewed\" \
         lines for {admissions} admissions, {bytes} bytes in all"
    );
    assert_eq!(reviewed, admissions, "one log line per admission");
}
