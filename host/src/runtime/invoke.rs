//! One invocation, in small steps: ask the version's breaker, open the `plugin.invoke` span,
//! run a fresh instance under the budget, classify the failure, record metrics, emit the
//! guest's output.
//!
//! Each exported function of the world is a [`Call`]: its name, what it returns, how to call
//! it on an instance, and the host's contract on what came back
//! ([`weir_core::domain::contract`]). [`Runtime::invoke`] is generic over it, so every call
//! returns its own type and nothing needs an `unreachable!` arm. A returned value that breaks
//! the contract is a failure of the version like a trap: recorded on the span with the rule,
//! counted, and fed to the version's breaker.
//!
//! A failure is recorded on the `plugin.invoke` span (status, `trap.kind`, an `exception`
//! event with the error chain) and in the metrics, and not logged here: whoever asked for the
//! decision (the request, the consumer) logs it once, with its own context.

use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{
    BoundCounter, BoundHistogram, BoundUpDownCounter, Counter, Histogram, ObservableCounter,
    UpDownCounter,
};
use tokio::sync::{OwnedSemaphorePermit, TryAcquireError};
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;
use tracing::instrument::WithSubscriber;
use tracing::{Instrument, field::Empty};
use wasmtime::{Store, Trap, UpdateDeadline};
use weir_core::domain::contract::{self, ContractViolation};
use weir_core::domain::{OrderError, OrderEvent, OrderRequest, OrderStatus, PricedOrder};
use weir_core::ports::Detail;

use super::cases::{CaseCall, CaseOrder, Decision};
use super::error::trap_kind;
use super::{BudgetKind, InvocationState, InvokeError, PluginVersion, Role, Runtime};
use crate::capabilities::trace::CallTrace;
use crate::capabilities::{Granted, ImportRefusal, Imports, LogBudget};
use crate::policy::circuit_breaker::Permit;
use crate::world::bindings;

/// The runtime's instruments.
pub(super) struct Metrics {
    invocations: Counter<u64>,
    call_duration: Histogram<f64>,
    instantiate_duration: Histogram<f64>,
    traps: Counter<u64>,
    contract_violations: Counter<u64>,
    capability_denials: Counter<u64>,
    stdio_truncated: Counter<u64>,
    in_flight: UpDownCounter<i64>,
    instance_wait: Histogram<f64>,
    instances_exhausted: Counter<u64>,
    inline_unfinished: Counter<u64>,
    instances_in_use: UpDownCounter<i64>,
    instances_waiting: UpDownCounter<i64>,
    /// Calls waiting for an instance now (what `instances_waiting` exports).
    waiting_now: Arc<AtomicI64>,
    /// Instances held by calls now (what `instances_in_use` exports).
    in_use_now: Arc<AtomicI64>,
    /// Where calls ran, since start (what `weir.plugin.placements` exports).
    pub(super) placements: Arc<PlacementCounts>,
    _placements: ObservableCounter<u64>,
}

/// Calls by where they ran: counted with one atomic add on the call's path, exported at
/// collection.
#[derive(Debug, Default)]
pub(super) struct PlacementCounts {
    inline: AtomicU64,
    moved: AtomicU64,
    plugin_threads: AtomicU64,
}

impl PlacementCounts {
    fn add(&self, placement: Placement) {
        let counter = match placement {
            Placement::Inline => &self.inline,
            Placement::Moved => &self.moved,
            Placement::PluginThreads => &self.plugin_threads,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self) -> super::Placements {
        super::Placements {
            inline: self.inline.load(Ordering::Relaxed),
            moved: self.moved.load(Ordering::Relaxed),
            plugin_threads: self.plugin_threads.load(Ordering::Relaxed),
        }
    }
}

/// Where one call ran.
#[derive(Debug, Clone, Copy)]
enum Placement {
    /// Wholly on the server thread that asked for it.
    Inline,
    /// Its first slice there, the rest on the plugin threads.
    Moved,
    /// On the plugin threads from the start.
    PluginThreads,
}

impl Placement {
    fn as_str(self) -> &'static str {
        match self {
            Self::Inline => "inline",
            Self::Moved => "moved",
            Self::PluginThreads => "plugin_threads",
        }
    }
}

impl Metrics {
    pub(super) fn new() -> Self {
        Self::from_meter(&opentelemetry::global::meter("weir.runtime"))
    }

    /// The instruments made from `meter` (the global meter in [`Self::new`]; a test's own).
    fn from_meter(meter: &opentelemetry::metrics::Meter) -> Self {
        let placements = Arc::new(PlacementCounts::default());
        Self {
            invocations: meter
                .u64_counter("weir.plugin.invocations")
                .with_description("Plugin invocations by plugin, version, function and outcome")
                .build(),
            call_duration: meter
                .f64_histogram("weir.plugin.call.duration")
                .with_unit("s")
                .with_description("Duration of plugin calls, instantiation included")
                .with_boundaries(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0, 2.5,
                ])
                .build(),
            instantiate_duration: meter
                .f64_histogram("weir.plugin.instantiate.duration")
                .with_unit("s")
                .with_description("Time to create a fresh plugin instance")
                .with_boundaries(vec![
                    0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005,
                ])
                .build(),
            traps: meter
                .u64_counter("weir.plugin.traps")
                .with_description("Plugin traps and budget exhaustions by kind")
                .build(),
            contract_violations: meter
                .u64_counter("weir.plugin.contract_violations")
                .with_description(
                    "Plugin decisions refused for breaking the host's contract, by rule",
                )
                .build(),
            capability_denials: meter
                .u64_counter("weir.plugin.capability_denials")
                .with_description(
                    "Plugin calls stopped for using a capability they did not declare, by capability",
                )
                .build(),
            stdio_truncated: meter
                .u64_counter("weir.plugin.stdio.truncated")
                .with_description(
                    "Plugin calls whose stdout or stderr went over its byte or line budget, by stream",
                )
                .build(),
            in_flight: meter
                .i64_up_down_counter("weir.plugin.in_flight")
                .with_description("Plugin invocations in progress")
                .build(),
            instance_wait: meter
                .f64_histogram("weir.plugin.instance.wait")
                .with_unit("s")
                .with_description(
                    "Time plugin calls waited for a free instance (runtime.max_instances), refused ones included",
                )
                .with_boundaries(vec![
                    0.0, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ])
                .build(),
            instances_exhausted: meter
                .u64_counter("weir.plugin.instances.exhausted")
                .with_description(
                    "Plugin calls refused because no instance became free within runtime.instance_wait_ms or the caller's deadline",
                )
                .build(),
            inline_unfinished: meter
                .u64_counter("weir.plugin.inline.unfinished")
                .with_description(
                    "Plugin calls whose inline slice on a server thread did not simply finish: moved to the plugin threads, or overran a fifth of an epoch tick",
                )
                .build(),
            instances_in_use: meter
                .i64_up_down_counter("weir.plugin.instances.in_use")
                .with_description("Plugin instances in use (at most runtime.max_instances)")
                .build(),
            instances_waiting: meter
                .i64_up_down_counter("weir.plugin.instances.waiting")
                .with_description("Plugin calls waiting for a free instance")
                .build(),
            waiting_now: Arc::default(),
            in_use_now: Arc::default(),
            _placements: {
                let counts = placements.clone();
                meter
                    .u64_observable_counter("weir.plugin.placements")
                    .with_description(
                        "Plugin calls by where they ran: inline on a server thread, moved there from after a first slice, or on the plugin threads from the start",
                    )
                    .with_callback(move |o| {
                        let now = counts.snapshot();
                        for (placement, n) in [
                            (Placement::Inline, now.inline),
                            (Placement::Moved, now.moved),
                            (Placement::PluginThreads, now.plugin_threads),
                        ] {
                            o.observe(n, &[KeyValue::new("placement", placement.as_str())]);
                        }
                    })
                    .build()
            },
            placements,
        }
    }

    /// Calls waiting for an instance now.
    pub(super) fn waiting(&self) -> i64 {
        self.waiting_now.load(Ordering::Relaxed)
    }

    /// Instances held by calls now.
    pub(super) fn in_use(&self) -> i64 {
        self.in_use_now.load(Ordering::Relaxed)
    }
}

