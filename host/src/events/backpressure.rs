//! Intake backpressure: when the outbox lag (count or age of unpublished events) or the
//! consumer backlog passes its high threshold, `POST /v1/orders` is rejected with 503
//! `BACKPRESSURE` and `Retry-After` until every measure is back at or below its low threshold
//! (hysteresis, so intake does not flap at the boundary). Readiness stays up: this is load, not
//! failure. Each state change is logged once; the state is a gauge and part of `/infoz`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::EventsShared;
use weir_core::ports::OutboxStore;

use crate::lifecycle::{WorkerContext, WorkerError};
use crate::support::{InvalidKey, duration_ms, duration_secs, ensure};

/// The `[events.backpressure]` section. A `max_*` trips backpressure, the matching `resume_*`
/// (lower) releases it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackpressureConfig {
    /// Unpublished outbox events that trip backpressure.
    pub max_unpublished: u64,
    /// Unpublished outbox events at or below which intake resumes.
    pub resume_unpublished: u64,
    /// Age of the oldest unpublished event that trips backpressure.
    #[serde(with = "duration_ms", rename = "max_lag_ms")]
    pub max_lag: Duration,
    /// Age of the oldest unpublished event at or below which intake resumes.
    #[serde(with = "duration_ms", rename = "resume_lag_ms")]
    pub resume_lag: Duration,
    /// Messages waiting in the consumer queue that trip backpressure.
    pub max_consumer_backlog: u64,
    /// Consumer backlog at or below which intake resumes.
    pub resume_consumer_backlog: u64,
    /// How often the monitor measures.
    #[serde(with = "duration_ms", rename = "check_interval_ms")]
    pub check_interval: Duration,
    /// `Retry-After` of rejected requests.
    #[serde(with = "duration_secs", rename = "retry_after_secs")]
    pub retry_after: Duration,
}

impl Default for BackpressureConfig {
    fn default() -> Self {
        Self {
            max_unpublished: 10_000,
            resume_unpublished: 5_000,
            max_lag: Duration::from_secs(60),
            resume_lag: Duration::from_secs(30),
            max_consumer_backlog: 100_000,
            resume_consumer_backlog: 50_000,
            check_interval: Duration::from_secs(1),
            retry_after: Duration::from_secs(5),
        }
    }
}

impl BackpressureConfig {
    /// Each `resume_*` must be below its `max_*`; the check interval and `Retry-After` must be
    /// positive (a zero interval would make the consumer's `tokio::time::interval` panic).
    pub fn validate(&self) -> Result<(), InvalidKey> {
        ensure(
            self.resume_unpublished < self.max_unpublished,
            "events.backpressure.resume_unpublished",
            "must be below events.backpressure.max_unpublished",
        )?;
        ensure(
            self.resume_lag < self.max_lag,
            "events.backpressure.resume_lag_ms",
            "must be below events.backpressure.max_lag_ms",
        )?;
        ensure(
            self.resume_consumer_backlog < self.max_consumer_backlog,
            "events.backpressure.resume_consumer_backlog",
            "must be below events.backpressure.max_consumer_backlog",
        )?;
        ensure(
            !self.check_interval.is_zero(),
            "events.backpressure.check_interval_ms",
            "must be positive",
        )?;
        ensure(
            !self.retry_after.is_zero(),
            "events.backpressure.retry_after_secs",
            "must be at least 1",
        )
    }
}

/// The last measurement and the decision, for the gauges and `/infoz`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BackpressureSnapshot {
    /// Intake is being rejected.
    pub active: bool,
    /// When `active` last changed.
    pub since: Option<DateTime<Utc>>,
    /// Which threshold tripped (while active).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Unpublished outbox events.
    pub unpublished: u64,
    /// Age of the oldest unpublished event, ms.
    pub oldest_unpublished_age_ms: u64,
    /// Messages waiting in the consumer queue (last seen by the consumer).
    pub consumer_backlog: u64,
    /// When measured.
    pub measured_at: Option<DateTime<Utc>>,
}

