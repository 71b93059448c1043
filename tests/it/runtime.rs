//! Real components through the real engine.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use weir_core::domain::{
    CatalogProduct, LineRequest, Money, OrderError, OrderEvent, OrderRequest, OrderSnapshot,
    OrderStatus,
};
use weir_host::capabilities::catalog::StaticCatalog;
use weir_host::runtime::{BudgetKind, InvokeError, Runtime, RuntimeConfig, TrapKind};
use weir_plugin_artifacts as artifacts;

fn catalog() -> StaticCatalog {
    StaticCatalog::new([CatalogProduct {
        sku: "KB-001".into(),
        name: "Keyboard".into(),
        unit_price: 8900,
        currency: "EUR".into(),
        stock: 10,
    }])
}

fn runtime(timeout: Duration) -> Runtime {
    let mut config = RuntimeConfig::default();
    config.budget.timeout = timeout;
    config.budget.memory_bytes = 32 << 20;
    Runtime::new(config, Arc::new(catalog())).expect("engine")
}

fn request(customer: &str) -> OrderRequest {
    OrderRequest {
        customer_id: customer.into(),
        currency: "EUR".into(),
        lines: vec![LineRequest {
            sku: "KB-001".into(),
            quantity: 2,
        }],
        metadata: BTreeMap::new(),
    }
}

async fn load(rt: &Runtime, path: &str) -> Arc<weir_host::runtime::PluginVersion> {
    rt.load_file(std::path::Path::new(path), |_| BTreeMap::new())
        .await
        .unwrap_or_else(|e| panic!("load {path}: {e}"))
}

#[tokio::test]
async fn reference_plugin_prices_an_order() {
    let rt = runtime(Duration::from_secs(2));
    let plugin = load(&rt, artifacts::ORDERS).await;
    assert_eq!(plugin.meta.name, "orders");
    let priced = rt
        .place_order(&plugin, &request("cus_123"), None)
        .await
        .expect("priced");
    assert_eq!(priced.subtotal.amount, 17800);
    assert_eq!(priced.total.currency, "EUR");
    assert_eq!(rt.in_flight(), 0);
}

#[tokio::test]
async fn every_order_error_case_reaches_the_host_typed() {
    let rt = runtime(Duration::from_secs(2));
    let plugin = load(&rt, artifacts::ERRORS).await;
    type Check = fn(&OrderError) -> bool;
    let table: [(&str, Check); 6] = [
        (
            "invalid",
            |e| matches!(e, OrderError::Invalid(v) if v.len() == 1 && v[0].field == "customer_id" && v[0].code == "TEST_INVALID"),
        ),
        ("not-found", |e| matches!(e, OrderError::NotFound(_))),
        ("conflict", |e| matches!(e, OrderError::Conflict(_))),
        (
            "rejected",
            |e| matches!(e, OrderError::Rejected(r) if r.reason == "TEST_REASON"),
        ),
        ("unavailable", |e| matches!(e, OrderError::Unavailable(_))),
        ("internal", |e| matches!(e, OrderError::Internal(_))),
    ];
    for (customer, check) in table {
        match rt.place_order(&plugin, &request(customer), None).await {
            Err(InvokeError::Refused(e)) => assert!(check(&e), "{customer}: got {e:?}"),
            other => panic!("{customer}: expected a typed guest error, got {other:?}"),
        }
        let order = OrderSnapshot {
            id: uuid::Uuid::now_v7(),
            customer_id: customer.into(),
            status: OrderStatus::Placed,
            total: Money::new(1, "EUR"),
        };
        match rt
            .transition(&plugin, &order, OrderEvent::PaymentCaptured, None)
            .await
        {
            Err(InvokeError::Refused(e)) => assert!(check(&e), "transition {customer}: {e:?}"),
            other => panic!("transition {customer}: expected a typed guest error, got {other:?}"),
        }
    }
    assert!(rt.place_order(&plugin, &request("ok"), None).await.is_ok());
}

fn is_budget(kind: BudgetKind) -> impl Fn(&InvokeError) -> bool {
    move |e| matches!(e, InvokeError::Budget(k) if *k == kind)
}

