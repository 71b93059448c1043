//! One `place-order` call: a fresh component instance + call + teardown through the host
//! runtime, against the same plugin logic compiled natively and called directly (with the
//! SDK's in-memory fake host). Run with `cargo bench -p weir-host --bench invoke`.
//!
//! The `parts` group splits a fresh call into its steps, each timed inside a whole call on
//! the benchmark's thread (no hand-off to the plugin threads, no span or metrics): the store
//! and its context, instantiation from the pre-instantiated component, the `place-order`
//! export call (with its imports), teardown (dropping the store returns the instance to the
//! pool), all of them together, a `transition` call (an export without imports), and a call
//! on a reused instance (a lower bound for comparison only: Weir never reuses an instance).
//! `parts_wasip2` times the same steps for the reference plugin's `wasm32-wasip2` build (the
//! served one is built for `wasm32-unknown-unknown`, without WASI imports).
//!
//! `WEIR_BENCH_CALLS=N` skips criterion: the binary makes N fresh calls through the runtime
//! and prints the page faults per call (from `/proc/self/stat`, all threads); run it under
//! `strace -c -f` with N and with 0 to count system calls per call (BENCHMARKS.md).
//!
//! `WEIR_BENCH_COMPARE=name=path,...` skips criterion too: whole fresh calls of the served
//! reference plugin and of each named component, alternating in batches (a paired comparison
//! for a noisy machine, e.g. of the same plugin built with other settings).
//!
//! The Python port of the reference logic (`plugins/python/orders`, built by the test build
//! with `componentize-py`) is measured the same way when it was built, after its load time
//! with a cold and a warm compiled-artifact cache (a fresh engine each time, as at a restart;
//! printed, one sample each: a cold load is a Cranelift compile of 17 MB);
//! `WEIR_BENCH_PYTHON=off` leaves it out.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use weir_core::domain::{CatalogProduct, LineRequest, OrderRequest};
use weir_core::domain::{OrderEvent, OrderStatus};
use weir_host::capabilities::catalog::StaticCatalog;
use weir_host::runtime::parts::CallParts;
use weir_host::runtime::{Runtime, RuntimeConfig};
use weir_sdk::Plugin as _;

