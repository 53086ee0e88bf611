//! Self-managed certificates (`--cert-mode self-managed`): the webhook keeps its own CA and serving certificate in
//! a Secret of its namespace, patches the CA bundle into its MutatingWebhookConfiguration, and rotates both before
//! they expire, with no other component (no cert-manager, no init job).
//!
//! Everything is decided by [`plan`], a pure function of the Secret's contents, the CA bundle the
//! MutatingWebhookConfiguration trusts and the time; [`CertManager::reconcile`] applies its answer with optimistic
//! concurrency (create, or replace at the read `resourceVersion`, re-read on conflict), so any number of replicas can
//! run it at once: the first write wins and the others adopt it.
//!
//! A CA rollover never breaks trust: the next CA is first added to the bundle next to the current one; only once the
//! MutatingWebhookConfiguration trusts it, and `--ca-rollover-settle` has passed, does it sign the served certificate;
//! the old CA leaves the bundle a settle period after that.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::tls::CertStore;
use crate::metrics::ReloadResult;

/// Where the serving certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CertMode {
    /// `--tls-cert-file` and `--tls-key-file`, reloaded when they change (cert-manager, hand-made certificates).
    Files,
    /// A CA and certificate the webhook makes, keeps in a Secret, trusts in its MutatingWebhookConfiguration and
    /// rotates.
    SelfManaged,
}

/// Where the serving certificate comes from and, self-managed, how it is kept (the `--cert-*`, `--ca-*`,
/// `--namespace`, `--service-name` and `--webhook-configuration` flags of `serve`; the doc comments are their
/// `--help`).
#[derive(Debug, Clone, clap::Args)]
pub struct CertConfig {
    /// Where the serving certificate comes from.
    #[arg(long, env = "WI_CERT_MODE", value_name = "MODE", value_enum, default_value = "files")]
    pub cert_mode: CertMode,

    /// Namespace of the webhook's Service and certificate Secret (self-managed mode).
    #[arg(long, env = "WI_NAMESPACE", value_name = "NAMESPACE", default_value = "wi-system")]
    pub namespace: String,

    /// Name of the webhook's Service; the certificate is issued for its DNS names (self-managed mode).
    #[arg(long, env = "WI_SERVICE_NAME", value_name = "NAME", default_value = "wi-webhook")]
    pub service_name: String,

    /// Secret that holds the CA and the serving certificate (self-managed mode).
    #[arg(long, env = "WI_CERT_SECRET", value_name = "NAME", default_value = "wi-webhook-tls")]
    pub cert_secret: String,

    /// MutatingWebhookConfiguration whose caBundle is kept up to date (self-managed mode).
    #[arg(
        long,
        env = "WI_WEBHOOK_CONFIGURATION",
        value_name = "NAME",
        default_value = "wi-webhook"
    )]
    pub webhook_configuration: String,

    /// Lifetime of a CA made by the webhook; a new one is rolled in when a third of it is left (counted from when it
    /// was made). At least three times --ca-rollover-settle plus --cert-check-interval.
    #[arg(long, env = "WI_CA_LIFETIME", value_name = "DURATION", default_value = "5y", value_parser = humantime::parse_duration)]
    pub ca_lifetime: Duration,

    /// Lifetime of a serving certificate; a new one is issued when a third of it is left (counted from when it was
    /// made). At least three times --cert-check-interval.
    #[arg(long, env = "WI_CERT_LIFETIME", value_name = "DURATION", default_value = "365d", value_parser = humantime::parse_duration)]
    pub cert_lifetime: Duration,

    /// How long a new CA is trusted in the caBundle before it signs the served certificate, and how long the old
    /// CA stays trusted afterwards. At least --cert-check-interval, so that every replica serves the new certificate
    /// before the old CA leaves the caBundle.
    #[arg(long, env = "WI_CA_ROLLOVER_SETTLE", value_name = "DURATION", default_value = "10m", value_parser = humantime::parse_duration)]
    pub ca_rollover_settle: Duration,

    /// How often the Secret and the caBundle are checked (self-managed mode).
    #[arg(long, env = "WI_CERT_CHECK_INTERVAL", value_name = "DURATION", default_value = "1m", value_parser = humantime::parse_duration)]
    pub cert_check_interval: Duration,
}

