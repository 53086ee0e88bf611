//! What the admission handler looks up before it calls the engine: the pod's ServiceAccount, its namespace's
//! labels and the SecretProviderClass it names.
//!
//! [`KubeLookup`] keeps ServiceAccounts and Namespaces in compact caches fed by metadata-only watches (only the
//! keys of the contract, about 80 bytes an account whatever else it carries: [`cache`]), and falls back to a live
//! GET on a miss, which covers an object created a moment before the pod (informer lag). SecretProviderClasses are
//! read live, only when a pod names one.

mod cache;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount as K8sServiceAccount};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PartialObjectMeta};
use serde_json::Value;

use crate::mutate::ServiceAccount;
use cache::{Account, Cache};
use wi_contract::USE_LABEL;

/// A namespace's labels as the engine reads them: the opt-in label, when set.
fn use_label_map(value: Option<Box<str>>) -> BTreeMap<String, String> {
    value
        .map(|v| (USE_LABEL.to_owned(), v.into_string()))
        .into_iter()
        .collect()
}

/// A lookup that failed for a reason other than "not found".
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The API server could not be asked, or answered with an error (unreachable, RBAC forbids it, overloaded).
    #[error("cannot read {what}: {source}")]
    Api {
        /// The object, e.g. `ServiceAccount apps/web`.
        what: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The answer could not be read as the object.
    #[error("cannot read {what}: {source}")]
    Decode {
        /// The object.
        what: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The API server did not answer a live read in time (overloaded, or a network partition). The client retries
    /// 429, 503 and 504 answers with backoff until then.
    #[error(
        "cannot read {what}: no answer from the Kubernetes API within {after:?} (429, 503 and 504 are retried until then)"
    )]
    TimedOut {
        /// The object.
        what: String,
        /// The time allowed.
        after: std::time::Duration,
    },
    /// Another source of objects failed (a test double, a file).
    #[error("{0}")]
    Other(String),
}

impl LookupError {
    /// An error of another source, with this message.
    pub fn new(message: impl Into<String>) -> Self {
        LookupError::Other(message.into())
    }
}

/// Where the handler finds what a pod refers to.
pub trait Lookup: Send + Sync + 'static {
    /// The ServiceAccount `namespace/name`; `None` when it does not exist.
    fn service_account<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<ServiceAccount>, LookupError>>;

    /// The labels of a namespace; `None` when it does not exist.
    fn namespace_labels<'a>(
        &'a self,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<Option<BTreeMap<String, String>>, LookupError>>;

    /// The SecretProviderClass `namespace/name` as JSON; `None` when it (or its CRD) does not exist.
    fn secret_provider_class<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Value>, LookupError>>;

    /// Whether the caches have synced, for readiness.
    fn is_ready(&self) -> bool;

    /// Objects cached, by kind, for metrics.
    fn cached(&self) -> Vec<(&'static str, usize)>;
}

/// The SecretProviderClass resource of the Secrets Store CSI driver.
fn secret_provider_class_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("secrets-store.csi.x-k8s.io", "v1", "SecretProviderClass"),
        "secretproviderclasses",
    )
}

/// Lookups against the Kubernetes API, with caches.
#[derive(Clone)]
pub struct KubeLookup {
    client: kube::Client,
    service_accounts: Arc<Cache<Account>>,
    namespaces: Arc<Cache<Option<Box<str>>>>,
    live_timeout: std::time::Duration,
}

