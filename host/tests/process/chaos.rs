//! Chaos tests with real processes: the `weir` binary on SQLite and PostgreSQL, signalled
//! with SIGTERM and SIGKILL while a client places orders with idempotency keys.
//!
//! Invariants checked (issue 7):
//! - SIGTERM under load (SQLite, PostgreSQL, PostgreSQL with RabbitMQ events; issue 18): at
//!   the signal at least `HELD` requests and `HELD` plugin invocations are in flight, held for
//!   a known time by the `slow-orders` test plugin (`hold_ms`), as the server's own
//!   `shutdown: readiness failing` line counts them (an empty drain cannot pass); during the
//!   non-zero pre-stop delay `/readyz` answers 503 while the API still admits a new request,
//!   which is served; every request the server admitted is answered (the server's count of
//!   admitted requests equals the responses the client received), with zero 5xx; the process
//!   exits 0 within the drain deadline plus a hang guard; a real OTLP receiver holds the
//!   server span of every request answered during the drain; requests that failed at the
//!   connection level were never processed (a retry with the same key after restart creates
//!   the order fresh); with the broker every order's event is published after the restart.
//! - Slow plugin at shutdown: an invocation longer than the drain deadline is interrupted and
//!   answered with a retryable `503 SHUTTING_DOWN`; after a restart with the reference plugin
//!   the client's retry with the same key produces exactly one order.
//! - kill -9 under load, repeatedly, then restart (SQLite here; PostgreSQL with the broker in
//!   [`crash`]): every order acknowledged with 2xx exists exactly once, every key maps to one
//!   order, and no order exists without its outbox event.
//! - kill -9 the consumer mid-message (PostgreSQL and RabbitMQ): while the consumer's
//!   transaction waits on a row lock the test holds, the process is killed; nothing of it
//!   commits, the broker redelivers after the restart and the payment applies once (version
//!   +1, one inbox record, one `order.paid` event, queue empty).
//! - SIGTERM with a delivery in hand and one prefetched: the one in hand is finished, the
//!   prefetched one is nacked with requeue (`messages_requeued = 1` on the `drain` line) and
//!   applied once after the restart.
//! - [`crash`]: kill -9 with an order transaction provably open and with the broker (every
//!   committed order's event delivered, once after deduplication), and the consumer killed
//!   between its commit and its ack (the inbox deduplicates the redelivery).
//!
//! Only loopback; every wait is bounded in time and count and fails with a message naming what
//! it waited for. No assertion depends on timing: the exit bounds are hang guards, and the
//! in-flight proof needs the signal to arrive within `HOLD_MS` (4 s) of the test seeing the
//! held calls run.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::RwLock;
use weir_host::storage::testing::PgTestDb;
use weir_tests::otlp::Receiver;

use crate::support::{POLL, WAIT, Weir, client, field, plugin_dir, serve};

mod crash;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// The database and data directory shared by the successive processes of one test.
struct Deployment {
    dir: tempfile::TempDir,
    pg: Option<PgTestDb>,
}

impl Deployment {
    async fn new(backend: Backend) -> Self {
        let pg =
            match backend {
                Backend::Sqlite => None,
                Backend::Postgres => Some(PgTestDb::create().await.expect(
                    "create a PostgreSQL test database (is PostgreSQL on 127.0.0.1:5432?)",
                )),
            };
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            pg,
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Write `toml` as the configuration file and return its path.
    fn config(&self, name: &str, toml: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, toml).expect("write config");
        path
    }

    async fn start(&self, config: &Path) -> Weir {
        self.start_with(config, &[]).await
    }

    /// [`Deployment::start`] with `env` set for the process.
    async fn start_with(&self, config: &Path, env: &[(&str, String)]) -> Weir {
        let mut cmd = serve(&self.data_dir());
        cmd.arg("--config").arg(config);
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(pg) = &self.pg {
            cmd.arg("--database-url").arg(pg.url());
        }
        Weir::spawn(cmd).await
    }

    /// Count rows with `sql` (a `SELECT COUNT(*)`), on whichever backend this is.
    async fn count(&self, sql_pg: &'static str, sql_sqlite: &'static str) -> i64 {
        match &self.pg {
            Some(pg) => {
                let pool = sqlx::PgPool::connect(pg.url()).await.expect("connect pg");
                let n: i64 = sqlx::query_scalar(sql_pg)
                    .fetch_one(&pool)
                    .await
                    .expect(sql_pg);
                pool.close().await;
                n
            }
            None => {
                let url = format!("sqlite://{}", self.data_dir().join("weir.db").display());
                let pool = sqlx::SqlitePool::connect(&url)
                    .await
                    .expect("connect sqlite");
                let n: i64 = sqlx::query_scalar(sql_sqlite)
                    .fetch_one(&pool)
                    .await
                    .expect(sql_sqlite);
                pool.close().await;
                n
            }
        }
    }

