//! Supervised background workers: the one way a background job runs in Weir.
//!
//! A worker is a named async body that receives a [`WorkerContext`]. The [`Supervisor`] gives
//! every worker the same guarantees, so a new job only writes its business logic:
//!
//! - **Cancellation**: [`WorkerContext::token`] is a child of the shutdown token; a worker
//!   finishes its current unit of work and returns when it fires. [`WorkerContext::sleep`]
//!   waits between units and returns `false` as soon as shutdown starts.
//! - **A span per unit of work**: [`WorkerContext::unit`] runs one unit inside a
//!   `worker.unit` span (`worker.name`, `outcome`) and records its metrics.
//! - **Metrics** (`opentelemetry::global::meter("weir.worker")`, label `worker.name`):
//!   `weir.worker.units` (counter, `outcome` = `ok` | `error`), `weir.worker.restarts`
//!   (counter, `reason` = `panic` | `error`), `weir.worker.last_success` (gauge, Unix
//!   seconds of the last successful unit). The same facts are in `/infoz` under `workers`.
//! - **Panic isolation with restart and backoff**: a body that panics or returns `Err` is
//!   restarted after an exponential backoff (`initial` doubling up to `max`, reset after a
//!   successful unit), unless shutdown has started. A panicking worker never takes the
//!   process or another worker down.
//! - **A place in the drain**: every worker is tracked; the shutdown coordinator
//!   ([`crate::lifecycle::shutdown`]) cancels them, then waits for them up to the drain deadline and
//!   logs which ones did not stop.
//!
//! # Writing a worker
//!
//! A periodic job is one call to [`Supervisor::periodic`] (a job needing the worker's context,
//! e.g. to stop between batches at shutdown, uses [`Supervisor::spawn`] with
//! [`WorkerContext::sleep`], as the retention workers do):
//!
//! ```no_run
//! # use std::time::Duration;
//! # fn f(supervisor: &weir_host::lifecycle::Supervisor) {
//! supervisor.periodic("example.purge", Duration::from_secs(60), || async {
//!     // One unit of work: return how many items it handled, or an error to count and log.
//!     Ok::<u64, std::io::Error>(0)
//! });
//! # }
//! ```
//!
//! A long-running loop (a relay, a consumer) takes the context and calls
//! [`WorkerContext::unit`] once per unit of work, checking for cancellation between units:
//!
//! ```no_run
//! # use std::time::Duration;
//! # fn f(supervisor: &weir_host::lifecycle::Supervisor) {
//! supervisor.spawn("example.relay", |ctx| async move {
//!     while !ctx.is_cancelled() {
//!         // Finish the unit even if shutdown starts meanwhile: it must not be cut in half.
//!         let done = ctx.unit(async { Ok::<u64, std::io::Error>(1) }).await;
//!         if done.is_err() && !ctx.sleep(Duration::from_secs(1)).await {
//!             break;
//!         }
//!     }
//!     Ok(())
//! });
//! # }
//! ```
//!
//! Returning `Ok(())` means "finished" (normally because of cancellation); the worker is not
//! restarted. Returning `Err` or panicking restarts it after the backoff.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Why a worker body stopped abnormally; it is restarted after the backoff.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WorkerError(pub String);

impl WorkerError {
    /// Wrap any displayable error.
    pub fn new(e: impl std::fmt::Display) -> Self {
        Self(e.to_string())
    }
}

/// Restart backoff of crashed workers.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First delay after a crash.
    pub initial: Duration,
    /// Upper bound of the doubling delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// Delay before restart number `attempt` (1-based): `initial * 2^(attempt-1)`, capped.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

struct Instruments {
    units: Counter<u64>,
    restarts: Counter<u64>,
    last_success: Gauge<u64>,
}

impl Instruments {
    fn new() -> Self {
        let meter = opentelemetry::global::meter("weir.worker");
        Self {
            units: meter
                .u64_counter("weir.worker.units")
                .with_description("Units of work done by background workers, by outcome")
                .build(),
            restarts: meter
                .u64_counter("weir.worker.restarts")
                .with_description("Background worker restarts after a panic or an error")
                .build(),
            last_success: meter
                .u64_gauge("weir.worker.last_success")
                .with_description("Unix time of the last successful unit of work")
                .with_unit("s")
                .build(),
        }
    }
}

/// Live facts about one worker (for `/infoz`).
#[derive(Debug, Default)]
struct Stats {
    units_ok: AtomicU64,
    units_failed: AtomicU64,
    restarts: AtomicU64,
    /// Unix seconds; 0 = never.
    last_success: AtomicI64,
}

/// What `/infoz` shows about one worker.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    /// Worker name.
    pub name: &'static str,
    /// Units of work that succeeded.
    pub units_ok: u64,
    /// Units of work that failed.
    pub units_failed: u64,
    /// Restarts after a panic or an error.
    pub restarts: u64,
    /// RFC 3339 time of the last successful unit, if any.
    pub last_success: Option<String>,
}

