//! Benchmark of the plugin lifecycle (figures, not assertions): see BENCHMARKS.md.
//!
//! 1. Loading a component with a cold and a warm compiled-artifact cache (a fresh engine each
//!    time, as at a restart): the reference plugin and, when `WEIR_BENCH_LARGE_COMPONENT`
//!    names one, a large component (e.g. the Python plugin built by `componentize-py`).
//! 2. Server start-up on a fresh data directory (cold cache) and again on the same one (warm).
//! 3. Swap latency in one process: the release `PUT` answered -> the first order decided by
//!    the new version; and across two replicas on one PostgreSQL database: the `PUT` on one
//!    -> the other serving the new version.
//! 4. `POST /v1/orders` latency with `clients` closed-loop clients for `seconds`, steady,
//!    then again while the release flips between two versions every 250 ms.
//!
//! `cargo run --release -p weir-host --example releases -- [clients] [seconds]`
//! (defaults 4, 6; part 3's replicas need PostgreSQL on 127.0.0.1:5432).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weir_host::capabilities::catalog::StaticCatalog;
use weir_host::runtime::{Runtime, RuntimeConfig};
use weir_host::server::Server;
use weir_host::server::config::{Config, DatabaseUrl, Secret};

const TOKEN: &str = "release-benchmark-admin-token";

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn load_twice(name: &str, bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let mut figures = Vec::new();
    for attempt in ["cold", "warm"] {
        let rt = Runtime::with_artifacts(
            RuntimeConfig::default(),
            Arc::new(StaticCatalog::default()),
            Some(dir.path().to_owned()),
        )
        .unwrap();
        let started = Instant::now();
        let v = rt.load(bytes.to_vec(), |_| BTreeMap::new()).await.unwrap();
        figures.push(started.elapsed());
        println!(
            "load {name:<28} {attempt} cache  {:>9.1} ms  (artifact {})",
            ms(started.elapsed()),
            v.artifact.as_str()
        );
    }
    println!(
        "load {name:<28} warm / cold = {:.3}",
        figures[1].as_secs_f64() / figures[0].as_secs_f64()
    );
}

fn config(dir: &std::path::Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ops_listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_owned(),
        admin_token: Some(Secret::new(TOKEN)),
        ..Config::default()
    }
}

async fn upload(c: &reqwest::Client, ops: &str, bytes: Vec<u8>) -> String {
    let res: Value = c
        .post(format!("{ops}/admin/v1/plugins"))
        .bearer_auth(TOKEN)
        .body(bytes)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    res["digest"].as_str().expect("admitted").to_owned()
}