/// The instruments one kind of call records on every call, bound once to its attributes:
/// one version in one role calling one function (`plugin.name`, `plugin.version`,
/// `plugin.digest`, `plugin.role`, `plugin.function`), plus `outcome` for the two that count
/// outcomes, bound on an outcome's first use. A bound instrument keeps its series and skips
/// the attribute lookup (hashing and comparing five to six attributes, the digest among them)
/// that an unbound measurement makes each time; OpenTelemetry offers it behind its
/// `experimental_metrics_bound_instruments` feature. Made on first use by
/// [`PluginVersion::call_metrics`] and kept with the version. The rarer measurements
/// (refusals, traps, denials, truncated output) stay unbound, with [`Self::labels`].
pub(crate) struct CallMetrics {
    role: Role,
    function: &'static str,
    /// The five attributes above, for the unbound measurements.
    pub(super) labels: [KeyValue; 5],
    in_flight: BoundUpDownCounter<i64>,
    instance_wait: BoundHistogram<f64>,
    instantiate_duration: BoundHistogram<f64>,
    /// By outcome: invocations and call duration. A call's outcome is one of a fixed set of
    /// static names, so this stays short.
    outcomes: RwLock<Vec<Arc<ByOutcome>>>,
}

/// A call's instruments for one outcome.
struct ByOutcome {
    outcome: &'static str,
    invocations: BoundCounter<u64>,
    call_duration: BoundHistogram<f64>,
}

impl ByOutcome {
    fn record(&self, seconds: f64) {
        self.invocations.add(1);
        self.call_duration.record(seconds);
    }
}

impl CallMetrics {
    fn new(m: &Metrics, labels: [KeyValue; 5], role: Role, function: &'static str) -> Self {
        Self {
            role,
            function,
            in_flight: m.in_flight.bind(&labels),
            instance_wait: m.instance_wait.bind(&labels),
            instantiate_duration: m.instantiate_duration.bind(&labels),
            outcomes: RwLock::default(),
            labels,
        }
    }

    /// Whether these are the instruments of `role` calling `function`.
    pub(super) fn is_for(&self, role: Role, function: &'static str) -> bool {
        self.role == role && self.function == function
    }

    /// One finished call: counted and its duration recorded under its outcome.
    fn finished(&self, m: &Metrics, outcome: &'static str, seconds: f64) {
        let by_outcome = find_or_add(
            &self.outcomes,
            |b| b.outcome == outcome,
            || {
                let [name, version, digest, role, function] = self.labels.clone();
                let attrs = [
                    name,
                    version,
                    digest,
                    role,
                    function,
                    KeyValue::new("outcome", outcome),
                ];
                ByOutcome {
                    outcome,
                    invocations: m.invocations.bind(&attrs),
                    call_duration: m.call_duration.bind(&attrs),
                }
            },
        );
        by_outcome.record(seconds);
    }
}

/// The entry of `list` that `matches`, or a new one from `make`, added under the write lock
/// (checked again there, so two callers racing add it once). Lists here stay short (outcomes
/// of a call, roles and functions of a version): a lock read and a scan are the lookup.
fn find_or_add<T>(
    list: &RwLock<Vec<Arc<T>>>,
    matches: impl Fn(&T) -> bool,
    make: impl FnOnce() -> T,
) -> Arc<T> {
    let read = list.read().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = read.iter().find(|t| matches(t)) {
        return found.clone();
    }
    drop(read);
    let mut write = list.write().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = write.iter().find(|t| matches(t)) {
        return found.clone();
    }
    let made = Arc::new(make());
    write.push(made.clone());
    made
}

impl PluginVersion {
    /// The bound instruments of this version's calls of `function` in `role`, made on first
    /// use ([`call_metrics_in`]).
    pub(super) fn call_metrics(
        &self,
        m: &Metrics,
        role: Role,
        function: &'static str,
    ) -> Arc<CallMetrics> {
        call_metrics_in(&self.call_metrics, m, self.labels(), role, function)
    }
}

/// The instruments of `role` calling `function` in `list` (one version's), bound to
/// `version` (its name, version and digest attributes) and added on first use. A version is
/// called in one or two roles and a handful of functions, so a short list under a lock read
/// is the whole lookup.
fn call_metrics_in(
    list: &RwLock<Vec<Arc<CallMetrics>>>,
    m: &Metrics,
    version: &[KeyValue; 3],
    role: Role,
    function: &'static str,
) -> Arc<CallMetrics> {
    find_or_add(
        list,
        |c| c.is_for(role, function),
        || {
            let [name, number, digest] = version.clone();
            let labels = [
                name,
                number,
                digest,
                KeyValue::new("plugin.role", role.as_str()),
                KeyValue::new("plugin.function", function),
            ];
            CallMetrics::new(m, labels, role, function)
        },
    )
}

