//! The emulator: an OIDC issuer standing in for a cluster's service account issuer, Entra ID's token endpoint
//! for workload identity federation, and Key Vault vaults (each on its own port), over HTTPS on 127.0.0.1 with a CA
//! of its own.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Form, Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::jwt::{self, Signer};

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
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .route("/issuer/.well-known/openid-configuration", get(discovery))
            .route("/issuer/openid/v1/jwks", get(issuer_jwks))
            .with_state(inner.clone())
            .nest("/admin", crate::admin::router(Admin { inner: inner.clone() }));
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

impl Admin {
    /// The Entra ID authority host (`AZURE_AUTHORITY_HOST`), ending in `/`.
    pub fn authority_host(&self) -> &str {
        &self.inner.login_url
    }

    /// The service account issuer URL (the `iss` of the tokens [`Admin::service_account_token`] mints).
    pub fn issuer_url(&self) -> &str {
        &self.inner.issuer_url
    }

    /// Registers an identity in `tenant_id`; returns its client and principal ids.
    pub fn add_identity(&self, name: &str, tenant_id: &str) -> Identity {
        let identity = Identity {
            name: name.to_owned(),
            client_id: uuid::Uuid::new_v4().to_string(),
            principal_id: uuid::Uuid::new_v4().to_string(),
            tenant_id: tenant_id.to_owned(),
        };
        self.add_identity_with_ids(identity.clone());
        identity
    }

    /// Registers an identity with given ids (to match manifests that already name them).
    pub fn add_identity_with_ids(&self, identity: Identity) {
        self.inner
            .state()
            .identities
            .insert(identity.client_id.clone(), identity);
    }

    /// The usual setup in one call: an identity in `tenant_id` whose federated credential trusts the emulator's own
    /// issuer for `system:serviceaccount:NAMESPACE:SERVICE_ACCOUNT`, audience [`TOKEN_EXCHANGE_AUDIENCE`].
    pub fn add_workload_identity(
        &self,
        name: &str,
        tenant_id: &str,
        namespace: &str,
        service_account: &str,
    ) -> Identity {
        let identity = self.add_identity(name, tenant_id);
        self.add_federated_credential(
            &identity.client_id,
            FederatedCredential {
                issuer: self.inner.issuer_url.clone(),
                subject: format!("system:serviceaccount:{namespace}:{service_account}"),
                audience: TOKEN_EXCHANGE_AUDIENCE.to_owned(),
            },
        );
        identity
    }

    /// What a mutated pod of `identity` sees: writes a projected service account token for
    /// `system:serviceaccount:NAMESPACE:SERVICE_ACCOUNT` (1 hour) to `token_file`, and returns the env the webhook
    /// injects (`AZURE_CLIENT_ID`, `AZURE_TENANT_ID`, `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_AUTHORITY_HOST`).
    pub fn workload_env(
        &self,
        identity: &Identity,
        namespace: &str,
        service_account: &str,
        token_file: &Path,
    ) -> anyhow::Result<Vec<(&'static str, String)>> {
        let token = self.service_account_token(namespace, service_account, Duration::from_secs(3600))?;
        std::fs::write(token_file, token)?;
        Ok(vec![
            ("AZURE_CLIENT_ID", identity.client_id.clone()),
            ("AZURE_TENANT_ID", identity.tenant_id.clone()),
            ("AZURE_FEDERATED_TOKEN_FILE", token_file.display().to_string()),
            ("AZURE_AUTHORITY_HOST", self.inner.login_url.clone()),
        ])
    }

    /// Adds a federated identity credential to the identity `client_id`.
    pub fn add_federated_credential(&self, client_id: &str, credential: FederatedCredential) {
        self.inner
            .state()
            .federated
            .entry(client_id.to_owned())
            .or_default()
            .push(credential);
    }

    /// Trusts tokens of another issuer (e.g. a real kube-apiserver's), given its JWKS document.
    pub fn trust_issuer(&self, issuer: &str, jwks: Value) {
        self.inner.state().trusted_issuers.insert(issuer.to_owned(), jwks);
    }

