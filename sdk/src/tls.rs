//! A rustls [`ResolvesServerCert`] that serves the certificate currently mounted, for servers that must pick up a
//! rotated certificate without a restart.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::snapshot::Snapshot;
use crate::value::{ParseError, Watched};
use crate::watch::SecretsDir;

/// Which files hold the certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertFiles {
    /// A certificate chain (leaf first) and its private key in two files, such as `tls.crt` and `tls.key` of a
    /// `kubernetes.io/tls` Secret.
    Pair {
        /// The chain.
        cert: String,
        /// The key.
        key: String,
    },
    /// One PEM file with the private key and the chain, as Key Vault gives a certificate read as a secret.
    Combined(String),
}

impl CertFiles {
    /// `tls.crt` and `tls.key`.
    pub fn kubernetes_tls() -> Self {
        CertFiles::Pair {
            cert: "tls.crt".to_owned(),
            key: "tls.key".to_owned(),
        }
    }
}

/// Serves the latest valid certificate of a watched directory. A new certificate whose key does not match it, or
/// that does not parse, is rejected and the previous one kept ([`CertResolver::value`] tells why).
#[derive(Debug, Clone)]
pub struct CertResolver {
    value: Watched<Arc<CertifiedKey>>,
}

impl CertResolver {
    /// Resolves from `files` in `dir`, checking keys with `provider`.
    pub fn new(dir: &SecretsDir, files: CertFiles, provider: Arc<CryptoProvider>) -> Self {
        let name = match &files {
            CertFiles::Pair { cert, key } => format!("certificate {cert} + {key}"),
            CertFiles::Combined(file) => format!("certificate {file}"),
        };
        let value = dir.derive(&name, move |snapshot| load(snapshot, &files, &provider).map(Arc::new));
        CertResolver { value }
    }

    /// The underlying value: its generation, staleness and change notifications.
    pub fn value(&self) -> &Watched<Arc<CertifiedKey>> {
        &self.value
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.value.current().map(|c| c.expose().clone())
    }
}

fn load(snapshot: &Snapshot, files: &CertFiles, provider: &CryptoProvider) -> Result<CertifiedKey, ParseError> {
    let get = |name: &str| {
        snapshot
            .get(name)
            .ok_or_else(|| ParseError::new(format!("no file {name:?} in the directory")))
    };
    let (cert_pem, key_pem, cert_name, key_name) = match files {
        CertFiles::Pair { cert, key } => (get(cert)?, get(key)?, cert.as_str(), key.as_str()),
        CertFiles::Combined(file) => (get(file)?, get(file)?, file.as_str(), file.as_str()),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| ParseError::new(format!("{cert_name}: {e}")))?;
    if chain.is_empty() {
        return Err(ParseError::new(format!("{cert_name}: no PEM certificate")));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| ParseError::new(format!("{key_name}: no PEM private key ({e})")))?;
    CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| ParseError::new(format!("{key_name} does not go with {cert_name}: {e}")))
}