impl CertConfig {
    /// Checks the self-managed settings against each other. The old CA leaves the caBundle one settle period after
    /// its successor started signing; a replica picks up the new certificate at its next check, up to
    /// `--cert-check-interval` later, and serves the old one until then: a settle period shorter than the interval
    /// would let the bundle drop the CA of a certificate still served.
    pub fn check(&self) -> Result<(), String> {
        if self.cert_mode != CertMode::SelfManaged {
            return Ok(());
        }
        let show = |d: Duration| humantime::format_duration(d).to_string();
        if self.ca_rollover_settle < self.cert_check_interval {
            return Err(format!(
                "--ca-rollover-settle ({}) must be at least --cert-check-interval ({}): every replica must have \
                 checked the Secret and served the new certificate before the old CA leaves the caBundle",
                show(self.ca_rollover_settle),
                show(self.cert_check_interval)
            ));
        }
        // Renewed with a third of its life left: that third must span at least one check, or it expires unrenewed.
        if self.cert_lifetime < self.cert_check_interval * 3 {
            return Err(format!(
                "--cert-lifetime ({}) must be at least three times --cert-check-interval ({}): a certificate is \
                 renewed with a third of its life left, and a check must fall in that third",
                show(self.cert_lifetime),
                show(self.cert_check_interval)
            ));
        }
        // The CA's last third holds the whole rollover: its successor trusted for a settle period, then signing,
        // and every replica serving the new certificate (a check later) before the old CA expires.
        let rollover = self.ca_rollover_settle + self.cert_check_interval;
        if self.ca_lifetime < rollover * 3 {
            return Err(format!(
                "--ca-lifetime ({}) must be at least three times --ca-rollover-settle plus --cert-check-interval \
                 ({}): a CA is rolled over in the last third of its life, which must hold a settle period and a check",
                show(self.ca_lifetime),
                show(rollover)
            ));
        }
        Ok(())
    }

    /// The DNS names the API server uses for the Service.
    pub fn dns_names(&self) -> Vec<String> {
        let (svc, ns) = (&self.service_name, &self.namespace);
        vec![
            format!("{svc}.{ns}.svc"),
            format!("{svc}.{ns}.svc.cluster.local"),
            format!("{svc}.{ns}"),
            svc.clone(),
        ]
    }
}

/// Why the certificates could not be managed.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Making or reading a certificate failed.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The Kubernetes API refused or failed.
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// The error.
        source: kube::Error,
    },
    /// Every attempt lost a race with another replica (should not happen; the next check retries).
    #[error("the Secret {0} kept changing under us; retrying at the next check")]
    Contended(String),
}

fn cert_err(e: impl std::fmt::Display) -> CertError {
    CertError::Certificate(e.to_string())
}

/// Secret keys.
const TLS_CRT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";
const CA_BUNDLE: &str = "ca.crt";
const CA_CRT: &str = "ca-signing.crt";
const CA_KEY: &str = "ca-signing.key";
const NEXT_CRT: &str = "ca-next.crt";
const NEXT_KEY: &str = "ca-next.key";
const PREVIOUS_CRT: &str = "ca-previous.crt";

/// A certificate (PEM) with its validity, Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cert {
    /// PEM text.
    pub pem: String,
    /// notBefore.
    pub not_before: i64,
    /// notAfter.
    pub not_after: i64,
}