/// What one measurement saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Measure {
    /// Unpublished outbox events.
    pub unpublished: u64,
    /// Age of the oldest one.
    pub oldest_age: Duration,
    /// Consumer queue depth.
    pub consumer_backlog: u64,
}

/// The hysteresis: `Some(reason)` when intake must be held back after this measurement.
pub fn decide(active: bool, m: &Measure, c: &BackpressureConfig) -> Option<String> {
    if active {
        let still = if m.unpublished > c.resume_unpublished {
            Some(format!(
                "{} unpublished events (resumes at {})",
                m.unpublished, c.resume_unpublished
            ))
        } else if m.oldest_age > c.resume_lag {
            Some(format!(
                "oldest unpublished event is {} ms old (resumes at {} ms)",
                m.oldest_age.as_millis(),
                c.resume_lag.as_millis()
            ))
        } else if m.consumer_backlog > c.resume_consumer_backlog {
            Some(format!(
                "consumer backlog {} (resumes at {})",
                m.consumer_backlog, c.resume_consumer_backlog
            ))
        } else {
            None
        };
        return still;
    }
    if m.unpublished >= c.max_unpublished {
        Some(format!(
            "{} unpublished events (limit {})",
            m.unpublished, c.max_unpublished
        ))
    } else if m.oldest_age >= c.max_lag {
        Some(format!(
            "oldest unpublished event is {} ms old (limit {} ms)",
            m.oldest_age.as_millis(),
            c.max_lag.as_millis()
        ))
    } else if m.consumer_backlog >= c.max_consumer_backlog {
        Some(format!(
            "consumer backlog {} (limit {})",
            m.consumer_backlog, c.max_consumer_backlog
        ))
    } else {
        None
    }
}

/// Intake gate shared by the monitor, the consumer (backlog) and the orders handler.
pub struct Backpressure {
    config: BackpressureConfig,
    store: Arc<dyn OutboxStore>,
    active: AtomicBool,
    consumer_backlog: AtomicU64,
    snapshot: Arc<Mutex<BackpressureSnapshot>>,
    /// Serializes `refresh` so two evaluations cannot log the same change twice.
    refreshing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Backpressure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backpressure")
            .field("config", &self.config)
            .field("active", &self.active)
            .field("consumer_backlog", &self.consumer_backlog)
            .finish_non_exhaustive()
    }
}

