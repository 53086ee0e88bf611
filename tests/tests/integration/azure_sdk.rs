//! The emulator driven by Microsoft's Rust SDKs (`azure_identity`'s `WorkloadIdentityCredential` and
//! `azure_security_keyvault_secrets`'s `SecretClient`), over real TLS trusting only the emulator's CA. The vault is
//! called by a `*.vault.localhost` name (resolved to 127.0.0.1 by the client), so the SDK's challenge-resource check
//! stays on.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::http::{ClientOptions, RetryOptions, Transport};
use azure_identity::{ClientAssertionCredentialOptions, WorkloadIdentityCredential, WorkloadIdentityCredentialOptions};
use azure_security_keyvault_secrets::models::SecretClientGetSecretOptions;
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use wi_testbed::Emulator;
use wi_testbed::emulator::{Fault, FaultTarget, FederatedCredential, Identity, TOKEN_EXCHANGE_AUDIENCE};

const TENANT: &str = "d2f0c8a4-3b1e-4c6d-9e8f-7a6b5c4d3e2f";

struct World {
    emulator: Emulator,
    identity: Identity,
    vault_addr: std::net::SocketAddr,
    _token_dir: tempfile::TempDir,
    token_file: std::path::PathBuf,
}

async fn world() -> World {
    // The workspace's reqwest has no TLS crypto provider of its own (`rustls-no-provider`): the process default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let emulator = Emulator::start().await.unwrap();
    let identity = emulator.add_workload_identity("mi-aks-workload", TENANT, "default", "my-app-sa");
    let url = emulator.create_vault("kv-techventure-001", TENANT).await.unwrap();
    emulator.grant("kv-techventure-001", &identity.principal_id, &["get", "list"]);
    let vault_addr = url.trim_start_matches("https://").parse().unwrap();
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("azure-identity-token");
    let token = emulator
        .service_account_token("default", "my-app-sa", Duration::from_secs(3600))
        .unwrap();
    std::fs::write(&token_file, token).unwrap();
    World {
        emulator,
        identity,
        vault_addr,
        _token_dir: token_dir,
        token_file,
    }
}

impl World {
    fn vault_url(&self) -> String {
        format!("https://kv-techventure-001.vault.localhost:{}", self.vault_addr.port())
    }

    fn client_options(&self, retry: RetryOptions) -> ClientOptions {
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.emulator.ca_pem().as_bytes()).unwrap())
            .resolve("kv-techventure-001.vault.localhost", self.vault_addr)
            .no_proxy()
            .build()
            .unwrap();
        let mut cloud = CustomConfiguration::default();
        cloud.authority_host = self.emulator.authority_host().to_owned();
        ClientOptions {
            transport: Some(Transport::new(Arc::new(http))),
            retry,
            cloud: Some(Arc::new(CloudConfiguration::Custom(cloud))),
            ..ClientOptions::default()
        }
    }

    fn client(&self, client_id: &str, retry: RetryOptions) -> SecretClient {
        let credential = WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
            client_id: Some(client_id.to_owned()),
            tenant_id: Some(TENANT.to_owned()),
            token_file_path: Some(self.token_file.clone()),
            credential_options: ClientAssertionCredentialOptions {
                client_options: self.client_options(RetryOptions::none()),
            },
        }))
        .unwrap();
        SecretClient::new(
            &self.vault_url(),
            credential,
            Some(SecretClientOptions {
                client_options: self.client_options(retry),
                ..SecretClientOptions::default()
            }),
        )
        .unwrap()
    }
}