/// Each hostile plugin ends in its own typed error, within a bounded time, while a
/// well-behaved call on the same engine succeeds concurrently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_fail_typed_and_the_host_keeps_serving() {
    let rt = runtime(Duration::from_millis(400));
    let good = load(&rt, artifacts::ORDERS).await;
    type Expect = Box<dyn Fn(&InvokeError) -> bool>;
    let cases: Vec<(&str, &str, Expect)> = vec![
        (
            "spin",
            artifacts::HOSTILE_SPIN,
            Box::new(is_budget(BudgetKind::Cpu)),
        ),
        (
            "alloc",
            artifacts::HOSTILE_ALLOC,
            Box::new(is_budget(BudgetKind::Memory)),
        ),
        (
            "stack",
            artifacts::HOSTILE_STACK,
            Box::new(|e| {
                matches!(
                    e,
                    InvokeError::Trap {
                        kind: TrapKind::StackOverflow | TrapKind::MemoryOutOfBounds,
                        ..
                    }
                )
            }),
        ),
        (
            "panic",
            artifacts::HOSTILE_PANIC,
            Box::new(|e| {
                matches!(
                    e,
                    InvokeError::Trap {
                        kind: TrapKind::Unreachable,
                        ..
                    }
                )
            }),
        ),
        (
            "sleep",
            artifacts::HOSTILE_SLEEP,
            Box::new(is_budget(BudgetKind::WallClock)),
        ),
        (
            "logflood",
            artifacts::HOSTILE_LOGFLOOD,
            Box::new(is_budget(BudgetKind::Log)),
        ),
    ];
    for (name, path, expect) in cases {
        let hostile = load(&rt, path).await;
        let hostile_request = request("cus_123");
        let bad = rt.place_order(&hostile, &hostile_request, None);
        let fine = async {
            // Several good calls while the hostile one runs.
            for _ in 0..3 {
                rt.place_order(&good, &request("cus_123"), None)
                    .await
                    .unwrap_or_else(|e| panic!("good call failed while {name} ran: {e:?}"));
            }
        };
        let (bad, ()) =
            tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(bad, fine) })
                .await
                .unwrap_or_else(|_| panic!("{name}: the host did not stop the plugin"));
        let err = bad.expect_err(name);
        assert!(expect(&err), "{name}: unexpected error {err:?}");
        // The same version keeps working for other calls after its instance was discarded.
        assert!(
            rt.describe(&hostile).await.is_ok(),
            "{name}: describe after failure"
        );
    }
    assert_eq!(rt.in_flight(), 0);
}

#[tokio::test]
async fn non_components_and_other_worlds_are_refused() {
    let rt = runtime(Duration::from_secs(2));
    let err = rt
        .load(b"not wasm at all".to_vec(), |_| BTreeMap::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, weir_host::runtime::LoadError::NotAComponent(_)),
        "{err}"
    );
    // A core module (magic + version 1) is refused with a hint.
    let core = b"\0asm\x01\0\0\0".to_vec();
    let err = rt.load(core, |_| BTreeMap::new()).await.unwrap_err();
    assert!(
        matches!(err, weir_host::runtime::LoadError::NotAComponent(ref m) if m.contains("core")),
        "{err}"
    );
    let wrong = std::fs::read(artifacts::WRONG_WORLD).unwrap();
    let err = rt.load(wrong, |_| BTreeMap::new()).await.unwrap_err();
    assert!(
        matches!(err, weir_host::runtime::LoadError::Contract(ref r) if r.other_world),
        "{err}"
    );
    assert_eq!(
        err.stage(),
        "world",
        "another world, not another contract version"
    );
}

