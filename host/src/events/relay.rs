//! The outbox relay: claims unpublished outbox rows (leases; `FOR UPDATE SKIP LOCKED` on
//! PostgreSQL), publishes each as a persistent structured-mode CloudEvent to the order events
//! exchange with `mandatory` set, waits for the publisher confirms, and only then marks the
//! rows published.
//!
//! - A returned (unroutable) or nacked message is not marked: its lease is kept until
//!   `events.relay_retry_ms` from now (a deferred retry, not a hot loop) and it is published
//!   again after that. So are the later rows of the same order in that batch (even if
//!   confirmed), and the claim query holds back the order's later rows meanwhile, so a
//!   consumer never sees an order's events out of order for good: at worst it sees a
//!   duplicate, which it drops by `message_id`.
//! - A broken link (publish error, confirm timeout, connection lost) releases the batch and
//!   reconnects with exponential backoff and full jitter. Meanwhile orders are still accepted:
//!   their events wait in the outbox, and the lag gauges and backpressure make it visible.
//! - Publishing is pipelined within a batch (all messages sent, then the confirms awaited in
//!   order); batches are sequential, so one relay preserves `seq` order, and the claim query
//!   keeps two relays off the same order at once.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{SubsecRound, Utc};
use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use opentelemetry::KeyValue;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use uuid::Uuid;

use super::{EventsShared, Link, message, topology};
use weir_core::domain::EventRecord;
use weir_core::ports::OutboxStore;

use crate::lifecycle::{WorkerContext, WorkerError};

/// A unique claimant id for this relay: process id plus a random suffix, so a restarted
/// process never inherits the leases of its predecessor.
pub fn relay_id() -> String {
    format!("relay-{}-{}", std::process::id(), Uuid::new_v4().simple())
}

/// `reason` of `weir.events.publish_failed` (and `outcome` of an `amqp.publish` span): the
/// broker refused the message.
pub const NACKED: &str = "nacked";
/// No publisher confirm arrived within `events.confirm_timeout_ms` (a silent partition or a
/// stuck broker); the link is reconnected.
pub const CONFIRM_TIMEOUT: &str = "confirm_timeout";
/// The connection or channel failed before the confirm (a cut link, a broker restart), or the
/// event was never sent because an earlier one in its batch failed so.
pub const LINK_BROKEN: &str = "link_broken";

/// How one batch went.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Confirmed and marked published.
    pub published: usize,
    /// Returned as unroutable, nacked, or held back behind one of those.
    pub held_back: usize,
}

/// The `events.relay` worker: runs until shutdown: connect, declare, relay; on a broker
/// failure reconnect with its own backoff (a broker outage is not a worker crash). Each
/// claim-publish-mark batch is one [`WorkerContext::unit`] and is never cut in half: on
/// cancellation the current batch is confirmed and marked (or released) before returning.
pub(crate) async fn run(
    shared: Arc<EventsShared>,
    store: Arc<dyn OutboxStore>,
    relay_id: String,
    ctx: WorkerContext,
) -> Result<(), WorkerError> {
    let shutdown = ctx.token().clone();
    let mut backoff = super::reconnect_backoff(&shared.config);
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let attempt = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            attempt = super::connect(&shared.url, "relay") => attempt,
        };
        let error = match attempt {
            Ok(conn) => {
                let result = session(&shared, &store, &relay_id, &conn, &ctx).await;
                if let Err(f) = &result {
                    // Readiness shows the broken link at once: closing a partitioned
                    // connection waits for its own timeout.
                    shared.set_link(Link::Relay, false, Some(f.error.clone()));
                }
                super::close(&conn).await;
                match result {
                    Ok(()) => {
                        shared.set_link(Link::Relay, false, Some("stopped".to_owned()));
                        return Ok(());
                    }
                    Err(Failure { connected, error }) => {
                        if connected {
                            backoff = super::reconnect_backoff(&shared.config);
                        }
                        error
                    }
                }
            }
            Err(error) => error,
        };
        shared.set_link(Link::Relay, false, Some(error.clone()));
        let delay = backoff.next().unwrap_or(shared.config.reconnect_max);
        tracing::warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "outbox relay: broker unavailable");
        if !super::pause(delay, &shutdown).await {
            return Ok(());
        }
    }
}

struct Failure {
    /// The session got as far as a declared topology (reset the backoff).
    connected: bool,
    error: String,
}

