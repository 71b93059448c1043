//! An adaptive concurrency limit: the API's in-flight limit follows the latency it causes.
//!
//! A fixed `policy.max_concurrency` is right for one service on one machine at one mix of
//! requests: too high and the queue forms inside the service (requests wait on the
//! database's writer or for a CPU, and every accepted request waits longer), too low and
//! capacity is lost. By Little's law the right limit is the throughput the service sustains
//! times the latency it has unloaded, and both move: with the database, the plugin version,
//! the host's size and what else runs on it. With `policy.adaptive_concurrency.enabled`, the
//! limit is measured instead of configured; `policy.max_concurrency` stays the ceiling.
//!
//! The controller is the gradient controller of Envoy's adaptive concurrency filter, as its
//! documentation describes it (the code is ours):
//!
//! - **The unloaded latency (min RTT)** is measured with the limit pinned at
//!   `min_concurrency`: the median latency of the first `min_rtt_samples` requests answered
//!   among those admitted after the pin (requests admitted before it, under a higher limit,
//!   neither count nor take the floor's slots). It is measured at start and again every
//!   `min_rtt_interval_ms` (plus up to a tenth of it at random, so that replicas do not pin
//!   together), so it follows a service that became faster or slower. While it is
//!   measured, requests beyond `min_concurrency` are shed; a measurement ends after ten
//!   update intervals (1 s by default) with the samples it has, so a slow service is not
//!   held at the floor for long.
//! - **Every `update_interval_ms`**, the median latency of the requests completed in that
//!   window (the sample RTT) gives the gradient `min_rtt * (1 + buffer) / sample_rtt`,
//!   clamped to `0.5..=2`; the new limit is `gradient * limit` plus a headroom of its square
//!   root, clamped to `min_concurrency..=max_concurrency`. Latency within the buffer of the
//!   unloaded latency lets the limit grow (about doubling per window, plus the headroom);
//!   queueing halves it at most per window (less the headroom, so it settles a little above
//!   the target latency). A window without answered requests changes nothing.
//! - **The limit grows only when it is used**: in a window whose requests in flight never
//!   reached half the limit, a gradient above one leaves the limit where it is (the rule
//!   Netflix's `Gradient2Limit` has for an application-limited caller). Without it, light
//!   traffic, fast by definition, raises the limit to the ceiling, and a sudden surge is
//!   then admitted up to the ceiling and queued inside for the windows the limit takes to
//!   come down: measured on this repository's overload benchmark, the surge's first second
//!   put 2.6 % of its accepted requests above 10 ms (BENCHMARKS.md, "An adaptive concurrency
//!   limit").
//!
//! Every answered request is a sample, whatever its status, except client errors (4xx: a
//! 404 or a refused body says nothing about the queue, and cheap ones sent during a
//! measurement would drag the unloaded latency down); a timeout's 504 is the strongest sign
//! of queueing there is. A request whose client went away before the answer is not a
//! sample: its latency is not the service's. Sample latencies are the service's own
//! requests' mix: traffic whose cost per request swings widely within seconds moves the
//! median as queueing does (RUNBOOK.md says when not to turn the limit on).
//!
//! A request is admitted while the requests in flight are fewer than the limit, decided with
//! one atomic compare-and-swap; the sample is recorded under a mutex held for a push, and
//! once per window for a median. With the controller off (`enabled = false`, the default)
//! the same admission serves the fixed `policy.max_concurrency`: no clock read, no sample,
//! no gauge. It is the load-shed layer's one admission either way.
//!
//! Written by hand, and why: tower has fixed limits only; the one crate with such
//! controllers (`congestion-limiter` 0.1.0, one release) updates its limit behind an async
//! mutex on every request and releases a slot with an async call, which a request dropped
//! mid-flight (a client gone, a timeout) cannot make from `Drop`. The fixed limit uses the
//! same admission (tower's semaphore limit under tower's `LoadShed` did before), so that the
//! layer has one path to keep, not two.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opentelemetry::metrics::Gauge;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Most samples kept per window; more requests than this in one window are still admitted
/// and counted, only their latencies are not kept (the median of the first ones stands).
const MAX_WINDOW_SAMPLES: usize = 20_000;