/// A compile longer than `runtime.compile_timeout_ms` is refused at the `compile` stage,
/// bounded in time.
#[tokio::test]
async fn a_compile_over_its_bound_is_refused_at_the_compile_stage() {
    let config = RuntimeConfig {
        compile_timeout: Duration::from_millis(1),
        ..RuntimeConfig::default()
    };
    let rt = Runtime::new(config, Arc::new(catalog())).expect("engine");
    let bytes = std::fs::read(artifacts::ORDERS_NEXT).unwrap();
    let err = rt.load(bytes, |_| BTreeMap::new()).await.unwrap_err();
    assert!(
        matches!(err, weir_host::runtime::LoadError::CompileTimeout(_)),
        "{err}"
    );
    assert_eq!(err.stage(), "compile");
}

/// The reference plugin as served is built for `wasm32-unknown-unknown`: it imports
/// `weir:orders` and nothing of WASI (a cheaper fresh instance, BENCHMARKS.md), and prices
/// exactly as its `wasm32-wasip2` build, which imports the WASI interfaces of Rust's std.
#[tokio::test]
async fn the_reference_plugin_imports_weir_orders_only_and_prices_as_its_wasi_build() {
    let rt = runtime(Duration::from_secs(2));
    let served = load(&rt, artifacts::ORDERS).await;
    assert!(
        !served.imports.is_empty() && served.imports.iter().all(|i| i.starts_with("weir:orders/")),
        "the served reference plugin imports more than weir:orders: {:?}",
        served.imports
    );
    let wasip2 = load(&rt, artifacts::ORDERS_WASIP2).await;
    assert!(
        wasip2.imports.iter().any(|i| i.starts_with("wasi:")),
        "the wasm32-wasip2 build imports WASI: {:?}",
        wasip2.imports
    );
    assert_eq!(served.capabilities, wasip2.capabilities);
    let mut order = request("cus_same");
    order.lines[0].quantity = 7;
    assert_eq!(
        rt.place_order(&served, &order, None).await.unwrap(),
        rt.place_order(&wasip2, &order, None).await.unwrap()
    );
    let unknown = LineRequest {
        sku: "NOPE".into(),
        quantity: 1,
    };
    order.lines.push(unknown);
    let a = rt.place_order(&served, &order, None).await.unwrap_err();
    let b = rt.place_order(&wasip2, &order, None).await.unwrap_err();
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}

/// A call of the reference plugin's `wasm32-wasip2` build makes no WASI call, so the host
/// never builds a WASI context for it (about 1 us of a fresh call, BENCHMARKS.md); a plugin
/// that seeds a `HashMap` does. (The served build imports no WASI at all.)
#[tokio::test]
async fn the_reference_plugin_prices_without_a_wasi_call() {
    use weir_host::runtime::parts::CallParts;

    let rt = runtime(Duration::from_secs(2));
    let orders = load(&rt, artifacts::ORDERS_WASIP2).await;
    let parts = CallParts::new(&rt, &orders);
    let mut store = parts.store();
    let instance = parts.instantiate(&mut store).await;
    // Priced: validation (the duplicate-sku map), the catalog lookup, pricing and the
    // `order priced` log line all ran.
    assert!(
        CallParts::place_order(
            &instance,
            &mut store,
            &CallParts::wire(&request("cus_wasi"))
        )
        .await,
        "the reference plugin priced the order"
    );
    assert!(
        !CallParts::used_wasi(&store),
        "the reference plugin's place-order made a WASI call"
    );

    // The probe sees one: the flood plugin's `random` mode hashes with std's `RandomState`
    // and refuses the order with the hashes.
    let flood = load(&rt, artifacts::HOSTILE_FLOOD).await;
    let parts = CallParts::new(&rt, &flood);
    let mut store = parts.store();
    let instance = parts.instantiate(&mut store).await;
    let mut seeded = request("cus_wasi");
    seeded.metadata.insert("flood".into(), "random".into());
    assert!(
        !CallParts::place_order(&instance, &mut store, &CallParts::wire(&seeded)).await,
        "the flood plugin's random mode refuses"
    );
    assert!(
        CallParts::used_wasi(&store),
        "a RandomState seed is a WASI call"
    );
}

