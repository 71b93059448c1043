//! The plugin runtime: compiles components, admits them, invokes them under a budget, and
//! implements the core's order decider with them.
//!
//! # Layout
//! - `mod.rs` (this file): [`Runtime`] (the engine, admission, typed calls, drain) and its
//!   configuration.
//! - `invoke`: one invocation, in small steps (breaker, span, fresh instance under the
//!   budget, classification, metrics, guest output).
//! - [`decider`]: [`PluginDecider`], the core's `OrderDecider` port served by the active
//!   version of a plugin.
//! - [`limits`]: the per-call [`Budget`] and the memory/table limiter.
//! - [`state`]: the store data of one invocation (a fresh one per call).
//! - [`output`]: bounded capture of guest stdout/stderr.
//! - [`registry`]: loaded versions by digest and the active slot of each plugin name
//!   (stable, canary, shadow; sticky routing).
//! - [`releases`]: the plugin lifecycle: admission of uploads, releases applied from the
//!   database on every replica, shadow comparisons, automatic canary rollback.
//! - [`artifacts`]: the compiled-artifact cache in the data directory.
//! - [`check`]: `weir plugin check`.
//! - `parts`: the steps of one invocation one at a time, for the split benchmark.
//! - [`watch`]: `weir serve --plugin FILE --watch`, the plugin author's dev loop: the file
//!   admitted like an upload and released as stable whenever it changes and settles.
//! - [`error`]: [`LoadError`], [`EngineError`] and trap classification; invocations fail with
//!   the core's `DecideError` ([`InvokeError`]).
//!
//! # One invocation
//! A fresh instance is made from the version's pre-instantiated component (pooling allocator,
//! copy-on-write memory images) in a fresh [`wasmtime::Store`]. The call runs under one
//! budget: a wall-clock deadline (tokio), an epoch deadline derived from it so a guest
//! spinning in `loop {}` is interrupted, memory and table limits, optional fuel, and log and
//! stdio budgets. Whatever happens the store and instance are dropped afterwards: a trapped
//! instance is never reused. Traps and timeouts are reported, never retried here.
//!
//! # Where a call runs
//! Plugin code runs on its own threads ([`RuntimeConfig::threads`]), so a plugin at its full
//! CPU budget cannot starve the server's. With [`RuntimeConfig::inline_calls`] (the default)
//! a `place-order` or `transition` call (a request's, an event's) may first get one slice on
//! the server thread that asked for it: one poll, which ends when the call finishes (a fresh
//! call usually does, in microseconds), when it reaches the next epoch tick (the deadline
//! callback yields there), or when it waits on a dependency. Only an unfinished call then moves to the plugin threads. That saves the two
//! thread wake-ups of a hand-off (BENCHMARKS.md, "Inline calls"), which is what a lightly
//! loaded server waits on. It is only done while no more connections are on a server thread
//! or woken and waiting for one than the server has worker threads
//! ([`Runtime::watch_server_load`]): under more load the hand-off buys parallelism, and
//! every call goes to the plugin threads. Requests waiting on the database or on a plugin
//! thread do not count: they hold no server thread. The price is that a server
//! thread runs plugin code during the slice: guest code up to the next tick, plus host work
//! a tick cannot interrupt (instantiation, copying arguments and results), caught only
//! afterwards. A slice that held its thread for a fifth of a tick or more (wall clock) is an
//! overrun. A lone overrun is forgiven: the wall clock also counts time the thread did not
//! run (the kernel gave its core to another thread), and a server on a shared machine sees
//! such slices now and then whatever the plugin does (BENCHMARKS.md, "Overruns the plugin
//! did not cause"; the thread's CPU time would tell them apart, at a system call per call). An
//! overrun within [`INLINE_OVERRUN_WINDOW`] of the version's previous one sends the version
//! to the plugin threads from the start for [`INLINE_OFFLOAD`]. So each inline call holds its
//! thread under a fifth of a tick, or about a tick: twice when a version first overruns, and
//! then at most once per second per version while it keeps overrunning; a plugin that stays
//! just under a fifth of a tick on every call is never offloaded, and holds that much per
//! call while the server is not busy. Admission (`describe`) and shadow calls never start
//! inline.

