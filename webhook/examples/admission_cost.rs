//! The admission path in process, for counting what the mutate path costs over the opt-out path without the noise
//! of a timed run: the router `serve` uses (parse, lookups, engine, response), no TLS, no socket.
//!
//! ```sh
//! cargo build --release -p wi-webhook --example admission_cost
//! # per-request instructions: the difference between 300 and 100 requests, over 200, for null and for mutate
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/admission_cost mutate 300
//! # per-request heap blocks ("Total: ... in N blocks")
//! valgrind --tool=dhat --dhat-out-file=/dev/null target/release/examples/admission_cost mutate 300
//! # both paths timed in alternating blocks of 2,000 requests, medians of N blocks
//! target/release/examples/admission_cost time 15
//! ```
//!
//! `null` is the captured Deployment pod (`04-deployment-pod.json`) labelled `azure.workload.identity/use: "false"`,
//! `mutate` the same pod labelled `"true"`, as in the load bench; its ServiceAccount is the captured `workload-sa`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use serde_json::Value;
use tower::ServiceExt as _;
use wi_webhook::admission::{Admission, Limits, router};
use wi_webhook::config::Config;
use wi_webhook::lookup::StaticLookup;
use wi_webhook::mutate::ServiceAccount;

const USAGE: &str = "usage: admission_cost null|mutate REQUESTS, or admission_cost time BLOCKS";

/// One request through the router; the size of the answer, or why there is none.
async fn admit(app: &Router, body: &[u8]) -> Result<usize, String> {
    let request = http::Request::post("/mutate-v1-pod")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_vec()))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let response = app
        .clone()
        .oneshot(request)
        .await
        .map_err(|e| format!("the router failed: {e}"))?;
    if response.status() != 200 {
        return Err(format!("the router answered {}", response.status()));
    }
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .map_err(|e| format!("cannot read the answer: {e}"))?;
    Ok(bytes.len())
}

/// A captured fixture as JSON.
fn fixture(name: &str) -> Result<Value, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/admission")
        .join(name);
    let text = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))
}

fn main() {
    if let Err(error) = run() {
        eprintln!("admission_cost: {error}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, n) = match args.as_slice() {
        [mode, n] if ["null", "mutate", "time"].contains(&mode.as_str()) => match n.parse::<usize>() {
            Ok(n) if n > 0 => (mode.as_str(), n),
            _ => return Err(format!("{n:?} is not a positive count\n{USAGE}")),
        },
        _ => return Err(USAGE.to_owned()),
    };
    let sa = ServiceAccount::from_object(&fixture("serviceaccounts/workload-sa.json")?)
        .map_err(|e| format!("workload-sa.json: {e}"))?;
    let mut review = fixture("04-deployment-pod.json")?;
    let mut body = |opt_in: &str| {
        review["request"]["object"]["metadata"]["labels"]["azure.workload.identity/use"] = Value::from(opt_in);
        serde_json::to_vec(&review).map_err(|e| format!("cannot encode the review: {e}"))
    };
    let (null, mutate) = (body("false")?, body("true")?);
    let app = router(
        Admission {
            lookup: Arc::new(StaticLookup {
                service_accounts: vec![sa],
                ..Default::default()
            }),
            config: Config {
                tenant_id: Some("72f988bf-86f1-41af-91ab-2d7cd011db47".into()),
                ..Config::default()
            },
            metrics: Arc::default(),
        },
        Limits {
            max_body_bytes: 1 << 20,
            request_timeout: Duration::from_secs(10),
        },
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    runtime.block_on(async {
        match mode {
            "null" | "mutate" => {
                let body = if mode == "null" { &null } else { &mutate };
                let mut bytes = 0;
                for _ in 0..n {
                    bytes += admit(&app, body).await?;
                }
                println!("{mode}: {n} requests, {bytes} response bytes");
            }
            _ => {
                const BLOCK: usize = 2_000;
                let mut micros = [Vec::new(), Vec::new()];
                for _ in 0..n {
                    for (times, body) in micros.iter_mut().zip([&null, &mutate]) {
                        let started = Instant::now();
                        for _ in 0..BLOCK {
                            admit(&app, body).await?;
                        }
                        times.push(started.elapsed().as_secs_f64() * 1e6 / BLOCK as f64);
                    }
                }
                for times in &mut micros {
                    times.sort_by(f64::total_cmp);
                }
                let (null, mutate) = (micros[0][n / 2], micros[1][n / 2]);
                println!(
                    "per request, median of {n} blocks of {BLOCK}: null {null:.2} µs, mutate {mutate:.2} µs, \
                     mutate - null {:.2} µs, null / mutate {:.3}",
                    mutate - null,
                    null / mutate
                );
            }
        }
        Ok(())
    })
}
