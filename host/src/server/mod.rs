//! Start-up and the two listeners: the only place that assembles everything.
//!
//! [`Server::start`] opens the store and migrates it, seeds the demo catalog, builds the plugin
//! runtime, admits the built-in reference plugin and any components in `plugins.dir` (a
//! refused one is logged, counted and left out, or stops start-up with `plugins.strict`) and
//! the `--plugin` file (its plugin serves the orders API; with `--watch` the
//! [`crate::runtime::watch::Watcher`] follows it as the `plugins.watch` worker), wires
//! the core's use-cases to their adapters (the traced store, the plugin decider, the events
//! intake gate), binds the API and operations listeners, starts the background workers, and
//! logs one line with the bound addresses. It first reads how the previous run in the data
//! directory ended ([`crate::lifecycle::outcome`]) and, once serving, marks this run as
//! running; [`Server::drain`] records the drain's outcome there. Every start-up failure
//! carries its context chain
//! ("could not open the database at ...: ...: permission denied").
//! [`Server::drain`] hands everything to the shutdown coordinator
//! ([`crate::lifecycle::shutdown::drain`]).
//!
//! # Layout
//! - `mod.rs` (this file): [`Server`], [`AppState`], the wiring.
//! - [`config`]: the full [`config::Config`] and its loading.
//! - [`listener`]: the accept loop of both listeners and its connection limits.

pub mod config;
pub mod listener;
pub mod retention;
pub mod waiting;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use chrono::Utc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use weir_core::app::{OrderService, Ports, ReleaseService, Settings};
use weir_core::domain::Product;
use weir_core::ports::{Detached, Spawner, SystemClock};

use crate::auth::jwt::JwtValidator;
use crate::auth::{AuthMode, Authenticator};
use crate::catalog::CatalogReader;
use crate::events::{ConsumerDeps, EventsHandle};
use crate::http::ApiState;
use crate::lifecycle::{DrainPlan, DrainReport, RunMarker, Shutdown, ShutdownConfig};
use crate::ops::health::RefusedComponent;
use crate::ops::{InfoFacts, OpsState};
use crate::policy::dependency::{Dependencies, Dependency};
use crate::runtime::releases::Releases;
use crate::runtime::watch::{self, ReadError, WatchOptions, Watcher};
use crate::runtime::{LoadError, PluginDecider, Registry, Runtime, Slot};
use crate::storage::{self, Store, StoreOptions, TracedStore};
use config::Config;

/// The small catalog seeded into an empty database so the service is usable at once.
pub fn demo_catalog() -> Vec<Product> {
    let now = Utc::now();
    [
        // Units on hand: placed orders reserve them, so the demo keeps plenty (load runs and
        // benchmarks order cables by the thousand); headphones are out of stock on purpose.
        ("KB-001", "Mechanical keyboard", 8900, 10_000),
        ("MS-002", "Wireless mouse", 2900, 25_000),
        ("MN-003", "27-inch monitor", 27900, 4_000),
        ("CB-004", "USB-C cable", 900, 1_000_000),
        ("HD-005", "Noise-cancelling headphones", 19900, 0),
    ]
    .into_iter()
    .map(|(sku, name, price, stock)| Product {
        sku: sku.to_owned(),
        name: name.to_owned(),
        unit_price: price,
        currency: "EUR".to_owned(),
        stock,
        reserved: 0,
        updated_at: now,
    })
    .collect()
}