    /// The database invariants after a crash: orders and keys one to one, every order with
    /// its outbox event.
    async fn assert_nothing_lost_or_duplicated(&self, expected_orders: usize) {
        let orders = self
            .count("SELECT COUNT(*) FROM orders", "SELECT COUNT(*) FROM orders")
            .await;
        assert_eq!(
            orders, expected_orders as i64,
            "exactly one order per idempotency key"
        );
        let without_event = self
            .count(
                "SELECT COUNT(*) FROM orders o WHERE NOT EXISTS \
                 (SELECT 1 FROM outbox_events e WHERE e.subject = o.id::text)",
                "SELECT COUNT(*) FROM orders o WHERE NOT EXISTS \
                 (SELECT 1 FROM outbox_events e WHERE e.subject = o.id)",
            )
            .await;
        assert_eq!(without_event, 0, "every order has its outbox event");
        let keys_without_order = self
            .count(
                "SELECT COUNT(*) FROM idempotency_keys k WHERE k.state = 'completed' \
                 AND k.response_status BETWEEN 200 AND 299 AND NOT EXISTS \
                 (SELECT 1 FROM orders o WHERE o.id::text = k.resource_id)",
                "SELECT COUNT(*) FROM idempotency_keys k WHERE k.state = 'completed' \
                 AND k.response_status BETWEEN 200 AND 299 AND NOT EXISTS \
                 (SELECT 1 FROM orders o WHERE o.id = k.resource_id)",
            )
            .await;
        assert_eq!(
            keys_without_order, 0,
            "every completed key points at an existing order"
        );
        // Stock: the reservation commits with its order, so a crash loses or doubles none.
        let initial = weir_host::server::demo_catalog()
            .into_iter()
            .find(|p| p.sku == "CB-004")
            .expect("cables in the demo catalog")
            .stock;
        let available = self
            .count(
                "SELECT stock - reserved FROM products WHERE sku = 'CB-004'",
                "SELECT stock - reserved FROM products WHERE sku = 'CB-004'",
            )
            .await;
        let placed = self
            .count(
                "SELECT COALESCE(SUM(l.quantity), 0)::bigint FROM order_lines l \
                 JOIN orders o ON o.id = l.order_id WHERE l.sku = 'CB-004' AND o.status = 'placed'",
                "SELECT COALESCE(SUM(l.quantity), 0) FROM order_lines l \
                 JOIN orders o ON o.id = l.order_id WHERE l.sku = 'CB-004' AND o.status = 'placed'",
            )
            .await;
        assert_eq!(
            available + placed,
            initial,
            "stock + placed quantities = initial stock"
        );
        let off_books = self
            .count(
                "SELECT COUNT(*) FROM products p WHERE p.reserved <> (SELECT COALESCE(SUM(l.quantity), 0) \
                 FROM order_lines l JOIN orders o ON o.id = l.order_id \
                 WHERE o.stock_reserved AND l.sku = p.sku)",
                "SELECT COUNT(*) FROM products p WHERE p.reserved <> (SELECT COALESCE(SUM(l.quantity), 0) \
                 FROM order_lines l JOIN orders o ON o.id = l.order_id \
                 WHERE o.stock_reserved AND l.sku = p.sku)",
            )
            .await;
        assert_eq!(
            off_books, 0,
            "every product's reservations are what its open orders hold"
        );
    }

    async fn finish(mut self) {
        if let Some(pg) = self.pg.take() {
            pg.drop_db().await.expect("drop test database");
        }
    }
}

fn order_body(customer: &str) -> Value {
    crate::support::order_body(customer, "CB-004")
}

/// What the client saw for one request.
#[derive(Debug, Clone)]
enum Outcome {
    /// An HTTP answer: status, order id (2xx), replayed flag, problem code (errors).
    Answered {
        status: u16,
        order_id: Option<String>,
        replayed: bool,
        code: Option<String>,
        retryable: Option<bool>,
    },
    /// No answer: the connection failed or was closed.
    Transport(#[expect(dead_code, reason = "shown in failure messages through Debug")] String),
}

async fn place(client: &reqwest::Client, base: &str, key: &str) -> Outcome {
    let sent = client
        .post(format!("{base}/v1/orders"))
        .header("Idempotency-Key", key)
        .header("X-Request-Id", key)
        .json(&order_body("cus_chaos"))
        .send()
        .await;
    let response = match sent {
        Ok(r) => r,
        Err(e) => return Outcome::Transport(format!("{e:?}")),
    };
    let status = response.status().as_u16();
    let replayed = response.headers().contains_key("idempotent-replayed");
    match response.json::<Value>().await {
        Ok(body) => Outcome::Answered {
            status,
            order_id: body.get("id").and_then(Value::as_str).map(str::to_owned),
            replayed,
            code: body.get("code").and_then(Value::as_str).map(str::to_owned),
            retryable: body.get("retryable").and_then(Value::as_bool),
        },
        Err(e) => Outcome::Transport(format!("body: {e:?}")),
    }
}

/// Generous request timeout and drain deadline: on a busy CI machine a slow request must not
/// turn into a 504 or an interrupt; the invariants, not the speed, are under test.
const LOAD_CONFIG: &str = "[http]\nrequest_timeout_ms = 60000\n\
                           [idempotency]\nlock_ttl_ms = 120000\n\
                           [shutdown]\ndrain_deadline_ms = 60000\n";

/// Requests (and plugin invocations) held in flight at the signal by the SIGTERM-under-load
/// tests; the server's own `shutdown: readiness failing` line must count at least this many.
const HELD: usize = 6;
/// How long `slow-orders` holds each call (`hold_ms`): the known time every held request
/// stays in flight, far longer than the test needs to see them running and send the signal.
const HOLD_MS: u64 = 4000;
/// `shutdown.pre_stop_delay_ms` of the SIGTERM-under-load tests.
const PRE_STOP_MS: u64 = 2000;
/// `shutdown.drain_deadline_ms` of the SIGTERM-under-load tests: the held calls end well
/// within it, so nothing is interrupted.
const DRAIN_DEADLINE_MS: u64 = 20_000;
/// Hang guard beyond the drain deadline for the exit after SIGTERM (the drain's own bound
/// adds 2 x `interrupt_grace_ms` = 4 s, the telemetry flush its 5.5 s at most).
const EXIT_GUARD: Duration = Duration::from_secs(10);

/// Where the SIGTERM-under-load test runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Setup {
    Sqlite,
    Postgres,
    /// PostgreSQL with the events on RabbitMQ (relay and consumer running).
    PostgresBroker,
}

/// What one client saw for one key, and whether the answer came after the signal was sent.
type Seen = (String, Outcome, bool);

