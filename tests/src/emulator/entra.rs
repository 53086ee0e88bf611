//! Entra ID's token endpoint: client credentials with a federated client assertion, checked against the
//! identities, their federated credentials and the trusted issuers.

use std::sync::Arc;

use axum::extract::{Form, Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::jwt;

use super::*;

/// An error body as Entra ID sends it.
fn entra_error(status: StatusCode, error: &str, code: u32, description: String) -> Response {
    let trace = uuid::Uuid::new_v4().to_string();
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {trace} Timestamp: {}", now()),
        "error_codes": [code],
        "timestamp": now().to_string(),
        "trace_id": trace,
        "correlation_id": trace,
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    });
    (status, axum::Json(body)).into_response()
}

#[derive(Debug, Deserialize)]
pub(super) struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_assertion_type: Option<String>,
    client_assertion: Option<String>,
    scope: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    #[serde(default)]
    aud: Audience,
}

#[derive(Debug, Deserialize, Default)]
#[serde(untagged)]
pub(super) enum Audience {
    One(String),
    Many(Vec<String>),
    #[default]
    None,
}

impl Audience {
    fn contains(&self, audience: &str) -> bool {
        match self {
            Audience::One(a) => a == audience,
            Audience::Many(all) => all.iter().any(|a| a == audience),
            Audience::None => false,
        }
    }
}

/// `POST /{tenant}/oauth2/v2.0/token`: client credentials with a federated client assertion.
pub(super) async fn token(
    State(inner): State<Arc<Inner>>,
    UrlPath(tenant): UrlPath<String>,
    Form(form): Form<TokenForm>,
) -> Response {
    inner.count("token".to_owned());
    if let Some(response) = apply_fault(inner.fault(&FaultTarget::Token)).await {
        return response;
    }
    if form.grant_type.as_deref() != Some("client_credentials") {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.".to_owned(),
        );
    }
    let client_id = form.client_id.unwrap_or_default();
    let identity = inner.state().identities.get(&client_id).cloned();
    let Some(identity) = identity.filter(|i| i.tenant_id == tenant) else {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'."),
        );
    };
    if form.client_assertion_type.as_deref() != Some(ASSERTION_TYPE) {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_assertion_type'.".to_owned(),
        );
    }
    let assertion = form.client_assertion.unwrap_or_default();
    // The issuer is read before the signature can be checked: its JWKS decides.
    let unverified_iss = jsonwebtoken::dangerous::insecure_decode::<Value>(&assertion)
        .ok()
        .and_then(|d| d.claims["iss"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let jwks = if unverified_iss == inner.issuer_url {
        Some(inner.issuer.jwks())
    } else {
        inner.state().trusted_issuers.get(&unverified_iss).cloned()
    };
    let Some(jwks) = jwks else {
        return entra_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700211,
            format!("No matching federated identity record found for presented assertion issuer '{unverified_iss}'."),
        );
    };
    let claims: AssertionClaims = match jwt::verify(&assertion, &jwks) {
        Ok(claims) => claims,
        Err(error) if error.0.contains("Expired") || error.0.contains("Immature") => {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_client",
                700024,
                "Client assertion is not within its valid time range.".to_owned(),
            );
        }
        Err(error) => {
            return entra_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                50027,
                format!("JWT token is invalid or malformed: {}.", error.0),
            );
        }
    };
    let federated = inner.state().federated.get(&client_id).cloned().unwrap_or_default();
    let matched = federated
        .iter()
        .any(|f| f.issuer == claims.iss && f.subject == claims.sub && claims.aud.contains(&f.audience));
    if !matched {
        return entra_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700213,
            format!(
                "No matching federated identity record found for presented assertion subject '{}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion.",
                claims.sub
            ),
        );
    }
    let scope = form.scope.unwrap_or_default();
    let resource = scope
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .trim_end_matches("/.default")
        .to_owned();
    let issued = now();
    let access_token = inner.entra.sign(&json!({
        "aud": resource,
        "iss": format!("https://sts.windows.net/{tenant}/"),
        "iat": issued, "nbf": issued, "exp": issued + 3600,
        "tid": tenant,
        "oid": identity.principal_id,
        "sub": identity.principal_id,
        "appid": identity.client_id,
        "idtyp": "app",
    }));
    match access_token {
        Ok(access_token) => axum::Json(json!({
            "token_type": "Bearer",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": access_token,
        }))
        .into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}