impl Backpressure {
    /// Starts inactive.
    pub fn new(config: BackpressureConfig, store: Arc<dyn OutboxStore>) -> Self {
        Self {
            config,
            store,
            active: AtomicBool::new(false),
            consumer_backlog: AtomicU64::new(0),
            snapshot: Arc::new(Mutex::new(BackpressureSnapshot::default())),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// `Err(retry_after)` while active.
    pub fn admit(&self) -> Result<(), Duration> {
        if self.active.load(Ordering::Acquire) {
            Err(self.config.retry_after)
        } else {
            Ok(())
        }
    }

    /// The last measurement.
    pub fn snapshot(&self) -> BackpressureSnapshot {
        self.snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn shared_snapshot(&self) -> Arc<Mutex<BackpressureSnapshot>> {
        self.snapshot.clone()
    }

    /// Recorded by the consumer from the queue's message count.
    pub fn set_consumer_backlog(&self, messages: u64) {
        self.consumer_backlog.store(messages, Ordering::Release);
    }

    /// Measure the outbox and decide. A failed measurement keeps the current state (the
    /// database being down is readiness's business, not backpressure's).
    pub async fn refresh(&self) {
        let _serial = self.refreshing.lock().await;
        let now = Utc::now();
        let stats = match self.store.outbox_stats(now).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot measure the outbox lag; backpressure unchanged");
                return;
            }
        };
        let m = Measure {
            unpublished: stats.unpublished,
            oldest_age: stats.oldest_unpublished_age.unwrap_or_default(),
            consumer_backlog: self.consumer_backlog.load(Ordering::Acquire),
        };
        let was = self.active.load(Ordering::Acquire);
        let reason = decide(was, &m, &self.config);
        let now_active = reason.is_some();
        let mut snap = self
            .snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if now_active != was {
            snap.since = Some(now);
            if now_active {
                tracing::warn!(
                    event = "backpressure.on",
                    reason = reason.as_deref().unwrap_or(""),
                    unpublished = m.unpublished,
                    oldest_unpublished_age_ms = m.oldest_age.as_millis() as u64,
                    consumer_backlog = m.consumer_backlog,
                    "backpressure on: rejecting new orders with BACKPRESSURE"
                );
            } else {
                tracing::info!(
                    event = "backpressure.off",
                    unpublished = m.unpublished,
                    oldest_unpublished_age_ms = m.oldest_age.as_millis() as u64,
                    consumer_backlog = m.consumer_backlog,
                    "backpressure off: accepting new orders again"
                );
            }
        }
        self.active.store(now_active, Ordering::Release);
        snap.active = now_active;
        snap.reason = reason;
        snap.unpublished = m.unpublished;
        snap.oldest_unpublished_age_ms =
            u64::try_from(m.oldest_age.as_millis()).unwrap_or(u64::MAX);
        snap.consumer_backlog = m.consumer_backlog;
        snap.measured_at = Some(now);
    }
}

/// Re-measures every `check_interval` until shutdown; each measurement is one unit of work.
pub(crate) async fn monitor(
    shared: Arc<EventsShared>,
    ctx: WorkerContext,
) -> Result<(), WorkerError> {
    let every = shared.config.backpressure.check_interval;
    loop {
        let _ = ctx
            .unit(async {
                shared.backpressure.refresh().await;
                Ok::<(), WorkerError>(())
            })
            .await;
        if !ctx.sleep(every).await {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BackpressureConfig {
        BackpressureConfig {
            max_unpublished: 100,
            resume_unpublished: 50,
            max_lag: Duration::from_secs(10),
            resume_lag: Duration::from_secs(5),
            max_consumer_backlog: 1000,
            resume_consumer_backlog: 500,
            ..BackpressureConfig::default()
        }
    }

    fn m(unpublished: u64, lag_s: u64, backlog: u64) -> Measure {
        Measure {
            unpublished,
            oldest_age: Duration::from_secs(lag_s),
            consumer_backlog: backlog,
        }
    }

    #[test]
    fn trips_at_the_high_mark_and_resumes_only_below_the_low_mark() {
        let c = cfg();
        assert!(decide(false, &m(99, 9, 999), &c).is_none());
        assert!(decide(false, &m(100, 0, 0), &c).is_some());
        assert!(decide(false, &m(0, 10, 0), &c).is_some());
        assert!(decide(false, &m(0, 0, 1000), &c).is_some());
        // Between the marks the state holds, whichever it is.
        assert!(decide(true, &m(75, 0, 0), &c).is_some());
        assert!(decide(false, &m(75, 0, 0), &c).is_none());
        assert!(decide(true, &m(50, 7, 0), &c).is_some());
        assert!(decide(true, &m(0, 0, 700), &c).is_some());
        assert!(decide(true, &m(50, 5, 500), &c).is_none());
    }

    #[test]
    fn resume_marks_must_be_below_the_limits() {
        assert!(BackpressureConfig::default().validate().is_ok());
        let bad = BackpressureConfig {
            resume_unpublished: 100,
            max_unpublished: 100,
            ..BackpressureConfig::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().key,
            "events.backpressure.resume_unpublished"
        );
    }

    #[test]
    fn check_interval_and_retry_after_must_be_positive() {
        let zero_interval = BackpressureConfig {
            check_interval: Duration::ZERO,
            ..BackpressureConfig::default()
        };
        assert_eq!(
            zero_interval.validate().unwrap_err().key,
            "events.backpressure.check_interval_ms"
        );
        let zero_retry = BackpressureConfig {
            retry_after: Duration::ZERO,
            ..BackpressureConfig::default()
        };
        assert_eq!(
            zero_retry.validate().unwrap_err().key,
            "events.backpressure.retry_after_secs"
        );
        let smallest = BackpressureConfig {
            check_interval: Duration::from_millis(1),
            retry_after: Duration::from_secs(1),
            ..BackpressureConfig::default()
        };
        assert!(smallest.validate().is_ok());
    }
}
