//! Real slow and broken dependencies, no in-process hooks: a PostgreSQL table held under
//! `LOCK TABLE`, a private Redis that hangs, a fault proxy in front of RabbitMQ that partitions
//! silently or cuts a publish whose confirm is pending, and a private RabbitMQ node that
//! restarts.
//!
//! Shared services are never disturbed: the lock is on the test's own database, the hung
//! Redis and the restarted broker are private processes on free ports, and the proxy sits
//! only in front of the server under test (the test's own broker connection goes direct).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use serde_json::{Value, json};
use sqlx::Connection as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;
use weir_host::events::{AmqpUrl, EventsConfig};
use weir_host::policy::circuit_breaker::BreakerState;
use weir_tests::fault_proxy::{BASIC_ACK, BASIC_PUBLISH, Direction, FaultProxy};

use crate::support::{Backend, TestServer, check, metric, order_body};

/// Hang guard of every wait in these tests (never a timing assertion).
const PATIENCE: Duration = Duration::from_secs(60);

/// Poll `probe` every 50 ms until it holds; fails naming `what` after [`PATIENCE`].
async fn until<F, Fut>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !probe().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {PATIENCE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn place(s: &TestServer, key: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let (status, headers, body) = s
        .post_order(Some(key), &order_body("cus_slow", &[("KB-001", 1)]))
        .await;
    (status.as_u16(), headers, body)
}

fn dep_calls(t: &str, dependency: &str, outcome: &str) -> f64 {
    metric(
        t,
        "weir_dependency_calls_total",
        &[("dependency", dependency), ("outcome", outcome)],
    )
}

// ---------------------------------------------------------------------------------------
// PostgreSQL: a table held under an exclusive lock.

/// The test holds `LOCK TABLE products IN ACCESS EXCLUSIVE MODE` in its own transaction:
/// catalog reads block in PostgreSQL, each attempt ends at the database dependency's timeout,
/// the client gets `503 DEPENDENCY_UNAVAILABLE` (retryable, `Retry-After`), the breaker
/// opens and readiness fails. Once the lock is released, the breaker probes, closes, and
/// orders are placed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_catalog_table_times_out_opens_the_breaker_and_recovers() {
    let s = TestServer::start(Backend::Postgres, |c, _| {
        c.policy.cache.ttl = Duration::ZERO; // every lookup reaches the database
        c.database.max_connections = 16; // reads stuck behind the lock hold connections
        // The dependency's timeout, not the plugin's catalog deadline, must end the read (a
        // call its caller gave up on never counts against the breaker).
        c.runtime.catalog_timeout = Duration::from_secs(2);
        let db = &mut c.policy.database;
        db.timeout = Duration::from_millis(250);
        db.breaker.min_calls = 2;
        db.breaker.failure_rate = 0.5;
        db.breaker.open_for = Duration::from_millis(300);
        db.breaker.half_open_probes = 1;
    })
    .await;
    let deps = s.state().deps.clone();
    let (status, _, body) = place(&s, "healthy").await;
    assert_eq!(status, 201, "{body}");
    let before = s.metrics().await;

    let url = s.state().config.database_url.clone().unwrap();
    let mut locker = sqlx::PgConnection::connect(url.expose())
        .await
        .expect("a second connection to the test database");
    let mut tx = locker.begin().await.unwrap();
    sqlx::query("LOCK TABLE products IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .unwrap();

    // Until readiness reports the open breaker, every order fails with the typed error.
    // (Readiness may fail earlier on its own database ping: the reads that timed out still
    // wait behind the lock on their pooled connections.)
    let mut refused = 0;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let ready = loop {
        let (status, headers, body) = place(&s, &format!("locked-{refused}")).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["code"], "DEPENDENCY_UNAVAILABLE", "{body}");
        assert_eq!(body["retryable"], true, "{body}");
        assert!(headers.contains_key("retry-after"), "{headers:?}");
        refused += 1;
        let (status, ready) = s.readyz().await;
        if status == 503 && check(&ready, "database.breaker")["ok"] == false {
            break ready;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "readiness never failed while the catalog table was locked: {ready}"
        );
    };
    let detail = check(&ready, "database.breaker")["detail"]
        .as_str()
        .unwrap_or_default();
    assert!(detail.starts_with("open"), "{ready}");
    let locked = s.metrics().await;
    assert!(
        dep_calls(&locked, "database", "timeout") - dep_calls(&before, "database", "timeout")
            >= 1.0,
        "the reads blocked on the lock ended at the dependency timeout ({refused} refused)"
    );

    tx.commit().await.unwrap();
    locker.close().await.unwrap();

    // Recovery: the breaker half-opens after its open period; the probe succeeds.
    let mut n = 0;
    until("an order placed after the lock was released", || {
        n += 1;
        let key = format!("released-{n}");
        let s = &s;
        async move { place(s, &key).await.0 == 201 }
    })
    .await;
    until("readiness back after the lock was released", || async {
        s.readyz().await.0 == 200
    })
    .await;
    assert_eq!(deps.database.breaker.state(), BreakerState::Closed);
    let after = s.metrics().await;
    for (from, to) in [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ] {
        assert!(
            metric(
                &after,
                "weir_breaker_transitions_total",
                &[("dependency", "database"), ("from", from), ("to", to)]
            ) >= 1.0,
            "transition {from} -> {to} counted"
        );
    }
    s.stop().await;
}

