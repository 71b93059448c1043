//! Graceful shutdown: one coordinator ([`drain`]) and one [`Shutdown`] handle passed down.
//!
//! The handle is created once by the server at start-up and cloned into whatever needs it
//! (the API and operations state, the event consumer). It carries:
//! - the readiness latches: `draining` (set once, at the first signal) and `in_rotation`
//!   (flipped by operators through `PUT /admin/rotation`); `/readyz` fails if either says so;
//! - the listener token (stop accepting) and the background token (every worker and loop);
//! - the in-flight HTTP request tracker ([`track_requests`], the outermost layer of the API
//!   listener), so the drain can wait for admitted requests and count them;
//! - the [`Supervisor`] of background workers.
//!
//! # The drain, phase by phase
//!
//! Each phase logs one line starting with `shutdown:` with its `phase`, `duration_ms` and
//! counts (the lines are described in RUNBOOK.md):
//! 1. `not_ready`: readiness fails at once (`/readyz` answers 503 with `draining`).
//! 2. `pre_stop`: wait `shutdown.pre_stop_delay_ms` so load balancers notice (listeners
//!    still accept meanwhile).
//! 3. `stop_accepting`: listeners stop accepting; keep-alive connections close after their
//!    current request; the cancellation token reaches every background task.
//! 4. `drain`: in-flight HTTP requests, plugin invocations and workers run to completion, up
//!    to `shutdown.drain_deadline_ms` after the signal.
//! 5. `interrupt` (only when the deadline passed with work left): plugin calls are
//!    interrupted ([`Interruptible::interrupt_all`], the runtime's); their requests are answered with a
//!    retryable `503 SHUTTING_DOWN` (the idempotency key is released, nothing was written);
//!    `shutdown.interrupt_grace_ms` bounds the wait for those answers.
//! 6. `close`: the storage pool is closed.
//!
//! A second signal during the drain exits at once with [`EXIT_FORCED`] (see `main.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::worker::{Backoff, Supervisor};
use crate::support::{InvalidKey, duration_ms, ensure};

/// Exit code of a process stopped by a second signal during the drain (work may have been
/// cut off; idempotency keys and the outbox make client retries safe).
pub const EXIT_FORCED: u8 = 3;

/// Shutdown settings (`[shutdown]` in the configuration file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Delay between failing readiness and closing the listeners, so load balancers stop
    /// routing here first. Set it to the load balancer's probe interval times its failure
    /// threshold; 0 (the default) skips it.
    #[serde(with = "duration_ms", rename = "pre_stop_delay_ms")]
    pub pre_stop_delay: Duration,
    /// How long in-flight requests, plugin invocations and workers may run after the signal
    /// (pre-stop delay included) before what remains is interrupted. Keep it below the
    /// orchestrator's kill timeout (Kubernetes `terminationGracePeriodSeconds`).
    #[serde(with = "duration_ms", rename = "drain_deadline_ms")]
    pub drain_deadline: Duration,
    /// After the deadline: how long interrupted requests get to send their 503 answer.
    #[serde(with = "duration_ms", rename = "interrupt_grace_ms")]
    pub interrupt_grace: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            pre_stop_delay: Duration::ZERO,
            drain_deadline: Duration::from_secs(25),
            interrupt_grace: Duration::from_secs(2),
        }
    }
}

impl ShutdownConfig {
    /// The longest [`drain`] runs from the signal until it closes the storage pool: the drain
    /// deadline (the pre-stop delay is part of it), then at most `interrupt_grace` for the
    /// interrupted requests' answers and at most `interrupt_grace` again for the listeners'
    /// last connections. What follows (closing the pool, the telemetry flush) is outside it;
    /// the server's configuration adds them up (`Config::stop_bound`).
    pub fn drain_bound(&self) -> Duration {
        self.drain_deadline + self.interrupt_grace * 2
    }

    /// Check values that parse but cannot work.
    pub fn validate(&self) -> Result<(), InvalidKey> {
        ensure(
            !self.drain_deadline.is_zero(),
            "shutdown.drain_deadline_ms",
            "must be positive",
        )?;
        ensure(
            self.pre_stop_delay < self.drain_deadline,
            "shutdown.pre_stop_delay_ms",
            "must be shorter than shutdown.drain_deadline_ms",
        )?;
        ensure(
            !self.interrupt_grace.is_zero(),
            "shutdown.interrupt_grace_ms",
            "must be positive",
        )
    }
}