/// A call in flight, counted in `weir.plugin.in_flight` while it lives: also when the call's
/// future is dropped before it ends (a request timeout, a client gone), which a plain
/// decrement at the end of the call would miss.
struct InFlight(Arc<CallMetrics>);

impl InFlight {
    fn start(bound: &Arc<CallMetrics>) -> Self {
        bound.in_flight.add(1);
        Self(bound.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.add(-1);
    }
}

/// One pool slot held by one call: taken before the instance is made, given back when the
/// call's store (and with it the instance's pool slot) has been dropped.
pub(super) struct InstanceSlot {
    _permit: OwnedSemaphorePermit,
    in_use: UpDownCounter<i64>,
    in_use_now: Arc<AtomicI64>,
}

impl Drop for InstanceSlot {
    fn drop(&mut self) {
        self.in_use.add(-1, &[]);
        self.in_use_now.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A store and the slot it occupies. Fields drop in declaration order: the store (which
/// returns the instance to wasmtime's pool) before the slot (which lets the next call in), so
/// an admitted call always finds its pool slot free.
struct Held {
    store: Store<InvocationState>,
    _slot: InstanceSlot,
}

/// Counts a call as waiting while it lives (also when the waiting future is dropped).
struct Waiting<'a>(&'a Metrics);

impl<'a> Waiting<'a> {
    fn start(m: &'a Metrics) -> Self {
        m.waiting_now.fetch_add(1, Ordering::Relaxed);
        m.instances_waiting.add(1, &[]);
        Self(m)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting_now.fetch_sub(1, Ordering::Relaxed);
        self.0.instances_waiting.add(-1, &[]);
    }
}

/// One exported function of the `weir:orders/plugin` world. Owned (`'static`): the call
/// runs on the plugin threads, and the contract check needs its arguments afterwards.
pub(super) trait Call: Send + Sync + 'static {
    /// The WIT name, a span attribute and metric label.
    const NAME: &'static str;
    /// Whether the version's circuit breaker is asked first (admission's `describe` is
    /// never refused).
    const GUARDED: bool = true;
    /// Whether a case recording may record the call (`case_call` and `decision` answer).
    const RECORDED: bool = false;
    /// Whether the call may start on the thread that asked for it
    /// ([`super::RuntimeConfig::inline_calls`]).
    const INLINE: bool = false;
    /// What the function returns.
    type Output: Send + 'static;

    /// Call the function on a fresh instance.
    fn call(
        &self,
        instance: &bindings::Plugin,
        store: &mut Store<InvocationState>,
    ) -> impl Future<Output = wasmtime::Result<Self::Output>> + Send;

    /// The outcome label of a returned value (`ok`, or the guest error's tag).
    fn outcome(output: &Self::Output) -> &'static str;

    /// The host's contract on a returned value, given the call's arguments.
    fn check(&self, _output: &Self::Output) -> Result<(), ContractViolation> {
        Ok(())
    }

    /// The call as a recorded case's input; `None` for calls never recorded.
    fn case_call(&self) -> Option<CaseCall> {
        None
    }

    /// The decision a result stands for, for a recorded case.
    fn decision(_result: &Result<Self::Output, InvokeError>) -> Option<Decision> {
        None
    }
}

/// `describe`: name, version and declared capabilities.
pub(super) struct Describe;

impl Call for Describe {
    const NAME: &'static str = "describe";
    const GUARDED: bool = false;
    type Output = bindings::PluginInfo;

    async fn call(
        &self,
        instance: &bindings::Plugin,
        store: &mut Store<InvocationState>,
    ) -> wasmtime::Result<Self::Output> {
        instance.call_describe(store).await
    }

    fn outcome(_: &Self::Output) -> &'static str {
        "ok"
    }
}

/// `place-order`: the request as the guest receives it, and as the contract checks it.
pub(super) struct PlaceOrder {
    pub wire: bindings::OrderRequest,
    pub request: OrderRequest,
}

impl Call for PlaceOrder {
    const NAME: &'static str = "place-order";
    const RECORDED: bool = true;
    const INLINE: bool = true;
    type Output = Result<PricedOrder, OrderError>;

    async fn call(
        &self,
        instance: &bindings::Plugin,
        store: &mut Store<InvocationState>,
    ) -> wasmtime::Result<Self::Output> {
        let answer = instance.call_place_order(store, &self.wire).await?;
        Ok(answer.map(Into::into).map_err(Into::into))
    }

    fn outcome(output: &Self::Output) -> &'static str {
        guest_outcome(output)
    }

    fn check(&self, output: &Self::Output) -> Result<(), ContractViolation> {
        match output {
            Ok(priced) => contract::check_priced(&self.request, priced),
            Err(refusal) => contract::check_refusal(refusal),
        }
    }

    fn case_call(&self) -> Option<CaseCall> {
        Some(CaseCall::PlaceOrder {
            request: self.request.clone(),
        })
    }

    fn decision(result: &Result<Self::Output, InvokeError>) -> Option<Decision> {
        Some(Decision::of(result, |p: &PricedOrder| {
            Decision::Priced(p.clone())
        }))
    }
}

/// `transition`: the order as the guest receives it, its status and the event.
pub(super) struct Transition {
    pub wire: bindings::OrderSnapshot,
    /// The order as a recorded case shows it (only built when the call is recorded).
    pub order: Option<CaseOrder>,
    pub from: OrderStatus,
    pub event: OrderEvent,
}

impl Call for Transition {
    const NAME: &'static str = "transition";
    const RECORDED: bool = true;
    const INLINE: bool = true;
    type Output = Result<OrderStatus, OrderError>;

    async fn call(
        &self,
        instance: &bindings::Plugin,
        store: &mut Store<InvocationState>,
    ) -> wasmtime::Result<Self::Output> {
        let answer = instance
            .call_transition(store, &self.wire, self.event.into())
            .await?;
        Ok(answer.map(Into::into).map_err(Into::into))
    }

