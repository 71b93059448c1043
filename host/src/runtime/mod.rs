//! The plugin runtime: compiles components, admits them, and invokes them under a budget.
//!
//! # Layout
//! - [`bindings`]: the `bindgen!` output for `weir:orders/plugin`, nothing else.
//! - [`limits`]: the per-call [`Budget`] and the memory/table limiter.
//! - [`state`]: the store data of one invocation (a fresh one per call).
//! - [`output`]: bounded capture of guest stdout/stderr.
//! - [`registry`]: loaded versions by digest and the active slot of each plugin name.
//! - [`error`]: [`InvokeError`] and [`LoadError`].
//!
//! # One invocation
//! A fresh instance is made from the version's pre-instantiated component (pooling allocator,
//! copy-on-write memory images) in a fresh [`wasmtime::Store`]. The call runs under one
//! budget: a wall-clock deadline (tokio), an epoch deadline derived from it so a guest
//! spinning in `loop {}` is interrupted, memory and table limits, optional fuel, and log and
//! stdio budgets. Whatever happens the store and instance are dropped afterwards: a trapped
//! instance is never reused. Traps and timeouts are reported, never retried here.

pub mod bindings;
pub mod error;
pub mod limits;
pub mod output;
pub mod registry;
pub mod state;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, UpDownCounter};
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, field::Empty};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};

pub use bindings::{
    Capability, DependencyError, Money, OrderError, OrderEvent, OrderLine, OrderRequest,
    OrderSnapshot, OrderStatus, PluginInfo, PricedLine, PricedOrder, Rejection, Violation,
};
pub use error::{BudgetKind, EngineError, InvokeError, LoadError, TrapKind};
pub use limits::Budget;
pub use registry::{PluginMeta, PluginVersion, Registry, RegistryError, Slot};
pub use state::InvocationState;

use crate::capabilities::catalog::Catalog;

/// Configuration of the plugin runtime.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Budget of every invocation.
    pub budget: Budget,
    /// Instances that may exist at once; sizes the pooling allocator. Calls beyond it fail
    /// fast with [`InvokeError::Instantiate`] instead of queueing.
    pub max_instances: u32,
    /// Epoch tick: the granularity of CPU interruption.
    #[serde(with = "crate::config::duration_ms", rename = "epoch_tick_ms")]
    pub epoch_tick: Duration,
    /// Upper bound of one catalog lookup made by a plugin.
    #[serde(with = "crate::config::duration_ms", rename = "catalog_timeout_ms")]
    pub catalog_timeout: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            budget: Budget::default(),
            max_instances: 128,
            epoch_tick: Duration::from_millis(5),
            catalog_timeout: Duration::from_millis(200),
        }
    }
}

struct Metrics {
    invocations: Counter<u64>,
    call_duration: Histogram<f64>,
    instantiate_duration: Histogram<f64>,
    traps: Counter<u64>,
    in_flight: UpDownCounter<i64>,
}

impl Metrics {
    fn new() -> Self {
        let meter = opentelemetry::global::meter("weir.runtime");
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
            in_flight: meter
                .i64_up_down_counter("weir.plugin.in_flight")
                .with_description("Plugin invocations in progress")
                .build(),
        }
    }
}

/// One call into a plugin.
enum Call<'a> {
    Describe,
    PlaceOrder(&'a OrderRequest),
    Transition(&'a OrderSnapshot, OrderEvent),
}

impl Call<'_> {
    fn name(&self) -> &'static str {
        match self {
            Call::Describe => "describe",
            Call::PlaceOrder(_) => "place-order",
            Call::Transition(..) => "transition",
        }
    }
}

enum Reply {
    Info(PluginInfo),
    Priced(Result<PricedOrder, OrderError>),
    Status(Result<OrderStatus, OrderError>),
}

