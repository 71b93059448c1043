//! Crashes that provably land inside the windows that matter (issue 18), PostgreSQL and
//! RabbitMQ on loopback. A child of `chaos`: it uses that module's deployment, load client and
//! broker helpers.
//!
//! - kill -9 ×3 under load with the broker: an independent consumer of the test (its own
//!   queue bound to the service's exchange, never the service's consumer) collects every
//!   `order.placed`. Each round, before the kill, (1) an order transaction of a client of the
//!   test is blocked mid-way by a row lock the test holds (it has already reserved stock, so it
//!   has written: `backend_xid` is set) and is still open after the process is gone; after the
//!   lock is released that transaction is `aborted` (`pg_xact_status`), nothing of it exists
//!   and its client got no answer; (2) `order.placed` is unroutable for a moment (the test
//!   unbinds its queue), so the killed relay holds claimed events the broker returned. After
//!   the last restart, with the outbox drained: every committed order's event was delivered at
//!   least once and, deduplicated by event id, exactly once (one id per order, the id of its
//!   outbox row); no event names an order that does not exist; every key acknowledged with a
//!   2xx has its order, exactly once.
//! - The consumer killed after its transaction committed and before the broker ack: the
//!   `consumer.after_commit` failpoint (cargo feature `fault-injection`, `WEIR_FAILPOINT`)
//!   holds the consumer there; the test sees the commit (order paid, inbox record, `order.paid`
//!   in the outbox) while RabbitMQ still counts the delivery unacknowledged, kills the process
//!   and sees the message back in the queue. After the restart the redelivery is recognised
//!   as a duplicate (log line and `weir_events_consumed_total{outcome="duplicate"}`): the
//!   transition applied once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::RwLock;

use super::{
    Backend, Deployment, Ledger, Outcome, Rabbit, assert_applied_once, new_order, order_due_db,
    order_state, order_state_db, place,
};
use crate::support::{POLL, WAIT, Weir, client, field, message};

/// The held order's lines: stock is reserved per sku in sku order, so its transaction updates
/// `HELD_FIRST` (a write) and then waits for `HELD_LOCKED`, whose row the test holds. The load
/// orders only `CB-004`, so nothing else waits on these rows.
const HELD_FIRST: &str = "KB-001";
const HELD_LOCKED: &str = "MS-002";

/// The test's own consumer of the service's order events: a queue of the test bound with
/// `order.placed` to the service's exchange; every delivery is recorded and acked.
struct Tap {
    channel: lapin::Channel,
    exchange: String,
    queue: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// One `order.placed` delivery as the tap received it.
#[derive(Debug, Clone)]
struct Seen {
    /// AMQP `message_id`.
    message_id: String,
    /// CloudEvents `id`, `subject` (the order id) and the order's customer.
    id: String,
    subject: String,
    customer: String,
}

impl Tap {
    async fn start(rabbit: &Rabbit) -> Self {
        use lapin::options::{BasicAckOptions, BasicConsumeOptions, ExchangeDeclareOptions};
        let channel = rabbit.conn.create_channel().await.expect("tap channel");
        let exchange = format!("test.{}.orders", rabbit.id);
        let queue = format!("test.{}.tap", rabbit.id);
        // The same declaration as the service's (durable topic), so either may come first.
        channel
            .exchange_declare(
                exchange.as_str().into(),
                lapin::ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .expect("declare the order events exchange");
        channel
            .queue_declare(
                queue.as_str().into(),
                lapin::options::QueueDeclareOptions::default(),
                lapin::types::FieldTable::default(),
            )
            .await
            .expect("declare the tap queue");
        let tap = Self {
            channel,
            exchange,
            queue,
            seen: Arc::default(),
        };
        tap.bind().await;
        let mut deliveries = tap
            .channel
            .basic_consume(
                tap.queue.as_str().into(),
                "tap".into(),
                BasicConsumeOptions::default(),
                lapin::types::FieldTable::default(),
            )
            .await
            .expect("consume the tap queue");
        let seen = tap.seen.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = deliveries.next().await {
                let body: Value = serde_json::from_slice(&delivery.data).unwrap_or_default();
                let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                seen.lock().unwrap().push(Seen {
                    message_id: delivery
                        .properties
                        .message_id()
                        .as_ref()
                        .map(|id| id.as_str().to_owned())
                        .unwrap_or_default(),
                    id: text(&body["id"]),
                    subject: text(&body["subject"]),
                    customer: text(&body["data"]["customer_id"]),
                });
                let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            }
        });
        tap
    }

