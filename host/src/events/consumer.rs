//! The idempotent consumer of `payment.captured` and `shipment.dispatched`.
//!
//! Each delivery (manual ack, bounded prefetch) is processed inside an `amqp.process` span
//! that continues the producer's trace, then settled exactly one way:
//!
//! | outcome | when | broker action |
//! |---|---|---|
//! | `applied` | the plugin's `transition` moved the order; the new status, its outbox event and the inbox record were committed in ONE transaction | ack |
//! | `no_change` | the order already is where the event would take it (inbox recorded) | ack |
//! | `duplicate` | the message id is already in the inbox (redelivery or duplicate publish) | ack |
//! | `requeued` | no free plugin instance (`PoolExhausted`: every `runtime.max_instances` stayed busy for the call's bounded wait) | after a pause of `retry_delay_ms` (cut short by shutdown), nack with requeue: redelivered with its retry count untouched, so a busy pool never dead-letters |
//! | `retried` | a transient failure (database, plugin time budget, instantiation, shutdown, an order still waiting for its payment) | republished to `<queue>.retry` with `x-weir-retries` + 1 and a per-message TTL (exponential), then ack; after `max_retries` it is dead-lettered as `retries_exhausted` |
//! | `dead_lettered` | malformed (not JSON, not a CloudEvent, unsupported type, bad order id, a payment without amount and currency), from a source not accepted for its type (`untrusted_source`), a payment that does not pay the order's total (`payment_mismatch`), unknown order, rejected by the plugin, or poison (trap, memory budget, plugin internal error, broken contract) | published to `<queue>.dlx` -> `<queue>.dlq` with `x-weir-dead-letter-reason` / `-detail` headers, then ack |
//!
//! A message is identified by its CloudEvents `source` and `id` together: the inbox dedupes on
//! the pair, so one id from two sources is two messages.
//!
//! Retry and dead-letter publishes wait for their publisher confirm before the original is
//! acked, so a crash in between redelivers the original (never loses it); the inbox absorbs
//! the resulting duplicate. Deliveries are processed one at a time per replica, in queue
//! order; prefetch bounds how many wait in memory. Replicas compete on the one queue.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use uuid::Uuid;

use weir_core::app::{ApplyTransition, InboxKey, TransitionError, Transitioned};
use weir_core::domain::{OrderError, OrderEvent, OrderStatus, TraceContext};
use weir_core::ports::DecideError;

use super::message::{self, Inbound, InboundKind};
use super::{ConsumerDeps, EventsShared, Link, topology};
use crate::lifecycle::{WorkerContext, WorkerError};

/// What to do with a delivery after processing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Done (or nothing to do): ack. The string is the metric outcome.
    Ack(&'static str),
    /// A transient failure: retry later (bounded).
    Retry(String),
    /// The host had no free plugin instance: a capacity condition that says nothing about
    /// the message. Nack with requeue after a pause; never counted against `max_retries`,
    /// never dead-lettered.
    Requeue(String),
    /// Can never succeed: dead-letter with a stable reason code and a detail.
    DeadLetter(&'static str, String),
}

/// The `events.consumer` worker: runs until shutdown: connect, declare, consume; on a broker
/// failure reconnect with its own backoff (a broker outage is not a worker crash). Each
/// delivery is one [`WorkerContext::unit`]. On cancellation it cancels its subscription,
/// finishes the delivery in hand, nacks with requeue the prefetched ones (counted in the
/// drain's `messages_requeued`) and closes its connection.
pub(crate) async fn run(
    shared: Arc<EventsShared>,
    app: ConsumerDeps,
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
            attempt = super::connect(&shared.url, "consumer") => attempt,
        };
        let error = match attempt {
            Ok(conn) => {
                let result = session(&shared, &app, &conn, &ctx).await;
                // Closing the connection requeues whatever was delivered but not acked.
                super::close(&conn).await;
                match result {
                    Ok(()) => {
                        shared.set_link(Link::Consumer, false, Some("stopped".to_owned()));
                        return Ok(());
                    }
                    Err((connected, error)) => {
                        if connected {
                            backoff = super::reconnect_backoff(&shared.config);
                        }
                        error
                    }
                }
            }
            Err(error) => error,
        };
        shared.set_link(Link::Consumer, false, Some(error.clone()));
        let delay = backoff.next().unwrap_or(shared.config.reconnect_max);
        tracing::warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "event consumer: broker unavailable");
        if !super::pause(delay, &shutdown).await {
            return Ok(());
        }
    }
}

