//! Load run of the retention purge (a benchmark, not a test): see BENCHMARKS.md, "Retention
//! purge".
//!
//! Starts a real server (the reference plugin) on SQLite or a throw-away PostgreSQL database,
//! then, with `clients` closed-loop clients of `POST /v1/orders` (fresh idempotency keys) on
//! their own single-threaded runtime on another OS thread:
//! 1. measures a steady phase of `seconds` (the baseline p99);
//! 2. inserts `rows` published outbox events dated 2020 (expired), then runs the retention
//!    purge as the service's worker does ([`weir_core::app::purge_expired`], batches of
//!    `batch` rows, `pause_ms` between batches) while the clients keep going, until it is done;
//! 3. inserts the same rows again and deletes them with one unbounded `DELETE` (how the
//!    idempotency purge worked before batching) under the same load;
//!
//! and prints, per phase, throughput, p50/p99/max of `POST /v1/orders`, the purge's duration
//! and its longest batch, and the ratios of each purge phase's p99 to the steady p99.
//!
//! `cargo run --release -p weir-host --example retention -- [sqlite|postgres] [rows] [clients]
//! [seconds] [batch] [pause_ms]` (defaults sqlite, 1000000, 4, 10, 1000, 50).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use weir_core::ports::{Expiring, RetentionStore, StoreError};
use weir_host::server::Server;
use weir_host::server::config::{Config, DatabaseUrl};
use weir_host::storage::StoreOptions;

#[derive(Default)]
struct Phase {
    latencies: Vec<Duration>,
    errors: u64,
    elapsed: Duration,
}

impl Phase {
    fn report(&mut self, name: &str) -> Duration {
        self.latencies.sort();
        let pct = |p: f64| {
            if self.latencies.is_empty() {
                return Duration::ZERO;
            }
            let i =
                ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len());
            self.latencies[i - 1]
        };
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let p99 = pct(0.99);
        println!(
            "{name:<34} {:>6} orders ({:>6.1}/s)  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>8.2} ms  errors {}",
            self.latencies.len(),
            self.latencies.len() as f64 / self.elapsed.as_secs_f64(),
            ms(pct(0.50)),
            ms(p99),
            ms(self.latencies.last().copied().unwrap_or_default()),
            self.errors,
        );
        p99
    }
}