/// Handed to a worker body: cancellation, per-unit spans and metrics.
#[derive(Clone)]
pub struct WorkerContext {
    name: &'static str,
    token: CancellationToken,
    stats: Arc<Stats>,
    instruments: Arc<Instruments>,
    /// Set after a successful unit so the supervisor resets its backoff.
    healthy: Arc<std::sync::atomic::AtomicBool>,
}

impl WorkerContext {
    /// The worker's name (also the `worker.name` label).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Fires when shutdown starts.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Whether shutdown has started.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Wait until shutdown starts.
    pub async fn cancelled(&self) {
        self.token.cancelled().await;
    }

    /// Sleep for `d`; `false` when shutdown started first (the caller should return).
    pub async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            () = self.token.cancelled() => false,
            () = tokio::time::sleep(d) => true,
        }
    }

    /// Run one unit of work in a `worker.unit` span and record its outcome. The unit itself
    /// is not cancelled: it runs to completion so nothing is left half-done.
    pub async fn unit<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        let span = tracing::info_span!(
            "worker.unit",
            worker.name = self.name,
            outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let result = work.instrument(span.clone()).await;
        let label = KeyValue::new("worker.name", self.name);
        match &result {
            Ok(_) => {
                span.record("outcome", "ok");
                let now = chrono::Utc::now().timestamp();
                self.stats.units_ok.fetch_add(1, Ordering::Relaxed);
                self.stats.last_success.store(now, Ordering::Relaxed);
                self.healthy.store(true, Ordering::Relaxed);
                self.instruments
                    .units
                    .add(1, &[label.clone(), KeyValue::new("outcome", "ok")]);
                self.instruments.last_success.record(
                    u64::try_from(now).unwrap_or_default(),
                    std::slice::from_ref(&label),
                );
            }
            Err(e) => {
                span.record("outcome", "error");
                span.record("otel.status_code", "ERROR");
                self.stats.units_failed.fetch_add(1, Ordering::Relaxed);
                self.instruments
                    .units
                    .add(1, &[label, KeyValue::new("outcome", "error")]);
                let _enter = span.enter();
                tracing::warn!(worker = self.name, error = %e, "worker unit failed");
            }
        }
        result
    }
}

