//! When to sync next: the interval with jitter after a success; after failures, an exponential backoff with
//! jitter, capped at the interval, never shorter than the `Retry-After` the service asked for.

use std::time::Duration;

/// Timing of a sync loop (the sidecar's, one per class in the controller).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Time between syncs when they succeed (the CSI driver's rotation poll interval, 2 minutes by default).
    pub interval: Duration,
    /// Fraction of the interval added or removed at random, so that many pods do not call Key Vault together.
    pub jitter: f64,
    /// First wait after a failure; doubled each consecutive failure, up to the interval.
    pub backoff_base: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            interval: Duration::from_secs(120),
            jitter: 0.1,
            backoff_base: Duration::from_secs(2),
        }
    }
}

impl Schedule {
    /// The wait before the next sync: the jittered interval after a success; after `failures` consecutive
    /// failures, an exponential backoff (jittered, capped at the interval), never shorter than `retry_after`.
    /// `random` is in `0.0..1.0`.
    pub fn next_delay(&self, failures: u32, retry_after: Option<Duration>, random: f64) -> Duration {
        let jitter = 1.0 + self.jitter * (2.0 * random - 1.0);
        let base = if failures == 0 {
            self.interval
        } else {
            let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(20));
            self.backoff_base.saturating_mul(factor).min(self.interval)
        };
        let delay = base.mul_f64(jitter.max(0.0));
        retry_after.map_or(delay, |r| delay.max(r))
    }
}