    /// A service account token of the emulated cluster, as kubelet projects it: RS256, `iss` the emulator's
    /// issuer, `sub` `system:serviceaccount:NAMESPACE:NAME`, audience [`TOKEN_EXCHANGE_AUDIENCE`].
    pub fn service_account_token(&self, namespace: &str, name: &str, lifetime: Duration) -> anyhow::Result<String> {
        self.service_account_token_for(namespace, name, TOKEN_EXCHANGE_AUDIENCE, now(), lifetime)
    }

    /// A service account token with any audience and issue time (for tokens outside their time window).
    pub fn service_account_token_for(
        &self,
        namespace: &str,
        name: &str,
        audience: &str,
        issued_at: u64,
        lifetime: Duration,
    ) -> anyhow::Result<String> {
        self.inner.issuer.sign(&json!({
            "iss": self.inner.issuer_url,
            "sub": format!("system:serviceaccount:{namespace}:{name}"),
            "aud": [audience],
            "iat": issued_at,
            "nbf": issued_at,
            "exp": issued_at + lifetime.as_secs(),
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": uuid::Uuid::new_v4().to_string()}},
        }))
    }

    /// Creates a vault on its own port; returns its URL (`https://127.0.0.1:PORT`).
    pub async fn create_vault(&self, name: &str, tenant_id: &str) -> anyhow::Result<String> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let url = format!("https://{addr}");
        self.inner.state().vaults.insert(
            name.to_owned(),
            Vault {
                tenant_id: tenant_id.to_owned(),
                url: url.clone(),
                ..Vault::default()
            },
        );
        let router = Router::new()
            .route("/secrets", get(list_secrets))
            .route("/secrets/{name}", get(get_latest))
            .route("/secrets/{name}/", get(get_latest))
            .route("/secrets/{name}/versions", get(list_versions))
            .route("/secrets/{name}/{version}", get(get_version))
            .route("/keys/{name}", get(get_object_latest::<KeyVersion>))
            .route("/keys/{name}/", get(get_object_latest::<KeyVersion>))
            .route("/keys/{name}/versions", get(list_object_versions::<KeyVersion>))
            .route("/keys/{name}/{version}", get(get_object_version::<KeyVersion>))
            .route("/certificates/{name}", get(get_object_latest::<CertificateVersion>))
            .route("/certificates/{name}/", get(get_object_latest::<CertificateVersion>))
            .route(
                "/certificates/{name}/versions",
                get(list_object_versions::<CertificateVersion>),
            )
            .route(
                "/certificates/{name}/{version}",
                get(get_object_version::<CertificateVersion>),
            )
            .with_state((self.inner.clone(), name.to_owned()));
        let task = serve(listener, self.inner.acceptor.clone(), router);
        if let Ok(mut tasks) = self.inner.vault_tasks.lock() {
            tasks.push(task);
        }
        Ok(url)
    }

    /// Lets `principal_id` use `permissions` (`get`, `list`) on the secrets of `vault`.
    pub fn grant(&self, vault: &str, principal_id: &str, permissions: &[&str]) {
        if let Some(v) = self.inner.state().vaults.get_mut(vault) {
            v.access.insert(
                principal_id.to_owned(),
                permissions.iter().map(|p| (*p).to_owned()).collect(),
            );
        }
    }

    /// Sets a new version of a secret; returns the version id.
    pub fn set_secret(
        &self,
        vault: &str,
        name: &str,
        value: &str,
        content_type: Option<&str>,
    ) -> anyhow::Result<String> {
        self.set_secret_version(vault, name, value, content_type, false)
    }

    /// Sets a new version of a certificate-backed secret (`managed`, with a `kid`), as Key Vault keeps a
    /// certificate's key and chain: `application/x-pem-file` or `application/x-pkcs12` (base64 PFX).
    pub fn set_certificate_secret(
        &self,
        vault: &str,
        name: &str,
        value: &str,
        content_type: &str,
    ) -> anyhow::Result<String> {
        self.set_secret_version(vault, name, value, Some(content_type), true)
    }

    fn set_secret_version(
        &self,
        vault: &str,
        name: &str,
        value: &str,
        content_type: Option<&str>,
        managed: bool,
    ) -> anyhow::Result<String> {
        let mut state = self.inner.state();
        let v = state
            .vaults
            .get_mut(vault)
            .ok_or_else(|| anyhow::anyhow!("no vault {vault}"))?;
        let version = uuid::Uuid::new_v4().simple().to_string();
        let kid = managed.then(|| format!("{}/keys/{name}/{version}", v.url));
        v.secrets.entry(name.to_owned()).or_default().push(SecretVersion {
            version: version.clone(),
            value: value.to_owned(),
            content_type: content_type.map(str::to_owned),
            enabled: true,
            created: now(),
            managed,
            kid,
        });
        Ok(version)
    }

    /// Creates a new version of a key (Key Vault generates it; only the public part is kept here).
    pub fn create_key(&self, vault: &str, name: &str, kind: KeyKind) -> anyhow::Result<CreatedKey> {
        use aws_lc_rs::encoding::AsDer;
        use aws_lc_rs::signature::KeyPair as _;
        let b64url = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let failed = |what: &str| anyhow::anyhow!("{what} key generation failed");
        let (jwk, spki) = match kind {
            KeyKind::Rsa2048 => {
                let pair =
                    aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).map_err(|_| failed("RSA"))?;
                let public = pair.public_key();
                let jwk = json!({
                    "kty": "RSA",
                    "key_ops": ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"],
                    "n": b64url(public.modulus().big_endian_without_leading_zero()),
                    "e": b64url(public.exponent().big_endian_without_leading_zero()),
                });
                let spki = public.as_der().map_err(|_| failed("RSA"))?.as_ref().to_vec();
                (jwk, spki)
            }
            KeyKind::EcP256 => {
                let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
                (ec_jwk(&pair)?, rcgen::PublicKeyData::subject_public_key_info(&pair))
            }
        };
        let version = self.add_key_version(vault, name, jwk, false, None)?;
        Ok(CreatedKey {
            version,
            public_key_pem: pem("PUBLIC KEY", &spki),
        })
    }

    fn add_key_version(
        &self,
        vault: &str,
        name: &str,
        mut jwk: Value,
        managed: bool,
        version: Option<String>,
    ) -> anyhow::Result<String> {
        let mut state = self.inner.state();
        let v = state
            .vaults
            .get_mut(vault)
            .ok_or_else(|| anyhow::anyhow!("no vault {vault}"))?;
        let version = version.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        jwk["kid"] = json!(format!("{}/keys/{name}/{version}", v.url));
        v.keys.entry(name.to_owned()).or_default().push(KeyVersion {
            version: version.clone(),
            jwk,
            enabled: true,
            created: now(),
            managed,
        });
        Ok(version)
    }

    /// Creates a new version of a certificate, issued by a CA made for the purpose: like Key Vault, a key, a
    /// secret (key and chain, as PKCS#12 or PEM) and a certificate of the same name and version.
    pub fn create_certificate(
        &self,
        vault: &str,
        name: &str,
        subject: &str,
        format: CertificateFormat,
    ) -> anyhow::Result<CreatedCertificate> {
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} issuing CA"));
        let ca = ca_params.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate()?;
        let mut leaf_params = rcgen::CertificateParams::new(vec![subject.to_owned()])?;
        leaf_params.distinguished_name.push(rcgen::DnType::CommonName, subject);
        let leaf = leaf_params.signed_by(&leaf_key, &issuer)?;
        let key_der = leaf_key.serialize_der();
        let mut store = p12_keystore::KeyStore::new();
        let chain = p12_keystore::PrivateKeyChain::new(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, leaf.der())
                .as_ref()
                .to_vec(),
            p12_keystore::PrivateKey::from_der(&key_der)?,
            [
                p12_keystore::Certificate::from_der(leaf.der())?,
                p12_keystore::Certificate::from_der(ca.der())?,
            ],
        );
        store.add_entry(name, p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
        let pfx = store.writer("").write()?;
        let created = CreatedCertificate {
            version: uuid::Uuid::new_v4().simple().to_string(),
            key_pem: pem("PRIVATE KEY", &key_der),
            leaf_pem: pem("CERTIFICATE", leaf.der()),
            ca_pem: pem("CERTIFICATE", ca.der()),
            pfx,
        };
        let (value, content_type) = match format {
            CertificateFormat::Pkcs12 => (
                base64::engine::general_purpose::STANDARD.encode(&created.pfx),
                "application/x-pkcs12",
            ),
            CertificateFormat::Pem => (
                format!("{}{}{}", created.key_pem, created.leaf_pem, created.ca_pem),
                "application/x-pem-file",
            ),
        };
        self.add_key_version(vault, name, ec_jwk(&leaf_key)?, true, Some(created.version.clone()))?;
        let mut state = self.inner.state();
        let v = state
            .vaults
            .get_mut(vault)
            .ok_or_else(|| anyhow::anyhow!("no vault {vault}"))?;
        let created_at = now();
        v.secrets.entry(name.to_owned()).or_default().push(SecretVersion {
            version: created.version.clone(),
            value,
            content_type: Some(content_type.to_owned()),
            enabled: true,
            created: created_at,
            managed: true,
            kid: Some(format!("{}/keys/{name}/{}", v.url, created.version)),
        });
        v.certificates
            .entry(name.to_owned())
            .or_default()
            .push(CertificateVersion {
                version: created.version.clone(),
                cer: leaf.der().to_vec(),
                enabled: true,
                created: created_at,
            });
        Ok(created)
    }

    /// Enables or disables every version of a secret.
    pub fn set_enabled(&self, vault: &str, name: &str, enabled: bool) {
        if let Some(versions) = self
            .inner
            .state()
            .vaults
            .get_mut(vault)
            .and_then(|v| v.secrets.get_mut(name))
        {
            for version in versions {
                version.enabled = enabled;
            }
        }
    }

    /// Makes requests to `target` fail or slow down; `None` clears it.
    pub fn set_fault(&self, target: FaultTarget, fault: Option<Fault>) {
        let mut state = self.inner.state();
        match fault {
            Some(fault) => state.faults.insert(target, fault),
            None => state.faults.remove(&target),
        };
    }

    /// Requests received, by route: `token`, `VAULT get-secret`, `VAULT list-secrets`, `VAULT list-versions`,
    /// `VAULT get-key`, `VAULT list-key-versions`, `VAULT get-certificate`, `VAULT list-certificate-versions`,
    /// `VAULT challenge`; and the requests a fault answered: `token faulted`, `VAULT faulted`.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        self.inner.state().counters.clone()
    }
}

