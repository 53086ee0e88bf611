//! `wi-sidecar`'s fetch against the emulator: a SecretProviderClass's secrets become file contents with one token
//! for all of them, all or nothing, and errors name the object.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use base64::Engine as _;
use wi_sdk::identity::{CloudOptions, client_options};
use wi_sidecar::atomic_writer::AtomicWriter;
use wi_sidecar::sync::{Fetcher, SyncError};
use wi_testbed::Emulator;

const TENANT: &str = "d2f0c8a4-3b1e-4c6d-9e8f-7a6b5c4d3e2f";
const VAULT: &str = "kv-techventure-001";

fn class(objects: &str) -> wi_sidecar::config::SyncConfig {
    let indented: String = objects.lines().map(|l| format!("      {l}\n")).collect();
    wi_sidecar::config::parse(&format!(
        "keyvaultName: {VAULT}\ntenantId: {TENANT}\nobjects: |\n  array:\n{indented}"
    ))
    .unwrap()
}

/// A fetcher as the sidecar builds it, with the token file in a directory that lives as long as the test.
async fn fetcher(
    emulator: &Emulator,
    vault_url: &str,
    config: wi_sidecar::config::SyncConfig,
) -> (Fetcher, tempfile::TempDir) {
    let identity = emulator.add_workload_identity("mi-sidecar", TENANT, "default", "my-app-sa");
    emulator.grant(VAULT, &identity.principal_id, &["get"]);
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(
        &token_file,
        emulator
            .service_account_token("default", "my-app-sa", Duration::from_secs(3600))
            .unwrap(),
    )
    .unwrap();
    let cloud = CloudOptions {
        authority_host: Some(emulator.authority_host().to_owned()),
        extra_ca_file: Some(emulator.ca_file().to_owned()),
    };
    let env = [
        ("AZURE_CLIENT_ID", identity.client_id.clone()),
        ("AZURE_TENANT_ID", TENANT.to_owned()),
        ("AZURE_FEDERATED_TOKEN_FILE", token_file.display().to_string()),
    ];
    let credential = wi_sdk::identity::from_vars_with(
        |name| env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone()),
        &cloud,
    )
    .unwrap();
    let mut options = client_options(&cloud).unwrap();
    options.retry = azure_core::http::RetryOptions::none();
    (
        Fetcher::new(config, vault_url, credential, options, false, 4).unwrap(),
        dir,
    )
}

#[tokio::test]
async fn secrets_become_files_with_one_token() {
    let emulator = Emulator::start().await.unwrap();
    let url = emulator.create_vault(VAULT, TENANT).await.unwrap();
    emulator
        .set_secret(VAULT, "MyWebAppSecret", "SuperSecureValue123!", None)
        .unwrap();
    let raw = [0u8, 159, 146, 150, 255];
    emulator
        .set_secret(
            VAULT,
            "blob",
            &base64::engine::general_purpose::STANDARD.encode(raw),
            None,
        )
        .unwrap();
    emulator.set_secret(VAULT, "hexed", "00ff10", None).unwrap();
    emulator
        .set_certificate_secret(
            VAULT,
            "web-cert",
            "-----BEGIN PRIVATE KEY-----\nk\n-----END PRIVATE KEY-----\n",
            "application/x-pem-file",
        )
        .unwrap();
    let config = class(
        "- |\n  objectName: MyWebAppSecret\n  objectType: secret\n\
         - |\n  objectName: blob\n  objectType: secret\n  objectEncoding: base64\n  objectAlias: bin/blob\n  filePermission: \"0600\"\n\
         - |\n  objectName: hexed\n  objectType: secret\n  objectEncoding: hex\n\
         - |\n  objectName: web-cert\n  objectType: secret\n  objectAlias: tls.pem",
    );
    let (fetcher, _token) = fetcher(&emulator, &url, config).await;
    let files = fetcher.fetch_all().await.unwrap();
    assert_eq!(files["MyWebAppSecret"].data, b"SuperSecureValue123!");
    assert_eq!(files["bin/blob"].data, raw);
    assert_eq!(files["bin/blob"].mode, 0o600);
    assert_eq!(files["hexed"].data, [0, 255, 16]);
    assert!(files["tls.pem"].data.starts_with(b"-----BEGIN PRIVATE KEY-----"));
    let counters = emulator.counters();
    assert_eq!(
        counters.get("token"),
        Some(&1),
        "one token for four objects: {counters:?}"
    );
    assert_eq!(counters.get(&format!("{VAULT} get-secret")), Some(&4));

    // And they are written the way kubelet writes a volume.
    let out = tempfile::tempdir().unwrap();
    AtomicWriter::new(out.path()).write(&files).unwrap();
    assert_eq!(std::fs::read(out.path().join("bin/blob")).unwrap(), raw);
}

#[tokio::test]
async fn one_missing_object_fails_the_whole_sync_and_is_named() {
    let emulator = Emulator::start().await.unwrap();
    let url = emulator.create_vault(VAULT, TENANT).await.unwrap();
    emulator.set_secret(VAULT, "present", "v", None).unwrap();
    let config = class(
        "- |\n  objectName: present\n  objectType: secret\n\
         - |\n  objectName: absent\n  objectType: secret",
    );
    let (fetcher, _token) = fetcher(&emulator, &url, config).await;
    let error = fetcher.fetch_all().await.unwrap_err();
    assert_eq!(error.to_string(), "secret absent: not found in the vault");
    assert!(matches!(error, SyncError::Object { status: Some(404), .. }));
}

#[tokio::test]
async fn throttling_is_reported_with_its_retry_after_and_without_values() {
    let emulator = Emulator::start().await.unwrap();
    let url = emulator.create_vault(VAULT, TENANT).await.unwrap();
    emulator.set_secret(VAULT, "s", "hunter2", None).unwrap();
    emulator.set_fault(
        wi_testbed::emulator::FaultTarget::Vault(VAULT.to_owned()),
        Some(wi_testbed::emulator::Fault {
            status: Some(429),
            retry_after: Some(7),
            ..Default::default()
        }),
    );
    let (fetcher, _token) = fetcher(&emulator, &url, class("- |\n  objectName: s\n  objectType: secret")).await;
    let error = fetcher.fetch_all().await.unwrap_err();
    assert_eq!(error.retry_after(), Some(7), "{error}");
    assert!(error.to_string().contains("throttled"), "{error}");
    assert!(!format!("{error:?}").contains("hunter2"));
}
