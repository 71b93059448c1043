//! Load run of the edge policies (a benchmark, not a test): see BENCHMARKS.md.
//!
//! Starts a real server (SQLite in a temporary directory, the reference plugin) on loopback,
//! then, with its own single-threaded client runtime on another OS thread:
//! 1. measures the sustainable capacity `C` with a closed loop of `limit` clients;
//! 2. offers an open-loop (fixed arrival rate) load of `0.5 * C` for `seconds`;
//! 3. offers `2 * C` for `seconds`;
//!
//! and prints, per phase, the accepted throughput, p50/p99 of accepted requests, and the
//! fraction shed (`503 OVERLOADED`). Every request is `POST /v1/orders` with a fresh
//! idempotency key: the full path (plugin call, catalog reads, one transaction).
//!
//! `cargo run -p weir-host --example loadgen -- [limit] [seconds] [sqlite|postgres]`
//! (defaults 4, 10, postgres; postgres needs PostgreSQL on 127.0.0.1:5432 and uses a
//! throw-away database).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use weir_host::server::Server;
use weir_host::server::config::Config;

#[derive(Default)]
struct Phase {
    accepted: Vec<Duration>,
    shed: u64,
    other: u64,
    elapsed: Duration,
}

impl Phase {
    fn report(&mut self, name: &str) -> (f64, Duration, Duration) {
        self.accepted.sort();
        let pct = |p: f64| {
            if self.accepted.is_empty() {
                return Duration::ZERO;
            }
            let i =
                ((self.accepted.len() as f64 * p).ceil() as usize).clamp(1, self.accepted.len());
            self.accepted[i - 1]
        };
        let total = self.accepted.len() as u64 + self.shed + self.other;
        let tput = self.accepted.len() as f64 / self.elapsed.as_secs_f64();
        let (p50, p99) = (pct(0.50), pct(0.99));
        println!(
            "{name:<22} offered {total:>6}  accepted {:>6} ({tput:>7.1}/s)  p50 {:>7.2}ms  p99 {:>7.2}ms  shed {:>5.1}%  other errors {}",
            self.accepted.len(),
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            100.0 * self.shed as f64 / total.max(1) as f64,
            self.other,
        );
        (tput, p50, p99)
    }
}

async fn one(client: &reqwest::Client, url: &str, key: u64) -> (u16, Duration) {
    let started = Instant::now();
    let body = serde_json::json!({
        "customer_id": "cus_load",
        "currency": "EUR",
        "lines": [{"sku": "CB-004", "quantity": 1}],
    });
    let status = match client
        .post(url)
        .header("Idempotency-Key", format!("load-{key}"))
        .json(&body)
        .send()
        .await
    {
        Ok(r) => {
            let s = r.status().as_u16();
            let _ = r.bytes().await;
            s
        }
        Err(_) => 0,
    };
    (status, started.elapsed())
}

fn classify(phase: &mut Phase, status: u16, took: Duration) {
    match status {
        201 => phase.accepted.push(took),
        503 => phase.shed += 1,
        _ => phase.other += 1,
    }
}

async fn closed_loop(
    client: &reqwest::Client,
    url: &str,
    workers: usize,
    for_: Duration,
    keys: &AtomicU64,
) -> Phase {
    let started = Instant::now();
    let results = futures::future::join_all((0..workers).map(|_| async {
        let mut local = Phase::default();
        while started.elapsed() < for_ {
            let (status, took) = one(client, url, keys.fetch_add(1, Ordering::Relaxed)).await;
            classify(&mut local, status, took);
        }
        local
    }))
    .await;
    let mut phase = Phase {
        elapsed: started.elapsed(),
        ..Phase::default()
    };
    for r in results {
        phase.accepted.extend(r.accepted);
        phase.shed += r.shed;
        phase.other += r.other;
    }
    phase
}

async fn open_loop(
    client: &reqwest::Client,
    url: &str,
    rate: f64,
    for_: Duration,
    keys: &Arc<AtomicU64>,
) -> Phase {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = Vec::new();
    while started.elapsed() < for_ {
        tick.tick().await;
        let (client, url, key) = (
            client.clone(),
            url.to_owned(),
            keys.fetch_add(1, Ordering::Relaxed),
        );
        tasks.push(tokio::spawn(async move { one(&client, &url, key).await }));
    }
    let mut phase = Phase {
        elapsed: started.elapsed(),
        ..Phase::default()
    };
    for t in tasks {
        if let Ok((status, took)) = t.await {
            classify(&mut phase, status, took);
        }
    }
    phase
}

fn main() {
    let mut args = std::env::args().skip(1);
    let limit: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let postgres = args.next().is_none_or(|a| a == "postgres");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ops_listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    config.policy.max_concurrency = limit;
    config.policy.rate_limit.enabled = false; // one client address drives all the load

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pg = postgres.then(|| {
        let db = server_rt
            .block_on(weir_host::storage::testing::PgTestDb::create())
            .expect("a PostgreSQL test database (is PostgreSQL on 127.0.0.1:5432?)");
        config.database_url = Some(weir_host::server::config::DatabaseUrl::new(db.url()));
        db
    });
    config.validate().expect("valid config");
    let server = server_rt
        .block_on(Server::start(config))
        .expect("server starts");
    let url = format!("http://{}/v1/orders", server.api_addr);

    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = std::thread::spawn(move || {
        client_rt.block_on(async move {
            let client = reqwest::Client::builder().pool_max_idle_per_host(1024).build().unwrap();
            let keys = Arc::new(AtomicU64::new(0));
            // Warm-up: connections, page cache, JIT-free but allocator and pool warm.
            closed_loop(&client, &url, limit, Duration::from_secs(2), &keys).await;
            let mut cap = closed_loop(&client, &url, limit, Duration::from_secs(seconds), &keys).await;
            println!(
                "{} | limit {limit} in flight | {seconds}s per phase",
                if postgres { "postgres" } else { "sqlite" }
            );
            let (capacity, _, _) = cap.report("capacity (closed loop)");
            let mut half = open_loop(&client, &url, capacity * 0.5, Duration::from_secs(seconds), &keys).await;
            let (_, _, p99_half) = half.report("0.5x capacity (open)");
            let mut double = open_loop(&client, &url, capacity * 2.0, Duration::from_secs(seconds), &keys).await;
            let (tput, _, p99_double) = double.report("2x capacity (open)");
            println!(
                "accepted throughput at 2x = {:.2} of capacity; accepted p99 at 2x / p99 at 0.5x = {:.2}",
                tput / capacity,
                p99_double.as_secs_f64() / p99_half.as_secs_f64().max(1e-9)
            );
        })
    })
    .join();
    server_rt.block_on(server.shutdown(Duration::from_secs(5)));
    if let Some(db) = pg {
        server_rt
            .block_on(db.drop_db())
            .expect("drop the load database");
    }
    report.expect("load run");
}
