//! Load run of the edge policies (a benchmark, not a test): see BENCHMARKS.md.
//!
//! Starts a real server (SQLite in a temporary directory, the reference plugin) on loopback,
//! then, with its own single-threaded client runtime on another OS thread:
//! 1. warms up (one client for 1 s, then the capacity run's clients for 1 s) and measures
//!    the sustainable capacity `C` with a closed loop of `limit` clients (`clients` with the
//!    adaptive limit);
//! 2. offers an open-loop (fixed arrival rate) load of `0.5 * C` for `seconds`;
//! 3. offers `2 * C` for `seconds`;
//!
//! and prints, per phase, the accepted throughput, p50/p99 of accepted requests, and the
//! fraction shed (`503 OVERLOADED`). Every request is `POST /v1/orders` with a fresh
//! idempotency key: the full path (plugin call, catalog reads, one transaction).
//!
//! `cargo run -p weir-host --example loadgen -- [limit] [seconds] [sqlite|postgres] [adaptive [clients]]`
//! (defaults 4, 10, postgres; postgres needs PostgreSQL on 127.0.0.1:5432 and uses a
//! throw-away database). With `adaptive`, `policy.adaptive_concurrency` is on and `limit` is
//! its ceiling (`policy.max_concurrency`) and the capacity is measured with `clients` (at
//! most 8 by default) clients instead of `limit`; the limit it has reached is printed after
//! each phase, read from the server's own `/metrics`. `WEIR__*` variables apply as they do
//! to `weir serve` (their names are printed), except the database, which the arguments set.

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
        let over = |ms: u64| {
            let bound = Duration::from_millis(ms);
            let n = self.accepted.len() - self.accepted.partition_point(|d| *d <= bound);
            100.0 * n as f64 / self.accepted.len().max(1) as f64
        };
        println!(
            "    client side: > 5 ms {:.2} %, > 10 ms {:.2} %, > 25 ms {:.2} %",
            over(5),
            over(10),
            over(25)
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
            if status == 503 {
                // Shed (only below the adaptive limit's ceiling): a client that backs off
                // a little, not one that spins on refusals.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
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

/// The server's own duration histogram of answered orders (`POST /v1/orders`, status class
/// `2xx`): cumulative count by bucket bound, as `/metrics` has it.
fn server_buckets(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| {
            l.starts_with("http_server_request_duration_seconds_bucket{")
                && l.contains("http_route=\"/v1/orders\"")
                && l.contains("http_request_method=\"POST\"")
                && l.contains("http_response_status_class=\"2xx\"")
        })
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?.to_owned();
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

/// Print, for the phase since `before`, the share of answered orders the server itself took
/// longer than each bucket bound from 5 ms up (the client's latencies include its own
/// waits for a CPU); returns the buckets now.
fn server_tail(text: &str, before: &[(String, f64)]) -> Vec<(String, f64)> {
    let now = server_buckets(text);
    if now.is_empty() || before.is_empty() {
        println!("    server side: no histogram in /metrics");
        return now;
    }
    let count =
        |b: &[(String, f64)], le: &str| b.iter().find(|(l, _)| l == le).map_or(0.0, |(_, c)| *c);
    let total = count(&now, "+Inf") - count(before, "+Inf");
    let shares: Vec<String> = ["0.005", "0.01", "0.025"]
        .iter()
        .map(|le| {
            let within = count(&now, le) - count(before, le);
            format!(
                "> {} ms {:.2} %",
                le.parse::<f64>().unwrap_or(0.0) * 1e3,
                100.0 * (total - within) / total.max(1.0)
            )
        })
        .collect();
    println!("    server side: {}", shares.join(", "));
    now
}

async fn metrics_text(client: &reqwest::Client, metrics_url: &str) -> String {
    match client.get(metrics_url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => format!("# metrics unavailable: {e}"),
    }
}

/// Print the adaptive limit and the unloaded latency the server measured, from its metrics.
fn adaptive_limit(text: &str, adaptive: bool) {
    if !adaptive {
        return;
    }
    let found: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("weir_http_server_concurrency_limit")
                || l.starts_with("weir_http_server_min_rtt")
        })
        .collect();
    println!("    adaptive: {}", found.join("; "));
}

fn main() {
    let mut args = std::env::args().skip(1);
    let limit: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let postgres = args.next().is_none_or(|a| a == "postgres");
    let adaptive = args.next().is_some_and(|a| a == "adaptive");
    // The capacity run's clients: the limit when it is fixed; with the adaptive limit, fewer
    // than its ceiling (the rest would only be shed).
    let clients: usize = match (adaptive, args.next()) {
        (false, _) => limit,
        (true, None) => limit.min(8),
        (true, Some(a)) => match a.parse() {
            Ok(n) if n > 0 => n,
            _ => panic!("clients must be a positive number, not {a:?}"),
        },
    };
    if let Some(extra) = args.next() {
        panic!(
            "unexpected argument {extra:?}: [limit] [seconds] [sqlite|postgres] [adaptive [clients]]"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // `WEIR__*` variables apply as they do to `weir serve` (e.g.
    // `WEIR__POLICY__ADAPTIVE_CONCURRENCY__UPDATE_INTERVAL_MS`); the arguments win.
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ops_listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        ..Config::load(&Default::default()).expect("configuration from WEIR__* variables")
    };
    // What the arguments set wins over the environment; say what else it changed.
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("WEIR__")) {
        println!("# set from the environment: {key}");
    }
    config.database_url = None;
    config.policy.max_concurrency = limit;
    config.policy.adaptive_concurrency.enabled = adaptive;
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
    let metrics_url = format!("http://{}/metrics", server.ops_addr);

    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = std::thread::spawn(move || {
        client_rt.block_on(async move {
            let client = reqwest::Client::builder().pool_max_idle_per_host(1024).build().unwrap();
            let keys = Arc::new(AtomicU64::new(0));
            // Warm-up: connections, page cache, allocator and pool. One client first, as a
            // service's first requests come before its full load (the adaptive limit
            // measures its unloaded latency there), then the capacity run's clients.
            closed_loop(&client, &url, 1, Duration::from_secs(1), &keys).await;
            closed_loop(&client, &url, clients, Duration::from_secs(1), &keys).await;
            let mut cap = closed_loop(&client, &url, clients, Duration::from_secs(seconds), &keys).await;
            println!(
                "{} | limit {limit} in flight{} | {seconds}s per phase",
                if postgres { "postgres" } else { "sqlite" },
                if adaptive { format!(" (adaptive ceiling), capacity with {clients} clients") } else { String::new() },
            );
            let (capacity, _, _) = cap.report("capacity (closed loop)");
            let text = metrics_text(&client, &metrics_url).await;
            adaptive_limit(&text, adaptive);
            let buckets = server_buckets(&text);
            let mut half = open_loop(&client, &url, capacity * 0.5, Duration::from_secs(seconds), &keys).await;
            let (_, _, p99_half) = half.report("0.5x capacity (open)");
            let text = metrics_text(&client, &metrics_url).await;
            adaptive_limit(&text, adaptive);
            let buckets = server_tail(&text, &buckets);
            let mut double = open_loop(&client, &url, capacity * 2.0, Duration::from_secs(seconds), &keys).await;
            let (tput, _, p99_double) = double.report("2x capacity (open)");
            let text = metrics_text(&client, &metrics_url).await;
            adaptive_limit(&text, adaptive);
            server_tail(&text, &buckets);
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