/// An error body as Entra ID sends it.
fn entra_error(status: StatusCode, error: &str, code: u32, description: String) -> Response {
    let trace = uuid::Uuid::new_v4().to_string();
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {trace} Timestamp: {}", now()),
        "error_codes": [code],
        "timestamp": now().to_string(),
        "trace_id": trace,
        "correlation_id": trace,
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    });
    (status, axum::Json(body)).into_response()
}

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

#[derive(Debug, Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_assertion_type: Option<String>,
    client_assertion: Option<String>,
    scope: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    #[serde(default)]
    aud: Audience,
}

#[derive(Debug, Deserialize, Default)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
    #[default]
    None,
}

impl Audience {
    fn contains(&self, audience: &str) -> bool {
        match self {
            Audience::One(a) => a == audience,
            Audience::Many(all) => all.iter().any(|a| a == audience),
            Audience::None => false,
        }
    }
}

/// `POST /{tenant}/oauth2/v2.0/token`: client credentials with a federated client assertion.
async fn token(
    State(inner): State<Arc<Inner>>,
    UrlPath(tenant): UrlPath<String>,
    Form(form): Form<TokenForm>,
) -> Response {
    inner.count("token".to_owned());
    if let Some(response) = apply_fault(inner.fault(&FaultTarget::Token)).await {
        return response;
    }
    if form.grant_type.as_deref() != Some("client_credentials") {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.".to_owned(),
        );
    }
    let client_id = form.client_id.unwrap_or_default();
    let identity = inner.state().identities.get(&client_id).cloned();
    let Some(identity) = identity.filter(|i| i.tenant_id == tenant) else {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'."),
        );
    };
    if form.client_assertion_type.as_deref() != Some(ASSERTION_TYPE) {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_assertion_type'.".to_owned(),
        );
    }
    let assertion = form.client_assertion.unwrap_or_default();
    // The issuer is read before the signature can be checked: its JWKS decides.
    let unverified_iss = jsonwebtoken::dangerous::insecure_decode::<Value>(&assertion)
        .ok()
        .and_then(|d| d.claims["iss"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let jwks = if unverified_iss == inner.issuer_url {
        Some(inner.issuer.jwks())
    } else {
        inner.state().trusted_issuers.get(&unverified_iss).cloned()
    };
    let Some(jwks) = jwks else {
        return entra_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700211,
            format!("No matching federated identity record found for presented assertion issuer '{unverified_iss}'."),
        );
    };
    let claims: AssertionClaims = match jwt::verify(&assertion, &jwks) {
        Ok(claims) => claims,
        Err(error) if error.0.contains("Expired") || error.0.contains("Immature") => {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_client",
                700024,
                "Client assertion is not within its valid time range.".to_owned(),
            );
        }
        Err(error) => {
            return entra_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                50027,
                format!("JWT token is invalid or malformed: {}.", error.0),
            );
        }
    };
    let federated = inner.state().federated.get(&client_id).cloned().unwrap_or_default();
    let matched = federated
        .iter()
        .any(|f| f.issuer == claims.iss && f.subject == claims.sub && claims.aud.contains(&f.audience));
    if !matched {
        return entra_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700213,
            format!(
                "No matching federated identity record found for presented assertion subject '{}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion.",
                claims.sub
            ),
        );
    }
    let scope = form.scope.unwrap_or_default();
    let resource = scope
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .trim_end_matches("/.default")
        .to_owned();
    let issued = now();
    let access_token = inner.entra.sign(&json!({
        "aud": resource,
        "iss": format!("https://sts.windows.net/{tenant}/"),
        "iat": issued, "nbf": issued, "exp": issued + 3600,
        "tid": tenant,
        "oid": identity.principal_id,
        "sub": identity.principal_id,
        "appid": identity.client_id,
        "idtyp": "app",
    }));
    match access_token {
        Ok(access_token) => axum::Json(json!({
            "token_type": "Bearer",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": access_token,
        }))
        .into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

async fn discovery(State(inner): State<Arc<Inner>>) -> Response {
    axum::Json(json!({
        "issuer": inner.issuer_url,
        "jwks_uri": format!("{}/openid/v1/jwks", inner.issuer_url),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
    .into_response()
}

async fn issuer_jwks(State(inner): State<Arc<Inner>>) -> Response {
    axum::Json(inner.issuer.jwks()).into_response()
}

type VaultState = State<(Arc<Inner>, String)>;

#[derive(Debug, Deserialize, Serialize)]
struct AccessClaims {
    aud: String,
    tid: String,
    oid: String,
}

fn vault_error(status: StatusCode, code: &str, message: String, inner_code: Option<&str>) -> Response {
    let mut error = json!({"code": code, "message": message});
    if let Some(inner_code) = inner_code {
        error["innererror"] = json!({"code": inner_code});
    }
    (status, axum::Json(json!({"error": error}))).into_response()
}

/// The resource the vault announces: `https://vault.localhost` when it was called by a `*.vault.localhost` name
/// (so the SDKs' challenge-resource check can stay on), `https://vault.azure.net` otherwise.
fn resource_for(headers: &HeaderMap) -> &'static str {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| h.split(':').next().unwrap_or_default().to_owned())
        .unwrap_or_default();
    if host.ends_with(".vault.localhost") {
        "https://vault.localhost"
    } else {
        "https://vault.azure.net"
    }
}

/// The bearer challenge, authentication and authorization shared by every data-plane route; an authorized request
/// is counted under `VAULT route`. Returns the vault's base URL as the client called it, or the response to send.
#[allow(clippy::result_large_err)]
async fn authorize(
    inner: &Inner,
    vault: &str,
    headers: &HeaderMap,
    permission: &str,
    route: &str,
) -> Result<String, Response> {
    if let Some(response) = apply_fault(inner.fault(&FaultTarget::Vault(vault.to_owned()))).await {
        return Err(response);
    }
    let (tenant, url, access) = {
        let state = inner.state();
        let Some(v) = state.vaults.get(vault) else {
            return Err(vault_error(
                StatusCode::NOT_FOUND,
                "VaultNotFound",
                format!("no vault {vault}"),
                None,
            ));
        };
        (v.tenant_id.clone(), v.url.clone(), v.access.clone())
    };
    let resource = resource_for(headers);
    let base_url = match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        Some(host) => format!("https://{host}"),
        None => url,
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "));
    let challenge = || {
        let mut response = vault_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "AKV10000: Request is missing a Bearer or PoP token.".to_owned(),
            None,
        );
        let value = format!(
            "Bearer authorization=\"{}{tenant}\", resource=\"{resource}\"",
            inner.login_url
        );
        if let Ok(value) = value.parse() {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        }
        response
    };
    let Some(bearer) = bearer else {
        inner.count(format!("{vault} challenge"));
        return Err(challenge());
    };
    let claims: AccessClaims = jwt::verify(bearer, &inner.entra.jwks()).map_err(|e| {
        vault_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            format!("AKV10032: Invalid token: {}", e.0),
            None,
        )
    })?;
    if claims.aud.trim_end_matches('/') != resource || claims.tid != tenant {
        return Err(vault_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            format!("AKV10022: Invalid audience or issuer. Expected '{resource}' in tenant '{tenant}'."),
            None,
        ));
    }
    let allowed = access
        .get(&claims.oid)
        .is_some_and(|p| p.iter().any(|p| p == permission));
    if !allowed {
        return Err(vault_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "The user, group or application 'appid={};oid={}' does not have secrets {permission} permission on key vault '{vault};location=emulator'.",
                claims.oid, claims.oid
            ),
            Some("AccessDenied"),
        ));
    }
    inner.count(format!("{vault} {route}"));
    Ok(base_url)
}