/// Everything a running server is made of; tests and drills reach in through it.
#[derive(Clone)]
pub struct AppState {
    /// The database, traced (every call gets its `db.*` span).
    pub store: Arc<dyn Store>,
    /// The plugin engine.
    pub runtime: Runtime,
    /// Loaded plugin versions and active slots.
    pub registry: Arc<Registry>,
    /// The plugin lifecycle (admission, releases, shadows, automatic rollback).
    pub releases: Arc<Releases>,
    /// Validated configuration.
    pub config: Arc<Config>,
    /// The order use-cases, wired to the adapters above.
    pub orders: OrderService,
    /// The broker path (relay, consumer, backpressure), or the embedded default.
    pub events: EventsHandle,
    /// Outbound dependencies: breakers (readiness) and, in test builds, fault hooks.
    pub deps: Arc<Dependencies>,
    /// Readiness latches (draining, in rotation), in-flight requests, background workers.
    pub shutdown: Shutdown,
    /// Components of `plugins.dir` refused at start-up and left out (empty with
    /// `plugins.strict`: a refusal stops start-up).
    pub refused_plugins: Arc<Vec<RefusedComponent>>,
    /// Authentication of the public API (API keys, JWT, open mode).
    pub auth: Authenticator,
    /// The connections of both listeners that want a server thread now (on one, or woken
    /// and waiting for one): the load the inline rule of plugin calls reads.
    pub connections: waiting::Waiting,
}

impl AppState {
    /// The stable version of the orders plugin.
    pub fn orders_plugin(&self) -> Option<Arc<crate::runtime::PluginVersion>> {
        self.registry.pick(&self.config.plugins.orders)
    }
}

/// A running server.
pub struct Server {
    /// Bound API address.
    pub api_addr: SocketAddr,
    /// Bound operations address.
    pub ops_addr: SocketAddr,
    /// Shared state (store, runtime, registry, config, use-cases).
    pub state: AppState,
    listeners: Vec<JoinHandle<()>>,
    marker: Arc<RunMarker>,
}

/// Spawns the core's detached clean-up work on the tokio runtime.
struct TokioSpawner;

impl Spawner for TokioSpawner {
    fn spawn(&self, task: Detached) {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(task);
        }
    }
}