async fn session(
    shared: &EventsShared,
    app: &ConsumerDeps,
    conn: &lapin::Connection,
    ctx: &WorkerContext,
) -> Result<(), (bool, String)> {
    let shutdown = ctx.token();
    let c = &shared.config;
    let early = |e: lapin::Error| (false, super::describe(&e));
    let channel = conn.create_channel().await.map_err(early)?;
    topology::declare_consumer(&channel, c)
        .await
        .map_err(early)?;
    channel
        .basic_qos(c.prefetch, BasicQosOptions::default())
        .await
        .map_err(early)?;
    // Retries and dead letters go out on their own channel, with confirms.
    let publisher = conn.create_channel().await.map_err(early)?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(early)?;
    let tag = format!("weir-{}-{}", std::process::id(), Uuid::new_v4().simple());
    let mut deliveries = channel
        .basic_consume(
            c.queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(early)?;
    shared.set_link(Link::Consumer, true, None);
    tracing::info!(queue = %c.queue, prefetch = c.prefetch, "event consumer connected");

    let broken = |e: lapin::Error| (true, super::describe(&e));
    let mut depth = tokio::time::interval(c.backpressure.check_interval);
    depth.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                let requeued = stop_consuming(&channel, &tag, &mut deliveries).await;
                app.shutdown.record_requeued(requeued);
                return Ok(());
            }
            _ = depth.tick() => {
                let q = channel
                    .queue_declare(
                        c.queue.as_str().into(),
                        QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() },
                        FieldTable::default(),
                    )
                    .await
                    .map_err(broken)?;
                shared.backpressure.set_consumer_backlog(u64::from(q.message_count()));
            }
            next = deliveries.next() => match next {
                None => return Err((true, "the broker cancelled the consumer".to_owned())),
                Some(Err(e)) => return Err(broken(e)),
                // One unit of work, run to completion even if shutdown starts meanwhile.
                Some(Ok(delivery)) => ctx
                    .unit(handle(shared, app, &publisher, delivery, shutdown))
                    .await
                    .map_err(|e| (true, e))?,
            },
        }
    }
}

/// The consumer's part of the drain: cancel the subscription so the broker pushes nothing
/// more, then nack with requeue every delivery already prefetched (lapin ends the stream after
/// the `basic.cancel-ok`, behind the buffered deliveries). Returns how many were requeued.
/// Bounded: whatever is left unsettled is requeued by the broker when the connection closes.
async fn stop_consuming(
    channel: &lapin::Channel,
    tag: &str,
    deliveries: &mut lapin::Consumer,
) -> u64 {
    const BOUND: Duration = Duration::from_secs(5);
    let mut requeued = 0u64;
    let cancelled = tokio::time::timeout(
        BOUND,
        channel.basic_cancel(tag.into(), BasicCancelOptions::default()),
    )
    .await;
    if !matches!(cancelled, Ok(Ok(()))) {
        tracing::warn!(
            "event consumer: cannot cancel the subscription; closing the connection requeues what it holds"
        );
        return requeued;
    }
    let until = tokio::time::Instant::now() + BOUND;
    while let Ok(Some(Ok(delivery))) = tokio::time::timeout_at(until, deliveries.next()).await {
        let nacked = delivery
            .acker
            .nack(BasicNackOptions {
                multiple: false,
                requeue: true,
            })
            .await;
        if nacked.is_ok() {
            requeued += 1;
        }
    }
    tracing::info!(
        messages_requeued = requeued,
        "event consumer: subscription cancelled; prefetched deliveries requeued"
    );
    requeued
}

