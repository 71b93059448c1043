//! Retries of outbound calls: exponential backoff with full jitter, under a retry budget.
//!
//! A [`tower::retry::Policy`]: the policy sees the request, so only requests that are safe
//! to repeat are retried ([`Idempotent`]), and only errors of a transient class
//! ([`Retryable`]): a refused connection, a reset. Never retried: timeouts (the dependency is
//! most likely overloaded, and a retry would multiply its load), an open breaker, a full
//! bulkhead, permanent errors, and plugin traps or timeouts (those never pass through here).
//!
//! The delay before retry `n` (1-based) is uniform in `[0, min(cap, base * 2^(n-1))]`
//! ("full jitter"): retries of many callers spread out instead of arriving in waves.
//! The budget ([`TpsBudget`]) allows retries as a share of recent first attempts, so a
//! dependency that is down gets at most `retry_percent` extra load, not `max_retries` times
//! the load: no retry storm.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;
use serde::{Deserialize, Serialize};
use tower::retry::Policy;
use tower::retry::budget::{Budget, TpsBudget};

/// Whether an error is of a transient class worth one more attempt.
pub trait Retryable {
    /// True for transient failures only.
    fn is_retryable(&self) -> bool;
}

/// Whether a request may be sent twice without changing the outcome.
pub trait Idempotent {
    /// True when repeating the request is safe.
    fn is_idempotent(&self) -> bool;
}

/// Settings of a retry policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries after the first attempt (0 disables retrying).
    pub max_retries: u32,
    /// Base of the exponential backoff.
    #[serde(with = "crate::support::duration_ms", rename = "base_ms")]
    pub base: Duration,
    /// Upper bound of one backoff.
    #[serde(with = "crate::support::duration_ms", rename = "cap_ms")]
    pub cap: Duration,
    /// Retries allowed as a share of first attempts over the last 10 s (0-1000).
    pub budget_percent: f32,
    /// Retries per second allowed regardless of traffic.
    pub budget_min_per_sec: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 2,
            base: Duration::from_millis(10),
            cap: Duration::from_millis(200),
            budget_percent: 0.2,
            budget_min_per_sec: 5,
        }
    }
}

/// The retry policy of one dependency. Cheap to clone: clones share the budget; the attempt
/// count is per request (tower clones the policy for each request).
#[derive(Clone)]
pub struct RetryPolicy {
    dependency: &'static str,
    config: RetryConfig,
    budget: Arc<TpsBudget>,
    retries: Counter<u64>,
    attempt: u32,
}

impl std::fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("dependency", &self.dependency)
            .field("config", &self.config)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl RetryPolicy {
    /// A policy for `dependency` (a bounded label value).
    pub fn new(dependency: &'static str, config: RetryConfig) -> Self {
        let budget = TpsBudget::new(
            Duration::from_secs(10),
            config.budget_min_per_sec,
            config.budget_percent,
        );
        Self {
            dependency,
            config,
            budget: Arc::new(budget),
            retries: opentelemetry::global::meter("weir.policy")
                .u64_counter("weir.dependency.retries")
                .with_description("Retries of dependency calls, and retries refused by the budget")
                .build(),
            attempt: 0,
        }
    }

    /// The full-jitter delay before retry number `n` (1-based).
    pub fn backoff(&self, n: u32) -> Duration {
        let exp = self
            .config
            .base
            .saturating_mul(2u32.saturating_pow(n.saturating_sub(1)));
        let ceiling = exp.min(self.config.cap);
        ceiling.mul_f64(fastrand::f64())
    }
}