/// Settings of the adaptive limit (`[policy.adaptive_concurrency]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaptiveConcurrencyConfig {
    /// Off by default: the limit is then `policy.max_concurrency`, fixed.
    pub enabled: bool,
    /// The limit while the unloaded latency is measured, and its floor.
    pub min_concurrency: usize,
    /// How far above the unloaded latency the median may rise before the limit shrinks, in
    /// percent.
    pub buffer_percent: u32,
    /// How often the limit is recomputed.
    #[serde(with = "crate::support::duration_ms", rename = "update_interval_ms")]
    pub update_interval: Duration,
    /// How often the unloaded latency is measured again.
    #[serde(with = "crate::support::duration_ms", rename = "min_rtt_interval_ms")]
    pub min_rtt_interval: Duration,
    /// Requests whose median is the unloaded latency.
    pub min_rtt_samples: usize,
}

impl Default for AdaptiveConcurrencyConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            min_concurrency: 3,
            buffer_percent: 25,
            update_interval: Duration::from_millis(100),
            min_rtt_interval: Duration::from_secs(60),
            min_rtt_samples: 50,
        }
    }
}

impl AdaptiveConcurrencyConfig {
    /// Why these settings cannot work, if they cannot (`max` is `policy.max_concurrency`).
    pub fn problem(&self, max: usize) -> Option<&'static str> {
        // Above the ceiling only matters when on (a fixed limit of 1 or 2 with the
        // default floor of 3 is fine while off).
        if self.min_concurrency == 0 || (self.enabled && self.min_concurrency > max) {
            Some("min_concurrency must be between 1 and policy.max_concurrency")
        } else if self.update_interval.is_zero() || self.min_rtt_interval <= self.update_interval {
            Some("update_interval_ms must be positive and below min_rtt_interval_ms")
        } else if self.min_rtt_samples == 0 || self.min_rtt_samples > MAX_WINDOW_SAMPLES {
            Some("min_rtt_samples must be between 1 and 20000")
        } else if self.buffer_percent > 1000 {
            Some("buffer_percent must be at most 1000")
        } else {
            None
        }
    }
}

/// What the controller is doing.
#[derive(Debug)]
enum Phase {
    /// The limit is pinned at `min_concurrency`; samples of requests admitted since the pin.
    MeasuringMinRtt {
        samples: Vec<Duration>,
        started: Instant,
    },
    /// The limit follows the gradient.
    Adapting {
        window: Vec<Duration>,
        window_started: Instant,
        next_min_rtt: Instant,
    },
}

#[derive(Debug)]
struct State {
    phase: Phase,
    min_rtt: Option<Duration>,
    /// The limit before rounding.
    limit: f64,
}

/// The shared limit of one API listener: admission, samples, the controller.
#[derive(Debug)]
pub struct AdaptiveLimit {
    config: AdaptiveConcurrencyConfig,
    max: usize,
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    /// The most requests in flight since the current window started.
    peak: AtomicUsize,
    /// Raised each time the limit is pinned: a sample of a request admitted before the pin
    /// is not an unloaded latency.
    epoch: AtomicUsize,
    /// While the unloaded latency is measured: admission counts only the requests admitted
    /// since the pin (`fresh_in_flight`) against the floor, so requests still running from
    /// before the pin do not shut the door.
    measuring: AtomicBool,
    fresh_in_flight: AtomicUsize,
    state: Mutex<State>,
    limit_gauge: Gauge<u64>,
    min_rtt_gauge: Gauge<f64>,
}

/// One admitted request's slot; dropping it frees the slot. [`Admitted::complete`] records
/// the request's latency first.
#[derive(Debug)]
pub struct Admitted {
    limit: Arc<AdaptiveLimit>,
    /// When admitted; `None` for a fixed limit.
    started: Option<Instant>,
    epoch: usize,
    /// Admitted while the unloaded latency was measured.
    fresh: bool,
}