impl Server {
    /// Start everything described in the module doc.
    pub async fn start(mut config: Config) -> anyhow::Result<Self> {
        for warning in config.warnings() {
            tracing::warn!(warning = %warning, "configuration warning");
        }
        // First: instruments created below bind to the global meter provider.
        if let Err(e) = crate::telemetry::metrics::install() {
            tracing::error!(error = %e, "metrics disabled");
        }
        // How the previous run in this data directory ended (exported as a metric).
        let marker = Arc::new(RunMarker::open(&config.data_dir));
        let store = open_store(&config).await?;

        // Catalog reads: cache (optional), then the database, each behind its own
        // dependency stack (timeout, concurrency limit, breaker, retries; see `policy`).
        let policy = &config.policy;
        let deps = Arc::new(Dependencies {
            database: Dependency::new("database", true, policy.database.clone()),
            cache: (!policy.cache.ttl.is_zero())
                .then(|| Dependency::new("cache", false, policy.cache.dependency.clone())),
        });
        let (catalog, cache_kind) = CatalogReader::new(
            store.clone(),
            &deps.database,
            deps.cache.as_ref().map(|d| (d, &policy.cache)),
        )
        .context("could not set up the catalog cache")?;
        tracing::info!(cache = cache_kind, "catalog read path ready");
        let catalog: Arc<dyn weir_core::ports::Catalog> = Arc::new(catalog);
        let runtime = Runtime::with_artifacts(
            config.runtime.clone(),
            catalog.clone(),
            artifact_dir(&config),
        )
        .context("could not build the plugin engine")?;
        runtime
            .plugin_breakers()
            .configure(policy.plugin_breaker.clone());
        let registry = Arc::new(Registry::new());
        let releases = Arc::new(Releases::new(
            runtime.clone(),
            registry.clone(),
            ReleaseService::new(store.clone(), store.clone(), Arc::new(SystemClock)),
            config.plugins.releases.clone(),
            config.plugins.config.clone(),
        ));
        let loaded = load_plugins(&config, &releases).await?;
        let refused_plugins = Arc::new(loaded.refused);
        // `--plugin FILE`: its plugin serves the orders API.
        let plugin_file = match loaded.file {
            Some(file) => {
                if file.name != config.plugins.orders {
                    tracing::info!(
                        plugin = %file.name,
                        configured = %config.plugins.orders,
                        "--plugin: {} serves the orders API instead of plugins.orders",
                        file.name
                    );
                }
                config.plugins.orders = file.name.clone();
                Some(file)
            }
            None => None,
        };
        let config = Arc::new(config);

        let events = match &config.amqp_url {
            Some(url) => EventsHandle::amqp(url.clone(), config.events.clone(), store.clone()),
            None => EventsHandle::default(),
        };
        let orders = OrderService::new(
            Ports {
                orders: store.clone(),
                idempotency: store.clone(),
                inbox: store.clone(),
                outbox: store.clone(),
                products: store.clone(),
                catalog: catalog.clone(),
                decider: decider(&config, &releases, catalog)?,
                intake: Arc::new(events.clone()),
                clock: Arc::new(SystemClock),
                spawner: Arc::new(TokioSpawner),
            },
            Settings {
                lock_ttl: config.idempotency.lock_ttl,
                retention: config.idempotency.retention,
                ..Settings::default()
            },
        );
        let auth = build_authenticator(&config, store.clone()).await?;
        let state = AppState {
            store: store.clone(),
            runtime,
            registry,
            releases: releases.clone(),
            config: config.clone(),
            orders,
            events,
            deps,
            shutdown: Shutdown::new(),
            refused_plugins: refused_plugins.clone(),
            auth,
            connections: waiting::Waiting::new(),
        };
        let (api_addr, ops_addr, listeners) = serve(&state, &marker).await?;
        spawn_jwks_refresh(&state);
        retention::spawn(
            state.shutdown.supervisor(),
            state.store.clone(),
            &state.config.retention,
            retention::Schedule {
                idempotency_retention: state.config.idempotency.retention,
                idempotency_interval: state.config.idempotency.purge_interval,
                broker: state.config.amqp_url.is_some(),
            },
        );
        // Every replica follows the releases in the database (LISTEN on PostgreSQL, polling).
        let listen_url = config
            .database_url
            .clone()
            .filter(|u| storage::backend_of(u.expose()) == Some("postgres"));
        state
            .shutdown
            .supervisor()
            .spawn("plugins.releases", move |ctx| {
                releases.clone().run(listen_url.clone(), ctx)
            });
        if let Some(file) = plugin_file.filter(|f| f.watch) {
            let watcher = Arc::new(Watcher::new(
                file.path,
                file.name,
                state.releases.clone(),
                file.loaded,
                WatchOptions::default(),
                watch::stderr_out(),
            ));
            state
                .shutdown
                .supervisor()
                .spawn("plugins.watch", move |ctx| watcher.clone().run(ctx));
        }
        // Outbox relay, consumer and backpressure monitor (none in the embedded default), as
        // supervised workers: the drain cancels and waits for them with the others.
        crate::events::spawn(
            &state.events,
            store.clone(),
            ConsumerDeps {
                orders: state.orders.clone(),
                deadline: config.http.request_timeout,
                shutdown: state.shutdown.clone(),
            },
            state.shutdown.supervisor(),
        );

        // From here on, an end without a finished drain is reported as `killed` next time
        // (written before the line below, which tells callers the server is up).
        marker.serving();
        tracing::info!(
            api = %api_addr,
            ops = %ops_addr,
            database = store.backend(),
            orders_plugin = %config.plugins.orders,
            plugins_refused = refused_plugins.len(),
            "weir listening on http://{api_addr} (operations on http://{ops_addr})"
        );
        Ok(Self {
            api_addr,
            ops_addr,
            state,
            listeners,
            marker,
        })
    }

    /// The marker that records how this run ends (`main` records a second signal with it).
    pub fn run_marker(&self) -> Arc<RunMarker> {
        self.marker.clone()
    }

