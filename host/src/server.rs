//! Start-up and the two listeners.
//!
//! [`Server::start`] opens the store and migrates it, seeds the demo catalog, builds the plugin
//! runtime, admits the built-in reference plugin and any components in `plugins.dir`, binds
//! the API and operations listeners, and logs one line with the bound addresses.
//! [`Server::drain`] hands everything to the shutdown coordinator ([`crate::shutdown::drain`]);
//! background jobs run on the worker supervisor ([`crate::worker`]) of the one
//! [`Shutdown`] handle, which also lives in [`AppState::shutdown`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use chrono::Utc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::cache::CatalogReader;
use crate::config::Config;
use crate::http::{self, AppState};
use crate::policy::dependency::{Dependencies, Dependency};
use crate::runtime::{EngineError, LoadError, Registry, Runtime};
use crate::shutdown::{DrainPlan, DrainReport, Shutdown, ShutdownConfig};
use crate::storage::{self, Product, StoreError, StoreOptions};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// Directory.
        path: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be opened or migrated.
    #[error("database {url}: {source}")]
    Store {
        /// Redacted URL.
        url: String,
        /// Cause.
        #[source]
        source: StoreError,
    },
    /// The plugin engine could not be built.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A plugin could not be admitted.
    #[error("plugin {file}: {source}")]
    Plugin {
        /// Where it came from.
        file: String,
        /// Cause.
        #[source]
        source: LoadError,
    },
    /// The configured orders plugin is not loaded.
    #[error("plugins.orders is {0:?} but no loaded plugin has that name")]
    NoOrdersPlugin(String),
    /// The catalog cache is misconfigured (e.g. an unparseable Redis URL).
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheSetupError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The small catalog seeded into an empty database so the service is usable at once.
pub fn demo_catalog() -> Vec<Product> {
    let now = Utc::now();
    [
        ("KB-001", "Mechanical keyboard", 8900, 100),
        ("MS-002", "Wireless mouse", 2900, 250),
        ("MN-003", "27-inch monitor", 27900, 40),
        ("CB-004", "USB-C cable", 900, 1000),
        ("HD-005", "Noise-cancelling headphones", 19900, 0),
    ]
    .into_iter()
    .map(|(sku, name, price, stock)| Product {
        sku: sku.to_owned(),
        name: name.to_owned(),
        unit_price: price,
        currency: "EUR".to_owned(),
        stock,
        updated_at: now,
    })
    .collect()
}

/// A running server.
pub struct Server {
    /// Bound API address.
    pub api_addr: SocketAddr,
    /// Bound operations address.
    pub ops_addr: SocketAddr,
    /// Shared state (store, runtime, registry, config).
    pub state: AppState,
    listeners: Vec<JoinHandle<()>>,
}