struct Inner {
    engine: Engine,
    linker: Linker<InvocationState>,
    config: RuntimeConfig,
    catalog: Arc<dyn Catalog>,
    tracker: TaskTracker,
    interrupt: CancellationToken,
    ticker_stop: Arc<AtomicBool>,
    metrics: Metrics,
    /// One breaker per plugin version (see [`Runtime::plugin_breakers`]).
    plugin_breakers: crate::policy::circuit_breaker::BreakerSet,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// The plugin engine. Cheap to clone; all clones share one engine and one in-flight tracker.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.inner.config)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Build the engine, the linker with the host capabilities, and start the epoch ticker.
    pub fn new(config: RuntimeConfig, catalog: Arc<dyn Catalog>) -> Result<Self, EngineError> {
        let budget = &config.budget;
        let mut pool = PoolingAllocationConfig::default();
        let n = config.max_instances.max(1);
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(8))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(8))
            .total_stacks(n)
            .max_memory_size(budget.memory_bytes.next_multiple_of(65536))
            .table_elements(budget.table_elements)
            .max_core_instances_per_component(32)
            .max_memories_per_component(4)
            .max_tables_per_component(32);

        let mut cfg = wasmtime::Config::new();
        cfg.wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(budget.fuel.is_some())
            .memory_init_cow(true)
            .max_wasm_stack(budget.max_wasm_stack)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&cfg).map_err(|e| EngineError(format!("{e:#}")))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| EngineError(format!("{e:#}")))?;
        bindings::Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| EngineError(format!("{e:#}")))?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(&engine, config.epoch_tick, ticker_stop.clone())?;

        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                linker,
                config,
                catalog,
                tracker: TaskTracker::new(),
                interrupt: CancellationToken::new(),
                ticker_stop,
                metrics: Metrics::new(),
                plugin_breakers: Default::default(),
            }),
        })
    }

    /// The runtime's configuration.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Compile and admit a component: it must be a component, implement the world, and pass
    /// its `describe` self-test. `config_for` supplies the configuration for the plugin name
    /// the component reports.
    pub async fn load(
        &self,
        bytes: Vec<u8>,
        config_for: impl FnOnce(&str) -> BTreeMap<String, String>,
    ) -> Result<Arc<PluginVersion>, LoadError> {
        if !is_component(&bytes) {
            return Err(LoadError::NotAComponent(if is_core_module(&bytes) {
                "this is a core WebAssembly module; build the plugin for wasm32-wasip2 \
                 (or wrap it with `wasm-tools component new`)"
                    .to_owned()
            } else {
                "the file does not start with the WebAssembly magic bytes".to_owned()
            }));
        }
        let digest = hex::encode(Sha256::digest(&bytes));
        let size = bytes.len();
        let engine = self.inner.engine.clone();
        let component = tokio::task::spawn_blocking(move || Component::new(&engine, &bytes))
            .await
            .map_err(|e| LoadError::Invalid(format!("compilation task failed: {e}")))?
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;

        let ty = component.component_type();
        let imports = ty
            .imports(&self.inner.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        let exports = ty
            .exports(&self.inner.engine)
            .map(|(n, _)| n.to_owned())
            .collect();

        let instance_pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::WorldMismatch(format!("{e:#}")))?;
        let pre = bindings::PluginPre::new(instance_pre)
            .map_err(|e| LoadError::WorldMismatch(format!("{e:#}")))?;

        let provisional = PluginVersion {
            meta: Arc::new(PluginMeta {
                name: "unadmitted".to_owned(),
                version: String::new(),
                digest: digest.clone(),
                config: BTreeMap::new(),
            }),
            capabilities: Vec::new(),
            imports,
            exports,
            size,
            pre,
            breaker: std::sync::OnceLock::new(),
        };
        let info = match self.invoke(&provisional, Call::Describe, None).await {
            Ok(Reply::Info(info)) => info,
            Ok(_) => unreachable!("describe always replies with info"),
            Err(e) => return Err(LoadError::Describe(e)),
        };
        validate_info(&info)?;
        let config = config_for(&info.name);
        Ok(Arc::new(PluginVersion {
            meta: Arc::new(PluginMeta {
                name: info.name,
                version: info.version,
                digest,
                config,
            }),
            capabilities: info.capabilities,
            ..provisional
        }))
    }

    /// Read and [`load`](Self::load) a component file.
    pub async fn load_file(
        &self,
        path: &std::path::Path,
        config_for: impl FnOnce(&str) -> BTreeMap<String, String>,
    ) -> Result<Arc<PluginVersion>, LoadError> {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|source| LoadError::Io {
                path: path.display().to_string(),
                source,
            })?;
        self.load(bytes, config_for).await
    }

    /// Run the plugin's `describe`.
    pub async fn describe(&self, plugin: &PluginVersion) -> Result<PluginInfo, InvokeError> {
        match self.invoke(plugin, Call::Describe, None).await? {
            Reply::Info(info) => Ok(info),
            _ => unreachable!("describe always replies with info"),
        }
    }

    /// Validate and price an order. `deadline` can only shorten the configured budget.
    pub async fn place_order(
        &self,
        plugin: &PluginVersion,
        request: &OrderRequest,
        deadline: Option<Instant>,
    ) -> Result<PricedOrder, InvokeError> {
        match self
            .invoke(plugin, Call::PlaceOrder(request), deadline)
            .await?
        {
            Reply::Priced(r) => r.map_err(InvokeError::Guest),
            _ => unreachable!("place-order always replies with a priced order"),
        }
    }

    /// Decide the status `order` moves to on `event`.
    pub async fn transition(
        &self,
        plugin: &PluginVersion,
        order: &OrderSnapshot,
        event: OrderEvent,
        deadline: Option<Instant>,
    ) -> Result<OrderStatus, InvokeError> {
        match self
            .invoke(plugin, Call::Transition(order, event), deadline)
            .await?
        {
            Reply::Status(r) => r.map_err(InvokeError::Guest),
            _ => unreachable!("transition always replies with a status"),
        }
    }

    /// The circuit breakers of plugin versions, keyed `plugin:<name>@<version>`. A version
    /// whose recent calls mostly trapped or ran out of budget is refused for the open period
    /// with [`InvokeError::Instantiate`] (`PLUGIN_UNAVAILABLE`, retryable) instead of being
    /// run; `describe` (admission) is never refused. Guest errors are healthy answers.
    pub fn plugin_breakers(&self) -> &crate::policy::circuit_breaker::BreakerSet {
        &self.inner.plugin_breakers
    }

    /// Invocations currently running.
    pub fn in_flight(&self) -> usize {
        self.inner.tracker.len()
    }

    /// Wait until no invocation is running, up to `timeout`; true when drained.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.inner.tracker.close();
        let drained = tokio::time::timeout(timeout, self.inner.tracker.wait())
            .await
            .is_ok();
        self.inner.tracker.reopen();
        drained
    }

    /// Interrupt every running and future invocation with [`InvokeError::Interrupted`]
    /// (used at the end of a shutdown drain).
    pub fn interrupt_all(&self) {
        self.inner.interrupt.cancel();
    }

    async fn invoke(
        &self,
        plugin: &PluginVersion,
        call: Call<'_>,
        deadline: Option<Instant>,
    ) -> Result<Reply, InvokeError> {
        let inner = &*self.inner;
        let _token = inner.tracker.token();
        let meta = &plugin.meta;
        let function = call.name();
        let started = Instant::now();
        let budget_end = started + inner.config.budget.timeout;
        let deadline = deadline.map_or(budget_end, |d| d.min(budget_end));

        let span = tracing::info_span!(
            "plugin.invoke",
            plugin.name = %meta.name,
            plugin.version = %meta.version,
            plugin.digest = %meta.digest,
            plugin.function = function,
            outcome = Empty,
            trap.kind = Empty,
            instantiate_us = Empty,
            duration_us = Empty,
            otel.status_code = Empty,
        );
        let labels = [
            KeyValue::new("plugin.name", meta.name.clone()),
            KeyValue::new("plugin.version", meta.version.clone()),
            KeyValue::new("plugin.function", function),
        ];
        inner.metrics.in_flight.add(1, &labels);

        // Admission (`describe`) is never refused; every other call asks the version's breaker.
        let permit = match call {
            Call::Describe => None,
            _ => Some(
                plugin
                    .breaker
                    .get_or_init(|| {
                        inner
                            .plugin_breakers
                            .get(&format!("plugin:{}@{}", meta.name, meta.version))
                    })
                    .try_acquire(),
            ),
        };
        let state = InvocationState::new(
            &inner.config.budget,
            meta.clone(),
            inner.catalog.clone(),
            inner.config.catalog_timeout,
            deadline,
        );
        let (stdout, stderr) = (state.stdout.clone(), state.stderr.clone());
        let work = self.run(plugin, call, state, deadline, &labels);
        let result = match &permit {
            Some(Err(open)) => Err(InvokeError::CircuitOpen {
                retry_after: open.retry_after,
            }),
            _ => {
                async {
                    tokio::select! {
                        biased;
                        () = inner.interrupt.cancelled() => Err(InvokeError::Interrupted),
                        r = tokio::time::timeout_at(deadline, work) => {
                            r.unwrap_or(Err(InvokeError::Budget(BudgetKind::WallClock)))
                        }
                    }
                }
                .instrument(span.clone())
                .await
            }
        };
        if let Some(Ok(permit)) = permit {
            permit.record(Some(matches!(
                &result,
                Err(InvokeError::Trap { .. } | InvokeError::Budget(_))
            )));
        }

        let elapsed = started.elapsed();
        inner.metrics.in_flight.add(-1, &labels);
        let _enter = span.enter();
        emit_stdio("stdout", &stdout);
        emit_stdio("stderr", &stderr);
        let outcome = match &result {
            Ok(Reply::Priced(Err(e)) | Reply::Status(Err(e))) => error::guest_error_tag(e),
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        span.record("outcome", outcome);
        span.record("duration_us", elapsed.as_micros() as u64);
        let mut attrs = labels.to_vec();
        attrs.push(KeyValue::new("outcome", outcome));
        inner.metrics.invocations.add(1, &attrs);
        inner
            .metrics
            .call_duration
            .record(elapsed.as_secs_f64(), &attrs);
        if let Err(e) = &result {
            let kind = match e {
                InvokeError::Trap { kind, .. } => Some(kind.as_str()),
                InvokeError::Budget(b) => Some(b.as_str()),
                _ => None,
            };
            if let Some(kind) = kind {
                span.record("trap.kind", kind);
                let mut attrs = labels.to_vec();
                attrs.push(KeyValue::new("trap.kind", kind));
                inner.metrics.traps.add(1, &attrs);
            }
            span.record("otel.status_code", "ERROR");
            crate::telemetry::record_exception(&span, e.outcome(), e);
            match e {
                InvokeError::Trap { detail, .. } | InvokeError::Instantiate { detail } => {
                    tracing::warn!(error = %e, detail = %detail, "plugin invocation failed");
                }
                // Refused without running: the breaker's state change was logged once.
                InvokeError::CircuitOpen { .. } => {
                    tracing::debug!(error = %e, "plugin invocation refused")
                }
                _ => tracing::warn!(error = %e, "plugin invocation failed"),
            }
        }
        result
    }

    async fn run(
        &self,
        plugin: &PluginVersion,
        call: Call<'_>,
        state: InvocationState,
        deadline: Instant,
        labels: &[KeyValue],
    ) -> Result<Reply, InvokeError> {
        let inner = &*self.inner;
        let mut store = Store::new(&inner.engine, state);
        store.limiter(|s| &mut s.limiter);
        let tick = inner.config.epoch_tick.as_nanos().max(1);
        let ticks = deadline
            .saturating_duration_since(Instant::now())
            .as_nanos()
            .div_ceil(tick)
            + 1;
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
        store.epoch_deadline_trap();
        if let Some(fuel) = inner.config.budget.fuel {
            store.set_fuel(fuel).map_err(|e| InvokeError::Instantiate {
                detail: format!("{e:#}"),
            })?;
        }

        let t0 = Instant::now();
        let instance = match plugin.pre.instantiate_async(&mut store).await {
            Ok(i) => i,
            Err(e) => {
                return Err(match e.downcast_ref::<Trap>() {
                    Some(_) => classify(&store, e),
                    None => InvokeError::Instantiate {
                        detail: format!("{e:#}"),
                    },
                });
            }
        };
        let instantiate = t0.elapsed();
        tracing::Span::current().record("instantiate_us", instantiate.as_micros() as u64);
        inner
            .metrics
            .instantiate_duration
            .record(instantiate.as_secs_f64(), labels);

        let reply = match call {
            Call::Describe => instance.call_describe(&mut store).await.map(Reply::Info),
            Call::PlaceOrder(req) => instance
                .call_place_order(&mut store, req)
                .await
                .map(Reply::Priced),
            Call::Transition(order, event) => instance
                .call_transition(&mut store, order, event)
                .await
                .map(Reply::Status),
        };
        reply.map_err(|e| classify(&store, e))
    }
}