// ---------------------------------------------------------------------------------------
// Redis: a private server that hangs.

/// A `redis-server` of this test alone on a free port, without persistence; killed on drop.
struct PrivateRedis {
    port: u16,
    child: tokio::process::Child,
}

impl PrivateRedis {
    async fn start() -> Self {
        let port = free_port();
        let child = tokio::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start redis-server (is it installed?)");
        let redis = Self { port, child };
        until("the private redis-server to answer PING", || async {
            redis.command(&["PING"]).await.is_ok_and(|r| r == "+PONG")
        })
        .await;
        redis
    }

    /// Send `SIGname` to this test's own redis-server, by its process id.
    fn signal(&self, name: &str) {
        let pid = self.child.id().expect("redis-server running");
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {pid}");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// One command over RESP; the first reply line.
    async fn command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        let mut cmd = format!("*{}\r\n", args.len());
        for a in args {
            cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        conn.write_all(cmd.as_bytes()).await?;
        let mut buf = vec![0u8; 512];
        let n = conn.read(&mut buf).await?;
        Ok(String::from_utf8_lossy(&buf[..n]).trim_end().to_owned())
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too.
        let _ = self.child.start_kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A Redis that accepts connections and answers nothing: every cache call ends at the
/// cache's timeout (counted as `timeout`), the lookups fall back to the database, and every
/// order is still placed; readiness is unaffected (the cache is optional). Once Redis answers
/// again the cache serves again.
///
/// The hang is the private `redis-server` stopped with SIGSTOP (the kernel still accepts
/// connections and buffers commands; nothing answers), resumed with SIGCONT. Not
/// `CLIENT PAUSE ... ALL`: on Redis 7.0 it holds `CLIENT UNPAUSE` as well, so only its timer
/// could end it, and that timer would race the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_times_out_and_lookups_fall_back_to_the_database() {
    let redis = PrivateRedis::start().await;
    let url = redis.url();
    let s = TestServer::start(Backend::Sqlite, move |c, _| {
        c.policy.cache.redis_url = Some(url.as_str().into());
        // Well inside the plugin's catalog deadline, so the database read after a cache
        // timeout still has time.
        c.policy.cache.dependency.timeout = Duration::from_millis(100);
        c.runtime.catalog_timeout = Duration::from_secs(1);
    })
    .await;
    let (status, _, body) = place(&s, "warm").await;
    assert_eq!(status, 201, "{body}");
    until("the cache written back and read", || async {
        let (status, _, _) = place(&s, &Uuid::new_v4().to_string()).await;
        status == 201 && dep_calls(&s.metrics().await, "cache", "ok") >= 2.0
    })
    .await;
    let before = s.metrics().await;

    redis.signal("STOP");
    for i in 0..3 {
        let (status, _, body) = place(&s, &format!("paused-{i}")).await;
        assert_eq!(status, 201, "a hung cache must not fail the order: {body}");
    }
    let paused = s.metrics().await;
    assert!(
        dep_calls(&paused, "cache", "timeout") - dep_calls(&before, "cache", "timeout") >= 1.0,
        "cache calls to the hung Redis ended as timeouts"
    );
    assert!(
        dep_calls(&paused, "database", "ok") - dep_calls(&before, "database", "ok") >= 3.0,
        "each lookup fell back to the database"
    );
    let (status, ready) = s.readyz().await;
    assert_eq!(status, 200, "the cache is optional: {ready}");

    redis.signal("CONT");
    let hits = dep_calls(&paused, "cache", "ok");
    until("cache hits again after Redis resumed", || async {
        let (status, _, _) = place(&s, &Uuid::new_v4().to_string()).await;
        status == 201 && dep_calls(&s.metrics().await, "cache", "ok") > hits
    })
    .await;
    s.stop().await;
}

// ---------------------------------------------------------------------------------------
// RabbitMQ through the fault proxy, and a private node that restarts.

const BROKER: &str = "127.0.0.1:5672";

/// Unique names and quick reconnects for one test; `confirm_timeout` short so a partition
/// shows within the test.
fn events_config() -> EventsConfig {
    let id = Uuid::new_v4().simple().to_string();
    EventsConfig {
        exchange: format!("test.{id}.orders"),
        inbound_exchange: format!("test.{id}.inbound"),
        queue: format!("test.{id}.payments"),
        relay_poll: Duration::from_millis(50),
        relay_retry: Duration::from_millis(200),
        confirm_timeout: Duration::from_secs(1),
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(500),
        ..EventsConfig::default()
    }
}

fn amqp_url(addr: SocketAddr) -> String {
    format!("amqp://guest:guest@{addr}/%2f")
}

async fn start_with_broker(url: String, events: &EventsConfig) -> TestServer {
    let events = events.clone();
    TestServer::start(Backend::Postgres, move |c, _| {
        c.amqp_url = Some(AmqpUrl::new(url));
        c.events = events;
    })
    .await
}

/// `/readyz`'s broker detail satisfies `want` (bounded).
async fn broker_detail(s: &TestServer, what: &str, want: impl Fn(&str) -> bool) {
    until(what, || async {
        let (_, body) = s.readyz().await;
        want(
            check(&body, "broker")["detail"]
                .as_str()
                .unwrap_or_default(),
        )
    })
    .await;
}

async fn unpublished(s: &TestServer) -> u64 {
    s.state()
        .store
        .outbox_stats(chrono::Utc::now())
        .await
        .unwrap()
        .unpublished
}

/// The test's own connection to a broker: a queue bound to every order event, declared
/// before any order is placed, and an independent consumer of it.
struct Tap {
    conn: Connection,
    channel: lapin::Channel,
    queue: String,
    events: EventsConfig,
}

/// One delivery at the tap: (event id, type, subject).
type Seen = (String, String, String);

impl Tap {
    /// `durable`: a durable queue that outlives a broker restart (else exclusive).
    async fn bind(addr: SocketAddr, events: &EventsConfig, durable: bool) -> Self {
        let conn = Connection::connect(&amqp_url(addr), ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("connect to RabbitMQ at {addr}: {e}"));
        let channel = conn.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        channel
            .exchange_declare(
                events.exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let queue = format!("{}.tap", events.exchange);
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable,
                    exclusive: !durable,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel
            .queue_bind(
                queue.as_str().into(),
                events.exchange.as_str().into(),
                "order.#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        Self {
            conn,
            channel,
            queue,
            events: events.clone(),
        }
    }

    async fn consumer(&self) -> lapin::Consumer {
        self.channel
            .basic_consume(
                self.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap()
    }

    async fn cleanup(self) {
        let _ = self
            .channel
            .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
            .await;
        let e = &self.events;
        for q in [e.queue.clone(), e.retry_queue(), e.dead_letter_queue()] {
            let _ = self
                .channel
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for x in [
            e.exchange.clone(),
            e.inbound_exchange.clone(),
            e.dead_letter_exchange(),
        ] {
            let _ = self
                .channel
                .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
        let _ = self.conn.close(200, "test done".into()).await;
    }
}

/// Receive (acking) until `done(&seen)` holds; fails with what was seen.
async fn receive_until(
    consumer: &mut lapin::Consumer,
    seen: &mut Vec<Seen>,
    what: &str,
    done: impl Fn(&[Seen]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done(seen) {
        let delivery = tokio::time::timeout_at(deadline, consumer.next())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}; saw {seen:?}"))
            .expect("tap consumer stream ended")
            .expect("delivery");
        let body: Value = serde_json::from_slice(&delivery.data).unwrap();
        seen.push((
            body["id"].as_str().unwrap().to_owned(),
            body["type"].as_str().unwrap().to_owned(),
            body["subject"].as_str().unwrap().to_owned(),
        ));
        delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .unwrap();
    }
}

/// Order ids with an `order.placed` among `seen`.
fn placed(seen: &[Seen]) -> HashSet<String> {
    seen.iter()
        .filter(|(_, t, _)| t == "order.placed")
        .map(|(_, _, subject)| subject.clone())
        .collect()
}

/// At least once, exactly once after deduplication by event id: a duplicate is the same
/// event (same id, type and subject) delivered again, never a second event for one fact.
fn assert_duplicates_only_by_id(seen: &[Seen]) {
    let mut by_id: HashMap<&str, (&str, &str)> = HashMap::new();
    let mut by_fact: HashMap<(&str, &str), &str> = HashMap::new();
    for (id, t, subject) in seen {
        let fact = by_id
            .entry(id.as_str())
            .or_insert((t.as_str(), subject.as_str()));
        assert_eq!(*fact, (t.as_str(), subject.as_str()), "event {id} changed");
        let first = by_fact
            .entry((t.as_str(), subject.as_str()))
            .or_insert(id.as_str());
        assert_eq!(
            *first,
            id.as_str(),
            "{t} of {subject} published under two event ids: {seen:?}"
        );
    }
}

async fn place_ok(s: &TestServer, key: &str) -> String {
    let (status, _, body) = place(s, key).await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// A silent partition between the relay and the broker (the proxy blackholes: connections
/// stay open, no byte moves, no FIN or RST): orders are still accepted, their events stay in
/// the outbox, the relay's confirm wait ends at `events.confirm_timeout_ms` with
/// `publish_failed{reason="confirm_timeout"}`, readiness shows the broker degraded. When the
/// partition heals every event reaches the test's queue; duplicates (what crossed before the
/// relay gave up, published again after) carry the same event id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_partition_times_out_the_confirm_and_loses_no_event() {
    let events = events_config();
    let broker: SocketAddr = BROKER.parse().unwrap();
    let tap = Tap::bind(broker, &events, false).await;
    let mut consumer = tap.consumer().await;
    let proxy = FaultProxy::amqp(broker).await;
    let s = start_with_broker(amqp_url(proxy.addr()), &events).await;
    broker_detail(&s, "the broker connected", |d| d == "connected").await;

    let mut orders = HashSet::from([place_ok(&s, "before").await]);
    let mut seen = Vec::new();
    receive_until(
        &mut consumer,
        &mut seen,
        "the first order's event",
        |seen| placed(seen) == orders,
    )
    .await;
    until("the first event marked published", || async {
        unpublished(&s).await == 0
    })
    .await;
    let timeouts = |t: &str| {
        metric(
            t,
            "weir_events_publish_failed_total",
            &[("reason", "confirm_timeout")],
        )
    };
    assert_eq!(timeouts(&s.metrics().await), 0.0);

    proxy.blackhole();
    for i in 0..3 {
        orders.insert(place_ok(&s, &format!("partitioned-{i}")).await);
    }
    until(
        "the relay's confirm wait to time out in the partition",
        || async { timeouts(&s.metrics().await) >= 1.0 },
    )
    .await;
    assert_eq!(unpublished(&s).await, 3, "the events wait in the outbox");
    broker_detail(&s, "the broker degraded", |d| d.starts_with("degraded")).await;

    proxy.pass();
    receive_until(
        &mut consumer,
        &mut seen,
        "every order's event after the partition",
        |seen| placed(seen) == orders,
    )
    .await;
    until("the outbox drained after the partition", || async {
        unpublished(&s).await == 0
    })
    .await;
    assert_duplicates_only_by_id(&seen);
    broker_detail(&s, "the broker connected again", |d| d == "connected").await;
    s.stop().await;
    tap.cleanup().await;
}

/// A publish cut while its confirm is pending: the proxy passes `Basic.Publish` to the broker
/// (which routes it) but drops the broker's `Basic.Ack` and closes the connection. The relay
/// must not count the event as published: it republishes after reconnecting, so the test's
/// queue sees the event twice under one id, and the outbox marks it published. Then a publish
/// cut before it reaches the broker: after the reconnect the event arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_cut_before_its_confirm_is_published_again() {
    let events = events_config();
    let broker: SocketAddr = BROKER.parse().unwrap();
    let tap = Tap::bind(broker, &events, false).await;
    let mut consumer = tap.consumer().await;
    let proxy = FaultProxy::amqp(broker).await;
    let s = start_with_broker(amqp_url(proxy.addr()), &events).await;
    broker_detail(&s, "the broker connected", |d| d == "connected").await;
    let broken = |t: &str| {
        metric(
            t,
            "weir_events_publish_failed_total",
            &[("reason", "link_broken")],
        )
    };

    // The broker has the message; the relay never hears the confirm.
    let cut = proxy.cut_at_frame(Direction::ToClient, BASIC_ACK);
    let order = place_ok(&s, "cut-confirm").await;
    tokio::time::timeout(PATIENCE, cut)
        .await
        .expect("the proxy cut at the broker's confirm")
        .unwrap();
    let mut seen = Vec::new();
    let delivered = |seen: &[Seen], order: &str| {
        seen.iter()
            .filter(|(_, t, subject)| t == "order.placed" && subject == order)
            .count()
    };
    receive_until(
        &mut consumer,
        &mut seen,
        "the unconfirmed event published again after the reconnect",
        |seen| delivered(seen, &order) >= 2,
    )
    .await;
    until("the republished event marked published", || async {
        unpublished(&s).await == 0
    })
    .await;
    assert!(broken(&s.metrics().await) >= 1.0, "counted as link_broken");

    // The publish itself lost on the way: the broker never had it.
    let cut = proxy.cut_at_frame(Direction::ToUpstream, BASIC_PUBLISH);
    let lost = place_ok(&s, "cut-publish").await;
    tokio::time::timeout(PATIENCE, cut)
        .await
        .expect("the proxy cut at the relay's publish")
        .unwrap();
    receive_until(
        &mut consumer,
        &mut seen,
        "the event whose publish was cut, after the reconnect",
        |seen| delivered(seen, &lost) >= 1,
    )
    .await;
    until("the outbox drained", || async {
        unpublished(&s).await == 0
    })
    .await;
    assert_duplicates_only_by_id(&seen);
    assert!(
        proxy.accepted() >= 4,
        "relay and consumer, relay twice more"
    );
    s.stop().await;
    tap.cleanup().await;
}

/// A RabbitMQ node of this test alone (its own node name, ports, database and logs in a
/// temporary directory), so it can be restarted without disturbing the shared broker.
/// Starting it takes about 6 s here, `stop_app` + `start_app` about 2 s.
struct PrivateBroker {
    node: String,
    port: u16,
    dir: tempfile::TempDir,
}

impl PrivateBroker {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // rabbitmq-server drops to the `rabbitmq` user when started as root.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::write(dir.path().join("enabled_plugins"), "[].").unwrap();
        let broker = Self {
            node: format!("weir-test-{}@localhost", Uuid::new_v4().simple()),
            port: free_port(),
            dir,
        };
        let status = broker
            .command("rabbitmq-server")
            .arg("-detached")
            .status()
            .await
            .expect("run rabbitmq-server");
        assert!(status.success(), "rabbitmq-server -detached: {status}");
        let pid_file = broker.pid_file();
        broker
            .ctl(&["wait", pid_file.as_str(), "--timeout", "60"])
            .await;
        broker
    }

    fn pid_file(&self) -> String {
        self.dir.path().join("pid").display().to_string()
    }

    fn command(&self, program: &str) -> tokio::process::Command {
        let path = |p: &str| -> PathBuf { self.dir.path().join(p) };
        let mut cmd = tokio::process::Command::new(program);
        cmd.env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", free_port().to_string())
            .env("RABBITMQ_MNESIA_BASE", path("mnesia"))
            .env("RABBITMQ_LOG_BASE", path("log"))
            .env("RABBITMQ_PID_FILE", path("pid"))
            // No configuration file: the shared broker's (its listener) must not apply.
            .env("RABBITMQ_CONFIG_FILE", path("none"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", path("enabled_plugins"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd
    }

    async fn ctl(&self, args: &[&str]) {
        let out = tokio::time::timeout(
            PATIENCE,
            tokio::process::Command::new("rabbitmqctl")
                .arg("-n")
                .arg(&self.node)
                .args(args)
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("rabbitmqctl {args:?} hung"))
        .expect("run rabbitmqctl");
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?}: {}{}; node log in {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.dir.path().join("log").display()
        );
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        // The node's own process, by the id it wrote (never by name).
        if let Some(pid) = std::fs::read_to_string(self.pid_file())
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// The broker restarts (`rabbitmqctl stop_app`, orders placed meanwhile, `start_app`): the
/// relay and the consumer reconnect and redeclare by themselves, every order's event reaches
/// the test's durable queue (at least once, exactly once by id), the outbox drains, and the
/// consumer applies a payment published after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_loses_no_event_and_both_links_resume() {
    let node = PrivateBroker::start().await;
    let events = events_config();
    let tap = Tap::bind(node.addr(), &events, true).await;
    let s = start_with_broker(amqp_url(node.addr()), &events).await;
    broker_detail(&s, "the broker connected", |d| d == "connected").await;

    let mut orders = HashSet::new();
    for i in 0..3 {
        orders.insert(place_ok(&s, &format!("before-{i}")).await);
    }
    until("the events before the restart published", || async {
        unpublished(&s).await == 0
    })
    .await;

    node.ctl(&["stop_app"]).await;
    broker_detail(&s, "the broker degraded", |d| d.starts_with("degraded")).await;
    let mut last = String::new();
    for i in 0..3 {
        last = place_ok(&s, &format!("during-{i}")).await;
        orders.insert(last.clone());
    }
    assert_eq!(unpublished(&s).await, 3, "the events wait in the outbox");
    node.ctl(&["start_app"]).await;
    broker_detail(&s, "both links back after the restart", |d| {
        d == "connected"
    })
    .await;
    until("the outbox drained after the restart", || async {
        unpublished(&s).await == 0
    })
    .await;

    // The test's own link was closed by the restart too.
    drop(tap);
    let tap = Tap::bind(node.addr(), &events, true).await;
    let mut consumer = tap.consumer().await;
    let mut seen = Vec::new();
    receive_until(&mut consumer, &mut seen, "every order's event", |seen| {
        placed(seen) == orders
    })
    .await;
    assert_duplicates_only_by_id(&seen);

    // The consumer resumed: a payment published now is applied.
    let order = s.get(&format!("/v1/orders/{last}")).await.1;
    let payment = json!({
        "specversion": "1.0",
        "id": Uuid::new_v4().to_string(),
        "source": "/payments",
        "type": "payment.captured",
        "subject": last,
        "datacontenttype": "application/json",
        "data": { "order_id": last, "amount": order["total"], "currency": order["currency"] },
    });
    let confirm = tap
        .channel
        .basic_publish(
            events.inbound_exchange.as_str().into(),
            "payment.captured".into(),
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            payment.to_string().as_bytes(),
            BasicProperties::default()
                .with_content_type("application/cloudevents+json".into())
                .with_message_id(payment["id"].as_str().unwrap().into())
                .with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(confirm, lapin::Confirmation::Ack(None), "payment routed");
    until(
        "the payment applied by the consumer after the restart",
        || async { s.get(&format!("/v1/orders/{last}")).await.1["status"] == "paid" },
    )
    .await;
    s.stop().await;
    let _ = tap.conn.close(200, "test done".into()).await;
}
