//! A kube-apiserver that lists metadata and keeps watches open: what `wi-webhook serve`'s reflectors need, without a
//! cluster. Shared by the process tests and the load bench (`#[path]`-included there).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde_json::{Value, json};

/// A captured AdmissionReview (or ServiceAccount) of `tests/fixtures/admission`.
pub fn admission_fixture(path: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/admission")
        .join(path);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The objects of one resource, each serialized once, served in pages as kube-apiserver serves them.
struct Listing {
    items: Vec<Bytes>,
}

impl Listing {
    fn new(items: Vec<Value>) -> Self {
        Listing {
            items: items
                .iter()
                .map(|i| Bytes::from(serde_json::to_vec(i).unwrap()))
                .collect(),
        }
    }

    /// The page starting at `from` with at most `limit` items (all when 0), with the `continue` token of the next.
    fn page(&self, from: usize, limit: usize) -> Bytes {
        let end = if limit == 0 {
            self.items.len()
        } else {
            (from + limit).min(self.items.len())
        };
        let from = from.min(end);
        let mut metadata = json!({"resourceVersion": "10"});
        if end < self.items.len() {
            metadata["continue"] = json!(end.to_string());
            metadata["remainingItemCount"] = json!(self.items.len() - end);
        }
        let head = json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": metadata});
        let mut body = serde_json::to_vec(&head).unwrap();
        body.pop(); // the closing brace
        body.extend_from_slice(b",\"items\":[");
        for (i, item) in self.items[from..end].iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(item);
        }
        body.extend_from_slice(b"]}");
        Bytes::from(body)
    }
}

struct FakeApi {
    service_accounts: Listing,
    namespaces: Listing,
}

fn meta(namespace: Option<&str>, name: &str, annotations: Value, labels: Value) -> Value {
    let mut metadata = json!({"name": name, "resourceVersion": "5", "uid": uuid::Uuid::new_v4().to_string(),
                              "creationTimestamp": "2026-11-28T10:00:00Z",
                              "annotations": annotations, "labels": labels,
                              "managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Update",
                                                 "apiVersion": "v1", "time": "2026-11-28T10:00:00Z",
                                                 "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {}}}]});
    if let Some(ns) = namespace {
        metadata["namespace"] = json!(ns);
    }
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": metadata})
}

impl FakeApi {
    /// The captured fixtures' `workload-sa` and `accounts - 1` others in 100 namespaces, each with a client id, a
    /// few other annotations and labels (as a platform team's accounts carry them).
    fn new(accounts: usize) -> Self {
        let real = admission_fixture("serviceaccounts/workload-sa.json");
        let mut items = vec![meta(
            real["metadata"]["namespace"].as_str(),
            real["metadata"]["name"].as_str().unwrap(),
            real["metadata"]["annotations"].clone(),
            json!({}),
        )];
        for i in 1..accounts {
            let annotations = json!({
                "azure.workload.identity/client-id": uuid::Uuid::new_v4().to_string(),
                "kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"v1\",\"kind\":\"ServiceAccount\"}",
                "owner": format!("team-{:03}@example.com", i % 100),
            });
            let labels =
                json!({"app.kubernetes.io/name": format!("app-{i:05}"), "team": format!("team-{:03}", i % 100)});
            items.push(meta(
                Some(&format!("team-{:03}", i % 100)),
                &format!("app-{i:05}"),
                annotations,
                labels,
            ));
        }
        let mut namespaces: Vec<Value> = (0..100)
            .map(|i| {
                meta(
                    None,
                    &format!("team-{i:03}"),
                    json!({}),
                    json!({"team": format!("{i}")}),
                )
            })
            .collect();
        namespaces.push(meta(None, "wi-fixtures", json!({}), json!({})));
        FakeApi {
            service_accounts: Listing::new(items),
            namespaces: Listing::new(namespaces),
        }
    }
}

async fn list_or_watch(State((api, which)): State<(Arc<FakeApi>, &'static str)>, uri: axum::http::Uri) -> Response {
    let query: Vec<(&str, &str)> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|p| p.split_once('='))
        .collect();
    let param = |name: &str| query.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    if param("watch") == Some("true") {
        // An open watch with nothing to say.
        let stream = futures::stream::pending::<Result<Bytes, Infallible>>();
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .unwrap();
    }
    let listing = if which == "serviceaccounts" {
        &api.service_accounts
    } else {
        &api.namespaces
    };
    let limit = param("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
    let from = param("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
    ([("content-type", "application/json")], listing.page(from, limit)).into_response()
}

/// How the fake API answers a GET of one object (a ServiceAccount the webhook has not cached).
#[derive(Debug, Clone, Copy)]
pub enum Miss {
    /// 404, as for an object that does not exist.
    NotFound,
    /// A Status of this code at once (429 with `Retry-After: 1`, as an overloaded kube-apiserver sends it).
    Fails(u16),
    /// No answer for this long.
    Stalls(std::time::Duration),
}

async fn get_one(State(miss): State<Miss>) -> Response {
    let status = |code: u16, reason: &str| {
        let mut response = (
            axum::http::StatusCode::from_u16(code).unwrap(),
            axum::Json(
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                              "reason": reason, "message": format!("fake API: {reason}")}),
            ),
        )
            .into_response();
        if code == 429 {
            response.headers_mut().insert("retry-after", "1".parse().unwrap());
        }
        response
    };
    match miss {
        Miss::NotFound => status(404, "NotFound"),
        Miss::Fails(429) => status(429, "TooManyRequests"),
        Miss::Fails(code) => status(code, "InternalError"),
        Miss::Stalls(delay) => {
            tokio::time::sleep(delay).await;
            status(404, "NotFound")
        }
    }
}

/// Serves the fake API on 127.0.0.1 (plain HTTP) until the runtime ends; returns its address.
pub async fn fake_api(accounts: usize) -> SocketAddr {
    fake_api_with(accounts, Miss::NotFound).await
}

/// [`fake_api`], answering a GET of one ServiceAccount as `miss` says.
pub async fn fake_api_with(accounts: usize, miss: Miss) -> SocketAddr {
    let api = Arc::new(FakeApi::new(accounts));
    let router = Router::new()
        .route("/api/v1/serviceaccounts", get(list_or_watch).with_state((api.clone(), "serviceaccounts")))
        .route("/api/v1/namespaces", get(list_or_watch).with_state((api, "namespaces")))
        .route("/api/v1/namespaces/{namespace}/serviceaccounts/{name}", get(get_one).with_state(miss))
        .fallback(|| async {
            (
                axum::http::StatusCode::NOT_FOUND,
                axum::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound"})),
            )
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// A kubeconfig for a plain-HTTP API server at `addr`.
pub fn kubeconfig(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\n\
         users:\n- name: test\n  user:\n    token: test\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    \
         user: test\n    namespace: default\ncurrent-context: fake\n"
    )
}
