//! Data retention (`[retention]`): one supervised worker per kind of expiring record
//! ([`Expiring`]) deletes what is older than its retention, in batches
//! ([`weir_core::app::retention`]), pausing `retention.batch_pause_ms` between batches so
//! requests waiting for the write lock get it (SQLite has one writer; its busy handler
//! polls, so back-to-back batches would starve them), and stopping between batches at
//! shutdown.
//!
//! - idempotency keys: `idempotency.retention_secs`, every `idempotency.purge_interval_secs`;
//! - outbox events: `retention.events_secs` after the broker confirmed them, or, on an instance
//!   without a broker (the embedded default: the events feed is their only reader, nothing
//!   marks them published), after they occurred; every `retention.interval_secs`;
//! - inbox records: `retention.inbox_messages_secs`, every `retention.interval_secs`.
//!
//! Metrics: `weir.retention.deleted` (rows, by `record`), `weir.retention.batch.duration`
//! (seconds per batch transaction, by `record`) and `weir.retention.runs` (by `record` and
//! `outcome`: `complete`, `stopped`, `error`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};
use serde::{Deserialize, Serialize};
use weir_core::app::{RetentionPolicy, purge_expired};

use crate::lifecycle::worker::Supervisor;
use crate::storage::{Expiring, RetentionStore};
use crate::support::{InvalidKey, duration_ms, duration_secs, ensure};

/// `[retention]`: how long published events and inbox records are kept, and how purges run.
/// Idempotency keys keep their own `idempotency.retention_secs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// How often the published-events and inbox purges run.
    #[serde(with = "duration_secs", rename = "interval_secs")]
    pub interval: Duration,
    /// Outbox events are deleted this long after the broker confirmed them (without a
    /// broker: after they occurred); the `/v1/events` feed reaches back this far. `0` keeps
    /// them forever.
    #[serde(with = "duration_secs", rename = "events_secs")]
    pub events: Duration,
    /// Inbox records are deleted this long after their message was received; a redelivery
    /// older than this is no longer recognised as a duplicate. `0` keeps them forever.
    #[serde(with = "duration_secs", rename = "inbox_messages_secs")]
    pub inbox_messages: Duration,
    /// Rows deleted per transaction.
    pub batch_size: u32,
    /// Pause between two batches of one run.
    #[serde(with = "duration_ms", rename = "batch_pause_ms")]
    pub batch_pause: Duration,
}

/// Largest `retention.batch_size`: a batch must stay a short transaction.
pub const MAX_BATCH_SIZE: u32 = 10_000;

/// Shortest non-zero inbox retention: redeliveries (a consumer crash, a requeue) happen within
/// minutes; an hour leaves a wide margin.
pub const MIN_INBOX_RETENTION: Duration = Duration::from_secs(3600);

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(600),
            events: Duration::from_secs(7 * 24 * 3600),
            inbox_messages: Duration::from_secs(14 * 24 * 3600),
            batch_size: 1000,
            batch_pause: Duration::from_millis(50),
        }
    }
}

impl RetentionConfig {
    /// Check values that parse but cannot work.
    pub fn validate(&self) -> Result<(), InvalidKey> {
        ensure(
            !self.interval.is_zero(),
            "retention.interval_secs",
            "must be positive",
        )?;
        ensure(
            (1..=MAX_BATCH_SIZE).contains(&self.batch_size),
            "retention.batch_size",
            "must be between 1 and 10000",
        )?;
        ensure(
            self.inbox_messages.is_zero() || self.inbox_messages >= MIN_INBOX_RETENTION,
            "retention.inbox_messages_secs",
            "must be 0 (keep forever) or at least 3600: a shorter inbox forgets messages the \
             broker may still redeliver",
        )
    }

    /// The policy of the core's retention use-case; `idempotency` is
    /// `idempotency.retention_secs`.
    pub fn policy(&self, idempotency: Duration) -> RetentionPolicy {
        let keep = |d: Duration| (!d.is_zero()).then_some(d);
        RetentionPolicy {
            idempotency_keys: Some(idempotency),
            events: keep(self.events),
            inbox_messages: keep(self.inbox_messages),
            batch_size: self.batch_size,
        }
    }
}

/// The retention instruments.
#[derive(Debug, Clone)]
struct Instruments {
    deleted: Counter<u64>,
    batch_duration: Histogram<f64>,
    runs: Counter<u64>,
}

impl Instruments {
    fn new() -> Self {
        let meter = opentelemetry::global::meter("weir.retention");
        Self {
            deleted: meter
                .u64_counter("weir.retention.deleted")
                .with_description("Expired rows deleted by retention, by record kind")
                .build(),
            batch_duration: meter
                .f64_histogram("weir.retention.batch.duration")
                .with_unit("s")
                .with_description("Duration of one retention batch (one delete transaction)")
                .with_boundaries(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                .build(),
            runs: meter
                .u64_counter("weir.retention.runs")
                .with_description("Retention runs by record kind and outcome")
                .build(),
        }
    }
}

/// A store wrapper timing each batch.
struct Timed<'a> {
    store: &'a dyn RetentionStore,
    instruments: &'a Instruments,
    label: &'a [KeyValue],
}