fn secret_bundle(base: &str, name: &str, s: &SecretVersion) -> Value {
    let mut bundle = json!({
        "value": s.value,
        "id": format!("{base}/secrets/{name}/{}", s.version),
        "attributes": attributes(s.enabled, s.created),
        "tags": {},
    });
    if let Some(ct) = &s.content_type {
        bundle["contentType"] = json!(ct);
    }
    if s.managed {
        bundle["managed"] = json!(true);
        bundle["kid"] = json!(s.kid);
    }
    bundle
}

// An error here is the response to send: axum responses are large, and these are cold paths.
#[allow(clippy::result_large_err)]
fn find_version(inner: &Inner, vault: &str, name: &str, version: Option<&str>) -> Result<SecretVersion, Response> {
    let state = inner.state();
    pick(
        state.vaults.get(vault).and_then(|v| v.secrets.get(name)),
        name,
        version,
        ("secret", "Secret"),
    )
}

/// The version asked for (the latest when none), or Key Vault's 404 or disabled-object 403. `kind` is the object
/// kind as Key Vault spells it in messages and in error codes.
#[allow(clippy::result_large_err)]
fn pick<T: Versioned>(
    versions: Option<&Vec<T>>,
    name: &str,
    version: Option<&str>,
    (kind, code): (&str, &str),
) -> Result<T, Response> {
    let found = match version.filter(|v| !v.is_empty() && *v != "latest") {
        Some(version) => versions.and_then(|all| all.iter().find(|s| s.version() == version)),
        None => versions.and_then(|all| all.last()),
    };
    let Some(found) = found else {
        return Err(vault_error(
            StatusCode::NOT_FOUND,
            &format!("{code}NotFound"),
            format!(
                "A {kind} with (name/id) {name} was not found in this key vault. If you recently deleted this {kind} you may be able to recover it using the correct recovery command."
            ),
            None,
        ));
    };
    if !found.enabled() {
        return Err(vault_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("Operation get is not allowed on a disabled {kind}."),
            Some(&format!("{code}Disabled")),
        ));
    }
    Ok(found.clone())
}

