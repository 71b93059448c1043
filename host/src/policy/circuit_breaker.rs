//! A circuit breaker per dependency: stop calling what is failing, probe it, resume.
//!
//! # Why our own
//! No crate convinced: `tower-resilience` changes quickly and fixed a half-open race only
//! recently, and the older breakers count consecutive failures (one slow burst never trips
//! them at low traffic and a single success resets them at high traffic). This one is small
//! enough to read in one sitting and is tested with paused time below.
//!
//! # Behaviour
//! - **Closed**: every call is admitted; outcomes are counted in a sliding time window
//!   (`window`, in ten buckets). When at least `min_calls` finished in the window and the
//!   failure share reaches `failure_rate`, the breaker opens.
//! - **Open**: calls fail at once with [`BreakerOpen`] carrying `retry_after` (the time left
//!   in the open period). After `open_for` the next caller moves it to half-open.
//! - **Half-open**: exactly `half_open_probes` calls are admitted as probes; the rest fail
//!   fast. Any probe failure re-opens; `half_open_probes` successes close it with a fresh
//!   window. Every half-open period has its own generation, so an outcome of a probe from an
//!   earlier period (or a closed-state call finishing late) can never close or re-open the
//!   current one. A probe dropped before it finished (its caller was cancelled) counts as a
//!   failure, so the permit is never lost.
//!
//! Only outcomes the caller classifies as failures count ([`Failure::trips_breaker`]):
//! a "not found" is a healthy answer. Each state change is logged as one event and counted
//! (`weir.breaker.transitions`); the state is exported as the gauge `weir.breaker.state`
//! (0 closed, 1 half-open, 2 open).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tower::{Layer, Service};

/// How an error of a dependency counts for the breaker and for retries.
pub trait Failure {
    /// Whether this outcome is a failure of the dependency (timeouts, unavailability), as
    /// opposed to a healthy answer the caller does not like.
    fn trips_breaker(&self) -> bool;
}

/// The breaker refused the call without trying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit open; retry in {}ms", retry_after.as_millis())]
pub struct BreakerOpen {
    /// When a call may be admitted again.
    pub retry_after: Duration,
}

/// Settings of one breaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Failure share (0-1] in the window that opens the breaker.
    pub failure_rate: f64,
    /// Calls that must have finished in the window before the rate is judged.
    pub min_calls: u32,
    /// Length of the sliding window.
    #[serde(with = "crate::support::duration_ms", rename = "window_ms")]
    pub window: Duration,
    /// How long the breaker stays open before probing.
    #[serde(with = "crate::support::duration_ms", rename = "open_ms")]
    pub open_for: Duration,
    /// Probes admitted per half-open period; all must succeed to close.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_rate: 0.5,
            min_calls: 10,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(5),
            half_open_probes: 3,
        }
    }
}

/// The state of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// A bounded number of probes flow.
    HalfOpen,
    /// Calls fail fast.
    Open,
}

impl BreakerState {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::HalfOpen => "half_open",
            Self::Open => "open",
        }
    }

    fn gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }
}

const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    index: u64,
    calls: u32,
    failures: u32,
}

#[derive(Debug)]
struct Window {
    origin: Instant,
    bucket_len: Duration,
    buckets: [Bucket; BUCKETS],
}