impl Cert {
    fn parse(pem: &str) -> Result<Self, CertError> {
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(cert_err)?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).map_err(cert_err)?;
        Ok(Cert {
            pem: pem.to_owned(),
            not_before: parsed.validity().not_before.timestamp(),
            not_after: parsed.validity().not_after.timestamp(),
        })
    }

    fn der(&self) -> Result<CertificateDer<'static>, CertError> {
        CertificateDer::from_pem_slice(self.pem.as_bytes()).map_err(cert_err)
    }

    /// When it was made: `notBefore` is dated [`BACKDATE_SECS`] earlier, for clocks a little behind.
    fn issued(&self) -> i64 {
        self.not_before + BACKDATE_SECS
    }

    /// Less than a third of the lifetime it was issued for left (or expired). The lifetime counts from issuance, not
    /// from the backdated `notBefore`: a 4-minute certificate is renewed 160 s after it was made, not 60 s.
    fn due(&self, now: i64) -> bool {
        let lifetime = (self.not_after - self.issued()).max(1);
        self.not_after - now < lifetime / 3
    }
}

/// A CA: certificate and key (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ca {
    /// The CA certificate.
    pub cert: Cert,
    /// Its private key, PEM. Never logged.
    pub key: String,
}

/// Everything the Secret holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The CA that signs the serving certificate.
    pub signing: Ca,
    /// A CA rolling in: trusted, not signing yet.
    pub next: Option<Ca>,
    /// The CA rolled out: still trusted for a settle period.
    pub previous: Option<Cert>,
    /// The serving certificate.
    pub leaf: Cert,
    /// Its key, PEM.
    pub leaf_key: String,
}

impl Bundle {
    /// The CA certificates to trust, signing CA first.
    pub fn trusted(&self) -> Vec<&Cert> {
        let mut out = vec![&self.signing.cert];
        out.extend(self.next.as_ref().map(|c| &c.cert));
        out.extend(self.previous.as_ref());
        out
    }

    /// The caBundle PEM.
    pub fn ca_bundle_pem(&self) -> String {
        self.trusted()
            .iter()
            .map(|c| c.pem.as_str())
            .collect::<Vec<_>>()
            .join("")
    }

    fn from_secret(data: &BTreeMap<String, ByteString>) -> Result<Self, CertError> {
        let text = |key: &str| -> Result<String, CertError> {
            let bytes = data
                .get(key)
                .ok_or_else(|| cert_err(format!("the Secret has no {key}")))?;
            String::from_utf8(bytes.0.clone()).map_err(cert_err)
        };
        let optional = |key: &str| data.contains_key(key).then(|| text(key)).transpose();
        let next = match (optional(NEXT_CRT)?, optional(NEXT_KEY)?) {
            (Some(cert), Some(key)) => Some(Ca {
                cert: Cert::parse(&cert)?,
                key,
            }),
            _ => None,
        };
        Ok(Bundle {
            signing: Ca {
                cert: Cert::parse(&text(CA_CRT)?)?,
                key: text(CA_KEY)?,
            },
            next,
            previous: optional(PREVIOUS_CRT)?.map(|p| Cert::parse(&p)).transpose()?,
            leaf: Cert::parse(&text(TLS_CRT)?)?,
            leaf_key: text(TLS_KEY)?,
        })
    }

    fn to_secret_data(&self) -> BTreeMap<String, ByteString> {
        let mut data = BTreeMap::new();
        let mut put = |k: &str, v: &str| {
            data.insert(k.to_owned(), ByteString(v.as_bytes().to_vec()));
        };
        put(TLS_CRT, &self.leaf.pem);
        put(TLS_KEY, &self.leaf_key);
        put(CA_BUNDLE, &self.ca_bundle_pem());
        put(CA_CRT, &self.signing.cert.pem);
        put(CA_KEY, &self.signing.key);
        if let Some(next) = &self.next {
            put(NEXT_CRT, &next.cert.pem);
            put(NEXT_KEY, &next.key);
        }
        if let Some(previous) = &self.previous {
            put(PREVIOUS_CRT, &previous.pem);
        }
        data
    }
}