    /// The graceful shutdown of [`crate::lifecycle::shutdown`] with the configured pre-stop
    /// delay and drain deadline; call at the first SIGTERM/SIGINT.
    pub async fn drain(self) -> DrainReport {
        let config = self.state.config.shutdown.clone();
        self.drain_with(config).await
    }

    /// The same drain without a pre-stop delay and with `grace` as its deadline (tests).
    pub async fn shutdown(self, grace: std::time::Duration) -> DrainReport {
        let config = ShutdownConfig {
            pre_stop_delay: std::time::Duration::ZERO,
            drain_deadline: grace,
            ..self.state.config.shutdown.clone()
        };
        self.drain_with(config).await
    }

    async fn drain_with(self, config: ShutdownConfig) -> DrainReport {
        let store = self.state.store.clone();
        let plan = DrainPlan {
            config,
            listeners: self.listeners,
            invocations: Arc::new(self.state.runtime.clone()),
            close: Box::pin(async move { store.close().await }),
        };
        let report = crate::lifecycle::shutdown::drain(&self.state.shutdown, plan).await;
        self.marker.drained(&report);
        report
    }
}

/// The order decider `plugins.decider` names: the plugin's components, or (benchmark builds)
/// the reference logic linked natively.
fn decider(
    config: &Config,
    releases: &Arc<Releases>,
    catalog: Arc<dyn weir_core::ports::Catalog>,
) -> anyhow::Result<Arc<dyn weir_core::ports::OrderDecider>> {
    match config.plugins.decider {
        config::DeciderKind::Component => Ok(Arc::new(PluginDecider::new(
            releases.clone(),
            config.plugins.orders.clone(),
        ))),
        #[cfg(feature = "native-decider")]
        config::DeciderKind::Native => {
            tracing::warn!(
                plugin = %config.plugins.orders,
                "plugins.decider = \"native\": orders are decided by the reference plugin's \
                 logic linked natively, outside the sandbox (benchmarks only)"
            );
            Ok(Arc::new(crate::native::NativeDecider::new(
                releases.registry().clone(),
                config.plugins.orders.clone(),
                catalog,
                config.runtime.budget.timeout,
                config.runtime.catalog_timeout,
            )))
        }
        // `Config::validate` refuses it first; this is for a configuration built in code.
        #[cfg(not(feature = "native-decider"))]
        config::DeciderKind::Native => {
            drop(catalog);
            anyhow::bail!(
                "plugins.decider = \"native\" needs a weir built with the native-decider feature"
            )
        }
    }
}

/// The database in effect, migrated, seeded, and wrapped so every call is traced.
async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    if config.database_url.is_none() {
        config.ensure_data_dir().with_context(|| {
            format!(
                "could not create the data directory {}",
                config.data_dir.display()
            )
        })?;
    }
    let url = config.effective_database_url();
    let raw = storage::connect(
        url.expose(),
        &StoreOptions {
            max_connections: config.database.max_connections,
            acquire_timeout: config.database.acquire_timeout,
            ..StoreOptions::default()
        },
    )
    .await
    .with_context(|| format!("could not open the database at {}", url.redacted()))?;
    raw.migrate()
        .await
        .with_context(|| format!("could not migrate the database at {}", url.redacted()))?;
    let store: Arc<dyn Store> = Arc::new(TracedStore::new(raw));
    if config.seed_demo_catalog
        && store
            .seed_products_if_empty(&demo_catalog())
            .await
            .with_context(|| format!("could not seed the demo catalog into {}", url.redacted()))?
    {
        tracing::info!(products = demo_catalog().len(), "seeded the demo catalog");
    }
    Ok(store)
}

/// `<data_dir>/artifacts` when the artifact cache is on and the directory can be made.
fn artifact_dir(config: &Config) -> Option<std::path::PathBuf> {
    if !config.plugins.artifact_cache {
        return None;
    }
    let dir = config.data_dir.join("artifacts");
    match std::fs::create_dir_all(&dir) {
        Ok(()) => Some(dir),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "compiled-artifact cache off: cannot create its directory");
            None
        }
    }
}