const SKUS: [(&str, i64); 3] = [("KB-001", 8900), ("MS-002", 2900), ("CB-004", 900)];

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio");
    let catalog = catalog_products();
    let python = match weir_plugin_artifacts_python::ORDERS {
        _ if std::env::var("WEIR_BENCH_PYTHON").as_deref() == Ok("off") => None,
        Ok(path) => Some(std::fs::read(path).expect("the Python plugin")),
        Err(reason) => {
            eprintln!("the Python plugin is not measured: {reason}");
            None
        }
    };
    let cache = tempfile::tempdir().expect("tempdir");
    // CPython as a component makes 38 core module instances: a host serving it raises the
    // default limit (32); the Rust plugin is measured with the default.
    let mut python_config = RuntimeConfig::default();
    python_config.budget.core_instances = 64;
    if let Some(bytes) = &python {
        for attempt in ["cold", "warm"] {
            let fresh = rt
                .block_on(async {
                    Runtime::with_artifacts(
                        python_config.clone(),
                        Arc::new(catalog.clone()),
                        Some(cache.path().to_owned()),
                    )
                })
                .expect("engine");
            let started = Instant::now();
            let loaded = rt
                .block_on(fresh.load(bytes.clone(), |_| BTreeMap::new()))
                .expect("the Python plugin loads");
            println!(
                "load python plugin ({:.1} MB), {attempt} artifact cache: {:.1} ms (artifact {})",
                bytes.len() as f64 / 1e6,
                started.elapsed().as_secs_f64() * 1e3,
                loaded.artifact.as_str()
            );
        }
    }
    let (runtime, plugin) = reference_plugin(&rt, RuntimeConfig::default(), &catalog);
    let python_runtime = rt
        .block_on(async {
            Runtime::with_artifacts(
                python_config,
                Arc::new(catalog),
                Some(cache.path().to_owned()),
            )
        })
        .expect("engine");
    let request = OrderRequest {
        customer_id: "cus_bench".into(),
        currency: "EUR".into(),
        lines: SKUS
            .iter()
            .map(|(sku, _)| LineRequest {
                sku: (*sku).into(),
                quantity: 2,
            })
            .collect(),
        metadata: BTreeMap::new(),
    };

    let python = python.map(|bytes| {
        rt.block_on(python_runtime.load(bytes, |_| BTreeMap::new()))
            .expect("the Python plugin loads")
    });

    if let Some(n) = std::env::var("WEIR_BENCH_CALLS")
        .ok()
        .and_then(|n| n.parse::<u64>().ok())
    {
        let before = minor_faults();
        rt.block_on(async {
            for _ in 0..n {
                runtime
                    .place_order(&plugin, &request, None)
                    .await
                    .expect("priced");
            }
        });
        let faults = minor_faults() - before;
        println!(
            "{n} fresh calls: {faults} minor page faults ({:.2} per call)",
            faults as f64 / n.max(1) as f64
        );
        std::process::exit(0);
    }

    if let Ok(others) = std::env::var("WEIR_BENCH_COMPARE") {
        compare(&rt, &runtime, &plugin, &request, &others);
        return;
    }

    parts(c, &rt, &runtime, &plugin, &request);
    // The same logic built for wasm32-wasip2 (the WASI imports of Rust's std), measured in the
    // same run: what building the reference plugin without WASI changed.
    let wasip2 = rt
        .block_on(runtime.load_file(
            std::path::Path::new(weir_plugin_artifacts::ORDERS_WASIP2),
            |_| BTreeMap::new(),
        ))
        .expect("the wasm32-wasip2 build loads");
    println!(
        "imported interfaces: {} (served, wasm32-unknown-unknown), {} (wasm32-wasip2)",
        plugin.imports.len(),
        wasip2.imports.len()
    );
    steps(
        c,
        &rt,
        "parts_wasip2",
        &CallParts::new(&runtime, &wasip2),
        &CallParts::wire(&request),
    );
    keep_resident(c, &rt, &catalog_products(), &request);

    // The whole runtime path twice: as a lightly loaded server runs it (the call inline on
    // the asking thread, `runtime.inline_calls`) and handed to the plugin threads, as every
    // call was before and a busy server still does.
    let (handed_off, handed_off_plugin) = reference_plugin(
        &rt,
        RuntimeConfig {
            inline_calls: false,
            ..RuntimeConfig::default()
        },
        &catalog_products(),
    );
    let mut group = c.benchmark_group("place_order");
    for (name, served, version) in [
        ("component_fresh_instance", &runtime, &plugin),
        (
            "component_fresh_instance_handed_off",
            &handed_off,
            &handed_off_plugin,
        ),
    ] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                served
                    .place_order(version, &request, None)
                    .await
                    .expect("priced")
            })
        });
    }
    if let Some(python) = &python {
        let rust = rt
            .block_on(runtime.place_order(&plugin, &request, None))
            .expect("priced");
        let py = rt
            .block_on(python_runtime.place_order(python, &request, None))
            .expect("priced");
        assert_eq!(py, rust, "both plugins price the benchmark's order alike");
        group.bench_function("python_component_fresh_instance", |b| {
            b.to_async(&rt).iter(|| async {
                python_runtime
                    .place_order(python, &request, None)
                    .await
                    .expect("priced")
            })
        });
    }

    let mut fake = weir_sdk::testing::FakeHost::new();
    for (sku, price) in SKUS {
        fake = fake.product(weir_sdk::Product {
            sku: sku.into(),
            name: sku.into(),
            unit_price: weir_sdk::Money::new(price, "EUR"),
            stock: 1_000_000,
        });
    }
    let guard = fake.install();
    let native_request = weir_sdk::OrderRequest {
        customer_id: "cus_bench".into(),
        currency: "EUR".into(),
        lines: SKUS
            .iter()
            .map(|(sku, _)| weir_sdk::OrderLine {
                sku: (*sku).into(),
                quantity: 2,
            })
            .collect(),
        metadata: vec![],
    };
    group.bench_function("native", |b| {
        b.iter(|| {
            weir_plugin_orders::OrdersPlugin::place_order(native_request.clone()).expect("priced")
        })
    });
    group.finish();
    drop(guard);
}

/// The benchmark's catalog: the three skus, plenty in stock.
fn catalog_products() -> StaticCatalog {
    StaticCatalog::new(SKUS.iter().map(|(sku, price)| CatalogProduct {
        sku: (*sku).into(),
        name: (*sku).into(),
        unit_price: *price,
        currency: "EUR".into(),
        stock: 1_000_000,
    }))
}

