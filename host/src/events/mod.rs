//! Events over RabbitMQ: the transactional outbox relay, the idempotent consumer, retries and
//! dead letters, and intake backpressure.
//!
//! Enabled by `amqp_url` (`AMQP_URL`); without it the embedded default keeps events in the
//! outbox, readable over `GET /v1/events`, and nothing in this module runs.
//!
//! # Delivery guarantees
//!
//! Delivery is **at-least-once**, effects are **exactly-once**: the relay marks a row published
//! only after the broker confirmed it, so a crash between the confirm and the mark republishes
//! the row; consumers dedupe by the AMQP `message_id` (= CloudEvents `id`). Our own consumer
//! commits the order transition and its inbox record in one transaction, so a redelivery is
//! acked without a second effect.
//!
//! # Layout
//!
//! - `mod.rs` (this file): [`EventsConfig`], [`AmqpUrl`], the shared [`EventsHandle`] (broker
//!   link status for readiness, backpressure state for intake, `/infoz` facts), [`spawn`].
//! - [`topology`]: exchanges, queues and bindings, declared idempotently at start-up.
//! - [`message`]: CloudEvents encoding (structured mode) and AMQP header helpers.
//! - [`relay`]: claims outbox rows, publishes with confirms and `mandatory`, marks them.
//! - [`consumer`]: applies `payment.captured` / `shipment.dispatched` through the plugin.
//! - [`backpressure`]: the lag monitor and the hysteresis that gates `POST /v1/orders`.
//! - [`dlq`]: `weir dlq list` / `weir dlq replay`.
//! - `metrics.rs`: the instruments (via `opentelemetry::global::meter`).

pub mod backpressure;
pub mod consumer;
pub mod dlq;
pub mod message;
mod metrics;
#[cfg(test)]
mod proptests;
pub mod relay;
pub mod topology;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use weir_core::app::OrderService;
use weir_core::ports::{IntakeGate, OutboxStore};

use crate::lifecycle::{Shutdown, Supervisor};
use crate::support::{InvalidKey, SecretUrl, duration_ms, ensure};
pub use backpressure::{Backpressure, BackpressureConfig, BackpressureSnapshot};
pub(crate) use metrics::EventMetrics;

/// An AMQP URL; its password is redacted wherever it is shown (`Debug`, `Serialize`, logs).
pub type AmqpUrl = SecretUrl;

/// The `[events]` section: names, relay and consumer tuning, retries and backpressure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Durable topic exchange the relay publishes order events to (routing key = event type).
    pub exchange: String,
    /// Durable topic exchange other services publish `payment.captured` and
    /// `shipment.dispatched` to; bound to `queue`.
    pub inbound_exchange: String,
    /// Durable queue the consumer reads. `<queue>.retry`, `<queue>.dlx` and `<queue>.dlq` are
    /// derived from it.
    pub queue: String,
    /// Name of this consumer in the inbox (dedupe is per consumer).
    pub consumer_name: String,
    /// CloudEvents `source`s whose `payment.captured` events are believed; any other source's
    /// are dead-lettered as `untrusted_source`.
    pub payment_sources: Vec<String>,
    /// CloudEvents `source`s whose `shipment.dispatched` events are believed.
    pub shipment_sources: Vec<String>,
    /// Unacked deliveries the broker may push to one consumer (bounded prefetch).
    pub prefetch: u16,
    /// Rows claimed per relay round.
    pub relay_batch: u32,
    /// How long a relay holds claimed rows; another relay may take them after that.
    #[serde(with = "duration_ms", rename = "relay_lease_ms")]
    pub relay_lease: Duration,
    /// How long an event the broker returned as unroutable (or nacked) waits before the
    /// relay publishes it again; later events of its order wait with it.
    #[serde(with = "duration_ms", rename = "relay_retry_ms")]
    pub relay_retry: Duration,
    /// Idle wait between relay rounds when the outbox is empty.
    #[serde(with = "duration_ms", rename = "relay_poll_ms")]
    pub relay_poll: Duration,
    /// How long the relay waits for a publisher confirm before treating the link as broken.
    #[serde(with = "duration_ms", rename = "confirm_timeout_ms")]
    pub confirm_timeout: Duration,
    /// First reconnect delay; doubles up to `reconnect_max_ms`, with jitter.
    #[serde(with = "duration_ms", rename = "reconnect_min_ms")]
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    #[serde(with = "duration_ms", rename = "reconnect_max_ms")]
    pub reconnect_max: Duration,
    /// Transient consumer failures are retried this many times, then dead-lettered.
    pub max_retries: u32,
    /// Delay of the first retry; doubles per attempt up to `retry_max_delay_ms`.
    #[serde(with = "duration_ms", rename = "retry_delay_ms")]
    pub retry_delay: Duration,
    /// Longest retry delay.
    #[serde(with = "duration_ms", rename = "retry_max_delay_ms")]
    pub retry_max_delay: Duration,
    /// Intake backpressure thresholds.
    pub backpressure: BackpressureConfig,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            exchange: "weir.orders".to_owned(),
            inbound_exchange: "weir.payments".to_owned(),
            queue: "weir.payments".to_owned(),
            consumer_name: "weir.orders".to_owned(),
            payment_sources: vec!["/payments".to_owned()],
            shipment_sources: vec!["/shipping".to_owned()],
            prefetch: 16,
            relay_batch: 100,
            relay_lease: Duration::from_secs(30),
            relay_retry: Duration::from_secs(5),
            relay_poll: Duration::from_millis(200),
            confirm_timeout: Duration::from_secs(10),
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(10),
            max_retries: 5,
            retry_delay: Duration::from_millis(500),
            retry_max_delay: Duration::from_secs(60),
            backpressure: BackpressureConfig::default(),
        }
    }
}