/// Admit the built-in reference plugin and every component of `plugins.dir`, serve each
/// plugin name's last one locally, make them the releases nobody else set, then apply the
/// releases stored in the database (an operator's release wins).
///
/// A component of `plugins.dir` that admission refuses (unreadable, not a component, does not
/// compile, another world, failing `describe`, a version already admitted with other bytes)
/// is logged (`plugin component refused at start-up`, with its file, stage and error chain)
/// and counted (`weir.plugin.admission_refusals` by `stage`); without `plugins.strict` it is
/// left out and returned, with it start-up fails with its chain. The built-in plugin and the
/// store failing still fail start-up.
///
/// The `--plugin` file (`plugins.file`) is read within the upload limit and admitted last, and
/// released as the stable version of its plugin whatever release was stored (audited as
/// `startup`); any failure with it stops start-up.
///
/// When no loaded plugin has the name `plugins.orders`, start-up fails if nothing was refused
/// (a configuration error); otherwise the refused component may have been it, and the
/// instance starts unready (`/readyz` 503) until a release of it is applied.
async fn load_plugins(config: &Config, releases: &Releases) -> anyhow::Result<LoadedPlugins> {
    let mut local = vec![
        releases
            .admit_local(
                weir_plugin_artifacts::ORDERS_WASM.to_vec(),
                "the built-in orders plugin",
            )
            .await?,
    ];
    let mut refused = Vec::new();
    if let Some(dir) = &config.plugins.dir {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("could not read plugins.dir {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
            .collect();
        files.sort();
        let refusals = opentelemetry::global::meter("weir.server")
            .u64_counter("weir.plugin.admission_refusals")
            .with_description("Plugin components refused at admission, by stage")
            .build();
        for file in files {
            let shown = file.display().to_string();
            let admitted = match std::fs::read(&file) {
                Ok(bytes) => {
                    releases
                        .admit_local(bytes, &format!("plugin {shown}"))
                        .await
                }
                Err(source) => Err(anyhow::Error::new(LoadError::Io {
                    path: shown.clone(),
                    source,
                })),
            };
            let e = match admitted {
                Ok(version) => {
                    local.push(version);
                    continue;
                }
                Err(e) => e,
            };
            // Not the component's doing (the store failed): start-up fails as before.
            let Some(stage) = refusal_stage(&e) else {
                return Err(e);
            };
            let error = bounded(format!("{e:#}"));
            refusals.add(
                1,
                &[
                    opentelemetry::KeyValue::new("stage", stage),
                    opentelemetry::KeyValue::new("source", "plugins.dir"),
                ],
            );
            let strict = config.plugins.strict;
            tracing::error!(
                file = %shown,
                stage,
                error = %error,
                strict,
                "plugin component refused at start-up: {shown} (stage {stage}); {}",
                if strict {
                    "not starting (plugins.strict)"
                } else {
                    "starting without it"
                }
            );
            if strict {
                return Err(e.context(format!(
                    "plugins.strict: {shown} was refused at the {stage} stage"
                )));
            }
            refused.push(RefusedComponent {
                file: shown,
                stage,
                error,
            });
        }
    }
    let file = match &config.plugins.file {
        Some(file) => {
            let (version, loaded) = load_file(config, releases, &file.path).await?;
            local.push(version.clone());
            Some(FileStart {
                path: file.path.clone(),
                watch: file.watch,
                name: version.meta.name.clone(),
                loaded,
            })
        }
        None => None,
    };
    // In file order, the last version of a name wins.
    let mut by_name = BTreeMap::new();
    for version in local {
        by_name.insert(version.meta.name.clone(), version);
    }
    for (name, version) in by_name {
        releases
            .registry()
            .set_slot(&name, Slot::stable(version.clone()));
        releases
            .service()
            .adopt_at_startup(&name, &version.meta.digest)
            .await
            .with_context(|| format!("could not read or write the release of {name}"))?;
    }
    if let Some(file) = &file {
        release_file(releases, file).await?;
    }
    if let Err(e) = releases.sync().await {
        tracing::error!(error = %crate::support::chain(&e), "cannot read the plugin releases; serving the local versions until they are applied");
    }
    let orders = file.as_ref().map_or(&config.plugins.orders, |f| &f.name);
    if releases.registry().pick(orders).is_none() {
        anyhow::ensure!(
            !refused.is_empty(),
            "plugins.orders is {:?} but no loaded plugin has that name",
            config.plugins.orders
        );
        tracing::error!(
            orders_plugin = %config.plugins.orders,
            refused = refused.len(),
            "plugins.orders is {:?} but no loaded plugin has that name and components of \
             plugins.dir were refused; starting unready (/readyz 503) until a release of it is \
             applied",
            config.plugins.orders
        );
    }
    Ok(LoadedPlugins { refused, file })
}

/// What [`load_plugins`] loaded.
struct LoadedPlugins {
    /// Components of `plugins.dir` refused and left out.
    refused: Vec<RefusedComponent>,
    /// The `--plugin` file, when given.
    file: Option<FileStart>,
}

/// The `--plugin` file as start-up loaded it.
struct FileStart {
    path: std::path::PathBuf,
    watch: bool,
    /// Its plugin's name (the orders plugin from now on).
    name: String,
    /// Its state and digest when it was read (the watcher starts from them).
    loaded: watch::Loaded,
}

/// Read the `--plugin` file (bounded by `plugins.releases.upload_limit_bytes`, like an
/// upload) and admit it as start-up admits `plugins.dir`; any failure stops start-up.
async fn load_file(
    config: &Config,
    releases: &Releases,
    path: &std::path::Path,
) -> anyhow::Result<(Arc<crate::runtime::PluginVersion>, watch::Loaded)> {
    let shown = path.display().to_string();
    let limit = config.plugins.releases.upload_limit_bytes;
    // A build may be writing it: a few tries, then the file's own error.
    let mut tries = 0;
    let (bytes, fingerprint) = loop {
        let owned = path.to_owned();
        let read = tokio::task::spawn_blocking(move || watch::read_bounded(&owned, limit))
            .await
            .context("the read task failed")?;
        match read {
            Err(ReadError::Changed) if tries < 5 => {
                tries += 1;
                tokio::time::sleep(WatchOptions::default().quiet).await;
            }
            other => break other.with_context(|| format!("could not read --plugin {shown}"))?,
        }
    };
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    let version = releases
        .admit_local(bytes, &format!("plugin {shown} (--plugin)"))
        .await?;
    Ok((
        version,
        watch::Loaded {
            fingerprint,
            digest,
        },
    ))
}

/// Make the `--plugin` file the stable version of its plugin, whatever release was stored
/// (an operator's or a previous watch's): the author asked for this file. Audited as
/// `startup`, so the next start without `--plugin` adopts the built-in again.
async fn release_file(releases: &Releases, file: &FileStart) -> anyhow::Result<()> {
    use weir_core::domain::release::{DesiredRelease, ReleaseChange};
    let digest = &file.loaded.digest;
    let current = releases
        .service()
        .get(&file.name)
        .await
        .with_context(|| format!("could not read the release of {}", file.name))?;
    if current
        .as_ref()
        .is_some_and(|r| &r.stable == digest && r.canary.is_none() && r.shadow.is_none())
    {
        return Ok(());
    }
    let change = ReleaseChange::Set(DesiredRelease {
        stable: digest.clone(),
        canary: None,
        shadow: None,
    });
    releases
        .service()
        .change(
            &file.name,
            &change,
            None,
            weir_core::ports::releases::STARTUP,
            Some("weir serve --plugin"),
        )
        .await
        .with_context(|| format!("could not release {} from --plugin", file.name))?;
    Ok(())
}

/// The admission stage that refused a component of `plugins.dir`, or `None` when the failure
/// is not the component's (the store).
fn refusal_stage(e: &anyhow::Error) -> Option<&'static str> {
    if let Some(load) = e.downcast_ref::<LoadError>() {
        return Some(load.stage());
    }
    match e.downcast_ref::<weir_core::app::ReleaseError>() {
        Some(weir_core::app::ReleaseError::VersionTaken { .. }) => Some("policy"),
        _ => None,
    }
}

