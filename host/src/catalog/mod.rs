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
//!
//! The in-process cache is not a dependency: a lookup is a map read under a mutex, which can
//! neither time out nor be unavailable. So it is read directly, without the span, timeout,
//! bulkhead and breaker a remote cache needs (they cost more than the read: about 7 us of a
//! plugin thread per lookup, BENCHMARKS.md), and a miss's write-back is made on the spot.
//! Every lookup of either backend is counted in `weir.catalog.cache.lookups` by `backend` and
//! `result` (`hit`, `miss`, `error`).
//!
//! With a cache on, lookups of one sku that miss it while a database read of that sku is
//! already running wait for that read and share its answer (found, not found or the error)
//! instead of each reading the database: when a popular sku's entry expires under load, the
//! database gets one read for it per process, not one per request in flight ([`Flights`]).
//! Only a read that has started is shared; a lookup that misses after it ended reads again.
//! The read is a task of its own: a lookup that gives up (its plugin call's catalog
//! deadline, a cancelled request) stops waiting, never the read, which runs to its end under
//! the database dependency's timeout and fills the cache. Each lookup that waited on
//! another's read is counted in `weir.catalog.coalesced_lookups` by `backend`.
//! With the cache off (`ttl_ms = 0`) every lookup reads the database itself: an operator who
//! turned the cache off asked for every lookup to see the database as it is when it asks.
//! The database's breaker sees only the reads, so a database that stops answering reaches
//! its `min_calls` later than without sharing (RUNBOOK.md, "Catalog cache hits and misses").

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::KeyValue;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{OnceCell, watch};
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};
use tracing::Instrument;

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

/// The cache in front of the database, as the reader uses it.
#[derive(Clone)]
enum Cache {
    /// In the process: read directly, no dependency stack and so no fault injection
    /// either (see the module doc).
    Memory(Arc<MemoryCache>),
    /// Redis, behind its dependency stack.
    Remote(CacheSvc),
}

/// `weir.catalog.cache.lookups`, its attribute sets made once.
#[derive(Clone)]
struct Lookups {
    counter: opentelemetry::metrics::Counter<u64>,
    hit: [KeyValue; 2],
    miss: [KeyValue; 2],
    error: [KeyValue; 2],
}

impl Lookups {
    fn new(backend: &'static str) -> Self {
        let counter = opentelemetry::global::meter("weir.catalog")
            .u64_counter("weir.catalog.cache.lookups")
            .with_description("Catalog cache lookups by backend and result (hit, miss, error)")
            .build();
        let attrs = |result: &'static str| {
            [
                KeyValue::new("backend", backend),
                KeyValue::new("result", result),
            ]
        };
        Self {
            counter,
            hit: attrs("hit"),
            miss: attrs("miss"),
            error: attrs("error"),
        }
    }

    fn record(&self, result: &Result<Option<CatalogProduct>, DepError>) {
        let attrs = match result {
            Ok(Some(_)) => &self.hit,
            Ok(None) => &self.miss,
            Err(_) => &self.error,
        };
        self.counter.add(1, attrs);
    }
}

/// The in-process cache: a bounded map of entries with their expiry, each kept `ttl`.
struct MemoryCache {
    entries: Mutex<HashMap<String, (Instant, CatalogProduct)>>,
    max_entries: usize,
    ttl: Duration,
}

impl MemoryCache {
    fn new(max_entries: usize, ttl: Duration) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            max_entries: max_entries.max(1),
            ttl,
        }
    }

    /// A live entry (an expired one is removed).
    fn get(&self, sku: &str) -> Option<CatalogProduct> {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(sku) {
            Some((expires, p)) if *expires > Instant::now() => Some(p.clone()),
            Some(_) => {
                map.remove(sku);
                None
            }
            None => None,
        }
    }

    /// Keep `p` for the TTL; a full cache first drops its expired entries, then everything.
    fn put(&self, p: &CatalogProduct) {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if map.len() >= self.max_entries {
            map.retain(|_, (expires, _)| *expires > now);
            if map.len() >= self.max_entries {
                map.clear();
            }
        }
        map.insert(p.sku.clone(), (now + self.ttl, p.clone()));
    }
}

/// A lookup's answer from the database, as [`Catalog::get`] returns it.
type ReadResult = Result<Option<CatalogProduct>, CatalogError>;

/// A flight's answer: `None` until its read has ended.
type Answer = Option<ReadResult>;