impl EventsConfig {
    /// Retry queue: holds a message for its delay, then dead-letters it back to `queue`.
    pub fn retry_queue(&self) -> String {
        format!("{}.retry", self.queue)
    }

    /// Dead-letter exchange of `queue`.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.queue)
    }

    /// Dead-letter queue of `queue`.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dlq", self.queue)
    }

    /// The delay before retry number `attempt` (1-based): exponential, capped.
    pub fn retry_delay_for(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.retry_delay
            .saturating_mul(factor)
            .min(self.retry_max_delay)
    }

    /// Values that parse but cannot work.
    pub fn validate(&self) -> Result<(), InvalidKey> {
        let name_ok = |n: &str| !n.is_empty() && n.len() <= 200 && n.is_ascii();
        let name = "must be 1-200 ASCII characters";
        ensure(name_ok(&self.exchange), "events.exchange", name)?;
        ensure(
            name_ok(&self.inbound_exchange),
            "events.inbound_exchange",
            name,
        )?;
        ensure(name_ok(&self.queue), "events.queue", name)?;
        ensure(
            !self.consumer_name.is_empty(),
            "events.consumer_name",
            "must not be empty",
        )?;
        ensure(self.prefetch > 0, "events.prefetch", "must be positive")?;
        let max = weir_core::ports::store::MAX_EVENTS_LIMIT;
        if self.relay_batch == 0 || self.relay_batch > max {
            return Err(InvalidKey::new(
                "events.relay_batch",
                format!("must be 1-{max}"),
            ));
        }
        ensure(
            self.relay_lease > self.confirm_timeout,
            "events.relay_lease_ms",
            "must be longer than events.confirm_timeout_ms",
        )?;
        ensure(
            !(self.relay_poll.is_zero()
                || self.confirm_timeout.is_zero()
                || self.relay_retry.is_zero()),
            "events.relay_poll_ms",
            "relay_poll_ms, relay_retry_ms and confirm_timeout_ms must be positive",
        )?;
        ensure(
            !self.reconnect_min.is_zero() && self.reconnect_max >= self.reconnect_min,
            "events.reconnect_max_ms",
            "reconnect_min_ms must be positive and not above reconnect_max_ms",
        )?;
        ensure(
            !self.retry_delay.is_zero() && self.retry_max_delay >= self.retry_delay,
            "events.retry_max_delay_ms",
            "retry_delay_ms must be positive and not above retry_max_delay_ms",
        )?;
        self.backpressure.validate()
    }
}

