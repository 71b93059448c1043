//! The catalog read path: a cache in front of the database, each behind its dependency stack.
//!
//! [`CatalogReader`] implements the core's [`Catalog`] port; the plugin runtime's `catalog`
//! import calls it. A lookup
//! asks the cache first (in-process by default; Redis when `REDIS_URL` /
//! `policy.cache.redis_url` is set, so replicas share it), then the database, and writes
//! found products back to the cache in the background. The cache is a dependency like the
//! others (its own span, timeout, concurrency limit and breaker, see
//! [`policy::dependency`](crate::policy::dependency)) but an optional one: any cache failure,
//! open breaker or timeout falls through to the database and never fails the lookup, and it
//! never makes readiness fail.
//!
//! Entries live `ttl_ms` (default 2 s): a price or stock change made through the API is
//! visible to new orders within that bound. Only found products are cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

use weir_core::domain::CatalogProduct;
use weir_core::ports::{Catalog, CatalogError, ProductStore};

use crate::policy::CacheConfig;
use crate::policy::bulkhead::BulkheadLayer;
use crate::policy::circuit_breaker::CircuitBreakerLayer;
use crate::policy::dependency::{DepError, Dependency};
use crate::policy::observe::ObserveLayer;
use crate::policy::retry::{Idempotent, RetryPolicy};
use crate::policy::timeout::TimeoutLayer;

/// A database read of one product; always safe to repeat.
#[derive(Debug, Clone)]
pub struct ProductRead(pub String);

impl Idempotent for ProductRead {
    fn is_idempotent(&self) -> bool {
        true
    }
}

/// One cache operation.
#[derive(Debug, Clone)]
pub enum CacheOp {
    /// Look up a sku.
    Get(String),
    /// Store a product.
    Put(CatalogProduct),
}

type SourceSvc = BoxCloneSyncService<ProductRead, Option<CatalogProduct>, DepError>;
type CacheSvc = BoxCloneSyncService<CacheOp, Option<CatalogProduct>, DepError>;

/// Where cached entries live.
enum Backend {
    Memory {
        entries: Mutex<HashMap<String, (Instant, CatalogProduct)>>,
        max_entries: usize,
    },
    Redis {
        client: redis::Client,
        conn: OnceCell<ConnectionManager>,
        prefix: String,
        timeout: Duration,
    },
}

impl Backend {
    async fn run(&self, op: CacheOp, ttl: Duration) -> Result<Option<CatalogProduct>, DepError> {
        match self {
            Backend::Memory {
                entries,
                max_entries,
            } => {
                let mut map = entries.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                match op {
                    CacheOp::Get(sku) => Ok(match map.get(&sku) {
                        Some((expires, p)) if *expires > now => Some(p.clone()),
                        Some(_) => {
                            map.remove(&sku);
                            None
                        }
                        None => None,
                    }),
                    CacheOp::Put(p) => {
                        if map.len() >= *max_entries {
                            map.retain(|_, (expires, _)| *expires > now);
                            if map.len() >= *max_entries {
                                map.clear();
                            }
                        }
                        map.insert(p.sku.clone(), (now + ttl, p));
                        Ok(None)
                    }
                }
            }
            Backend::Redis {
                client,
                conn,
                prefix,
                timeout,
            } => {
                let conn = conn
                    .get_or_try_init(|| {
                        let config = ConnectionManagerConfig::new()
                            .set_connection_timeout(Some(*timeout))
                            .set_response_timeout(Some(*timeout))
                            .set_number_of_retries(1);
                        ConnectionManager::new_with_config(client.clone(), config)
                    })
                    .await
                    .map_err(redis_error)?;
                let mut conn = conn.clone();
                match op {
                    CacheOp::Get(sku) => {
                        let raw: Option<String> = redis::cmd("GET")
                            .arg(format!("{prefix}{sku}"))
                            .query_async(&mut conn)
                            .await
                            .map_err(redis_error)?;
                        Ok(raw.and_then(|r| serde_json::from_str::<CatalogProduct>(&r).ok()))
                    }
                    CacheOp::Put(p) => {
                        let key = format!("{prefix}{}", p.sku);
                        let value = serde_json::to_string(&p)
                            .map_err(|e| DepError::Internal(e.to_string()))?;
                        let () = redis::cmd("SET")
                            .arg(key)
                            .arg(value)
                            .arg("PX")
                            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
                            .query_async(&mut conn)
                            .await
                            .map_err(redis_error)?;
                        Ok(None)
                    }
                }
            }
        }
    }
}

fn redis_error(e: redis::RedisError) -> DepError {
    // The client's own response timeout equals the dependency's: whichever fires first, a
    // slow Redis is counted as a timeout, not as unreachable.
    if e.is_timeout() {
        DepError::Timeout
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        DepError::Unavailable("redis unreachable".to_owned())
    } else {
        DepError::Internal(format!("redis: {:?}", e.kind()))
    }
}

/// Why the catalog reader could not be built.
#[derive(Debug, thiserror::Error)]
#[error("invalid redis url: {0}")]
pub struct CacheSetupError(String);

/// The catalog the runtime uses: cache, then database, each behind its stack.
#[derive(Clone)]
pub struct CatalogReader {
    cache: Option<CacheSvc>,
    source: SourceSvc,
}

impl std::fmt::Debug for CatalogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogReader")
            .field("cache", &self.cache.is_some())
            .finish_non_exhaustive()
    }
}

