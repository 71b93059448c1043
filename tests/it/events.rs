//! Events over a real RabbitMQ (127.0.0.1:5672, guest/guest) and a real PostgreSQL: the
//! outbox relay, broker outages, competing relays, the idempotent consumer with its retries
//! and dead letters, and intake backpressure.
//!
//! Every test uses its own uniquely named exchanges and queues (the broker has no management
//! plugin for per-test vhosts) and deletes them at the end. The broker itself is never
//! stopped: an outage is a small TCP proxy in front of it that the test switches off.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use uuid::Uuid;
use weir_host::events::{AmqpUrl, EventsConfig};
use weir_host::server::config::Config;

use crate::support::{Backend, TestServer, check, order_body};

const BROKER: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Upper bound of any wait on the broker in these tests.
const PATIENCE: Duration = Duration::from_secs(60);

/// Unique exchange and queue names for one test.
fn names() -> EventsConfig {
    let id = Uuid::new_v4().simple().to_string();
    EventsConfig {
        exchange: format!("test.{id}.orders"),
        inbound_exchange: format!("test.{id}.inbound"),
        queue: format!("test.{id}.payments"),
        relay_poll: Duration::from_millis(50),
        relay_retry: Duration::from_millis(200),
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(500),
        retry_delay: Duration::from_millis(50),
        retry_max_delay: Duration::from_millis(200),
        max_retries: 2,
        backpressure: weir_host::events::BackpressureConfig {
            check_interval: Duration::from_millis(100),
            ..Default::default()
        },
        ..EventsConfig::default()
    }
}

fn with_broker(url: &str, events: &EventsConfig) -> impl FnOnce(&mut Config, &std::path::Path) {
    let url = url.to_owned();
    let events = events.clone();
    move |c, _| {
        c.amqp_url = Some(AmqpUrl::new(url));
        c.events = events;
    }
}

/// The test's own broker connection: an independent consumer of order events, a publisher
/// of inbound events, and cleanup.
struct Broker {
    conn: Connection,
    channel: lapin::Channel,
    names: EventsConfig,
}

