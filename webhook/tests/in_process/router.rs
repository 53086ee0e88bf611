//! The admission router as a `tower` service, driven with `oneshot`: no TLS, no socket. What the server adds (TLS,
//! certificate reloads, graceful shutdown) is tested in `server.rs` and `serve_process.rs`; this is the HTTP contract
//! of `POST /mutate-v1-pod` on its own, and the proof that `wi-webhook mutate` answers as `serve` does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use clap::Parser as _;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt as _;
use wi_webhook::admission::{self, Admission, Limits};
use wi_webhook::config::Config;
use wi_webhook::lookup::Lookup;
use wi_webhook::metrics::Metrics;
use wi_webhook::review::decode_patch;

use crate::common::{TENANT, UnreachableServiceAccounts, fixture, fixture_lookup};

fn config() -> Config {
    Config {
        tenant_id: Some(TENANT.to_owned()),
        ..Config::default()
    }
}

fn router(lookup: Arc<dyn Lookup>, metrics: Arc<Metrics>) -> Router {
    admission::router(
        Admission {
            lookup,
            config: config(),
            metrics,
        },
        Limits {
            max_body_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(5),
        },
    )
}

async fn post(router: Router, path: &str, content_type: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let request = Request::post(path)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, bytes.to_vec())
}

fn fixture_body(name: &str) -> Vec<u8> {
    std::fs::read(fixture(&format!("admission/{name}"))).unwrap()
}

/// The request of a fixture with its pod's labels replaced.
fn with_pod_labels(name: &str, labels: Value) -> Vec<u8> {
    let mut review: Value = serde_json::from_slice(&fixture_body(name)).unwrap();
    review["request"]["object"]["metadata"]["labels"] = labels;
    serde_json::to_vec(&review).unwrap()
}

fn counted(metrics: &Metrics, result: &str) -> bool {
    metrics
        .encode()
        .lines()
        .any(|l| l == format!("wi_webhook_admission_requests_total{{result=\"{result}\"}} 1"))
}

#[tokio::test]
async fn both_paths_mutate_an_opted_in_pod_and_count_it() {
    for path in ["/mutate-v1-pod", "/mutate"] {
        let metrics = Arc::new(Metrics::default());
        let app = router(Arc::new(fixture_lookup()), metrics.clone());
        let (status, body) = post(app, path, "application/json", fixture_body("01-plain-pod.json")).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let response: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(response["response"]["allowed"], true);
        let patch = decode_patch(&response).unwrap().expect("a patch");
        assert!(!patch.0.is_empty());
        assert!(counted(&metrics, "mutated"), "{}", metrics.encode());
    }
}