/// Closed-loop clients until `stop` is set.
async fn drive(
    client: &reqwest::Client,
    url: &str,
    clients: u64,
    stop: &AtomicBool,
    keys: &AtomicU64,
) -> Phase {
    let started = Instant::now();
    let results = futures::future::join_all((0..clients).map(|_| async {
        let mut local = Phase::default();
        while !stop.load(Ordering::Relaxed) {
            let began = Instant::now();
            let key = keys.fetch_add(1, Ordering::Relaxed);
            let ok = client
                .post(url)
                .header("Idempotency-Key", format!("retention-{key}"))
                .json(&serde_json::json!({
                    "customer_id": "cus_load",
                    "currency": "EUR",
                    "lines": [{"sku": "CB-004", "quantity": 1}],
                }))
                .send()
                .await
                .is_ok_and(|r| r.status().as_u16() == 201);
            if ok {
                local.latencies.push(began.elapsed());
            } else {
                local.errors += 1;
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
        phase.latencies.extend(r.latencies);
        phase.errors += r.errors;
    }
    phase
}

/// Inserts `rows` outbox events published (and occurred) on 2020-01-01.
async fn fill(url: &str, postgres: bool, rows: u64, round: u32) {
    let started = Instant::now();
    if postgres {
        let pool = sqlx::PgPool::connect(url).await.expect("connect to fill");
        sqlx::query(
            "INSERT INTO outbox_events (id, event_type, source, subject, occurred_at, data, \
             published_at) SELECT gen_random_uuid(), 'order.placed', '/weir/bench', 'bench', \
             TIMESTAMPTZ '2020-01-01 00:00:00+00', '{}'::jsonb, \
             TIMESTAMPTZ '2020-01-01 00:00:00+00' FROM generate_series(1, $1)",
        )
        .bind(i64::try_from(rows).unwrap())
        .execute(&pool)
        .await
        .expect("fill the outbox");
        pool.close().await;
    } else {
        let pool = sqlx::SqlitePool::connect(url)
            .await
            .expect("connect to fill");
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) \
             INSERT INTO outbox_events (id, event_type, source, subject, occurred_at, data, \
             published_at) SELECT printf('00000000-0000-4000-8%03d-%012d', ?, i), \
             'order.placed', '/weir/bench', 'bench', '2020-01-01T00:00:00.000000Z', '{}', \
             '2020-01-01T00:00:00.000000Z' FROM n",
        )
        .bind(i64::try_from(rows).unwrap())
        .bind(i64::from(round))
        .execute(&pool)
        .await
        .expect("fill the outbox");
        pool.close().await;
    }
    println!(
        "inserted {rows} expired outbox rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// A store timing its longest batch.
struct Timed {
    inner: Arc<dyn weir_host::storage::Store>,
    longest: std::sync::Mutex<Duration>,
}

#[async_trait::async_trait]
impl RetentionStore for Timed {
    async fn purge_expired(
        &self,
        kind: Expiring,
        before: chrono::DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let started = Instant::now();
        let n = self.inner.purge_expired(kind, before, limit).await;
        let took = started.elapsed();
        let mut longest = self.longest.lock().unwrap();
        *longest = (*longest).max(took);
        n
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let postgres = args.next().is_some_and(|a| a == "postgres");
    let mut num = |default: u64| args.next().and_then(|a| a.parse().ok()).unwrap_or(default);
    let (rows, clients, seconds, batch, pause_ms) =
        (num(1_000_000), num(4), num(10), num(1000), num(50));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ops_listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
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
        config.database_url = Some(DatabaseUrl::new(db.url()));
        db
    });
    config.validate().expect("valid config");
    let db_url = config.effective_database_url().expose().to_owned();
    let server = server_rt
        .block_on(Server::start(config))
        .expect("server starts");
    let url = format!("http://{}/v1/orders", server.api_addr);
    let store = server_rt
        .block_on(weir_host::storage::connect(
            &db_url,
            &StoreOptions::default(),
        ))
        .expect("a second pool for the purge");

    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let purge_rt = server_rt.handle().clone();
    let report = std::thread::spawn(move || {
        client_rt.block_on(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1024)
                .build()
                .unwrap();
            let keys = AtomicU64::new(0);
            println!(
                "{} | {rows} rows | {clients} clients | batch {batch}, pause {pause_ms} ms",
                if postgres { "postgres" } else { "sqlite" }
            );
            let timed = |stop: &'static AtomicBool, d: Duration| async move {
                tokio::time::sleep(d).await;
                stop.store(true, Ordering::Relaxed);
            };
            // Warm-up, then the steady baseline.
            let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
            let _ = futures::join!(
                drive(&client, &url, clients, stop, &keys),
                timed(stop, Duration::from_secs(2))
            );
            let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
            let (mut steady, ()) = futures::join!(
                drive(&client, &url, clients, stop, &keys),
                timed(stop, Duration::from_secs(seconds))
            );
            let p99_steady = steady.report("steady (no purge)");

            // The batched purge, as the worker runs it.
            fill(&db_url, postgres, rows, 1).await;
            let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
            let timed_store = Arc::new(Timed {
                inner: store.clone(),
                longest: std::sync::Mutex::new(Duration::ZERO),
            });
            let purge = {
                let timed_store = timed_store.clone();
                purge_rt.spawn(async move {
                    let started = Instant::now();
                    let cutoff = Utc.with_ymd_and_hms(2021, 1, 1, 0, 0, 0).unwrap();
                    let purged = weir_core::app::purge_expired(
                        timed_store.as_ref(),
                        Expiring::PublishedEvents,
                        cutoff,
                        u32::try_from(batch).unwrap(),
                        |_| async move {
                            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
                            true
                        },
                    )
                    .await
                    .expect("purge");
                    stop.store(true, Ordering::Relaxed);
                    (purged, started.elapsed())
                })
            };
            let mut during = drive(&client, &url, clients, stop, &keys).await;
            let (purged, took) = purge.await.unwrap();
            let p99_batched = during.report("during the batched purge");
            println!(
                "batched purge: {} rows in {} batches, {:.1} s, longest batch {:.2} ms",
                purged.rows,
                purged.batches,
                took.as_secs_f64(),
                timed_store.longest.lock().unwrap().as_secs_f64() * 1e3
            );

            // The same rows deleted by one unbounded statement.
            fill(&db_url, postgres, rows, 2).await;
            let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
            let purge = {
                let db_url = db_url.clone();
                purge_rt.spawn(async move {
                    let started = Instant::now();
                    let sql = "DELETE FROM outbox_events WHERE published_at IS NOT NULL AND \
                               published_at < '2021-01-01'";
                    let n = if postgres {
                        let pool = sqlx::PgPool::connect(&db_url).await.unwrap();
                        sqlx::query(sql).execute(&pool).await.unwrap().rows_affected()
                    } else {
                        let pool = sqlx::SqlitePool::connect(&db_url).await.unwrap();
                        sqlx::query(sql).execute(&pool).await.unwrap().rows_affected()
                    };
                    stop.store(true, Ordering::Relaxed);
                    (n, started.elapsed())
                })
            };
            let mut unbounded = drive(&client, &url, clients, stop, &keys).await;
            let (n, took) = purge.await.unwrap();
            let p99_unbounded = unbounded.report("during one unbounded DELETE");
            println!("unbounded DELETE: {n} rows in {:.1} s", took.as_secs_f64());
            let ratio = |p: Duration| p.as_secs_f64() / p99_steady.as_secs_f64().max(1e-9);
            println!(
                "p99 during batched purge / steady = {:.2}; p99 during unbounded DELETE / steady = {:.2}",
                ratio(p99_batched),
                ratio(p99_unbounded)
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