/// Process one delivery and settle it. `Err` only when the link broke (the delivery is then
/// redelivered after reconnecting).
async fn handle(
    shared: &EventsShared,
    app: &ConsumerDeps,
    publisher: &lapin::Channel,
    delivery: lapin::message::Delivery,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<(), String> {
    let m = &shared.metrics;
    m.in_flight.add(1, &[]);
    let _in_flight = InFlight(&m.in_flight);
    let parsed = message::parse_inbound(&delivery.properties, &delivery.data);
    let message_id = match &parsed {
        Ok(inbound) => inbound.id.clone(),
        Err(_) => delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str().to_owned())
            .unwrap_or_default(),
    };
    let event_type = match &parsed {
        Ok(inbound) => inbound.kind.as_str(),
        Err(_) => "invalid",
    };
    let span = tracing::info_span!(
        "amqp.process",
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        messaging.destination.name = %shared.config.queue,
        messaging.message.id = %message_id,
        messaging.redelivered = delivery.redelivered,
        event_type,
        parent_trace_id = tracing::field::Empty,
        parent_span_id = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    if let Ok(inbound) = &parsed {
        continue_trace(&span, inbound);
    }
    async move {
        let decision = match parsed {
            Err(malformed) => Decision::DeadLetter(malformed.code(), malformed.to_string()),
            Ok(inbound) => process(shared, app, &inbound).await,
        };
        // Test builds only: the transition is committed, the delivery not acked yet.
        #[cfg(feature = "fault-injection")]
        if decision == Decision::Ack("applied") {
            crate::support::failpoint::hit("consumer.after_commit").await;
        }
        settle(shared, publisher, &delivery, decision, event_type, shutdown).await
    }
    .instrument(span)
    .await
}

struct InFlight<'a>(&'a opentelemetry::metrics::UpDownCounter<i64>);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.add(-1, &[]);
    }
}

/// Continue the producer's trace: its W3C context becomes the OpenTelemetry parent of the
/// processing span (set before the span is first entered); the parent's ids are also recorded
/// as fields so the log lines correlate without a trace backend.
fn continue_trace(span: &tracing::Span, inbound: &Inbound) {
    let _ = span.set_parent(crate::telemetry::context_from(
        inbound.traceparent.as_deref(),
        inbound.tracestate.as_deref(),
    ));
    if let Some((trace_id, span_id)) = inbound
        .traceparent
        .as_deref()
        .and_then(message::parse_traceparent)
    {
        span.record("parent_trace_id", trace_id);
        span.record("parent_span_id", span_id);
    }
}

/// Decide what a valid message does, applying it when it can: the transition use-case with
/// the message's inbox key, so the transition and the inbox record commit together.
pub async fn process(shared: &EventsShared, app: &ConsumerDeps, inbound: &Inbound) -> Decision {
    let (event, accepted) = match inbound.kind {
        InboundKind::PaymentCaptured => {
            (OrderEvent::PaymentCaptured, &shared.config.payment_sources)
        }
        InboundKind::ShipmentDispatched => (OrderEvent::Shipped, &shared.config.shipment_sources),
    };
    if !accepted.contains(&inbound.source) {
        return Decision::DeadLetter(
            "untrusted_source",
            format!(
                "{} from source {:?}, which is not accepted for this type",
                inbound.kind.as_str(),
                inbound.source
            ),
        );
    }
    // The processing span's context (same trace as the message); the message's own without
    // the OpenTelemetry layer.
    let trace = match crate::telemetry::inject_current() {
        (Some(traceparent), tracestate) => TraceContext {
            traceparent: Some(traceparent),
            tracestate,
        },
        (None, _) => TraceContext {
            traceparent: inbound.traceparent.clone(),
            tracestate: inbound.tracestate.clone(),
        },
    };
    let cmd = ApplyTransition {
        order_id: inbound.order_id,
        // The service's own consumer acts on any tenant's order; the inbox record takes the
        // order's tenant.
        tenant: None,
        event,
        deadline: std::time::Instant::now() + app.deadline,
        trace,
        inbox: Some(InboxKey {
            consumer: shared.config.consumer_name.clone(),
            source: inbound.source.clone(),
            message_id: inbound.id.clone(),
        }),
        paid: inbound.paid.clone(),
    };
    match app.orders.apply_transition(cmd).await {
        Ok(Transitioned::Applied(_)) => Decision::Ack("applied"),
        Ok(Transitioned::Unchanged(_)) => Decision::Ack("no_change"),
        Ok(Transitioned::Duplicate) => Decision::Ack("duplicate"),
        Err(TransitionError::NotFound(id)) => {
            Decision::DeadLetter("unknown_order", format!("no order {id}"))
        }
        Err(TransitionError::Decide { status, source }) => {
            classify_plugin_error(source, inbound.kind, status)
        }
        Err(e @ TransitionError::Store { .. }) => Decision::Retry(crate::support::chain(&e)),
        Err(TransitionError::KeptChanging) => {
            Decision::Retry("the order kept changing concurrently".to_owned())
        }
        Err(e @ TransitionError::PaymentMismatch { .. }) => {
            Decision::DeadLetter("payment_mismatch", e.to_string())
        }
    }
}

