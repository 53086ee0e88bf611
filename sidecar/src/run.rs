//! The rotation loop: sync, write atomically, wait an interval with jitter; on failure keep the files, back off
//! exponentially with jitter, and honour `Retry-After`. Metrics say how it goes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::atomic_writer::{AtomicWriter, WriteError, Written};
use crate::fetch::{Fetcher, SyncError};

pub use wi_vault::schedule::Schedule;

/// Outcome label of a sync.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum SyncResult {
    /// New files were written.
    Written,
    /// Nothing changed in Key Vault.
    Unchanged,
    /// The fetch or the write failed; the previous files stay.
    Failed,
}

impl EncodeLabelValue for SyncResult {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(match self {
            SyncResult::Written => "written",
            SyncResult::Unchanged => "unchanged",
            SyncResult::Failed => "failed",
        })
    }
}

/// Label set of the sync counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// How the sync ended.
    pub result: SyncResult,
}

/// The sidecar's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// Syncs by result.
    pub syncs: Family<ResultLabels, Counter>,
    /// Duration of a sync (fetch and write).
    pub duration: Histogram,
    /// Unix time of the last successful sync.
    pub last_success: Gauge,
    /// Files in the last successful sync.
    pub objects: Gauge,
    /// Failures since the last success (the backoff exponent).
    pub consecutive_failures: Gauge,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let syncs = Family::<ResultLabels, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let (last_success, objects, consecutive_failures) = (Gauge::default(), Gauge::default(), Gauge::default());
        let mut registry = Registry::with_prefix("wi_sidecar");
        registry.register("syncs", "Key Vault syncs by result", syncs.clone());
        registry.register(
            "sync_duration_seconds",
            "Time to fetch and write all objects",
            duration.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the last successful sync",
            last_success.clone(),
        );
        registry.register("objects", "Files written by the last successful sync", objects.clone());
        registry.register(
            "consecutive_failures",
            "Failed syncs since the last success",
            consecutive_failures.clone(),
        );
        Metrics {
            syncs,
            duration,
            last_success,
            objects,
            consecutive_failures,
            registry,
        }
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

/// Why a sync failed. The message names the object; no value is in it.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Fetching failed.
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// Writing failed.
    #[error("writing the files: {0}")]
    Write(#[from] WriteError),
}

/// Syncs a configuration into a directory, once or in a loop.
pub struct Syncer {
    fetcher: std::sync::Mutex<Arc<Fetcher>>,
    /// Builds a new fetcher (a new credential) after the credential failed: azure_identity keeps the token file's
    /// content for 600 s, so a token rotated after a refusal would otherwise wait that long.
    refresh: Option<Box<dyn Fn() -> anyhow::Result<Fetcher> + Send + Sync>>,
    writer: AtomicWriter,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    failures: AtomicU64,
    /// The last sync was throttled (429): the next one probes with one request at a time, so that a storm costs
    /// one request per Retry-After rather than one per object.
    throttled: AtomicBool,
}

impl Syncer {
    /// A syncer writing what `fetcher` fetches through `writer`.
    pub fn new(fetcher: Fetcher, writer: AtomicWriter) -> Self {
        Syncer {
            fetcher: std::sync::Mutex::new(Arc::new(fetcher)),
            refresh: None,
            writer,
            metrics: Arc::new(Metrics::default()),
            ready: Arc::new(AtomicBool::new(false)),
            failures: AtomicU64::new(0),
            throttled: AtomicBool::new(false),
        }
    }

    /// After a sync fails for want of a token ([`SyncError::Credential`]), the next one uses a fetcher `refresh`
    /// builds, whose credential reads the token file again.
    pub fn with_refresh(mut self, refresh: impl Fn() -> anyhow::Result<Fetcher> + Send + Sync + 'static) -> Self {
        self.refresh = Some(Box::new(refresh));
        self
    }

    fn fetcher(&self) -> std::sync::MutexGuard<'_, Arc<Fetcher>> {
        self.fetcher.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// True once a sync completed (for a startup probe and /readyz).
    pub fn ready(&self) -> Arc<AtomicBool> {
        self.ready.clone()
    }