/// An engine with `config` over `catalog`, and the reference plugin loaded on it.
fn reference_plugin(
    rt: &tokio::runtime::Runtime,
    config: RuntimeConfig,
    catalog: &StaticCatalog,
) -> (Runtime, Arc<weir_host::runtime::PluginVersion>) {
    let runtime = rt
        .block_on(async { Runtime::new(config, Arc::new(catalog.clone())) })
        .expect("engine");
    let plugin = rt
        .block_on(
            runtime.load(weir_plugin_artifacts::ORDERS_WASM.to_vec(), |_| {
                BTreeMap::new()
            }),
        )
        .expect("reference plugin loads");
    (runtime, plugin)
}

/// `WEIR_BENCH_COMPARE=name=path,...`: whole fresh calls of the served reference plugin
/// (`base`) and of each named component, in alternating batches of 3000 calls (15 rounds),
/// so that drift of a shared machine hits every component alike. Prints each one's median
/// batch mean and its median ratio to `base` in the same round.
fn compare(
    rt: &tokio::runtime::Runtime,
    runtime: &Runtime,
    plugin: &Arc<weir_host::runtime::PluginVersion>,
    request: &OrderRequest,
    others: &str,
) {
    const ROUNDS: usize = 15;
    const CALLS: u32 = 3000;
    let mut all = vec![("base".to_owned(), plugin.clone())];
    for spec in others.split(',') {
        let (name, path) = spec
            .split_once('=')
            .expect("WEIR_BENCH_COMPARE lists name=path pairs");
        let other = rt
            .block_on(runtime.load_file(std::path::Path::new(path), |_| BTreeMap::new()))
            .unwrap_or_else(|e| panic!("{path} loads: {e}"));
        all.push((name.to_owned(), other));
    }
    let wire = CallParts::wire(request);
    let mut means = vec![Vec::with_capacity(ROUNDS); all.len()];
    for _ in 0..ROUNDS {
        for (i, (_, version)) in all.iter().enumerate() {
            let parts = CallParts::new(runtime, version);
            let started = Instant::now();
            rt.block_on(async {
                for _ in 0..CALLS {
                    black_box(one_call(&parts, &wire, Step::Whole).await);
                }
            });
            means[i].push(started.elapsed().as_secs_f64() * 1e6 / f64::from(CALLS));
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for (i, (name, _)) in all.iter().enumerate() {
        let ratios: Vec<f64> = means[i].iter().zip(&means[0]).map(|(a, b)| a / b).collect();
        let (low, high) = ratios
            .iter()
            .fold((f64::MAX, 0.0_f64), |(l, h), r| (l.min(*r), h.max(*r)));
        println!(
            "{name}: whole fresh call median {:.2} us; ratio to base {:.3} (rounds {low:.3}-{high:.3})",
            median(means[i].clone()),
            median(ratios),
        );
    }
}

/// Which step of a fresh call a `parts` benchmark times.
#[derive(Clone, Copy)]
enum Step {
    Store,
    Instantiate,
    Call,
    Teardown,
    Whole,
}

/// One whole fresh call on this thread, timing `step`.
async fn one_call(
    parts: &CallParts<'_>,
    wire: &weir_host::world::bindings::OrderRequest,
    step: Step,
) -> Duration {
    let t0 = Instant::now();
    let mut store = parts.store();
    let t1 = Instant::now();
    let instance = parts.instantiate(&mut store).await;
    let t2 = Instant::now();
    black_box(CallParts::place_order(&instance, &mut store, wire).await);
    let t3 = Instant::now();
    drop(store);
    let t4 = Instant::now();
    match step {
        Step::Store => t1 - t0,
        Step::Instantiate => t2 - t1,
        Step::Call => t3 - t2,
        Step::Teardown => t4 - t3,
        Step::Whole => t4 - t0,
    }
}

fn parts(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    runtime: &Runtime,
    plugin: &weir_host::runtime::PluginVersion,
    request: &weir_core::domain::OrderRequest,
) {
    let parts = CallParts::new(runtime, plugin);
    let wire = CallParts::wire(request);
    rt.block_on(async {
        let mut store = parts.store();
        let instance = parts.instantiate(&mut store).await;
        let at_instantiation = CallParts::memory_grows(&store);
        assert!(CallParts::place_order(&instance, &mut store, &wire).await);
        println!(
            "one place-order: {} host imports, WASI used: {}; memory grow requests: {} at instantiation, {} during the call",
            CallParts::host_calls(&store),
            CallParts::used_wasi(&store),
            at_instantiation,
            CallParts::memory_grows(&store) - at_instantiation
        );
    });
    let order = weir_core::domain::OrderSnapshot {
        id: uuid::Uuid::nil(),
        customer_id: request.customer_id.clone(),
        status: OrderStatus::Placed,
        total: weir_core::domain::Money {
            amount: 23400,
            currency: request.currency.clone(),
        },
    };
    let wire_order = CallParts::wire_order(&order);

    steps(c, rt, "parts", &parts, &wire);
    let mut group = c.benchmark_group("parts");
    group.bench_function("call_transition_no_imports", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let (parts, wire_order) = (&parts, &wire_order);
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut store = parts.store();
                    let instance = parts.instantiate(&mut store).await;
                    let t = Instant::now();
                    black_box(
                        CallParts::transition(
                            &instance,
                            &mut store,
                            wire_order,
                            OrderEvent::PaymentCaptured,
                        )
                        .await,
                    );
                    total += t.elapsed();
                }
                total
            }
        })
    });
    // One store for every call: its log and time budgets must last the whole run.
    let mut unbounded = RuntimeConfig::default();
    unbounded.budget.log_records = u32::MAX;
    unbounded.budget.log_bytes = usize::MAX;
    unbounded.budget.timeout = Duration::from_secs(3600);
    let (reused_runtime, reused_plugin) = reference_plugin(rt, unbounded, &catalog_products());
    let reused = CallParts::new(&reused_runtime, &reused_plugin);
    group.bench_function("reused_instance_lower_bound", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let (parts, wire) = (&reused, &wire);
            async move {
                let mut store = parts.store();
                let instance = parts.instantiate(&mut store).await;
                let t = Instant::now();
                for _ in 0..iters {
                    black_box(CallParts::place_order(&instance, &mut store, wire).await);
                }
                t.elapsed()
            }
        })
    });
    group.finish();
}

