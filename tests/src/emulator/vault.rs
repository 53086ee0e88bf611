//! What every Key Vault data-plane route shares: the bearer challenge and authorization, errors, picking a version,
//! listings, and the generic routes keys and certificates are served by.

use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::jwt;

use super::*;

pub(super) type VaultState = State<(Arc<Inner>, String)>;

#[derive(Debug, Deserialize, Serialize)]
struct AccessClaims {
    aud: String,
    tid: String,
    oid: String,
}

fn vault_error(status: StatusCode, code: &str, message: String, inner_code: Option<&str>) -> Response {
    let mut error = json!({"code": code, "message": message});
    if let Some(inner_code) = inner_code {
        error["innererror"] = json!({"code": inner_code});
    }
    (status, axum::Json(json!({"error": error}))).into_response()
}

/// The resource the vault announces: `https://vault.localhost` when it was called by a `*.vault.localhost` name
/// (so the SDKs' challenge-resource check can stay on), `https://vault.azure.net` otherwise.
fn resource_for(headers: &HeaderMap) -> &'static str {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| h.split(':').next().unwrap_or_default().to_owned())
        .unwrap_or_default();
    if host.ends_with(".vault.localhost") {
        "https://vault.localhost"
    } else {
        "https://vault.azure.net"
    }
}

/// The bearer challenge, authentication and authorization shared by every data-plane route; an authorized request
/// is counted under `VAULT route`. Returns the vault's base URL as the client called it, or the response to send.
#[allow(clippy::result_large_err)]
pub(super) async fn authorize(
    inner: &Inner,
    vault: &str,
    headers: &HeaderMap,
    permission: &str,
    route: &str,
) -> Result<String, Response> {
    if let Some(response) = apply_fault(inner.fault(&FaultTarget::Vault(vault.to_owned()))).await {
        return Err(response);
    }
    let (tenant, url, access) = {
        let state = inner.state();
        let Some(v) = state.vaults.get(vault) else {
            return Err(vault_error(
                StatusCode::NOT_FOUND,
                "VaultNotFound",
                format!("no vault {vault}"),
                None,
            ));
        };
        (v.tenant_id.clone(), v.url.clone(), v.access.clone())
    };
    let resource = resource_for(headers);
    let base_url = match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        Some(host) => format!("https://{host}"),
        None => url,
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "));
    let challenge = || {
        let mut response = vault_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "AKV10000: Request is missing a Bearer or PoP token.".to_owned(),
            None,
        );
        let value = format!(
            "Bearer authorization=\"{}{tenant}\", resource=\"{resource}\"",
            inner.login_url
        );
        if let Ok(value) = value.parse() {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        }
        response
    };
    let Some(bearer) = bearer else {
        inner.count(format!("{vault} challenge"));
        return Err(challenge());
    };
    let claims: AccessClaims = jwt::verify(bearer, &inner.entra.jwks()).map_err(|e| {
        vault_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            format!("AKV10032: Invalid token: {}", e.0),
            None,
        )
    })?;
    if claims.aud.trim_end_matches('/') != resource || claims.tid != tenant {
        return Err(vault_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            format!("AKV10022: Invalid audience or issuer. Expected '{resource}' in tenant '{tenant}'."),
            None,
        ));
    }
    let allowed = access
        .get(&claims.oid)
        .is_some_and(|p| p.iter().any(|p| p == permission));
    if !allowed {
        return Err(vault_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "The user, group or application 'appid={};oid={}' does not have secrets {permission} permission on key vault '{vault};location=emulator'.",
                claims.oid, claims.oid
            ),
            Some("AccessDenied"),
        ));
    }
    inner.count(format!("{vault} {route}"));
    Ok(base_url)
}

/// The version asked for (the latest when none), or Key Vault's 404 or disabled-object 403. `kind` is the object
/// kind as Key Vault spells it in messages and in error codes.
#[allow(clippy::result_large_err)]
pub(super) fn pick<T: Versioned>(
    versions: Option<&Vec<T>>,
    name: &str,
    version: Option<&str>,
    (kind, code): (&str, &str),
) -> Result<T, Response> {
    let found = match version.filter(|v| !v.is_empty() && *v != "latest") {
        Some(version) => versions.and_then(|all| all.iter().find(|s| s.version() == version)),
        None => versions.and_then(|all| all.last()),
    };
    let Some(found) = found else {
        return Err(vault_error(
            StatusCode::NOT_FOUND,
            &format!("{code}NotFound"),
            format!(
                "A {kind} with (name/id) {name} was not found in this key vault. If you recently deleted this {kind} you may be able to recover it using the correct recovery command."
            ),
            None,
        ));
    };
    if !found.enabled() {
        return Err(vault_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("Operation get is not allowed on a disabled {kind}."),
            Some(&format!("{code}Disabled")),
        ));
    }
    Ok(found.clone())
}

/// A listing as Key Vault pages it, here always in one page.
pub(super) fn page(items: Vec<Value>) -> Response {
    axum::Json(json!({"value": items, "nextLink": null})).into_response()
}

pub(super) fn attributes(enabled: bool, created: u64) -> Value {
    json!({"enabled": enabled, "created": created, "updated": created,
           "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90})
}

/// Keys and certificates, served by the same two generic routes.
pub(super) trait ObjectKind: Versioned + Send + 'static {
    /// As Key Vault spells the kind in messages, and in error codes.
    const KIND: (&'static str, &'static str);
    /// The counter name suffix: `get-{COUNTER}`, `list-{COUNTER}-versions`.
    const COUNTER: &'static str;
    fn versions<'a>(vault: &'a Vault, name: &str) -> Option<&'a Vec<Self>>;
    /// The bundle of one version: in full for a GET, the list item otherwise.
    fn bundle(&self, base: &str, name: &str, full: bool) -> Value;
}

pub(super) async fn get_object_latest<T: ObjectKind>(
    State((inner, vault)): VaultState,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    get_object::<T>(&inner, &vault, &name, None, &headers).await
}

pub(super) async fn get_object_version<T: ObjectKind>(
    State((inner, vault)): VaultState,
    UrlPath((name, version)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    get_object::<T>(&inner, &vault, &name, Some(&version), &headers).await
}

async fn get_object<T: ObjectKind>(
    inner: &Inner,
    vault: &str,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
) -> Response {
    let base = match authorize(inner, vault, headers, "get", &format!("get-{}", T::COUNTER)).await {
        Ok(base) => base,
        Err(response) => return response,
    };
    let found = {
        let state = inner.state();
        pick(
            state.vaults.get(vault).and_then(|v| T::versions(v, name)),
            name,
            version,
            T::KIND,
        )
    };
    match found {
        Ok(object) => axum::Json(object.bundle(&base, name, true)).into_response(),
        Err(response) => response,
    }
}

pub(super) async fn list_object_versions<T: ObjectKind>(
    State((inner, vault)): VaultState,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let route = format!("list-{}-versions", T::COUNTER);
    let base = match authorize(&inner, &vault, &headers, "list", &route).await {
        Ok(base) => base,
        Err(response) => return response,
    };
    let state = inner.state();
    let items: Vec<Value> = state
        .vaults
        .get(&vault)
        .and_then(|v| T::versions(v, &name))
        .map(|versions| versions.iter().map(|o| o.bundle(&base, &name, false)).collect())
        .unwrap_or_default();
    page(items)
}