    /// One sync: fetch everything, then write it all atomically; on any error nothing is written.
    pub async fn sync_once(&self) -> Result<Written, RunError> {
        let started = Instant::now();
        let result = async {
            let fetcher = self.fetcher().clone();
            let files = if self.throttled.load(Ordering::Acquire) {
                fetcher.fetch_all_with(1).await
            } else {
                fetcher.fetch_all().await
            };
            if let (Err(SyncError::Credential { .. }), Some(refresh)) = (&files, &self.refresh) {
                match refresh() {
                    Ok(fresh) => *self.fetcher() = Arc::new(fresh),
                    Err(error) => tracing::warn!(error = %format!("{error:#}"), "cannot build a new credential"),
                }
            }
            self.throttled.store(
                matches!(&files, Err(SyncError::Object { status: Some(429), .. })),
                Ordering::Release,
            );
            let files = files?;
            let written = self.writer.write(&files)?;
            Ok::<_, RunError>((written, files.len()))
        }
        .await;
        self.metrics.duration.observe(started.elapsed().as_secs_f64());
        match result {
            Ok((written, count)) => {
                let label = match written {
                    Written::Committed(_) => SyncResult::Written,
                    Written::Unchanged => SyncResult::Unchanged,
                };
                self.metrics.syncs.get_or_create(&ResultLabels { result: label }).inc();
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                    .unwrap_or_default();
                self.metrics.last_success.set(now);
                self.metrics.objects.set(i64::try_from(count).unwrap_or(i64::MAX));
                self.metrics.consecutive_failures.set(0);
                self.failures.store(0, Ordering::Release);
                self.ready.store(true, Ordering::Release);
                Ok(written)
            }
            Err(error) => {
                self.metrics
                    .syncs
                    .get_or_create(&ResultLabels {
                        result: SyncResult::Failed,
                    })
                    .inc();
                let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
                self.metrics
                    .consecutive_failures
                    .set(i64::try_from(failures).unwrap_or(i64::MAX));
                Err(error)
            }
        }
    }

    /// Syncs on `schedule` until `shutdown` completes. Failures are logged and backed off; the files stay.
    pub async fn run(&self, schedule: Schedule, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let retry_after = match self.sync_once().await {
                Ok(Written::Committed(version)) => {
                    tracing::info!(%version, "new version of the secrets written");
                    None
                }
                Ok(Written::Unchanged) => None,
                Err(error) => {
                    let retry_after = match &error {
                        RunError::Sync(sync) => sync.retry_after().map(Duration::from_secs),
                        RunError::Write(_) => None,
                    };
                    tracing::warn!(%error, "sync failed; the previous files stay");
                    retry_after
                }
            };
            let failures = u32::try_from(self.failures.load(Ordering::Acquire)).unwrap_or(u32::MAX);
            let delay = schedule.next_delay(failures, retry_after, fastrand::f64());
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = &mut shutdown => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_back_off_exponentially_with_jitter_and_honour_retry_after() {
        let schedule = Schedule {
            interval: Duration::from_secs(120),
            jitter: 0.1,
            backoff_base: Duration::from_secs(2),
        };
        assert_eq!(schedule.next_delay(0, None, 0.5), Duration::from_secs(120));
        assert_eq!(schedule.next_delay(0, None, 0.0), Duration::from_secs(108));
        assert_eq!(schedule.next_delay(0, None, 1.0), Duration::from_secs(132));
        let backoff: Vec<u64> = (1..=8).map(|n| schedule.next_delay(n, None, 0.5).as_secs()).collect();
        assert_eq!(backoff, [2, 4, 8, 16, 32, 64, 120, 120]);
        assert_eq!(
            schedule.next_delay(1, Some(Duration::from_secs(30)), 0.5),
            Duration::from_secs(30)
        );
        assert_eq!(
            schedule.next_delay(6, Some(Duration::from_secs(30)), 0.5),
            Duration::from_secs(64)
        );
        assert_eq!(schedule.next_delay(u32::MAX, None, 0.5), Duration::from_secs(120));
    }
}
