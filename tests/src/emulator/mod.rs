//! The emulator: an OIDC issuer standing in for a cluster's service account issuer, Entra ID's token endpoint
//! for workload identity federation, and Key Vault vaults (each on its own port), over HTTPS on 127.0.0.1 with a CA
//! of its own.

//!
//! A module per concern: [`entra`] (the token endpoint), [`issuer`] (discovery and JWKS), [`vault`] (what every
//! data-plane route shares: the bearer challenge, authorization, versions, listings), [`secrets`], [`keys`] and
//! [`certificates`] (each object kind's bundles and routes), [`admin`] (what tests do to the emulated world) and
//! [`http_admin`] (the same over HTTP, for `wi-emulator`). This file holds the world they share and the servers.

mod admin;
mod certificates;
mod entra;
mod http_admin;
mod issuer;
mod keys;
mod secrets;
mod vault;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::jwt::Signer;

/// The audience Entra ID requires in a federated token.
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// PEM as Go's `pem.EncodeToMemory` writes it: 64 columns, `\n`.
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The public JWK of a P-256 key.
fn ec_jwk(pair: &rcgen::KeyPair) -> anyhow::Result<Value> {
    let raw = pair.public_key_raw();
    anyhow::ensure!(raw.len() == 65 && raw[0] == 4, "not an uncompressed P-256 point");
    let b64url = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    Ok(json!({"kty": "EC", "crv": "P-256", "key_ops": ["sign", "verify"],
              "x": b64url(&raw[1..33]), "y": b64url(&raw[33..])}))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// A managed identity or app registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Display name.
    pub name: String,
    /// Client id (what `AZURE_CLIENT_ID` holds).
    pub client_id: String,
    /// Object (principal) id: what vault access is granted to.
    pub principal_id: String,
    /// Tenant.
    pub tenant_id: String,
}

/// A federated identity credential: which external tokens may act for an identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederatedCredential {
    /// Issuer URL, exactly as in the token's `iss`.
    pub issuer: String,
    /// Subject, e.g. `system:serviceaccount:default:my-app-sa`.
    pub subject: String,
    /// Audience, normally `api://AzureADTokenExchange`.
    pub audience: String,
}

/// Something to go wrong on purpose.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fault {
    /// Answer with this status instead (429, 500, 503...).
    pub status: Option<u16>,
    /// With 429 or 503: the `Retry-After` header, seconds.
    pub retry_after: Option<u64>,
    /// Wait this long before answering.
    pub latency: Duration,
    /// Close the connection without an answer.
    pub drop_connection: bool,
    /// How many requests it applies to; `None` for all until cleared.
    pub times: Option<u32>,
}

/// Where a fault applies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultTarget {
    /// The Entra ID token endpoint.
    Token,
    /// Every data-plane request of one vault.
    Vault(String),
}

#[derive(Debug, Clone)]
struct SecretVersion {
    version: String,
    value: String,
    content_type: Option<String>,
    enabled: bool,
    created: u64,
    managed: bool,
    kid: Option<String>,
}

/// One version of a key: its public JWK (the emulator keeps no private key material for keys).
#[derive(Debug, Clone)]
struct KeyVersion {
    version: String,
    jwk: Value,
    enabled: bool,
    created: u64,
    managed: bool,
}

/// One version of a certificate: its DER.
#[derive(Debug, Clone)]
struct CertificateVersion {
    version: String,
    cer: Vec<u8>,
    enabled: bool,
    created: u64,
}

/// What the routes of every object kind need of a version.
trait Versioned: Clone {
    fn version(&self) -> &str;
    fn enabled(&self) -> bool;
}

impl Versioned for SecretVersion {
    fn version(&self) -> &str {
        &self.version
    }
    fn enabled(&self) -> bool {
        self.enabled
    }
}

impl Versioned for KeyVersion {
    fn version(&self) -> &str {
        &self.version
    }
    fn enabled(&self) -> bool {
        self.enabled
    }
}

impl Versioned for CertificateVersion {
    fn version(&self) -> &str {
        &self.version
    }
    fn enabled(&self) -> bool {
        self.enabled
    }
}

/// The kind of key [`Admin::create_key`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA 2048.
    Rsa2048,
    /// EC on P-256.
    EcP256,
}

/// How a certificate's secret is kept ([`Admin::create_certificate`]), as the certificate policy's content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateFormat {
    /// `application/x-pkcs12`: a base64 PFX with the empty password.
    Pkcs12,
    /// `application/x-pem-file`: the PKCS#8 key and the chain, PEM.
    Pem,
}

/// A key the emulator made, for tests to compare with what a client writes.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    /// Version id.
    pub version: String,
    /// The public key as PEM `PUBLIC KEY`.
    pub public_key_pem: String,
}

/// A certificate the emulator made: its key, secret and certificate share the name and the version, as in Key Vault.
#[derive(Debug, Clone)]
pub struct CreatedCertificate {
    /// Version id.
    pub version: String,
    /// The private key, PEM PKCS#8.
    pub key_pem: String,
    /// The leaf certificate, PEM.
    pub leaf_pem: String,
    /// The issuing CA's certificate, PEM.
    pub ca_pem: String,
    /// The PFX kept in the secret (for [`CertificateFormat::Pkcs12`]).
    pub pfx: Vec<u8>,
}

#[derive(Debug, Default)]
struct Vault {
    tenant_id: String,
    url: String,
    /// principal id -> permissions ("get", "list"), for every object kind.
    access: BTreeMap<String, Vec<String>>,
    secrets: BTreeMap<String, Vec<SecretVersion>>,
    keys: BTreeMap<String, Vec<KeyVersion>>,
    certificates: BTreeMap<String, Vec<CertificateVersion>>,
}

