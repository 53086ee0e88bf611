//! The emulator's admin API over HTTP (under `/admin` on the login server), for the demo, the Python tests and
//! anyone driving `wi-emulator` from outside Rust. Every call mirrors a method of [`Admin`].

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Admin, CertificateFormat, Fault, FaultTarget, FederatedCredential, Identity, KeyKind, TOKEN_EXCHANGE_AUDIENCE,
};

pub(crate) fn router(admin: Admin) -> Router {
    Router::new()
        .route("/identities", post(add_identity))
        .route("/identities/{client_id}/federated-credentials", post(add_federated))
        .route("/trusted-issuers", post(trust_issuer))
        .route("/service-account-tokens", post(service_account_token))
        .route("/vaults", post(create_vault))
        .route("/vaults/{vault}/access", post(grant))
        .route("/vaults/{vault}/secrets/{name}", put(set_secret))
        .route("/vaults/{vault}/secrets/{name}/enabled", put(set_enabled))
        .route("/vaults/{vault}/keys/{name}", post(create_key))
        .route("/vaults/{vault}/certificates/{name}", post(create_certificate))
        .route("/faults", put(set_fault))
        .route("/counters", get(counters))
        .with_state(admin)
}

fn bad_request(message: impl std::fmt::Display) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": message.to_string()}))).into_response()
}

#[derive(Deserialize)]
struct NewIdentity {
    name: String,
    tenant_id: String,
    client_id: Option<String>,
    principal_id: Option<String>,
}

async fn add_identity(State(admin): State<Admin>, Json(body): Json<NewIdentity>) -> Response {
    let identity = match (body.client_id, body.principal_id) {
        (Some(client_id), principal_id) => {
            let identity = Identity {
                name: body.name,
                client_id,
                principal_id: principal_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                tenant_id: body.tenant_id,
            };
            admin.add_identity_with_ids(identity.clone());
            identity
        }
        (None, _) => admin.add_identity(&body.name, &body.tenant_id),
    };
    Json(json!({"name": identity.name, "client_id": identity.client_id,
                "principal_id": identity.principal_id, "tenant_id": identity.tenant_id}))
    .into_response()
}

#[derive(Deserialize)]
struct NewFederated {
    issuer: String,
    subject: String,
    audience: Option<String>,
}