impl Broker {
    async fn connect(names: &EventsConfig) -> Self {
        let conn = Connection::connect(BROKER, ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ on 127.0.0.1:5672 (is it running?)");
        let channel = conn.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        Self {
            conn,
            channel,
            names: names.clone(),
        }
    }

    /// An exclusive queue bound to every order event, declared before any order is placed
    /// (same exchange arguments as the relay's, so the declarations agree).
    async fn tap_order_events(&self) -> lapin::Consumer {
        self.channel
            .exchange_declare(
                self.names.exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let q = self
            .channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        self.channel
            .queue_bind(
                q.name().clone(),
                self.names.exchange.as_str().into(),
                "order.#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        self.channel
            .basic_consume(
                q.name().clone(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap()
    }

    /// Publish raw bytes to the inbound exchange and wait for the confirm.
    async fn publish_inbound(&self, routing_key: &str, message_id: Option<&str>, body: &[u8]) {
        let mut props = BasicProperties::default()
            .with_content_type("application/cloudevents+json".into())
            .with_delivery_mode(2);
        if let Some(id) = message_id {
            props = props.with_message_id(id.into());
        }
        let mut headers = FieldTable::default();
        headers.insert(
            "traceparent".into(),
            AMQPValue::LongString("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        );
        let confirm = self
            .channel
            .basic_publish(
                self.names.inbound_exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                body,
                props.with_headers(headers),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(confirm, lapin::Confirmation::Ack(None), "inbound publish");
    }

    /// Publish a well-formed event of type `order.sentinel` to the order exchange (so every
    /// tap receives it) and wait for its confirm; its id. A queue delivers in order: once the
    /// sentinel is received, everything enqueued before it has been received too.
    async fn publish_sentinel(&self) -> String {
        let id = format!("sentinel-{}", Uuid::new_v4().simple());
        let body = serde_json::json!({
            "specversion": "1.0",
            "id": id,
            "type": "order.sentinel",
            "source": "weir-tests",
            "subject": "sentinel",
        });
        let confirm = self
            .channel
            .basic_publish(
                self.names.exchange.as_str().into(),
                "order.sentinel".into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                body.to_string().as_bytes(),
                BasicProperties::default()
                    .with_content_type("application/cloudevents+json".into())
                    .with_delivery_mode(2)
                    .with_message_id(id.as_str().into()),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(confirm, lapin::Confirmation::Ack(None), "sentinel publish");
        id
    }

    async fn cleanup(self) {
        let n = &self.names;
        for q in [n.queue.clone(), n.retry_queue(), n.dead_letter_queue()] {
            let _ = self
                .channel
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for x in [
            n.exchange.clone(),
            n.inbound_exchange.clone(),
            n.dead_letter_exchange(),
        ] {
            let _ = self
                .channel
                .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
        let _ = self.conn.close(200, "test done".into()).await;
    }
}

/// One order event as the independent consumer saw it.
#[derive(Debug, Clone)]
struct Seen {
    id: String,
    event_type: String,
    subject: String,
    traceparent: Option<String>,
}

/// Receive until `done(&seen)` holds, acking everything; fails with what was seen so far.
async fn receive_until(
    consumer: &mut lapin::Consumer,
    seen: &mut Vec<Seen>,
    what: &str,
    done: impl Fn(&[Seen]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done(seen) {
        let next = tokio::time::timeout_at(deadline, consumer.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "timed out waiting for {what}; saw {} events: {:?}",
                    seen.len(),
                    seen.iter().map(|s| &s.event_type).collect::<Vec<_>>()
                )
            })
            .expect("consumer stream ended")
            .expect("delivery");
        let props = &next.properties;
        assert_eq!(
            props.content_type().as_ref().map(|c| c.as_str()),
            Some("application/cloudevents+json")
        );
        assert_eq!(props.delivery_mode(), &Some(2), "persistent");
        let body: Value = serde_json::from_slice(&next.data).unwrap();
        assert_eq!(body["specversion"], "1.0");
        let id = body["id"].as_str().unwrap().to_owned();
        assert_eq!(
            props.message_id().as_ref().map(|m| m.as_str()),
            Some(id.as_str()),
            "message_id is the event id"
        );
        assert_eq!(next.routing_key.as_str(), body["type"].as_str().unwrap());
        let traceparent = props
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("traceparent"))
            .and_then(|v| v.as_long_string())
            .map(|s| String::from_utf8_lossy(s.as_bytes()).into_owned());
        seen.push(Seen {
            id,
            event_type: body["type"].as_str().unwrap().to_owned(),
            subject: body["subject"].as_str().unwrap().to_owned(),
            traceparent,
        });
        next.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
}

fn placed_ids(seen: &[Seen]) -> HashSet<String> {
    seen.iter()
        .filter(|s| s.event_type == "order.placed")
        .map(|s| s.subject.clone())
        .collect()
}

async fn place(
    s: &TestServer,
    key: &str,
    traceparent: Option<&str>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = s
        .client
        .post(format!("{}/v1/orders", s.base))
        .header("Idempotency-Key", key)
        .json(&order_body("cus_events", &[("KB-001", 1)]));
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, res.json().await.unwrap_or(Value::Null), headers)
}

/// Wait until every outbox row is marked published (bounded).
async fn outbox_drained(s: &TestServer) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let stats = s
            .state()
            .store
            .outbox_stats(chrono::Utc::now())
            .await
            .unwrap();
        if stats.unpublished == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "outbox still has {} unpublished events",
            stats.unpublished
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_publishes_every_order_once_in_order_with_trace_context() {
    let n = names();
    let broker = Broker::connect(&n).await;
    let mut tap = broker.tap_order_events().await;
    let s = TestServer::start(Backend::Postgres, with_broker(BROKER, &n)).await;

    const N: usize = 12;
    let mut trace_of = HashMap::new();
    let mut cancelled = HashSet::new();
    for i in 0..N {
        let trace_id = format!("{:032x}", 0xabc0_0000 + i);
        let tp = format!("00-{trace_id}-00f067aa0ba902b7-01");
        let (status, order, _) = place(&s, &format!("k{i}"), Some(&tp)).await;
        assert_eq!(status, 201, "{order}");
        let id = order["id"].as_str().unwrap().to_owned();
        trace_of.insert(id.clone(), trace_id);
        if i % 3 == 0 {
            assert_eq!(s.cancel(&id).await.0, 200);
            cancelled.insert(id);
        }
    }
    let mut seen = Vec::new();
    let expected_total = N + cancelled.len();
    receive_until(&mut tap, &mut seen, "every order event", |seen| {
        seen.len() >= expected_total
    })
    .await;
    outbox_drained(&s).await;

    // Exactly N distinct order.placed, no event twice.
    assert_eq!(placed_ids(&seen).len(), N);
    let distinct: HashSet<&String> = seen.iter().map(|e| &e.id).collect();
    assert_eq!(distinct.len(), seen.len(), "an event arrived twice");
    // Trace context of the request that placed the order.
    for e in seen.iter().filter(|e| e.event_type == "order.placed") {
        let tp = e.traceparent.as_deref().expect("traceparent header");
        assert_eq!(
            tp.split('-').nth(1),
            Some(trace_of[&e.subject].as_str()),
            "{tp}"
        );
    }
    // In order per order id: placed before cancelled.
    let mut per_order: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for e in &seen {
        per_order.entry(&e.subject).or_default().push(&e.event_type);
    }
    for (id, types) in per_order {
        let want: Vec<&str> = if cancelled.contains(id) {
            vec!["order.placed", "order.cancelled"]
        } else {
            vec!["order.placed"]
        };
        assert_eq!(types, want, "order {id}");
    }
    // Readiness reports the broker connected; /infoz shows the broker path.
    let ready = s.ops_get("/readyz").await.1;
    assert_eq!(check(&ready, "broker")["detail"], "connected", "{ready}");
    let info = s.ops_get("/infoz").await.1;
    assert_eq!(info["events"]["mode"], "amqp");
    // The relay, the consumer and the monitor run on the worker supervisor (and its drain).
    let workers = info["workers"].as_array().expect("workers in /infoz");
    for name in ["events.relay", "events.consumer", "events.backpressure"] {
        let w = workers
            .iter()
            .find(|w| w["name"] == name)
            .unwrap_or_else(|| panic!("worker {name} in /infoz: {info}"));
        assert_eq!(w["restarts"], 0, "{w}");
    }
    assert!(
        !info.to_string().contains("guest:guest"),
        "password leaked in /infoz"
    );

    s.stop().await;
    broker.cleanup().await;
}

/// A TCP proxy to the broker that the test can switch off (existing connections are cut,
/// new ones are closed at once) and on again.
struct Proxy {
    url: String,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let up = up.clone();
            let conns = conns.clone();
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let task = tokio::spawn(async move {
                        if let Ok(mut upstream) = TcpStream::connect("127.0.0.1:5672").await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                        }
                    });
                    conns.lock().await.push(task);
                }
            })
        };
        Self {
            url: format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
            up,
            conns,
            accept,
        }
    }

    async fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for task in self.conns.lock().await.drain(..) {
            task.abort();
        }
    }

    fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Poll `/readyz` (bounded) until the broker check's detail satisfies `want`; returns the body.
async fn readyz_until(s: &TestServer, what: &str, want: impl Fn(&str) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, body) = s.readyz().await;
        let detail = check(&body, "broker")["detail"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if want(&detail) {
            assert_eq!(
                status, 200,
                "the broker never makes the instance unready: {body}"
            );
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "readiness never showed {what}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_loses_no_event() {
    let n = names();
    let broker = Broker::connect(&n).await;
    let mut tap = broker.tap_order_events().await;
    let proxy = Proxy::start().await;
    let s = TestServer::start(Backend::Postgres, with_broker(&proxy.url, &n)).await;
    readyz_until(&s, "the broker connected", |d| d == "connected").await;

    let mut placed = HashSet::new();
    for i in 0..4 {
        let (status, order, _) = place(&s, &format!("before{i}"), None).await;
        assert_eq!(status, 201);
        placed.insert(order["id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    receive_until(&mut tap, &mut seen, "the first orders", |seen| {
        placed_ids(seen).len() == 4
    })
    .await;
    // Delivered to the tap is not yet confirmed to the relay: wait until the relay has marked
    // every one published, so the outage below starts with an empty outbox.
    crate::support::eventually(
        "the relay marked the first orders' events published",
        200,
        Duration::from_millis(25),
        || async {
            s.state()
                .store
                .outbox_stats(chrono::Utc::now())
                .await
                .unwrap()
                .unpublished
                == 0
        },
    )
    .await;

    // Outage: orders are still accepted, readiness says degraded (still 200).
    proxy.down().await;
    readyz_until(&s, "the broker degraded", |d| d.starts_with("degraded")).await;
    for i in 0..6 {
        let (status, order, _) = place(&s, &format!("during{i}"), None).await;
        assert_eq!(
            status, 201,
            "orders are accepted while the broker is down: {order}"
        );
        placed.insert(order["id"].as_str().unwrap().to_owned());
    }
    let stats = s
        .state()
        .store
        .outbox_stats(chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(stats.unpublished, 6, "the events wait in the outbox");

    // Restored: everything arrives.
    proxy.up();
    receive_until(
        &mut tap,
        &mut seen,
        "the orders placed during the outage",
        |seen| placed_ids(seen).len() == placed.len(),
    )
    .await;
    assert_eq!(placed_ids(&seen), placed);
    outbox_drained(&s).await;
    readyz_until(&s, "the broker connected again", |d| d == "connected").await;

    s.stop().await;
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_events_stay_in_the_outbox_until_a_queue_is_bound() {
    let n = names();
    let broker = Broker::connect(&n).await;
    // No queue bound to the exchange yet: every publish is returned.
    let s = TestServer::start(Backend::Postgres, with_broker(BROKER, &n)).await;
    readyz_until(&s, "the broker connected", |d| d == "connected").await;
    let mut placed = HashSet::new();
    for i in 0..3 {
        let (status, order, _) = place(&s, &format!("unroutable{i}"), None).await;
        assert_eq!(status, 201);
        placed.insert(order["id"].as_str().unwrap().to_owned());
    }
    // Wait (bounded) until the relay has tried each of them at least once: returned, so
    // not marked published.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let attempts: Vec<i32> = sqlx::query_scalar(
            "SELECT publish_attempts FROM outbox_events WHERE published_at IS NULL",
        )
        .fetch_all(&pg_pool(&s).await)
        .await
        .unwrap();
        if attempts.len() == 3 && attempts.iter().all(|a| *a >= 1) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay never attempted every event: {attempts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        s.state()
            .store
            .outbox_stats(chrono::Utc::now())
            .await
            .unwrap()
            .unpublished,
        3,
        "returned events are not marked published"
    );
    // Bind a queue: the deferred retries deliver them.
    let mut tap = broker.tap_order_events().await;
    let mut seen = Vec::new();
    receive_until(&mut tap, &mut seen, "the once-unroutable events", |seen| {
        placed_ids(seen) == placed
    })
    .await;
    outbox_drained(&s).await;

    s.stop().await;
    broker.cleanup().await;
}

async fn pg_pool(s: &TestServer) -> sqlx::PgPool {
    let url = s.state().config.database_url.clone().unwrap();
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url.expose())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_on_one_database_publish_each_event_once() {
    let n = names();
    let broker = Broker::connect(&n).await;
    let mut tap = broker.tap_order_events().await;
    let a = TestServer::start(Backend::Postgres, |c, d| {
        with_broker(
            BROKER,
            &EventsConfig {
                relay_batch: 3,
                ..n.clone()
            },
        )(c, d);
        // 30 orders at once over two servers: about publishing once, not about time.
        crate::support::patient(c);
    })
    .await;
    let db_url = a.state().config.database_url.clone().unwrap();
    let b = TestServer::start(Backend::Sqlite, |c, d| {
        with_broker(
            BROKER,
            &EventsConfig {
                relay_batch: 3,
                ..n.clone()
            },
        )(c, d);
        crate::support::patient(c);
        c.database_url = Some(db_url);
    })
    .await;
    assert_eq!(b.state().store.backend(), "postgres");

    const N: usize = 30;
    let mut placed = HashSet::new();
    let keys: Vec<String> = (0..N).map(|i| format!("two{i}")).collect();
    let requests = keys.iter().enumerate().map(|(i, key)| {
        let s = if i % 2 == 0 { &a } else { &b };
        place(s, key, None)
    });
    for (status, order, _) in futures::future::join_all(requests).await {
        assert_eq!(status, 201, "{order}");
        placed.insert(order["id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    receive_until(&mut tap, &mut seen, "every order.placed", |seen| {
        placed_ids(seen).len() == N
    })
    .await;
    outbox_drained(&a).await;
    // No quiet window: stop both replicas (their relays with them), so nothing can be
    // published any more, then send a sentinel through the exchange. Every copy either relay
    // ever published was confirmed, so enqueued, before it; receiving the sentinel means
    // every duplicate, if there were any, has been received too.
    b.stop().await;
    a.stop().await;
    let sentinel = broker.publish_sentinel().await;
    receive_until(
        &mut tap,
        &mut seen,
        "the sentinel after the last event",
        |seen| seen.iter().any(|e| e.id == sentinel),
    )
    .await;
    seen.retain(|e| e.id != sentinel);
    assert_eq!(placed_ids(&seen), placed);
    assert_eq!(seen.len(), N, "no event was published twice");
    broker.cleanup().await;
}

/// The dead letters of the test's queue once there are at least `at_least` (bounded wait).
async fn dead_letters(
    url: &AmqpUrl,
    n: &EventsConfig,
    at_least: usize,
) -> Vec<weir_host::events::dlq::DlqMessage> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let dead = weir_host::events::dlq::list(url, n, 100).await.unwrap();
        if dead.len() >= at_least {
            return dead;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {at_least} dead letters, have {dead:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Message id -> dead-letter reason.
fn reasons(dead: &[weir_host::events::dlq::DlqMessage]) -> BTreeMap<String, String> {
    dead.iter()
        .map(|d| {
            (
                d.message_id.clone().unwrap_or_default(),
                d.reason.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// A CloudEvent about `order` (its API JSON) from the source configured for its type;
/// a payment pays the order's total.
fn cloud_event(id: &str, event_type: &str, order: &Value) -> Vec<u8> {
    let (source, data) = match event_type {
        "payment.captured" => (
            "/payments",
            json!({ "order_id": order["id"], "amount": order["total"], "currency": order["currency"] }),
        ),
        _ => ("/shipping", json!({ "order_id": order["id"] })),
    };
    event_from(source, id, event_type, &data)
}

/// A CloudEvent from `source` with `data` (which names the order).
fn event_from(source: &str, id: &str, event_type: &str, data: &Value) -> Vec<u8> {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": source,
        "type": event_type,
        "subject": data["order_id"],
        "datacontenttype": "application/json",
        "data": data,
    })
    .to_string()
    .into_bytes()
}

async fn order_status(s: &TestServer, id: &str) -> (String, i64) {
    let o = s.get(&format!("/v1/orders/{id}")).await.1;
    (
        o["status"].as_str().unwrap().to_owned(),
        o["version"].as_i64().unwrap(),
    )
}

async fn status_becomes(s: &TestServer, id: &str, want: &str) -> i64 {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, version) = order_status(s, id).await;
        if status == want {
            return version;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "order {id} stayed {status}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_applies_each_message_once_and_dead_letters_poison() {
    let n = names();
    let broker = Broker::connect(&n).await;
    let s = TestServer::start(Backend::Postgres, with_broker(BROKER, &n)).await;
    readyz_until(&s, "the broker connected", |d| d == "connected").await;
    let (_, order, _) = place(&s, "pay-1", None).await;
    let order_id = order["id"].as_str().unwrap().to_owned();
    let (_, unpaid, _) = place(&s, "pay-2", None).await;
    let unpaid_id = unpaid["id"].as_str().unwrap().to_owned();

    // payment.captured three times with one message id (a duplicate publish and a
    // redelivery look the same to the consumer): one transition.
    for _ in 0..3 {
        broker
            .publish_inbound(
                "payment.captured",
                Some("pay-msg-1"),
                &cloud_event("pay-msg-1", "payment.captured", &order),
            )
            .await;
    }
    // Poison and malformed messages, interleaved with good ones.
    broker
        .publish_inbound("payment.captured", Some("bad-json"), b"{not json")
        .await;
    broker
        .publish_inbound("payment.captured", Some("not-ce"), br#"{"hello":"world"}"#)
        .await;
    // A well-formed payment padded past the 64 KiB an event may have: refused unread.
    let mut huge = cloud_event("huge", "payment.captured", &order);
    huge.resize(70 << 10, b' ');
    broker
        .publish_inbound("payment.captured", Some("huge"), &huge)
        .await;
    broker
        .publish_inbound(
            "payment.captured",
            Some("ghost"),
            &cloud_event(
                "ghost",
                "payment.captured",
                &json!({"id": Uuid::now_v7(), "total": 100, "currency": "EUR"}),
            ),
        )
        .await;
    // A shipment for an order that never gets paid: retried (it may still be paid), then
    // dead-lettered once the retries are used up.
    broker
        .publish_inbound(
            "shipment.dispatched",
            Some("ship-unpaid"),
            &cloud_event("ship-unpaid", "shipment.dispatched", &unpaid),
        )
        .await;
    // The queue keeps flowing past all of that.
    broker
        .publish_inbound(
            "shipment.dispatched",
            Some("ship-msg-1"),
            &cloud_event("ship-msg-1", "shipment.dispatched", &order),
        )
        .await;

    let version = status_becomes(&s, &order_id, "shipped").await;
    assert_eq!(
        version, 3,
        "placed(1) -> paid(2) -> shipped(3): one transition per message"
    );

    // Dead letters with their reasons (read like `weir dlq list`).
    let url = AmqpUrl::new(BROKER);
    let dead = dead_letters(&url, &n, 5).await;
    let reasons = reasons(&dead);
    assert_eq!(
        reasons,
        BTreeMap::from([
            ("bad-json".to_owned(), "malformed_json".to_owned()),
            ("ghost".to_owned(), "unknown_order".to_owned()),
            ("huge".to_owned(), "too_large".to_owned()),
            ("not-ce".to_owned(), "not_cloudevent".to_owned()),
            ("ship-unpaid".to_owned(), "retries_exhausted".to_owned()),
        ]),
        "{dead:?}"
    );
    let exhausted = dead
        .iter()
        .find(|d| d.reason.as_deref() == Some("retries_exhausted"))
        .unwrap();
    assert_eq!(exhausted.retries, n.max_retries);
    assert_eq!(
        exhausted.original_routing_key.as_deref(),
        Some("shipment.dispatched")
    );
    // Listing leaves them in place.
    assert_eq!(
        weir_host::events::dlq::list(&url, &n, 100)
            .await
            .unwrap()
            .len(),
        5
    );
    assert_eq!(order_status(&s, &unpaid_id).await, ("placed".to_owned(), 1));

    // The consumer's transitions wrote their outbox events, carrying the message's trace.
    let feed = s
        .state()
        .store
        .list_events("default", 0, 100)
        .await
        .unwrap();
    let ours: Vec<_> = feed.iter().filter(|e| e.subject == order_id).collect();
    let types: Vec<&str> = ours.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["order.placed", "order.paid", "order.shipped"]);
    assert!(
        ours[1]
            .traceparent
            .as_deref()
            .unwrap()
            .contains("0af7651916cd43dd8448eb211c80319c")
    );

    // Replay: the paid-later case. Pay the order, then replay its shipment from the DLQ.
    broker
        .publish_inbound(
            "payment.captured",
            Some("pay-msg-2"),
            &cloud_event("pay-msg-2", "payment.captured", &unpaid),
        )
        .await;
    status_becomes(&s, &unpaid_id, "paid").await;
    let report = weir_host::events::dlq::replay(&url, &n, 10, Some("ship-unpaid"))
        .await
        .unwrap();
    assert_eq!(report.replayed, vec!["ship-unpaid".to_owned()]);
    assert_eq!(status_becomes(&s, &unpaid_id, "shipped").await, 3);
    assert_eq!(
        weir_host::events::dlq::list(&url, &n, 100)
            .await
            .unwrap()
            .len(),
        4
    );

    s.stop().await;
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_rejects_intake_until_the_outbox_drains() {
    let mut n = names();
    n.backpressure.max_unpublished = 3;
    n.backpressure.resume_unpublished = 1;
    n.backpressure.retry_after = Duration::from_secs(2);
    let broker = Broker::connect(&n).await;
    let mut tap = broker.tap_order_events().await;
    let proxy = Proxy::start().await;
    let s = TestServer::start(Backend::Postgres, with_broker(&proxy.url, &n)).await;
    readyz_until(&s, "the broker connected", |d| d == "connected").await;

    proxy.down().await;
    readyz_until(&s, "the broker degraded", |d| d.starts_with("degraded")).await;
    let mut accepted = HashSet::new();
    let mut rejected = None;
    for i in 0..10 {
        let (status, body, headers) = place(&s, &format!("bp{i}"), None).await;
        if status == 503 {
            rejected = Some((body, headers, i));
            break;
        }
        assert_eq!(status, 201, "{body}");
        accepted.insert(body["id"].as_str().unwrap().to_owned());
        // Measure now instead of waiting for the monitor's next tick.
        s.state().events.refresh_backpressure().await;
    }
    let (body, headers, key) = rejected.expect("backpressure never tripped");
    assert_eq!(accepted.len(), 3, "trips at max_unpublished");
    assert_eq!(body["code"], "BACKPRESSURE", "{body}");
    assert_eq!(body["retryable"], true);
    assert_eq!(headers["retry-after"], "2");
    assert_eq!(headers["content-type"], "application/problem+json");
    // Load, not failure: still ready; /infoz shows it.
    readyz_until(&s, "degraded but ready", |d| d.starts_with("degraded")).await;
    let info = s.ops_get("/infoz").await.1;
    assert_eq!(info["events"]["backpressure"]["active"], true, "{info}");
    assert_eq!(info["events"]["backpressure"]["unpublished"], 3, "{info}");

    // Restore the broker: the backlog drains, intake resumes, and the rejected request's
    // key was released, so the client's retry with the same key succeeds.
    proxy.up();
    receive_until(&mut tap, &mut Vec::new(), "the backlog", |seen| {
        placed_ids(seen).len() == 3
    })
    .await;
    outbox_drained(&s).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while s.state().events.admit_intake().is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "backpressure never released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body, _) = place(&s, &format!("bp{key}"), None).await;
    assert_eq!(status, 201, "intake resumed: {body}");

    s.stop().await;
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shipment_that_overtakes_its_payment_is_retried_until_it_applies() {
    let n = EventsConfig {
        max_retries: 8,
        ..names()
    };
    let broker = Broker::connect(&n).await;
    let s = TestServer::start(Backend::Postgres, with_broker(BROKER, &n)).await;
    readyz_until(&s, "the broker connected", |d| d == "connected").await;
    let (_, order, _) = place(&s, "overtake", None).await;
    let id = order["id"].as_str().unwrap().to_owned();
    // The queue is FIFO and the consumer sequential: the shipment is seen first (order still
    // `placed`), goes to the retry queue, and applies after the payment.
    broker
        .publish_inbound(
            "shipment.dispatched",
            Some("ship-first"),
            &cloud_event("ship-first", "shipment.dispatched", &order),
        )
        .await;
    broker
        .publish_inbound(
            "payment.captured",
            Some("pay-second"),
            &cloud_event("pay-second", "payment.captured", &order),
        )
        .await;
    assert_eq!(status_becomes(&s, &id, "shipped").await, 3);
    let url = AmqpUrl::new(BROKER);
    assert!(
        weir_host::events::dlq::list(&url, &n, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let paid_then_shipped: Vec<String> = s
        .state()
        .store
        .list_events("default", 0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.subject == id)
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        paid_then_shipped,
        ["order.placed", "order.paid", "order.shipped"]
    );

    s.stop().await;
    broker.cleanup().await;
}

/// Only a payment from an accepted source, of the order's exact total, applies; forged and
/// wrong ones go to the DLQ with their reasons. Dedupe is by (source, id): the same id from
/// another accepted source is another payment. Cancelling the paid order after its payment
/// was redelivered releases its stock once, however often the cancel is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_payments_are_dead_lettered_and_a_true_one_applies_once() {
    let n = EventsConfig {
        payment_sources: vec!["/payments".to_owned(), "/payments-eu".to_owned()],
        ..names()
    };
    let broker = Broker::connect(&n).await;
    let s = TestServer::start(Backend::Postgres, with_broker(BROKER, &n)).await;
    readyz_until(&s, "the broker connected", |d| d == "connected").await;
    let (_, order, _) = place(&s, "forged-1", None).await;
    let (_, other, _) = place(&s, "forged-2", None).await;
    let id = order["id"].as_str().unwrap().to_owned();
    let total = order["total"].as_i64().unwrap();
    assert_eq!(s.product("KB-001").await["reserved"], 2);

    let pay = |amount: Value, currency: &str| json!({"order_id": id, "amount": amount, "currency": currency});
    let forgeries: [(&str, &str, &str, Value); 5] = [
        (
            "evil",
            "/attacker",
            "payment.captured",
            pay(json!(total), "EUR"),
        ),
        (
            "short",
            "/payments",
            "payment.captured",
            pay(json!(total - 1), "EUR"),
        ),
        (
            "usd",
            "/payments",
            "payment.captured",
            pay(json!(total), "USD"),
        ),
        (
            "no-amount",
            "/payments",
            "payment.captured",
            json!({"order_id": id}),
        ),
        (
            "ship-by-payments",
            "/payments",
            "shipment.dispatched",
            json!({"order_id": id}),
        ),
    ];
    for (msg, source, kind, data) in &forgeries {
        broker
            .publish_inbound(kind, Some(msg), &event_from(source, msg, kind, data))
            .await;
    }
    // The true payment, published twice (a redelivery looks the same).
    for _ in 0..2 {
        broker
            .publish_inbound(
                "payment.captured",
                Some("pay-ok"),
                &cloud_event("pay-ok", "payment.captured", &order),
            )
            .await;
    }
    // The same id from the other accepted source pays the other order.
    let other_pay = json!({"order_id": other["id"], "amount": other["total"], "currency": "EUR"});
    broker
        .publish_inbound(
            "payment.captured",
            Some("pay-ok"),
            &event_from("/payments-eu", "pay-ok", "payment.captured", &other_pay),
        )
        .await;
    assert_eq!(status_becomes(&s, &id, "paid").await, 2, "applied once");
    status_becomes(&s, other["id"].as_str().unwrap(), "paid").await;

    let url = AmqpUrl::new(BROKER);
    let dead = dead_letters(&url, &n, forgeries.len()).await;
    let reasons = reasons(&dead);
    assert_eq!(
        reasons,
        BTreeMap::from([
            ("evil".to_owned(), "untrusted_source".to_owned()),
            ("no-amount".to_owned(), "invalid_payment".to_owned()),
            ("ship-by-payments".to_owned(), "untrusted_source".to_owned()),
            ("short".to_owned(), "payment_mismatch".to_owned()),
            ("usd".to_owned(), "payment_mismatch".to_owned()),
        ]),
        "{dead:?}"
    );
    let metrics = s.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("weir_events_dead_lettered_total{")
                && l.contains("reason=\"payment_mismatch\"")),
        "{metrics}"
    );
    let paid_events = s
        .state()
        .store
        .list_events("default", 0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.subject == id && e.event_type == "order.paid")
        .count();
    assert_eq!(paid_events, 1);

    // Cancel the paid order, three times: its unit comes back once.
    for _ in 0..3 {
        assert_eq!(s.cancel(&id).await.0, 200);
    }
    assert_eq!(
        s.product("KB-001").await["reserved"],
        1,
        "only the other order holds stock"
    );
    // A payment redelivered after the cancel changes nothing either.
    broker
        .publish_inbound(
            "payment.captured",
            Some("pay-ok"),
            &cloud_event("pay-ok", "payment.captured", &order),
        )
        .await;
    broker
        .publish_inbound(
            "payment.captured",
            Some("pay-late"),
            &cloud_event("pay-late", "payment.captured", &order),
        )
        .await;
    // pay-late is dead-lettered too.
    dead_letters(&url, &n, forgeries.len() + 1).await;
    assert_eq!(order_status(&s, &id).await, ("cancelled".to_owned(), 3));
    assert_eq!(s.product("KB-001").await["reserved"], 1);

    s.stop().await;
    broker.cleanup().await;
}

/// A payment that arrives while every plugin instance is busy is requeued (never counted
/// against `max_retries`, never dead-lettered) and applied once after the pool frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_that_finds_the_plugin_pool_busy_is_requeued_and_applied_once() {
    let n = names();
    let broker = Broker::connect(&n).await;
    let s = TestServer::start(Backend::Postgres, |c, p| {
        with_broker(BROKER, &n)(c, p);
        c.runtime.max_instances = 1;
        c.policy.max_concurrency = 1;
        c.runtime.instance_wait = Duration::from_millis(100);
        // The holder below is aborted by the test; its budget is only a hang guard.
        c.runtime.budget.timeout = PATIENCE;
    })
    .await;
    readyz_until(&s, "the broker connected", |d| d == "connected").await;
    let (status, order, _) = place(&s, "pool-pay-1", None).await;
    assert_eq!(status, 201, "{order}");
    let order_id = order["id"].as_str().unwrap().to_owned();

    // Hold the only instance with a real plugin call (the hostile sleep plugin, loaded into
    // the server's runtime) before the payment is published.
    let rt = s.state().runtime.clone();
    let sleeper = rt
        .load_file(
            std::path::Path::new(weir_plugin_artifacts::HOSTILE_SLEEP),
            |_| BTreeMap::new(),
        )
        .await
        .expect("load the sleep plugin");
    let holder = {
        let (rt, sleeper) = (rt.clone(), sleeper.clone());
        tokio::spawn(async move {
            let request = weir_core::domain::OrderRequest {
                customer_id: "cus_sleep".into(),
                currency: "EUR".into(),
                lines: vec![weir_core::domain::LineRequest {
                    sku: "KB-001".into(),
                    quantity: 1,
                }],
                metadata: BTreeMap::new(),
            };
            let _ = rt.place_order(&sleeper, &request, None).await;
        })
    };
    let until = tokio::time::Instant::now() + PATIENCE;
    while rt.instances_in_use() != 1 {
        assert!(
            tokio::time::Instant::now() < until,
            "the sleeping call never held the instance"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    broker
        .publish_inbound(
            "payment.captured",
            Some("pool-pay-msg"),
            &cloud_event("pool-pay-msg", "payment.captured", &order),
        )
        .await;
    // Refused for want of an instance more often than max_retries allows retries: a retry
    // counted against the budget would have dead-lettered it by now.
    let requeued = |text: &str| {
        crate::support::metric(
            text,
            "weir_events_consumed_total",
            &[("outcome", "requeued"), ("event_type", "payment.captured")],
        )
    };
    let until = tokio::time::Instant::now() + PATIENCE;
    loop {
        let text = s.metrics().await;
        if requeued(&text) > f64::from(n.max_retries) + 1.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the payment was not requeued more than {} times while the pool was busy; \
             dead letters: {:?}",
            n.max_retries + 1,
            weir_host::events::dlq::list(&AmqpUrl::new(BROKER), &n, 10).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(order_status(&s, &order_id).await, ("placed".to_owned(), 1));
    let url = AmqpUrl::new(BROKER);
    assert!(
        weir_host::events::dlq::list(&url, &n, 10)
            .await
            .unwrap()
            .is_empty(),
        "a busy pool dead-lettered the payment"
    );

    // The pool frees: the payment applies, once.
    holder.abort();
    assert_eq!(status_becomes(&s, &order_id, "paid").await, 2);
    let feed = s
        .state()
        .store
        .list_events("default", 0, 100)
        .await
        .unwrap();
    let types: Vec<&str> = feed
        .iter()
        .filter(|e| e.subject == order_id)
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(types, ["order.placed", "order.paid"]);
    assert!(
        weir_host::events::dlq::list(&url, &n, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let text = s.metrics().await;
    assert!(
        crate::support::metric(
            &text,
            "weir_events_consumed_total",
            &[("outcome", "applied"), ("event_type", "payment.captured")]
        ) >= 1.0
    );

    s.stop().await;
    broker.cleanup().await;
}