/// A refusal's chain for logs and `/infoz`, bounded whatever the component made wasmtime say.
fn bounded(mut detail: String) -> String {
    const MAX: usize = 2048;
    if detail.len() <= MAX {
        return detail;
    }
    let mut end = MAX;
    while !detail.is_char_boundary(end) {
        end -= 1;
    }
    let cut = detail.len() - end;
    detail.truncate(end);
    detail.push_str(&format!("... ({cut} bytes cut)"));
    detail
}

/// Bind both listeners and serve them until the shutdown token stops them.
async fn serve(
    state: &AppState,
    marker: &RunMarker,
) -> anyhow::Result<(SocketAddr, SocketAddr, Vec<JoinHandle<()>>)> {
    let config = &state.config;
    let bind = |addr: SocketAddr| async move {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener
            .local_addr()
            .with_context(|| format!("cannot read the address bound for {addr}"))?;
        anyhow::Ok((listener, local))
    };
    let (api, api_addr) = bind(config.listen).await?;
    let (ops, ops_addr) = bind(config.ops_listen).await?;

    let api_state = ApiState {
        orders: state.orders.clone(),
        config: Arc::new(config.http.clone()),
    };
    let auth = crate::http::auth::AuthLayerState::new(state.auth.clone(), &config.auth);
    let ops_state = OpsState {
        database: state.store.clone(),
        registry: state.registry.clone(),
        runtime: state.runtime.clone(),
        orders_plugin: config.plugins.orders.clone(),
        deps: state.deps.clone(),
        events: state.events.clone(),
        shutdown: state.shutdown.clone(),
        admin_tokens: Arc::new(config.admin_tokens()),
        auth: state.auth.clone(),
        releases: state.releases.clone(),
        facts: Arc::new(InfoFacts {
            config_hash: config.hash(),
            environment: config.environment.clone(),
            budget: config.runtime.budget.clone(),
            features: serde_json::json!({
                "admin_api": !config.admin_tokens().is_empty(),
                "broker_events": config.amqp_url.is_some(),
                "redis_cache": config.policy.cache.redis_url.is_some(),
                "plugins_dir": config.plugins.dir.is_some(),
                "demo_catalog": config.seed_demo_catalog,
            }),
            pre_stop_delay_ms: config.shutdown.pre_stop_delay.as_millis() as u64,
            drain_deadline_ms: config.shutdown.drain_deadline.as_millis() as u64,
            refused_plugins: state.refused_plugins.to_vec(),
            previous_shutdown: marker.previous().cloned(),
        }),
        readiness: Arc::new(crate::ops::health::ReadinessSignal::new()),
    };
    let shutdown = state.shutdown.clone();
    // Inline plugin calls start only while the server's threads are not all wanted: the
    // connections on a thread or woken and waiting for one tell (`runtime.inline_calls`).
    let waiting = state.connections.clone();
    state.runtime.watch_server_load(
        server_load(waiting.clone()),
        tokio::runtime::Handle::current().metrics().num_workers(),
    );
    // Outermost API layer: count admitted requests so the drain can wait for them.
    let api_router = crate::http::router(api_state, &config.policy, auth).layer(
        axum::middleware::from_fn_with_state(
            shutdown.clone(),
            crate::lifecycle::shutdown::track_requests,
        ),
    );
    warn_if_over_fd_limit(config);
    let mut listeners = Vec::new();
    for (socket, router, name, limits) in [
        (api, api_router, "api", config.http.api),
        (ops, crate::ops::router(ops_state), "ops", config.http.ops),
    ] {
        // Outermost: a response sent before the request body was read says so.
        let router = router.layer(axum::middleware::from_fn(
            crate::support::connection::close_if_body_unread,
        ));
        // Connection limits, timeouts, peer addresses, and the graceful stop at
        // `stop_accepting` (keep-alive connections close after their current request).
        let listener = listener::Listener {
            name,
            socket,
            router,
            limits,
            waiting: waiting.clone(),
        };
        listeners.push(listener.spawn(shutdown.listener_token()));
    }
    Ok((api_addr, ops_addr, listeners))
}