async fn session(
    shared: &EventsShared,
    store: &Arc<dyn OutboxStore>,
    relay_id: &str,
    conn: &lapin::Connection,
    ctx: &WorkerContext,
) -> Result<(), Failure> {
    let shutdown = ctx.token();
    let c = &shared.config;
    let early = |e: lapin::Error| Failure {
        connected: false,
        error: super::describe(&e),
    };
    let channel = conn.create_channel().await.map_err(early)?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(early)?;
    topology::declare_publisher(&channel, c)
        .await
        .map_err(early)?;
    shared.set_link(Link::Relay, true, None);
    tracing::info!(relay = relay_id, exchange = %c.exchange, "outbox relay connected");

    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        if !conn.status().connected() {
            return Err(Failure {
                connected: true,
                error: "connection lost".to_owned(),
            });
        }
        let now = Utc::now().trunc_subsecs(6);
        let batch = match store
            .claim_outbox(relay_id, now, c.relay_lease, c.relay_batch)
            .await
        {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(error = %e, "outbox relay: cannot claim events; retrying");
                if !super::pause(c.relay_poll, shutdown).await {
                    return Ok(());
                }
                continue;
            }
        };
        if batch.is_empty() {
            if !super::pause(c.relay_poll, shutdown).await {
                return Ok(());
            }
            continue;
        }
        let full = batch.len() == c.relay_batch as usize;
        let span = tracing::info_span!(
            "amqp.relay_batch",
            messaging.system = "rabbitmq",
            messaging.destination.name = %c.exchange,
            messaging.batch.message_count = batch.len(),
        );
        // One unit of work: claimed above, published, confirmed and marked (or released) here;
        // not cancelled, so a shutdown never leaves a batch half-settled.
        let report = ctx
            .unit(publish_batch(shared, store, relay_id, &channel, batch).instrument(span))
            .await
            .map_err(|error| Failure {
                connected: true,
                error,
            })?;
        if report.held_back > 0 || !full {
            // Held-back rows are retried after a pause, not in a hot loop.
            if !super::pause(c.relay_poll, shutdown).await {
                return Ok(());
            }
        }
    }
}

