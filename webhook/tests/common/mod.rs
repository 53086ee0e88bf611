//! Shared by the server tests: a test PKI made with rcgen, certificate files in a kubelet Secret-volume layout,
//! a real HTTPS client (rustls + hyper), and a webhook started on port 0.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use std::collections::BTreeMap;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub mod envtest;
pub mod fake_api;
pub mod process;

pub use process::eventually;

use futures::FutureExt;
use futures::future::BoxFuture;
use wi_webhook::lookup::{Lookup, LookupError, StaticLookup};
use wi_webhook::mutate::ServiceAccount;
use wi_webhook::server::{ServeConfig, Webhook};

pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(path)
}

/// A CA and the leaf certificates it issues for 127.0.0.1.
pub struct Pki {
    ca_key: rcgen::KeyPair,
    ca: rcgen::Certificate,
    ca_params: rcgen::CertificateParams,
}

/// A leaf certificate and its key, PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl Pki {
    pub fn new() -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "wi-webhook test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        Pki { ca_key, ca, ca_params }
    }

    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.der().clone()
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    pub fn leaf(&self) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "wi-webhook.wi-system.svc".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let issuer = rcgen::Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

static SWAPS: AtomicU64 = AtomicU64::new(0);

/// Writes `files` into `dir` the way kubelet updates a Secret volume: a new timestamped directory, a `..data_tmp`
/// symlink renamed over `..data`, user-visible links `NAME -> ..data/NAME`, then the old directory removed.
pub fn kubelet_swap(dir: &Path, files: &[(&str, &[u8])]) {
    let n = SWAPS.fetch_add(1, Ordering::Relaxed);
    let stamp = format!("..2026_11_28_12_00_00.{}{n}", std::process::id());
    let target = dir.join(&stamp);
    std::fs::create_dir(&target).unwrap();
    for (name, content) in files {
        std::fs::write(target.join(name), content).unwrap();
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for (name, _) in files {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link).unwrap();
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
}

pub fn install_leaf(dir: &Path, leaf: &Leaf) {
    kubelet_swap(
        dir,
        &[
            ("tls.crt", leaf.cert_pem.as_bytes()),
            ("tls.key", leaf.key_pem.as_bytes()),
        ],
    );
}

/// The ServiceAccounts of the captured requests.
pub fn fixture_lookup() -> StaticLookup {
    let service_accounts = ["workload-sa", "default"]
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(fixture(&format!("admission/serviceaccounts/{name}.json"))).unwrap();
            ServiceAccount::from_object(&serde_json::from_str(&text).unwrap()).unwrap()
        })
        .collect();
    StaticLookup {
        service_accounts,
        ..StaticLookup::default()
    }
}

/// Server arguments as a user would pass them, on port 0.
pub fn serve_args(cert_dir: &Path, extra: &[&str]) -> ServeConfig {
    #[derive(Parser)]
    #[command(args_override_self = true)]
    struct Wrapper {
        #[command(flatten)]
        args: ServeConfig,
    }
    let cert = cert_dir.join("tls.crt").display().to_string();
    let key = cert_dir.join("tls.key").display().to_string();
    let mut argv = vec![
        "wi-webhook",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tenant-id",
        TENANT,
        "--shutdown-delay",
        "0s",
        "--shutdown-grace",
        "5s",
    ];
    argv.extend_from_slice(extra);
    Wrapper::try_parse_from(argv).unwrap().args
}

/// A running webhook.
pub struct Running {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap()
    }
}

pub async fn start(args: ServeConfig, lookup: Arc<dyn Lookup>) -> Running {
    let webhook = Webhook::bind(args, lookup, provider()).await.unwrap();
    let addr = webhook.admission_addr().unwrap();
    let admin = webhook.admin_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(webhook.run(async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        admin,
        stop: Some(stop),
        task,
    }
}

/// What one HTTPS request got.
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
    pub leaf: CertificateDer<'static>,
    pub alpn: Option<Vec<u8>>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// A TLS connection to `addr`, trusting only `ca`, offering `alpn`.
pub async fn tls_connect(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    alpn: &[u8],
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).map_err(|e| e.to_string())?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))
}

/// One request on a new TLS connection, trusting only `ca`.
pub async fn https(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
    http2: bool,
) -> Result<Reply, String> {
    let tls = tls_connect(addr, ca, if http2 { b"h2" } else { b"http/1.1" }).await?;
    let (_, session) = tls.get_ref();
    let leaf = session.peer_certificates().ok_or("no peer certificate")?[0].clone();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let mut request = Request::builder().method(method).uri(format!("https://{addr}{path}"));
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    let request = request.body(Full::new(Bytes::from(body))).map_err(|e| e.to_string())?;
    let response = if http2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
        tokio::spawn(conn);
        sender.send_request(request).await
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("http1 handshake: {e}"))?;
        tokio::spawn(conn);
        sender.send_request(request).await
    }
    .map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(Reply {
        status,
        body,
        leaf,
        alpn,
    })
}

/// POSTs an AdmissionReview over HTTP/1.1.
pub async fn admit(addr: SocketAddr, ca: &CertificateDer<'static>, body: Vec<u8>) -> Result<Reply, String> {
    https(
        addr,
        ca,
        "POST",
        "/mutate-v1-pod",
        Some("application/json"),
        body,
        false,
    )
    .await
}

/// A plain-HTTP GET on the admin port.
pub async fn admin_get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
    process::http_get(addr, path)
        .await
        .unwrap_or_else(|| panic!("no answer from http://{addr}{path}"))
}

/// Another lookup's accounts, answered after a delay (a request in flight, a slow API server).
pub struct SlowLookup(pub StaticLookup, pub Duration);

impl Lookup for SlowLookup {
    fn service_account<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<ServiceAccount>, LookupError>> {
        async move {
            tokio::time::sleep(self.1).await;
            self.0.service_account(namespace, name).await
        }
        .boxed()
    }
    fn namespace_labels<'a>(
        &'a self,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<Option<BTreeMap<String, String>>, LookupError>> {
        self.0.namespace_labels(namespace)
    }
    fn secret_provider_class<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Value>, LookupError>> {
        self.0.secret_provider_class(namespace, name)
    }
    fn is_ready(&self) -> bool {
        true
    }
    fn cached(&self) -> Vec<(&'static str, usize)> {
        self.0.cached()
    }
}

/// The API server is unreachable: every ServiceAccount read fails; the namespace `wi-fixtures` (cached) is labelled.
pub struct UnreachableServiceAccounts;

impl Lookup for UnreachableServiceAccounts {
    fn service_account<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Option<ServiceAccount>, LookupError>> {
        futures::future::ready(Err(LookupError::new("cannot read ServiceAccount: connection refused"))).boxed()
    }
    fn namespace_labels<'a>(
        &'a self,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Option<BTreeMap<String, String>>, LookupError>> {
        let labels = [("azure.workload.identity/use".to_owned(), "true".to_owned())].into();
        futures::future::ready(Ok(Some(labels))).boxed()
    }
    fn secret_provider_class<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Option<Value>, LookupError>> {
        futures::future::ready(Ok(None)).boxed()
    }
    fn is_ready(&self) -> bool {
        true
    }
    fn cached(&self) -> Vec<(&'static str, usize)> {
        Vec::new()
    }
}