/// Every refusal gets its status from one place: 404 for a missing ServiceAccount, 500 for a lookup that failed
/// (a retry may succeed), 403 for what the pod can fix; a pod that did not opt in is never refused for a lookup.
#[tokio::test]
async fn refusals_carry_the_status_of_their_cause() {
    // (lookup, request, refused with (code, reason, message part) or allowed, the counted result)
    type Case = (
        Arc<dyn Lookup>,
        Vec<u8>,
        Option<(u64, &'static str, &'static str)>,
        &'static str,
    );
    let cases: [Case; 4] = [
        (
            Arc::new(wi_webhook::lookup::StaticLookup::default()),
            fixture_body("01-plain-pod.json"),
            Some((404, "NotFound", "ServiceAccount wi-fixtures/workload-sa not found")),
            "denied",
        ),
        (
            Arc::new(UnreachableServiceAccounts),
            fixture_body("01-plain-pod.json"),
            Some((500, "InternalError", "connection refused; retry the request")),
            "error",
        ),
        (
            Arc::new(UnreachableServiceAccounts),
            with_pod_labels("01-plain-pod.json", json!({"azure.workload.identity/use": "false"})),
            None,
            "unchanged",
        ),
        (
            Arc::new(fixture_lookup()),
            {
                let mut review: Value = serde_json::from_slice(&fixture_body("01-plain-pod.json")).unwrap();
                review["request"]["object"]["metadata"]["annotations"] =
                    json!({"azure.workload.identity/service-account-token-expiration": "60"});
                serde_json::to_vec(&review).unwrap()
            },
            Some((403, "Forbidden", "service-account-token-expiration on pod is \"60\"")),
            "denied",
        ),
    ];
    for (lookup, body, refused, result) in cases {
        let metrics = Arc::new(Metrics::default());
        let (status, bytes) = post(
            router(lookup, metrics.clone()),
            "/mutate-v1-pod",
            "application/json",
            body,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let response: Value = serde_json::from_slice(&bytes).unwrap();
        match refused {
            Some((code, reason, message)) => {
                assert_eq!(response["response"]["allowed"], false, "{response}");
                assert_eq!(response["response"]["status"]["code"], code, "{response}");
                assert_eq!(response["response"]["status"]["reason"], reason);
                let text = response["response"]["status"]["message"].as_str().unwrap();
                assert!(text.contains(message), "{text:?} does not contain {message:?}");
            }
            None => {
                assert_eq!(response["response"]["allowed"], true, "{response}");
                assert!(response["response"].get("patch").is_none());
            }
        }
        assert!(counted(&metrics, result), "{result}: {}", metrics.encode());
    }
}

#[tokio::test]
async fn what_is_not_an_admission_review_is_refused_before_the_engine() {
    let lookup: Arc<dyn Lookup> = Arc::new(fixture_lookup());
    let metrics = Arc::new(Metrics::default());
    let cases = [
        (
            "/mutate-v1-pod",
            "text/plain",
            fixture_body("01-plain-pod.json"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "/mutate-v1-pod",
            "application/json",
            b"{\"kind\":\"Pod\"}".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/mutate-v1-pod",
            "application/json",
            vec![b' '; 65 * 1024],
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "/validate",
            "application/json",
            fixture_body("01-plain-pod.json"),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (path, content_type, body, expected) in cases {
        let (status, text) = post(router(lookup.clone(), metrics.clone()), path, content_type, body).await;
        assert_eq!(
            status,
            expected,
            "{path} {content_type}: {}",
            String::from_utf8_lossy(&text)
        );
    }
    // The three that reached the handler are counted as invalid; the unknown path never reached it.
    let invalid = metrics
        .encode()
        .lines()
        .find(|l| l.starts_with("wi_webhook_admission_requests_total{result=\"invalid\"}"))
        .map(str::to_owned);
    assert_eq!(
        invalid.as_deref(),
        Some("wi_webhook_admission_requests_total{result=\"invalid\"} 2"),
        "413 is answered by the body limit before the handler"
    );
}

/// `wi-webhook mutate --review` runs the same admission path: for every captured request, its answer is the
/// router's, byte for byte once parsed.
#[tokio::test]
async fn the_cli_answers_as_the_router_does() {
    for entry in std::fs::read_dir(fixture("admission")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let body = std::fs::read(&path).unwrap();
        let review: Value = serde_json::from_slice(&body).unwrap();
        let sa_name = review["request"]["object"]["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default");
        let sa_file = fixture(&format!("admission/serviceaccounts/{sa_name}.json"));
        let (_, via_router) = post(
            router(Arc::new(fixture_lookup()), Arc::new(Metrics::default())),
            "/mutate-v1-pod",
            "application/json",
            body,
        )
        .await;
        let via_router: Value = serde_json::from_slice(&via_router).unwrap();

        let cli = wi_webhook::cli::Cli::try_parse_from([
            "wi-webhook",
            "mutate",
            "--review",
            path.to_str().unwrap(),
            "--service-account",
            sa_file.to_str().unwrap(),
            "--tenant-id",
            TENANT,
        ])
        .unwrap();
        let mut out = Vec::new();
        let mut err = Vec::new();
        // The CLI blocks on its own runtime: off this test's.
        let via_cli = tokio::task::spawn_blocking(move || {
            wi_webhook::cli::run(cli, &mut std::io::empty(), &mut out, &mut err).map(|()| out)
        })
        .await
        .unwrap()
        .unwrap();
        let via_cli: Value = serde_json::from_slice(&via_cli).unwrap();
        assert_eq!(via_cli, via_router, "{}", path.display());
    }
}