/// The database reads in flight, by sku (see the module doc). A lookup that misses the
/// cache subscribes to the sku's flight, or starts one: a task, on the runtime of the lookup
/// that started it, that reads the database, writes a found product back to the cache,
/// publishes the answer to every subscriber and takes the flight out of the map. The read
/// belongs to the flight, not to a lookup: a lookup that gives up (its deadline, a cancelled
/// request) only stops waiting, and the read runs to its own end under the database
/// dependency's timeout, retries and breaker. So a lookup with a short deadline cannot cut
/// short a read that others wait on, and a breaker's half-open probe is never abandoned
/// half-way. The map holds one entry per sku being read, each gone when its read ends
/// (or its task is dropped, as at shutdown: the waiting lookups then get an internal error).
///
/// Written here on a `tokio` watch channel rather than taken from a single-flight crate:
/// the whole mechanism is a map of channels and a spawned read; the crates on crates.io
/// run the work inside the first caller, so its cancellation ends the read for everyone
/// (`rs-singleflight`, for one, then answers the waiters `Canceled`), and the counter needs
/// to know, when a lookup joins, that it waits on another's read.
struct Flights {
    reads: Mutex<HashMap<String, watch::Sender<Answer>>>,
    coalesced: opentelemetry::metrics::Counter<u64>,
    backend: [KeyValue; 1],
}

