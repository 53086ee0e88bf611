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
/// `accounts` ServiceAccounts.
pub async fn start_server(kubeconfig: &str, accounts: usize) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.path().join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("tls.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.path().join("ca.crt"), ca.pem()).unwrap();
    std::fs::write(dir.path().join("kubeconfig"), kubeconfig).unwrap();
    let (listen, admin) = (free_port(), free_port());
    std::fs::create_dir(dir.path().join("log")).unwrap();
    let log = std::fs::File::create(dir.path().join("log/server.log")).unwrap();
    let child = tokio::process::Command::new(webhook_binary())
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
        .unwrap();
    let server = Server {
        child,
        admission: format!("127.0.0.1:{listen}").parse().unwrap(),
        admin: format!("127.0.0.1:{admin}").parse().unwrap(),
        ca_file: dir.path().join("ca.crt"),
        dir,
    };
    let ready = eventually(Duration::from_secs(300), async || {
        http_get(server.admin, "/readyz")
            .await
            .is_some_and(|(status, _)| status == 200)
    })
    .await;
    assert!(ready, "wi-webhook never became ready");
    let cached = server
        .metric("wi_webhook_cache_objects{kind=\"serviceaccounts\"}")
        .await;
    assert_eq!(cached, Some(accounts as f64), "ServiceAccounts cached");
    server
}