    fn outcome(output: &Self::Output) -> &'static str {
        guest_outcome(output)
    }

    fn check(&self, output: &Self::Output) -> Result<(), ContractViolation> {
        match output {
            Ok(to) => contract::check_transition(self.from, self.event, *to),
            Err(refusal) => contract::check_refusal(refusal),
        }
    }

    fn case_call(&self) -> Option<CaseCall> {
        Some(CaseCall::Transition {
            order: self.order.clone()?,
            event: self.event,
        })
    }

    fn decision(result: &Result<Self::Output, InvokeError>) -> Option<Decision> {
        Some(Decision::of(result, |s: &OrderStatus| Decision::Status(*s)))
    }
}

/// How a call's inline slice ended.
enum Slice<T> {
    /// The call ended (its result), or its task panicked (the message).
    Finished(Result<T, String>),
    /// The call is pending: the rest runs on the plugin threads.
    Moved,
}

fn guest_outcome<T>(output: &Result<T, OrderError>) -> &'static str {
    match output {
        Ok(_) => "ok",
        Err(e) => e.tag(),
    }
}

impl Runtime {
    /// Invoke `call` on a fresh instance of `plugin`, by `deadline` at the latest (the
    /// configured budget may end it sooner). A call sampled by the running case recording
    /// ([`super::cases`]) is traced and kept as a case.
    pub(super) async fn invoke<C: Call>(
        &self,
        plugin: &PluginVersion,
        role: Role,
        call: C,
        deadline: Option<Instant>,
    ) -> Result<C::Output, InvokeError> {
        let recorded = C::RECORDED
            .then(|| self.recorder_for(role))
            .flatten()
            .and_then(|recorder| Some((recorder, call.case_call()?)));
        let Some((recorder, case_call)) = recorded else {
            return self.invoke_traced(plugin, role, call, deadline, None).await;
        };
        let trace = CallTrace::recording();
        let result = self
            .invoke_traced(plugin, role, call, deadline, Some(trace.clone()))
            .await;
        if let Some(decision) = C::decision(&result) {
            recorder.keep(plugin, case_call, &trace, decision);
        }
        result
    }

    /// [`Runtime::invoke`] with the imports traced by `trace` (recorded or scripted).
    pub(super) async fn invoke_traced<C: Call>(
        &self,
        plugin: &PluginVersion,
        role: Role,
        call: C,
        deadline: Option<Instant>,
        trace: Option<CallTrace>,
    ) -> Result<C::Output, InvokeError> {
        let inner = &*self.inner;
        let _token = inner.tracker.token();
        let started = Instant::now();
        let bound = plugin.call_metrics(&inner.metrics, role, C::NAME);
        let span = invocation_span(plugin, role, C::NAME);
        let in_flight = InFlight::start(&bound);

        // A free instance first (bounded wait), then the breaker: a half-open probe is never
        // spent on a call that then finds no instance.
        let slot = match self.admit(role, started, deadline, &bound, &span).await {
            Ok(slot) => slot,
            Err(refused) => {
                drop(in_flight);
                self.record(
                    &span,
                    &bound,
                    started,
                    (refused.outcome(), None),
                    Some(&refused),
                );
                return Err(refused);
            }
        };
        // The budget runs from admission; the caller's deadline still bounds everything.
        let budget_end = Instant::now() + inner.config.budget.timeout;
        let deadline = deadline.map_or(budget_end, |d| d.min(budget_end));
        let permit = if C::GUARDED {
            match self.breaker_permit(plugin) {
                Ok(permit) => Some(permit),
                Err(refused) => {
                    drop(in_flight);
                    self.record(
                        &span,
                        &bound,
                        started,
                        ("short_circuited", None),
                        Some(&refused),
                    );
                    return Err(refused);
                }
            }
        } else {
            None
        };
        let state = self.fresh_state(plugin, deadline, trace);
        let (stdout, stderr) = (state.stdout.clone(), state.stderr.clone());
        let (result, placement) = self
            .run_placed(plugin, role, call, (state, slot), deadline, &bound, &span)
            .await;
        if let Some(permit) = permit {
            permit.record(Some(
                result.as_ref().is_err_and(InvokeError::is_plugin_fault),
            ));
        }
        drop(in_flight);

        let output = [("stdout", stdout.take()), ("stderr", stderr.take())];
        // The span is entered only for output there is (an enter and an exit cost about
        // 2 300 instructions with the served layers; most calls print nothing).
        if output
            .iter()
            .any(|(_, (bytes, dropped))| !bytes.is_empty() || *dropped > 0)
        {
            let _enter = span.enter();
            for (stream, (bytes, dropped)) in output {
                self.emit_stdio(stream, &bytes, dropped, &bound.labels);
            }
        }
        let outcome = match &result {
            Ok(output) => C::outcome(output),
            Err(e) => e.outcome(),
        };
        self.record(
            &span,
            &bound,
            started,
            (outcome, Some(placement)),
            result.as_ref().err(),
        );
        result
    }

    /// A free instance slot: at once when one is free; otherwise wait until the earlier of
    /// `runtime.instance_wait_ms` after `started` and the caller's `deadline`, then refuse
    /// with [`InvokeError::PoolExhausted`]. Shadow calls never wait. Shutdown interrupts the
    /// wait. The wait is recorded on the span (`instance_wait_us`) and in the metrics.
    async fn admit(
        &self,
        role: Role,
        started: Instant,
        deadline: Option<Instant>,
        bound: &CallMetrics,
        span: &tracing::Span,
    ) -> Result<InstanceSlot, InvokeError> {
        let inner = &*self.inner;
        let m = &inner.metrics;
        let instances = inner.instances.clone();
        let permit = match instances.clone().try_acquire_owned() {
            Ok(permit) => Ok(permit),
            Err(TryAcquireError::Closed) => Err(InvokeError::Interrupted),
            Err(TryAcquireError::NoPermits) => {
                let cap = started + inner.config.instance_wait;
                let until = deadline.map_or(cap, |d| d.min(cap));
                if role == Role::Shadow || until <= Instant::now() {
                    Err(None)
                } else {
                    let _waiting = Waiting::start(m);
                    tokio::select! {
                        biased;
                        () = inner.interrupt.cancelled() => Err(Some(InvokeError::Interrupted)),
                        r = tokio::time::timeout_at(until, instances.acquire_owned()) => match r {
                            Ok(Ok(permit)) => Ok(permit),
                            Ok(Err(_closed)) => Err(Some(InvokeError::Interrupted)),
                            Err(_elapsed) => Err(None),
                        },
                    }
                }
                .map_err(|interrupted| {
                    interrupted.unwrap_or_else(|| InvokeError::PoolExhausted {
                        waited: started.elapsed(),
                        retry_after: std::time::Duration::from_secs(1),
                    })
                })
            }
        };
        let waited = started.elapsed();
        span.record(
            "instance_wait_us",
            crate::telemetry::int_field(waited.as_micros()),
        );
        bound.instance_wait.record(waited.as_secs_f64());
        match permit {
            Ok(permit) => {
                m.instances_in_use.add(1, &[]);
                m.in_use_now.fetch_add(1, Ordering::Relaxed);
                Ok(InstanceSlot {
                    _permit: permit,
                    in_use: m.instances_in_use.clone(),
                    in_use_now: m.in_use_now.clone(),
                })
            }
            Err(e) => {
                if matches!(e, InvokeError::PoolExhausted { .. }) {
                    span.record("instances.exhausted", true);
                    m.instances_exhausted.add(1, &bound.labels);
                }
                Err(e)
            }
        }
    }