#[derive(Debug, Default)]
struct World {
    identities: BTreeMap<String, Identity>,
    federated: BTreeMap<String, Vec<FederatedCredential>>,
    trusted_issuers: BTreeMap<String, Value>,
    vaults: BTreeMap<String, Vault>,
    faults: BTreeMap<FaultTarget, Fault>,
    counters: BTreeMap<String, u64>,
}

struct Inner {
    issuer: Signer,
    entra: Signer,
    login_url: String,
    issuer_url: String,
    acceptor: TlsAcceptor,
    state: Mutex<World>,
    /// The vaults' servers, stopped with the emulator.
    vault_tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, World> {
        // A panic while holding the lock is a bug in a test; the state stays usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn count(&self, key: String) {
        *self.state().counters.entry(key).or_default() += 1;
    }

    /// Takes one use of the fault for `target`, if any.
    fn fault(&self, target: &FaultTarget) -> Option<Fault> {
        let mut state = self.state();
        let fault = state.faults.get_mut(target)?;
        let taken = fault.clone();
        let counter = match target {
            FaultTarget::Token => "token faulted".to_owned(),
            FaultTarget::Vault(vault) => format!("{vault} faulted"),
        };
        *state.counters.entry(counter).or_default() += 1;
        let Some(fault) = state.faults.get_mut(target) else {
            return Some(taken);
        };
        if let Some(times) = fault.times.as_mut() {
            *times = times.saturating_sub(1);
            if *times == 0 {
                state.faults.remove(target);
            }
        }
        Some(taken)
    }
}

/// A running emulator. Dropping it stops its servers.
pub struct Emulator {
    admin: Admin,
    ca_pem: String,
    ca_file: PathBuf,
    _dir: tempfile_dir::Dir,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

mod tempfile_dir {
    /// A directory removed when dropped (the CA file lives there).
    pub struct Dir(pub std::path::PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Ok(tasks) = self.admin.inner.vault_tasks.lock() {
            for task in tasks.iter() {
                task.abort();
            }
        }
    }
}

/// The emulator's CA and the serving certificate it signed (127.0.0.1, localhost, *.vault.localhost).
fn pki() -> anyhow::Result<(String, rustls::ServerConfig)> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "wi-emulator CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![
        "localhost".to_owned(),
        "vault.localhost".to_owned(),
        "*.vault.localhost".to_owned(),
    ])?;
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress("127.0.0.1".parse()?));
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let leaf = params.signed_by(&key, &issuer)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).map_err(anyhow::Error::msg)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone(), ca.der().clone()], key_der)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((ca.pem(), config))
}

/// Serves `router` over TLS on `listener` until aborted.
fn serve(listener: TcpListener, acceptor: TlsAcceptor, router: Router) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let (acceptor, router) = (acceptor.clone(), router.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), TowerToHyperService::new(router))
                        .await;
                }
            });
        }
    })
}

impl Emulator {
    /// Starts the login and issuer server on 127.0.0.1 (a free port) and writes the CA file.
    pub async fn start() -> anyhow::Result<Self> {
        let (ca_pem, tls) = pki()?;
        let dir = std::env::temp_dir().join(format!("wi-emulator-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        let ca_file = dir.join("ca.crt");
        std::fs::write(&ca_file, &ca_pem)?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let login_url = format!("https://{addr}/");
        let inner = Arc::new(Inner {
            issuer: Signer::generate()?,
            entra: Signer::generate()?,
            issuer_url: format!("https://{addr}/issuer"),
            login_url,
            acceptor: TlsAcceptor::from(Arc::new(tls)),
            state: Mutex::new(World::default()),
            vault_tasks: Mutex::new(Vec::new()),
        });
        let router = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(entra::token))
            .route("/issuer/.well-known/openid-configuration", get(issuer::discovery))
            .route("/issuer/openid/v1/jwks", get(issuer::jwks))
            .with_state(inner.clone())
            .nest("/admin", http_admin::router(Admin { inner: inner.clone() }));
        let task = serve(listener, inner.acceptor.clone(), router);
        Ok(Emulator {
            admin: Admin { inner },
            ca_pem,
            ca_file,
            _dir: tempfile_dir::Dir(dir),
            tasks: vec![task],
        })
    }

    /// The CA certificate clients must trust, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A file holding [`Emulator::ca_pem`].
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }
}

/// What tests and the admin API do to the emulated world: identities, federation, vaults, secrets, faults. An
/// [`Emulator`] derefs to its `Admin`; clones act on the same emulator.
#[derive(Clone)]
pub struct Admin {
    inner: Arc<Inner>,
}

impl std::ops::Deref for Emulator {
    type Target = Admin;

    fn deref(&self) -> &Admin {
        &self.admin
    }
}

/// Waits and answers as `fault` says (nothing when there is none); shared by Entra ID and the vaults.
async fn apply_fault(fault: Option<Fault>) -> Option<Response> {
    let fault = fault?;
    if !fault.latency.is_zero() {
        tokio::time::sleep(fault.latency).await;
    }
    if fault.drop_connection {
        // A response that cannot be sent: hyper closes the connection.
        return Some(
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_LENGTH, "100")
                .body(axum::body::Body::from("truncated"))
                .unwrap_or_default(),
        );
    }
    let status = StatusCode::from_u16(fault.status?).ok()?;
    let mut response = (
        status,
        axum::Json(json!({"error": {"code": if status == StatusCode::TOO_MANY_REQUESTS { "Throttled" } else { "ServiceUnavailable" },
                                    "message": format!("fault injected by the emulator: {status}")}})),
    )
        .into_response();
    if let Some(seconds) = fault.retry_after
        && let Ok(value) = seconds.to_string().parse()
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    Some(response)
}