/// A listing as Key Vault pages it, here always in one page.
fn page(items: Vec<Value>) -> Response {
    axum::Json(json!({"value": items, "nextLink": null})).into_response()
}

fn attributes(enabled: bool, created: u64) -> Value {
    json!({"enabled": enabled, "created": created, "updated": created,
           "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90})
}

fn key_bundle(base: &str, name: &str, k: &KeyVersion, with_key: bool) -> Value {
    let kid = format!("{base}/keys/{name}/{}", k.version);
    let mut bundle = json!({"attributes": attributes(k.enabled, k.created), "tags": {}});
    if with_key {
        let mut jwk = k.jwk.clone();
        jwk["kid"] = json!(kid);
        bundle["key"] = jwk;
    } else {
        bundle["kid"] = json!(kid);
    }
    if k.managed {
        bundle["managed"] = json!(true);
    }
    bundle
}

fn certificate_bundle(base: &str, name: &str, c: &CertificateVersion, with_cer: bool) -> Value {
    let x5t = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &c.cer);
    let mut bundle = json!({
        "id": format!("{base}/certificates/{name}/{}", c.version),
        "x5t": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(x5t.as_ref()),
        "attributes": attributes(c.enabled, c.created),
        "tags": {},
    });
    if with_cer {
        bundle["kid"] = json!(format!("{base}/keys/{name}/{}", c.version));
        bundle["sid"] = json!(format!("{base}/secrets/{name}/{}", c.version));
        bundle["cer"] = json!(base64::engine::general_purpose::STANDARD.encode(&c.cer));
    }
    bundle
}

/// Keys and certificates, served by the same two generic routes.
trait ObjectKind: Versioned + Send + 'static {
    /// As Key Vault spells the kind in messages, and in error codes.
    const KIND: (&'static str, &'static str);
    /// The counter name suffix: `get-{COUNTER}`, `list-{COUNTER}-versions`.
    const COUNTER: &'static str;
    fn versions<'a>(vault: &'a Vault, name: &str) -> Option<&'a Vec<Self>>;
    /// The bundle of one version: in full for a GET, the list item otherwise.
    fn bundle(&self, base: &str, name: &str, full: bool) -> Value;
}