    /// A permit of the version's breaker (looked up once per version), or the refusal.
    fn breaker_permit(&self, plugin: &PluginVersion) -> Result<Permit, InvokeError> {
        let meta = &plugin.meta;
        plugin
            .breaker
            .get_or_init(|| {
                self.inner
                    .plugin_breakers
                    .get(&format!("plugin:{}@{}", meta.name, meta.version))
            })
            .try_acquire()
            .map_err(|open| InvokeError::CircuitOpen {
                retry_after: open.retry_after,
            })
    }

    /// The store data of one call: the imports' state and the WASI context.
    pub(super) fn fresh_state(
        &self,
        plugin: &PluginVersion,
        deadline: Instant,
        trace: Option<CallTrace>,
    ) -> InvocationState {
        let config = &self.inner.config;
        let imports = Imports::new(
            plugin.meta.clone(),
            self.inner.catalog.clone(),
            config.catalog_timeout,
            deadline,
            LogBudget {
                records: config.budget.log_records,
                bytes: config.budget.log_bytes,
            },
            Granted::of(&plugin.capabilities),
            tokio::runtime::Handle::current(),
        )
        .with_trace(trace);
        InvocationState::new(&config.budget, imports)
    }

    /// Run the call, then check what came back against the contract. A request's call may
    /// run its first slice here, on the server thread that asked for it
    /// ([`Self::inline_slice`]); the rest, and every other call, runs on the plugin threads.
    /// Dropping the returned future (a request timeout) aborts the call there.
    #[allow(clippy::too_many_arguments)]
    async fn run_placed<C: Call>(
        &self,
        plugin: &PluginVersion,
        role: Role,
        call: C,
        (state, slot): (InvocationState, InstanceSlot),
        deadline: Instant,
        bound: &Arc<CallMetrics>,
        span: &tracing::Span,
    ) -> (Result<C::Output, InvokeError>, Placement) {
        let this = self.clone();
        let pre = plugin.pre.clone();
        let task_bound = bound.clone();
        let task = async move {
            let result = this
                .run_bounded(&pre, &call, state, slot, deadline, &task_bound)
                .await;
            (call, result)
        }
        .instrument(span.clone())
        .with_current_subscriber();
        let inline = C::INLINE && role != Role::Shadow && self.inline_allowed(plugin);
        let (joined, placement) = if inline {
            let mut task = Box::pin(task);
            match self.inline_slice(plugin, task.as_mut(), &bound.labels, span) {
                Slice::Finished(joined) => {
                    self.placed(span, Placement::Inline);
                    (joined, Placement::Inline)
                }
                Slice::Moved => {
                    self.placed(span, Placement::Moved);
                    (self.on_plugin_threads(task).await, Placement::Moved)
                }
            }
        } else {
            self.placed(span, Placement::PluginThreads);
            (self.on_plugin_threads(task).await, Placement::PluginThreads)
        };
        let result = match joined {
            Ok((call, result)) => result.and_then(|output| match call.check(&output) {
                Ok(()) => Ok(output),
                Err(violation) => Err(InvokeError::Contract(violation)),
            }),
            Err(failure) => Err(InvokeError::Trap {
                kind: weir_core::ports::TrapKind::Host,
                detail: Detail(format!("the plugin task failed: {failure}")),
            }),
        };
        (result, placement)
    }

    /// Run `task` on the plugin threads; dropping the returned future aborts it there. A
    /// panicked task is its message.
    async fn on_plugin_threads<T>(&self, task: T) -> Result<T::Output, String>
    where
        T: Future + Send + 'static,
        T::Output: Send + 'static,
    {
        AbortOnDropHandle::new(self.inner.plugin_threads.spawn(task))
            .await
            .map_err(|join| join.to_string())
    }

    /// Where a call ran, in the counts and on its span. A call that goes to the plugin
    /// threads has it on the span before it waits there (a request timeout may drop it); an
    /// inline one, which finished in its slice, gets it with its outcome ([`Self::record`]:
    /// one record less).
    fn placed(&self, span: &tracing::Span, placement: Placement) {
        self.inner.metrics.placements.add(placement);
        if !matches!(placement, Placement::Inline) {
            span.record("placement", placement.as_str());
        }
    }

    /// Microseconds on the runtime's clock.
    pub(super) fn clock_us(&self) -> u64 {
        self.inner.born.elapsed().as_micros() as u64
    }

    /// Whether a call of `plugin` may start inline now: inline calls are on, the server's
    /// threads are not all wanted (no more connections on a thread or waiting for one than
    /// worker threads, see [`Runtime::watch_server_load`]), and the version is not
    /// offloaded after overruns ([`Self::inline_slice`]).
    fn inline_allowed(&self, plugin: &PluginVersion) -> bool {
        self.inner.config.inline_calls
            && self
                .inner
                .server_load
                .get()
                .is_none_or(|(load, workers)| load() <= *workers)
            && match plugin.inline.offloaded_until.load(Ordering::Relaxed) {
                // Never offloaded: no clock read on the call's path.
                0 => true,
                until => until <= self.clock_us(),
            }
    }