    async fn bind(&self) {
        self.channel
            .queue_bind(
                self.queue.as_str().into(),
                self.exchange.as_str().into(),
                "order.placed".into(),
                Default::default(),
                lapin::types::FieldTable::default(),
            )
            .await
            .expect("bind the tap queue");
    }

    /// From now on `order.placed` is unroutable: the broker returns the relay's publishes.
    async fn unbind(&self) {
        self.channel
            .queue_unbind(
                self.queue.as_str().into(),
                self.exchange.as_str().into(),
                "order.placed".into(),
                lapin::types::FieldTable::default(),
            )
            .await
            .expect("unbind the tap queue");
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    async fn cleanup(self) {
        let _ = self
            .channel
            .queue_delete(self.queue.as_str().into(), Default::default())
            .await;
    }
}

/// One `SELECT` of a single value on the test's connection.
async fn scalar<T>(pool: &sqlx::PgPool, sql: &'static str) -> T
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The weir session blocked by the test's lock, as `pg_stat_activity` shows it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
struct Blocked {
    pid: i32,
    state: Option<String>,
    wait_event_type: Option<String>,
    /// The transaction's id: assigned at its first write.
    xid: Option<String>,
    query: Option<String>,
}

/// The `weir` session (application name) of this database that waits for a lock the session
/// `holder` holds, if any.
async fn blocked_by(pool: &sqlx::PgPool, holder: i32) -> Option<Blocked> {
    sqlx::query_as(
        "SELECT pid, state, wait_event_type, backend_xid::text AS xid, query \
         FROM pg_stat_activity WHERE datname = current_database() \
         AND application_name = 'weir' AND $1 = ANY(pg_blocking_pids(pid))",
    )
    .bind(holder)
    .fetch_optional(pool)
    .await
    .expect("pg_stat_activity")
}

/// The status of transaction `xid` (a 32-bit `backend_xid`) with the current epoch:
/// `committed`, `aborted` or `in progress`.
async fn xact_status(pool: &sqlx::PgPool, xid: &str) -> String {
    let xid: u64 = xid.parse().expect("an xid is a number");
    let next: String = scalar(pool, "SELECT pg_snapshot_xmax(pg_current_snapshot())::text").await;
    let next: u64 = next.parse().expect("xid8");
    let (epoch, low) = (next >> 32, next & 0xffff_ffff);
    let full = if xid <= low {
        (epoch << 32) | xid
    } else {
        ((epoch - 1) << 32) | xid
    };
    sqlx::query_scalar("SELECT pg_xact_status($1::text::xid8)")
        .bind(full.to_string())
        .fetch_one(pool)
        .await
        .expect("pg_xact_status")
}

/// Place the held order (two lines, see [`HELD_FIRST`]) for `customer` with key `key`.
async fn place_held(base: String, key: String, customer: String) -> Outcome {
    let sent = client()
        .post(format!("{base}/v1/orders"))
        .header("Idempotency-Key", &key)
        .json(&json!({
            "customer_id": customer,
            "currency": "EUR",
            "lines": [
                {"sku": HELD_FIRST, "quantity": 1},
                {"sku": HELD_LOCKED, "quantity": 1},
            ],
        }))
        .send()
        .await;
    match sent {
        Ok(r) => Outcome::Answered {
            status: r.status().as_u16(),
            order_id: None,
            replayed: false,
            code: None,
            retryable: None,
        },
        Err(e) => Outcome::Transport(format!("{e:?}")),
    }
}

/// What one round established before and after its kill.
#[derive(Debug)]
struct RoundProof {
    /// The held transaction: session pid and transaction id.
    pid: i32,
    xid: String,
    /// Events the killed relay had claimed, unpublished (returned by the broker).
    orphaned: Vec<String>,
}

/// One round's kill with a transaction provably open and events provably held by the relay.
/// Returns the proof; `weir` is killed.
async fn kill_in_flight(
    round: usize,
    weir: Weir,
    tap: &Tap,
    pool: &sqlx::PgPool,
    ledger: &Mutex<Ledger>,
) -> RoundProof {
    // (2) Events in the relay's hands: unroutable, returned, deferred under its lease. The
    // test places one order itself so there is an event even if the load is done.
    tap.unbind().await;
    let probe = format!("unrouted-{round}");
    let id = new_order(&weir, &probe).await;
    ledger.lock().unwrap().acked.insert(probe, id.clone());
    // The relay has tried to publish the probe's event (and, unroutable, kept it).
    let started = tokio::time::Instant::now();
    while !sqlx::query_scalar::<_, bool>(
        "SELECT published_at IS NOT NULL OR publish_attempts > 0 FROM outbox_events \
         WHERE subject = $1 AND event_type = 'order.placed'",
    )
    .bind(&id)
    .fetch_one(pool)
    .await
    .expect("the probe's event")
    {
        assert!(
            started.elapsed() < WAIT,
            "round {round}: the relay never tried to publish order {id}'s event"
        );
        tokio::time::sleep(POLL).await;
    }

    // (1) An order transaction held open mid-way by a row lock of the test.
    let mut lock = pool.begin().await.expect("begin");
    let holder: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *lock)
        .await
        .expect("pid");
    sqlx::query("SELECT 1 FROM products WHERE sku = $1 FOR UPDATE")
        .bind(HELD_LOCKED)
        .fetch_one(&mut *lock)
        .await
        .expect("lock the product row");
    let customer = format!("cus_held_{round}");
    let held = tokio::spawn(place_held(
        weir.api.clone(),
        format!("held-{round}"),
        customer.clone(),
    ));
    let started = tokio::time::Instant::now();
    let blocked = loop {
        if let Some(b) = blocked_by(pool, holder).await {
            break b;
        }
        if held.is_finished() {
            panic!(
                "round {round}: the held order was answered ({:?}) before the kill: its \
                 transaction never waited on the test's lock",
                held.await
            );
        }
        assert!(
            started.elapsed() < WAIT,
            "round {round}: no weir transaction ever waited on the test's lock of {HELD_LOCKED}"
        );
        tokio::time::sleep(POLL).await;
    };
    assert_eq!(
        (blocked.state.as_deref(), blocked.wait_event_type.as_deref()),
        (Some("active"), Some("Lock")),
        "round {round}: the held order waits on the lock: {blocked:?}"
    );
    let xid = blocked.xid.clone().unwrap_or_else(|| {
        panic!("round {round}: the held transaction has written nothing yet: {blocked:?}")
    });
    assert!(
        blocked
            .query
            .as_deref()
            .is_some_and(|q| q.starts_with("UPDATE products")),
        "round {round}: held while reserving stock: {blocked:?}"
    );
    weir.kill9().await;

    // The transaction outlived its process: open, still waiting, same id.
    let after = blocked_by(pool, holder).await;
    assert_eq!(
        after.as_ref().map(|b| (b.pid, b.xid.clone())),
        Some((blocked.pid, Some(xid.clone()))),
        "round {round}: the held transaction is still open after the kill"
    );
    let answer = tokio::time::timeout(WAIT, held)
        .await
        .expect("the held client ends")
        .expect("held client");
    assert!(
        matches!(answer, Outcome::Transport(_)),
        "round {round}: the held order's client got no answer: {answer:?}"
    );
    // Events the dead relay held: claimed, unpublished, and nothing can confirm them now.
    // (That there were some is asserted after the deliveries are checked.)
    let orphaned: Vec<String> = sqlx::query_scalar(
        "SELECT id::text FROM outbox_events WHERE published_at IS NULL AND claimed_by IS NOT NULL",
    )
    .fetch_all(pool)
    .await
    .expect("claimed events");
    tap.bind().await;

    // Release the lock: the orphaned session finds its client gone and rolls back.
    lock.rollback().await.expect("release the product row");
    let started = tokio::time::Instant::now();
    while sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM pg_stat_activity WHERE pid = $1")
        .bind(blocked.pid)
        .fetch_one(pool)
        .await
        .expect("pg_stat_activity")
        > 0
    {
        assert!(
            started.elapsed() < WAIT,
            "round {round}: the killed process's session {} never ended",
            blocked.pid
        );
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(
        xact_status(pool, &xid).await,
        "aborted",
        "round {round}: the transaction open at the kill rolled back"
    );
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM orders WHERE customer_id = $1) \
         + (SELECT COUNT(*) FROM idempotency_keys WHERE key = $2 AND state = 'completed') \
         + (SELECT reserved FROM products WHERE sku = $3)",
    )
    .bind(&customer)
    .bind(format!("held-{round}"))
    .bind(HELD_FIRST)
    .fetch_one(pool)
    .await
    .expect("the held order's effects");
    assert_eq!(
        left, 0,
        "round {round}: nothing of the rolled-back order exists (order, completed key, \
         {HELD_FIRST} reservation)"
    );
    RoundProof {
        pid: blocked.pid,
        xid,
        orphaned,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_load_with_broker_delivers_every_order_event_once_postgres() {
    const KEYS: usize = 60;
    const ROUNDS: usize = 3;
    const CLIENTS: usize = 4;
    let rabbit = Rabbit::connect().await;
    let tap = Tap::start(&rabbit).await;
    let deployment = Deployment::new(Backend::Postgres).await;
    let pool = sqlx::PgPool::connect(deployment.pg.as_ref().expect("postgres").url())
        .await
        .expect("connect pg");
    // Short locks and leases so keys and events held by a killed process free up quickly;
    // `rabbit.config()` ends inside `[events]`.
    let config = deployment.config(
        "weir.toml",
        &format!(
            "{}confirm_timeout_ms = 2000\nrelay_lease_ms = 3000\nrelay_retry_ms = 300\n\
             [http]\nrequest_timeout_ms = 2000\n[idempotency]\nlock_ttl_ms = 2500\n",
            rabbit.config()
        ),
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
        clients.push(tokio::spawn(super::load_client(
            ledger.clone(),
            base.clone(),
            stop.clone(),
            acked_tx.clone(),
        )));
    }

    let acked = |ledger: &Mutex<Ledger>| ledger.lock().unwrap().acked.len();
    let mut weir = weir;
    let mut proofs = Vec::new();
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
        proofs.push(kill_in_flight(round, weir, &tap, &pool, &ledger).await);
        weir = deployment.start(&config).await;
        *base.write().await = weir.api.clone();
    }
    let expected = KEYS + ROUNDS;
    while acked(&ledger) < expected {
        assert!(
            started.elapsed() < WAIT,
            "after the last restart: stuck at {} of {expected} acks",
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

    // Every key acknowledged with a 2xx has its order, once: a retry replays it.
    let http = client();
    for (key, id) in &ledger.acked {
        let again = place(&http, &weir.api, key).await;
        assert!(
            matches!(&again, Outcome::Answered { status: 201, order_id: Some(b), replayed: true, .. } if b == id),
            "{key}: a retry replays order {id}: {again:?}"
        );
    }

    // The outbox drains (the killed relays' leases expire and their events go out again).
    let started = tokio::time::Instant::now();
    loop {
        let unpublished: i64 = scalar(
            &pool,
            "SELECT COUNT(*) FROM outbox_events WHERE event_type = 'order.placed' \
             AND published_at IS NULL",
        )
        .await;
        if unpublished == 0 {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "{unpublished} order.placed events stayed unpublished in the outbox"
        );
        tokio::time::sleep(POLL).await;
    }
    // Each committed order has one order.placed row; the tap receives every one of them.
    let outbox: Vec<(String, String)> = sqlx::query_as(
        "SELECT o.id::text, e.id::text FROM orders o JOIN outbox_events e \
         ON e.subject = o.id::text AND e.event_type = 'order.placed'",
    )
    .fetch_all(&pool)
    .await
    .expect("orders and their events");
    let orders: i64 = scalar(&pool, "SELECT COUNT(*) FROM orders").await;
    assert_eq!(orders, expected as i64, "one order per key");
    assert_eq!(
        outbox.len(),
        expected,
        "one order.placed outbox row per order"
    );
    let event_of: HashMap<&str, &str> = outbox
        .iter()
        .map(|(o, e)| (o.as_str(), e.as_str()))
        .collect();
    for id in ledger.acked.values() {
        assert!(
            event_of.contains_key(id.as_str()),
            "acknowledged order {id} exists"
        );
    }
    let started = tokio::time::Instant::now();
    loop {
        let ids: BTreeSet<String> = tap.seen().into_iter().map(|s| s.id).collect();
        let missing: Vec<_> = event_of
            .iter()
            .filter(|(_, e)| !ids.contains(**e))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "{} committed orders' order.placed never reached the test's consumer \
             (order, event): {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(POLL).await;
    }
    let seen = tap.seen();
    // Deduplicated by id, each order's event arrived once; nothing else arrived.
    let mut ids_per_order: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for s in &seen {
        assert_eq!(s.message_id, s.id, "message_id is the event id: {s:?}");
        assert!(
            !s.customer.starts_with("cus_held"),
            "an event of a rolled-back order was delivered: {s:?}"
        );
        let Some(event) = event_of.get(s.subject.as_str()) else {
            panic!("an event for an order that does not exist: {s:?}");
        };
        assert_eq!(
            *event, s.id,
            "the event of order {} has its outbox id",
            s.subject
        );
        ids_per_order.entry(&s.subject).or_default().insert(&s.id);
    }
    assert_eq!(ids_per_order.len(), expected, "every order's event arrived");
    assert!(
        ids_per_order.values().all(|ids| ids.len() == 1),
        "one event id per order"
    );
    for (round, proof) in proofs.iter().enumerate() {
        assert!(
            !proof.orphaned.is_empty(),
            "round {}: the killed relay held no claimed event",
            round + 1
        );
        for id in &proof.orphaned {
            assert!(
                seen.iter().any(|s| &s.id == id),
                "round {}: event {id}, held by the killed relay, was delivered after the restart",
                round + 1
            );
        }
    }
    let rounds: Vec<String> = proofs
        .iter()
        .map(|p| {
            format!(
                "session {} xid {} aborted, {} claimed events orphaned",
                p.pid,
                p.xid,
                p.orphaned.len()
            )
        })
        .collect();
    eprintln!(
        "kill -9 with the broker: {} deliveries of {expected} events ({} redelivered); \
         rounds: {rounds:?}",
        seen.len(),
        seen.len() - expected
    );

    weir.signal("TERM");
    assert_eq!(weir.exit_code().await, Some(0));
    deployment.assert_nothing_lost_or_duplicated(expected).await;
    pool.close().await;
    tap.cleanup().await;
    rabbit.cleanup().await;
    deployment.finish().await;
}

/// `rabbitmqctl`'s count of deliveries of `queue` that are unacknowledged.
fn unacknowledged(queue: &str) -> u64 {
    let out = std::process::Command::new("rabbitmqctl")
        .args([
            "-q",
            "list_queues",
            "--no-table-headers",
            "name",
            "messages_unacknowledged",
        ])
        .output()
        .expect("run rabbitmqctl (installed with RabbitMQ)");
    assert!(
        out.status.success(),
        "rabbitmqctl list_queues: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let mut cols = l.split_whitespace();
            (cols.next() == Some(queue)).then(|| cols.next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("rabbitmqctl does not list {queue}"))
}

/// The consumer's log line for the first delivery it settled (acked, retried or
/// dead-lettered), waited for (bounded).
async fn settled(weir: &Weir) -> Value {
    let started = tokio::time::Instant::now();
    loop {
        if let Some(line) = weir.log().into_iter().find(|l| {
            let m = message(l);
            m == "event consumed"
                || m.starts_with("event consumer: transient failure")
                || m.starts_with("event consumer: message dead-lettered")
        }) {
            return line;
        }
        assert!(
            started.elapsed() < WAIT,
            "the restarted consumer settled no delivery (the redelivered payment)"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The sum of `weir_events_consumed_total` samples with `outcome`.
async fn consumed(weir: &Weir, outcome: &str) -> f64 {
    let text = client()
        .get(format!("{}/metrics", weir.ops))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| l.starts_with("weir_events_consumed_total{"))
        .filter(|l| l.contains(&format!("outcome=\"{outcome}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_killed_after_commit_before_ack_is_deduplicated_by_the_inbox() {
    let rabbit = Rabbit::connect().await;
    let deployment = Deployment::new(Backend::Postgres).await;
    let config = deployment.config("weir.toml", &rabbit.config());
    let pool = sqlx::PgPool::connect(deployment.pg.as_ref().expect("postgres").url())
        .await
        .expect("connect pg");
    let failpoint = [("WEIR_FAILPOINT", "consumer.after_commit".to_owned())];
    let weir = deployment.start_with(&config, &failpoint).await;
    weir.consumer_connected().await;
    let order = new_order(&weir, "ack-window").await;
    let (status, version) = order_state(&weir, &order).await;
    assert_eq!(status, "placed");

    let due = order_due_db(&pool, &order).await;
    rabbit.pay("pay-window", &order, &due).await;
    weir.wait_log("failpoint reached").await;
    let stop = weir.log_line("failpoint reached");
    assert_eq!(
        field(&stop, "failpoint"),
        Some(&json!("consumer.after_commit")),
        "{stop}"
    );
    // The window: committed (seen from another connection) ...
    assert_eq!(
        order_state_db(&pool, &order).await,
        ("paid".to_owned(), version + 1),
        "the transition committed before the ack"
    );
    assert_applied_once(&pool, "pay-window", &order).await;
    // ... and not acked: RabbitMQ holds the delivery as unacknowledged.
    let started = tokio::time::Instant::now();
    while unacknowledged(&rabbit.queue()) != 1 {
        assert!(
            started.elapsed() < WAIT,
            "RabbitMQ never showed the payment delivered and unacknowledged"
        );
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(rabbit.ready().await, 0, "the payment is out for delivery");

    weir.kill9().await;
    // The broker takes it back: unacked deliveries of a closed connection are requeued.
    let started = tokio::time::Instant::now();
    while rabbit.ready().await != 1 {
        assert!(
            started.elapsed() < WAIT,
            "the unacknowledged payment never went back to the queue after the kill"
        );
        tokio::time::sleep(POLL).await;
    }

    // Restarted without the failpoint: the redelivery is a duplicate, acked, applied never.
    let mut weir = deployment.start(&config).await;
    let settled = settled(&weir).await;
    assert_eq!(
        (message(&settled), field(&settled, "outcome")),
        ("event consumed", Some(&json!("duplicate"))),
        "the redelivery was recognised by the inbox: {settled}"
    );
    assert_eq!(
        settled["span"]["messaging.redelivered"],
        json!(true),
        "it is the broker's redelivery: {settled}"
    );
    assert_eq!(consumed(&weir, "duplicate").await, 1.0);
    assert_eq!(consumed(&weir, "applied").await, 0.0);
    rabbit.wait_all_delivered().await;
    weir.signal("TERM");
    assert_eq!(weir.exit_code().await, Some(0));
    assert_eq!(rabbit.ready().await, 0, "the queue is empty");
    assert_eq!(
        unacknowledged(&rabbit.queue()),
        0,
        "nothing left unacknowledged"
    );
    assert_eq!(
        order_state_db(&pool, &order).await,
        ("paid".to_owned(), version + 1),
        "the payment applied once"
    );
    assert_applied_once(&pool, "pay-window", &order).await;
    let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox_events WHERE subject = $1")
        .bind(&order)
        .fetch_one(&pool)
        .await
        .expect("count events");
    assert_eq!(events, 2, "order.placed and one order.paid, nothing else");
    let dead_letters = rabbit
        .channel
        .queue_declare(
            format!("{}.dlq", rabbit.queue()).as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("the dead-letter queue exists")
        .message_count();
    assert_eq!(dead_letters, 0, "nothing was dead-lettered");

    pool.close().await;
    rabbit.cleanup().await;
    deployment.finish().await;
}