/// The SDK's heap on `wasm32-unknown-unknown` (`weir_sdk::heap`) allocates from the initial
/// memory first: a usual `place-order` grows no memory (a grown memory costs the pool work at
/// both ends of every call, BENCHMARKS.md). A request larger than that space grows the memory,
/// extends the heap, and gets exactly the answer of the `wasm32-wasip2` build (here the
/// plugin's refusal of its oversized metadata, made after the whole request was copied in).
#[tokio::test]
async fn the_reference_plugin_grows_no_memory_until_a_call_needs_more() {
    let rt = runtime(Duration::from_secs(2));
    let served = load(&rt, artifacts::ORDERS).await;
    assert_eq!(
        priced_and_grows(&rt, &served, &request("cus_small")).await,
        (true, 0)
    );

    // 256 KiB of metadata: the arguments alone are copied into the guest's heap.
    let mut large = request("cus_large");
    for i in 0..64 {
        large.metadata.insert(format!("k{i:02}"), "x".repeat(4096));
    }
    let (priced, grown) = priced_and_grows(&rt, &served, &large).await;
    assert!(!priced, "more metadata than the plugin accepts");
    assert!(grown > 0, "256 KiB of arguments fit the initial memory?");
    let wasip2 = load(&rt, artifacts::ORDERS_WASIP2).await;
    let served = rt.place_order(&served, &large, None).await.unwrap_err();
    let wasip2 = rt.place_order(&wasip2, &large, None).await.unwrap_err();
    assert!(
        matches!(served, InvokeError::Refused(OrderError::Invalid(_))),
        "{served:?}"
    );
    assert_eq!(format!("{served:?}"), format!("{wasip2:?}"));
}

/// The SDK's heap reuses what a call frees: `hostile-churn` allocates and frees 1 MiB 256
/// times within a 32 MiB memory budget and answers its own refusal; a heap that never freed
/// would end the call with the memory budget.
#[tokio::test]
async fn the_sdk_heap_reuses_freed_memory() {
    let rt = runtime(Duration::from_secs(5));
    let churn = load(&rt, artifacts::HOSTILE_CHURN).await;
    match rt.place_order(&churn, &request("cus_churn"), None).await {
        Err(InvokeError::Refused(OrderError::Rejected(r))) => assert_eq!(r.reason, "CHURNED"),
        other => panic!("expected the plugin's own refusal, got {other:?}"),
    }
    // The memory grew for one buffer (and the heap's bookkeeping), not for 256.
    let (priced, grows) = priced_and_grows(&rt, &churn, &request("cus_churn")).await;
    assert!(!priced);
    assert!(
        grows <= 4,
        "{grows} memory grow requests for 256 frees and allocations of 1 MiB"
    );
}

/// One fresh `place-order` of `plugin` on this thread: whether it priced the order, and how
/// many memory grow requests the call made after instantiation.
async fn priced_and_grows(
    rt: &Runtime,
    plugin: &weir_host::runtime::PluginVersion,
    order: &OrderRequest,
) -> (bool, u32) {
    use weir_host::runtime::parts::CallParts;

    let parts = CallParts::new(rt, plugin);
    let mut store = parts.store();
    let instance = parts.instantiate(&mut store).await;
    let at_instantiation = CallParts::memory_grows(&store);
    let priced = CallParts::place_order(&instance, &mut store, &CallParts::wire(order)).await;
    (priced, CallParts::memory_grows(&store) - at_instantiation)
}

/// A catalog that notes the thread each lookup starts on: the thread the guest runs on, since
/// an answer at hand is taken on the spot. `SLOW-*` answers only after a timer (the call has
/// to wait), `BOOM-*` panics (a host bug inside a call), anything else answers at once.
#[derive(Default)]
struct WhereCatalog {
    threads: std::sync::Mutex<Vec<String>>,
}

impl WhereCatalog {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.threads.lock().unwrap())
    }
}