async fn add_federated(
    State(admin): State<Admin>,
    Path(client_id): Path<String>,
    Json(body): Json<NewFederated>,
) -> Response {
    admin.add_federated_credential(
        &client_id,
        FederatedCredential {
            issuer: body.issuer,
            subject: body.subject,
            audience: body.audience.unwrap_or_else(|| TOKEN_EXCHANGE_AUDIENCE.to_owned()),
        },
    );
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
struct TrustedIssuer {
    issuer: String,
    jwks: Value,
}

async fn trust_issuer(State(admin): State<Admin>, Json(body): Json<TrustedIssuer>) -> Response {
    admin.trust_issuer(&body.issuer, body.jwks);
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
struct TokenRequest {
    namespace: String,
    name: String,
    audience: Option<String>,
    lifetime_seconds: Option<u64>,
}

async fn service_account_token(State(admin): State<Admin>, Json(body): Json<TokenRequest>) -> Response {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    match admin.service_account_token_for(
        &body.namespace,
        &body.name,
        body.audience.as_deref().unwrap_or(TOKEN_EXCHANGE_AUDIENCE),
        now,
        Duration::from_secs(body.lifetime_seconds.unwrap_or(3600)),
    ) {
        Ok(token) => Json(json!({"token": token})).into_response(),
        Err(error) => bad_request(error),
    }
}

#[derive(Deserialize)]
struct NewVault {
    name: String,
    tenant_id: String,
}

async fn create_vault(State(admin): State<Admin>, Json(body): Json<NewVault>) -> Response {
    match admin.create_vault(&body.name, &body.tenant_id).await {
        Ok(url) => Json(json!({"name": body.name, "url": url})).into_response(),
        Err(error) => bad_request(error),
    }
}

#[derive(Deserialize)]
struct Access {
    principal_id: String,
    permissions: Vec<String>,
}

async fn grant(State(admin): State<Admin>, Path(vault): Path<String>, Json(body): Json<Access>) -> Response {
    let permissions: Vec<&str> = body.permissions.iter().map(String::as_str).collect();
    admin.grant(&vault, &body.principal_id, &permissions);
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
struct NewSecret {
    value: String,
    content_type: Option<String>,
    /// A certificate-backed secret (`managed`, with a `kid`).
    #[serde(default)]
    certificate: bool,
}

async fn set_secret(
    State(admin): State<Admin>,
    Path((vault, name)): Path<(String, String)>,
    Json(body): Json<NewSecret>,
) -> Response {
    let result = if body.certificate {
        admin.set_certificate_secret(
            &vault,
            &name,
            &body.value,
            body.content_type.as_deref().unwrap_or("application/x-pem-file"),
        )
    } else {
        admin.set_secret(&vault, &name, &body.value, body.content_type.as_deref())
    };
    match result {
        Ok(version) => Json(json!({"version": version})).into_response(),
        Err(error) => bad_request(error),
    }
}

#[derive(Deserialize)]
struct NewKey {
    /// `RSA` (2048 bits, the default) or `EC` (P-256).
    kty: Option<String>,
}

async fn create_key(
    State(admin): State<Admin>,
    Path((vault, name)): Path<(String, String)>,
    Json(body): Json<NewKey>,
) -> Response {
    let kind = match body.kty.as_deref().unwrap_or("RSA") {
        "RSA" => KeyKind::Rsa2048,
        "EC" => KeyKind::EcP256,
        other => return bad_request(format!("kty {other:?}: expected RSA or EC")),
    };
    match admin.create_key(&vault, &name, kind) {
        Ok(key) => Json(json!({"version": key.version, "public_key_pem": key.public_key_pem})).into_response(),
        Err(error) => bad_request(error),
    }
}

#[derive(Deserialize)]
struct NewCertificate {
    subject: String,
    /// `application/x-pkcs12` (the default) or `application/x-pem-file`.
    content_type: Option<String>,
}

async fn create_certificate(
    State(admin): State<Admin>,
    Path((vault, name)): Path<(String, String)>,
    Json(body): Json<NewCertificate>,
) -> Response {
    let format = match body.content_type.as_deref().unwrap_or("application/x-pkcs12") {
        "application/x-pkcs12" => CertificateFormat::Pkcs12,
        "application/x-pem-file" => CertificateFormat::Pem,
        other => {
            return bad_request(format!(
                "content_type {other:?}: expected application/x-pkcs12 or application/x-pem-file"
            ));
        }
    };
    match admin.create_certificate(&vault, &name, &body.subject, format) {
        Ok(c) => Json(json!({"version": c.version, "leaf_pem": c.leaf_pem, "ca_pem": c.ca_pem, "key_pem": c.key_pem}))
            .into_response(),
        Err(error) => bad_request(error),
    }
}

#[derive(Deserialize)]
struct Enabled {
    enabled: bool,
}

async fn set_enabled(
    State(admin): State<Admin>,
    Path((vault, name)): Path<(String, String)>,
    Json(body): Json<Enabled>,
) -> Response {
    admin.set_enabled(&vault, &name, body.enabled);
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
struct FaultRequest {
    /// `"token"` or a vault name.
    target: String,
    status: Option<u16>,
    retry_after: Option<u64>,
    latency_ms: Option<u64>,
    #[serde(default)]
    drop_connection: bool,
    times: Option<u32>,
    /// Clears the fault instead.
    #[serde(default)]
    clear: bool,
}

async fn set_fault(State(admin): State<Admin>, Json(body): Json<FaultRequest>) -> Response {
    let target = if body.target == "token" {
        FaultTarget::Token
    } else {
        FaultTarget::Vault(body.target)
    };
    let fault = (!body.clear).then(|| Fault {
        status: body.status,
        retry_after: body.retry_after,
        latency: Duration::from_millis(body.latency_ms.unwrap_or(0)),
        drop_connection: body.drop_connection,
        times: body.times,
    });
    admin.set_fault(target, fault);
    StatusCode::NO_CONTENT.into_response()
}

async fn counters(State(admin): State<Admin>) -> Response {
    Json(admin.counters()).into_response()
}