fn error_chain(error: &azure_core::Error) -> String {
    let mut out = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        out.push_str(" | ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn error_code(error: &azure_core::Error) -> Option<String> {
    match error.kind() {
        azure_core::error::ErrorKind::HttpResponse { error_code, .. } => error_code.clone(),
        _ => None,
    }
}

#[tokio::test]
async fn get_latest_and_by_version_with_one_token_for_many_reads() {
    let world = world().await;
    let vault = "kv-techventure-001";
    let v1 = world
        .emulator
        .set_secret(vault, "MyWebAppSecret", "SuperSecureValue123!", None)
        .unwrap();
    let client = world.client(&world.identity.client_id, RetryOptions::none());

    let secret = client
        .get_secret("MyWebAppSecret", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(secret.value.as_deref(), Some("SuperSecureValue123!"));
    assert!(secret.id.unwrap().ends_with(&format!("/secrets/MyWebAppSecret/{v1}")));

    world
        .emulator
        .set_secret(vault, "MyWebAppSecret", "RotatedValue456!", None)
        .unwrap();
    let latest = client
        .get_secret("MyWebAppSecret", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(latest.value.as_deref(), Some("RotatedValue456!"));
    let old = client
        .get_secret(
            "MyWebAppSecret",
            Some(SecretClientGetSecretOptions {
                secret_version: Some(v1.clone()),
                ..Default::default()
            }),
        )
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(old.value.as_deref(), Some("SuperSecureValue123!"));

    let counters = world.emulator.counters();
    assert_eq!(counters.get("token"), Some(&1), "{counters:?}");
    assert_eq!(counters.get(&format!("{vault} get-secret")), Some(&3), "{counters:?}");
}

#[tokio::test]
async fn a_certificate_backed_secret_a_missing_one_and_a_disabled_one() {
    let world = world().await;
    let vault = "kv-techventure-001";
    world
        .emulator
        .set_certificate_secret(
            vault,
            "web-cert",
            "-----BEGIN PRIVATE KEY-----\n...",
            "application/x-pem-file",
        )
        .unwrap();
    let client = world.client(&world.identity.client_id, RetryOptions::none());
    let cert = client.get_secret("web-cert", None).await.unwrap().into_model().unwrap();
    assert_eq!(cert.content_type.as_deref(), Some("application/x-pem-file"));
    assert_eq!(cert.managed, Some(true));
    assert!(cert.kid.unwrap().contains("/keys/web-cert/"));

    let missing = client.get_secret("nope", None).await.unwrap_err();
    assert_eq!(missing.http_status().map(u16::from), Some(404));
    assert_eq!(
        error_code(&missing).as_deref(),
        Some("SecretNotFound"),
        "{}",
        error_chain(&missing)
    );

    world.emulator.set_secret(vault, "old", "x", None).unwrap();
    world.emulator.set_enabled(vault, "old", false);
    let disabled = client.get_secret("old", None).await.unwrap_err();
    assert_eq!(disabled.http_status().map(u16::from), Some(403));
    assert_eq!(error_code(&disabled).as_deref(), Some("Forbidden"));
}

#[tokio::test]
async fn an_identity_without_access_gets_403_and_a_federation_mismatch_is_aadsts700213() {
    let world = world().await;
    world.emulator.set_secret("kv-techventure-001", "s", "v", None).unwrap();

    let outsider = world
        .emulator
        .add_workload_identity("mi-other", TENANT, "default", "my-app-sa");
    let forbidden = world
        .client(&outsider.client_id, RetryOptions::none())
        .get_secret("s", None)
        .await
        .unwrap_err();
    assert_eq!(
        forbidden.http_status().map(u16::from),
        Some(403),
        "{}",
        error_chain(&forbidden)
    );
    assert!(
        error_chain(&forbidden).contains("does not have secrets get permission"),
        "{}",
        error_chain(&forbidden)
    );

    let stranger = world.emulator.add_identity("mi-no-federation", TENANT);
    let mismatch = world
        .client(&stranger.client_id, RetryOptions::none())
        .get_secret("s", None)
        .await
        .unwrap_err();
    assert!(
        error_chain(&mismatch).contains("AADSTS700213"),
        "{}",
        error_chain(&mismatch)
    );
}

#[tokio::test]
async fn a_429_with_retry_after_is_retried_by_the_sdk() {
    let world = world().await;
    world.emulator.set_secret("kv-techventure-001", "s", "v", None).unwrap();
    let client = world.client(&world.identity.client_id, RetryOptions::default());
    // Warm up the token, then throttle the next request once.
    client.get_secret("s", None).await.unwrap();
    world.emulator.set_fault(
        FaultTarget::Vault("kv-techventure-001".to_owned()),
        Some(Fault {
            status: Some(429),
            retry_after: Some(1),
            times: Some(1),
            ..Fault::default()
        }),
    );
    let started = std::time::Instant::now();
    let secret = client.get_secret("s", None).await.unwrap().into_model().unwrap();
    assert_eq!(secret.value.as_deref(), Some("v"));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was not honoured: {:?}",
        started.elapsed()
    );
    assert_eq!(world.emulator.counters().get("kv-techventure-001 get-secret"), Some(&2));
}

#[tokio::test]
async fn an_unknown_application_and_an_expired_assertion_are_refused_as_entra_does() {
    let world = world().await;
    world.emulator.set_secret("kv-techventure-001", "s", "v", None).unwrap();
    let unknown = world
        .client("0f3e5c1a-2b4d-4c6e-8f10-a1b2c3d4e5f6", RetryOptions::none())
        .get_secret("s", None)
        .await
        .unwrap_err();
    assert!(
        error_chain(&unknown).contains("AADSTS700016"),
        "{}",
        error_chain(&unknown)
    );

    let issued_long_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 7200;
    let expired = world
        .emulator
        .service_account_token_for(
            "default",
            "my-app-sa",
            TOKEN_EXCHANGE_AUDIENCE,
            issued_long_ago,
            Duration::from_secs(3600),
        )
        .unwrap();
    std::fs::write(&world.token_file, expired).unwrap();
    let refused = world
        .client(&world.identity.client_id, RetryOptions::none())
        .get_secret("s", None)
        .await
        .unwrap_err();
    assert!(
        error_chain(&refused).contains("AADSTS700024"),
        "{}",
        error_chain(&refused)
    );
}

#[tokio::test]
async fn secrets_and_versions_are_listed() {
    use futures::TryStreamExt;
    let world = world().await;
    let vault = "kv-techventure-001";
    let v1 = world.emulator.set_secret(vault, "a", "1", None).unwrap();
    let v2 = world.emulator.set_secret(vault, "a", "2", None).unwrap();
    world.emulator.set_secret(vault, "b", "3", None).unwrap();
    let client = world.client(&world.identity.client_id, RetryOptions::none());
    let names: Vec<String> = client
        .list_secret_properties(None)
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id.unwrap().rsplit('/').next().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["a", "b"]);
    let mut versions: Vec<String> = client
        .list_secret_properties_versions("a", None)
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id.unwrap().rsplit('/').next().unwrap().to_owned())
        .collect();
    versions.sort();
    let mut expected = vec![v1, v2];
    expected.sort();
    assert_eq!(versions, expected);
}

