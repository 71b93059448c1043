//! Retention: idempotency keys, published outbox events and consumer inbox records are
//! deleted once older than their retention, in bounded batches.
//!
//! Each batch is one short transaction of at most `batch_size` rows
//! ([`RetentionStore::purge_expired`]), so a purge of a million rows never holds SQLite's single
//! write lock (or PostgreSQL row locks) for longer than one batch: requests interleave between
//! batches. The caller decides what happens between two batches (a pause, a metric, stopping
//! at shutdown) through the `between` callback of [`purge_expired`].
//!
//! What each retention bounds:
//! - idempotency keys: how long a client may retry a request and get the stored response;
//! - events (published ones with a broker; all, by age, without one, when the feed is their
//!   only reader): how far back the `/v1/events` feed reaches (a reader whose cursor lies
//!   below a purged event is told so, [`FeedError::CursorExpired`](super::queries::FeedError));
//!   unpublished events are never deleted;
//! - inbox records: how long a redelivered message is still recognised as a duplicate (it
//!   must exceed the broker's redelivery horizon: a message replayed from the dead-letter queue
//!   after its inbox record is gone is processed again, and only the order's status graph and
//!   version check stand in the way).

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::ports::{Expiring, RetentionStore, StoreError};

/// How long each kind of record is kept; `None` keeps it forever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Idempotency keys, from creation.
    pub idempotency_keys: Option<Duration>,
    /// Outbox events: from publication ([`Expiring::PublishedEvents`]) or, without a broker,
    /// from occurrence ([`Expiring::FeedEvents`]).
    pub events: Option<Duration>,
    /// Inbox records, from reception.
    pub inbox_messages: Option<Duration>,
    /// Rows deleted per transaction (at least 1).
    pub batch_size: u32,
}

impl RetentionPolicy {
    /// The retention of `kind`.
    pub fn retention(&self, kind: Expiring) -> Option<Duration> {
        match kind {
            Expiring::IdempotencyKeys => self.idempotency_keys,
            Expiring::PublishedEvents | Expiring::FeedEvents => self.events,
            Expiring::InboxMessages => self.inbox_messages,
        }
    }

    /// Records of `kind` created (published, received) before this instant are expired at
    /// `now`; `None` when `kind` is kept forever.
    pub fn cutoff(&self, kind: Expiring, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let keep = chrono::Duration::from_std(self.retention(kind)?).ok()?;
        now.checked_sub_signed(keep)
    }
}

/// What one [`purge_expired`] run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    /// Rows deleted.
    pub rows: u64,
    /// Transactions run (one per batch, the last one possibly deleting fewer rows).
    pub batches: u32,
    /// Whether every expired row was deleted (`false`: stopped by `between`).
    pub complete: bool,
}

/// Deletes every record of `kind` older than `before`, `batch_size` rows per transaction,
/// oldest first. After each full batch (more may remain), awaits `between(rows deleted so
/// far)`; it returns `false` to stop early (e.g. the service is shutting down). The cutoff is
/// fixed for the run, so the run ends even while new records keep arriving.
pub async fn purge_expired<F, Fut>(
    store: &dyn RetentionStore,
    kind: Expiring,
    before: DateTime<Utc>,
    batch_size: u32,
    mut between: F,
) -> Result<Purged, StoreError>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = bool>,
{
    let batch_size = batch_size.max(1);
    let mut purged = Purged {
        rows: 0,
        batches: 0,
        complete: false,
    };
    loop {
        let deleted = store.purge_expired(kind, before, batch_size).await?;
        purged.rows += deleted;
        purged.batches += 1;
        if deleted < u64::from(batch_size) {
            purged.complete = true;
            return Ok(purged);
        }
        if !between(purged.rows).await {
            return Ok(purged);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::executor::block_on;

    use super::*;

    /// A store holding `rows` expired records of every kind; counts batch sizes asked for.
    struct Expired {
        left: Mutex<u64>,
        asked: Mutex<Vec<u32>>,
    }

    #[async_trait::async_trait]
    impl RetentionStore for Expired {
        async fn purge_expired(
            &self,
            _kind: Expiring,
            _before: DateTime<Utc>,
            limit: u32,
        ) -> Result<u64, StoreError> {
            self.asked.lock().unwrap().push(limit);
            let mut left = self.left.lock().unwrap();
            let n = (*left).min(u64::from(limit));
            *left -= n;
            Ok(n)
        }
    }

    fn store(rows: u64) -> Expired {
        Expired {
            left: Mutex::new(rows),
            asked: Mutex::new(Vec::new()),
        }
    }

    #[test]
    fn deletes_in_batches_until_a_short_one() {
        let s = store(2500);
        let mut seen = Vec::new();
        let purged = block_on(purge_expired(
            &s,
            Expiring::InboxMessages,
            Utc::now(),
            1000,
            |so_far| {
                seen.push(so_far);
                async { true }
            },
        ))
        .unwrap();
        assert_eq!(
            purged,
            Purged {
                rows: 2500,
                batches: 3,
                complete: true
            }
        );
        assert_eq!(*s.asked.lock().unwrap(), vec![1000, 1000, 1000]);
        assert_eq!(seen, vec![1000, 2000], "called between full batches only");
    }

    #[test]
    fn an_exact_multiple_ends_with_an_empty_batch() {
        let s = store(2000);
        let purged = block_on(purge_expired(
            &s,
            Expiring::PublishedEvents,
            Utc::now(),
            1000,
            |_| async { true },
        ))
        .unwrap();
        assert_eq!((purged.rows, purged.batches), (2000, 3));
        assert!(purged.complete);
    }

    #[test]
    fn between_can_stop_the_run() {
        let s = store(5000);
        let purged = block_on(purge_expired(
            &s,
            Expiring::IdempotencyKeys,
            Utc::now(),
            1000,
            |so_far| async move { so_far < 2000 },
        ))
        .unwrap();
        assert_eq!((purged.rows, purged.batches), (2000, 2));
        assert!(!purged.complete);
        assert_eq!(*s.left.lock().unwrap(), 3000);
    }

    #[test]
    fn a_zero_batch_size_still_progresses() {
        let s = store(3);
        let purged = block_on(purge_expired(
            &s,
            Expiring::InboxMessages,
            Utc::now(),
            0,
            |_| async { true },
        ))
        .unwrap();
        assert_eq!((purged.rows, purged.complete), (3, true));
    }

    #[test]
    fn cutoffs_follow_the_policy() {
        let policy = RetentionPolicy {
            idempotency_keys: Some(Duration::from_secs(60)),
            events: None,
            inbox_messages: Some(Duration::from_secs(3600)),
            batch_size: 10,
        };
        let now = Utc::now();
        assert_eq!(
            policy.cutoff(Expiring::IdempotencyKeys, now),
            Some(now - chrono::Duration::seconds(60))
        );
        assert_eq!(policy.cutoff(Expiring::PublishedEvents, now), None);
        assert_eq!(
            policy.cutoff(Expiring::InboxMessages, now),
            Some(now - chrono::Duration::hours(1))
        );
    }
}