impl Window {
    fn new(len: Duration, now: Instant) -> Self {
        Self {
            origin: now,
            bucket_len: (len / BUCKETS as u32).max(Duration::from_millis(1)),
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    fn index(&self, now: Instant) -> u64 {
        let d = now.saturating_duration_since(self.origin);
        // Index 0 is reserved for "never used".
        1 + (d.as_nanos() / self.bucket_len.as_nanos()) as u64
    }

    fn record(&mut self, now: Instant, failed: bool) {
        let i = self.index(now);
        let b = &mut self.buckets[(i % BUCKETS as u64) as usize];
        if b.index != i {
            *b = Bucket {
                index: i,
                ..Bucket::default()
            };
        }
        b.calls += 1;
        b.failures += u32::from(failed);
    }

    fn totals(&self, now: Instant) -> (u32, u32) {
        let i = self.index(now);
        self.buckets
            .iter()
            .filter(|b| b.index != 0 && b.index + (BUCKETS as u64) > i)
            .fold((0, 0), |(c, f), b| (c + b.calls, f + b.failures))
    }
}

#[derive(Debug)]
enum Inner {
    Closed(Window),
    Open {
        until: Instant,
    },
    HalfOpen {
        generation: u64,
        admitted: u32,
        successes: u32,
    },
}

/// One breaker, shared by every caller of a dependency.
#[derive(Debug)]
pub struct CircuitBreaker {
    name: String,
    config: BreakerConfig,
    inner: Mutex<(Inner, u64)>,
    gauge: Gauge<i64>,
    transitions: Counter<u64>,
}

/// Admission to one call; report its outcome with [`Permit::record`].
#[derive(Debug)]
pub struct Permit {
    breaker: Arc<CircuitBreaker>,
    /// `Some(generation)` for a half-open probe.
    probe: Option<u64>,
    done: bool,
}

impl Permit {
    /// Report the outcome: `Some(true)` failed, `Some(false)` succeeded, `None` neither
    /// (e.g. the caller gave up; for a probe this still counts as a failure).
    pub fn record(mut self, failed: Option<bool>) {
        self.done = true;
        self.breaker.on_outcome(self.probe, failed);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.on_outcome(self.probe, None);
        }
    }
}

impl CircuitBreaker {
    /// A closed breaker for the dependency `name`.
    pub fn new(name: impl Into<String>, config: BreakerConfig) -> Arc<Self> {
        let meter = opentelemetry::global::meter("weir.policy");
        let breaker = Self {
            name: name.into(),
            inner: Mutex::new((Inner::Closed(Window::new(config.window, Instant::now())), 0)),
            config,
            gauge: meter
                .i64_gauge("weir.breaker.state")
                .with_description("Circuit breaker state: 0 closed, 1 half-open, 2 open")
                .build(),
            transitions: meter
                .u64_counter("weir.breaker.transitions")
                .with_description("Circuit breaker state changes")
                .build(),
        };
        breaker.gauge.record(0, &[breaker.label()]);
        Arc::new(breaker)
    }

    fn label(&self) -> KeyValue {
        KeyValue::new("dependency", self.name.clone())
    }