impl ObjectKind for KeyVersion {
    const KIND: (&'static str, &'static str) = ("key", "Key");
    const COUNTER: &'static str = "key";
    fn versions<'a>(vault: &'a Vault, name: &str) -> Option<&'a Vec<Self>> {
        vault.keys.get(name)
    }
    fn bundle(&self, base: &str, name: &str, full: bool) -> Value {
        key_bundle(base, name, self, full)
    }
}

impl ObjectKind for CertificateVersion {
    const KIND: (&'static str, &'static str) = ("certificate", "Certificate");
    const COUNTER: &'static str = "certificate";
    fn versions<'a>(vault: &'a Vault, name: &str) -> Option<&'a Vec<Self>> {
        vault.certificates.get(name)
    }
    fn bundle(&self, base: &str, name: &str, full: bool) -> Value {
        certificate_bundle(base, name, self, full)
    }
}

async fn get_object_latest<T: ObjectKind>(
    State((inner, vault)): VaultState,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    get_object::<T>(&inner, &vault, &name, None, &headers).await
}

async fn get_object_version<T: ObjectKind>(
    State((inner, vault)): VaultState,
    UrlPath((name, version)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    get_object::<T>(&inner, &vault, &name, Some(&version), &headers).await
}

async fn get_object<T: ObjectKind>(
    inner: &Inner,
    vault: &str,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
) -> Response {
    let base = match authorize(inner, vault, headers, "get", &format!("get-{}", T::COUNTER)).await {
        Ok(base) => base,
        Err(response) => return response,
    };
    let found = {
        let state = inner.state();
        pick(
            state.vaults.get(vault).and_then(|v| T::versions(v, name)),
            name,
            version,
            T::KIND,
        )
    };
    match found {
        Ok(object) => axum::Json(object.bundle(&base, name, true)).into_response(),
        Err(response) => response,
    }
}

async fn list_object_versions<T: ObjectKind>(
    State((inner, vault)): VaultState,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let route = format!("list-{}-versions", T::COUNTER);
    let base = match authorize(&inner, &vault, &headers, "list", &route).await {
        Ok(base) => base,
        Err(response) => return response,
    };
    let state = inner.state();
    let items: Vec<Value> = state
        .vaults
        .get(&vault)
        .and_then(|v| T::versions(v, &name))
        .map(|versions| versions.iter().map(|o| o.bundle(&base, &name, false)).collect())
        .unwrap_or_default();
    page(items)
}

async fn get_latest(State((inner, vault)): VaultState, UrlPath(name): UrlPath<String>, headers: HeaderMap) -> Response {
    get_secret(&inner, &vault, &name, None, &headers).await
}

async fn get_version(
    State((inner, vault)): VaultState,
    UrlPath((name, version)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    get_secret(&inner, &vault, &name, Some(&version), &headers).await
}

async fn get_secret(inner: &Inner, vault: &str, name: &str, version: Option<&str>, headers: &HeaderMap) -> Response {
    let base = match authorize(inner, vault, headers, "get", "get-secret").await {
        Ok(base) => base,
        Err(response) => return response,
    };
    match find_version(inner, vault, name, version) {
        Ok(secret) => axum::Json(secret_bundle(&base, name, &secret)).into_response(),
        Err(response) => response,
    }
}

fn item(base: &str, id: String, s: &SecretVersion) -> Value {
    let mut item = secret_bundle(base, "", s);
    if let Some(object) = item.as_object_mut() {
        object.remove("value");
        object.insert("id".to_owned(), json!(id));
    }
    item
}

async fn list_secrets(State((inner, vault)): VaultState, headers: HeaderMap) -> Response {
    let base = match authorize(&inner, &vault, &headers, "list", "list-secrets").await {
        Ok(base) => base,
        Err(response) => return response,
    };
    let state = inner.state();
    let items: Vec<Value> = state
        .vaults
        .get(&vault)
        .map(|v| {
            v.secrets
                .iter()
                .filter_map(|(name, versions)| {
                    versions
                        .last()
                        .map(|s| item(&base, format!("{base}/secrets/{name}"), s))
                })
                .collect()
        })
        .unwrap_or_default();
    page(items)
}

async fn list_versions(
    State((inner, vault)): VaultState,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let base = match authorize(&inner, &vault, &headers, "list", "list-versions").await {
        Ok(base) => base,
        Err(response) => return response,
    };
    let state = inner.state();
    let items: Vec<Value> = state
        .vaults
        .get(&vault)
        .and_then(|v| v.secrets.get(&name))
        .map(|versions| {
            versions
                .iter()
                .map(|s| item(&base, format!("{base}/secrets/{name}/{}", s.version), s))
                .collect()
        })
        .unwrap_or_default();
    page(items)
}
