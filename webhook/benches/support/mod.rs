//! What the webhook benches share: `wi-webhook serve` started as a process, the way `manifests/base` starts it (its
//! real `main`, default flags, `--log-format json` at the default level `info`: one line per admission), its
//! standard error written to `log/server.log` in its folder as a container runtime would (not beside the
//! certificates: the server watches their folder, and each line would be an inotify event for it), with a throwaway
//! CA and serving certificate. `WI_WEBHOOK_BINARY`
//! names another build to measure (e.g. the previous commit's, for a before/after table). Needs the tests'
//! `common/process.rs` as the crate's `process` module.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::process::{eventually, free_port, http_get, webhook_binary};

pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

pub struct Server {
    pub child: tokio::process::Child,
    pub admission: SocketAddr,
    pub admin: SocketAddr,
    /// The CA that signed the serving certificate, PEM, in `dir`.
    pub ca_file: PathBuf,
    /// Its standard error, in `dir`.
    pub log_file: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    /// The value of a metric line starting with `prefix` (e.g. `wi_webhook_cache_objects{kind="serviceaccounts"}`).
    pub async fn metric(&self, prefix: &str) -> Option<f64> {
        let (_, metrics) = http_get(self.admin, "/metrics").await?;
        let line = metrics.lines().find(|l| l.starts_with(prefix))?;
        line.rsplit(' ').next()?.parse().ok()
    }
}

/// Starts `wi-webhook serve` with `kubeconfig` and waits until it is ready (its caches listed) and holds
/// `accounts` ServiceAccounts. The error says which step failed.
pub async fn start_server(kubeconfig: &str, accounts: usize) -> Result<Server, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("cannot make a temporary folder: {e}"))?;
    let pki = |e: rcgen::Error| format!("cannot make the throwaway CA and serving certificate: {e}");
    let ca_key = rcgen::KeyPair::generate().map_err(pki)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(pki)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).map_err(pki)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().map_err(pki)?;
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .map_err(pki)?
        .signed_by(&key, &issuer)
        .map_err(pki)?;
    let write = |name: &str, contents: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    write("tls.crt", &cert.pem())?;
    write("tls.key", &key.serialize_pem())?;
    write("ca.crt", &ca.pem())?;
    write("kubeconfig", kubeconfig)?;
    let (listen, admin) = (free_port(), free_port());
    // The log in a folder of its own: the server watches the certificates' folder.
    let log_path = dir.path().join("log/server.log");
    let log = std::fs::create_dir(dir.path().join("log"))
        .and_then(|()| std::fs::File::create(&log_path))
        .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let binary = webhook_binary();
    let child = tokio::process::Command::new(&binary)
        .args(["serve", "--tenant-id", TENANT, "--log-format", "json"])
        .args([
            "--listen",
            &format!("127.0.0.1:{listen}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin}"),
        ])
        .arg("--tls-cert-file")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key-file")
        .arg(dir.path().join("tls.key"))
        .env_clear()
        .env("KUBECONFIG", dir.path().join("kubeconfig"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let server = Server {
        child,
        admission: SocketAddr::from(([127, 0, 0, 1], listen)),
        admin: SocketAddr::from(([127, 0, 0, 1], admin)),
        ca_file: dir.path().join("ca.crt"),
        log_file: log_path,
        dir,
    };
    let ready = eventually(Duration::from_secs(300), async || {
        http_get(server.admin, "/readyz")
            .await
            .is_some_and(|(status, _)| status == 200)
    })
    .await;
    if !ready {
        return Err(format!(
            "wi-webhook never became ready in 300 s; its log: {}",
            server.log_file.display()
        ));
    }
    let cached = server
        .metric("wi_webhook_cache_objects{kind=\"serviceaccounts\"}")
        .await;
    if cached != Some(accounts as f64) {
        return Err(format!(
            "wi-webhook cached {cached:?} ServiceAccounts, expected {accounts}"
        ));
    }
    Ok(server)
}

/// Ends the bench `name` with `error` on standard error and exit status 1.
pub fn fail(name: &str, error: &str) -> ! {
    eprintln!("{name}: {error}");
    std::process::exit(1)
}