/// What wants the server's threads now: the connections (of either listener) being polled
/// on one, the asking request's own among them, and those woken and waiting for one.
/// Requests in flight that wait on a dependency or a plugin thread hold no thread and do
/// not count.
fn server_load(waiting: waiting::Waiting) -> crate::runtime::ServerLoad {
    Arc::new(move || waiting.wanting())
}

/// The authenticator of `auth.mode` (resolved for the API address: `open` only on
/// loopback), with the JWT key set loaded when the mode is `jwt`.
async fn build_authenticator(
    config: &Config,
    store: Arc<dyn Store>,
) -> anyhow::Result<Authenticator> {
    let mode = config
        .auth
        .resolve(config.listen)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let jwt = match (&config.auth.jwt, mode) {
        (Some(jwt), AuthMode::Jwt) => Some(
            JwtValidator::load(jwt.clone())
                .await
                .context("could not load the JWT key set (auth.jwt)")?,
        ),
        _ => None,
    };
    if mode == AuthMode::Open {
        tracing::warn!(
            listen = %config.listen,
            "authentication is off: the API listens on loopback and auth.mode is {}; every \
             request without a credential acts as the `default` tenant with every scope. Set \
             auth.mode = \"api_keys\" or \"jwt\" before exposing it",
            if config.auth.mode.is_some() { "\"open\"" } else { "unset" }
        );
    } else {
        tracing::info!(mode = mode.as_str(), "API authentication on");
    }
    Ok(Authenticator::new(mode, store, jwt, config.auth.cache_ttl))
}