pub mod artifacts;
pub mod cases;
pub mod check;
pub mod decider;
pub mod error;
mod invoke;
pub use invoke::plugin_span;
pub mod limits;
pub mod output;
#[doc(hidden)]
pub mod parts;
pub mod registry;
pub mod releases;
pub mod state;
pub mod wasi;
pub mod watch;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use weir_core::domain::{OrderEvent, OrderRequest, OrderSnapshot, OrderStatus, PricedOrder};
use weir_core::ports::Catalog;

pub use crate::world::bindings::{Capability, PluginInfo};
pub use artifacts::{ArtifactCache, CacheOutcome};
pub use decider::PluginDecider;
pub use error::{BudgetKind, EngineError, InvokeError, LoadError};
pub use limits::Budget;
pub use registry::{PluginMeta, PluginVersion, Registry, RegistryError, Role, Route, Slot};
pub use state::InvocationState;
pub use weir_core::ports::TrapKind;

use crate::capabilities::{Granted, Imports};
use crate::lifecycle::Interruptible;
use crate::policy::circuit_breaker::BreakerSet;
use crate::support::{InvalidKey, ensure};
use crate::world::bindings;

/// Default of [`RuntimeConfig::keep_resident_bytes`] where the kernel offers `PAGEMAP_SCAN`
/// (chosen by the `invoke` benchmark, BENCHMARKS.md: a fresh call takes no page faults and
/// half the time). Without `PAGEMAP_SCAN` the default is `0`: the lowest megabyte would be
/// reset byte by byte after every call whether touched or not.
pub const DEFAULT_KEEP_RESIDENT: usize = 1 << 20;

/// [`RuntimeConfig::keep_resident_bytes`] when not configured.
fn default_keep_resident() -> usize {
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        DEFAULT_KEEP_RESIDENT
    } else {
        0
    }
}

/// How much work wants the server's threads now: connections on a thread or waiting for one
/// ([`Runtime::watch_server_load`]).
pub type ServerLoad = Arc<dyn Fn() -> usize + Send + Sync>;

/// Plugin calls by where they ran, since start ([`Runtime::placements`], `/infoz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Placements {
    /// Wholly on the server thread that asked for it (`runtime.inline_calls`).
    pub inline: u64,
    /// A first slice there, the rest on the plugin threads (it reached an epoch tick or
    /// waited on a dependency).
    pub moved: u64,
    /// On the plugin threads from the start.
    pub plugin_threads: u64,
}

/// How one version's calls used their inline slice (`runtime.inline_calls`).
#[derive(Debug, Default)]
pub struct InlineStats {
    /// Until when (microseconds on the runtime's clock) calls skip the inline slice, after
    /// one overran it; 0: never overran.
    offloaded_until: std::sync::atomic::AtomicU64,
    /// Calls that started inline.
    started: std::sync::atomic::AtomicU64,
    /// Inline slices that held their server thread a fifth of an epoch tick or more.
    overruns: std::sync::atomic::AtomicU64,
    /// When (microseconds on the runtime's clock) the latest overrun ended; 0: none yet.
    last_overrun: std::sync::atomic::AtomicU64,
}

/// [`InlineStats`] as read now ([`Runtime::inline_of`], `/infoz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct InlineState {
    /// Calls that started inline.
    pub started: u64,
    /// Inline slices that held their server thread a fifth of an epoch tick or more.
    pub overruns: u64,
    /// Whether calls run on the plugin threads from the start now, after overruns.
    pub offloaded: bool,
}

/// How long a version whose inline slices overran ([`RuntimeConfig::inline_calls`]) runs on
/// the plugin threads from the start of every call.
pub const INLINE_OFFLOAD: Duration = Duration::from_secs(1);

/// An overrun offloads its version only when the version's previous one ended at most this
/// long before: a slice stretched once by something other than the plugin (most likely the
/// kernel preempting the server thread) is forgiven, a version that overruns again is not.
/// Twice [`INLINE_OFFLOAD`], so a version that still overruns when its offload ends is
/// offloaded again by its first overrun.
pub const INLINE_OVERRUN_WINDOW: Duration = INLINE_OFFLOAD.saturating_mul(2);

/// Whether an overrun at `now` offloads its version, given when the version's previous
/// overrun was (`0`: none); times in microseconds on the runtime's clock.
pub(crate) fn overrun_offloads(previous: u64, now: u64) -> bool {
    previous != 0 && now.saturating_sub(previous) <= INLINE_OVERRUN_WINDOW.as_micros() as u64
}