/// Transient plugin failures are retried; deterministic ones are dead-lettered.
pub fn classify_plugin_error(e: DecideError, kind: InboundKind, status: OrderStatus) -> Decision {
    match e {
        // A shipment can overtake its payment: the order may still become `paid`.
        DecideError::Refused(OrderError::Conflict(msg))
            if kind == InboundKind::ShipmentDispatched && status == OrderStatus::Placed =>
        {
            Decision::Retry(format!("order not paid yet: {msg}"))
        }
        DecideError::Refused(OrderError::Conflict(msg) | OrderError::NotFound(msg)) => {
            Decision::DeadLetter("rejected", msg)
        }
        DecideError::Refused(OrderError::Rejected(r)) => {
            Decision::DeadLetter("rejected", format!("{}: {}", r.reason, r.message))
        }
        DecideError::Refused(OrderError::Invalid(v)) => {
            Decision::DeadLetter("rejected", format!("{} invalid field(s)", v.len()))
        }
        DecideError::Refused(OrderError::Unavailable(msg)) => {
            Decision::Retry(format!("plugin dependency unavailable: {msg}"))
        }
        DecideError::Refused(OrderError::Internal(msg)) => {
            Decision::DeadLetter("poison", format!("plugin internal error: {msg}"))
        }
        DecideError::Budget(k) if k.is_time() => Decision::Retry(format!("plugin {k} budget")),
        e @ (DecideError::Trap { .. }
        | DecideError::Budget(_)
        | DecideError::Contract(_)
        | DecideError::CapabilityDenied { .. }) => {
            Decision::DeadLetter("poison", crate::support::chain(&e))
        }
        e @ DecideError::PoolExhausted { .. } => Decision::Requeue(e.to_string()),
        e @ (DecideError::Interrupted
        | DecideError::Instantiate { .. }
        | DecideError::CircuitOpen { .. }
        | DecideError::NoPlugin(_)) => Decision::Retry(e.to_string()),
    }
}

