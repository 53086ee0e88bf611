//! The serving certificate: loaded from PEM files, validated before use, swapped atomically when the files change
//! (a cert-manager renewal or a Secret volume's `..data` swap), the last good one kept when new files are bad.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SupportedProtocolVersion};

use crate::metrics::{Metrics, ReloadResult};

/// Why a certificate and key cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate file has no PEM certificate.
    #[error("{0}: no PEM certificate found")]
    NoCertificate(PathBuf),
    /// The key file has no PEM private key.
    #[error("{path}: no PEM private key found ({reason})")]
    NoKey {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        reason: String,
    },
    /// The leaf certificate is not valid X.509.
    #[error("{path}: the certificate cannot be parsed: {reason}")]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The certificate's validity has ended.
    #[error("{path}: the certificate expired at {not_after} (Unix seconds)")]
    Expired {
        /// The file.
        path: PathBuf,
        /// `notAfter`.
        not_after: i64,
    },
    /// The key is unusable or is not the certificate's key.
    #[error("{key} does not go with {cert}: {reason}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
}

/// A validated certificate and key, and what is reported about them.
#[derive(Debug)]
struct Loaded {
    certified: Arc<CertifiedKey>,
    not_after: i64,
    /// Hash of the file contents, to tell a real change from a touch.
    source: u64,
}

/// The certificate being served, and where it comes from: files (reloaded when they change), or PEM handed over
/// by the self-managed certificate manager.
#[derive(Debug)]
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    from_files: bool,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<Loaded>,
}

impl CertStore {
    /// Loads and validates the certificate and key; an error here stops the server from starting.
    pub fn load(cert_path: &Path, key_path: &Path, provider: Arc<CryptoProvider>) -> Result<Arc<Self>, TlsError> {
        let (cert, key) = read_pair(cert_path, key_path)?;
        let loaded = build(cert_path, key_path, &cert, &key, &provider)?;
        Ok(Arc::new(CertStore {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            from_files: true,
            provider,
            current: ArcSwap::from_pointee(loaded),
        }))
    }

    /// Validates and serves a certificate and key given as PEM (`label` names their origin in errors).
    pub fn from_pem(
        label: &str,
        cert: &[u8],
        key: &[u8],
        provider: Arc<CryptoProvider>,
    ) -> Result<Arc<Self>, TlsError> {
        let (cert_path, key_path) = (
            PathBuf::from(format!("{label}/tls.crt")),
            PathBuf::from(format!("{label}/tls.key")),
        );
        let loaded = build(&cert_path, &key_path, cert, key, &provider)?;
        Ok(Arc::new(CertStore {
            cert_path,
            key_path,
            from_files: false,
            provider,
            current: ArcSwap::from_pointee(loaded),
        }))
    }

    /// Serves a new certificate and key given as PEM, once validated. `Ok(false)`: they are the ones served.
    pub fn install_pem(&self, cert: &[u8], key: &[u8]) -> Result<bool, TlsError> {
        if hash(cert, key) == self.current.load().source {
            return Ok(false);
        }
        let loaded = build(&self.cert_path, &self.key_path, cert, key, &self.provider)?;
        self.current.store(Arc::new(loaded));
        Ok(true)
    }

    /// Reads the files again. `Ok(true)`: a new certificate is served; `Ok(false)`: the files did not change; an
    /// error leaves the previous certificate in place.
    pub fn reload(&self) -> Result<bool, TlsError> {
        if !self.from_files {
            return Ok(false);
        }
        let (cert, key) = read_pair(&self.cert_path, &self.key_path)?;
        self.install_pem(&cert, &key)
    }

    /// `notAfter` of the served certificate, Unix seconds.
    pub fn not_after(&self) -> i64 {
        self.current.load().not_after
    }

    /// The served leaf certificate, DER.
    pub fn leaf(&self) -> CertificateDer<'static> {
        self.current.load().certified.cert[0].clone()
    }

    /// The directories whose changes may change the files (a Secret volume swaps `..data` in the directory).
    fn watched_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = [&self.cert_path, &self.key_path]
            .iter()
            .map(|p| match p.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
                _ => PathBuf::from("."),
            })
            .collect();
        dirs.dedup();
        dirs
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().certified.clone())
    }
}

/// A rustls server configuration serving `store`'s certificate, with HTTP/2 and HTTP/1.1 by ALPN.
pub fn server_config(
    store: Arc<CertStore>,
    min_version: TlsVersion,
    provider: Arc<CryptoProvider>,
) -> Result<ServerConfig, rustls::Error> {
    let versions: &[&SupportedProtocolVersion] = match min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The lowest TLS version accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[value(name = "1.2")]
    V1_2,
    /// TLS 1.3 only.
    #[value(name = "1.3")]
    V1_3,
}

