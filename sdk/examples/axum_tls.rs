//! An axum HTTPS server that serves a rotated certificate without restarting.
//!
//! ```text
//! cargo run -p wi-sdk --example axum_tls -- /mnt/secrets-store 127.0.0.1:8443
//! curl -k https://127.0.0.1:8443/
//! ```
//!
//! DIR holds `tls.crt` and `tls.key` (a `kubernetes.io/tls` Secret, cert-manager, the CSI driver with two
//! objects). New connections get the newest certificate whose key matches; existing ones keep theirs.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use wi_sdk::SecretsDir;
use wi_sdk::tls::{CertFiles, CertResolver};

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(dir), addr) = (args.next(), args.next().unwrap_or_else(|| "127.0.0.1:8443".to_owned())) else {
        eprintln!("usage: axum_tls DIR [ADDR]");
        return ExitCode::from(2);
    };
    let Ok(addr) = addr.parse::<SocketAddr>() else {
        eprintln!("axum_tls: {addr:?} is not an address such as 127.0.0.1:8443");
        return ExitCode::from(2);
    };
    match run(&dir, addr).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("axum_tls: {error}");
            ExitCode::from(1)
        }
    }
}

async fn run(dir: &str, addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let secrets = SecretsDir::watch(dir)?;
    let resolver = CertResolver::new(&secrets, CertFiles::kubernetes_tls(), provider.clone());
    resolver.value().wait_ready(Duration::from_secs(30)).await?;
    let _log = resolver
        .value()
        .on_change(|_| println!("serving a new certificate to new connections"));

    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver.clone()));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

    let generation = resolver.value().clone();
    let app = Router::new().route(
        "/",
        get(move || {
            let generation = generation.generation();
            async move { format!("hello over TLS, certificate generation {generation}\n") }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on https://{addr}");
    loop {
        let (tcp, _) = listener.accept().await?;
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            if let Ok(tls) = acceptor.accept(tcp).await {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                    .await;
            }
        });
    }
}