/// Time a live read (a cache miss, a SecretProviderClass) may take unless [`KubeLookup::with_live_timeout`] says
/// otherwise.
pub const DEFAULT_LIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl KubeLookup {
    /// Starts the ServiceAccount and Namespace watches. The returned future drives them and must be spawned; it
    /// runs until the process ends (the watches retry with backoff on errors).
    pub fn start(client: kube::Client) -> (Self, BoxFuture<'static, ()>) {
        let lookup = KubeLookup {
            client: client.clone(),
            service_accounts: Arc::default(),
            namespaces: Arc::default(),
            live_timeout: DEFAULT_LIVE_TIMEOUT,
        };
        let (service_accounts, namespaces) = (lookup.service_accounts.clone(), lookup.namespaces.clone());
        let driver = async move {
            let accounts = cache::follow(
                Api::<PartialObjectMeta<K8sServiceAccount>>::all(client.clone()),
                &service_accounts,
                "ServiceAccount",
                Account::from_meta,
            );
            let namespaces_cache = &namespaces;
            let namespaces = cache::follow(
                Api::<PartialObjectMeta<Namespace>>::all(client),
                namespaces_cache,
                "Namespace",
                cache::use_label,
            );
            let synced = async {
                tokio::join!(service_accounts.synced(), namespaces_cache.synced());
                tracing::info!(
                    service_accounts = service_accounts.len(),
                    namespaces = namespaces_cache.len(),
                    "caches synced"
                );
            };
            tokio::join!(accounts, namespaces, synced);
        }
        .boxed();
        (lookup, driver)
    }

    /// Bounds each live read: an API server that answers slower fails the lookup with [`LookupError::TimedOut`],
    /// so that the admission still answers (500, naming the object) within the request's own timeout.
    pub fn with_live_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.live_timeout = timeout;
        self
    }

    /// `get_opt` of `name`, within the live timeout.
    async fn get_live<K>(&self, api: Api<K>, name: &str, what: impl Fn() -> String) -> Result<Option<K>, LookupError>
    where
        K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        match tokio::time::timeout(self.live_timeout, api.get_opt(name)).await {
            Ok(found) => found.map_err(|e| api_error(&what(), e)),
            Err(_) => Err(LookupError::TimedOut {
                what: what(),
                after: self.live_timeout,
            }),
        }
    }
}

fn api_error(what: &str, error: kube::Error) -> LookupError {
    LookupError::Api {
        what: what.to_owned(),
        source: error,
    }
}

impl Lookup for KubeLookup {
    fn service_account<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<ServiceAccount>, LookupError>> {
        async move {
            if let Some(cached) = self.service_accounts.get(namespace, name) {
                return Ok(Some(cached.to_service_account(namespace, name)));
            }
            // A miss: the account may be newer than the cache.
            tracing::debug!(namespace, name, "ServiceAccount not cached; reading it live");
            let api = Api::<PartialObjectMeta<K8sServiceAccount>>::namespaced(self.client.clone(), namespace);
            let found = self
                .get_live(api, name, || format!("ServiceAccount {namespace}/{name}"))
                .await?;
            Ok(found.map(|sa| Account::from_meta(&sa.metadata).to_service_account(namespace, name)))
        }
        .boxed()
    }

    fn namespace_labels<'a>(
        &'a self,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<Option<BTreeMap<String, String>>, LookupError>> {
        async move {
            if let Some(cached) = self.namespaces.get("", namespace) {
                return Ok(Some(use_label_map(cached)));
            }
            let api = Api::<PartialObjectMeta<Namespace>>::all(self.client.clone());
            let found = self
                .get_live(api, namespace, || format!("Namespace {namespace}"))
                .await?;
            Ok(found.map(|ns| use_label_map(cache::use_label(&ns.metadata))))
        }
        .boxed()
    }

    fn secret_provider_class<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Value>, LookupError>> {
        async move {
            let resource = secret_provider_class_resource();
            let api = Api::<DynamicObject>::namespaced_with(self.client.clone(), namespace, &resource);
            let found = self
                .get_live(api, name, || format!("SecretProviderClass {namespace}/{name}"))
                .await?;
            found
                .map(|object| {
                    serde_json::to_value(object).map_err(|source| LookupError::Decode {
                        what: format!("SecretProviderClass {namespace}/{name}"),
                        source,
                    })
                })
                .transpose()
        }
        .boxed()
    }

    fn is_ready(&self) -> bool {
        self.service_accounts.is_synced() && self.namespaces.is_synced()
    }

    fn cached(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("serviceaccounts", self.service_accounts.len()),
            ("namespaces", self.namespaces.len()),
        ]
    }
}

/// A fixed set of objects, for tests and tools that run without a cluster.
#[derive(Debug, Clone, Default)]
pub struct StaticLookup {
    /// ServiceAccounts.
    pub service_accounts: Vec<ServiceAccount>,
    /// Namespace name to labels.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// SecretProviderClass objects.
    pub secret_provider_classes: Vec<Value>,
}

impl Lookup for StaticLookup {
    fn service_account<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<ServiceAccount>, LookupError>> {
        let found = self
            .service_accounts
            .iter()
            .find(|sa| sa.namespace == namespace && sa.name == name)
            .cloned();
        futures::future::ready(Ok(found)).boxed()
    }

