//! Key Vault secrets: the bundle, the latest or a given version, listings of secrets and of versions.

use axum::extract::{Path as UrlPath, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::vault::{VaultState, attributes, authorize, page, pick};
use super::*;

fn secret_bundle(base: &str, name: &str, s: &SecretVersion) -> Value {
    let mut bundle = json!({
        "value": s.value,
        "id": format!("{base}/secrets/{name}/{}", s.version),
        "attributes": attributes(s.enabled, s.created),
        "tags": {},
    });
    if let Some(ct) = &s.content_type {
        bundle["contentType"] = json!(ct);
    }
    if s.managed {
        bundle["managed"] = json!(true);
        bundle["kid"] = json!(s.kid);
    }
    bundle
}

// An error here is the response to send: axum responses are large, and these are cold paths.
#[allow(clippy::result_large_err)]
fn find_version(inner: &Inner, vault: &str, name: &str, version: Option<&str>) -> Result<SecretVersion, Response> {
    let state = inner.state();
    pick(
        state.vaults.get(vault).and_then(|v| v.secrets.get(name)),
        name,
        version,
        ("secret", "Secret"),
    )
}

pub(super) async fn get_latest(
    State((inner, vault)): VaultState,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    get_secret(&inner, &vault, &name, None, &headers).await
}

pub(super) async fn get_version(
    State((inner, vault)): VaultState,
    UrlPath((name, version)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    get_secret(&inner, &vault, &name, Some(&version), &headers).await
}

async fn get_secret(inner: &Inner, vault: &str, name: &str, version: Option<&str>, headers: &HeaderMap) -> Response {
    let base = match authorize(inner, vault, headers, "get", "get-secret").await {
        Ok(base) => base,
        Err(response) => return response,
    };
    match find_version(inner, vault, name, version) {
        Ok(secret) => axum::Json(secret_bundle(&base, name, &secret)).into_response(),
        Err(response) => response,
    }
}

pub(super) fn item(base: &str, id: String, s: &SecretVersion) -> Value {
    let mut item = secret_bundle(base, "", s);
    if let Some(object) = item.as_object_mut() {
        object.remove("value");
        object.insert("id".to_owned(), json!(id));
    }
    item
}

pub(super) async fn list_secrets(State((inner, vault)): VaultState, headers: HeaderMap) -> Response {
    let base = match authorize(&inner, &vault, &headers, "list", "list-secrets").await {
        Ok(base) => base,
        Err(response) => return response,
    };
    let state = inner.state();
    let items: Vec<Value> = state
        .vaults
        .get(&vault)
        .map(|v| {
            v.secrets
                .iter()
                .filter_map(|(name, versions)| {
                    versions
                        .last()
                        .map(|s| item(&base, format!("{base}/secrets/{name}"), s))
                })
                .collect()
        })
        .unwrap_or_default();
    page(items)
}

pub(super) async fn list_versions(
    State((inner, vault)): VaultState,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let base = match authorize(&inner, &vault, &headers, "list", "list-versions").await {
        Ok(base) => base,
        Err(response) => return response,
    };
    let state = inner.state();
    let items: Vec<Value> = state
        .vaults
        .get(&vault)
        .and_then(|v| v.secrets.get(&name))
        .map(|versions| {
            versions
                .iter()
                .map(|s| item(&base, format!("{base}/secrets/{name}/{}", s.version), s))
                .collect()
        })
        .unwrap_or_default();
    page(items)
}
