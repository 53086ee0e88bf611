//! The controller's metrics on its admin port (`/metrics`), and the HTTP policy that counts Key Vault requests.

use std::sync::Arc;

use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// How a class's sync ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// A Secret was created, updated or deleted.
    Changed,
    /// Key Vault was read and every Secret already held it.
    Unchanged,
    /// The class, its identity, Key Vault or the API failed; the Secrets stay as they were.
    Failed,
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(match self {
            Outcome::Changed => "changed",
            Outcome::Unchanged => "unchanged",
            Outcome::Failed => "failed",
        })
    }
}

/// Label set of the sync counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// How the sync ended.
    pub result: Outcome,
}

/// Label set of per-class gauges.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    /// The class's namespace.
    pub namespace: String,
    /// The class.
    pub class: String,
}

/// Everything `/metrics` shows.
#[derive(Debug)]
pub struct Metrics {
    /// Syncs by result.
    pub syncs: Family<OutcomeLabels, Counter>,
    /// Unix time of each class's last successful sync.
    pub last_success: Family<ClassLabels, Gauge>,
    /// HTTP requests to Key Vault (one per object read, whatever the number of pods or replicas).
    pub keyvault_requests: Counter,
    /// TokenRequests of sync ServiceAccounts (one per exchange at Entra ID).
    pub token_requests: Counter,
    /// 1 while this replica holds the Lease and syncs.
    pub leader: Gauge,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("wi_controller");
        let metrics = Metrics {
            syncs: Family::default(),
            last_success: Family::default(),
            keyvault_requests: Counter::default(),
            token_requests: Counter::default(),
            leader: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("syncs", "Class syncs by result", metrics.syncs.clone());
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the last successful sync of each class",
            metrics.last_success.clone(),
        );
        registry.register(
            "keyvault_requests",
            "HTTP requests sent to Key Vault",
            metrics.keyvault_requests.clone(),
        );
        registry.register(
            "token_requests",
            "TokenRequests of sync ServiceAccounts",
            metrics.token_requests.clone(),
        );
        registry.register("leader", "1 while this replica holds the Lease", metrics.leader.clone());
        Metrics { registry, ..metrics }
    }
}

impl Metrics {
    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Counts every operation sent to Key Vault (a per-call policy: once per object read, not per retry).
#[derive(Debug)]
pub struct CountRequests(pub Counter);

#[async_trait::async_trait]
impl Policy for CountRequests {
    async fn send(&self, ctx: &Context, request: &mut Request, next: &[Arc<dyn Policy>]) -> PolicyResult {
        self.0.inc();
        match next.split_first() {
            Some((first, rest)) => first.send(ctx, request, rest).await,
            None => Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Other,
                "no transport after the request counter",
            )),
        }
    }
}