    fn namespace_labels<'a>(
        &'a self,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<Option<BTreeMap<String, String>>, LookupError>> {
        futures::future::ready(Ok(self.namespaces.get(namespace).cloned())).boxed()
    }

    fn secret_provider_class<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Value>, LookupError>> {
        let found = self
            .secret_provider_classes
            .iter()
            .find(|spc| {
                spc.pointer("/metadata/namespace").and_then(Value::as_str) == Some(namespace)
                    && spc.pointer("/metadata/name").and_then(Value::as_str) == Some(name)
            })
            .cloned();
        futures::future::ready(Ok(found)).boxed()
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn cached(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("serviceaccounts", self.service_accounts.len()),
            ("namespaces", self.namespaces.len()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::json;

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    fn mock_client() -> (kube::Client, Handle) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (kube::Client::new(service, "default"), handle)
    }

    fn sa_meta(namespace: &str, name: &str, annotations: Value) -> PartialObjectMeta<K8sServiceAccount> {
        serde_json::from_value(json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations,
                         "managedFields": [{"manager": "kubectl"}]},
        }))
        .unwrap()
    }

    fn lookup_with(client: kube::Client, cached: Vec<PartialObjectMeta<K8sServiceAccount>>) -> KubeLookup {
        let lookup = KubeLookup {
            client,
            service_accounts: Arc::default(),
            namespaces: Arc::default(),
            live_timeout: DEFAULT_LIVE_TIMEOUT,
        };
        for sa in cached {
            let meta = &sa.metadata;
            lookup.service_accounts.insert(
                meta.namespace.as_deref().unwrap(),
                meta.name.as_deref().unwrap(),
                Account::from_meta(meta),
            );
        }
        lookup
    }

    /// Answers exactly one request, checking its path.
    async fn answer_once(mut handle: Handle, path: &'static str, status: StatusCode, body: Value) {
        let (request, send) = handle.next_request().await.expect("a request");
        assert_eq!(request.uri().path(), path);
        send.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap(),
        );
    }

    #[tokio::test]
    async fn a_cached_account_is_answered_without_a_request() {
        let (client, mut handle) = mock_client();
        let lookup = lookup_with(
            client,
            vec![sa_meta(
                "apps",
                "web",
                json!({"azure.workload.identity/client-id": "abc", "kubectl.kubernetes.io/last-applied-configuration": "{}"}),
            )],
        );
        // The mock API server never answers: a request would make this time out.
        let sa = tokio::time::timeout(std::time::Duration::from_secs(5), lookup.service_account("apps", "web"))
            .await
            .expect("answered from the cache")
            .unwrap()
            .unwrap();
        assert_eq!(
            sa.annotations,
            BTreeMap::from([("azure.workload.identity/client-id".into(), "abc".into())])
        );
        let none = tokio::time::timeout(std::time::Duration::from_millis(50), handle.next_request()).await;
        assert!(none.is_err(), "no request reached the API server");
    }

    #[tokio::test]
    async fn a_miss_reads_the_account_live() {
        let (client, handle) = mock_client();
        let lookup = lookup_with(client, vec![]);
        let server = tokio::spawn(answer_once(
            handle,
            "/api/v1/namespaces/apps/serviceaccounts/new-sa",
            StatusCode::OK,
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                   "metadata": {"name": "new-sa", "namespace": "apps",
                                "annotations": {"azure.workload.identity/client-id": "def"}}}),
        ));
        let sa = lookup.service_account("apps", "new-sa").await.unwrap().unwrap();
        server.await.unwrap();
        assert_eq!(sa.name, "new-sa");
        assert_eq!(sa.annotations["azure.workload.identity/client-id"], "def");
    }

    #[tokio::test]
    async fn a_missing_account_is_none_and_an_api_failure_is_an_error() {
        let (client, handle) = mock_client();
        let lookup = lookup_with(client, vec![]);
        let server = tokio::spawn(answer_once(
            handle,
            "/api/v1/namespaces/apps/serviceaccounts/ghost",
            StatusCode::NOT_FOUND,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
                   "message": "serviceaccounts \"ghost\" not found"}),
        ));
        assert!(lookup.service_account("apps", "ghost").await.unwrap().is_none());
        server.await.unwrap();

        let (client, handle) = mock_client();
        let lookup = lookup_with(client, vec![]);
        let server = tokio::spawn(answer_once(
            handle,
            "/api/v1/namespaces/apps/serviceaccounts/web",
            StatusCode::FORBIDDEN,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
                   "message": "serviceaccounts \"web\" is forbidden"}),
        ));
        let err = lookup.service_account("apps", "web").await.unwrap_err().to_string();
        server.await.unwrap();
        assert!(
            err.contains("cannot read ServiceAccount apps/web") && err.contains("forbidden"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn secret_provider_classes_are_read_live_and_a_missing_one_is_none() {
        let (client, handle) = mock_client();
        let lookup = lookup_with(client, vec![]);
        let path = "/apis/secrets-store.csi.x-k8s.io/v1/namespaces/apps/secretproviderclasses/kv";
        let server = tokio::spawn(answer_once(
            handle,
            path,
            StatusCode::OK,
            json!({"apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
                   "metadata": {"name": "kv", "namespace": "apps"},
                   "spec": {"provider": "azure", "parameters": {"clientID": "x"}}}),
        ));
        let spc = lookup.secret_provider_class("apps", "kv").await.unwrap().unwrap();
        server.await.unwrap();
        assert_eq!(spc.pointer("/spec/parameters/clientID"), Some(&json!("x")));

        let (client, handle) = mock_client();
        let lookup = lookup_with(client, vec![]);
        let server = tokio::spawn(answer_once(
            handle,
            path,
            StatusCode::NOT_FOUND,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
                   "message": "the server could not find the requested resource"}),
        ));
        assert!(lookup.secret_provider_class("apps", "kv").await.unwrap().is_none());
        server.await.unwrap();
    }

    /// A fake API server that answers metadata lists and keeps watches open, streaming the events it is given:
    /// enough for the real reflectors of [`KubeLookup::start`].
    mod watching {
        use super::*;
        use bytes::Bytes;
        use futures::StreamExt;
        use http_body_util::StreamBody;
        use hyper::body::Frame;
        use std::convert::Infallible;
        use std::sync::Mutex;
        use std::sync::atomic::AtomicUsize;
        use std::sync::atomic::Ordering;
        use tokio::sync::mpsc;

        type Streamed = StreamBody<futures::stream::BoxStream<'static, Result<Frame<Bytes>, Infallible>>>;

        fn meta(kind_namespace: Option<&str>, name: &str, annotations: Value, labels: Value) -> Value {
            let mut metadata = json!({"name": name, "resourceVersion": "5", "annotations": annotations, "labels": labels,
                                      "managedFields": [{"manager": "kubectl", "operation": "Update"}]});
            if let Some(ns) = kind_namespace {
                metadata["namespace"] = json!(ns);
            }
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": metadata})
        }

        struct Fake {
            lists: BTreeMap<&'static str, Vec<Value>>,
            watches: Mutex<BTreeMap<&'static str, mpsc::UnboundedReceiver<Value>>>,
            gets: AtomicUsize,
        }

        fn respond(body: futures::stream::BoxStream<'static, Result<Frame<Bytes>, Infallible>>) -> Response<Streamed> {
            Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(StreamBody::new(body))
                .unwrap()
        }

        impl Fake {
            fn handle(&self, request: Request<Body>) -> Response<Streamed> {
                let path = request.uri().path().to_owned();
                let query = request.uri().query().unwrap_or_default().to_owned();
                let resource = if path.ends_with("/serviceaccounts") {
                    "serviceaccounts"
                } else if path.ends_with("/namespaces") {
                    "namespaces"
                } else {
                    // A live GET: the test expects none for cached objects.
                    self.gets.fetch_add(1, Ordering::SeqCst);
                    let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound"});
                    let bytes = Bytes::from(serde_json::to_vec(&status).unwrap());
                    let mut response = respond(futures::stream::once(async move { Ok(Frame::data(bytes)) }).boxed());
                    *response.status_mut() = http::StatusCode::NOT_FOUND;
                    return response;
                };
                if query.contains("watch=true") {
                    let receiver = self.watches.lock().unwrap().remove(resource);
                    let events = match receiver {
                        Some(receiver) => tokio_stream_from(receiver).boxed(),
                        // A second watch (after a reconnect): stays open with nothing to say.
                        None => futures::stream::pending().boxed(),
                    };
                    return respond(events);
                }
                let list = json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                                  "metadata": {"resourceVersion": "10"}, "items": self.lists[resource]});
                let bytes = Bytes::from(serde_json::to_vec(&list).unwrap());
                respond(futures::stream::once(async move { Ok(Frame::data(bytes)) }).boxed())
            }
        }

        /// Watch events as newline-delimited JSON frames, then an open stream.
        fn tokio_stream_from(
            mut receiver: mpsc::UnboundedReceiver<Value>,
        ) -> impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>> {
            futures::stream::poll_fn(move |cx| {
                receiver.poll_recv(cx).map(|event| {
                    event.map(|e| {
                        let mut line = serde_json::to_vec(&e).unwrap();
                        line.push(b'\n');
                        Ok(Frame::data(Bytes::from(line)))
                    })
                })
            })
        }

        #[tokio::test]
        async fn the_caches_sync_keep_contract_keys_and_follow_watch_events() {
            let (sa_events, sa_rx) = mpsc::unbounded_channel();
            let (_ns_events, ns_rx) = mpsc::unbounded_channel::<Value>();
            let fake = Arc::new(Fake {
                lists: BTreeMap::from([
                    (
                        "serviceaccounts",
                        vec![meta(
                            Some("apps"),
                            "web",
                            json!({"azure.workload.identity/client-id": "abc", "kubectl.kubernetes.io/last-applied-configuration": "{}"}),
                            json!({}),
                        )],
                    ),
                    (
                        "namespaces",
                        vec![meta(
                            None,
                            "apps",
                            json!({}),
                            json!({"azure.workload.identity/use": "true", "team": "a"}),
                        )],
                    ),
                ]),
                watches: Mutex::new(BTreeMap::from([("serviceaccounts", sa_rx), ("namespaces", ns_rx)])),
                gets: AtomicUsize::new(0),
            });
            let service = {
                let fake = fake.clone();
                tower::service_fn(move |request: Request<Body>| {
                    let response = fake.handle(request);
                    async move { Ok::<_, Infallible>(response) }
                })
            };
            let client = kube::Client::new(service, "default");
            let (lookup, driver) = KubeLookup::start(client);
            let driver = tokio::spawn(driver);
            for _ in 0..250 {
                if lookup.is_ready() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            assert!(lookup.is_ready(), "the caches never synced");
            assert_eq!(lookup.cached(), vec![("serviceaccounts", 1), ("namespaces", 1)]);

            let sa = lookup.service_account("apps", "web").await.unwrap().unwrap();
            assert_eq!(
                sa.annotations,
                BTreeMap::from([("azure.workload.identity/client-id".into(), "abc".into())])
            );
            let labels = lookup.namespace_labels("apps").await.unwrap().unwrap();
            assert_eq!(
                labels,
                BTreeMap::from([("azure.workload.identity/use".into(), "true".into())])
            );

            // An account created after the list arrives through the watch.
            sa_events
                .send(json!({"type": "ADDED", "object": meta(Some("apps"), "new", json!({"azure.workload.identity/client-id": "def"}), json!({}))}))
                .unwrap();
            let mut found = None;
            for _ in 0..250 {
                if lookup.cached()[0].1 == 2 {
                    found = lookup.service_account("apps", "new").await.unwrap();
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            assert_eq!(
                found.map(|sa| sa.annotations["azure.workload.identity/client-id"].clone()),
                Some("def".to_owned())
            );
            assert_eq!(fake.gets.load(Ordering::SeqCst), 0, "every answer came from the caches");

            // A deleted account leaves the cache; asking for it again reads it live (and finds nothing).
            sa_events
                .send(json!({"type": "DELETED", "object": meta(Some("apps"), "web", json!({}), json!({}))}))
                .unwrap();
            for _ in 0..250 {
                if lookup.cached()[0].1 == 1 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            assert_eq!(lookup.cached(), vec![("serviceaccounts", 1), ("namespaces", 1)]);
            assert!(lookup.service_account("apps", "web").await.unwrap().is_none());
            assert_eq!(fake.gets.load(Ordering::SeqCst), 1, "the miss was read live");
            driver.abort();
        }
    }
}
