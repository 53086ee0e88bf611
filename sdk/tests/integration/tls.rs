//! A TLS server whose certificate comes from a watched directory: clients connecting after a rotation get the new
//! certificate, and a rotation to a key that does not match keeps the old one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::common::kubelet_write;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncWriteExt;
use wi_sdk::SecretsDir;
use wi_sdk::tls::{CertFiles, CertResolver};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

struct Ca {
    key: rcgen::KeyPair,
    params: rcgen::CertificateParams,
    der: CertificateDer<'static>,
}

struct Leaf {
    cert: String,
    key: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let der = params.self_signed(&key).unwrap().der().clone();
        Ca { key, params, der }
    }

    fn leaf(&self) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

/// Serves TLS with `resolver` until the test ends: each connection gets the handshake and one line.
async fn serve(resolver: CertResolver) -> SocketAddr {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tls.write_all(b"ok\n").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    addr
}

/// The leaf certificate a new client connection is served.
async fn served(addr: SocketAddr, ca: &Ca) -> CertificateDer<'static> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

async fn wait_generation(resolver: &CertResolver, generation: u64) {
    for _ in 0..250 {
        if resolver.value().generation() >= generation {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("generation {generation} not reached: {:?}", resolver.value());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_after_a_rotation_get_the_new_certificate_and_a_mismatched_key_keeps_the_old() {
    let ca = Ca::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tls");
    let (a, b) = (ca.leaf(), ca.leaf());
    kubelet_write(&dir, &[("tls.crt", a.cert.as_bytes()), ("tls.key", a.key.as_bytes())]);

    let secrets = SecretsDir::watch(&dir).unwrap();
    let resolver = CertResolver::new(&secrets, CertFiles::kubernetes_tls(), provider());
    resolver.value().wait_ready(Duration::from_secs(5)).await.unwrap();
    let addr = serve(resolver.clone()).await;
    assert_eq!(served(addr, &ca).await, a.der);

    kubelet_write(&dir, &[("tls.crt", b.cert.as_bytes()), ("tls.key", b.key.as_bytes())]);
    wait_generation(&resolver, 2).await;
    assert_eq!(served(addr, &ca).await, b.der);

    // A rotation to a certificate with another pair's key is rejected; b is still served.
    let (c, d) = (ca.leaf(), ca.leaf());
    kubelet_write(&dir, &[("tls.crt", c.cert.as_bytes()), ("tls.key", d.key.as_bytes())]);
    for _ in 0..250 {
        if resolver.value().stale().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stale = resolver.value().stale().expect("the mismatched pair was rejected");
    assert!(
        stale.error.contains("tls.key does not go with tls.crt"),
        "{}",
        stale.error
    );
    assert_eq!(served(addr, &ca).await, b.der);
    assert_eq!(resolver.value().generation(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_vault_style_single_pem_files_are_served() {
    let ca = Ca::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("kv");
    let leaf = ca.leaf();
    // Key Vault gives a certificate read as a secret in PEM as the private key followed by the chain.
    let combined = format!("{}{}", leaf.key, leaf.cert);
    kubelet_write(&dir, &[("web-cert", combined.as_bytes())]);
    let secrets = SecretsDir::watch(&dir).unwrap();
    let resolver = CertResolver::new(&secrets, CertFiles::Combined("web-cert".to_owned()), provider());
    resolver.value().wait_ready(Duration::from_secs(5)).await.unwrap();
    let addr = serve(resolver).await;
    assert_eq!(served(addr, &ca).await, leaf.der);
}