/// A worker's name and its live stats.
type Registered = (&'static str, Arc<Stats>);

/// Runs workers under supervision; one per process, owned by [`crate::lifecycle::Shutdown`].
#[derive(Clone)]
pub struct Supervisor {
    token: CancellationToken,
    tracker: TaskTracker,
    backoff: Backoff,
    instruments: Arc<Instruments>,
    workers: Arc<Mutex<Vec<Registered>>>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("running", &self.running())
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// A supervisor whose workers stop when `token` fires.
    pub fn new(token: CancellationToken, backoff: Backoff) -> Self {
        Self {
            token,
            tracker: TaskTracker::new(),
            backoff,
            instruments: Arc::new(Instruments::new()),
            workers: Arc::default(),
        }
    }

    /// Run `body` as the worker `name`, restarting it after a panic or an `Err` (with
    /// backoff) until it returns `Ok(())` or shutdown starts.
    pub fn spawn<F, Fut>(&self, name: &'static str, mut body: F)
    where
        F: FnMut(WorkerContext) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), WorkerError>> + Send + 'static,
    {
        let stats = Arc::new(Stats::default());
        self.workers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((name, stats.clone()));
        let token = self.token.child_token();
        let backoff = self.backoff;
        let instruments = self.instruments.clone();
        self.tracker.spawn(
            async move {
                let mut attempt = 0u32;
                loop {
                    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let ctx = WorkerContext {
                        name,
                        token: token.clone(),
                        stats: stats.clone(),
                        instruments: instruments.clone(),
                        healthy: healthy.clone(),
                    };
                    tracing::debug!(worker = name, "worker started");
                    // Panic isolation: a panic inside the body ends this attempt only.
                    let outcome = AssertUnwindSafe(body(ctx)).catch_unwind().await;
                    let reason = match outcome {
                        Ok(Ok(())) => {
                            tracing::debug!(worker = name, "worker finished");
                            return;
                        }
                        Ok(Err(e)) => {
                            tracing::error!(worker = name, error = %e, "worker failed");
                            "error"
                        }
                        Err(panic) => {
                            let msg = crate::support::panic_message(&*panic);
                            tracing::error!(worker = name, panic = %msg, "worker panicked");
                            "panic"
                        }
                    };
                    if token.is_cancelled() {
                        return;
                    }
                    attempt = if healthy.load(Ordering::Relaxed) {
                        1
                    } else {
                        attempt.saturating_add(1)
                    };
                    let delay = backoff.delay(attempt);
                    stats.restarts.fetch_add(1, Ordering::Relaxed);
                    instruments.restarts.add(
                        1,
                        &[
                            KeyValue::new("worker.name", name),
                            KeyValue::new("reason", reason),
                        ],
                    );
                    tracing::warn!(
                        worker = name,
                        attempt,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "restarting worker after backoff"
                    );
                    tokio::select! {
                        () = token.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
            .instrument(tracing::info_span!("worker", worker.name = name)),
        );
    }

    /// Run `job` every `every` (first run after one period) as the worker `name`; each run
    /// is one unit of work. `Ok(n)` with `n > 0` is logged at info level.
    pub fn periodic<F, Fut, E>(&self, name: &'static str, every: Duration, job: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<u64, E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let job = Arc::new(job);
        self.spawn(name, move |ctx| {
            let job = job.clone();
            async move {
                while ctx.sleep(every).await {
                    if let Ok(n) = ctx.unit(job()).await
                        && n > 0
                    {
                        tracing::info!(worker = name, items = n, "worker unit done");
                    }
                }
                Ok(())
            }
        });
    }

    /// Workers still running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// Wait until every worker has returned, up to `timeout`; true when all stopped.
    /// Call after the token fired.
    pub async fn wait(&self, timeout: Duration) -> bool {
        self.tracker.close();
        let done = tokio::time::timeout(timeout, self.tracker.wait())
            .await
            .is_ok();
        self.tracker.reopen();
        done
    }

    /// Live facts about every worker.
    pub fn view(&self) -> Vec<WorkerView> {
        let workers = self
            .workers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        workers
            .iter()
            .map(|(name, s)| {
                let last = s.last_success.load(Ordering::Relaxed);
                WorkerView {
                    name,
                    units_ok: s.units_ok.load(Ordering::Relaxed),
                    units_failed: s.units_failed.load(Ordering::Relaxed),
                    restarts: s.restarts.load(Ordering::Relaxed),
                    last_success: (last > 0)
                        .then(|| chrono::DateTime::from_timestamp(last, 0))
                        .flatten()
                        .map(|t| t.to_rfc3339()),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    fn supervisor() -> (Supervisor, CancellationToken) {
        let token = CancellationToken::new();
        let s = Supervisor::new(
            token.clone(),
            Backoff {
                initial: Duration::from_millis(1),
                max: Duration::from_millis(4),
            },
        );
        (s, token)
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let delays: Vec<_> = (1..=6).map(|a| b.delay(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_panicking_worker_is_restarted_and_others_keep_running() {
        let (s, token) = supervisor();
        let attempts = Arc::new(AtomicU32::new(0));
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let done_tx = Arc::new(Mutex::new(Some(done_tx)));
        let a = attempts.clone();
        s.spawn("test.crashy", move |ctx| {
            let n = a.fetch_add(1, Ordering::SeqCst) + 1;
            let done_tx = done_tx.clone();
            async move {
                if n < 3 {
                    panic!("crash number {n}");
                }
                ctx.unit(async { Ok::<_, WorkerError>(()) }).await?;
                if let Some(tx) = done_tx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                ctx.cancelled().await;
                Ok(())
            }
        });
        s.spawn("test.steady", |ctx| async move {
            ctx.cancelled().await;
            Ok(())
        });
        done_rx.await.expect("the worker ran after two panics");
        assert_eq!(attempts.load(Ordering::SeqCst), 3);
        let view = s.view();
        assert_eq!(view[0].restarts, 2);
        assert_eq!(view[0].units_ok, 1);
        assert!(view[0].last_success.is_some());
        assert_eq!(s.running(), 2, "the steady worker is unaffected");
        token.cancel();
        assert!(s.wait(Duration::from_secs(30)).await);
        assert_eq!(s.running(), 0);
    }

    #[tokio::test]
    async fn an_erroring_worker_is_restarted_until_cancelled() {
        let (s, token) = supervisor();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        s.spawn("test.failing", move |ctx| {
            let tx = tx.clone();
            async move {
                let r = ctx
                    .unit(async { Err::<(), _>(WorkerError::new("boom")) })
                    .await;
                let _ = tx.send(());
                r
            }
        });
        for _ in 0..3 {
            rx.recv().await.expect("attempt");
        }
        token.cancel();
        assert!(s.wait(Duration::from_secs(30)).await);
        let v = &s.view()[0];
        assert!(v.units_failed >= 3 && v.restarts >= 2, "{v:?}");
        assert!(v.last_success.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn periodic_jobs_run_each_period_and_stop_on_cancel() {
        let (s, token) = supervisor();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        s.periodic("test.periodic", Duration::from_secs(60), move || {
            let tx = tx.clone();
            async move {
                let _ = tx.send(());
                Ok::<u64, WorkerError>(1)
            }
        });
        for _ in 0..3 {
            rx.recv().await.expect("a run");
        }
        token.cancel();
        assert!(s.wait(Duration::from_secs(1)).await);
        assert!(s.view()[0].units_ok >= 3);
    }
}