impl Admitted {
    /// The request was answered: its latency is a sample when `counted` (the layer leaves
    /// out client errors: a 404 or a refused body says nothing about the service's queue,
    /// and a client could otherwise send cheap ones to drag the unloaded latency down).
    pub fn complete(self, counted: bool) {
        if let (true, Some(started)) = (counted, self.started) {
            self.limit
                .record(self.epoch, self.fresh, started.elapsed(), Instant::now());
        }
        // `Drop` frees the slot.
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.limit.in_flight.fetch_sub(1, Ordering::AcqRel);
        if self.fresh {
            self.limit.fresh_in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl AdaptiveLimit {
    /// A limit at most `max`, starting with a measurement of the unloaded latency.
    /// With `config.enabled` false the limit stays at `max`: a fixed limit.
    pub fn new(config: AdaptiveConcurrencyConfig, max: usize) -> Arc<Self> {
        let max = max.max(1);
        let floor = config.min_concurrency.clamp(1, max);
        let start = if config.enabled { floor } else { max };
        let meter = opentelemetry::global::meter("weir.http");
        let limit = Arc::new(Self {
            max,
            limit: AtomicUsize::new(start),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            epoch: AtomicUsize::new(0),
            measuring: AtomicBool::new(config.enabled),
            fresh_in_flight: AtomicUsize::new(0),
            state: Mutex::new(State {
                phase: Phase::MeasuringMinRtt {
                    samples: Vec::with_capacity(config.min_rtt_samples),
                    started: Instant::now(),
                },
                min_rtt: None,
                limit: start as f64,
            }),
            config,
            limit_gauge: meter
                .u64_gauge("weir.http.server.concurrency_limit")
                .with_description("Requests the API admits in flight now (adaptive limit)")
                .build(),
            min_rtt_gauge: meter
                .f64_gauge("weir.http.server.min_rtt")
                .with_unit("s")
                .with_description("Unloaded request latency the adaptive limit measured last")
                .build(),
        });
        if limit.config.enabled {
            limit.limit_gauge.record(floor as u64, &[]);
        }
        limit
    }

    /// A fixed limit of `max` (the controller off).
    pub fn fixed(max: usize) -> Arc<Self> {
        Self::new(AdaptiveConcurrencyConfig::default(), max)
    }

    /// Requests admitted in flight now.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Requests that would be admitted right now: room under the limit, or while the
    /// unloaded latency is measured, under the floor for requests admitted since the pin
    /// (the rule [`Self::try_admit`] applies).
    pub fn available(&self) -> usize {
        if self.measuring.load(Ordering::Acquire) {
            self.floor()
                .saturating_sub(self.fresh_in_flight.load(Ordering::Acquire))
        } else {
            self.limit().saturating_sub(self.in_flight())
        }
    }

    /// The last measured unloaded latency, once there is one.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.lock().min_rtt
    }

    /// A slot, if fewer requests than the limit are in flight (while the unloaded latency is
    /// measured: fewer than the floor admitted since the pin).
    pub fn try_admit(self: &Arc<Self>) -> Option<Admitted> {
        // The epoch before the phase: `pin` sets `measuring` before it raises the epoch, so
        // a request tagged with the new epoch has seen the measurement's rule.
        let epoch = self.epoch.load(Ordering::Acquire);
        let fresh = self.measuring.load(Ordering::Acquire);
        let (counter, limit) = if fresh {
            (&self.fresh_in_flight, self.floor())
        } else {
            (&self.in_flight, self.limit())
        };
        let mut current = counter.load(Ordering::Acquire);
        loop {
            if current >= limit {
                return None;
            }
            match counter.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        let in_flight = if fresh {
            self.in_flight.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            current + 1
        };
        let adaptive = self.config.enabled;
        if adaptive {
            self.peak.fetch_max(in_flight, Ordering::AcqRel);
        }
        Some(Admitted {
            limit: self.clone(),
            // No clock read for a fixed limit: nothing records the sample.
            started: adaptive.then(Instant::now),
            epoch,
            fresh,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One sample: a request admitted in `epoch` (during a measurement when `fresh`)
    /// answered after `latency`, at `now`. Its slot is still counted in flight.
    fn record(&self, epoch: usize, fresh: bool, latency: Duration, now: Instant) {
        let mut state = self.lock();
        let state = &mut *state;
        match &mut state.phase {
            Phase::MeasuringMinRtt { samples, started } => {
                if fresh && epoch == self.epoch.load(Ordering::Acquire) {
                    samples.push(latency);
                }
                // A measurement lasts until enough requests are answered, or at most ten
                // update intervals once it has one sample: a slow service cannot keep the
                // limit pinned.
                let enough = samples.len() >= self.config.min_rtt_samples;
                let overdue = now.duration_since(*started) >= self.config.update_interval * 10;
                if !enough && !(overdue && (!samples.is_empty() || state.min_rtt.is_some())) {
                    return;
                }
                if !samples.is_empty() {
                    // At least a microsecond: a zero target would pin the limit to its floor.
                    let min_rtt = median(samples).max(Duration::from_micros(1));
                    state.min_rtt = Some(min_rtt);
                }
                if let Some(min_rtt) = state.min_rtt {
                    self.min_rtt_gauge.record(min_rtt.as_secs_f64(), &[]);
                }
                self.measuring.store(false, Ordering::Release);
                // The limit grows from the floor, about doubling per window.
                self.peak
                    .store(self.in_flight().saturating_sub(1), Ordering::Release);
                state.phase = Phase::Adapting {
                    window: Vec::new(),
                    window_started: now,
                    next_min_rtt: now + self.next_interval(),
                };
            }
            Phase::Adapting {
                window,
                window_started,
                next_min_rtt,
            } => {
                if window.len() < MAX_WINDOW_SAMPLES {
                    window.push(latency);
                }
                if now.duration_since(*window_started) < self.config.update_interval {
                    return;
                }
                if now >= *next_min_rtt {
                    self.pin(state, now);
                    return;
                }
                let sample = median(window);
                window.clear();
                *window_started = now;
                // The request being recorded still holds its slot.
                let peak = self
                    .peak
                    .swap(self.in_flight().saturating_sub(1), Ordering::AcqRel);
                let min_rtt = state.min_rtt.unwrap_or(sample);
                let next = self.next_limit(state.limit, min_rtt, sample);
                // Grow only a limit that was used (see the module doc).
                if next <= state.limit || (peak as f64) * 2.0 >= state.limit {
                    state.limit = next;
                }
                self.publish(state.limit);
            }
        }
    }

    /// The gradient step: the limit after a window whose median latency was `sample`.
    fn next_limit(&self, limit: f64, min_rtt: Duration, sample: Duration) -> f64 {
        let target = min_rtt.as_secs_f64() * (1.0 + f64::from(self.config.buffer_percent) / 100.0);
        let gradient = if sample.is_zero() {
            2.0
        } else {
            (target / sample.as_secs_f64()).clamp(0.5, 2.0)
        };
        let next = gradient * limit;
        (next + next.sqrt()).clamp(self.floor() as f64, self.max as f64)
    }

    fn floor(&self) -> usize {
        self.config.min_concurrency.clamp(1, self.max)
    }

    /// Pin the limit at the floor and measure the unloaded latency again.
    fn pin(&self, state: &mut State, now: Instant) {
        self.measuring.store(true, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        state.phase = Phase::MeasuringMinRtt {
            samples: Vec::with_capacity(self.config.min_rtt_samples),
            started: now,
        };
        state.limit = self.floor() as f64;
        self.publish(state.limit);
    }

    /// The limit now, and its gauge (recorded every window, so that a reader exporting
    /// deltas sees it).
    fn publish(&self, limit: f64) {
        let rounded = (limit.round() as usize).clamp(self.floor(), self.max);
        self.limit.store(rounded, Ordering::Release);
        self.limit_gauge.record(rounded as u64, &[]);
    }

    /// The interval to the next measurement of the unloaded latency, with up to a tenth
    /// more at random.
    fn next_interval(&self) -> Duration {
        self.config
            .min_rtt_interval
            .mul_f64(1.0 + fastrand::f64() * 0.1)
    }
}

/// The median of `samples` (reorders them).
fn median(samples: &mut [Duration]) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let middle = samples.len() / 2;
    *samples.select_nth_unstable(middle).1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AdaptiveConcurrencyConfig {
        AdaptiveConcurrencyConfig {
            enabled: true,
            min_concurrency: 2,
            buffer_percent: 25,
            update_interval: Duration::from_millis(100),
            min_rtt_interval: Duration::from_secs(60),
            min_rtt_samples: 10,
        }
    }

    /// `n` requests admitted together, answered `latency` later (virtual time).
    async fn wave(limit: &Arc<AdaptiveLimit>, n: usize, latency: Duration) -> usize {
        let admitted: Vec<_> = (0..n).filter_map(|_| limit.try_admit()).collect();
        let count = admitted.len();
        tokio::time::advance(latency).await;
        for a in admitted {
            a.complete(true);
        }
        count
    }

    /// The unloaded latency measured: ten requests, two at a time, 4 ms each.
    async fn measured(limit: &Arc<AdaptiveLimit>) {
        for _ in 0..5 {
            wave(limit, 2, Duration::from_millis(4)).await;
        }
    }

    /// `n` windows, each a wave of `offered(limit now)` requests taking `latency` then the
    /// rest of an update interval; the limit after each.
    async fn windows(
        limit: &Arc<AdaptiveLimit>,
        n: usize,
        offered: impl Fn(usize) -> usize,
        latency: Duration,
    ) -> Vec<usize> {
        let mut seen = vec![];
        for _ in 0..n {
            wave(limit, offered(limit.limit()), latency).await;
            tokio::time::advance(Duration::from_millis(100)).await;
            seen.push(limit.limit());
        }
        seen
    }

    #[tokio::test(start_paused = true)]
    async fn the_limit_starts_pinned_and_measures_the_unloaded_latency_first() {
        let limit = AdaptiveLimit::new(config(), 64);
        assert_eq!(limit.limit(), 2);
        assert_eq!(limit.min_rtt(), None);
        // Two admitted, the third shed while the floor holds.
        let a = limit.try_admit().unwrap();
        let b = limit.try_admit().unwrap();
        assert!(
            limit.try_admit().is_none(),
            "beyond the floor while measuring"
        );
        drop((a, b));
        assert_eq!(limit.in_flight(), 0);
        for _ in 0..5 {
            assert_eq!(wave(&limit, 2, Duration::from_millis(4)).await, 2);
        }
        assert_eq!(limit.min_rtt(), Some(Duration::from_millis(4)));
    }

    #[tokio::test(start_paused = true)]
    async fn latency_near_the_unloaded_one_lets_the_limit_grow_to_the_ceiling() {
        let limit = AdaptiveLimit::new(config(), 64);
        measured(&limit).await;
        let mut seen = vec![limit.limit()];
        seen.extend(windows(&limit, 40, |l| l, Duration::from_millis(4)).await);
        assert_eq!(limit.limit(), 64, "limits seen: {seen:?}");
        assert!(
            seen.windows(2).all(|w| w[1] >= w[0]),
            "never shrank: {seen:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn light_traffic_does_not_raise_the_limit_it_does_not_use() {
        let limit = AdaptiveLimit::new(config(), 64);
        measured(&limit).await;
        // One request at a time, at the unloaded latency, for 40 windows.
        let seen = windows(&limit, 40, |_| 1, Duration::from_millis(4)).await;
        assert!(limit.limit() <= 4, "limits seen: {seen:?}");
        // Used, it grows again.
        let seen = windows(&limit, 10, |l| l, Duration::from_millis(4)).await;
        assert!(limit.limit() > 16, "limits seen: {seen:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn queueing_latency_shrinks_the_limit_and_requests_beyond_it_are_shed() {
        let limit = AdaptiveLimit::new(config(), 64);
        measured(&limit).await;
        windows(&limit, 40, |l| l, Duration::from_millis(4)).await;
        assert_eq!(limit.limit(), 64);
        // Now every request takes five times the unloaded latency: the queue the limit lets in.
        let seen = windows(&limit, 20, |_| 64, Duration::from_millis(20)).await;
        assert!(limit.limit() <= 8, "limits seen: {seen:?}");
        assert!(limit.limit() >= 2, "never below the floor: {seen:?}");
        // At most halved per window.
        let mut previous = 64;
        for l in &seen {
            assert!(*l * 2 + 1 >= previous, "shrank faster than half: {seen:?}");
            previous = *l;
        }
        // 64 requests offered at once: only the limit is admitted.
        let now = limit.limit();
        assert_eq!(wave(&limit, 64, Duration::from_millis(20)).await, now);
    }

    #[tokio::test(start_paused = true)]
    async fn the_unloaded_latency_is_measured_again_and_old_requests_do_not_count() {
        let mut cfg = config();
        cfg.min_rtt_interval = Duration::from_secs(2);
        let limit = AdaptiveLimit::new(cfg, 64);
        measured(&limit).await;
        assert_eq!(limit.min_rtt(), Some(Duration::from_millis(4)));
        windows(&limit, 10, |l| l, Duration::from_millis(4)).await;
        assert!(limit.limit() > 9);
        // Eight slow requests admitted under the high limit, still running at the pin.
        let mut old: Vec<_> = (0..8).map(|_| limit.try_admit().unwrap()).collect();
        // Past the interval and its jitter (at most a tenth).
        tokio::time::advance(Duration::from_millis(2300)).await;
        wave(&limit, 1, Duration::from_millis(10)).await;
        assert_eq!(limit.limit(), 2, "pinned for the measurement");
        // Answered during the measurement, they would be most of its samples.
        for a in old.drain(..4) {
            a.complete(true);
        }
        // The service is slower now (10 ms unloaded): measured from new requests only,
        // admitted up to the floor although four old ones still run.
        assert_eq!(
            limit.available(),
            2,
            "the floor's slots, old requests aside"
        );
        for _ in 0..5 {
            assert_eq!(wave(&limit, 3, Duration::from_millis(10)).await, 2);
        }
        assert_eq!(limit.min_rtt(), Some(Duration::from_millis(10)));
        assert_eq!(limit.in_flight(), 4);
        drop(old);
        assert_eq!(limit.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fixed_limit_admits_up_to_its_max_and_never_moves() {
        let limit = AdaptiveLimit::fixed(8);
        assert_eq!(limit.limit(), 8, "no pin at start");
        let seen = windows(&limit, 20, |_| 9, Duration::from_millis(50)).await;
        assert_eq!(seen, vec![8; 20], "slow answers do not move it");
        assert_eq!(limit.min_rtt(), None, "nothing recorded");
        let held: Vec<_> = (0..9).filter_map(|_| limit.try_admit()).collect();
        assert_eq!(held.len(), 8);
        drop(held);
        assert_eq!(limit.in_flight(), 0);
    }

    #[test]
    fn settings_that_cannot_work_are_named() {
        assert_eq!(config().problem(64), None);
        let bad = |f: fn(&mut AdaptiveConcurrencyConfig)| {
            let mut c = config();
            f(&mut c);
            c.problem(64).is_some()
        };
        assert!(bad(|c| c.min_concurrency = 0));
        assert!(bad(|c| c.min_concurrency = 65));
        let mut off = config();
        off.enabled = false;
        off.min_concurrency = 65;
        assert_eq!(off.problem(64), None, "the ceiling binds only when on");
        off.min_rtt_samples = 0;
        assert!(
            off.problem(64).is_some(),
            "other settings are checked when off too"
        );
        assert!(bad(|c| c.update_interval = Duration::ZERO));
        assert!(bad(|c| c.min_rtt_interval = Duration::from_millis(100)));
        assert!(bad(|c| c.min_rtt_samples = 0));
        assert!(bad(|c| c.buffer_percent = 1001));
    }
}