impl<Req, Res, E> Policy<Req, Res, E> for RetryPolicy
where
    Req: Clone + Idempotent,
    E: Retryable,
{
    type Future = Pin<Box<dyn Future<Output = ()> + Send>>;

    fn retry(&mut self, req: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        match result {
            Ok(_) => {
                if self.attempt == 0 {
                    self.budget.deposit();
                }
                None
            }
            Err(e) => {
                if self.attempt == 0 {
                    self.budget.deposit();
                }
                if !e.is_retryable()
                    || !req.is_idempotent()
                    || self.attempt >= self.config.max_retries
                {
                    return None;
                }
                let dep = KeyValue::new("dependency", self.dependency);
                if !self.budget.withdraw() {
                    self.retries
                        .add(1, &[dep, KeyValue::new("outcome", "budget_exhausted")]);
                    return None;
                }
                self.attempt += 1;
                self.retries
                    .add(1, &[dep, KeyValue::new("outcome", "retried")]);
                let delay = self.backoff(self.attempt);
                tracing::debug!(
                    dependency = self.dependency,
                    attempt = self.attempt,
                    delay_ms = delay.as_millis() as u64,
                    "retrying dependency call"
                );
                Some(Box::pin(tokio::time::sleep(delay)))
            }
        }
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        req.is_idempotent().then(|| req.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use tower::{ServiceBuilder, ServiceExt};

    use super::*;

    #[derive(Debug, Clone)]
    struct Req(bool);
    impl Idempotent for Req {
        fn is_idempotent(&self) -> bool {
            self.0
        }
    }
    #[derive(Debug, PartialEq)]
    enum E {
        Reset,
        Timeout,
    }
    impl Retryable for E {
        fn is_retryable(&self) -> bool {
            matches!(self, E::Reset)
        }
    }

    fn config(max_retries: u32) -> RetryConfig {
        RetryConfig {
            max_retries,
            base: Duration::from_millis(10),
            cap: Duration::from_millis(100),
            budget_percent: 1000.0,
            budget_min_per_sec: 100,
        }
    }

    /// A service failing with `err` for its first `fail` calls.
    fn flaky(
        calls: &Arc<AtomicU32>,
        fail: u32,
        err: fn() -> E,
    ) -> impl tower::Service<Req, Response = u32, Error = E, Future: Send> + Clone {
        let calls = calls.clone();
        tower::service_fn(move |_: Req| {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            async move { if n <= fail { Err(err()) } else { Ok(n) } }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_with_bounded_jittered_backoff() {
        let calls = Arc::new(AtomicU32::new(0));
        let svc = ServiceBuilder::new()
            .retry(RetryPolicy::new("test", config(3)))
            .service(flaky(&calls, 2, || E::Reset));
        let started = tokio::time::Instant::now();
        assert_eq!(svc.oneshot(Req(true)).await, Ok(3));
        // Two backoffs, each at most 10ms and 20ms (full jitter below the exponential).
        assert!(started.elapsed() <= Duration::from_millis(30));
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_non_idempotent_requests_and_exhausted_attempts_are_not_retried() {
        for (req, fail, err, expected_calls) in [
            (Req(true), 5, (|| E::Timeout) as fn() -> E, 1),
            (Req(false), 5, || E::Reset, 1),
            (Req(true), 5, || E::Reset, 3),
        ] {
            let calls = Arc::new(AtomicU32::new(0));
            let svc = ServiceBuilder::new()
                .retry(RetryPolicy::new("test", config(2)))
                .service(flaky(&calls, fail, err));
            assert!(svc.oneshot(req).await.is_err());
            assert_eq!(calls.load(Ordering::SeqCst), expected_calls);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_stops_a_retry_storm() {
        let calls = Arc::new(AtomicU32::new(0));
        let policy = RetryPolicy::new(
            "test",
            RetryConfig {
                budget_percent: 0.1,
                budget_min_per_sec: 0,
                ..config(3)
            },
        );
        let svc = ServiceBuilder::new()
            .retry(policy)
            .service(flaky(&calls, u32::MAX, || E::Reset));
        for _ in 0..100 {
            assert!(svc.clone().oneshot(Req(true)).await.is_err());
        }
        let retries = calls.load(Ordering::SeqCst) - 100;
        // Without a budget this would be 300 retries; with 10% it is about 10.
        assert!(retries <= 15, "{retries} retries for 100 failing calls");
    }

    #[test]
    fn backoff_is_full_jitter_under_the_cap() {
        let p = RetryPolicy::new("test", config(10));
        for n in 1..10 {
            let ceiling =
                (Duration::from_millis(10) * 2u32.pow(n - 1)).min(Duration::from_millis(100));
            for _ in 0..50 {
                assert!(p.backoff(n) <= ceiling);
            }
        }
    }
}