/// SIGTERM while `HELD` order requests are provably in flight, each inside a plugin call held
/// for a known time (`slow-orders`, `hold_ms`), with a pre-stop delay, a real OTLP receiver
/// and a drain deadline:
/// - the server's `shutdown: readiness failing` line counts at least `HELD` requests and
///   `HELD` plugin invocations in flight at the signal (an empty drain cannot pass);
/// - during the pre-stop delay `/readyz` answers 503 while the API still admits a new
///   connection, whose order is answered 201; the `pre_stop` line reports the delay;
/// - every admitted request is answered (the server's admitted count equals the client's
///   answers), every answer is 201, and the drain is clean;
/// - the process exits 0 within the drain deadline plus a hang guard;
/// - the OTLP receiver holds the `http.server` span of every request answered after the
///   signal (flushed at exit: the batch delay is ten minutes);
/// - after a restart, answered keys replay their order and keys that failed at the connection
///   level create theirs: nothing lost or duplicated (with the broker: every outbox event is
///   published).
async fn sigterm_under_load(setup: Setup) {
    let backend = if setup == Setup::Sqlite {
        Backend::Sqlite
    } else {
        Backend::Postgres
    };
    let rabbit = match setup {
        Setup::PostgresBroker => {
            let rabbit = Rabbit::connect().await;
            rabbit.tap().await;
            Some(rabbit)
        }
        _ => None,
    };
    let deployment = Deployment::new(backend).await;
    let receiver = Receiver::start().await;
    let plugins = plugin_dir(
        deployment.dir.path(),
        &[weir_plugin_artifacts::HOSTILE_SLOW],
    );
    let (amqp_url, events) = rabbit
        .as_ref()
        .map(|r| (r.amqp_url(), r.events()))
        .unwrap_or_default();
    let config = deployment.config(
        "weir.toml",
        &format!(
            "{amqp_url}[plugins]\ndir = {plugins:?}\norders = \"slow-orders\"\n\
             [plugins.config.slow-orders]\nhold_ms = \"{HOLD_MS}\"\n\
             [runtime.budget]\ntimeout_ms = 60000\n\
             [http]\nrequest_timeout_ms = 60000\n\
             [idempotency]\nlock_ttl_ms = 120000\n\
             [shutdown]\npre_stop_delay_ms = {PRE_STOP_MS}\n\
             drain_deadline_ms = {DRAIN_DEADLINE_MS}\n{events}",
            plugins = plugins.display().to_string(),
        ),
    );
    let otlp = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_owned()),
        // Nothing is exported while running: what arrives came through the exit's flush.
        ("OTEL_BSP_SCHEDULE_DELAY", "600000".to_owned()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "600000".to_owned()),
    ];
    let mut weir = deployment.start_with(&config, &otlp).await;
    if rabbit.is_some() {
        weir.consumer_connected().await;
    }

    // `HELD` clients, each placing orders one after the other until, after the signal, a
    // connection is refused.
    let signalled = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..HELD {
        let (base, signalled) = (weir.api.clone(), signalled.clone());
        clients.push(tokio::spawn(async move {
            let client = client();
            let mut seen: Vec<Seen> = Vec::new();
            for i in 0..100 {
                let key = format!("load-{c}-{i}");
                let outcome = place(&client, &base, &key).await;
                let after = signalled.load(Ordering::SeqCst);
                let failed = matches!(outcome, Outcome::Transport(_));
                seen.push((key, outcome, after));
                if failed && after {
                    break;
                }
            }
            seen
        }));
    }
    // Every client is inside its held plugin call: `HOLD_MS` of work is in flight.
    weir.wait_infoz("every client's request to be inside its plugin call", |v| {
        v["runtime"]["in_flight"].as_u64() >= Some(HELD as u64)
    })
    .await;
    signalled.store(true, Ordering::SeqCst);
    let signal_sent = tokio::time::Instant::now();
    weir.signal("TERM");

    // Pre-stop: readiness fails while the API still admits new connections.
    let ops = client();
    loop {
        let ready = ops
            .get(format!("{}/readyz", weir.ops))
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "/readyz refused before it was seen failing: the listeners closed \
                     without a pre-stop delay ({e})"
                )
            });
        if ready.status() == 503 {
            break;
        }
        assert!(
            signal_sent.elapsed() < WAIT,
            "/readyz kept answering {} after SIGTERM",
            ready.status()
        );
        tokio::time::sleep(POLL).await;
    }
    let base = weir.api.clone();
    let late = tokio::spawn(async move { place(&client(), &base, "pre-stop").await });

    let code = weir
        .exit_code_within(
            Duration::from_millis(DRAIN_DEADLINE_MS) + EXIT_GUARD,
            "the drain deadline plus the hang guard, from SIGTERM",
        )
        .await;
    let stopped_after = signal_sent.elapsed();
    assert_eq!(code, Some(0), "clean exit after SIGTERM");
    // The last line, written before the exit; the reader may still be catching up.
    weir.wait_log("shutdown complete").await;

    let mut seen: Vec<Seen> = Vec::new();
    for c in clients {
        seen.extend(
            tokio::time::timeout(WAIT, c)
                .await
                .expect("client ends")
                .expect("client"),
        );
    }
    let late = tokio::time::timeout(WAIT, late)
        .await
        .expect("the pre-stop request ends")
        .expect("client");
    assert!(
        matches!(late, Outcome::Answered { status: 201, .. }),
        "a request admitted during the pre-stop delay (readiness already failing) is served: \
         {late:?}"
    );
    seen.push(("pre-stop".to_owned(), late, true));

    // The server's own account of what was in flight at the signal.
    let not_ready = weir.log_line("shutdown: readiness failing");
    for counted in ["requests_in_flight", "invocations_in_flight"] {
        let n = field(&not_ready, counted).and_then(Value::as_u64);
        assert!(
            n >= Some(HELD as u64),
            "{counted} at the signal: {n:?}, expected at least {HELD}: {not_ready}"
        );
    }
    let pre_stop = weir.log_line("shutdown: pre-stop delay over");
    let waited = field(&pre_stop, "duration_ms").and_then(Value::as_u64);
    assert!(
        waited >= Some(PRE_STOP_MS),
        "the pre-stop delay lasted {waited:?} ms, configured {PRE_STOP_MS}: {pre_stop}"
    );

    let answered = seen
        .iter()
        .filter(|(_, o, _)| matches!(o, Outcome::Answered { .. }))
        .count();
    let bad: Vec<_> = seen
        .iter()
        .filter(|(_, o, _)| {
            !matches!(
                o,
                Outcome::Answered { status: 201, .. } | Outcome::Transport(_)
            )
        })
        .collect();
    assert!(bad.is_empty(), "every answer is 201 Created: {bad:#?}");
    let drained: Vec<&String> = seen
        .iter()
        .filter(|(_, o, after)| *after && matches!(o, Outcome::Answered { .. }))
        .map(|(k, _, _)| k)
        .collect();
    assert!(
        drained.len() > HELD,
        "the held requests and the pre-stop one were answered after the signal: {drained:?}"
    );
    // Every admitted request was answered: nothing admitted was cut off.
    let done = weir.log_line("shutdown: drain complete");
    let admitted = field(&done, "requests_admitted_total")
        .and_then(Value::as_u64)
        .expect("requests_admitted_total");
    assert_eq!(
        admitted, answered as u64,
        "the server admitted {admitted} requests and the client got {answered} answers"
    );
    assert_eq!(field(&done, "clean"), Some(&Value::Bool(true)), "{done}");
    let drain = weir.log_line("shutdown: in-flight work drained");
    assert_eq!(
        field(&drain, "requests_at_deadline"),
        Some(&json!(0)),
        "{drain}"
    );
    eprintln!(
        "{setup:?}: {answered} answered of {} sent, stopped {stopped_after:?} after SIGTERM; \
         at the signal: {not_ready}; drain: {drain}",
        seen.len(),
    );

    // The spans of the requests answered during the drain reached the collector.
    receiver
        .wait_for(
            "the http.server span of every request answered after SIGTERM",
            Duration::from_secs(10),
            |r| {
                drained
                    .iter()
                    .all(|key| {
                        r.spans.iter().any(|s| {
                            s.name() == "http.server"
                                && s.attr("request_id").as_deref() == Some(key.as_str())
                        })
                    })
                    .then_some(())
            },
        )
        .await;

    // Restart with the reference plugin: answered keys replay their order; keys that failed
    // at the connection level were never processed, so their retry creates the order now.
    let normal = deployment.config(
        "normal.toml",
        &format!(
            "{amqp_url}[http]\nrequest_timeout_ms = 60000\n[idempotency]\nlock_ttl_ms = 120000\n\
             [shutdown]\ndrain_deadline_ms = 60000\n{events}"
        ),
    );
    let mut weir = deployment.start(&normal).await;
    let client = client();
    for (key, first, _) in &seen {
        let again = place(&client, &weir.api, key).await;
        match (first, &again) {
            (
                Outcome::Answered { order_id: a, .. },
                Outcome::Answered {
                    status: 201,
                    order_id: b,
                    replayed: true,
                    ..
                },
            ) => assert_eq!(a, b, "{key}: the replay returns the same order"),
            (
                Outcome::Transport(_),
                Outcome::Answered {
                    status: 201,
                    replayed: false,
                    ..
                },
            ) => {}
            _ => panic!("{key}: first {first:?}, retry {again:?}"),
        }
    }
    if let Some(rabbit) = &rabbit {
        // The relay publishes every order's event, those written during the drain included.
        let started = tokio::time::Instant::now();
        loop {
            let unpublished = deployment
                .count(
                    "SELECT COUNT(*) FROM outbox_events WHERE published_at IS NULL",
                    "SELECT COUNT(*) FROM outbox_events WHERE published_at IS NULL",
                )
                .await;
            if unpublished == 0 {
                break;
            }
            assert!(
                started.elapsed() < WAIT,
                "{unpublished} outbox events stayed unpublished on RabbitMQ"
            );
            tokio::time::sleep(POLL).await;
        }
        let mut ids = rabbit.tapped_ids().await;
        ids.sort();
        ids.dedup();
        assert_eq!(
            ids.len(),
            seen.len(),
            "one order.placed event per order reached the broker"
        );
    }
    weir.signal("TERM");
    assert_eq!(weir.exit_code().await, Some(0));
    deployment
        .assert_nothing_lost_or_duplicated(seen.len())
        .await;
    if let Some(rabbit) = rabbit {
        rabbit.cleanup().await;
    }
    deployment.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_sqlite() {
    sigterm_under_load(Setup::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_postgres() {
    sigterm_under_load(Setup::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_postgres_with_the_broker() {
    sigterm_under_load(Setup::PostgresBroker).await;
}

async fn slow_plugin_at_shutdown(backend: Backend) {
    let deployment = Deployment::new(backend).await;
    let plugins = plugin_dir(
        deployment.dir.path(),
        &[weir_plugin_artifacts::HOSTILE_SLEEP],
    );
    // The plugin sleeps for an hour; every budget is far longer than the drain deadline, so
    // only the drain can end the call.
    let slow = deployment.config(
        "slow.toml",
        &format!(
            "[plugins]\ndir = {:?}\norders = \"hostile-sleep\"\n\
             [runtime.budget]\ntimeout_ms = 600000\n\
             [http]\nrequest_timeout_ms = 600000\n\
             [idempotency]\nlock_ttl_ms = 1200000\n\
             [shutdown]\ndrain_deadline_ms = 500\ninterrupt_grace_ms = 10000\n",
            plugins.display().to_string()
        ),
    );
    let mut weir = deployment.start(&slow).await;
    let base = weir.api.clone();
    let call = tokio::spawn(async move { place(&client(), &base, "slow-key").await });
    weir.wait_infoz("the plugin call to be in flight", |v| {
        v["runtime"]["in_flight"].as_u64() == Some(1)
    })
    .await;
    weir.signal("TERM");
    let answer = tokio::time::timeout(WAIT, call)
        .await
        .expect("the interrupted call is answered")
        .expect("client task");
    match &answer {
        Outcome::Answered {
            status: 503,
            code: Some(code),
            retryable: Some(true),
            ..
        } if code == "SHUTTING_DOWN" => {}
        other => panic!("expected a retryable 503 SHUTTING_DOWN, got {other:?}"),
    }
    assert_eq!(
        weir.exit_code().await,
        Some(0),
        "clean exit after the interrupt"
    );
    let interrupt = weir.log_line("shutdown: drain deadline reached");
    assert_eq!(
        field(&interrupt, "invocations_interrupted").and_then(Value::as_u64),
        Some(1)
    );
    assert_eq!(
        deployment
            .count("SELECT COUNT(*) FROM orders", "SELECT COUNT(*) FROM orders")
            .await,
        0,
        "nothing was written for the interrupted call"
    );

    // Restart with the reference plugin: the client's retry with the same key succeeds once.
    let normal = deployment.config("normal.toml", LOAD_CONFIG);
    let mut weir = deployment.start(&normal).await;
    let client = client();
    let first = place(&client, &weir.api, "slow-key").await;
    let Outcome::Answered {
        status: 201,
        order_id: Some(id),
        replayed: false,
        ..
    } = &first
    else {
        panic!("the retry creates the order: {first:?}");
    };
    let again = place(&client, &weir.api, "slow-key").await;
    assert!(
        matches!(&again, Outcome::Answered { status: 201, order_id: Some(b), replayed: true, .. } if b == id),
        "a second retry replays the same order: {again:?}"
    );
    weir.signal("TERM");
    assert_eq!(weir.exit_code().await, Some(0));
    deployment.assert_nothing_lost_or_duplicated(1).await;
    deployment.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_plugin_at_shutdown_is_interrupted_and_retry_is_exactly_once_sqlite() {
    slow_plugin_at_shutdown(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_plugin_at_shutdown_is_interrupted_and_retry_is_exactly_once_postgres() {
    slow_plugin_at_shutdown(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once_with_a_distinct_code() {
    let deployment = Deployment::new(Backend::Sqlite).await;
    let plugins = plugin_dir(
        deployment.dir.path(),
        &[weir_plugin_artifacts::HOSTILE_SLEEP],
    );
    // A drain that would last ten minutes: only the second signal can end it early.
    let config = deployment.config(
        "slow.toml",
        &format!(
            "[plugins]\ndir = {:?}\norders = \"hostile-sleep\"\n\
             [runtime.budget]\ntimeout_ms = 1200000\n\
             [http]\nrequest_timeout_ms = 1200000\n\
             [idempotency]\nlock_ttl_ms = 2400000\n\
             [shutdown]\ndrain_deadline_ms = 600000\n",
            plugins.display().to_string()
        ),
    );
    let mut weir = deployment.start(&config).await;
    let base = weir.api.clone();
    let call = tokio::spawn(async move { place(&client(), &base, "held").await });
    weir.wait_infoz("the plugin call to be in flight", |v| {
        v["runtime"]["in_flight"].as_u64() == Some(1)
    })
    .await;
    weir.signal("TERM");
    weir.wait_log("shutdown: listeners closed").await;
    weir.signal("INT");
    assert_eq!(
        weir.exit_code().await,
        Some(i32::from(weir_host::lifecycle::EXIT_FORCED)),
        "a second signal exits with EXIT_FORCED"
    );
    // The next start reports this run's end as `forced` (weir_host::lifecycle::outcome).
    let marker = std::fs::read_to_string(deployment.data_dir().join("shutdown.json"))
        .expect("the shutdown marker in the data directory");
    assert!(marker.contains(r#""outcome":"forced""#), "{marker}");
    let answer = tokio::time::timeout(WAIT, call)
        .await
        .expect("client ends")
        .expect("client");
    assert!(
        matches!(answer, Outcome::Transport(_)),
        "the held call was cut off: {answer:?}"
    );
    deployment.finish().await;
}

/// Keys, their acknowledged order ids, and the queue of keys still to place.
#[derive(Default)]
struct Ledger {
    acked: BTreeMap<String, String>,
    pending: Vec<String>,
    violations: Vec<String>,
}

/// One client of the kill -9 load: places the ledger's pending keys one at a time against
/// the current address in `base`; a 201 records the key's order, a retryable answer or no
/// answer puts the key back for later; anything else is a violation. Ends when `stop` is set
/// or nothing is pending.
async fn load_client(
    ledger: Arc<Mutex<Ledger>>,
    base: Arc<RwLock<String>>,
    stop: Arc<AtomicBool>,
    acked_tx: Arc<tokio::sync::Notify>,
) {
    let client = client();
    // Bounded: at most this many attempts per client.
    for _ in 0..100_000 {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Some(key) = ledger.lock().unwrap().pending.pop() else {
            return;
        };
        let url = base.read().await.clone();
        let outcome = place(&client, &url, &key).await;
        let retry_later = {
            let mut l = ledger.lock().unwrap();
            match outcome {
                Outcome::Answered {
                    status: 201,
                    order_id: Some(id),
                    ..
                } => {
                    if let Some(previous) = l.acked.insert(key.clone(), id.clone())
                        && previous != id
                    {
                        l.violations.push(format!("{key}: {previous} then {id}"));
                    }
                    false
                }
                // Retryable (e.g. the key is still locked by the killed process), or
                // no answer because the server is down: retry the same key later.
                Outcome::Answered {
                    status, retryable, ..
                } if retryable == Some(true) || status == 409 => {
                    l.pending.insert(0, key);
                    true
                }
                Outcome::Transport(_) => {
                    l.pending.insert(0, key);
                    true
                }
                other @ Outcome::Answered { .. } => {
                    l.violations
                        .push(format!("{key}: unexpected answer {other:?}"));
                    false
                }
            }
        };
        if retry_later {
            tokio::time::sleep(POLL).await;
        } else {
            acked_tx.notify_one();
        }
    }
}

async fn kill9_under_load(backend: Backend) {
    const KEYS: usize = 60;
    const ROUNDS: usize = 3;
    const CLIENTS: usize = 4;
    let deployment = Deployment::new(backend).await;
    // A short lock so keys held by a killed process free up quickly for the retries.
    let config = deployment.config(
        "weir.toml",
        "[http]\nrequest_timeout_ms = 2000\n[idempotency]\nlock_ttl_ms = 2500\n",
    );
    let ledger = Arc::new(Mutex::new(Ledger {
        pending: (0..KEYS).rev().map(|i| format!("crash-{i}")).collect(),
        ..Ledger::default()
    }));
    let weir = deployment.start(&config).await;
    let base = Arc::new(RwLock::new(weir.api.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let acked_tx = Arc::new(tokio::sync::Notify::new());
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(tokio::spawn(load_client(
            ledger.clone(),
            base.clone(),
            stop.clone(),
            acked_tx.clone(),
        )));
    }

    let acked = |ledger: &Mutex<Ledger>| ledger.lock().unwrap().acked.len();
    let mut weir = weir;
    let started = tokio::time::Instant::now();
    for round in 1..=ROUNDS {
        let target = round * KEYS / (ROUNDS + 1);
        while acked(&ledger) < target {
            assert!(
                started.elapsed() < WAIT,
                "round {round}: stuck at {} acks",
                acked(&ledger)
            );
            let _ = tokio::time::timeout(Duration::from_secs(1), acked_tx.notified()).await;
        }
        weir.kill9().await;
        weir = deployment.start(&config).await;
        *base.write().await = weir.api.clone();
    }
    while acked(&ledger) < KEYS {
        assert!(
            started.elapsed() < WAIT,
            "after the last restart: stuck at {} of {KEYS} acks",
            acked(&ledger)
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), acked_tx.notified()).await;
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        tokio::time::timeout(WAIT, c)
            .await
            .expect("client ends")
            .expect("client");
    }
    let ledger = Arc::try_unwrap(ledger)
        .ok()
        .expect("clients done")
        .into_inner()
        .unwrap();
    assert!(ledger.violations.is_empty(), "{:#?}", ledger.violations);

    // Retrying every key once more never creates a second order.
    let client = client();
    let mut ids: HashMap<String, usize> = HashMap::new();
    for (key, id) in &ledger.acked {
        let again = place(&client, &weir.api, key).await;
        assert!(
            matches!(&again, Outcome::Answered { status: 201, order_id: Some(b), replayed: true, .. } if b == id),
            "{key}: a retry replays order {id}: {again:?}"
        );
        *ids.entry(id.clone()).or_default() += 1;
    }
    assert!(ids.values().all(|&n| n == 1), "one order per key: {ids:?}");
    weir.signal("TERM");
    assert_eq!(weir.exit_code().await, Some(0));
    deployment.assert_nothing_lost_or_duplicated(KEYS).await;
    deployment.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_load_loses_and_duplicates_nothing_sqlite() {
    kill9_under_load(Backend::Sqlite).await;
}

// --- The consumer under kill -9 and SIGTERM (real RabbitMQ on 127.0.0.1:5672) ---

const BROKER: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Unique exchange and queue names for one test, created by the `weir` processes and deleted
/// by [`Rabbit::cleanup`]; the broker itself is shared and never reconfigured.
struct Rabbit {
    conn: lapin::Connection,
    channel: lapin::Channel,
    id: String,
}

impl Rabbit {
    async fn connect() -> Self {
        let conn = lapin::Connection::connect(BROKER, lapin::ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ on 127.0.0.1:5672 (is it running?)");
        let channel = conn.create_channel().await.expect("channel");
        channel
            .confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await
            .expect("confirm_select");
        Self {
            conn,
            channel,
            id: uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    fn queue(&self) -> String {
        format!("test.{}.payments", self.id)
    }

    fn inbound(&self) -> String {
        format!("test.{}.inbound", self.id)
    }

    /// `weir.toml` for a process on this broker: the test's names, fast reconnects, a long
    /// drain deadline (the invariants, not the speed, are under test).
    fn config(&self) -> String {
        format!(
            "{}[shutdown]\ndrain_deadline_ms = 60000\n{}",
            self.amqp_url(),
            self.events()
        )
    }

    /// The top-level `amqp_url` line (it comes before every table of `weir.toml`).
    fn amqp_url(&self) -> String {
        format!("amqp_url = \"{BROKER}\"\n")
    }

    /// The `[events]` table: the test's names, fast reconnects.
    fn events(&self) -> String {
        format!(
            "[events]\nexchange = \"test.{id}.orders\"\ninbound_exchange = \"{inbound}\"\n\
             queue = \"{queue}\"\nrelay_poll_ms = 50\nreconnect_min_ms = 50\n\
             reconnect_max_ms = 500\n",
            id = self.id,
            inbound = self.inbound(),
            queue = self.queue(),
        )
    }

    /// Publish `payment.captured` of the order's total (`due`: amount and currency) for
    /// `order_id` with message id `message_id`; confirmed.
    async fn pay(&self, message_id: &str, order_id: &str, due: &(i64, String)) {
        let body = json!({
            "specversion": "1.0",
            "id": message_id,
            "source": "/payments",
            "type": "payment.captured",
            "subject": order_id,
            "datacontenttype": "application/json",
            "data": { "order_id": order_id, "amount": due.0, "currency": due.1 },
        })
        .to_string();
        let props = lapin::BasicProperties::default()
            .with_content_type("application/cloudevents+json".into())
            .with_message_id(message_id.into())
            .with_delivery_mode(2);
        let confirm = self
            .channel
            .basic_publish(
                self.inbound().as_str().into(),
                "payment.captured".into(),
                lapin::options::BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                body.as_bytes(),
                props,
            )
            .await
            .expect("publish")
            .await
            .expect("publisher confirm");
        assert_eq!(
            confirm,
            lapin::Confirmation::Ack(None),
            "payment.captured routed to the consumer queue"
        );
    }

    /// The test's own queue on the order events exchange (declared here as `weir` declares
    /// it: topic, durable), bound to every routing key, so the relay's `mandatory` publishes
    /// are routable and the test sees what was published. Deleted by [`Rabbit::cleanup`].
    async fn tap(&self) {
        let exchange = format!("test.{}.orders", self.id);
        self.channel
            .exchange_declare(
                exchange.as_str().into(),
                lapin::ExchangeKind::Topic,
                lapin::options::ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .expect("declare the order events exchange");
        self.channel
            .queue_declare(
                self.tap_queue().as_str().into(),
                lapin::options::QueueDeclareOptions::default(),
                lapin::types::FieldTable::default(),
            )
            .await
            .expect("declare the tap queue");
        self.channel
            .queue_bind(
                self.tap_queue().as_str().into(),
                exchange.as_str().into(),
                "#".into(),
                lapin::options::QueueBindOptions::default(),
                lapin::types::FieldTable::default(),
            )
            .await
            .expect("bind the tap queue");
    }

    fn tap_queue(&self) -> String {
        format!("test.{}.tap", self.id)
    }

    /// The CloudEvent ids in the tap queue (taken off it).
    async fn tapped_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        while let Some(m) = self
            .channel
            .basic_get(
                self.tap_queue().as_str().into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .expect("basic_get on the tap queue")
        {
            let event: Value = serde_json::from_slice(&m.delivery.data).expect("a JSON CloudEvent");
            ids.push(event["id"].as_str().expect("CloudEvent id").to_owned());
        }
        ids
    }

    /// Messages ready in the consumer queue (delivered-but-unacked ones are not counted).
    async fn ready(&self) -> u32 {
        self.channel
            .queue_declare(
                self.queue().as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .expect("the consumer queue exists")
            .message_count()
    }

    /// Wait (bounded) until no message is ready: every one was pushed to the consumer.
    async fn wait_all_delivered(&self) {
        self.wait_ready(0, "the consumer did not receive every message")
            .await;
    }

    /// Wait (bounded) until `n` messages are ready. A requeue lands a moment after the client
    /// has moved on: the broker applies a nack (which has no reply) or a closed channel's
    /// unacknowledged deliveries on its own time.
    async fn wait_ready(&self, n: u32, what: &str) {
        let started = tokio::time::Instant::now();
        loop {
            let ready = self.ready().await;
            if ready == n {
                return;
            }
            assert!(
                started.elapsed() < WAIT,
                "{what}: {ready} messages ready in {}, not {n}",
                self.queue()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    async fn cleanup(self) {
        let q = self.queue();
        for name in [
            q.clone(),
            format!("{q}.retry"),
            format!("{q}.dlq"),
            self.tap_queue(),
        ] {
            let _ = self
                .channel
                .queue_delete(name.as_str().into(), Default::default())
                .await;
        }
        for name in [
            format!("test.{}.orders", self.id),
            self.inbound(),
            format!("{q}.dlx"),
        ] {
            let _ = self
                .channel
                .exchange_delete(name.as_str().into(), Default::default())
                .await;
        }
        let _ = self.conn.close(200, "test done".into()).await;
    }
}

/// Place one order; its id.
async fn new_order(weir: &Weir, key: &str) -> String {
    match place(&client(), &weir.api, key).await {
        Outcome::Answered {
            status: 201,
            order_id: Some(id),
            ..
        } => id,
        other => panic!("placing {key}: {other:?}"),
    }
}

/// An order's status and version over the API.
async fn order_state(weir: &Weir, id: &str) -> (String, i64) {
    let o: Value = client()
        .get(format!("{}/v1/orders/{id}", weir.api))
        .send()
        .await
        .expect("GET order")
        .json()
        .await
        .expect("order JSON");
    (
        o["status"].as_str().expect("status").to_owned(),
        o["version"].as_i64().expect("version"),
    )
}

/// Wait (bounded) until the order is `paid`; its version then.
async fn paid_version(weir: &Weir, id: &str) -> i64 {
    let started = tokio::time::Instant::now();
    loop {
        let (status, version) = order_state(weir, id).await;
        if status == "paid" {
            return version;
        }
        assert!(
            started.elapsed() < WAIT,
            "order {id} stayed {status}: the redelivered payment was not applied"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Holds the row of one order `FOR UPDATE` in an open transaction, so the consumer's
/// transition (inbox insert + `UPDATE orders` in one transaction) blocks mid-message.
struct RowLock {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
}

impl RowLock {
    async fn take(pool: &sqlx::PgPool, order_id: &str) -> Self {
        let mut tx = pool.begin().await.expect("begin");
        sqlx::query("SELECT 1 FROM orders WHERE id = $1::uuid FOR UPDATE")
            .bind(order_id)
            .fetch_one(&mut *tx)
            .await
            .expect("lock the order row");
        Self { tx }
    }

    async fn release(self) {
        self.tx.rollback().await.expect("rollback");
    }
}

/// Wait (bounded) until a `weir` session is blocked on a row lock in `UPDATE orders`: the
/// consumer holds the delivery, unacked, in the middle of its transaction.
async fn wait_consumer_blocked(pool: &sqlx::PgPool) {
    let started = tokio::time::Instant::now();
    loop {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name = 'weir' AND wait_event_type = 'Lock' \
             AND query LIKE 'UPDATE orders%'",
        )
        .fetch_one(pool)
        .await
        .expect("pg_stat_activity");
        if n > 0 {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "the consumer never reached the order update (no weir session waiting on the row lock)"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The effect of message `message_id` on order `order_id` exists exactly once: one inbox
/// record, one `order.paid` outbox event.
async fn assert_applied_once(pool: &sqlx::PgPool, message_id: &str, order_id: &str) {
    // The inbox keys a message by its source and id.
    let inbox: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM inbox_messages WHERE message_id = $1")
            .bind(format!("/payments {message_id}"))
            .fetch_one(pool)
            .await
            .expect("count inbox");
    assert_eq!(inbox, 1, "one inbox record for {message_id}");
    let events: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM outbox_events WHERE subject = $1 AND event_type = 'order.paid'",
    )
    .bind(order_id)
    .fetch_one(pool)
    .await
    .expect("count outbox");
    assert_eq!(events, 1, "one order.paid event for {order_id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_consumer_mid_message_redelivers_and_applies_once() {
    let rabbit = Rabbit::connect().await;
    let deployment = Deployment::new(Backend::Postgres).await;
    let config = deployment.config("weir.toml", &rabbit.config());
    let pool = sqlx::PgPool::connect(deployment.pg.as_ref().expect("postgres").url())
        .await
        .expect("connect pg");
    let weir = deployment.start(&config).await;
    weir.consumer_connected().await;
    let order = new_order(&weir, "kill9-consumer").await;
    let (status, version) = order_state(&weir, &order).await;
    assert_eq!(status, "placed");

    // Mid-message: the consumer has the delivery (unacked) and is inside its transaction.
    let lock = RowLock::take(&pool, &order).await;
    let due = order_due_db(&pool, &order).await;
    rabbit.pay("pay-kill9", &order, &due).await;
    wait_consumer_blocked(&pool).await;
    weir.kill9().await;
    lock.release().await;
    let (status, _) = order_state_db(&pool, &order).await;
    assert_eq!(
        status, "placed",
        "nothing of the killed transaction committed"
    );

    // The broker redelivers; the restarted consumer applies it once.
    let mut weir = deployment.start(&config).await;
    assert_eq!(paid_version(&weir, &order).await, version + 1);
    assert_applied_once(&pool, "pay-kill9", &order).await;
    weir.signal("TERM");
    assert_eq!(weir.exit_code().await, Some(0));
    assert_eq!(rabbit.ready().await, 0, "the queue is empty");
    assert_eq!(order_state_db(&pool, &order).await.1, version + 1);
    assert_applied_once(&pool, "pay-kill9", &order).await;

    pool.close().await;
    rabbit.cleanup().await;
    deployment.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_requeues_prefetched_deliveries_and_applies_them_once_after_restart() {
    let rabbit = Rabbit::connect().await;
    let deployment = Deployment::new(Backend::Postgres).await;
    let config = deployment.config("weir.toml", &rabbit.config());
    let pool = sqlx::PgPool::connect(deployment.pg.as_ref().expect("postgres").url())
        .await
        .expect("connect pg");
    let mut weir = deployment.start(&config).await;
    weir.consumer_connected().await;
    let held = new_order(&weir, "term-held").await;
    let prefetched = new_order(&weir, "term-prefetched").await;
    let (_, version) = order_state(&weir, &held).await;
    let (_, prefetched_version) = order_state(&weir, &prefetched).await;

    // The first delivery is in hand (blocked mid-transaction), the second is prefetched.
    let lock = RowLock::take(&pool, &held).await;
    let (held_due, prefetched_due) = (
        order_due_db(&pool, &held).await,
        order_due_db(&pool, &prefetched).await,
    );
    rabbit.pay("pay-held", &held, &held_due).await;
    rabbit
        .pay("pay-prefetched", &prefetched, &prefetched_due)
        .await;
    wait_consumer_blocked(&pool).await;
    rabbit.wait_all_delivered().await;

    weir.signal("TERM");
    weir.wait_log("shutdown: listeners closed").await;
    // The delivery in hand is finished (applied, acked); the prefetched one is requeued.
    lock.release().await;
    assert_eq!(weir.exit_code().await, Some(0));
    let drain = weir.log_line("shutdown: in-flight work drained");
    assert_eq!(
        field(&drain, "messages_requeued"),
        Some(&json!(1)),
        "drain line: {drain}"
    );
    assert_eq!(field(&drain, "phase"), Some(&json!("drain")));
    assert_eq!(
        order_state_db(&pool, &held).await,
        ("paid".to_owned(), version + 1)
    );
    assert_eq!(order_state_db(&pool, &prefetched).await.0, "placed");
    rabbit
        .wait_ready(1, "the prefetched message is back in the queue")
        .await;

    let mut weir = deployment.start(&config).await;
    paid_version(&weir, &prefetched).await;
    weir.signal("TERM");
    assert_eq!(weir.exit_code().await, Some(0));
    assert_eq!(rabbit.ready().await, 0, "the queue is empty");
    assert_eq!(order_state_db(&pool, &held).await.1, version + 1);
    assert_eq!(
        order_state_db(&pool, &prefetched).await.1,
        prefetched_version + 1
    );
    assert_applied_once(&pool, "pay-held", &held).await;
    assert_applied_once(&pool, "pay-prefetched", &prefetched).await;

    pool.close().await;
    rabbit.cleanup().await;
    deployment.finish().await;
}

/// An order's status and version straight from the database (no process running).
/// An order's total and currency, read from the database.
async fn order_due_db(pool: &sqlx::PgPool, id: &str) -> (i64, String) {
    sqlx::query_as("SELECT total, currency FROM orders WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("order row")
}

async fn order_state_db(pool: &sqlx::PgPool, id: &str) -> (String, i64) {
    sqlx::query_as("SELECT status, version FROM orders WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("order row")
}