    /// Poll the call once, here. A fresh call usually finishes within this one poll; one
    /// that reaches the next epoch tick (the deadline callback yields there) or waits on a
    /// dependency returns pending, and is then moved to the plugin threads by the caller.
    /// A slice that held this thread for a fifth of a tick or more is an overrun, counted;
    /// one that follows the version's previous overrun within
    /// [`super::INLINE_OVERRUN_WINDOW`] sends the version to the plugin threads for
    /// [`super::INLINE_OFFLOAD`] (a lone overrun is forgiven: the kernel may have preempted
    /// this thread during the slice). A panic in the slice is the same failure as a
    /// panicking plugin task.
    fn inline_slice<T>(
        &self,
        plugin: &PluginVersion,
        task: std::pin::Pin<&mut T>,
        labels: &[KeyValue; 5],
        span: &tracing::Span,
    ) -> Slice<T::Output>
    where
        T: Future,
    {
        plugin.inline.started.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        // The waker does not matter: a pending task is spawned on the plugin threads at
        // once, and a pending future keeps only the waker of its latest poll.
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            task.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
        }));
        let held = started.elapsed();
        let overran = held >= self.inner.config.epoch_tick / 5;
        if overran {
            let now = self.clock_us();
            let previous = plugin.inline.last_overrun.swap(now, Ordering::Relaxed);
            if super::overrun_offloads(previous, now) {
                let until = now + super::INLINE_OFFLOAD.as_micros() as u64;
                plugin
                    .inline
                    .offloaded_until
                    .fetch_max(until, Ordering::Relaxed);
            }
            plugin.inline.overruns.fetch_add(1, Ordering::Relaxed);
            span.record("inline.overran", true);
        }
        let slice = match polled {
            Ok(std::task::Poll::Ready(output)) => Slice::Finished(Ok(output)),
            Ok(std::task::Poll::Pending) => Slice::Moved,
            Err(panic) => {
                let message = crate::support::panic_message(&*panic);
                Slice::Finished(Err(format!("panicked inline: {message}")))
            }
        };
        let moved = matches!(slice, Slice::Moved);
        if moved || overran {
            let [name, version, digest, role, function] = labels.clone();
            self.inner.metrics.inline_unfinished.add(
                1,
                &[
                    name,
                    version,
                    digest,
                    role,
                    function,
                    KeyValue::new("moved", moved),
                    KeyValue::new("overran", overran),
                ],
            );
        }
        slice
    }

    /// Run the call by `deadline`, unless shutdown interrupts it first.
    async fn run_bounded<C: Call>(
        &self,
        pre: &bindings::PluginPre<InvocationState>,
        call: &C,
        state: InvocationState,
        slot: InstanceSlot,
        deadline: Instant,
        bound: &CallMetrics,
    ) -> Result<C::Output, InvokeError> {
        let work = self.run(pre, call, state, slot, deadline, bound);
        tokio::select! {
            biased;
            () = self.inner.interrupt.cancelled() => Err(InvokeError::Interrupted),
            r = tokio::time::timeout_at(deadline, work) => {
                r.unwrap_or(Err(InvokeError::Budget(BudgetKind::WallClock)))
            }
        }
    }

    /// A fresh store and instance in `slot`, then the call; the store and instance are
    /// dropped afterwards whatever happened, then the slot is given back.
    async fn run<C: Call>(
        &self,
        pre: &bindings::PluginPre<InvocationState>,
        call: &C,
        state: InvocationState,
        slot: InstanceSlot,
        deadline: Instant,
        bound: &CallMetrics,
    ) -> Result<C::Output, InvokeError> {
        let mut held = Held {
            store: self.new_store(state, deadline)?,
            _slot: slot,
        };
        let store = &mut held.store;

        let t0 = Instant::now();
        let instance = match pre.instantiate_async(&mut *store).await {
            Ok(i) => i,
            Err(e) if e.downcast_ref::<Trap>().is_some() => return Err(classify(store, e)),
            // A part of the pool other than component instances (core instances, memories,
            // tables, stacks) ran out first: the same capacity condition, typed the same way.
            Err(e)
                if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                    .is_some() =>
            {
                return Err(InvokeError::PoolExhausted {
                    waited: std::time::Duration::ZERO,
                    retry_after: std::time::Duration::from_secs(1),
                });
            }
            Err(e) => {
                return Err(InvokeError::Instantiate {
                    detail: Detail(format!("{e:#}")),
                });
            }
        };
        let instantiate = t0.elapsed();
        tracing::Span::current().record(
            "instantiate_us",
            crate::telemetry::int_field(instantiate.as_micros()),
        );
        bound.instantiate_duration.record(instantiate.as_secs_f64());

        let result = call
            .call(&instance, &mut *store)
            .await
            .map_err(|e| classify(store, e));
        let data = store.data();
        if let Some(trace) = &data.imports.trace {
            trace.set_memory(data.limiter.memory_used());
        }
        result
    }

    /// The store of one call, holding `state`, under the budget: memory and table limits,
    /// hostcall fuel (the copy budget), the epoch deadline and optional fuel.
    pub(super) fn new_store(
        &self,
        state: InvocationState,
        deadline: Instant,
    ) -> Result<Store<InvocationState>, InvokeError> {
        let inner = &*self.inner;
        let mut store = Store::new(&inner.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_hostcall_fuel(inner.config.budget.copy_bytes);
        // At every epoch tick a running guest yields to the other calls on the plugin
        // threads; past the deadline it is interrupted (the CPU budget).
        let deadline_std = deadline.into_std();
        store.epoch_deadline_callback(move |_| {
            Ok(if std::time::Instant::now() >= deadline_std {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        store.set_epoch_deadline(1);
        if let Some(fuel) = inner.config.budget.fuel {
            store.set_fuel(fuel).map_err(|e| InvokeError::Instantiate {
                detail: Detail(format!("{e:#}")),
            })?;
        }
        Ok(store)
    }

    /// Outcome, duration, where an inline call ran (the others have it on the span already:
    /// [`Self::placed`]; `None` for a call refused before it was placed) and failure on the
    /// span, and in the metrics. The first three go on the span in one record (each record
    /// costs about 4 000 instructions with the served layers).
    fn record(
        &self,
        span: &tracing::Span,
        bound: &CallMetrics,
        started: Instant,
        (outcome, placement): (&'static str, Option<Placement>),
        error: Option<&InvokeError>,
    ) {
        let elapsed = started.elapsed();
        let metrics = &self.inner.metrics;
        tracing::record_all!(
            span,
            outcome = outcome,
            duration_us = crate::telemetry::int_field(elapsed.as_micros()),
            placement = placement
                .filter(|p| matches!(p, Placement::Inline))
                .map(Placement::as_str)
        );
        bound.finished(metrics, outcome, elapsed.as_secs_f64());
        let labels = &bound.labels;
        let Some(e) = error else { return };
        if let InvokeError::CapabilityDenied { capability } = e {
            span.record("capability", *capability);
            let mut attrs = labels.to_vec();
            attrs.push(KeyValue::new("capability", *capability));
            metrics.capability_denials.add(1, &attrs);
        }
        if let InvokeError::Contract(violation) = e {
            let rule = violation.rule.as_str();
            span.record("contract.rule", rule);
            let mut attrs = labels.to_vec();
            attrs.push(KeyValue::new("rule", rule));
            metrics.contract_violations.add(1, &attrs);
        }
        let kind = match e {
            InvokeError::Trap { kind, .. } => Some(kind.as_str()),
            InvokeError::Budget(b) => Some(b.as_str()),
            _ => None,
        };
        if let Some(kind) = kind {
            span.record("trap.kind", kind);
            let mut attrs = labels.to_vec();
            attrs.push(KeyValue::new("trap.kind", kind));
            metrics.traps.add(1, &attrs);
        }
        // A typed refusal is the plugin's answer, not a failure of the call.
        if !matches!(e, InvokeError::Refused(_)) {
            span.record("otel.status_code", "ERROR");
            crate::telemetry::record_exception(span, e.outcome(), e);
        }
    }
}

fn invocation_span(plugin: &PluginVersion, role: Role, function: &'static str) -> tracing::Span {
    let meta = &plugin.meta;
    plugin_span(
        &meta.name,
        &meta.version,
        &meta.digest,
        role.as_str(),
        function,
    )
}

/// The `plugin.invoke` span of one call, with the fields recorded during the call declared
/// empty. Public for the `log_lines` benchmark, which must format the span a served call has.
pub fn plugin_span(
    name: &str,
    version: &str,
    digest: &str,
    role: &str,
    function: &str,
) -> tracing::Span {
    tracing::info_span!(
        "plugin.invoke",
        plugin.name = %name,
        plugin.version = %version,
        plugin.digest = %digest,
        plugin.role = role,
        plugin.function = function,
        outcome = Empty,
        trap.kind = Empty,
        contract.rule = Empty,
        capability = Empty,
        instantiate_us = Empty,
        placement = Empty,
        inline.overran = Empty,
        instance_wait_us = Empty,
        instances.exhausted = Empty,
        duration_us = Empty,
        otel.status_code = Empty,
    )
}

/// Turn a wasmtime error from a call into a typed [`InvokeError`], preferring the limits the
/// host itself recorded over the trap code they caused.
fn classify(store: &Store<InvocationState>, err: wasmtime::Error) -> InvokeError {
    let data = store.data();
    match data.imports.refusal() {
        Some(&ImportRefusal::Undeclared(capability)) => {
            return InvokeError::CapabilityDenied { capability };
        }
        Some(ImportRefusal::Argument(violation)) => {
            return InvokeError::Contract(violation.clone());
        }
        None => {}
    }
    if data.limiter.hits.memory {
        return InvokeError::Budget(BudgetKind::Memory);
    }
    if data.limiter.hits.table {
        return InvokeError::Budget(BudgetKind::Table);
    }
    if data.imports.log_exceeded() {
        return InvokeError::Budget(BudgetKind::Log);
    }
    match err.downcast_ref::<Trap>() {
        None if copy_budget_exhausted(&err) => InvokeError::Budget(BudgetKind::Copy),
        Some(Trap::Interrupt) => InvokeError::Budget(BudgetKind::Cpu),
        Some(Trap::OutOfFuel) => InvokeError::Budget(BudgetKind::Fuel),
        Some(trap) => InvokeError::Trap {
            kind: trap_kind(*trap),
            detail: Detail(format!("{err:?}")),
        },
        None => InvokeError::Trap {
            kind: weir_core::ports::TrapKind::Host,
            detail: Detail(format!("{err:?}")),
        },
    }
}

/// Whether wasmtime refused to copy more out of the guest than the store's hostcall fuel
/// ([`super::Budget::copy_bytes`]). wasmtime reports this with a private error type, so this
/// is the one classification made from a message; the hostile suite pins the text (a
/// wasmtime upgrade that changes it fails `tests/it/sandbox.rs`).
fn copy_budget_exhausted(err: &wasmtime::Error) -> bool {
    err.chain().any(|e| {
        e.to_string()
            .contains("fuel allocated for hostcalls has been exhausted")
    })
}

impl Runtime {
    /// The guest's captured output as log lines inside the invocation span; a truncation is
    /// logged once and counted.
    fn emit_stdio(&self, stream: &'static str, bytes: &[u8], dropped: usize, labels: &[KeyValue]) {
        if bytes.is_empty() && dropped == 0 {
            return;
        }
        for line in String::from_utf8_lossy(bytes).lines() {
            tracing::info!(target: "weir::plugin", stream, "{line}");
        }
        if dropped > 0 {
            tracing::warn!(target: "weir::plugin", stream, dropped_bytes = dropped, "plugin output truncated");
            let mut attrs = labels.to_vec();
            attrs.push(KeyValue::new("stream", stream));
            self.inner.metrics.stdio_truncated.add(1, &attrs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The runtime's instruments on a meter provider of the test's own, so the counts below
    /// are exactly this test's.
    fn metrics() -> (
        Metrics,
        prometheus::Registry,
        opentelemetry_sdk::metrics::SdkMeterProvider,
    ) {
        let (meter, registry, provider) = crate::telemetry::metrics::test_meter("weir.runtime");
        (Metrics::from_meter(&meter), registry, provider)
    }

    fn labels(version: &'static str) -> [KeyValue; 5] {
        [
            KeyValue::new("plugin.name", "orders"),
            KeyValue::new("plugin.version", version),
            KeyValue::new("plugin.digest", "d1"),
            KeyValue::new("plugin.role", "stable"),
            KeyValue::new("plugin.function", "place-order"),
        ]
    }

    /// The value of the one sample of `name` whose labels include all of `with`.
    fn sample(registry: &prometheus::Registry, name: &str, with: &[(&str, &str)]) -> f64 {
        let text = crate::telemetry::metrics::render_text(registry);
        let found = crate::telemetry::metrics::samples(&text, name, with);
        assert_eq!(
            found.len(),
            1,
            "one {name} sample with {with:?} in:\n{text}"
        );
        found[0]
    }

    #[test]
    fn bound_instruments_count_each_call_under_its_own_labels_and_outcome() {
        let (m, registry, _provider) = metrics();
        let one = CallMetrics::new(&m, labels("1.0.0"), Role::Stable, "place-order");
        let other = CallMetrics::new(&m, labels("2.0.0"), Role::Stable, "place-order");
        one.in_flight.add(1);
        one.in_flight.add(1);
        one.in_flight.add(-1);
        other.in_flight.add(1);
        for _ in 0..3 {
            one.finished(&m, "ok", 0.002);
        }
        one.finished(&m, "rejected", 0.004);
        other.finished(&m, "ok", 0.001);
        one.instantiate_duration.record(0.00002);
        one.instance_wait.record(0.0);

        let v1 = ("plugin_version", "1.0.0");
        let v2 = ("plugin_version", "2.0.0");
        let ok = ("outcome", "ok");
        let rejected = ("outcome", "rejected");
        let all = [
            ("plugin_name", "orders"),
            ("plugin_digest", "d1"),
            ("plugin_role", "stable"),
            ("plugin_function", "place-order"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut l = all.to_vec();
            l.extend_from_slice(extra);
            l
        };
        assert_eq!(
            sample(&registry, "weir_plugin_in_flight", &with(&[v1])),
            1.0
        );
        assert_eq!(
            sample(&registry, "weir_plugin_in_flight", &with(&[v2])),
            1.0
        );
        assert_eq!(
            sample(&registry, "weir_plugin_invocations_total", &with(&[v1, ok])),
            3.0
        );
        assert_eq!(
            sample(
                &registry,
                "weir_plugin_invocations_total",
                &with(&[v1, rejected])
            ),
            1.0
        );
        assert_eq!(
            sample(&registry, "weir_plugin_invocations_total", &with(&[v2, ok])),
            1.0
        );
        assert_eq!(
            sample(
                &registry,
                "weir_plugin_call_duration_seconds_count",
                &with(&[v1, ok])
            ),
            3.0
        );
        let sum = sample(
            &registry,
            "weir_plugin_call_duration_seconds_sum",
            &with(&[v1, rejected]),
        );
        assert!((sum - 0.004).abs() < 1e-12, "{sum}");
        assert_eq!(
            sample(
                &registry,
                "weir_plugin_instantiate_duration_seconds_count",
                &with(&[v1])
            ),
            1.0
        );
        assert_eq!(
            sample(
                &registry,
                "weir_plugin_instance_wait_seconds_count",
                &with(&[v1])
            ),
            1.0
        );
        // One bound pair per outcome, however often it was used.
        assert_eq!(one.outcomes.read().unwrap().len(), 2);
    }

    #[test]
    fn an_unbound_measurement_with_the_same_labels_adds_to_the_bound_series() {
        let (m, registry, _provider) = metrics();
        let bound = CallMetrics::new(&m, labels("1.0.0"), Role::Stable, "place-order");
        bound.finished(&m, "ok", 0.001);
        let [a, b, c, d, e] = labels("1.0.0");
        m.invocations
            .add(1, &[a, b, c, d, e, KeyValue::new("outcome", "ok")]);
        assert_eq!(
            sample(
                &registry,
                "weir_plugin_invocations_total",
                &[("outcome", "ok")]
            ),
            2.0
        );
    }

    #[test]
    fn outcomes_bound_from_many_threads_at_once_lose_no_count() {
        let (m, registry, _provider) = metrics();
        let bound = CallMetrics::new(&m, labels("1.0.0"), Role::Stable, "place-order");
        let outcomes = ["ok", "rejected", "invalid", "trap"];
        std::thread::scope(|s| {
            for t in 0..4 {
                let (m, bound) = (&m, &bound);
                s.spawn(move || {
                    for i in 0..1000 {
                        bound.finished(m, outcomes[(t + i) % outcomes.len()], 0.001);
                    }
                });
            }
        });
        for outcome in outcomes {
            assert_eq!(
                sample(
                    &registry,
                    "weir_plugin_invocations_total",
                    &[("outcome", outcome)]
                ),
                1000.0,
                "{outcome}"
            );
        }
        assert_eq!(bound.outcomes.read().unwrap().len(), outcomes.len());
    }

    #[test]
    fn each_role_and_function_of_a_version_has_its_own_instruments_made_once() {
        let (m, registry, _provider) = metrics();
        let list = RwLock::default();
        let [name, version, digest, ..] = labels("1.0.0");
        let version = [name, version, digest];
        let stable = call_metrics_in(&list, &m, &version, Role::Stable, "place-order");
        let again = call_metrics_in(&list, &m, &version, Role::Stable, "place-order");
        let shadow = call_metrics_in(&list, &m, &version, Role::Shadow, "place-order");
        let transition = call_metrics_in(&list, &m, &version, Role::Stable, "transition");
        assert!(Arc::ptr_eq(&stable, &again), "made once");
        assert_eq!(list.read().unwrap().len(), 3);
        stable.finished(&m, "ok", 0.001);
        again.finished(&m, "ok", 0.001);
        shadow.finished(&m, "ok", 0.001);
        transition.finished(&m, "ok", 0.001);
        let count = |role, function| {
            sample(
                &registry,
                "weir_plugin_invocations_total",
                &[("plugin_role", role), ("plugin_function", function)],
            )
        };
        assert_eq!(count("stable", "place-order"), 2.0);
        assert_eq!(count("shadow", "place-order"), 1.0);
        assert_eq!(count("stable", "transition"), 1.0);
    }

    #[tokio::test]
    async fn a_call_dropped_before_it_ends_is_no_longer_in_flight() {
        let (m, registry, _provider) = metrics();
        let bound = Arc::new(CallMetrics::new(
            &m,
            labels("1.0.0"),
            Role::Stable,
            "place-order",
        ));
        let in_flight = || sample(&registry, "weir_plugin_in_flight", &[]);
        // As `invoke_traced` holds it: across the call's awaits.
        let call = {
            let bound = bound.clone();
            async move {
                let _in_flight = InFlight::start(&bound);
                std::future::pending::<()>().await;
            }
        };
        let mut call = Box::pin(call);
        assert!(futures::poll!(call.as_mut()).is_pending());
        assert_eq!(in_flight(), 1.0);
        drop(call);
        assert_eq!(in_flight(), 0.0);
    }
}