/// Reloads the certificate whenever the files' directories change (debounced), and every `poll` as a backstop for
/// filesystems without inotify. Runs forever.
pub async fn watch(store: Arc<CertStore>, metrics: Arc<Metrics>, poll: Duration) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Opening and reading files (our own reloads included) is not a change.
        if !matches!(
            event,
            Ok(notify::Event {
                kind: notify::EventKind::Access(_),
                ..
            })
        ) {
            let _ = tx.send(());
        }
    });
    // Held for as long as this task runs: dropping it stops the notifications.
    let _watcher = match watcher {
        Ok(mut watcher) => {
            for dir in store.watched_dirs() {
                if let Err(error) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
                    tracing::warn!(%error, dir = %dir.display(), "cannot watch the certificate directory; polling only");
                }
            }
            Some(watcher)
        }
        Err(error) => {
            tracing::warn!(%error, "cannot watch the certificate files; polling only");
            None
        }
    };
    // Files that changed between the first load and the watch being set up are caught here.
    reload_and_report(&store, &metrics);
    let mut ticker = tokio::time::interval(poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            Some(()) = rx.recv() => {
                // A swap is several events in a few milliseconds: wait for quiet, then read once.
                while let Ok(Some(())) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {}
            }
            _ = ticker.tick() => {}
        }
        reload_and_report(&store, &metrics);
    }
}

/// One reload, logged and counted.
pub fn reload_and_report(store: &CertStore, metrics: &Metrics) {
    match store.reload() {
        Ok(false) => {}
        Ok(true) => {
            metrics.reloaded(ReloadResult::Success);
            metrics.certificate_expiry.set(store.not_after());
            tracing::info!(not_after = store.not_after(), "serving a new certificate");
        }
        Err(error) => {
            metrics.reloaded(ReloadResult::Failure);
            tracing::warn!(%error, "certificate files rejected; still serving the previous certificate");
        }
    }
}

/// Reads both files; reads the certificate again after the key, and retries when it changed in between, so a
/// pair is not torn by a rotation that happens while reading.
fn read_pair(cert_path: &Path, key_path: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let mut cert = read(cert_path)?;
    for _ in 0..3 {
        let key = read(key_path)?;
        let again = read(cert_path)?;
        if again == cert {
            return Ok((cert, key));
        }
        cert = again;
    }
    Ok((cert.clone(), read(key_path)?))
}

fn hash(cert: &[u8], key: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    cert.hash(&mut hasher);
    key.hash(&mut hasher);
    hasher.finish()
}

fn build(
    cert_path: &Path,
    key_path: &Path,
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<Loaded, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::BadCertificate {
            path: cert_path.to_owned(),
            reason: e.to_string(),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate(cert_path.to_owned()));
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(|e| TlsError::BadCertificate {
        path: cert_path.to_owned(),
        reason: e.to_string(),
    })?;
    let not_after = parsed.validity().not_after.timestamp();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    if not_after <= now {
        return Err(TlsError::Expired {
            path: cert_path.to_owned(),
            not_after,
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::NoKey {
        path: key_path.to_owned(),
        reason: e.to_string(),
    })?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::KeyMismatch {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(Loaded {
        certified: Arc::new(certified),
        not_after,
        source: hash(cert_pem, key_pem),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn load_validates_and_reload_keeps_the_last_good_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let (cert, key) = pair("a.example");
        std::fs::write(&cert_path, &cert).unwrap();
        std::fs::write(&key_path, &key).unwrap();
        let store = CertStore::load(&cert_path, &key_path, provider()).unwrap();
        let first = store.leaf();
        assert!(!store.reload().unwrap(), "unchanged files are not a reload");

        // A key that does not go with the certificate is rejected and the old pair kept.
        let (_, other_key) = pair("b.example");
        std::fs::write(&key_path, &other_key).unwrap();
        let err = store.reload().unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
        assert_eq!(store.leaf(), first);

        std::fs::write(&cert_path, "not pem").unwrap();
        assert!(matches!(store.reload().unwrap_err(), TlsError::NoCertificate(_)));
        assert_eq!(store.leaf(), first);

        let (cert2, key2) = pair("c.example");
        std::fs::write(&cert_path, &cert2).unwrap();
        std::fs::write(&key_path, &key2).unwrap();
        assert!(store.reload().unwrap());
        assert_ne!(store.leaf(), first);
    }

    #[tokio::test]
    async fn plain_files_are_reloaded_once_after_a_burst_of_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let (cert, key) = pair("a.example");
        std::fs::write(&cert_path, &cert).unwrap();
        std::fs::write(&key_path, &key).unwrap();
        let store = CertStore::load(&cert_path, &key_path, provider()).unwrap();
        let first = store.leaf();
        let metrics = Arc::new(Metrics::default());
        let task = tokio::spawn(watch(store.clone(), metrics.clone(), Duration::from_secs(600)));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (cert2, key2) = pair("b.example");
        std::fs::write(&key_path, &key2).unwrap();
        std::fs::write(&cert_path, &cert2).unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let text = metrics.encode();
        // The two writes land within the debounce window: one reload, of the new pair.
        assert!(
            text.contains("wi_webhook_tls_certificate_reloads_total{result=\"success\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("failure"), "{text}");
        assert_ne!(store.leaf(), first);
        task.abort();
    }

    #[test]
    fn an_expired_certificate_or_a_missing_file_fails_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["x".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let err = CertStore::load(&cert_path, &key_path, provider()).unwrap_err();
        assert!(matches!(err, TlsError::Expired { .. }), "{err}");
        let err = CertStore::load(&dir.path().join("nope.crt"), &key_path, provider()).unwrap_err();
        assert!(err.to_string().contains("nope.crt"), "{err}");
    }
}