impl Server {
    /// Start everything described in the module doc.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        let config = Arc::new(config);
        // First: instruments created below bind to the global meter provider.
        if let Err(e) = crate::metrics::install() {
            tracing::error!(error = %e, "metrics disabled");
        }
        if config.database_url.is_none() {
            config
                .ensure_data_dir()
                .map_err(|source| StartError::DataDir {
                    path: config.data_dir.display().to_string(),
                    source,
                })?;
        }
        let url = config.effective_database_url();
        let store_err = |source| StartError::Store {
            url: url.redacted(),
            source,
        };
        let store = storage::connect(
            url.expose(),
            &StoreOptions {
                max_connections: config.database.max_connections,
                acquire_timeout: config.database.acquire_timeout,
                ..StoreOptions::default()
            },
        )
        .await
        .map_err(store_err)?;
        store.migrate().await.map_err(store_err)?;
        if config.seed_demo_catalog
            && store
                .seed_products_if_empty(&demo_catalog())
                .await
                .map_err(store_err)?
        {
            tracing::info!(products = demo_catalog().len(), "seeded the demo catalog");
        }

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
        )?;
        tracing::info!(cache = cache_kind, "catalog read path ready");
        let runtime = Runtime::new(config.runtime.clone(), Arc::new(catalog))?;
        runtime
            .plugin_breakers()
            .configure(policy.plugin_breaker.clone());
        let registry = Arc::new(Registry::new());
        let plugin_config = |name: &str| -> BTreeMap<String, String> {
            config.plugins.config.get(name).cloned().unwrap_or_default()
        };
        let builtin = runtime
            .load(weir_plugin_artifacts::ORDERS_WASM.to_vec(), plugin_config)
            .await
            .map_err(|source| StartError::Plugin {
                file: "built-in orders plugin".to_owned(),
                source,
            })?;
        admit(&registry, builtin, "built-in");
        if let Some(dir) = &config.plugins.dir {
            let mut files: Vec<_> = std::fs::read_dir(dir)
                .map_err(|source| StartError::Plugin {
                    file: dir.display().to_string(),
                    source: LoadError::Io {
                        path: dir.display().to_string(),
                        source,
                    },
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
                .collect();
            files.sort();
            for file in files {
                let version = runtime
                    .load_file(&file, plugin_config)
                    .await
                    .map_err(|source| StartError::Plugin {
                        file: file.display().to_string(),
                        source,
                    })?;
                admit(&registry, version, &file.display().to_string());
            }
        }
        if registry.pick(&config.plugins.orders).is_none() {
            return Err(StartError::NoOrdersPlugin(config.plugins.orders.clone()));
        }

        let state = AppState {
            store: store.clone(),
            runtime,
            registry,
            config: config.clone(),
            event_source: "/weir/orders".to_owned(),
            deps,
            shutdown: Shutdown::new(),
            events: match &config.amqp_url {
                Some(url) => crate::events::EventsHandle::amqp(
                    url.clone(),
                    config.events.clone(),
                    store.clone(),
                ),
                None => crate::events::EventsHandle::default(),
            },
        };
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        let api = bind(config.listen).await?;
        let ops = bind(config.ops_listen).await?;
        let api_addr = api.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let ops_addr = ops.local_addr().map_err(|source| StartError::Bind {
            addr: config.ops_listen,
            source,
        })?;

        let shutdown = state.shutdown.clone();
        let mut listeners = Vec::new();
        // Outermost API layer: count admitted requests so the drain can wait for them.
        let api_router = http::router(state.clone()).layer(axum::middleware::from_fn_with_state(
            shutdown.clone(),
            crate::shutdown::track_requests,
        ));
        for (listener, router, name) in [
            (api, api_router, "api"),
            (ops, crate::health::router(state.clone()), "ops"),
        ] {
            // Stop accepting at `stop_accepting`; keep-alive connections close after their
            // current request.
            let token = shutdown.listener_token();
            listeners.push(tokio::spawn(async move {
                // Connect info: the rate limit keys clients without an API key by peer IP.
                let router = router.into_make_service_with_connect_info::<SocketAddr>();
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(token.cancelled_owned())
                    .await;
                if let Err(e) = served {
                    tracing::error!(listener = name, error = %e, "listener failed");
                }
            }));
        }
        spawn_idempotency_purge(&state);
        // Outbox relay, consumer and backpressure monitor (none in the embedded default), as
        // supervised workers: the drain cancels and waits for them with the others.
        crate::events::spawn(&state, shutdown.supervisor());

        tracing::info!(
            api = %api_addr,
            ops = %ops_addr,
            database = store.backend(),
            orders_plugin = %config.plugins.orders,
            "weir listening on http://{api_addr} (operations on http://{ops_addr})"
        );
        Ok(Self {
            api_addr,
            ops_addr,
            state,
            listeners,
        })
    }

    /// The graceful shutdown of [`crate::shutdown`] with the configured pre-stop delay and
    /// drain deadline; call at the first SIGTERM/SIGINT.
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
        let plan = DrainPlan {
            config,
            listeners: self.listeners,
            runtime: self.state.runtime.clone(),
            store: self.state.store.clone(),
        };
        crate::shutdown::drain(&self.state.shutdown, plan).await
    }
}

fn admit(registry: &Registry, version: Arc<crate::runtime::PluginVersion>, source: &str) {
    let version = registry.insert(version);
    let meta = &version.meta;
    match registry.activate(&meta.name, &meta.digest) {
        Ok(_) => tracing::info!(
            plugin = %meta.name,
            version = %meta.version,
            digest = %meta.digest,
            source,
            "plugin admitted and active"
        ),
        Err(e) => tracing::error!(error = %e, "plugin admitted but not activated"),
    }
}

/// The idempotency purge, a periodic [`crate::worker`]: deletes keys older than
/// `idempotency.retention` every `idempotency.purge_interval`.
fn spawn_idempotency_purge(state: &AppState) {
    let store = state.store.clone();
    let idempotency = state.config.idempotency.clone();
    state.shutdown.supervisor().periodic(
        "idempotency.purge",
        idempotency.purge_interval,
        move || {
            let store = store.clone();
            let cutoff = Utc::now()
                - chrono::Duration::from_std(idempotency.retention)
                    .unwrap_or(chrono::Duration::days(1));
            async move { store.purge_idempotency(cutoff).await }
        },
    );
}