/// Reload the JWT key set every `auth.jwt.refresh_interval_ms` (a failure keeps the last
/// good set and is logged).
fn spawn_jwks_refresh(state: &AppState) {
    let Some(jwt) = state.auth.jwt().cloned() else {
        return;
    };
    state
        .shutdown
        .supervisor()
        .periodic("auth.jwks_refresh", jwt.refresh_interval(), move || {
            let jwt = jwt.clone();
            async move {
                jwt.refresh()
                    .await
                    .map(|()| 0_u64)
                    .map_err(|e| format!("JWKS refresh failed, keeping the last key set: {e:#}"))
            }
        });
}

/// Warn when both listeners' connection caps (plus room for the database, broker and files)
/// exceed the open-files limit: `accept` would then fail before the caps refuse anything.
fn warn_if_over_fd_limit(config: &Config) {
    const HEADROOM: u64 = 256;
    let caps = (config.http.api.max_connections + config.http.ops.max_connections) as u64;
    if let Some(limit) = listener::open_files_limit()
        && caps + HEADROOM > limit
    {
        tracing::warn!(
            open_files_limit = limit,
            api_max_connections = config.http.api.max_connections,
            ops_max_connections = config.http.ops.max_connections,
            "http.api.max_connections + http.ops.max_connections (+{HEADROOM}) exceed the \
             open-files limit ({limit}); raise `ulimit -n` (LimitNOFILE) or lower the caps, \
             or accept fails for everyone before the caps apply"
        );
    }
}
