//! The outbound stack of one dependency and the registry readiness reads.
//!
//! Every outbound call of a dependency passes, outermost first:
//! 1. [`retry`](super::retry): whole attempts are repeated, so each attempt below is
//!    timed, counted and judged by the breaker on its own;
//! 2. [`observe`](super::observe): one metric point and one `dependency.call` span per
//!    attempt, including attempts refused below (outcome `short_circuited`, `saturated`);
//! 3. [`circuit_breaker`](super::circuit_breaker): fails fast while the dependency is down;
//! 4. [`bulkhead`](super::bulkhead): a concurrency limit that rejects instead of queueing
//!    (a refused attempt is not a failure of the dependency, so it sits inside the breaker);
//! 5. [`timeout`](super::timeout): bounds each attempt; a timeout counts as a failure;
//! 6. `FaultInjection` (only in builds with the test-only `fault-injection` cargo feature,
//!    which release builds never enable): inert unless an in-process test sets it;
//! 7. the call itself.
//!
//! All layers share one typed error, [`DepError`], so no layer downcasts a `BoxError`.

use std::sync::Arc;
#[cfg(feature = "fault-injection")]
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
#[cfg(feature = "fault-injection")]
use tokio::sync::watch;

use super::bulkhead::Saturated;
use super::circuit_breaker::{BreakerConfig, BreakerOpen, BreakerState, CircuitBreaker, Failure};
use super::observe::Outcome;
use super::retry::{RetryConfig, Retryable};
use super::timeout::TimedOut;

/// Settings of one dependency's stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DependencyConfig {
    /// Bound of one attempt.
    #[serde(with = "crate::support::duration_ms", rename = "timeout_ms")]
    pub timeout: Duration,
    /// Attempts in flight at once; more fail fast.
    pub max_concurrency: usize,
    /// Circuit breaker.
    pub breaker: BreakerConfig,
    /// Retries of transient failures.
    pub retry: RetryConfig,
}

impl Default for DependencyConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(150),
            max_concurrency: 64,
            breaker: BreakerConfig::default(),
            retry: RetryConfig::default(),
        }
    }
}

/// The one error of a dependency stack.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DepError {
    /// An attempt exceeded its bound.
    #[error("timed out")]
    Timeout,
    /// The dependency is unreachable or refused the call (transient).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The dependency failed in a way retrying will not fix.
    #[error("failed: {0}")]
    Internal(String),
    /// The breaker is open.
    #[error("circuit open; retry in {}ms", .0.as_millis())]
    CircuitOpen(Duration),
    /// The concurrency limit is reached.
    #[error("too many calls in flight")]
    Saturated,
}

impl From<TimedOut> for DepError {
    fn from(_: TimedOut) -> Self {
        Self::Timeout
    }
}

impl From<BreakerOpen> for DepError {
    fn from(o: BreakerOpen) -> Self {
        Self::CircuitOpen(o.retry_after)
    }
}

impl From<Saturated> for DepError {
    fn from(_: Saturated) -> Self {
        Self::Saturated
    }
}

impl Failure for DepError {
    fn trips_breaker(&self) -> bool {
        matches!(self, Self::Timeout | Self::Unavailable(_))
    }
}

impl Retryable for DepError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl Outcome for DepError {
    fn outcome(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "error",
            Self::CircuitOpen(_) => "short_circuited",
            Self::Saturated => "saturated",
        }
    }
}

/// Delay or hold a dependency's calls, for in-process tests. Inert by default and not
/// reachable over the network: only code holding the [`Dependency`] can set it. Compiled only
/// with the test-only `fault-injection` cargo feature: the shipped binary has no such hook
/// (real slow dependencies are tested with a held PostgreSQL lock, a paused Redis and a fault
/// proxy, see `tests/it/slow_deps.rs`).
#[cfg(feature = "fault-injection")]
#[derive(Debug)]
pub struct FaultInjection {
    delay_ms: AtomicU64,
    held: watch::Sender<bool>,
}

#[cfg(feature = "fault-injection")]
impl Default for FaultInjection {
    fn default() -> Self {
        Self {
            delay_ms: AtomicU64::new(0),
            held: watch::Sender::new(false),
        }
    }
}

#[cfg(feature = "fault-injection")]
impl FaultInjection {
    /// Add `delay` to every call from now on (zero removes it).
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(
            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    /// Make every call wait until [`release`](Self::release).
    pub fn hold(&self) {
        self.held.send_replace(true);
    }

    /// Let held calls go.
    pub fn release(&self) {
        self.held.send_replace(false);
    }

    /// Calls currently waiting in [`hold`](Self::hold).
    pub fn waiting(&self) -> usize {
        self.held.receiver_count()
    }

    /// Apply the configured faults to one call.
    pub async fn apply(&self) {
        if *self.held.borrow() {
            let mut rx = self.held.subscribe();
            let _ = rx.wait_for(|held| !held).await;
        }
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
    }
}

/// One dependency: its name, whether readiness depends on it, its breaker (and, in test
/// builds, its fault hook).
#[derive(Debug, Clone)]
pub struct Dependency {
    /// Bounded label value, e.g. `database`.
    pub name: &'static str,
    /// Readiness fails while an essential dependency's breaker is open.
    pub essential: bool,
    /// Shared by every call.
    pub breaker: Arc<CircuitBreaker>,
    /// In-process test hook (test builds only).
    #[cfg(feature = "fault-injection")]
    pub fault: Arc<FaultInjection>,
    /// Settings.
    pub config: DependencyConfig,
}

impl Dependency {
    /// A dependency with a closed breaker and no faults.
    pub fn new(name: &'static str, essential: bool, config: DependencyConfig) -> Self {
        Self {
            name,
            essential,
            breaker: CircuitBreaker::new(name, config.breaker.clone()),
            #[cfg(feature = "fault-injection")]
            fault: Arc::new(FaultInjection::default()),
            config,
        }
    }
}

/// Every dependency of a server, for readiness and tests.
#[derive(Debug, Clone)]
pub struct Dependencies {
    /// The database (essential). Catalog reads reach it through its stack.
    pub database: Dependency,
    /// The catalog cache (optional: a failure degrades to the database).
    pub cache: Option<Dependency>,
}

/// One readiness verdict on a dependency's breaker.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerCheck {
    /// Dependency name.
    pub name: &'static str,
    /// State of its breaker.
    pub state: BreakerState,
    /// Whether readiness depends on it.
    pub essential: bool,
    /// Time left open, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl Dependencies {
    /// The breaker state of every dependency.
    pub fn breakers(&self) -> Vec<BreakerCheck> {
        std::iter::once(&self.database)
            .chain(self.cache.as_ref())
            .map(|d| BreakerCheck {
                name: d.name,
                state: d.breaker.state(),
                essential: d.essential,
                retry_after_ms: d.breaker.open_for().map(|d| d.as_millis() as u64),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "fault-injection")]
    #[tokio::test]
    async fn held_calls_wait_for_release() {
        let f = Arc::new(FaultInjection::default());
        f.hold();
        let g = f.clone();
        let call = tokio::spawn(async move { g.apply().await });
        while f.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(!call.is_finished());
        f.release();
        call.await.unwrap();
    }

    #[test]
    fn error_classes() {
        assert!(DepError::Timeout.trips_breaker() && !DepError::Timeout.is_retryable());
        assert!(DepError::Unavailable("x".into()).is_retryable());
        assert!(!DepError::Internal("x".into()).trips_breaker());
        assert!(!DepError::CircuitOpen(Duration::ZERO).trips_breaker());
        assert_eq!(DepError::Saturated.outcome(), "saturated");
    }
}