async fn set_stable(c: &reqwest::Client, ops: &str, digest: &str) {
    let plugin: Value = c
        .get(format!("{ops}/admin/v1/plugins/orders"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let generation = plugin["release"]["generation"].as_i64().unwrap_or(0);
    let res = c
        .put(format!("{ops}/admin/v1/plugins/orders/release"))
        .bearer_auth(TOKEN)
        .json(&json!({"generation": generation, "stable": digest}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

async fn place(c: &reqwest::Client, api: &str, key: u64) -> (u16, String, Duration) {
    let started = Instant::now();
    let res = c
        .post(format!("{api}/v1/orders"))
        .header("Idempotency-Key", format!("bench-{key}"))
        .json(&json!({"customer_id": "cus_bench", "currency": "EUR",
                      "lines": [{"sku": "CB-004", "quantity": 1}]}))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap_or_default();
    (
        status,
        body["plugin"]["digest"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        started.elapsed(),
    )
}

fn percentiles(mut d: Vec<Duration>) -> (f64, f64) {
    d.sort();
    let at = |q: f64| ms(d[((d.len() as f64 * q).ceil() as usize).clamp(1, d.len()) - 1]);
    (at(0.5), at(0.99))
}

async fn closed_loop(
    c: &reqwest::Client,
    api: &str,
    clients: usize,
    seconds: u64,
    keys: &Arc<AtomicU64>,
) -> (Vec<Duration>, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (c, api, keys, stop) = (c.clone(), api.to_owned(), keys.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (Vec::new(), 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let (status, _, d) =
                        place(&c, &api, keys.fetch_add(1, Ordering::Relaxed)).await;
                    if status == 201 {
                        ok.push(d);
                    } else {
                        failed += 1;
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut all, mut failed) = (Vec::new(), 0);
    for t in tasks {
        let (ok, f) = t.await.unwrap();
        all.extend(ok);
        failed += f;
    }
    (all, failed)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let clients: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(4);
    let seconds: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(6);
    let c = reqwest::Client::new();

    // 1. Loading, cold and warm artifact cache.
    load_twice("reference (Rust)", weir_plugin_artifacts::ORDERS_WASM).await;
    if let Ok(path) = std::env::var("WEIR_BENCH_LARGE_COMPONENT") {
        let bytes = std::fs::read(&path).unwrap();
        load_twice(&format!("large ({} MB)", bytes.len() >> 20), &bytes).await;
    }

    // 2. Server start-up, cold and warm.
    let dir = tempfile::tempdir().unwrap();
    let mut starts = Vec::new();
    for attempt in ["cold", "warm"] {
        let started = Instant::now();
        let server = Server::start(config(dir.path())).await.unwrap();
        starts.push(started.elapsed());
        println!(
            "server start-up          {attempt} cache  {:>9.1} ms",
            ms(started.elapsed())
        );
        server.shutdown(Duration::from_secs(5)).await;
    }
    println!(
        "server start-up          warm / cold = {:.3}",
        starts[1].as_secs_f64() / starts[0].as_secs_f64()
    );

    // 3. Swap latency, one process.
    let server = Server::start(config(dir.path())).await.unwrap();
    let (api, ops) = (
        format!("http://{}", server.api_addr),
        format!("http://{}", server.ops_addr),
    );
    let a = server.state.orders_plugin().unwrap().meta.digest.clone();
    let started = Instant::now();
    let b = upload(
        &c,
        &ops,
        std::fs::read(weir_plugin_artifacts::ORDERS_NEXT).unwrap(),
    )
    .await;
    println!(
        "admission of orders 0.2.0 (upload answered)   {:>9.1} ms",
        ms(started.elapsed())
    );
    let keys = Arc::new(AtomicU64::new(0));
    let mut swaps = Vec::new();
    for (i, to) in [&b, &a, &b, &a, &b].into_iter().enumerate() {
        set_stable(&c, &ops, to).await;
        let flipped = Instant::now();
        loop {
            let (status, digest, _) = place(&c, &api, keys.fetch_add(1, Ordering::Relaxed)).await;
            assert_eq!(status, 201);
            if digest == *to {
                break;
            }
            assert!(i < 100);
        }
        swaps.push(flipped.elapsed());
    }
    let (p50, _) = percentiles(swaps.clone());
    println!(
        "swap, one process: release answered -> first order by the new version: median {p50:.2} ms (of {} swaps; includes one order)",
        swaps.len()
    );

    // 4. p99 steady vs during swaps.
    let (steady, failed_steady) = closed_loop(&c, &api, clients, seconds, &keys).await;
    let flipping = Arc::new(AtomicBool::new(true));
    let flipper = {
        let (c, ops, a, b, flipping) = (
            c.clone(),
            ops.clone(),
            a.clone(),
            b.clone(),
            flipping.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0u64;
            while flipping.load(Ordering::Relaxed) {
                set_stable(&c, &ops, if n.is_multiple_of(2) { &a } else { &b }).await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            n
        })
    };
    let (during, failed_during) = closed_loop(&c, &api, clients, seconds, &keys).await;
    flipping.store(false, Ordering::Relaxed);
    let flips = flipper.await.unwrap();
    let ((s50, s99), (d50, d99)) = (percentiles(steady.clone()), percentiles(during.clone()));
    println!(
        "POST /v1/orders, {clients} clients, {seconds} s: steady {} ok ({:.0}/s) p50 {s50:.2} ms p99 {s99:.2} ms, {failed_steady} failed",
        steady.len(),
        steady.len() as f64 / seconds as f64
    );
    println!(
        "POST /v1/orders during {flips} swaps: {} ok ({:.0}/s) p50 {d50:.2} ms p99 {d99:.2} ms, {failed_during} failed; p99 during / steady = {:.2}",
        during.len(),
        during.len() as f64 / seconds as f64,
        d99 / s99
    );
    server.shutdown(Duration::from_secs(5)).await;

    // 3b. Across replicas on one PostgreSQL database.
    match weir_host::storage::testing::PgTestDb::create().await {
        Err(e) => println!("replicas: skipped (no PostgreSQL: {e})"),
        Ok(db) => {
            let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let replica = |d: &std::path::Path| {
                let mut cfg = config(d);
                cfg.database_url = Some(DatabaseUrl::new(db.url()));
                Server::start(cfg)
            };
            let one = replica(d1.path()).await.unwrap();
            let two = replica(d2.path()).await.unwrap();
            let ops_one = format!("http://{}", one.ops_addr);
            let b = upload(
                &c,
                &ops_one,
                std::fs::read(weir_plugin_artifacts::ORDERS_NEXT).unwrap(),
            )
            .await;
            let a = one.state.orders_plugin().unwrap().meta.digest.clone();
            let mut lags = Vec::new();
            for to in [&b, &a, &b, &a, &b] {
                set_stable(&c, &ops_one, to).await;
                let put = Instant::now();
                while two.state.orders_plugin().unwrap().meta.digest != *to {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                lags.push(put.elapsed());
            }
            let (p50, _) = percentiles(lags.clone());
            let max = lags.iter().max().copied().unwrap_or_default();
            println!(
                "swap across replicas (PostgreSQL NOTIFY): release answered on one -> served by the other: median {p50:.2} ms, max {:.2} ms (of {})",
                ms(max),
                lags.len()
            );
            one.shutdown(Duration::from_secs(5)).await;
            two.shutdown(Duration::from_secs(5)).await;
            db.drop_db().await.unwrap();
        }
    }
}