/// Publish one claimed batch and settle every row: marked published, or released.
/// `Err` means the link broke; the whole unsettled remainder was released.
async fn publish_batch(
    shared: &EventsShared,
    store: &Arc<dyn OutboxStore>,
    relay_id: &str,
    channel: &lapin::Channel,
    batch: Vec<EventRecord>,
) -> Result<BatchReport, String> {
    let c = &shared.config;
    let m = &shared.metrics;
    let mut confirms = Vec::with_capacity(batch.len());
    let mut spans = Vec::with_capacity(batch.len());
    let mut link_error = None;
    for event in &batch {
        // One `amqp.publish` span per event, continuing the trace of the request that wrote
        // the row; the message carries this span's context (the stored one without the
        // OpenTelemetry layer).
        let span = tracing::info_span!(
            "amqp.publish",
            otel.kind = "producer",
            messaging.system = "rabbitmq",
            messaging.destination.name = %c.exchange,
            messaging.message.id = %event.id,
            messaging.rabbitmq.destination.routing_key = %event.event_type,
            outcome = tracing::field::Empty,
        );
        let _ = span.set_parent(crate::telemetry::context_from(
            event.traceparent.as_deref(),
            event.tracestate.as_deref(),
        ));
        let (traceparent, tracestate) = span.in_scope(crate::telemetry::inject_current);
        let (body, props) = if traceparent.is_some() {
            message::encode_traced(event, traceparent.as_deref(), tracestate.as_deref())
        } else {
            message::encode(event)
        };
        spans.push(span);
        let sent = channel
            .basic_publish(
                c.exchange.as_str().into(),
                message::short(&event.event_type),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                &body,
                props,
            )
            .await;
        match sent {
            Ok(confirm) => {
                m.published.add(1, &[]);
                confirms.push(confirm);
            }
            Err(e) => {
                link_error = Some(super::describe(&e));
                break;
            }
        }
    }

    let deadline = tokio::time::Instant::now() + c.confirm_timeout;
    // Why the unsettled rest of the batch was held back (the `reason` of `publish_failed`).
    let mut link_reason = LINK_BROKEN;
    let mut confirmed: Vec<&EventRecord> = Vec::new();
    let mut failed_subjects: HashSet<&str> = HashSet::new();
    // Returned or nacked (and the later events of their orders): retried after relay_retry.
    let mut deferred: Vec<Uuid> = Vec::new();
    // Not settled because the link broke: released at once for any relay.
    let mut held_back: Vec<Uuid> = Vec::new();
    for ((event, confirm), span) in batch.iter().zip(confirms).zip(&spans) {
        if link_error.is_some() {
            span.record("outcome", LINK_BROKEN);
            held_back.push(event.id);
            continue;
        }
        let result = tokio::time::timeout_at(deadline, confirm).await;
        span.record(
            "outcome",
            match &result {
                Ok(Ok(Confirmation::Ack(None))) => "confirmed",
                Ok(Ok(Confirmation::Ack(Some(_)))) => "returned",
                Ok(Ok(_)) => NACKED,
                Ok(Err(_)) => LINK_BROKEN,
                Err(_) => CONFIRM_TIMEOUT,
            },
        );
        match result {
            Ok(Ok(Confirmation::Ack(None))) => confirmed.push(event),
            Ok(Ok(Confirmation::Ack(Some(returned)))) => {
                m.returned.add(1, &[]);
                tracing::warn!(
                    event_id = %event.id,
                    event_type = %event.event_type,
                    reply_code = returned.reply_code,
                    reply_text = %returned.reply_text,
                    "outbox relay: event returned as unroutable (no queue bound for its type); left in the outbox"
                );
                failed_subjects.insert(&event.subject);
                deferred.push(event.id);
            }
            Ok(Ok(Confirmation::Nack(_) | Confirmation::NotRequested)) => {
                m.failed.add(1, &[KeyValue::new("reason", NACKED)]);
                tracing::warn!(event_id = %event.id, "outbox relay: broker nacked the event; left in the outbox");
                failed_subjects.insert(&event.subject);
                deferred.push(event.id);
            }
            Ok(Err(e)) => {
                link_error = Some(super::describe(&e));
                held_back.push(event.id);
            }
            Err(_) => {
                // A silent partition: nothing refused, nothing answered. The link is treated
                // as broken (reconnect), the rest of the batch stays in the outbox.
                link_error = Some(format!(
                    "no publisher confirm within {} ms",
                    c.confirm_timeout.as_millis()
                ));
                link_reason = CONFIRM_TIMEOUT;
                held_back.push(event.id);
            }
        }
    }
    // Events never sent (publish error mid-batch) are released too.
    let sent: HashSet<Uuid> = confirmed
        .iter()
        .map(|e| e.id)
        .chain(held_back.iter().copied())
        .chain(deferred.iter().copied())
        .collect();
    held_back.extend(batch.iter().map(|e| e.id).filter(|id| !sent.contains(id)));

    // Keep per-order order: an order whose earlier event failed gets its later ones again too.
    let (to_mark, behind): (Vec<&EventRecord>, Vec<&EventRecord>) = confirmed
        .into_iter()
        .partition(|e| !failed_subjects.contains(e.subject.as_str()));
    deferred.extend(behind.iter().map(|e| e.id));
    let to_mark: Vec<Uuid> = to_mark.iter().map(|e| e.id).collect();

    let now = Utc::now().trunc_subsecs(6);
    if let Err(e) = store.mark_published(&to_mark, now).await {
        // Confirmed but not marked: the lease expires and they are published again, which
        // consumers absorb by message id.
        tracing::warn!(error = %e, count = to_mark.len(), "outbox relay: cannot mark confirmed events published");
    } else {
        m.confirmed.add(to_mark.len() as u64, &[]);
    }
    if link_error.is_some() {
        m.failed.add(
            held_back.len() as u64,
            &[KeyValue::new("reason", link_reason)],
        );
    }
    let retry_at = crate::storage::add_duration(now, c.relay_retry);
    for (ids, retry_at) in [(&held_back, None), (&deferred, Some(retry_at))] {
        if let Err(e) = store.release_outbox(relay_id, ids, retry_at).await {
            tracing::warn!(error = %e, "outbox relay: cannot release leases; they expire on their own");
        }
    }
    match link_error {
        Some(error) => Err(error),
        None => Ok(BatchReport {
            published: to_mark.len(),
            held_back: held_back.len() + deferred.len(),
        }),
    }
}
