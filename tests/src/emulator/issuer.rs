//! The cluster's service account issuer: OIDC discovery and its JWKS.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::*;

pub(super) async fn discovery(State(inner): State<Arc<Inner>>) -> Response {
    axum::Json(json!({
        "issuer": inner.issuer_url,
        "jwks_uri": format!("{}/openid/v1/jwks", inner.issuer_url),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
    .into_response()
}

pub(super) async fn jwks(State(inner): State<Arc<Inner>>) -> Response {
    axum::Json(inner.issuer.jwks()).into_response()
}