/// Each step of a fresh `place-order` of `parts`, and the whole call, in the group `name`.
fn steps(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    parts: &CallParts<'_>,
    wire: &weir_host::world::bindings::OrderRequest,
) {
    let mut group = c.benchmark_group(name);
    for (name, step) in [
        ("store_and_context", Step::Store),
        ("instantiate", Step::Instantiate),
        ("call_place_order", Step::Call),
        ("teardown", Step::Teardown),
        ("whole_fresh_call", Step::Whole),
    ] {
        group.bench_function(name, |b| {
            b.to_async(rt).iter_custom(|iters| async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += one_call(parts, wire, step).await;
                }
                total
            })
        });
    }
    group.finish();
}

/// A whole fresh call (on this thread) with the pool keeping 0, 1, 2 and 4 MiB of each
/// torn-down memory resident, each on its own engine; the page faults per call are printed.
fn keep_resident(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    catalog: &StaticCatalog,
    request: &weir_core::domain::OrderRequest,
) {
    let wire = CallParts::wire(request);
    let mut group = c.benchmark_group("keep_resident");
    for bytes in [0usize, 1 << 20, 2 << 20, 4 << 20] {
        let config = RuntimeConfig {
            keep_resident_bytes: bytes,
            ..RuntimeConfig::default()
        };
        let (runtime, plugin) = reference_plugin(rt, config, catalog);
        let parts = CallParts::new(&runtime, &plugin);
        let reset = runtime.memory_reset();
        let n = 2000;
        let before = minor_faults();
        rt.block_on(async {
            for _ in 0..n {
                one_call(&parts, &wire, Step::Whole).await;
            }
        });
        println!(
            "keep_resident {bytes} (pagemap_scan available: {}): {:.2} minor page faults per call",
            reset.pagemap_scan,
            (minor_faults() - before) as f64 / n as f64
        );
        group.bench_function(format!("{}KiB", bytes >> 10), |b| {
            b.to_async(rt).iter_custom(|iters| {
                let (parts, wire) = (&parts, &wire);
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += one_call(parts, wire, Step::Whole).await;
                    }
                    total
                }
            })
        });
    }
    group.finish();
}

/// Minor page faults of this process so far (all threads), from `/proc/self/stat`.
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').expect("a command name") + 2..];
    rest.split(' ')
        .nth(7)
        .and_then(|f| f.parse().ok())
        .expect("minflt")
}

criterion_group!(benches, bench);
criterion_main!(benches);
