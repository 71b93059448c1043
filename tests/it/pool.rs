//! Instance-pool exhaustion: more concurrent plugin calls than `runtime.max_instances`.
//!
//! The calls that hold the instances are real plugin calls held inside the plugin: the
//! reference plugin blocked in a catalog lookup the test releases (runtime tests), or the
//! hostile `sleep` plugin (served through the API; its holders are aborted by the test, which
//! drops their stores). Before the extra calls are made, the test sees every instance in use
//! (`Runtime::instances_in_use`), so the extra calls provably found the pool full.
//!
//! The behaviour: a call beyond the pool waits for a free instance up to
//! `runtime.instance_wait_ms`, cut by the caller's deadline; an instance freed meanwhile serves
//! it; past the bound it is refused with `PoolExhausted` (`503 PLUGIN_BUSY` with
//! `Retry-After` through the API), never wasmtime's pool error. Shadow calls never wait.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use weir_core::domain::{CatalogProduct, LineRequest, OrderRequest};
use weir_core::ports::{Catalog, CatalogError};
use weir_host::runtime::{InvokeError, PluginVersion, Role, Runtime, RuntimeConfig};
use weir_plugin_artifacts as artifacts;

use crate::support::{Backend, TestServer, metric, order_body};

/// Hang guard of every wait in these tests (never reached when the property holds).
const GUARD: Duration = Duration::from_secs(20);

/// A catalog whose lookups block until the test releases them, counting who got in.
struct GatedCatalog {
    entered: AtomicUsize,
    release: Semaphore,
}

impl Default for GatedCatalog {
    fn default() -> Self {
        Self {
            entered: AtomicUsize::new(0),
            release: Semaphore::new(0),
        }
    }
}

#[async_trait::async_trait]
impl Catalog for GatedCatalog {
    async fn get(&self, sku: &str) -> Result<Option<CatalogProduct>, CatalogError> {
        self.entered.fetch_add(1, Ordering::SeqCst);
        self.release
            .acquire()
            .await
            .expect("gate never closes")
            .forget();
        Ok(Some(CatalogProduct {
            sku: sku.to_owned(),
            name: "Keyboard".into(),
            unit_price: 8900,
            currency: "EUR".into(),
            stock: 1000,
        }))
    }
}

fn request(customer: &str) -> OrderRequest {
    OrderRequest {
        customer_id: customer.into(),
        currency: "EUR".into(),
        lines: vec![LineRequest {
            sku: "KB-001".into(),
            quantity: 1,
        }],
        metadata: BTreeMap::new(),
    }
}

/// A runtime of two instances over `catalog`. The budgets outlast every hang guard, so a held
/// call never frees its instance on its own before a guard fires.
fn runtime(catalog: Arc<GatedCatalog>, instance_wait: Duration) -> Runtime {
    let mut config = RuntimeConfig {
        max_instances: 2,
        instance_wait,
        catalog_timeout: 3 * GUARD,
        ..RuntimeConfig::default()
    };
    config.budget.timeout = 3 * GUARD;
    config.budget.memory_bytes = 32 << 20;
    Runtime::new(config, catalog).expect("engine")
}

async fn load(rt: &Runtime, path: &str) -> Arc<PluginVersion> {
    rt.load_file(std::path::Path::new(path), |_| BTreeMap::new())
        .await
        .unwrap_or_else(|e| panic!("load {path}: {e}"))
}