#[tokio::test]
async fn tokens_of_a_trusted_external_issuer_are_accepted() {
    let world = world().await;
    world.emulator.set_secret("kv-techventure-001", "s", "v", None).unwrap();
    // Another cluster's issuer, e.g. a real kube-apiserver: the emulator only knows its JWKS.
    let external = wi_testbed::jwt::Signer::generate().unwrap();
    let issuer = "https://oidc.prod-aks.example/7f3a/";
    world.emulator.trust_issuer(issuer, external.jwks());
    world.emulator.add_federated_credential(
        &world.identity.client_id,
        FederatedCredential {
            issuer: issuer.to_owned(),
            subject: "system:serviceaccount:payments:api".to_owned(),
            audience: TOKEN_EXCHANGE_AUDIENCE.to_owned(),
        },
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = external
        .sign(
            &serde_json::json!({"iss": issuer, "sub": "system:serviceaccount:payments:api",
                                  "aud": [TOKEN_EXCHANGE_AUDIENCE], "iat": now, "nbf": now, "exp": now + 600}),
        )
        .unwrap();
    std::fs::write(&world.token_file, token).unwrap();
    let secret = world
        .client(&world.identity.client_id, RetryOptions::none())
        .get_secret("s", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(secret.value.as_deref(), Some("v"));
}

#[tokio::test]
async fn a_503_and_a_dropped_connection_are_errors_the_client_sees() {
    let world = world().await;
    let vault = "kv-techventure-001";
    world.emulator.set_secret(vault, "s", "v", None).unwrap();
    let client = world.client(&world.identity.client_id, RetryOptions::none());
    client.get_secret("s", None).await.unwrap();

    world.emulator.set_fault(
        FaultTarget::Vault(vault.to_owned()),
        Some(Fault {
            status: Some(503),
            times: Some(1),
            ..Fault::default()
        }),
    );
    let unavailable = client.get_secret("s", None).await.unwrap_err();
    assert_eq!(unavailable.http_status().map(u16::from), Some(503));

    world.emulator.set_fault(
        FaultTarget::Vault(vault.to_owned()),
        Some(Fault {
            drop_connection: true,
            times: Some(1),
            ..Fault::default()
        }),
    );
    let dropped = client.get_secret("s", None).await.unwrap_err();
    assert_eq!(dropped.http_status(), None, "{}", error_chain(&dropped));

    // Faults with a count clear themselves.
    assert_eq!(
        client
            .get_secret("s", None)
            .await
            .unwrap()
            .into_model()
            .unwrap()
            .value
            .as_deref(),
        Some("v")
    );
}