impl CatalogReader {
    /// Build the read path. `database` guards the store reads; `cache` (with its settings)
    /// the cache, when enabled. Returns the reader and the kind of cache in use.
    pub fn new(
        store: Arc<dyn ProductStore>,
        database: &Dependency,
        cache: Option<(&Dependency, &CacheConfig)>,
    ) -> Result<(Self, &'static str), CacheSetupError> {
        #[cfg(feature = "fault-injection")]
        let fault = database.fault.clone();
        let read = tower::service_fn(move |ProductRead(sku): ProductRead| {
            let store = store.clone();
            #[cfg(feature = "fault-injection")]
            let fault = fault.clone();
            async move {
                #[cfg(feature = "fault-injection")]
                fault.apply().await;
                // The store is the traced one: this read gets its `db.product.get` span.
                match store.get_product(&sku).await {
                    Ok(p) => Ok(p.map(CatalogProduct::from)),
                    Err(e) if e.is_transient() => {
                        Err(DepError::Unavailable("database unavailable".to_owned()))
                    }
                    Err(_) => Err(DepError::Internal("database read failed".to_owned())),
                }
            }
        });
        let source = ServiceBuilder::new()
            .retry(RetryPolicy::new(
                database.name,
                database.config.retry.clone(),
            ))
            .layer(ObserveLayer::new(database.name, "catalog.get"))
            .layer(CircuitBreakerLayer::new(database.breaker.clone()))
            .layer(BulkheadLayer::new(database.config.max_concurrency))
            .layer(TimeoutLayer::new(database.config.timeout))
            .service(read);

        let (cache, kind) = match cache {
            None => (None, "off"),
            Some((dep, config)) => {
                let (backend, kind) = match &config.redis_url {
                    Some(url) => (
                        Backend::Redis {
                            client: redis::Client::open(url.expose())
                                .map_err(|e| CacheSetupError(format!("{:?}", e.kind())))?,
                            conn: OnceCell::new(),
                            prefix: config.key_prefix.clone(),
                            timeout: dep.config.timeout,
                        },
                        "redis",
                    ),
                    None => (
                        Backend::Memory {
                            entries: Mutex::new(HashMap::new()),
                            max_entries: config.max_entries.max(1),
                        },
                        "memory",
                    ),
                };
                let backend = Arc::new(backend);
                let ttl = config.ttl;
                #[cfg(feature = "fault-injection")]
                let fault = dep.fault.clone();
                let op = tower::service_fn(move |op: CacheOp| {
                    let backend = backend.clone();
                    #[cfg(feature = "fault-injection")]
                    let fault = fault.clone();
                    async move {
                        #[cfg(feature = "fault-injection")]
                        fault.apply().await;
                        backend.run(op, ttl).await
                    }
                });
                let svc = ServiceBuilder::new()
                    .layer(ObserveLayer::new(dep.name, "catalog.cache"))
                    .layer(CircuitBreakerLayer::new(dep.breaker.clone()))
                    .layer(BulkheadLayer::new(dep.config.max_concurrency))
                    .layer(TimeoutLayer::new(dep.config.timeout))
                    .service(op);
                (Some(BoxCloneSyncService::new(svc)), kind)
            }
        };
        Ok((
            Self {
                cache,
                source: BoxCloneSyncService::new(source),
            },
            kind,
        ))
    }
}

#[async_trait::async_trait]
impl Catalog for CatalogReader {
    async fn get(&self, sku: &str) -> Result<Option<CatalogProduct>, CatalogError> {
        if let Some(cache) = &self.cache {
            match cache.clone().oneshot(CacheOp::Get(sku.to_owned())).await {
                Ok(Some(p)) => return Ok(Some(p)),
                Ok(None) => {}
                // Degrade to the database; the cache's own metrics and breaker record it.
                Err(e) => {
                    tracing::debug!(error = %e, "catalog cache unavailable; reading the database")
                }
            }
        }
        let found = self
            .source
            .clone()
            .oneshot(ProductRead(sku.to_owned()))
            .await
            .map_err(|e| match e {
                DepError::Timeout => CatalogError::Timeout,
                DepError::Internal(m) => CatalogError::Internal(m),
                other => CatalogError::Unavailable(other.to_string()),
            })?;
        if let (Some(cache), Some(p)) = (&self.cache, &found) {
            let put = cache.clone().oneshot(CacheOp::Put(p.clone()));
            tokio::spawn(async move {
                let _ = put.await;
            });
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(sku: &str) -> CatalogProduct {
        CatalogProduct {
            sku: sku.to_owned(),
            name: "thing".to_owned(),
            unit_price: 100,
            currency: "EUR".to_owned(),
            stock: 1,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn memory_entries_expire_after_the_ttl_and_the_size_stays_bounded() {
        let backend = Backend::Memory {
            entries: Mutex::new(HashMap::new()),
            max_entries: 2,
        };
        let ttl = Duration::from_secs(2);
        let get = |sku: &str| backend.run(CacheOp::Get(sku.to_owned()), ttl);
        backend.run(CacheOp::Put(product("A")), ttl).await.unwrap();
        assert_eq!(get("A").await.unwrap(), Some(product("A")));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(get("A").await.unwrap(), None, "expired at the TTL");

        for sku in ["B", "C", "D"] {
            backend.run(CacheOp::Put(product(sku)), ttl).await.unwrap();
        }
        let Backend::Memory { entries, .. } = &backend else {
            unreachable!()
        };
        assert!(entries.lock().unwrap().len() <= 2, "bounded by max_entries");
        assert_eq!(
            get("D").await.unwrap(),
            Some(product("D")),
            "the newest is kept"
        );
    }
}