/// Lifetimes and names a plan works with.
#[derive(Debug, Clone)]
pub struct Policy {
    /// DNS names of the serving certificate.
    pub dns_names: Vec<String>,
    /// CA lifetime.
    pub ca_lifetime: Duration,
    /// Serving certificate lifetime.
    pub cert_lifetime: Duration,
    /// Rollover settle period.
    pub settle: Duration,
}

impl Policy {
    fn settle_secs(&self) -> i64 {
        i64::try_from(self.settle.as_secs()).unwrap_or(i64::MAX)
    }
}

/// How far back certificates are dated, for clocks that are a little behind.
const BACKDATE_SECS: i64 = 300;

fn make_ca(policy: &Policy, now: i64) -> Result<Ca, CertError> {
    let key = rcgen::KeyPair::generate().map_err(cert_err)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("wi-webhook CA {now}"));
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    set_validity(&mut params, now, policy.ca_lifetime)?;
    let cert = params.self_signed(&key).map_err(cert_err)?;
    Ok(Ca {
        cert: Cert::parse(&cert.pem())?,
        key: key.serialize_pem(),
    })
}

fn make_leaf(policy: &Policy, ca: &Ca, now: i64) -> Result<(Cert, String), CertError> {
    let ca_key = rcgen::KeyPair::from_pem(&ca.key).map_err(cert_err)?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca.cert.pem, ca_key).map_err(cert_err)?;
    let key = rcgen::KeyPair::generate().map_err(cert_err)?;
    let mut params = rcgen::CertificateParams::new(policy.dns_names.clone()).map_err(cert_err)?;
    if let Some(first) = policy.dns_names.first() {
        params.distinguished_name.push(rcgen::DnType::CommonName, first.clone());
    }
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    set_validity(&mut params, now, policy.cert_lifetime)?;
    let cert = params.signed_by(&key, &issuer).map_err(cert_err)?;
    Ok((Cert::parse(&cert.pem())?, key.serialize_pem()))
}

fn set_validity(params: &mut rcgen::CertificateParams, now: i64, lifetime: Duration) -> Result<(), CertError> {
    let lifetime = i64::try_from(lifetime.as_secs()).map_err(cert_err)?;
    params.not_before = time::OffsetDateTime::from_unix_timestamp(now - BACKDATE_SECS).map_err(cert_err)?;
    params.not_after = time::OffsetDateTime::from_unix_timestamp(now + lifetime).map_err(cert_err)?;
    Ok(())
}

/// Whether `leaf` chains to one of `roots` and is valid for `name` at `now`.
pub fn verifies(leaf: &CertificateDer<'_>, roots: &[CertificateDer<'static>], name: &str, now: i64) -> bool {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        if store.add(root.clone()).is_err() {
            return false;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let Ok(verifier) = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider).build()
    else {
        return false;
    };
    let (Ok(name), Ok(secs)) = (ServerName::try_from(name.to_owned()), u64::try_from(now)) else {
        return false;
    };
    verifier
        .verify_server_cert(
            leaf,
            &[],
            &name,
            &[],
            UnixTime::since_unix_epoch(Duration::from_secs(secs)),
        )
        .is_ok()
}

/// Parses the CA certificates of a caBundle (PEM).
pub fn parse_bundle(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem).filter_map(Result::ok).collect()
}