/// Configuration of the plugin runtime (`[runtime]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Budget of every invocation.
    pub budget: Budget,
    /// Instances that may exist at once; sizes the pooling allocator and the host's instance
    /// admission. A call beyond it waits for a free instance (see `instance_wait`).
    pub max_instances: u32,
    /// Longest a call waits for a free instance when all `max_instances` are busy; the
    /// caller's deadline (the request's, the consumer's) cuts it shorter. Past it the call is
    /// refused with [`InvokeError::PoolExhausted`] (`503 PLUGIN_BUSY`) without running.
    /// Shadow calls never wait (they are skipped). `0` refuses at once.
    #[serde(with = "crate::support::duration_ms", rename = "instance_wait_ms")]
    pub instance_wait: Duration,
    /// Epoch tick: the granularity of CPU interruption.
    #[serde(with = "crate::support::duration_ms", rename = "epoch_tick_ms")]
    pub epoch_tick: Duration,
    /// Upper bound of one catalog lookup made by a plugin.
    #[serde(with = "crate::support::duration_ms", rename = "catalog_timeout_ms")]
    pub catalog_timeout: Duration,
    /// Upper bound of compiling one component at admission; a pathological component is
    /// refused at the `compile` stage after it (its compile thread is abandoned).
    #[serde(with = "crate::support::duration_ms", rename = "compile_timeout_ms")]
    pub compile_timeout: Duration,
    /// Threads that run plugin code. A call's first slice may run on the thread that asked
    /// for it (see `inline_calls`); everything else runs on this pool, never on the server's
    /// async workers, so plugins using their whole CPU budget cannot starve the host's own
    /// work (health checks, database and cache calls, other requests).
    pub threads: usize,
    /// Whether a `place-order` or `transition` call (a request's, or the event consumer's)
    /// may start on the server thread that asked for it, sparing the two thread wake-ups of
    /// a hand-off, while no more connections want a server thread (on one, or woken and
    /// waiting for one) than the server has worker threads.
    /// That first slice ends at the next epoch tick at the
    /// latest: a call still running then, or waiting on a dependency, moves to the plugin
    /// threads. A version whose slices held a server thread for a fifth of a tick or more
    /// twice within [`INLINE_OVERRUN_WINDOW`] runs on the plugin threads from the start for
    /// the next second ([`INLINE_OFFLOAD`]).
    /// Admission (`describe`) and shadow calls never start inline. `false`: every call runs
    /// on the plugin threads from the start.
    pub inline_calls: bool,
    /// Bytes of each pooled linear memory (and table) reset in place when an instance is
    /// torn down, instead of being handed back to the kernel with `madvise`: the next call
    /// in that slot then takes no page faults for them. With `PAGEMAP_SCAN` (Linux 6.7 and
    /// later; `/infoz` says whether it is active) only the pages the call touched are reset;
    /// without it the lowest bytes are reset whether touched or not. Either way the next
    /// call sees the memory's initial contents, as with `0`. The cost is resident memory:
    /// up to this much per warm pool slot. `0` hands every page back.
    pub keep_resident_bytes: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            budget: Budget::default(),
            max_instances: 128,
            instance_wait: Duration::from_millis(1000),
            epoch_tick: Duration::from_millis(5),
            catalog_timeout: Duration::from_millis(200),
            compile_timeout: Duration::from_secs(60),
            threads: std::thread::available_parallelism().map_or(2, usize::from),
            inline_calls: true,
            keep_resident_bytes: default_keep_resident(),
        }
    }
}