/// State of one broker link (the relay's or the consumer's connection).
#[derive(Debug, Clone, Serialize)]
pub struct LinkState {
    /// Connected and its topology declared.
    pub connected: bool,
    /// When `connected` last changed.
    pub since: DateTime<Utc>,
    /// Why the last attempt failed (no secrets: the URL is never part of it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Default for LinkState {
    fn default() -> Self {
        Self {
            connected: false,
            since: Utc::now(),
            last_error: None,
        }
    }
}

/// Shared state of a running events subsystem.
#[derive(Debug)]
pub struct EventsShared {
    /// The `[events]` section.
    pub config: EventsConfig,
    /// The broker URL (redacted wherever shown).
    pub url: AmqpUrl,
    /// Intake backpressure.
    pub backpressure: Backpressure,
    relay: Mutex<LinkState>,
    consumer: Mutex<LinkState>,
    pub(crate) metrics: EventMetrics,
}

/// Cheap to clone. `EventsHandle::default()` is the embedded mode (no broker, no
/// backpressure); [`EventsHandle::amqp`] the production path.
#[derive(Debug, Clone, Default)]
pub struct EventsHandle {
    inner: Option<Arc<EventsShared>>,
}

/// Which link a status update is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// The outbox relay's connection.
    Relay,
    /// The consumer's connection.
    Consumer,
}

/// Readiness facts about the broker.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerHealth {
    /// Both links connected.
    pub connected: bool,
    /// The relay's link.
    pub relay: LinkState,
    /// The consumer's link.
    pub consumer: LinkState,
}

impl EventsHandle {
    /// The production path: events go over the broker at `url`.
    pub fn amqp(url: AmqpUrl, config: EventsConfig, store: Arc<dyn OutboxStore>) -> Self {
        let metrics = EventMetrics::new();
        let backpressure = Backpressure::new(config.backpressure.clone(), store);
        metrics.observe_backpressure(backpressure.shared_snapshot());
        Self {
            inner: Some(Arc::new(EventsShared {
                config,
                url,
                backpressure,
                relay: Mutex::new(LinkState::default()),
                consumer: Mutex::new(LinkState::default()),
                metrics,
            })),
        }
    }

    /// The shared state, `None` in embedded mode.
    pub fn shared(&self) -> Option<&Arc<EventsShared>> {
        self.inner.as_ref()
    }

    /// `Err(retry_after)` while intake is held back by backpressure.
    pub fn admit_intake(&self) -> Result<(), Duration> {
        match &self.inner {
            Some(s) => s.backpressure.admit(),
            None => Ok(()),
        }
    }

    /// Re-evaluate backpressure now (the monitor does this every `check_interval_ms`).
    pub async fn refresh_backpressure(&self) {
        if let Some(s) = &self.inner {
            s.backpressure.refresh().await;
        }
    }

    /// Broker link status for `/readyz`; `None` in embedded mode.
    pub fn broker_health(&self) -> Option<BrokerHealth> {
        let s = self.inner.as_ref()?;
        let relay = lock(&s.relay).clone();
        let consumer = lock(&s.consumer).clone();
        Some(BrokerHealth {
            connected: relay.connected && consumer.connected,
            relay,
            consumer,
        })
    }

    /// `/infoz` facts.
    pub fn info(&self) -> serde_json::Value {
        match &self.inner {
            None => serde_json::json!({ "mode": "embedded", "feed": "/v1/events" }),
            Some(s) => serde_json::json!({
                "mode": "amqp",
                "broker": s.url.redacted(),
                "exchange": s.config.exchange,
                "inbound_exchange": s.config.inbound_exchange,
                "queue": s.config.queue,
                "dead_letter_queue": s.config.dead_letter_queue(),
                "links": self.broker_health(),
                "backpressure": s.backpressure.snapshot(),
            }),
        }
    }
}

impl IntakeGate for EventsHandle {
    fn admit(&self) -> Result<(), Duration> {
        self.admit_intake()
    }
}