#[async_trait::async_trait]
impl weir_core::ports::Catalog for WhereCatalog {
    async fn get(
        &self,
        sku: &str,
    ) -> Result<Option<weir_core::domain::CatalogProduct>, weir_core::ports::CatalogError> {
        let thread = std::thread::current();
        self.threads
            .lock()
            .unwrap()
            .push(thread.name().unwrap_or("unnamed").to_owned());
        if sku.starts_with("BOOM") {
            panic!("the catalog broke on {sku}");
        }
        if sku.starts_with("SLOW") {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(Some(CatalogProduct {
            sku: sku.into(),
            name: "Keyboard".into(),
            unit_price: 8900,
            currency: "EUR".into(),
            stock: 10,
        }))
    }
}

/// A runtime over a [`WhereCatalog`]. Its epoch tick (and budget) is an hour: no tick ends
/// an inline slice early and no call counts as overrunning it (a fifth of a tick), however
/// slow or busy the machine. An overrun would send the version to the plugin threads for a
/// second, which `a_version_that_overran_its_inline_slice_starts_on_the_plugin_threads`
/// tests on its own; no plugin here spins.
fn where_runtime(inline_calls: bool) -> (Runtime, Arc<WhereCatalog>) {
    let catalog = Arc::new(WhereCatalog::default());
    let mut config = RuntimeConfig {
        inline_calls,
        epoch_tick: Duration::from_secs(3600),
        ..RuntimeConfig::default()
    };
    config.budget.timeout = Duration::from_secs(3600);
    (
        Runtime::new(config, catalog.clone()).expect("engine"),
        catalog,
    )
}

fn order_of(sku: &str) -> OrderRequest {
    let mut order = request("cus_where");
    order.lines[0].sku = sku.into();
    order
}

/// With `runtime.inline_calls` (the default) a request's call runs on the thread that asked
/// for it, and only a call that has to wait moves to the plugin threads; that wait does not
/// keep the version's later calls off the inline path. Turned off, every call runs on the
/// plugin threads.
#[tokio::test]
async fn a_call_runs_where_it_was_asked_and_moves_only_when_it_waits() {
    let here = std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .to_owned();
    assert_ne!(here, "weir-plugin");
    let (rt, catalog) = where_runtime(true);
    let plugin = load(&rt, artifacts::ORDERS).await;
    let before = rt.placements();

    // Each call's (first) catalog lookup runs on this thread: inline, then a call that
    // waits and moves, then inline again.
    for (sku, priced, otherwise) in [
        ("KB-001", "priced inline", "the guest ran on another thread"),
        (
            "SLOW-001",
            "priced after the wait",
            "the first slice ran elsewhere",
        ),
        (
            "KB-001",
            "priced inline again",
            "a wait sent the version away",
        ),
    ] {
        rt.place_order(&plugin, &order_of(sku), None)
            .await
            .expect(priced);
        assert_eq!(catalog.take(), [here.as_str()], "{otherwise}");
    }

    let after = rt.placements();
    assert_eq!(
        (
            after.inline - before.inline,
            after.moved - before.moved,
            after.plugin_threads - before.plugin_threads
        ),
        (2, 1, 0),
        "inline, moved, plugin threads"
    );
    let state = rt.inline_of(&plugin);
    assert_eq!((state.started, state.offloaded), (3, false), "{state:?}");

    let (rt, catalog) = where_runtime(false);
    let plugin = load(&rt, artifacts::ORDERS).await;
    let before = rt.placements();
    rt.place_order(&plugin, &order_of("KB-001"), None)
        .await
        .expect("priced on the plugin threads");
    assert_eq!(catalog.take(), ["weir-plugin"]);
    let after = rt.placements();
    assert_eq!(
        (
            after.inline,
            after.moved,
            after.plugin_threads - before.plugin_threads
        ),
        (0, 0, 1)
    );
    assert_eq!(rt.inline_of(&plugin).started, 0);
}

/// A panic inside a call (here a host import's bug) is the call's typed failure wherever the
/// call ran, inline or on the plugin threads, and the runtime keeps serving.
#[tokio::test]
async fn a_panic_inside_a_call_is_a_typed_failure_inline_and_on_the_plugin_threads() {
    for inline_calls in [true, false] {
        let (rt, catalog) = where_runtime(inline_calls);
        let plugin = load(&rt, artifacts::ORDERS).await;
        let before = rt.placements();
        let err = rt
            .place_order(&plugin, &order_of("BOOM-001"), None)
            .await
            .expect_err("a panicking lookup cannot price");
        assert!(
            matches!(
                &err,
                InvokeError::Trap { kind: TrapKind::Host, detail }
                    if detail.0.contains("the catalog broke on BOOM-001")
            ),
            "inline_calls {inline_calls}: {err:?}"
        );
        assert_eq!(catalog.take().len(), 1);
        let after = rt.placements();
        assert_eq!(
            (
                after.inline - before.inline,
                after.plugin_threads - before.plugin_threads
            ),
            if inline_calls { (1, 0) } else { (0, 1) },
            "inline_calls {inline_calls}: where the panicking call ran"
        );
        rt.place_order(&plugin, &order_of("KB-001"), None)
            .await
            .expect("the runtime keeps serving");
        assert_eq!((rt.in_flight(), rt.instances_in_use()), (0, 0));
    }
}

/// While the server's load (as `weir serve` counts it: connections on a server thread or
/// waiting for one) is above its worker threads, every call goes to the plugin threads from
/// the start: the hand-off then buys a second core.
#[tokio::test]
async fn a_busy_server_hands_every_call_to_the_plugin_threads() {
    let (rt, catalog) = where_runtime(true);
    let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = requests.clone();
    // One server worker: a load of one (this call's own connection) leaves it free.
    rt.watch_server_load(
        Arc::new(move || seen.load(std::sync::atomic::Ordering::SeqCst)),
        1,
    );
    let plugin = load(&rt, artifacts::ORDERS).await;
    for (wanting, expected) in [(1, "inline"), (2, "weir-plugin"), (1, "inline")] {
        requests.store(wanting, std::sync::atomic::Ordering::SeqCst);
        rt.place_order(&plugin, &order_of("KB-001"), None)
            .await
            .expect("priced");
        let thread = catalog.take();
        let inline = thread[0] != "weir-plugin";
        assert_eq!(
            if inline { "inline" } else { thread[0].as_str() },
            expected,
            "a server load of {wanting}"
        );
    }
    assert_eq!(rt.inline_of(&plugin).started, 2);
}

/// A version whose inline slices held the thread for a fifth of an epoch tick or more twice
/// (within `INLINE_OVERRUN_WINDOW`) starts its calls on the plugin threads for the next
/// second; a lone overrun (a preempted thread looks the same) does not send it there. A
/// spinning plugin called one request at a time (the load rule lets every call start
/// inline) holds the asking thread for the first few calls only.
#[tokio::test]
async fn a_version_that_overran_its_inline_slice_starts_on_the_plugin_threads() {
    let rt = runtime(Duration::from_millis(30));
    // Every call must run: the version's breaker must not short-circuit them.
    rt.plugin_breakers()
        .configure(weir_host::policy::circuit_breaker::BreakerConfig {
            min_calls: 100_000,
            ..Default::default()
        });
    let spin = load(&rt, artifacts::HOSTILE_SPIN).await;
    let mut lone_overrun_seen = false;
    for _ in 0..16 {
        let err = rt
            .place_order(&spin, &request("cus_spin"), None)
            .await
            .expect_err("a spinning plugin runs out of budget");
        assert!(
            is_budget(BudgetKind::Cpu)(&err) || is_budget(BudgetKind::WallClock)(&err),
            "{err}"
        );
        // A call has one slice at most, so the count passes through 1.
        let state = rt.inline_of(&spin);
        if state.overruns == 1 {
            lone_overrun_seen = true;
            assert!(
                !state.offloaded,
                "one overrun offloaded the version: {state:?}"
            );
        }
    }
    let state = rt.inline_of(&spin);
    // Each slice overruns unless it began within a fifth of a tick of the next one (one in
    // five): the chance of fewer than two overruns in eight slices is about 1 in 12 000.
    assert!(
        lone_overrun_seen && state.overruns >= 2 && state.started <= 8,
        "16 spinning calls, one at a time: {state:?}"
    );
}