struct Inner {
    listeners: CancellationToken,
    background: CancellationToken,
    draining: AtomicBool,
    in_rotation: AtomicBool,
    requests: TaskTracker,
    admitted: AtomicU64,
    requeued: AtomicU64,
    supervisor: Supervisor,
}

/// The shutdown handle: cheap to clone, one per process.
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown")
            .field("draining", &self.is_draining())
            .field("in_rotation", &self.in_rotation())
            .field("in_flight_requests", &self.in_flight_requests())
            .finish_non_exhaustive()
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A handle in the serving state (not draining, in rotation).
    pub fn new() -> Self {
        let background = CancellationToken::new();
        Self {
            inner: Arc::new(Inner {
                listeners: CancellationToken::new(),
                supervisor: Supervisor::new(background.clone(), Backoff::default()),
                background,
                draining: AtomicBool::new(false),
                in_rotation: AtomicBool::new(true),
                requests: TaskTracker::new(),
                admitted: AtomicU64::new(0),
                requeued: AtomicU64::new(0),
            }),
        }
    }

    /// The token of background tasks: fires at `stop_accepting`. Hand a clone (or a child)
    /// to every loop that is not a [`Supervisor`] worker.
    pub fn token(&self) -> CancellationToken {
        self.inner.background.clone()
    }

    /// The token that stops the listeners: they stop accepting and close their connections
    /// gracefully when it fires.
    pub fn listener_token(&self) -> CancellationToken {
        self.inner.listeners.clone()
    }

    /// The supervisor every background worker runs on.
    pub fn supervisor(&self) -> &Supervisor {
        &self.inner.supervisor
    }

    /// Whether the drain has started (readiness fails from then on).
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Whether operators keep this instance in rotation (readiness fails when not).
    pub fn in_rotation(&self) -> bool {
        self.inner.in_rotation.load(Ordering::SeqCst)
    }

    /// Take the instance out of rotation (`false`) or put it back; returns the old value.
    pub fn set_in_rotation(&self, in_rotation: bool) -> bool {
        self.inner.in_rotation.swap(in_rotation, Ordering::SeqCst)
    }

    /// API requests currently being served.
    pub fn in_flight_requests(&self) -> usize {
        self.inner.requests.len()
    }

    /// API requests admitted since start.
    pub fn admitted_requests(&self) -> u64 {
        self.inner.admitted.load(Ordering::SeqCst)
    }

    /// Record deliveries a consumer gave back to the broker (nack with requeue) while draining.
    pub fn record_requeued(&self, messages: u64) {
        self.inner.requeued.fetch_add(messages, Ordering::SeqCst);
    }

    /// Deliveries requeued by consumers during the drain.
    pub fn messages_requeued(&self) -> u64 {
        self.inner.requeued.load(Ordering::SeqCst)
    }

    /// Phase 1: fail readiness. Idempotent; true the first time.
    pub fn begin_drain(&self) -> bool {
        !self.inner.draining.swap(true, Ordering::SeqCst)
    }

    async fn requests_done(&self, until: Instant) -> bool {
        let t = &self.inner.requests;
        t.close();
        let done = tokio::time::timeout_at(until, t.wait()).await.is_ok();
        t.reopen();
        done
    }
}

/// Middleware counting admitted API requests; the outermost layer of the API listener. A
/// request is "admitted" once it reaches this layer, and is tracked until its response is
/// produced.
pub async fn track_requests(
    State(shutdown): State<Shutdown>,
    req: Request,
    next: Next,
) -> Response {
    let _token = shutdown.inner.requests.token();
    shutdown.inner.admitted.fetch_add(1, Ordering::SeqCst);
    next.run(req).await
}

/// What the drain did, for the caller and the final log line.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DrainReport {
    /// HTTP requests that ran to completion during the drain.
    pub requests_drained: u64,
    /// HTTP requests still running at the deadline.
    pub requests_at_deadline: usize,
    /// Plugin invocations running when the listeners closed.
    pub invocations_at_start: usize,
    /// Plugin invocations interrupted at the deadline.
    pub invocations_interrupted: usize,
    /// Workers that had not stopped by the deadline.
    pub workers_not_stopped: usize,
    /// Prefetched broker deliveries the consumer nacked with requeue while stopping.
    pub messages_requeued: u64,
    /// Whether everything finished before the deadline.
    pub clean: bool,
    /// Total duration, signal to pools closed.
    pub duration_ms: u64,
}

