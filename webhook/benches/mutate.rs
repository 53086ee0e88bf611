//! The engine on the largest captured request: `cargo bench -p wi-webhook --bench mutate`.
//!
//! Three figures: the full admission path (parse the AdmissionReview body, mutate, encode the response), the
//! engine alone, and JSON parsing alone as the baseline the engine is compared with. Then the cost as the work
//! grows: the captured Deployment pod with its container repeated to 1, 5, 30 and 100 containers (issue 14's goal:
//! the engine alone at most 50 us on 30 containers), the engine alone and the admission path.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value;
use wi_webhook::config::Config;
use wi_webhook::mutate::{Inputs, ServiceAccount, mutate};
use wi_webhook::review::AdmissionReview;

fn largest_fixture() -> (String, Vec<u8>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission/raw");
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .max_by_key(|(_, body)| body.len())
        .unwrap()
}

/// The captured requests' ServiceAccount and the webhook's settings.
fn service_account_and_config() -> (ServiceAccount, Config) {
    let sa_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission/serviceaccounts/workload-sa.json");
    let sa = ServiceAccount::from_object(&serde_json::from_slice(&std::fs::read(sa_path).unwrap()).unwrap()).unwrap();
    let config = Config {
        tenant_id: Some("72f988bf-86f1-41af-91ab-2d7cd011db47".into()),
        ..Config::default()
    };
    (sa, config)
}

/// The admission path of `serve` without the network: parse the review, the engine, encode the response.
fn admit(body: &[u8], inputs: &Inputs<'_>, config: &Config) -> Vec<u8> {
    let review = AdmissionReview::parse(body).unwrap();
    let pod = review.pod_create().unwrap();
    let outcome = mutate(pod.pod, inputs, config).map_err(Into::into);
    review.respond(outcome).to_json().unwrap()
}

fn bench(c: &mut Criterion) {
    let (name, body) = largest_fixture();
    let (sa, config) = service_account_and_config();
    let inputs = Inputs {
        namespace_labels: None,
        service_account: &sa,
        secret_provider_class: Default::default(),
    };
    let review = AdmissionReview::parse(&body).unwrap();
    let pod = review.request.object.clone().unwrap();

    let mut group = c.benchmark_group(format!("mutate/{name} ({} bytes)", body.len()));
    group.throughput(Throughput::Elements(1));
    group.bench_function("baseline: parse JSON only", |b| {
        b.iter(|| black_box(serde_json::from_slice::<Value>(black_box(&body)).unwrap()))
    });
    group.bench_function("engine only", |b| {
        b.iter(|| black_box(mutate(black_box(&pod), &inputs, &config).unwrap()))
    });
    group.bench_function("parse + engine + response", |b| {
        b.iter(|| black_box(admit(black_box(&body), &inputs, &config)))
    });
    group.finish();
}

/// The captured Deployment pod's review with its container repeated `n` times (unique names).
fn review_with_containers(n: usize) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission/04-deployment-pod.json");
    let mut review: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let container = review["request"]["object"]["spec"]["containers"][0].clone();
    let containers: Vec<Value> = (0..n)
        .map(|i| {
            let mut c = container.clone();
            c["name"] = Value::String(format!("app-{i}"));
            c
        })
        .collect();
    review["request"]["object"]["spec"]["containers"] = Value::Array(containers);
    serde_json::to_vec(&review).unwrap()
}

fn growth(c: &mut Criterion) {
    let (sa, config) = service_account_and_config();
    let inputs = Inputs {
        namespace_labels: None,
        service_account: &sa,
        secret_provider_class: Default::default(),
    };
    let mut group = c.benchmark_group("containers");
    group.throughput(Throughput::Elements(1));
    // The opt-out path of the load bench's null webhook: the same pod labelled "false", parsed and answered.
    let mut opted_out: Value = serde_json::from_slice(&review_with_containers(1)).unwrap();
    opted_out["request"]["object"]["metadata"]["labels"]["azure.workload.identity/use"] = Value::from("false");
    let opted_out = serde_json::to_vec(&opted_out).unwrap();
    group.bench_function("baseline: parse + opt-out response, 1 containers", |b| {
        b.iter(|| black_box(admit(black_box(&opted_out), &inputs, &config)))
    });
    for n in [1, 5, 30, 100] {
        let body = review_with_containers(n);
        let pod = AdmissionReview::parse(&body).unwrap().request.object.unwrap();
        group.bench_function(format!("engine only, {n} containers"), |b| {
            b.iter(|| black_box(mutate(black_box(&pod), &inputs, &config).unwrap()))
        });
        group.bench_function(
            format!("parse + engine + response, {n} containers ({} bytes)", body.len()),
            |b| b.iter(|| black_box(admit(black_box(&body), &inputs, &config))),
        );
    }
    group.finish();
}

criterion_group!(benches, bench, growth);
criterion_main!(benches);