    /// The dependency this breaker guards.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current state; an open breaker whose period has ended reports half-open.
    pub fn state(&self) -> BreakerState {
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match &guard.0 {
            Inner::Closed(_) => BreakerState::Closed,
            Inner::Open { until } if Instant::now() < *until => BreakerState::Open,
            Inner::Open { .. } | Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Time left in the open period, when open.
    pub fn open_for(&self) -> Option<Duration> {
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match &guard.0 {
            Inner::Open { until } => {
                let left = until.saturating_duration_since(Instant::now());
                (!left.is_zero()).then_some(left)
            }
            _ => None,
        }
    }

    /// End the current open period now, as if `open_for` had elapsed: the next caller becomes
    /// the half-open probe. Test-only (feature `fault-injection`): integration tests keep a
    /// long open period, so "still open" never races a loaded machine's clock, and end it as
    /// an explicit event instead of waiting for it.
    #[cfg(feature = "fault-injection")]
    pub fn end_open_period(&self) {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Inner::Open { until } = &mut guard.0 {
            *until = Instant::now();
        }
    }

    /// Ask to make one call.
    pub fn try_acquire(self: &Arc<Self>) -> Result<Permit, BreakerOpen> {
        let now = Instant::now();
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (inner, generation) = &mut *guard;
        let probe = match inner {
            Inner::Closed(_) => None,
            Inner::Open { until } if now < *until => {
                return Err(BreakerOpen {
                    retry_after: *until - now,
                });
            }
            Inner::Open { .. } => {
                *generation += 1;
                *inner = Inner::HalfOpen {
                    generation: *generation,
                    admitted: 1,
                    successes: 0,
                };
                self.transition(BreakerState::Open, BreakerState::HalfOpen);
                Some(*generation)
            }
            Inner::HalfOpen {
                generation,
                admitted,
                ..
            } => {
                if *admitted >= self.config.half_open_probes.max(1) {
                    return Err(BreakerOpen {
                        retry_after: self.config.open_for,
                    });
                }
                *admitted += 1;
                Some(*generation)
            }
        };
        Ok(Permit {
            breaker: self.clone(),
            probe,
            done: false,
        })
    }

    fn on_outcome(&self, probe: Option<u64>, failed: Option<bool>) {
        let now = Instant::now();
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut guard.0;
        match (probe, inner) {
            (None, Inner::Closed(window)) => {
                let Some(failed) = failed else { return };
                window.record(now, failed);
                let (calls, failures) = window.totals(now);
                if calls >= self.config.min_calls.max(1)
                    && f64::from(failures) >= self.config.failure_rate * f64::from(calls)
                {
                    guard.0 = Inner::Open {
                        until: now + self.config.open_for,
                    };
                    self.transition(BreakerState::Closed, BreakerState::Open);
                    tracing::warn!(
                        dependency = %self.name,
                        calls,
                        failures,
                        open_ms = self.config.open_for.as_millis() as u64,
                        "circuit breaker opened: failure rate over threshold"
                    );
                }
            }
            (
                Some(g),
                Inner::HalfOpen {
                    generation,
                    successes,
                    ..
                },
            ) if g == *generation => {
                if failed == Some(false) {
                    *successes += 1;
                    if *successes >= self.config.half_open_probes.max(1) {
                        guard.0 = Inner::Closed(Window::new(self.config.window, now));
                        self.transition(BreakerState::HalfOpen, BreakerState::Closed);
                        tracing::info!(dependency = %self.name, "circuit breaker closed: probes succeeded");
                    }
                } else {
                    guard.0 = Inner::Open {
                        until: now + self.config.open_for,
                    };
                    self.transition(BreakerState::HalfOpen, BreakerState::Open);
                    tracing::warn!(dependency = %self.name, "circuit breaker re-opened: a probe failed");
                }
            }
            // Late outcomes of an earlier period or state: ignored by design.
            _ => {}
        }
    }

    fn transition(&self, from: BreakerState, to: BreakerState) {
        self.gauge.record(to.gauge(), &[self.label()]);
        self.transitions.add(
            1,
            &[
                self.label(),
                KeyValue::new("from", from.as_str()),
                KeyValue::new("to", to.as_str()),
            ],
        );
        tracing::info!(
            dependency = %self.name,
            from = from.as_str(),
            to = to.as_str(),
            "circuit breaker state changed"
        );
    }
}

/// Breakers created on demand by key, all with one configuration: one per plugin version
/// (`plugin:<name>@<version>`, bounded by the versions loaded).
#[derive(Debug, Default)]
pub struct BreakerSet {
    config: Mutex<BreakerConfig>,
    breakers: Mutex<std::collections::BTreeMap<String, Arc<CircuitBreaker>>>,
}

impl BreakerSet {
    /// Use `config` for breakers created from now on.
    pub fn configure(&self, config: BreakerConfig) {
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = config;
    }

    /// The breaker of `key`, created closed on first use.
    pub fn get(&self, key: &str) -> Arc<CircuitBreaker> {
        let mut map = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = map.get(key) {
            return b.clone();
        }
        let config = self
            .config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let b = CircuitBreaker::new(key, config);
        map.insert(key.to_owned(), b.clone());
        b
    }

    /// Every breaker's key and state.
    pub fn states(&self) -> Vec<(String, BreakerState)> {
        let map = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(k, b)| (k.clone(), b.state())).collect()
    }
}

/// Tower layer putting a [`CircuitBreaker`] in front of a service.
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer {
    breaker: Arc<CircuitBreaker>,
}

impl CircuitBreakerLayer {
    /// Guard services with `breaker`.
    pub fn new(breaker: Arc<CircuitBreaker>) -> Self {
        Self { breaker }
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreakerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService {
            inner,
            breaker: self.breaker.clone(),
        }
    }
}

/// See [`CircuitBreakerLayer`]. The inner error must be able to say whether it is a failure
/// ([`Failure`]) and to carry a rejection (`From<BreakerOpen>`).
#[derive(Debug, Clone)]
pub struct CircuitBreakerService<S> {
    inner: S,
    breaker: Arc<CircuitBreaker>,
}

impl<S, Req> Service<Req> for CircuitBreakerService<S>
where
    S: Service<Req>,
    S::Future: Send + 'static,
    S::Error: Failure + From<BreakerOpen> + Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.breaker.try_acquire() {
            Err(open) => Box::pin(std::future::ready(Err(S::Error::from(open)))),
            Ok(permit) => {
                let fut = self.inner.call(req);
                Box::pin(async move {
                    let result = fut.await;
                    permit.record(Some(match &result {
                        Ok(_) => false,
                        Err(e) => e.trips_breaker(),
                    }));
                    result
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[derive(Debug, PartialEq)]
    enum E {
        Down,
        NotFound,
        Open(Duration),
    }
    impl Failure for E {
        fn trips_breaker(&self) -> bool {
            matches!(self, E::Down)
        }
    }
    impl From<BreakerOpen> for E {
        fn from(o: BreakerOpen) -> Self {
            E::Open(o.retry_after)
        }
    }

    fn config() -> BreakerConfig {
        BreakerConfig {
            failure_rate: 0.5,
            min_calls: 4,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(5),
            half_open_probes: 2,
        }
    }

    /// A service answering with whatever the shared switch says.
    fn svc(
        breaker: &Arc<CircuitBreaker>,
        healthy: Arc<std::sync::atomic::AtomicBool>,
    ) -> impl Service<(), Response = (), Error = E, Future: Send> + Clone {
        CircuitBreakerLayer::new(breaker.clone()).layer(tower::service_fn(move |()| {
            let ok = healthy.load(std::sync::atomic::Ordering::SeqCst);
            async move { if ok { Ok(()) } else { Err(E::Down) } }
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_failure_rate_fails_fast_then_half_opens_and_closes() {
        let b = CircuitBreaker::new("test", config());
        let healthy = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let s = svc(&b, healthy.clone());
        for _ in 0..2 {
            s.clone().oneshot(()).await.unwrap();
        }
        healthy.store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(s.clone().oneshot(()).await, Err(E::Down));
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "3 calls are below min_calls"
        );
        assert_eq!(s.clone().oneshot(()).await, Err(E::Down));
        assert_eq!(b.state(), BreakerState::Open, "2 of 4 failed: rate reached");

        // While open: the inner service is not called, the error says when to come back.
        healthy.store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            s.clone().oneshot(()).await,
            Err(E::Open(Duration::from_secs(5)))
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            s.clone().oneshot(()).await,
            Err(E::Open(Duration::from_secs(3)))
        );

        // After the open period: probes; two successes close it.
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        s.clone().oneshot(()).await.unwrap();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        s.clone().oneshot(()).await.unwrap();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn healthy_errors_do_not_count_and_old_failures_age_out() {
        let b = CircuitBreaker::new("test", config());
        for _ in 0..10 {
            b.try_acquire()
                .unwrap()
                .record(Some(E::NotFound.trips_breaker()));
        }
        assert_eq!(b.state(), BreakerState::Closed);
        for _ in 0..3 {
            b.try_acquire().unwrap().record(Some(true));
        }
        // 3 failures of 13 calls: under the rate. Let everything age out of the window.
        tokio::time::advance(Duration::from_secs(11)).await;
        b.try_acquire().unwrap().record(Some(true));
        assert_eq!(b.state(), BreakerState::Closed, "1 call is below min_calls");
        for _ in 0..3 {
            b.try_acquire().unwrap().record(Some(true));
        }
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_admits_a_bounded_number_of_probes_and_a_failure_reopens() {
        let b = CircuitBreaker::new("test", config());
        for _ in 0..4 {
            b.try_acquire().unwrap().record(Some(true));
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        let p1 = b.try_acquire().expect("first probe");
        let p2 = b.try_acquire().expect("second probe");
        assert!(b.try_acquire().is_err(), "only two probes per period");
        p1.record(Some(false));
        p2.record(Some(true));
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.open_for(), Some(Duration::from_secs(5)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_probe_frees_its_permit_and_late_outcomes_are_ignored() {
        let b = CircuitBreaker::new("test", config());
        for _ in 0..4 {
            b.try_acquire().unwrap().record(Some(true));
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        let stale = b.try_acquire().unwrap();
        drop(b.try_acquire().unwrap()); // cancelled probe: counts as a failure, re-opens
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(5)).await;
        // A fresh period has a fresh permit set; the stale probe's success does not count.
        let p1 = b.try_acquire().unwrap();
        stale.record(Some(false));
        let p2 = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_err());
        p1.record(Some(false));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        p2.record(Some(false));
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
