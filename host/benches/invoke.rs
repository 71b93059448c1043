//! One `place-order` call: a fresh component instance + call + teardown through the host
//! runtime, against the same plugin logic compiled natively and called directly (with the
//! SDK's in-memory fake host). Run with `cargo bench -p weir-host --bench invoke`.
//!
//! The Python port of the reference logic (`plugins/python/orders`, built by the test build
//! with `componentize-py`) is measured the same way when it was built, after its load time
//! with a cold and a warm compiled-artifact cache (a fresh engine each time, as at a restart;
//! printed, one sample each: a cold load is a Cranelift compile of 17 MB).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use weir_core::domain::{CatalogProduct, LineRequest, OrderRequest};
use weir_host::capabilities::catalog::StaticCatalog;
use weir_host::runtime::{Runtime, RuntimeConfig};
use weir_sdk::Plugin as _;

const SKUS: [(&str, i64); 3] = [("KB-001", 8900), ("MS-002", 2900), ("CB-004", 900)];

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio");
    let catalog = StaticCatalog::new(SKUS.iter().map(|(sku, price)| CatalogProduct {
        sku: (*sku).into(),
        name: (*sku).into(),
        unit_price: *price,
        currency: "EUR".into(),
        stock: 1_000_000,
    }));
    let python = match weir_plugin_artifacts_python::ORDERS {
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
    let runtime = rt
        .block_on(async { Runtime::new(RuntimeConfig::default(), Arc::new(catalog.clone())) })
        .expect("engine");
    let python_runtime = rt
        .block_on(async {
            Runtime::with_artifacts(
                python_config,
                Arc::new(catalog),
                Some(cache.path().to_owned()),
            )
        })
        .expect("engine");
    let plugin = rt
        .block_on(
            runtime.load(weir_plugin_artifacts::ORDERS_WASM.to_vec(), |_| {
                BTreeMap::new()
            }),
        )
        .expect("reference plugin loads");
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

    let mut group = c.benchmark_group("place_order");
    group.bench_function("component_fresh_instance", |b| {
        b.to_async(&rt).iter(|| async {
            runtime
                .place_order(&plugin, &request, None)
                .await
                .expect("priced")
        })
    });
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

criterion_group!(benches, bench);
criterion_main!(benches);