/// Carry out a decision. Retries and dead letters are confirmed before the original is acked.
async fn settle(
    shared: &EventsShared,
    publisher: &lapin::Channel,
    delivery: &lapin::message::Delivery,
    decision: Decision,
    event_type: &'static str,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<(), String> {
    let link = |e: lapin::Error| super::describe(&e);
    let c = &shared.config;
    let m = &shared.metrics;
    let span = tracing::Span::current();
    let decision = match decision {
        Decision::Retry(why) => {
            let attempt = message::header_count(&delivery.properties, message::H_RETRIES) + 1;
            if attempt > c.max_retries {
                Decision::DeadLetter(
                    "retries_exhausted",
                    format!("gave up after {} retries: {why}", c.max_retries),
                )
            } else {
                let delay = c.retry_delay_for(attempt);
                let props = origin(delivery, delivery.properties.clone());
                let props = message::with_count(props, message::H_RETRIES, attempt)
                    .with_expiration(delay.as_millis().to_string().into());
                confirm(
                    publisher,
                    "",
                    &c.retry_queue(),
                    &delivery.data,
                    props,
                    c.confirm_timeout,
                )
                .await?;
                delivery
                    .acker
                    .ack(BasicAckOptions::default())
                    .await
                    .map_err(link)?;
                span.record("outcome", "retried");
                m.consumed("retried", event_type);
                tracing::warn!(attempt, max = c.max_retries, delay_ms = delay.as_millis() as u64, reason = %why, "event consumer: transient failure; retrying later");
                return Ok(());
            }
        }
        Decision::Requeue(why) => {
            // Pause (the pool frees as calls finish) unless shutdown starts, then give the
            // message back to the queue: it is redelivered to this or another replica, with
            // its retry count untouched.
            let pause = c.retry_delay_for(1);
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(pause) => {}
            }
            delivery
                .acker
                .nack(BasicNackOptions {
                    multiple: false,
                    requeue: true,
                })
                .await
                .map_err(link)?;
            span.record("outcome", "requeued");
            m.consumed("requeued", event_type);
            tracing::warn!(pause_ms = pause.as_millis() as u64, reason = %why, "event consumer: no free plugin instance; message requeued");
            return Ok(());
        }
        other => other,
    };
    match decision {
        Decision::Ack(outcome) => {
            delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(link)?;
            span.record("outcome", outcome);
            m.consumed(outcome, event_type);
            tracing::info!(outcome, "event consumed");
        }
        Decision::DeadLetter(reason, detail) => {
            let detail: String = detail.chars().take(1000).collect();
            let props = origin(delivery, delivery.properties.clone());
            let props = message::with_header(props, message::H_REASON, reason);
            let props = message::with_header(props, message::H_DETAIL, &detail);
            let props = message::with_header(props, message::H_DEAD_AT, &Utc::now().to_rfc3339());
            confirm(
                publisher,
                &c.dead_letter_exchange(),
                &c.queue,
                &delivery.data,
                props,
                c.confirm_timeout,
            )
            .await?;
            delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(link)?;
            span.record("outcome", "dead_lettered");
            m.consumed("dead_lettered", event_type);
            m.dead_lettered(reason, event_type);
            tracing::warn!(reason, detail = %detail, "event consumer: message dead-lettered");
        }
        Decision::Retry(_) | Decision::Requeue(_) => unreachable!("handled above"),
    }
    Ok(())
}

/// Remember where the message was first published, for `weir dlq replay`.
fn origin(delivery: &lapin::message::Delivery, props: BasicProperties) -> BasicProperties {
    if message::header_str(&props, message::H_ORIG_ROUTING_KEY).is_some() {
        return props;
    }
    let props = message::with_header(props, message::H_ORIG_EXCHANGE, delivery.exchange.as_str());
    message::with_header(
        props,
        message::H_ORIG_ROUTING_KEY,
        delivery.routing_key.as_str(),
    )
}

/// Publish with `mandatory` and wait for the confirm; anything but a clean ack is an error
/// (the caller then does not ack the original, which the broker redelivers).
pub(crate) async fn confirm(
    channel: &lapin::Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    props: BasicProperties,
    timeout: Duration,
) -> Result<(), String> {
    let pending = channel
        .basic_publish(
            message::short(exchange),
            message::short(routing_key),
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            body,
            props,
        )
        .await
        .map_err(|e| super::describe(&e))?;
    match tokio::time::timeout(timeout, pending).await {
        Ok(Ok(Confirmation::Ack(None))) => Ok(()),
        Ok(Ok(Confirmation::Ack(Some(returned)))) => Err(format!(
            "publish to {exchange:?} with key {routing_key:?} returned as unroutable: {} {}",
            returned.reply_code, returned.reply_text
        )),
        Ok(Ok(_)) => Err(format!(
            "publish to {exchange:?} with key {routing_key:?} was nacked"
        )),
        Ok(Err(e)) => Err(super::describe(&e)),
        Err(_) => Err(format!(
            "no publisher confirm within {} ms",
            timeout.as_millis()
        )),
    }
}