impl RuntimeConfig {
    /// Check values that parse but cannot work.
    pub fn validate(&self) -> Result<(), InvalidKey> {
        let b = &self.budget;
        ensure(
            !b.timeout.is_zero(),
            "runtime.budget.timeout_ms",
            "must be positive",
        )?;
        ensure(
            b.memory_bytes >= (1 << 20),
            "runtime.budget.memory_bytes",
            "must be at least 1 MiB",
        )?;
        ensure(
            b.copy_bytes >= (64 << 10),
            "runtime.budget.copy_bytes",
            "must be at least 64 KiB",
        )?;
        ensure(
            (1..=1024).contains(&b.core_instances),
            "runtime.budget.core_instances",
            "must be between 1 and 1024",
        )?;
        // The pool keeps a slot for every core instance of every instance.
        ensure(
            u64::from(self.max_instances) * u64::from(b.core_instances) <= 1 << 20,
            "runtime.budget.core_instances",
            "times runtime.max_instances must be at most 1048576",
        )?;
        ensure(
            self.keep_resident_bytes <= b.memory_bytes,
            "runtime.keep_resident_bytes",
            "must not be above runtime.budget.memory_bytes",
        )?;
        ensure(
            self.threads > 0 && self.threads <= 256,
            "runtime.threads",
            "must be between 1 and 256",
        )?;
        ensure(
            !self.epoch_tick.is_zero() && self.epoch_tick <= b.timeout,
            "runtime.epoch_tick_ms",
            "must be positive and not above runtime.budget.timeout_ms",
        )?;
        ensure(
            self.max_instances > 0 && self.max_instances <= 65_536,
            "runtime.max_instances",
            "must be between 1 and 65536",
        )?;
        ensure(
            self.instance_wait <= Duration::from_secs(60),
            "runtime.instance_wait_ms",
            "must be at most 60000",
        )?;
        ensure(
            !self.compile_timeout.is_zero(),
            "runtime.compile_timeout_ms",
            "must be positive",
        )
    }
}

struct Inner {
    engine: Engine,
    linker: Linker<InvocationState>,
    config: RuntimeConfig,
    catalog: Arc<dyn Catalog>,
    tracker: TaskTracker,
    interrupt: CancellationToken,
    ticker_stop: Arc<AtomicBool>,
    /// The runtime's clock origin, for per-version times kept in atomics.
    born: std::time::Instant,
    /// The server's load (connections on a server thread or waiting for one) and worker
    /// threads, once it has told them ([`Runtime::watch_server_load`]).
    server_load: std::sync::OnceLock<(ServerLoad, usize)>,
    metrics: invoke::Metrics,
    /// Instance admission: one permit per pooled instance (`max_instances`), taken before
    /// instantiating and released after the store (and its pool slot) is dropped.
    instances: Arc<tokio::sync::Semaphore>,
    /// The threads plugin code runs on.
    plugin_threads: PluginThreads,
    /// One breaker per plugin version (see [`Runtime::plugin_breakers`]).
    plugin_breakers: BreakerSet,
    artifacts: ArtifactCache,
    /// The running case recording, if any ([`cases`]).
    recording: arc_swap::ArcSwapOption<cases::Recorder>,
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
    /// Build the engine, the linker with the host capabilities, and start the epoch ticker;
    /// no compiled-artifact cache.
    pub fn new(config: RuntimeConfig, catalog: Arc<dyn Catalog>) -> Result<Self, EngineError> {
        Self::with_artifacts(config, catalog, None)
    }