impl EventsShared {
    pub(crate) fn set_link(&self, link: Link, connected: bool, error: Option<String>) {
        let cell = match link {
            Link::Relay => &self.relay,
            Link::Consumer => &self.consumer,
        };
        let mut state = lock(cell);
        if state.connected != connected {
            state.since = Utc::now();
            if connected {
                tracing::info!(link = ?link, "broker link up");
            } else {
                tracing::warn!(link = ?link, error = error.as_deref().unwrap_or(""), "broker link down; events wait in the outbox");
            }
        }
        state.connected = connected;
        if error.is_some() || connected {
            state.last_error = error;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the consumer needs to apply inbound events.
#[derive(Clone)]
pub struct ConsumerDeps {
    /// The order use-cases (the consumer applies transitions through them).
    pub orders: OrderService,
    /// Deadline of one message's processing (plugin calls and database work).
    pub deadline: Duration,
    /// Where the consumer reports what it requeued while stopping.
    pub shutdown: Shutdown,
}

/// Start the relay, the consumer and the backpressure monitor as supervised workers
/// ([`crate::lifecycle::worker`]: `events.relay`, `events.consumer`, `events.backpressure`);
/// nothing in embedded mode. Each stops when shutdown starts (the relay after its current
/// batch, the consumer after cancelling its subscription and settling what it holds), closes
/// its broker connection, and so takes part in the drain.
pub fn spawn(
    events: &EventsHandle,
    outbox: Arc<dyn OutboxStore>,
    consumer: ConsumerDeps,
    supervisor: &Supervisor,
) {
    let Some(shared) = events.shared().cloned() else {
        return;
    };
    let s = shared.clone();
    supervisor.spawn("events.relay", move |ctx| {
        relay::run(s.clone(), outbox.clone(), relay::relay_id(), ctx)
    });
    let s = shared.clone();
    supervisor.spawn("events.consumer", move |ctx| {
        consumer::run(s.clone(), consumer.clone(), ctx)
    });
    supervisor.spawn("events.backpressure", move |ctx| {
        backpressure::monitor(shared.clone(), ctx)
    });
}

/// Connect to the broker with a bounded connection timeout. The connection has no automatic
/// recovery: callers reconnect with their own backoff and redeclare their topology.
pub(crate) async fn connect(url: &AmqpUrl, name: &str) -> Result<lapin::Connection, String> {
    let props = lapin::ConnectionProperties::default()
        .with_connection_name(format!("weir {name} ({})", std::process::id()).into());
    match tokio::time::timeout(
        Duration::from_secs(10),
        lapin::Connection::connect(url.expose(), props),
    )
    .await
    {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(describe(&e)),
        Err(_) => Err("connection attempt timed out after 10s".to_owned()),
    }
}

/// Close a connection politely; lapin's I/O thread must not outlive it.
pub(crate) async fn close(conn: &lapin::Connection) {
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        conn.close(200, "weir shutting down".into()),
    )
    .await;
}

/// A broker error as text for logs and readiness. lapin errors never contain the URL.
pub(crate) fn describe(e: &lapin::Error) -> String {
    e.to_string()
}

/// Exponential reconnect delays with full jitter, from `min` doubling up to `max`, forever.
pub(crate) fn reconnect_backoff(config: &EventsConfig) -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder as _;
    backon::ExponentialBuilder::default()
        .with_min_delay(config.reconnect_min)
        .with_max_delay(config.reconnect_max)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Sleep for `delay` unless `shutdown` fires first; `false` when shutting down.
pub(crate) async fn pause(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_and_cap() {
        let c = EventsConfig {
            retry_delay: Duration::from_millis(100),
            retry_max_delay: Duration::from_millis(350),
            ..EventsConfig::default()
        };
        let delays: Vec<_> = (1..=4).map(|a| c.retry_delay_for(a).as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 350, 350]);
        assert_eq!(c.retry_queue(), "weir.payments.retry");
        assert_eq!(c.dead_letter_queue(), "weir.payments.dlq");
    }

    #[test]
    fn defaults_are_valid_and_bad_values_name_the_key() {
        assert!(EventsConfig::default().validate().is_ok());
        let bad = EventsConfig {
            prefetch: 0,
            ..EventsConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "events.prefetch");
        let bad = EventsConfig {
            relay_lease: Duration::from_secs(1),
            ..EventsConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "events.relay_lease_ms");
    }
}
