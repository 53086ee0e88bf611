//! `wi_sdk::identity` against the emulator as a custom cloud: authority host and extra CA from `CloudOptions`,
//! client, tenant and token file from the env the webhook injects.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use wi_sdk::identity::{CloudOptions, from_vars_with};
use wi_testbed::Emulator;

#[tokio::test]
async fn the_sdk_identity_helper_gets_a_token_from_a_custom_cloud() {
    let emulator = Emulator::start().await.unwrap();
    let tenant = "d2f0c8a4-3b1e-4c6d-9e8f-7a6b5c4d3e2f";
    let identity = emulator.add_workload_identity("mi-aks-workload", tenant, "default", "my-app-sa");
    let dir = tempfile::tempdir().unwrap();
    let env: HashMap<&str, String> = emulator
        .workload_env(
            &identity,
            "default",
            "my-app-sa",
            &dir.path().join("azure-identity-token"),
        )
        .unwrap()
        .into_iter()
        .collect();
    let cloud = CloudOptions {
        authority_host: Some(emulator.authority_host().to_owned()),
        extra_ca_file: Some(emulator.ca_file().to_owned()),
    };
    let credential = from_vars_with(|name| env.get(name).cloned(), &cloud).unwrap();
    let token = credential
        .get_token(&["https://vault.azure.net/.default"], None)
        .await
        .unwrap();
    assert!(token.token.secret().split('.').count() == 3, "a JWT");
    assert_eq!(emulator.counters().get("token"), Some(&1));

    // Without the extra CA the emulator's certificate is not trusted.
    let untrusted = CloudOptions {
        extra_ca_file: None,
        ..cloud
    };
    let credential = from_vars_with(|name| env.get(name).cloned(), &untrusted).unwrap();
    // The SDK retries a TLS failure for a long time; failing or still retrying after 3 s both mean no token.
    let attempt = tokio::time::timeout(
        Duration::from_secs(3),
        credential.get_token(&["https://vault.azure.net/.default"], None),
    )
    .await;
    assert!(
        !matches!(attempt, Ok(Ok(_))),
        "a token came through an untrusted certificate"
    );
    assert_eq!(emulator.counters().get("token"), Some(&1), "no request got through TLS");
}

/// `AZURE_AUTHORITY_HOST` is read through the given lookup like the other variables: a process can build the
/// credential of a pod whose env it holds (as `wi-demo` does) without touching its own environment.
#[tokio::test]
async fn the_authority_host_comes_from_the_given_variables() {
    let emulator = Emulator::start().await.unwrap();
    let tenant = "d2f0c8a4-3b1e-4c6d-9e8f-7a6b5c4d3e2f";
    let identity = emulator.add_workload_identity("mi-aks-workload", tenant, "default", "my-app-sa");
    let dir = tempfile::tempdir().unwrap();
    let env: HashMap<&str, String> = emulator
        .workload_env(&identity, "default", "my-app-sa", &dir.path().join("token"))
        .unwrap()
        .into_iter()
        .collect();
    assert!(env["AZURE_AUTHORITY_HOST"].starts_with("https://127.0.0.1:"));
    assert!(std::env::var_os("AZURE_AUTHORITY_HOST").is_none());
    let cloud = CloudOptions {
        authority_host: None,
        extra_ca_file: Some(emulator.ca_file().to_owned()),
    };
    let credential = from_vars_with(|name| env.get(name).cloned(), &cloud).unwrap();
    let token = tokio::time::timeout(
        Duration::from_secs(20),
        credential.get_token(&["https://vault.azure.net/.default"], None),
    )
    .await
    .expect("no answer: the public cloud was asked instead of the emulator")
    .unwrap();
    assert_eq!(token.token.secret().split('.').count(), 3);
    assert_eq!(emulator.counters().get("token"), Some(&1));
}