/// Work in flight that the drain waits for and, at the deadline, interrupts: plugin
/// invocations (the runtime implements it).
#[async_trait::async_trait]
pub trait Interruptible: Send + Sync {
    /// Calls running now.
    fn in_flight(&self) -> usize;
    /// Wait until none is running, up to `timeout`; `true` when drained.
    async fn drain(&self, timeout: Duration) -> bool;
    /// Interrupt every running and future call.
    fn interrupt_all(&self);
}

/// A resource closed last, after everything that used it stopped (the storage pool).
pub type Closer = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Everything the coordinator stops, besides what the [`Shutdown`] handle tracks.
pub struct DrainPlan {
    /// Deadlines and delays.
    pub config: ShutdownConfig,
    /// The serving tasks of the listeners (they end when their connections are closed).
    pub listeners: Vec<JoinHandle<()>>,
    /// The plugin invocations.
    pub invocations: Arc<dyn Interruptible>,
    /// Closes the storage pool, last.
    pub close: Closer,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The coordinator: run phases 1-6 of the module doc. Call once, at the first signal.
pub async fn drain(shutdown: &Shutdown, plan: DrainPlan) -> DrainReport {
    let DrainPlan {
        config,
        listeners,
        invocations: runtime,
        close,
    } = plan;
    let started = Instant::now();
    let deadline = started + config.drain_deadline;

    // 1. Readiness fails at once.
    shutdown.begin_drain();
    tracing::info!(
        phase = "not_ready",
        duration_ms = 0u64,
        requests_in_flight = shutdown.in_flight_requests(),
        invocations_in_flight = runtime.in_flight(),
        drain_deadline_ms = ms(config.drain_deadline),
        "shutdown: readiness failing"
    );

    // 2. Pre-stop delay: load balancers notice the failing readiness and stop routing here.
    if !config.pre_stop_delay.is_zero() {
        let t = Instant::now();
        tokio::time::sleep(config.pre_stop_delay).await;
        tracing::info!(
            phase = "pre_stop",
            duration_ms = ms(t.elapsed()),
            requests_in_flight = shutdown.in_flight_requests(),
            "shutdown: pre-stop delay over"
        );
    }

    // 3. Stop accepting; cancel every background task.
    let t = Instant::now();
    shutdown.inner.listeners.cancel();
    shutdown.inner.background.cancel();
    let admitted_at_stop = shutdown.admitted_requests();
    let requests_at_stop = shutdown.in_flight_requests();
    let invocations_at_start = runtime.in_flight();
    tracing::info!(
        phase = "stop_accepting",
        duration_ms = ms(t.elapsed()),
        requests_in_flight = requests_at_stop,
        invocations_in_flight = invocations_at_start,
        workers_running = shutdown.supervisor().running(),
        "shutdown: listeners closed to new connections; background tasks cancelled"
    );

    // 4. Drain: requests (which include their plugin calls), stray invocations, workers.
    let t = Instant::now();
    let requests_done = shutdown.requests_done(deadline).await;
    let requests_at_deadline = if requests_done {
        0
    } else {
        shutdown.in_flight_requests()
    };
    let invocations_done = runtime
        .drain(deadline.saturating_duration_since(Instant::now()))
        .await;
    let invocations_left = if invocations_done {
        0
    } else {
        runtime.in_flight()
    };
    let workers_done = shutdown
        .supervisor()
        .wait(deadline.saturating_duration_since(Instant::now()))
        .await;
    let admitted_during = shutdown.admitted_requests() - admitted_at_stop;
    let requests_drained =
        (requests_at_stop as u64 + admitted_during).saturating_sub(requests_at_deadline as u64);
    let workers_not_stopped = if workers_done {
        0
    } else {
        shutdown.supervisor().running()
    };
    tracing::info!(
        phase = "drain",
        duration_ms = ms(t.elapsed()),
        requests_drained,
        invocations_drained = invocations_at_start.saturating_sub(invocations_left),
        requests_at_deadline,
        invocations_at_deadline = invocations_left,
        workers_not_stopped,
        messages_requeued = shutdown.messages_requeued(),
        "shutdown: in-flight work drained{}",
        if requests_done && invocations_done {
            ""
        } else {
            " until the deadline"
        }
    );

    // 5. At the deadline: interrupt plugin calls; their requests answer 503 SHUTTING_DOWN.
    let mut clean = requests_done && invocations_done && workers_not_stopped == 0;
    if !(requests_done && invocations_done) {
        let t = Instant::now();
        runtime.interrupt_all();
        let answered = shutdown
            .requests_done(Instant::now() + config.interrupt_grace)
            .await;
        tracing::warn!(
            phase = "interrupt",
            duration_ms = ms(t.elapsed()),
            invocations_interrupted = invocations_left,
            requests_interrupted = requests_at_deadline,
            requests_unanswered = if answered {
                0
            } else {
                shutdown.in_flight_requests()
            },
            "shutdown: drain deadline reached; plugin calls interrupted and answered 503 SHUTTING_DOWN"
        );
        clean = false;
    }
    // Listener tasks end once their connections have written the last responses and closed.
    let grace_end = Instant::now() + config.interrupt_grace;
    for mut task in listeners {
        if tokio::time::timeout_at(grace_end, &mut task).await.is_err() {
            tracing::warn!("shutdown: a listener still had open connections; closing them");
            task.abort();
            clean = false;
        }
    }

    // 6. Close the pools.
    let t = Instant::now();
    close.await;
    tracing::info!(
        phase = "close",
        duration_ms = ms(t.elapsed()),
        "shutdown: storage pool closed"
    );
    let report = DrainReport {
        requests_drained,
        requests_at_deadline,
        invocations_at_start,
        invocations_interrupted: invocations_left,
        workers_not_stopped,
        messages_requeued: shutdown.messages_requeued(),
        clean,
        duration_ms: ms(started.elapsed()),
    };
    tracing::info!(
        phase = "done",
        duration_ms = report.duration_ms,
        requests_drained = report.requests_drained,
        requests_admitted_total = shutdown.admitted_requests(),
        invocations_interrupted = report.invocations_interrupted,
        clean = report.clean,
        "shutdown: drain complete"
    );
    report
}

/// SIGTERM and SIGINT as a stream, installed before serving so no signal is missed.
pub struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Install the handlers.
    pub fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// The next signal's name (`SIGTERM` or `SIGINT`).
    pub async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation_names_the_key() {
        assert!(ShutdownConfig::default().validate().is_ok());
        let c = ShutdownConfig {
            pre_stop_delay: Duration::from_secs(30),
            drain_deadline: Duration::from_secs(10),
            ..ShutdownConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "shutdown.pre_stop_delay_ms");
        let c = ShutdownConfig {
            drain_deadline: Duration::ZERO,
            ..ShutdownConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "shutdown.drain_deadline_ms");
    }

