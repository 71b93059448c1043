//! [`WriteLane`]: SQLite's single writer, queued in the process instead of in the busy handler.
//!
//! SQLite lets one connection write at a time. Without a queue of our own, every writer that
//! finds the lock taken waits inside SQLite's busy handler, which sleeps and polls with
//! growing pauses (1, 2, 5, 10 ... up to 100 ms) until the lock is free or the busy timeout
//! passes. Under concurrency that is both unfair (a late writer may win while an early one
//! sleeps) and slow to hand over (the lock may sit free for most of a pause), so the tail
//! grows with the queue: the release overload run measured an accepted p99 at 2x load 13.5x
//! the p99 at half load with a concurrency limit of 8 (BENCHMARKS.md).
//!
//! The lane is one permit of a fair (first come, first served) [`tokio::sync::Semaphore`]:
//! a writer takes its turn before it asks the pool for a connection and keeps it until its
//! transaction commits or is dropped, so at most one connection of this process holds or
//! waits for the write lock and the lock passes from one writer to the next without a pause.
//! Readers never take the lane (WAL: readers do not block the writer, nor it them). A wait for
//! a turn is bounded by the same 5 s as the busy timeout and then fails as
//! `StoreError::Unavailable` (`STORAGE_UNAVAILABLE`), as a busy timeout did. The busy timeout
//! stays for writers outside this process (the `weir` CLI on the same file, say).
//!
//! Why not a writer task that batches several requests' writes into one commit (group
//! commit)? With WAL and `synchronous=NORMAL` a commit does not wait for the disk, so a batch
//! saves little, and one request's failure inside a shared transaction would roll back the
//! others. A semaphore is the queue tokio already has; nothing here is hand-written beyond
//! the timing and the metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use opentelemetry::metrics::{Counter, Histogram};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use weir_core::ports::{DriverError, StoreError};

/// A turn on the lane: the holder may write until it drops this.
pub(crate) type Turn = OwnedSemaphorePermit;

/// The wait for a turn passed its bound.
#[derive(Debug, thiserror::Error)]
#[error(
    "timed out after {waited:?} waiting for the SQLite write lane ({queued} other writers were waiting)"
)]
pub(crate) struct LaneTimeout {
    waited: Duration,
    queued: usize,
}

/// The queue of this process's SQLite writers (see the module doc).
#[derive(Debug, Clone)]
pub(crate) struct WriteLane {
    permit: Arc<Semaphore>,
    /// How long a writer may wait for its turn.
    bound: Duration,
    /// Writers waiting for a turn now (for the timeout's message).
    waiting: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

#[derive(Debug)]
struct Metrics {
    wait: Histogram<f64>,
    timeouts: Counter<u64>,
}

impl WriteLane {
    /// A lane whose writers wait at most `bound` for their turn.
    pub(crate) fn new(bound: Duration) -> Self {
        let meter = opentelemetry::global::meter("weir.storage");
        let timeouts = meter
            .u64_counter("weir.db.write_lane.timeouts")
            .with_description(
                "SQLite writes refused because their turn on the write lane did not come in time",
            )
            .build();
        // Exported at 0 from the start, so an alert's increase() sees the first refusal.
        timeouts.add(0, &[]);
        Self {
            permit: Arc::new(Semaphore::new(1)),
            bound,
            waiting: Arc::new(AtomicUsize::new(0)),
            metrics: Arc::new(Metrics {
                wait: meter
                    .f64_histogram("weir.db.write_lane.wait")
                    .with_unit("s")
                    .with_description(
                        "Time SQLite writes waited for their turn on the write lane, timed-out ones included",
                    )
                    .with_boundaries(vec![
                        0.0, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                        2.5, 5.0,
                    ])
                    .build(),
                timeouts,
            }),
        }
    }

    /// Waits for this writer's turn, first come first served, for at most the lane's bound.
    pub(crate) async fn turn(&self) -> Result<Turn, StoreError> {
        if let Ok(turn) = self.permit.clone().try_acquire_owned() {
            self.metrics.wait.record(0.0, &[]);
            return Ok(turn);
        }
        let started = Instant::now();
        let queued = self.waiting.fetch_add(1, Ordering::Relaxed);
        let turn = tokio::time::timeout(self.bound, self.permit.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        let waited = started.elapsed();
        self.metrics.wait.record(waited.as_secs_f64(), &[]);
        match turn {
            Ok(Ok(turn)) => Ok(turn),
            // The semaphore is never closed; treat it like a timeout all the same.
            Ok(Err(_)) | Err(_) => {
                self.metrics.timeouts.add(1, &[]);
                Err(StoreError::Unavailable(DriverError::new(LaneTimeout {
                    waited,
                    queued,
                })))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writers get their turns in the order they asked, each only after the one before it
    /// let go: the property that removes the busy handler's unfair, paused hand-over.
    #[tokio::test]
    async fn turns_are_first_come_first_served_and_exclusive() {
        let lane = WriteLane::new(Duration::from_secs(5));
        let first = lane.turn().await.expect("free lane");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut waiters = Vec::new();
        for i in 0..5 {
            let waiter = lane.clone();
            let tx = tx.clone();
            waiters.push(tokio::spawn(async move {
                let turn = waiter.turn().await.expect("turn");
                tx.send(i).expect("send");
                tokio::task::yield_now().await;
                drop(turn);
            }));
            // Let this waiter queue before the next one asks (one runtime thread: the
            // spawned task runs to its wait while this one yields).
            for _ in 0..100 {
                if lane.waiting.load(Ordering::Relaxed) > i {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        drop(tx);
        // Nobody gets a turn while the first holder keeps it.
        tokio::task::yield_now().await;
        assert!(
            rx.try_recv().is_err(),
            "a waiter wrote while the lane was held"
        );
        drop(first);
        let mut order = Vec::new();
        while let Some(i) = rx.recv().await {
            order.push(i);
        }
        assert_eq!(order, vec![0, 1, 2, 3, 4]);
        for w in waiters {
            w.await.expect("waiter");
        }
    }

    /// A writer that cannot get its turn within the bound gets a retryable error naming the
    /// lane, not a hang.
    #[tokio::test(start_paused = true)]
    async fn a_wait_past_the_bound_is_a_transient_error() {
        let lane = WriteLane::new(Duration::from_millis(50));
        let _held = lane.turn().await.expect("free lane");
        let err = lane.turn().await.expect_err("lane is held");
        assert!(err.is_transient(), "{err:?}");
        let cause = std::error::Error::source(&err).map(ToString::to_string);
        assert!(
            cause
                .as_deref()
                .is_some_and(|c| c.contains("SQLite write lane")),
            "{cause:?}"
        );
    }
}
