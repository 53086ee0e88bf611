//! One admission path, shared by `wi-webhook serve` and `wi-webhook mutate`: opt-in decided first, then the
//! lookups, then the engine.
//!
//! A pod that did not ask to be injected is answered without reading its ServiceAccount, so an unreachable API
//! server never refuses it. For a pod that did, the lookups fail closed: when the namespace labels (for a pod
//! without its own label) or the ServiceAccount cannot be read, the pod is refused with an error rather than
//! admitted without its identity; controllers retry, and a pod that did start would fail every Azure call.
//!
//! [`router`] is the HTTP face of it (`POST /mutate-v1-pod` and `/mutate`): public, so that it can be served by
//! anything that speaks `tower` and tested with `oneshot`, without TLS or a socket.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use serde_json::Value;
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument as _;

use crate::config::Config;
use crate::lookup::Lookup;
use crate::metrics::{Metrics, Outcome};
use crate::mutate::{self, ClassLookup, Inputs, Mutation};
use crate::review::{AdmissionReview, PodCreate, Rejection, ReviewResponse};
use wi_contract::USE_LABEL;

/// Decides one pod CREATE: opt-in first (from the pod's `use` label, else its namespace's), then the ServiceAccount
/// and the SecretProviderClass, then the engine.
pub async fn admit_pod(pod: &PodCreate<'_>, lookup: &dyn Lookup, config: &Config) -> Result<Mutation, Rejection> {
    let pod_label = mutate::at(pod.pod, &["metadata", "labels", USE_LABEL]).and_then(Value::as_str);
    // The namespace decides only for pods without their own "true" or "false".
    let namespace_labels = match pod_label {
        Some("true") | Some("false") => None,
        _ => lookup.namespace_labels(pod.namespace).await?,
    };
    let opt_in = mutate::opt_in(pod.pod, namespace_labels.as_ref());
    if !opt_in.opted_in {
        return Ok(Mutation {
            patch: mutate::Patch::default(),
            warnings: opt_in.warnings,
        });
    }
    let sa = lookup
        .service_account(pod.namespace, pod.service_account)
        .await?
        .ok_or_else(|| Rejection::ServiceAccountNotFound {
            namespace: pod.namespace.to_owned(),
            name: pod.service_account.to_owned(),
        })?;
    let class = match pod.secret_provider_class {
        Some(name) => lookup.secret_provider_class(pod.namespace, name).await,
        None => Ok(None),
    };
    let secret_provider_class = match &class {
        Ok(Some(object)) => ClassLookup::Found(object),
        Ok(None) => ClassLookup::NotFound,
        // The pod is still injected for CSI delivery (the driver reads the class itself); sidecar delivery is denied.
        Err(error) => ClassLookup::Failed(error),
    };
    let inputs = Inputs {
        namespace_labels: namespace_labels.as_ref(),
        service_account: &sa,
        secret_provider_class,
    };
    Ok(mutate::mutate_with(pod.pod, opt_in, &inputs, config)?)
}

/// Answers one AdmissionReview: anything but a pod CREATE is allowed unchanged; a pod CREATE goes through
/// [`admit_pod`]. Logs the decision (never a value) in one `admission reviewed` line that names the request (uid,
/// namespace, pod, ServiceAccount, dry run).
///
/// The request's fields are on that line, not on a span around it: at the default level an `info` span cost about
/// as much as formatting and writing the line (fields formatted at creation, entered and left at every poll, read
/// back for the line). At `debug` an `admission` span with the same fields gives the lines logged during the
/// lookups (a cache miss read live, the Kubernetes client's own) their context.
pub async fn review(review: &AdmissionReview, lookup: &dyn Lookup, config: &Config) -> (ReviewResponse, Outcome) {
    let Some(pod) = review.pod_create() else {
        return (review.allow_unchanged(), Outcome::Unchanged);
    };
    let (uid, dry_run) = (review.request.uid.as_str(), review.request.dry_run.unwrap_or(false));
    // The request's fields, listed once: after the span's name, or before the decision's fields and message.
    macro_rules! with_request {
        ($macro:ident, [$($head:tt)*] $($tail:tt)*) => {
            tracing::$macro!(
                $($head)*
                uid,
                namespace = pod.namespace,
                pod = pod.name,
                service_account = pod.service_account,
                dry_run,
                $($tail)*
            )
        };
    }
    let span = with_request!(debug_span, ["admission",]);
    let result = admit_pod(&pod, lookup, config).instrument(span).await;
    let outcome = match &result {
        Ok(m) if m.patch.is_empty() => Outcome::Unchanged,
        Ok(_) => Outcome::Mutated,
        Err(rejection) => rejection.outcome(),
    };
    macro_rules! reviewed {
        ($level:ident, $($decision:tt)*) => {
            with_request!($level, [] $($decision)*)
        };
    }
    match &result {
        Ok(m) => reviewed!(
            info,
            result = if m.patch.is_empty() { "unchanged" } else { "mutated" },
            patch_ops = m.patch.len(),
            warnings = ?m.warnings,
            "admission reviewed"
        ),
        Err(error @ Rejection::LookupFailed(_)) => reviewed!(
            warn,
            result = "error",
            %error,
            "admission reviewed: lookup failed, failing closed"
        ),
        Err(reason) => reviewed!(info, result = "denied", %reason, "admission reviewed"),
    }
    (review.respond(result), outcome)
}

/// What the admission router needs.
#[derive(Clone)]
pub struct Admission {
    /// Where the pod's ServiceAccount, namespace and SecretProviderClass are read.
    pub lookup: Arc<dyn Lookup>,
    /// The engine's settings.
    pub config: Config,
    /// Where requests are counted.
    pub metrics: Arc<Metrics>,
}

/// Limits of the admission router.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest AdmissionReview body accepted, in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// Time allowed to answer one request before 408.
    pub request_timeout: Duration,
}

/// The admission endpoint: `POST /mutate-v1-pod` and `POST /mutate` take an AdmissionReview (JSON) and answer one.
/// A body that is not an AdmissionReview gets 400, another content type 415, a body over the limit 413.
pub fn router(admission: Admission, limits: Limits) -> Router {
    Router::new()
        .route("/mutate-v1-pod", post(admit))
        .route("/mutate", post(admit))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .with_state(Arc::new(admission))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

async fn admit(State(state): State<Arc<Admission>>, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    let invalid = |status: StatusCode, message: String| {
        state
            .metrics
            .admitted(Outcome::Invalid, started.elapsed().as_secs_f64());
        (status, message).into_response()
    };
    if !is_json(&headers) {
        return invalid(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected Content-Type: application/json (an AdmissionReview)\n".to_owned(),
        );
    }
    let parsed = match AdmissionReview::parse(&body) {
        Ok(parsed) => parsed,
        Err(error) => {
            tracing::warn!(%error, "rejected a request that is not an AdmissionReview");
            return invalid(StatusCode::BAD_REQUEST, format!("{error}\n"));
        }
    };
    let (response, outcome) = review(&parsed, state.lookup.as_ref(), &state.config).await;
    state.metrics.admitted(outcome, started.elapsed().as_secs_f64());
    match response.to_json() {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the response: {error}\n"),
        )
            .into_response(),
    }
}