/// What the Secret should hold, given what it holds (`None`: nothing usable), what the MutatingWebhookConfiguration
/// trusts, and the time. `Ok(None)`: it is right as it is.
pub fn plan(
    current: Option<&Bundle>,
    webhook_trusts: &[CertificateDer<'static>],
    policy: &Policy,
    now: i64,
) -> Result<Option<Bundle>, CertError> {
    let fresh = || -> Result<Bundle, CertError> {
        let signing = make_ca(policy, now)?;
        let (leaf, leaf_key) = make_leaf(policy, &signing, now)?;
        Ok(Bundle {
            signing,
            next: None,
            previous: None,
            leaf,
            leaf_key,
        })
    };
    let Some(current) = current else {
        return fresh().map(Some);
    };
    // A signing CA that has expired (a cluster off for years) cannot be rolled over smoothly: start again.
    if current.signing.cert.not_after <= now {
        return fresh().map(Some);
    }
    let settle = policy.settle_secs();
    let mut next = current.clone();

    // 3. The old CA leaves the bundle a settle period after the new one started signing.
    if next.previous.is_some() && now >= next.leaf.issued() + settle {
        next.previous = None;
    }
    // 2. The next CA starts signing once the webhook configuration trusts it and the settle period has passed.
    let promote = next.next.as_ref().is_some_and(|ca| {
        let trusted = ca.cert.der().is_ok_and(|der| webhook_trusts.contains(&der));
        trusted && now >= ca.cert.issued() + settle
    });
    let mut reissue = false;
    if promote && let Some(incoming) = next.next.take() {
        next.previous = Some(std::mem::replace(&mut next.signing, incoming).cert);
        reissue = true;
    }
    // 1. A CA with a third of its life left gets a successor, trusted first, signing later.
    if next.next.is_none() && next.signing.cert.due(now) {
        next.next = Some(make_ca(policy, now)?);
    }
    // The serving certificate: renewed when due, or when it no longer matches its CA or the Service's names.
    let leaf_ok = next.leaf.der().is_ok_and(|leaf| {
        let roots = next.signing.cert.der().map(|d| vec![d]).unwrap_or_default();
        policy.dns_names.iter().all(|name| verifies(&leaf, &roots, name, now))
    });
    if reissue || !leaf_ok || next.leaf.due(now) {
        let (leaf, leaf_key) = make_leaf(policy, &next.signing, now)?;
        next.leaf = leaf;
        next.leaf_key = leaf_key;
    }
    Ok((next != *current).then_some(next))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// Keeps the Secret, the caBundle and the served certificate in step.
pub struct CertManager {
    secrets: Api<Secret>,
    webhooks: Api<MutatingWebhookConfiguration>,
    args: CertConfig,
    policy: Policy,
    /// Whether the served certificate verifies against the caBundle the API server uses.
    trusted: Arc<AtomicBool>,
}

/// What one reconcile did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// The served certificate changed to the Secret's (`Success`), or the Secret's was unusable (`Failure`); `None`
    /// when it was already served.
    pub reloaded: Option<ReloadResult>,
    /// The Secret was written (created or replaced) by this replica.
    pub wrote_secret: bool,
    /// The caBundle was patched by this replica.
    pub patched_ca_bundle: bool,
    /// The served certificate verifies against the caBundle.
    pub trusted: bool,
}

impl CertManager {
    /// A manager for the Secret and MutatingWebhookConfiguration named in `args`.
    pub fn new(client: kube::Client, args: CertConfig) -> Self {
        let policy = Policy {
            dns_names: args.dns_names(),
            ca_lifetime: args.ca_lifetime,
            cert_lifetime: args.cert_lifetime,
            settle: args.ca_rollover_settle,
        };
        CertManager {
            secrets: Api::namespaced(client.clone(), &args.namespace),
            webhooks: Api::all(client),
            args,
            policy,
            trusted: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The readiness flag this manager sets.
    pub fn trusted_flag(&self) -> Arc<AtomicBool> {
        self.trusted.clone()
    }

    /// The certificate and key to serve now, making them if needed; used once at start, before listening.
    pub async fn initial(&self, provider: Arc<CryptoProvider>) -> Result<Arc<CertStore>, CertError> {
        let bundle = self.ensure_secret(unix_now()).await?.0;
        let store = CertStore::from_pem(
            &format!("Secret {}/{}", self.args.namespace, self.args.cert_secret),
            bundle.leaf.pem.as_bytes(),
            bundle.leaf_key.as_bytes(),
            provider,
        )
        .map_err(cert_err)?;
        self.reconcile(&store, unix_now()).await?;
        Ok(store)
    }

    /// One pass: bring the Secret up to date, trust its CAs in the MutatingWebhookConfiguration, serve its
    /// certificate, and report whether that certificate is trusted.
    pub async fn reconcile(&self, store: &CertStore, now: i64) -> Result<Reconciled, CertError> {
        let (bundle, wrote_secret) = self.ensure_secret(now).await?;
        let (trusted_bundle, patched_ca_bundle) = self.ensure_ca_bundle(&bundle).await?;
        let reloaded = match store.install_pem(bundle.leaf.pem.as_bytes(), bundle.leaf_key.as_bytes()) {
            Ok(true) => {
                tracing::info!(
                    not_after = bundle.leaf.not_after,
                    "serving the certificate from the Secret"
                );
                Some(ReloadResult::Success)
            }
            Ok(false) => None,
            Err(error) => {
                tracing::warn!(%error, "the Secret's certificate is unusable; still serving the previous one");
                Some(ReloadResult::Failure)
            }
        };
        let roots = parse_bundle(&trusted_bundle);
        let served = store.leaf();
        let trusted = self
            .policy
            .dns_names
            .first()
            .is_some_and(|name| verifies(&served, &roots, name, now));
        self.trusted.store(trusted, Ordering::Release);
        Ok(Reconciled {
            reloaded,
            wrote_secret,
            patched_ca_bundle,
            trusted,
        })
    }

    /// Reads the Secret, applies [`plan`], writes the result if it changed. Conflicts (another replica wrote first)
    /// are resolved by reading again.
    async fn ensure_secret(&self, now: i64) -> Result<(Bundle, bool), CertError> {
        let name = &self.args.cert_secret;
        for _ in 0..5 {
            let secret = self.secrets.get_opt(name).await.map_err(|source| CertError::Api {
                what: format!("cannot read Secret {}/{name}", self.args.namespace),
                source,
            })?;
            let current = secret.as_ref().and_then(|s| s.data.as_ref()).and_then(|data| {
                Bundle::from_secret(data)
                    .inspect_err(|error| tracing::warn!(%error, "the certificate Secret is unusable; replacing it"))
                    .ok()
            });
            let trusts = self
                .webhook_ca_bundle()
                .await?
                .map(|b| parse_bundle(&b))
                .unwrap_or_default();
            let Some(wanted) = plan(current.as_ref(), &trusts, &self.policy, now)? else {
                if let Some(current) = current {
                    return Ok((current, false));
                }
                continue;
            };
            let written = match secret {
                None => {
                    let object = Secret {
                        metadata: kube::api::ObjectMeta {
                            name: Some(name.clone()),
                            namespace: Some(self.args.namespace.clone()),
                            labels: Some(BTreeMap::from([(
                                "app.kubernetes.io/managed-by".to_owned(),
                                "wi-webhook".to_owned(),
                            )])),
                            ..Default::default()
                        },
                        type_: Some("kubernetes.io/tls".to_owned()),
                        data: Some(wanted.to_secret_data()),
                        ..Default::default()
                    };
                    self.secrets.create(&post_params(), &object).await
                }
                Some(mut existing) => {
                    // resourceVersion is kept: the API server refuses the write if another replica wrote since.
                    existing.data = Some(wanted.to_secret_data());
                    existing.string_data = None;
                    self.secrets.replace(name, &post_params(), &existing).await
                }
            };
            match written {
                Ok(_) => {
                    tracing::info!(
                        secret = %name,
                        ca_not_after = wanted.signing.cert.not_after,
                        cert_not_after = wanted.leaf.not_after,
                        rolling_in = wanted.next.is_some(),
                        "wrote the certificate Secret"
                    );
                    return Ok((wanted, true));
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    tracing::info!(secret = %name, "another replica wrote the certificate Secret first; reading it");
                }
                Err(source) => {
                    return Err(CertError::Api {
                        what: format!("cannot write Secret {}/{name}", self.args.namespace),
                        source,
                    });
                }
            }
        }
        Err(CertError::Contended(name.clone()))
    }

    /// The caBundle of the first webhook of the configuration, `None` when the configuration does not exist.
    async fn webhook_ca_bundle(&self) -> Result<Option<Vec<u8>>, CertError> {
        let name = &self.args.webhook_configuration;
        let config = self.webhooks.get_opt(name).await.map_err(|source| CertError::Api {
            what: format!("cannot read MutatingWebhookConfiguration {name}"),
            source,
        })?;
        Ok(config.map(|c| {
            c.webhooks
                .iter()
                .flatten()
                .next()
                .and_then(|w| w.client_config.ca_bundle.as_ref())
                .map(|b| b.0.clone())
                .unwrap_or_default()
        }))
    }

    /// Sets every webhook's caBundle to the Secret's bundle. Returns the bundle the configuration has now.
    async fn ensure_ca_bundle(&self, bundle: &Bundle) -> Result<(Vec<u8>, bool), CertError> {
        let name = &self.args.webhook_configuration;
        let wanted = bundle.ca_bundle_pem().into_bytes();
        for _ in 0..5 {
            let Some(mut config) = self.webhooks.get_opt(name).await.map_err(|source| CertError::Api {
                what: format!("cannot read MutatingWebhookConfiguration {name}"),
                source,
            })?
            else {
                tracing::warn!(configuration = %name, "MutatingWebhookConfiguration not found; will patch its caBundle once it exists");
                return Ok((Vec::new(), false));
            };
            let webhooks = config.webhooks.get_or_insert_with(Vec::new);
            if webhooks
                .iter()
                .all(|w| w.client_config.ca_bundle.as_ref().is_some_and(|b| b.0 == wanted))
            {
                return Ok((wanted, false));
            }
            for webhook in webhooks.iter_mut() {
                webhook.client_config.ca_bundle = Some(ByteString(wanted.clone()));
            }
            match self.webhooks.replace(name, &post_params(), &config).await {
                Ok(_) => {
                    tracing::info!(
                        configuration = %name,
                        cas = bundle.trusted().len(),
                        bundle = %base64::engine::general_purpose::STANDARD.encode(&wanted).chars().take(16).collect::<String>(),
                        "patched the caBundle"
                    );
                    return Ok((wanted, true));
                }
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(source) => {
                    return Err(CertError::Api {
                        what: format!("cannot update MutatingWebhookConfiguration {name}"),
                        source,
                    });
                }
            }
        }
        Err(CertError::Contended(name.clone()))
    }

    /// Reconciles every `--cert-check-interval`, forever; errors are logged and retried at the next check.
    pub async fn run(self: Arc<Self>, store: Arc<CertStore>, metrics: Arc<crate::metrics::Metrics>) {
        let mut ticker = tokio::time::interval(self.args.cert_check_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match self.reconcile(&store, unix_now()).await {
                Ok(done) => {
                    if let Some(result) = done.reloaded {
                        metrics.reloaded(result);
                    }
                    metrics.certificate_expiry.set(store.not_after());
                    if !done.trusted {
                        tracing::warn!("the served certificate is not trusted by the caBundle yet; unready");
                    }
                }
                Err(error) => tracing::warn!(%error, "certificate check failed; retrying at the next check"),
            }
        }
    }
}

/// Writes as field manager `wi-webhook`: `kubectl get -o yaml --show-managed-fields` (and Helm 4's server-side
/// apply) then name the webhook as the owner of the caBundle and the certificate Secret.
fn post_params() -> PostParams {
    PostParams {
        field_manager: Some("wi-webhook".to_owned()),
        ..PostParams::default()
    }
}

#[cfg(test)]
mod tests;
