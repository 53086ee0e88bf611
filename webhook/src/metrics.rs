//! Prometheus metrics of the webhook, served on the admin port. Label values are bounded enums.

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// How an admission request ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// Allowed with a patch.
    Mutated,
    /// Allowed without a patch (not opted in, not a pod CREATE, nothing to change).
    Unchanged,
    /// Denied by the engine or because the ServiceAccount does not exist.
    Denied,
    /// Denied because a lookup failed (fail closed).
    Error,
    /// The body was not an AdmissionReview the webhook can answer (HTTP 4xx).
    Invalid,
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            Outcome::Mutated => "mutated",
            Outcome::Unchanged => "unchanged",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
            Outcome::Invalid => "invalid",
        })
    }
}

/// Label set of the request counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// How the request ended.
    pub result: Outcome,
}

/// Whether a certificate reload succeeded.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum ReloadResult {
    /// The new certificate is served.
    Success,
    /// The files were invalid; the previous certificate is still served.
    Failure,
}

impl EncodeLabelValue for ReloadResult {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            ReloadResult::Success => "success",
            ReloadResult::Failure => "failure",
        })
    }
}

/// Label set of the reload counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// Outcome of the reload.
    pub result: ReloadResult,
}

/// Label set of the cache gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `serviceaccounts` or `namespaces`.
    pub kind: &'static str,
}

/// Every metric of the webhook.
#[derive(Debug)]
pub struct Metrics {
    /// Admission requests by outcome.
    pub requests: Family<OutcomeLabels, Counter>,
    /// Time to answer an admission request, from body read to response.
    pub duration: Histogram,
    /// Objects in the caches.
    pub cached_objects: Family<CacheLabels, Gauge>,
    /// `notAfter` of the served certificate, Unix seconds.
    pub certificate_expiry: Gauge,
    /// Certificate reloads by result.
    pub certificate_reloads: Family<ReloadLabels, Counter>,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<OutcomeLabels, Counter>::default();
        // 0.5 ms to about 4 s.
        let duration = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        let cached_objects = Family::<CacheLabels, Gauge>::default();
        let certificate_expiry = Gauge::default();
        let certificate_reloads = Family::<ReloadLabels, Counter>::default();
        let mut registry = Registry::with_prefix("wi_webhook");
        registry.register("admission_requests", "Admission requests by result", requests.clone());
        registry.register(
            "admission_duration_seconds",
            "Time to answer an admission request",
            duration.clone(),
        );
        registry.register("cache_objects", "Objects in the lookup caches", cached_objects.clone());
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "notAfter of the served certificate (Unix seconds)",
            certificate_expiry.clone(),
        );
        registry.register(
            "tls_certificate_reloads",
            "Serving certificate reloads by result",
            certificate_reloads.clone(),
        );
        Metrics {
            requests,
            duration,
            cached_objects,
            certificate_expiry,
            certificate_reloads,
            registry,
        }
    }
}

impl Metrics {
    /// Counts one admission request.
    pub fn admitted(&self, result: Outcome, seconds: f64) {
        self.requests.get_or_create(&OutcomeLabels { result }).inc();
        self.duration.observe(seconds);
    }

    /// Counts one change of the served certificate (file reload or self-managed renewal).
    pub fn reloaded(&self, result: ReloadResult) {
        self.certificate_reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