/// Poll `cond` (runtime state, no event to await) until it holds; fails naming `what`.
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + GUARD;
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Two calls held inside the plugin (in the catalog lookup): the pool is full.
async fn fill(
    rt: &Runtime,
    plugin: &Arc<PluginVersion>,
    gate: &GatedCatalog,
) -> Vec<tokio::task::JoinHandle<Result<weir_core::domain::PricedOrder, InvokeError>>> {
    let before = gate.entered.load(Ordering::SeqCst);
    let holders = (0..2)
        .map(|i| {
            let (rt, plugin) = (rt.clone(), plugin.clone());
            tokio::spawn(async move {
                rt.place_order(&plugin, &request(&format!("cus_hold_{i}")), None)
                    .await
            })
        })
        .collect();
    wait_for("two calls inside the plugin holding both instances", || {
        gate.entered.load(Ordering::SeqCst) == before + 2 && rt.instances_in_use() == 2
    })
    .await;
    holders
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_beyond_the_pool_waits_and_is_served_when_an_instance_frees() {
    let gate = Arc::new(GatedCatalog::default());
    // The wait bound is the hang guard: the extra calls must be served, not refused.
    let rt = runtime(gate.clone(), GUARD);
    let plugin = load(&rt, artifacts::ORDERS).await;
    let holders = fill(&rt, &plugin, &gate).await;

    // Two more calls while both instances are held: they wait, outside the plugin.
    let extra: Vec<_> = (0..2)
        .map(|i| {
            let (rt, plugin) = (rt.clone(), plugin.clone());
            tokio::spawn(async move {
                rt.place_order(&plugin, &request(&format!("cus_wait_{i}")), None)
                    .await
            })
        })
        .collect();
    wait_for("two calls waiting for an instance", || {
        rt.instances_waiting() == 2
    })
    .await;
    assert_eq!(
        gate.entered.load(Ordering::SeqCst),
        2,
        "a call got into the plugin beyond max_instances = 2"
    );
    assert_eq!(rt.instances_in_use(), 2);

    // Free the instances one lookup at a time: each freed instance admits a waiting call.
    gate.release.add_permits(1);
    wait_for("a waiting call admitted into the freed instance", || {
        gate.entered.load(Ordering::SeqCst) == 3 && rt.instances_waiting() == 1
    })
    .await;
    assert_eq!(rt.instances_in_use(), 2);
    gate.release.add_permits(3);
    for (i, call) in holders.into_iter().chain(extra).enumerate() {
        let priced = tokio::time::timeout(GUARD, call)
            .await
            .unwrap_or_else(|_| panic!("call {i} still running"))
            .expect("task")
            .unwrap_or_else(|e| panic!("call {i} failed: {e:?}"));
        assert_eq!(priced.subtotal.amount, 8900);
    }
    assert_eq!(gate.entered.load(Ordering::SeqCst), 4);
    assert_eq!((rt.instances_in_use(), rt.instances_waiting()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_beyond_the_pool_is_refused_typed_at_its_deadline_or_the_wait_bound() {
    let gate = Arc::new(GatedCatalog::default());
    // A wait bound beyond the hang guard: only the caller's deadline can end this wait.
    let rt = runtime(gate.clone(), Duration::from_secs(60));
    let plugin = load(&rt, artifacts::ORDERS).await;
    let holders = fill(&rt, &plugin, &gate).await;

    let deadline = Duration::from_millis(200);
    let started = Instant::now();
    let refused = tokio::time::timeout(
        GUARD,
        rt.place_order(&plugin, &request("cus_late"), Some(started + deadline)),
    )
    .await
    .expect("the wait outlived its deadline: it is not bounded by the caller's deadline");
    match refused {
        Err(InvokeError::PoolExhausted {
            waited,
            retry_after,
        }) => {
            assert!(
                waited >= deadline,
                "refused before its deadline: {waited:?}"
            );
            assert!(!retry_after.is_zero());
        }
        other => panic!("expected PoolExhausted, got {other:?}"),
    }
    // A shadow never waits, whatever the bound.
    let shadow = tokio::time::timeout(
        GUARD,
        rt.place_order_as(&plugin, Role::Shadow, &request("cus_shadow"), None),
    )
    .await
    .expect("a shadow call waited for an instance");
    assert!(
        matches!(shadow, Err(InvokeError::PoolExhausted { .. })),
        "{shadow:?}"
    );
    assert_eq!(gate.entered.load(Ordering::SeqCst), 2, "nothing else ran");

    // The configured bound alone (no deadline).
    let gate2 = Arc::new(GatedCatalog::default());
    let bounded = runtime(gate2.clone(), Duration::from_millis(200));
    let plugin2 = load(&bounded, artifacts::ORDERS).await;
    let holders2 = fill(&bounded, &plugin2, &gate2).await;
    let refused = tokio::time::timeout(
        GUARD,
        bounded.place_order(&plugin2, &request("cus_bound"), None),
    )
    .await
    .expect("the wait outlived runtime.instance_wait_ms");
    assert!(
        matches!(refused, Err(InvokeError::PoolExhausted { waited, .. }) if waited >= Duration::from_millis(200)),
        "{refused:?}"
    );

    gate.release.add_permits(2);
    gate2.release.add_permits(2);
    for call in holders.into_iter().chain(holders2) {
        call.await.expect("task").expect("a holder is served");
    }
    assert_eq!(rt.instances_in_use() + bounded.instances_in_use(), 0);
}

/// `POST /v1/orders` with the raw response text.
async fn post(s: &TestServer, customer: &str) -> (u16, Option<String>, String) {
    let res = s
        .client
        .post(format!("{}/v1/orders", s.base))
        .header("Idempotency-Key", format!("pool-{customer}"))
        .json(&order_body(customer, &[("KB-001", 1)]))
        .send()
        .await
        .expect("POST /v1/orders");
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry_after, res.text().await.unwrap())
}

/// Hold one instance of the server's runtime with a hostile `sleep` call (until aborted).
fn hold(rt: &Runtime, sleeper: &Arc<PluginVersion>, i: usize) -> tokio::task::JoinHandle<()> {
    let (rt, sleeper) = (rt.clone(), sleeper.clone());
    tokio::spawn(async move {
        let _ = rt
            .place_order(&sleeper, &request(&format!("cus_sleep_{i}")), None)
            .await;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_plugin_busy_with_retry_after_when_every_instance_stays_busy() {
    let s = TestServer::start(Backend::Sqlite, |c, _| {
        c.runtime.max_instances = 2;
        c.policy.max_concurrency = 8;
        c.runtime.instance_wait = Duration::from_millis(1500);
        c.runtime.budget.timeout = Duration::from_secs(30);
        c.http.request_timeout = Duration::from_secs(20);
    })
    .await;
    let rt = s.state().runtime.clone();
    let sleeper = load(&rt, artifacts::HOSTILE_SLEEP).await;
    let mut holders: Vec<_> = (0..2).map(|i| hold(&rt, &sleeper, i)).collect();
    wait_for("both instances held by sleeping plugin calls", || {
        rt.instances_in_use() == 2
    })
    .await;

    // Served after waiting: a request arrives with the pool full and is served once an
    // instance frees within its wait.
    let s = Arc::new(s);
    let waiting = {
        let s = s.clone();
        tokio::spawn(async move { post(&s, "cus_waits").await })
    };
    wait_for("the request waiting for an instance", || {
        rt.instances_waiting() == 1
    })
    .await;
    holders.remove(0).abort();
    let (status, _, body) = tokio::time::timeout(GUARD, waiting)
        .await
        .expect("the waiting request never finished")
        .unwrap();
    assert_eq!(status, 201, "{body}");
    wait_for("the freed instance back in the pool", || {
        rt.instances_in_use() == 1
    })
    .await;

    // Refused after the bound: fill the pool again, then three requests at once.
    holders.push(hold(&rt, &sleeper, 2));
    wait_for("both instances held again", || rt.instances_in_use() == 2).await;
    let refused = futures::future::join_all((0..3).map(|i| {
        let s = s.clone();
        async move { post(&s, &format!("cus_busy_{i}")).await }
    }))
    .await;
    for (status, retry_after, body) in &refused {
        assert_eq!(*status, 503, "{body}");
        let problem: serde_json::Value = serde_json::from_str(body).expect("problem JSON");
        assert_eq!(problem["code"], "PLUGIN_BUSY", "{body}");
        assert_eq!(problem["retryable"], true, "{body}");
        let secs: u64 = retry_after
            .as_deref()
            .expect("Retry-After on PLUGIN_BUSY")
            .parse()
            .expect("Retry-After in seconds");
        assert!(secs >= 1, "{secs}");
        for leak in ["wasmtime", "maximum concurrent", "limit of", "instantiate"] {
            assert!(
                !body.to_lowercase().contains(leak),
                "engine detail {leak:?} leaked: {body}"
            );
        }
    }
    assert_eq!(rt.instances_in_use(), 2, "the refused requests never ran");

    let text = s.metrics().await;
    let orders = [("plugin_name", "orders")];
    assert!(
        metric(&text, "weir_plugin_instances_exhausted_total", &orders) >= 3.0,
        "{}",
        text.lines()
            .filter(|l| l.contains("instance"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(metric(&text, "weir_plugin_instance_wait_seconds_count", &orders) >= 4.0);
    assert!(
        metric(
            &text,
            "weir_plugin_invocations_total",
            &[("plugin_name", "orders"), ("outcome", "pool_exhausted")]
        ) >= 3.0
    );
    assert!(metric(&text, "weir_plugin_instances_in_use", &[]) >= 2.0);

    for h in holders {
        h.abort();
    }
    wait_for("every instance free", || rt.instances_in_use() == 0).await;
    assert_eq!(post(&s, "cus_after").await.0, 201);
    Arc::into_inner(s).expect("sole owner").stop().await;
}