#[async_trait::async_trait]
impl RetentionStore for Timed<'_> {
    async fn purge_expired(
        &self,
        kind: Expiring,
        before: chrono::DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, crate::storage::StoreError> {
        let started = Instant::now();
        let deleted = self.store.purge_expired(kind, before, limit).await;
        self.instruments
            .batch_duration
            .record(started.elapsed().as_secs_f64(), self.label);
        if let Ok(n) = &deleted {
            self.instruments.deleted.add(*n, self.label);
        }
        deleted
    }
}

/// How the service runs: what the retention workers need to know of it.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// `idempotency.retention_secs`.
    pub idempotency_retention: Duration,
    /// `idempotency.purge_interval_secs`.
    pub idempotency_interval: Duration,
    /// Whether a broker publishes the outbox (else the feed is the events' only reader).
    pub broker: bool,
}

/// Starts one retention worker per kind that has a retention.
pub fn spawn(
    supervisor: &Supervisor,
    store: Arc<dyn RetentionStore>,
    config: &RetentionConfig,
    schedule: Schedule,
) {
    let instruments = Instruments::new();
    let policy = config.policy(schedule.idempotency_retention);
    let events = if schedule.broker {
        Expiring::PublishedEvents
    } else {
        Expiring::FeedEvents
    };
    for kind in [Expiring::IdempotencyKeys, events, Expiring::InboxMessages] {
        if policy.retention(kind).is_none() {
            tracing::info!(record = kind.name(), "retention: kept forever");
            continue;
        }
        let every = match kind {
            Expiring::IdempotencyKeys => schedule.idempotency_interval,
            _ => config.interval,
        };
        let (store, policy, instruments) = (store.clone(), policy.clone(), instruments.clone());
        let pause = config.batch_pause;
        supervisor.spawn(worker_name(kind), move |ctx| {
            let (store, policy, instruments) = (store.clone(), policy.clone(), instruments.clone());
            async move {
                while ctx.sleep(every).await {
                    let Some(before) = policy.cutoff(kind, Utc::now()) else {
                        continue;
                    };
                    let label = [KeyValue::new("record", kind.name())];
                    let timed = Timed {
                        store: store.as_ref(),
                        instruments: &instruments,
                        label: &label,
                    };
                    let run = purge_expired(&timed, kind, before, policy.batch_size, |_| {
                        ctx.sleep(pause)
                    });
                    let outcome = match ctx.unit(run).await {
                        Ok(purged) => {
                            if purged.rows > 0 {
                                tracing::info!(
                                    record = kind.name(),
                                    rows = purged.rows,
                                    batches = purged.batches,
                                    complete = purged.complete,
                                    "retention: expired rows deleted"
                                );
                            }
                            if purged.complete {
                                "complete"
                            } else {
                                "stopped"
                            }
                        }
                        Err(_) => "error",
                    };
                    instruments.runs.add(
                        1,
                        &[
                            KeyValue::new("record", kind.name()),
                            KeyValue::new("outcome", outcome),
                        ],
                    );
                }
                Ok(())
            }
        });
    }
}

fn worker_name(kind: Expiring) -> &'static str {
    match kind {
        Expiring::IdempotencyKeys => "retention.idempotency_keys",
        Expiring::PublishedEvents | Expiring::FeedEvents => "retention.outbox_events",
        Expiring::InboxMessages => "retention.inbox_messages",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_zero_keeps_forever() {
        let config = RetentionConfig::default();
        config.validate().unwrap();
        let policy = config.policy(Duration::from_secs(86_400));
        assert_eq!(
            policy.retention(Expiring::PublishedEvents),
            Some(Duration::from_secs(604_800))
        );
        let forever = RetentionConfig {
            events: Duration::ZERO,
            inbox_messages: Duration::ZERO,
            ..config
        };
        forever.validate().unwrap();
        let policy = forever.policy(Duration::from_secs(60));
        assert_eq!(policy.retention(Expiring::PublishedEvents), None);
        assert_eq!(policy.retention(Expiring::InboxMessages), None);
        assert_eq!(
            policy.retention(Expiring::IdempotencyKeys),
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn values_that_cannot_work_are_refused_with_their_key() {
        let bad = |c: RetentionConfig| c.validate().unwrap_err().to_string();
        let base = RetentionConfig::default();
        assert!(
            bad(RetentionConfig {
                batch_size: 0,
                ..base.clone()
            })
            .contains("retention.batch_size")
        );
        assert!(
            bad(RetentionConfig {
                batch_size: MAX_BATCH_SIZE + 1,
                ..base.clone()
            })
            .contains("retention.batch_size")
        );
        assert!(
            bad(RetentionConfig {
                inbox_messages: Duration::from_secs(60),
                ..base.clone()
            })
            .contains("retention.inbox_messages_secs")
        );
        assert!(
            bad(RetentionConfig {
                interval: Duration::ZERO,
                ..base
            })
            .contains("retention.interval_secs")
        );
    }
}
