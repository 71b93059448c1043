//! The broker topology, declared idempotently at start-up (and after every reconnect).
//! Declaring an existing entity with the same arguments is a no-op; different arguments fail
//! with `PRECONDITION_FAILED`, which is logged and retried with backoff (see RUNBOOK.md).
//!
//! ```text
//! relay ──► <exchange> (topic, durable)  routing key = event type (order.placed, ...)
//!
//! producers ──► <inbound_exchange> (topic) ──payment.captured──────► <queue> (durable)
//!                                          └─shipment.dispatched──┘   │ x-dead-letter-exchange = <queue>.dlx
//! consumer retry ──► <queue>.retry (per-message TTL) ──expired──► "" ─┘ (back to <queue>)
//! consumer dead-letter ──► <queue>.dlx (direct) ──<queue>──► <queue>.dlq (durable)
//! ```

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use super::EventsConfig;

/// Routing keys the consumer queue is bound with.
pub const INBOUND_TYPES: [&str; 2] = ["payment.captured", "shipment.dispatched"];

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// What the relay needs: the order events exchange.
pub async fn declare_publisher(channel: &Channel, c: &EventsConfig) -> lapin::Result<()> {
    channel
        .exchange_declare(
            c.exchange.as_str().into(),
            ExchangeKind::Topic,
            durable_exchange(),
            FieldTable::default(),
        )
        .await
}

/// What the consumer needs: inbound exchange, queue, retry queue, dead-letter exchange and
/// queue, and their bindings.
pub async fn declare_consumer(channel: &Channel, c: &EventsConfig) -> lapin::Result<()> {
    let queue = c.queue.as_str();
    let dlx = c.dead_letter_exchange();
    let dlq = c.dead_letter_queue();
    let retry = c.retry_queue();

    channel
        .exchange_declare(
            c.inbound_exchange.as_str().into(),
            ExchangeKind::Topic,
            durable_exchange(),
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            dlx.as_str().into(),
            ExchangeKind::Direct,
            durable_exchange(),
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(dlq.as_str().into(), durable_queue(), FieldTable::default())
        .await?;
    channel
        .queue_bind(
            dlq.as_str().into(),
            dlx.as_str().into(),
            queue.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

    // A message rejected without requeue (by us or an operator) lands in the DLQ too.
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(dlx.as_str().into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(queue.into()),
    );
    channel
        .queue_declare(queue.into(), durable_queue(), args)
        .await?;
    for key in INBOUND_TYPES {
        channel
            .queue_bind(
                queue.into(),
                c.inbound_exchange.as_str().into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }

    // Retries wait here for their per-message TTL (`expiration`), then go back to `queue`
    // through the default exchange. No consumer reads this queue.
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(queue.into()),
    );
    channel
        .queue_declare(retry.as_str().into(), durable_queue(), args)
        .await?;
    Ok(())
}
