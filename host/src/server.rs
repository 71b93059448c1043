//! Start-up and the two listeners.
//!
//! [`Server::start`] opens the store and migrates it, seeds the demo catalog, builds the plugin
//! runtime, admits the built-in reference plugin and any components in `plugins.dir`, binds
//! the API and operations listeners, and logs one line with the bound addresses.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use chrono::Utc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::capabilities::catalog::StoreCatalog;
use crate::config::Config;
use crate::http::{self, AppState};
use crate::runtime::{EngineError, LoadError, Registry, Runtime};
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
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Server {
    /// Start everything described in the module doc.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        let config = Arc::new(config);
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

        let runtime = Runtime::new(
            config.runtime.clone(),
            Arc::new(StoreCatalog(store.clone())),
        )?;
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

        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        for (listener, router, name) in [
            (api, http::router(state.clone()), "api"),
            (ops, crate::health::router(state.clone()), "ops"),
        ] {
            let token = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(token.cancelled_owned())
                    .await;
                if let Err(e) = served {
                    tracing::error!(listener = name, error = %e, "listener failed");
                }
            }));
        }
        tasks.push(tokio::spawn(purge_loop(state.clone(), shutdown.clone())));

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
            shutdown,
            tasks,
        })
    }

    /// Stop accepting, finish in-flight requests, wait for plugin calls (up to `grace`),
    /// and close the store.
    pub async fn shutdown(self, grace: std::time::Duration) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = tokio::time::timeout(grace, task).await;
        }
        if !self.state.runtime.drain(grace).await {
            tracing::warn!(
                in_flight = self.state.runtime.in_flight(),
                "plugin calls still running at the drain deadline; interrupting"
            );
            self.state.runtime.interrupt_all();
        }
        self.state.store.close().await;
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

async fn purge_loop(state: AppState, shutdown: CancellationToken) {
    let every = state.config.idempotency.purge_interval;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let cutoff = Utc::now()
            - chrono::Duration::from_std(state.config.idempotency.retention)
                .unwrap_or(chrono::Duration::days(1));
        match state.store.purge_idempotency(cutoff).await {
            Ok(n) if n > 0 => tracing::info!(purged = n, "purged expired idempotency keys"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "idempotency purge failed"),
        }
    }
}