impl Flights {
    fn new(backend: &'static str) -> Self {
        let coalesced = opentelemetry::global::meter("weir.catalog")
            .u64_counter("weir.catalog.coalesced_lookups")
            .with_description(
                "Catalog lookups that missed the cache and waited for a database read of the \
                 same sku that another lookup had started",
            )
            .build();
        let backend = [KeyValue::new("backend", backend)];
        // The series exists from the start (at zero), so a rate over it is defined before
        // the first coalesced lookup, and the dashboard's panel is not empty until one.
        coalesced.add(0, &backend);
        Self {
            reads: Mutex::new(HashMap::new()),
            coalesced,
            backend,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<Answer>>> {
        self.reads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribe to the flight of `sku`, or start one reading through `reader`.
    fn join(self: &Arc<Self>, reader: &CatalogReader, sku: &str) -> watch::Receiver<Answer> {
        let (answer, started) = {
            let mut reads = self.lock();
            if let Some(tx) = reads.get(sku) {
                (tx.subscribe(), None)
            } else {
                let (tx, answer) = watch::channel(None);
                reads.insert(sku.to_owned(), tx.clone());
                (answer, Some(tx))
            }
        };
        match started {
            None => self.coalesced.add(1, &self.backend),
            Some(tx) => {
                let landing = Landing {
                    flights: self.clone(),
                    sku: sku.to_owned(),
                    tx,
                };
                let reader = reader.clone();
                tokio::spawn(
                    async move {
                        let answer = reader.read(&landing.sku).await;
                        landing.tx.send_replace(Some(answer));
                    }
                    .in_current_span(),
                );
            }
        }
        answer
    }

    /// How many lookups wait on the flight of `sku` (for tests).
    #[cfg(test)]
    fn joined(&self, sku: &str) -> usize {
        self.lock().get(sku).map_or(0, |tx| tx.receiver_count())
    }

    /// Whether a read of `sku` is in flight (for tests).
    #[cfg(test)]
    fn reading(&self, sku: &str) -> bool {
        self.lock().contains_key(sku)
    }
}

/// A flight's read task's hold on its map entry: dropped when the task ends (after its
/// answer is sent) or is dropped unfinished, it removes the entry, unless a later flight of
/// the sku (another channel) has replaced it.
struct Landing {
    flights: Arc<Flights>,
    sku: String,
    tx: watch::Sender<Answer>,
}

impl Drop for Landing {
    fn drop(&mut self) {
        let mut reads = self.flights.lock();
        if reads
            .get(&self.sku)
            .is_some_and(|tx| tx.same_channel(&self.tx))
        {
            reads.remove(&self.sku);
        }
    }
}

/// The shared cache in Redis.
struct RedisCache {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    prefix: String,
    timeout: Duration,
}

impl RedisCache {
    async fn run(&self, op: CacheOp, ttl: Duration) -> Result<Option<CatalogProduct>, DepError> {
        let RedisCache {
            client,
            conn,
            prefix,
            timeout,
        } = self;
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
                let value =
                    serde_json::to_string(&p).map_err(|e| DepError::Internal(e.to_string()))?;
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

/// The catalog the runtime uses: cache, then database behind its stack.
#[derive(Clone)]
pub struct CatalogReader {
    cache: Option<(Cache, Lookups)>,
    /// Present when the cache is.
    flights: Option<Arc<Flights>>,
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
            Some((dep, config)) => match &config.redis_url {
                Some(url) => {
                    let backend = Arc::new(RedisCache {
                        client: redis::Client::open(url.expose())
                            .map_err(|e| CacheSetupError(format!("{:?}", e.kind())))?,
                        conn: OnceCell::new(),
                        prefix: config.key_prefix.clone(),
                        timeout: dep.config.timeout,
                    });
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
                    let cache = Cache::Remote(BoxCloneSyncService::new(svc));
                    (Some((cache, Lookups::new("redis"))), "redis")
                }
                None => {
                    let cache =
                        Cache::Memory(Arc::new(MemoryCache::new(config.max_entries, config.ttl)));
                    (Some((cache, Lookups::new("memory"))), "memory")
                }
            },
        };
        let flights = cache.as_ref().map(|_| Arc::new(Flights::new(kind)));
        Ok((
            Self {
                cache,
                flights,
                source: BoxCloneSyncService::new(source),
            },
            kind,
        ))
    }
}

impl CatalogReader {
    async fn cached(&self, sku: &str) -> Option<CatalogProduct> {
        let (cache, lookups) = self.cache.as_ref()?;
        let result = match cache {
            Cache::Memory(map) => Ok(map.get(sku)),
            Cache::Remote(svc) => svc.clone().oneshot(CacheOp::Get(sku.to_owned())).await,
        };
        lookups.record(&result);
        // Degrade to the database on an error; a remote cache's own metrics and breaker
        // record it.
        result
            .inspect_err(
                |e| tracing::debug!(error = %e, "catalog cache unavailable; reading the database"),
            )
            .ok()
            .flatten()
    }

    fn write_back(&self, product: &CatalogProduct) {
        match &self.cache {
            None => {}
            Some((Cache::Memory(map), _)) => map.put(product),
            Some((Cache::Remote(svc), _)) => {
                let put = svc.clone().oneshot(CacheOp::Put(product.clone()));
                tokio::spawn(async move {
                    let _ = put.await;
                });
            }
        }
    }
}

#[async_trait::async_trait]
impl Catalog for CatalogReader {
    async fn get(&self, sku: &str) -> ReadResult {
        if let Some(p) = self.cached(sku).await {
            return Ok(Some(p));
        }
        let Some(flights) = &self.flights else {
            return self.read(sku).await;
        };
        let mut answer = flights.join(self, sku);
        match answer.wait_for(Option::is_some).await {
            Ok(answer) => answer.clone().unwrap_or_else(|| {
                Err(CatalogError::Internal(
                    "catalog read without an answer".to_owned(),
                ))
            }),
            // The read's task was dropped unfinished (the runtime is shutting down).
            Err(_) => Err(CatalogError::Internal(
                "catalog read ended without an answer".to_owned(),
            )),
        }
    }
}

impl CatalogReader {
    /// Read `sku` from the database and write a found product back to the cache.
    async fn read(&self, sku: &str) -> ReadResult {
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
        if let Some(p) = &found {
            self.write_back(p);
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The in-process cache is read directly: a cache dependency that refuses every call
    /// (a bulkhead of 0) does not stop the next lookups from being hits, and the first
    /// lookup's write-back is there at once (no background task to wait for). A hit shows
    /// as the price before a change made in the database behind the cache's back.
    #[tokio::test]
    async fn the_in_process_cache_is_read_without_the_dependency_stack() {
        use crate::storage::{Database, SqliteStore, StoreOptions};

        let store = SqliteStore::connect("sqlite::memory:", &StoreOptions::default())
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let mut keyboard = weir_core::domain::Product {
            sku: "KB-001".to_owned(),
            name: "Keyboard".to_owned(),
            unit_price: 8900,
            currency: "EUR".to_owned(),
            stock: 1,
            reserved: 0,
            updated_at: chrono::Utc::now(),
        };
        store.upsert_product(&keyboard).await.unwrap();
        let store = Arc::new(store);
        let database = Dependency::new("database", true, Default::default());
        let refusing = Dependency::new(
            "cache",
            false,
            crate::policy::dependency::DependencyConfig {
                max_concurrency: 0,
                ..Default::default()
            },
        );
        let config = CacheConfig::default();
        let (reader, kind) =
            CatalogReader::new(store.clone(), &database, Some((&refusing, &config))).unwrap();
        assert_eq!(kind, "memory");
        let price = |found: Option<CatalogProduct>| found.map(|p| p.unit_price);
        assert_eq!(price(reader.get("KB-001").await.unwrap()), Some(8900));

        keyboard.unit_price = 9900;
        store.upsert_product(&keyboard).await.unwrap();
        for _ in 0..2 {
            assert_eq!(
                price(reader.get("KB-001").await.unwrap()),
                Some(8900),
                "the cache answered (the database says 9900)"
            );
        }
    }

    /// A real SQLite store whose product reads are counted and wait at a gate the test
    /// opens (the database dependency's fault hook is a feature the lib tests are not built
    /// with).
    struct GatedStore {
        inner: crate::storage::SqliteStore,
        reads: std::sync::atomic::AtomicUsize,
        gate: tokio::sync::Semaphore,
        /// Reads past the gate fail (a permanent error: not retried).
        fail: std::sync::atomic::AtomicBool,
    }

    impl GatedStore {
        fn reads(&self) -> usize {
            self.reads.load(std::sync::atomic::Ordering::SeqCst)
        }
        fn open(&self) {
            self.gate
                .add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
        }
    }

    #[async_trait::async_trait]
    impl ProductStore for GatedStore {
        async fn get_product(
            &self,
            sku: &str,
        ) -> Result<Option<weir_core::domain::Product>, weir_core::ports::StoreError> {
            self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(self.gate.acquire().await.expect("never closed"));
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(weir_core::ports::StoreError::Corrupt("test".to_owned()));
            }
            self.inner.get_product(sku).await
        }
        async fn list_products(
            &self,
            after_sku: Option<&str>,
            limit: u32,
        ) -> Result<Vec<weir_core::domain::Product>, weir_core::ports::StoreError> {
            self.inner.list_products(after_sku, limit).await
        }
        async fn upsert_product(
            &self,
            product: &weir_core::domain::Product,
        ) -> Result<weir_core::domain::Product, weir_core::ports::StoreError> {
            self.inner.upsert_product(product).await
        }
        async fn seed_products_if_empty(
            &self,
            products: &[weir_core::domain::Product],
        ) -> Result<bool, weir_core::ports::StoreError> {
            self.inner.seed_products_if_empty(products).await
        }
    }

    /// A lookup of KB-001 through `reader`, as a task of its own.
    fn lookup(
        reader: &CatalogReader,
    ) -> tokio::task::JoinHandle<Result<Option<CatalogProduct>, CatalogError>> {
        let reader = reader.clone();
        tokio::spawn(async move { reader.get("KB-001").await })
    }

    /// A reader with the in-process cache (or none, `cache` false) over a gated store
    /// holding KB-001 (8900).
    async fn gated_reader(cache: bool) -> (CatalogReader, Arc<GatedStore>) {
        use crate::storage::{Database, SqliteStore, StoreOptions};

        let inner = SqliteStore::connect("sqlite::memory:", &StoreOptions::default())
            .await
            .unwrap();
        inner.migrate().await.unwrap();
        inner
            .upsert_product(&weir_core::domain::Product {
                sku: "KB-001".to_owned(),
                name: "Keyboard".to_owned(),
                unit_price: 8900,
                currency: "EUR".to_owned(),
                stock: 5,
                reserved: 0,
                updated_at: chrono::Utc::now(),
            })
            .await
            .unwrap();
        let store = Arc::new(GatedStore {
            inner,
            reads: Default::default(),
            gate: tokio::sync::Semaphore::new(0),
            fail: Default::default(),
        });
        // The gate holds reads as long as a test needs: no timeout (and so no retry) meanwhile.
        let database = Dependency::new(
            "database",
            true,
            crate::policy::dependency::DependencyConfig {
                timeout: Duration::from_secs(600),
                ..Default::default()
            },
        );
        let cache_dep = Dependency::new("cache", false, Default::default());
        let config = CacheConfig::default();
        let (reader, kind) = CatalogReader::new(
            store.clone(),
            &database,
            cache.then_some((&cache_dep, &config)),
        )
        .unwrap();
        assert_eq!(kind, if cache { "memory" } else { "off" });
        (reader, store)
    }

    /// Wait until `done`, checking every millisecond for at most 10 s; fail with `what`
    /// otherwise.
    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..10_000 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("never happened: {what}");
    }

    /// Sixteen lookups of one sku that miss the cache together make one database read, all
    /// sixteen get its answer, and the flight is gone afterwards (the next miss would read
    /// again). All sixteen are seen waiting on the flight while the read is held, so they
    /// overlapped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_of_one_sku_share_one_database_read() {
        const LOOKUPS: usize = 16;
        let (reader, store) = gated_reader(true).await;
        let flights = reader.flights.clone().expect("a cache is on");
        let lookups: Vec<_> = (0..LOOKUPS).map(|_| lookup(&reader)).collect();
        until("all lookups wait on one flight", || {
            flights.joined("KB-001") == LOOKUPS
        })
        .await;
        assert_eq!(store.reads(), 1, "one read for {LOOKUPS} lookups");
        store.open();
        for lookup in lookups {
            let found = lookup.await.unwrap().unwrap();
            assert_eq!(found.map(|p| (p.unit_price, p.stock)), Some((8900, 5)));
        }
        assert_eq!(store.reads(), 1, "one read for {LOOKUPS} lookups");
        until("the ended flight left the map", || {
            !flights.reading("KB-001")
        })
        .await;
        // Now a hit: no read, no flight.
        assert!(reader.get("KB-001").await.unwrap().is_some());
        assert_eq!(store.reads(), 1);
    }

    /// The lookup that started the read gives up (its task is aborted, as a plugin call's
    /// deadline aborts it): the read goes on, a later miss waits on it instead of reading
    /// again, and its answer fills the cache.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lookup_that_gives_up_does_not_stop_the_read() {
        let (reader, store) = gated_reader(true).await;
        let flights = reader.flights.clone().expect("a cache is on");

        let first = lookup(&reader);
        until("the first lookup's read started", || store.reads() == 1).await;
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        assert!(flights.reading("KB-001"), "the read outlives its lookup");

        let second = lookup(&reader);
        until("the second lookup waits on the same read", || {
            flights.joined("KB-001") == 1
        })
        .await;
        store.open();
        let found = second.await.unwrap().unwrap();
        assert_eq!(found.map(|p| p.unit_price), Some(8900));
        assert_eq!(store.reads(), 1, "one read for both lookups");
        until("the ended flight left the map", || {
            !flights.reading("KB-001")
        })
        .await;

        // A lone lookup that gives up: its read still ends and fills the cache.
        let (reader, store) = gated_reader(true).await;
        let flights = reader.flights.clone().expect("a cache is on");
        let lone = lookup(&reader);
        until("the lone lookup's read started", || store.reads() == 1).await;
        lone.abort();
        assert!(lone.await.unwrap_err().is_cancelled());
        store.open();
        until("the abandoned read ended", || !flights.reading("KB-001")).await;
        assert!(reader.get("KB-001").await.unwrap().is_some());
        assert_eq!(store.reads(), 1, "the abandoned read filled the cache");
    }

    /// A read that fails fails every lookup waiting on it, once; the next miss reads again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_read_is_shared_and_not_kept() {
        let (reader, store) = gated_reader(true).await;
        let flights = reader.flights.clone().expect("a cache is on");
        store.fail.store(true, std::sync::atomic::Ordering::SeqCst);
        let lookups: Vec<_> = (0..4).map(|_| lookup(&reader)).collect();
        until("four lookups wait on one read", || {
            flights.joined("KB-001") == 4
        })
        .await;
        store.open();
        for lookup in lookups {
            assert!(
                matches!(lookup.await.unwrap(), Err(CatalogError::Internal(_))),
                "the read's error"
            );
        }
        assert_eq!(store.reads(), 1);
        until("the failed flight left the map", || {
            !flights.reading("KB-001")
        })
        .await;
        store.fail.store(false, std::sync::atomic::Ordering::SeqCst);
        assert!(reader.get("KB-001").await.unwrap().is_some());
        assert_eq!(store.reads(), 2, "the error was not kept");
    }

    /// With the cache off, every lookup reads the database itself.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_the_cache_off_lookups_are_not_shared() {
        let (reader, store) = gated_reader(false).await;
        assert!(reader.flights.is_none());
        let lookups: Vec<_> = (0..4).map(|_| lookup(&reader)).collect();
        until("four reads", || store.reads() == 4).await;
        store.open();
        for lookup in lookups {
            assert!(lookup.await.unwrap().unwrap().is_some());
        }
    }

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
        let cache = MemoryCache::new(2, Duration::from_secs(2));
        cache.put(&product("A"));
        assert_eq!(cache.get("A"), Some(product("A")));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(cache.get("A"), None, "expired at the TTL");

        for sku in ["B", "C", "D"] {
            cache.put(&product(sku));
        }
        assert!(
            cache.entries.lock().unwrap().len() <= 2,
            "bounded by max_entries"
        );
        assert_eq!(cache.get("D"), Some(product("D")), "the newest is kept");
    }
}