    /// [`Runtime::new`] with the compiled-artifact cache in `artifact_dir`.
    pub fn with_artifacts(
        config: RuntimeConfig,
        catalog: Arc<dyn Catalog>,
        artifact_dir: Option<std::path::PathBuf>,
    ) -> Result<Self, EngineError> {
        let engine = engine(&config)?;
        let permits = config.max_instances.max(1) as usize;
        let artifacts = ArtifactCache::new(&engine, artifact_dir);
        let mut linker = Linker::<InvocationState>::new(&engine);
        wasi::add_to_linker(&mut linker).map_err(|e| EngineError(format!("{e:#}")))?;
        let plugin_threads = PluginThreads::new(config.threads)?;
        bindings::Plugin::add_to_linker::<_, HasSelf<Imports>>(&mut linker, |s| &mut s.imports)
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
                born: std::time::Instant::now(),
                server_load: std::sync::OnceLock::new(),
                metrics: invoke::Metrics::new(),
                instances: Arc::new(tokio::sync::Semaphore::new(permits)),
                plugin_threads,
                plugin_breakers: BreakerSet::default(),
                artifacts,
                recording: arc_swap::ArcSwapOption::empty(),
            }),
        })
    }

    /// The runtime's configuration.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// How torn-down instances' memory is reset, for `/infoz`.
    pub fn memory_reset(&self) -> MemoryReset {
        MemoryReset {
            keep_resident_bytes: self.inner.config.keep_resident_bytes,
            pagemap_scan: PoolingAllocationConfig::is_pagemap_scan_available(),
        }
    }

    /// Compile and admit a component: it must be a component, import only allowed interfaces,
    /// match an accepted `weir:orders` contract version (`world::contract`), implement the
    /// world, and pass its `describe` self-test. `config_for` supplies the configuration for
    /// the plugin name the component reports.
    pub async fn load(
        &self,
        bytes: Vec<u8>,
        config_for: impl FnOnce(&str) -> BTreeMap<String, String>,
    ) -> Result<Arc<PluginVersion>, LoadError> {
        if !is_component(&bytes) {
            return Err(LoadError::NotAComponent(if is_core_module(&bytes) {
                "this is a core WebAssembly module; build the plugin for wasm32-wasip2, or \
                 for wasm32-unknown-unknown with the linker `wasm-component-ld` (or wrap it \
                 with `wasm-tools component new`)"
                    .to_owned()
            } else {
                "the file does not start with the WebAssembly magic bytes".to_owned()
            }));
        }
        let digest = hex::encode(Sha256::digest(&bytes));
        let size = bytes.len();
        let inner = self.inner.clone();
        let key = digest.clone();
        // Off the async threads; bounded: a pathological compile is abandoned (its thread
        // finishes on its own) and the component refused.
        let compile = tokio::task::spawn_blocking(move || {
            inner.artifacts.load(&inner.engine, &key, || {
                Component::new(&inner.engine, &bytes)
            })
        });
        let timeout = self.inner.config.compile_timeout;
        let (component, artifact) = tokio::time::timeout(timeout, compile)
            .await
            .map_err(|_| LoadError::CompileTimeout(timeout))?
            .map_err(|e| LoadError::Invalid(format!("compilation task failed: {e}")))?
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;

        let ty = component.component_type();
        let imports: Vec<String> = ty
            .imports(&self.inner.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        wasi::check_imports(imports.iter().map(String::as_str))
            .map_err(|import| LoadError::ImportNotAllowed(printable(&import)))?;
        let exports = ty
            .exports(&self.inner.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        // Before instantiating: name precisely what differs from the contract.
        let contract = crate::world::contract::check(&self.inner.engine, &ty);
        if !contract.is_compatible() {
            return Err(LoadError::Contract(Box::new(contract)));
        }

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
            artifact,
            pre,
            breaker: std::sync::OnceLock::new(),
            labels: std::sync::OnceLock::new(),
            call_metrics: std::sync::RwLock::default(),
            inline: InlineStats::default(),
        };
        let info = self
            .invoke(&provisional, Role::Stable, invoke::Describe, None)
            .await
            .map_err(LoadError::Describe)?;
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
            // Made from the admitted identity on first use, not the provisional one.
            labels: std::sync::OnceLock::new(),
            call_metrics: std::sync::RwLock::default(),
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
        self.invoke(plugin, Role::Stable, invoke::Describe, None)
            .await
    }

    /// Validate and price an order. `deadline` can only shorten the configured budget.
    pub async fn place_order(
        &self,
        plugin: &PluginVersion,
        request: &OrderRequest,
        deadline: Option<Instant>,
    ) -> Result<PricedOrder, InvokeError> {
        self.place_order_as(plugin, Role::Stable, request, deadline)
            .await
    }

    /// [`Runtime::place_order`] by a version in `role` (a span attribute and metric label).
    pub async fn place_order_as(
        &self,
        plugin: &PluginVersion,
        role: Role,
        request: &OrderRequest,
        deadline: Option<Instant>,
    ) -> Result<PricedOrder, InvokeError> {
        let call = invoke::PlaceOrder {
            wire: bindings::OrderRequest::from(request),
            request: request.clone(),
        };
        self.invoke(plugin, role, call, deadline)
            .await?
            .map_err(InvokeError::Refused)
    }

    /// Decide the status `order` moves to on `event`.
    pub async fn transition(
        &self,
        plugin: &PluginVersion,
        order: &OrderSnapshot,
        event: OrderEvent,
        deadline: Option<Instant>,
    ) -> Result<OrderStatus, InvokeError> {
        self.transition_as(plugin, Role::Stable, order, event, deadline)
            .await
    }

    /// [`Runtime::transition`] by a version in `role`.
    pub async fn transition_as(
        &self,
        plugin: &PluginVersion,
        role: Role,
        order: &OrderSnapshot,
        event: OrderEvent,
        deadline: Option<Instant>,
    ) -> Result<OrderStatus, InvokeError> {
        let call = invoke::Transition {
            wire: bindings::OrderSnapshot::from(order),
            order: self
                .recording_active()
                .then(|| cases::CaseOrder::from(order)),
            from: order.status,
            event,
        };
        self.invoke(plugin, role, call, deadline)
            .await?
            .map_err(InvokeError::Refused)
    }

    /// The circuit breakers of plugin versions, keyed `plugin:<name>@<version>`. A version
    /// whose recent calls mostly trapped or ran out of budget is refused for the open period
    /// with [`InvokeError::CircuitOpen`] (`PLUGIN_UNAVAILABLE`, retryable) instead of being
    /// run; `describe` (admission) is never refused. Guest errors are healthy answers.
    pub fn plugin_breakers(&self) -> &BreakerSet {
        &self.inner.plugin_breakers
    }

    /// Instances in use now (admitted calls holding a pool slot), at most `max_instances`.
    pub fn instances_in_use(&self) -> usize {
        usize::try_from(self.inner.metrics.in_use()).unwrap_or(0)
    }

    /// Calls waiting for a free instance now.
    pub fn instances_waiting(&self) -> usize {
        usize::try_from(self.inner.metrics.waiting()).unwrap_or(0)
    }

    /// Let inline calls ([`RuntimeConfig::inline_calls`]) see how busy the server is: a call
    /// starts inline only while `load()` is at most `workers`, the server's worker
    /// threads; under more load every call goes to the plugin threads and the two pools work
    /// in parallel (BENCHMARKS.md, "Inline calls"). `weir serve` passes the connections of
    /// either listener that want a server thread: being polled on one (the asking
    /// request's own among them) or woken and waiting for one. With one worker, then, a
    /// request's call starts inline while no other connection waits; requests in flight
    /// that wait on the database or on a plugin thread hold no thread and do not count
    /// (BENCHMARKS.md, "Requests in flight no longer count"). The event consumer's calls
    /// are not counted. Without it (a runtime used on its own, as in tests and benchmarks)
    /// calls start inline whenever allowed. The first call wins.
    pub fn watch_server_load(&self, load: ServerLoad, workers: usize) {
        let _ = self.inner.server_load.set((load, workers));
    }

    /// The server's load as the inline rule reads it ([`Self::watch_server_load`]), if told.
    pub fn server_load(&self) -> Option<usize> {
        self.inner.server_load.get().map(|(load, _)| load())
    }

    /// How `plugin`'s calls used their inline slice, since it was loaded.
    pub fn inline_of(&self, plugin: &PluginVersion) -> InlineState {
        let stats = &plugin.inline;
        InlineState {
            started: stats.started.load(Ordering::Relaxed),
            overruns: stats.overruns.load(Ordering::Relaxed),
            offloaded: stats.offloaded_until.load(Ordering::Relaxed) > self.clock_us(),
        }
    }

    /// Calls by where they ran, since start (`runtime.inline_calls`).
    pub fn placements(&self) -> Placements {
        self.inner.metrics.placements.snapshot()
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
}

#[async_trait::async_trait]
impl Interruptible for Runtime {
    fn in_flight(&self) -> usize {
        Runtime::in_flight(self)
    }

    async fn drain(&self, timeout: Duration) -> bool {
        Runtime::drain(self, timeout).await
    }

    fn interrupt_all(&self) {
        Runtime::interrupt_all(self);
    }
}

/// The engine: pooling allocator sized from `max_instances`, copy-on-write memory images,
/// epoch interruption, fuel when budgeted.
fn engine(config: &RuntimeConfig) -> Result<Engine, EngineError> {
    let budget = &config.budget;
    let mut pool = PoolingAllocationConfig::default();
    let n = config.max_instances.max(1);
    pool.total_component_instances(n)
        // Room for `n` instances of the largest component admitted.
        .total_core_instances(n.saturating_mul(budget.core_instances))
        .total_memories(n.saturating_mul(2))
        .total_tables(n.saturating_mul(8))
        .total_stacks(n)
        .max_memory_size(budget.memory_bytes.next_multiple_of(65536))
        .table_elements(budget.table_elements)
        .max_core_instances_per_component(budget.core_instances)
        .max_memories_per_component(4)
        .max_tables_per_component(32)
        .linear_memory_keep_resident(config.keep_resident_bytes)
        .table_keep_resident(config.keep_resident_bytes)
        .pagemap_scan(wasmtime::Enabled::Auto);

    let mut cfg = wasmtime::Config::new();
    cfg.wasm_component_model(true)
        // Plugins need neither the GC nor the exception-handling proposals; turned off they
        // are no attack surface (several wasmtime advisories are in the GC heap; SECURITY.md).
        .wasm_gc(false)
        .wasm_exceptions(false)
        .epoch_interruption(true)
        .consume_fuel(budget.fuel.is_some())
        .memory_init_cow(true)
        .max_wasm_stack(budget.max_wasm_stack)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&cfg).map_err(|e| EngineError(format!("{e:#}")))
}

