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

struct FakeApi {
    service_accounts: Bytes,
    namespaces: Bytes,
}

fn meta(namespace: Option<&str>, name: &str, annotations: Value, labels: Value) -> Value {
    let mut metadata = json!({"name": name, "resourceVersion": "5", "uid": uuid::Uuid::new_v4().to_string(),
                              "annotations": annotations, "labels": labels});
    if let Some(ns) = namespace {
        metadata["namespace"] = json!(ns);
    }
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": metadata})
}

impl FakeApi {
    /// The captured fixtures' `workload-sa` and `accounts - 1` others in 100 namespaces, each with a client id.
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
            });
            items.push(meta(
                Some(&format!("team-{:03}", i % 100)),
                &format!("app-{i:05}"),
                annotations,
                json!({}),
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
        let list = |items: Vec<Value>| {
            Bytes::from(
                serde_json::to_vec(
                    &json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                            "metadata": {"resourceVersion": "10"}, "items": items}),
                )
                .unwrap(),
            )
        };
        FakeApi {
            service_accounts: list(items),
            namespaces: list(namespaces),
        }
    }
}

async fn list_or_watch(State((api, which)): State<(Arc<FakeApi>, &'static str)>, uri: axum::http::Uri) -> Response {
    if uri.query().is_some_and(|q| q.split('&').any(|p| p == "watch=true")) {
        // An open watch with nothing to say.
        let stream = futures::stream::pending::<Result<Bytes, Infallible>>();
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .unwrap();
    }
    let body = if which == "serviceaccounts" {
        api.service_accounts.clone()
    } else {
        api.namespaces.clone()
    };
    ([("content-type", "application/json")], body).into_response()
}

/// Serves the fake API on 127.0.0.1 (plain HTTP) until the runtime ends; returns its address.
pub async fn fake_api(accounts: usize) -> SocketAddr {
    let api = Arc::new(FakeApi::new(accounts));
    let router = Router::new()
        .route("/api/v1/serviceaccounts", get(list_or_watch).with_state((api.clone(), "serviceaccounts")))
        .route("/api/v1/namespaces", get(list_or_watch).with_state((api, "namespaces")))
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