    /// Plugin calls that never finish and ignore the interrupt.
    struct Stuck;

    #[async_trait::async_trait]
    impl Interruptible for Stuck {
        fn in_flight(&self) -> usize {
            1
        }
        async fn drain(&self, timeout: Duration) -> bool {
            tokio::time::sleep(timeout).await;
            false
        }
        fn interrupt_all(&self) {}
    }

    /// Everything stuck (a request that never answers, plugin calls that ignore the
    /// interrupt, a listener whose connection never closes): the drain takes its whole bound,
    /// and no longer. Paused time, so the clock is exact.
    #[tokio::test(start_paused = true)]
    async fn the_worst_case_drain_takes_its_bound() {
        let shutdown = Shutdown::new();
        let _request = shutdown.inner.requests.token();
        let listener = tokio::spawn(std::future::pending::<()>());
        let config = ShutdownConfig {
            pre_stop_delay: Duration::from_secs(3),
            drain_deadline: Duration::from_secs(20),
            interrupt_grace: Duration::from_secs(2),
        };
        let started = Instant::now();
        let report = drain(
            &shutdown,
            DrainPlan {
                config: config.clone(),
                listeners: vec![listener],
                invocations: Arc::new(Stuck),
                close: Box::pin(async {}),
            },
        )
        .await;
        let took = started.elapsed();
        let bound = config.drain_bound();
        assert!(
            took >= bound && took <= bound + Duration::from_millis(5),
            "the worst-case drain took {took:?}; drain_bound() says {bound:?}"
        );
        assert!(!report.clean);
        assert_eq!(report.requests_at_deadline, 1);
    }

    #[test]
    fn readiness_latches() {
        let s = Shutdown::new();
        assert!(!s.is_draining() && s.in_rotation());
        assert!(s.set_in_rotation(false));
        assert!(!s.in_rotation());
        assert!(s.begin_drain());
        assert!(!s.begin_drain(), "the drain starts once");
        assert!(s.is_draining());
    }
}