/// How the pool resets a torn-down instance's memory (`/infoz` `runtime.memory_reset`).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct MemoryReset {
    /// [`RuntimeConfig::keep_resident_bytes`].
    pub keep_resident_bytes: usize,
    /// Whether the kernel offers `PAGEMAP_SCAN`, so that only touched pages are reset (used
    /// when `keep_resident_bytes` is above zero).
    pub pagemap_scan: bool,
}

/// The preamble of a binary: magic, then version and layer (layer 1 = component).
fn is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [1, 0]
}

fn is_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0]
}

/// `describe`'s answer must be usable as it is in logs, metric labels and a terminal: a name
/// of 1-64 characters of `a-z`, `0-9`, `-`; a semantic version of at most 64 characters
/// (which rules out control characters and spaces); each capability at most once. A refusal
/// quotes the offending value escaped and cut (see [`printable`]).
fn validate_info(info: &PluginInfo) -> Result<(), LoadError> {
    let name_ok = !info.name.is_empty()
        && info.name.len() <= 64
        && info
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !name_ok {
        return Err(LoadError::InvalidInfo(format!(
            "name {} must be 1-64 characters of a-z, 0-9 and '-'",
            printable(&info.name)
        )));
    }
    if info.version.len() > 64 || semver::Version::parse(&info.version).is_err() {
        return Err(LoadError::InvalidInfo(format!(
            "version {} must be a semantic version (e.g. 1.2.0) of at most 64 characters",
            printable(&info.version)
        )));
    }
    if Granted::of(&info.capabilities).len() != info.capabilities.len() {
        return Err(LoadError::InvalidInfo(format!(
            "{} capabilities declared, some more than once",
            info.capabilities.len()
        )));
    }
    Ok(())
}