/// Turn a wasmtime error from a call into a typed [`InvokeError`], preferring the limits the
/// host itself recorded over the trap code they caused.
fn classify(store: &Store<InvocationState>, err: wasmtime::Error) -> InvokeError {
    let hits = store.data().limiter.hits;
    if hits.memory {
        return InvokeError::Budget(BudgetKind::Memory);
    }
    if hits.table {
        return InvokeError::Budget(BudgetKind::Table);
    }
    if hits.log {
        return InvokeError::Budget(BudgetKind::Log);
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => InvokeError::Budget(BudgetKind::Cpu),
        Some(Trap::OutOfFuel) => InvokeError::Budget(BudgetKind::Fuel),
        Some(trap) => InvokeError::Trap {
            kind: TrapKind::from_trap(*trap),
            detail: format!("{err:?}"),
        },
        None => InvokeError::Trap {
            kind: TrapKind::Host,
            detail: format!("{err:?}"),
        },
    }
}

fn emit_stdio(stream: &'static str, out: &output::CapturedOutput) {
    let (bytes, dropped) = out.take();
    if bytes.is_empty() && dropped == 0 {
        return;
    }
    for line in String::from_utf8_lossy(&bytes).lines() {
        tracing::info!(target: "weir::plugin", stream, "{line}");
    }
    if dropped > 0 {
        tracing::warn!(target: "weir::plugin", stream, dropped_bytes = dropped, "plugin output truncated");
    }
}

/// The preamble of a binary: magic, then version and layer (layer 1 = component).
fn is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [1, 0]
}

fn is_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0]
}

fn validate_info(info: &PluginInfo) -> Result<(), LoadError> {
    let name_ok = !info.name.is_empty()
        && info.name.len() <= 64
        && info
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !name_ok {
        return Err(LoadError::InvalidInfo(format!(
            "name {:?} must be 1-64 characters of a-z, 0-9 and '-'",
            info.name
        )));
    }
    if info.version.is_empty() || info.version.len() > 64 {
        return Err(LoadError::InvalidInfo(format!(
            "version {:?} must be 1-64 characters",
            info.version
        )));
    }
    Ok(())
}

fn spawn_epoch_ticker(
    engine: &Engine,
    tick: Duration,
    stop: Arc<AtomicBool>,
) -> Result<(), EngineError> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("weir-epoch".to_owned())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .map(|_| ())
        .map_err(|e| EngineError(format!("cannot start the epoch ticker: {e}")))
}