/// A plugin-supplied value quoted for a log line or a terminal: control characters and
/// quotes escaped, cut after 64 characters with the size of the rest.
pub fn printable(value: &str) -> String {
    const KEEP: usize = 64;
    let mut out = String::from("\"");
    for c in value.chars().take(KEEP) {
        out.extend(c.escape_debug());
    }
    out.push('"');
    let kept: usize = value.chars().take(KEEP).map(char::len_utf8).sum();
    if kept < value.len() {
        out.push_str(&format!(" (+{} more bytes)", value.len() - kept));
    }
    out
}

/// The tokio runtime plugin code runs on, apart from the server's. Shut down in the
/// background when the runtime is dropped (a drop may happen inside async code).
struct PluginThreads {
    handle: tokio::runtime::Handle,
    runtime: Option<tokio::runtime::Runtime>,
}

impl PluginThreads {
    fn new(threads: usize) -> Result<Self, EngineError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("weir-plugin")
            .enable_time()
            .build()
            .map_err(|e| EngineError(format!("cannot start the plugin threads: {e}")))?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(task)
    }
}

impl Drop for PluginThreads {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A first overrun, or one long after the version's previous one, does not offload; one
    /// within the window does, up to and including its end.
    #[test]
    fn only_an_overrun_soon_after_another_offloads() {
        let window = INLINE_OVERRUN_WINDOW.as_micros() as u64;
        assert!(!overrun_offloads(0, 1_500), "a first overrun");
        assert!(overrun_offloads(1_500, 2_700), "a second, 1.2 ms later");
        assert!(
            overrun_offloads(1_500, 1_500 + window),
            "at the window's end"
        );
        assert!(!overrun_offloads(1_500, 1_501 + window), "after it");
        // A version still overrunning when its offload ends is offloaded again at once.
        let offload = INLINE_OFFLOAD.as_micros() as u64;
        assert!(overrun_offloads(1_500, 1_500 + offload + 1));
    }
}
