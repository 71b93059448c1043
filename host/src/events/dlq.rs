//! `weir dlq list` and `weir dlq replay`: inspect and re-drive the dead-letter queue.
//!
//! Listing takes messages with `basic.get` without acking and closes the channel, so every
//! listed message goes back to the DLQ untouched. Replaying republishes a message (with
//! confirms) to the consumer queue through the default exchange, without the dead-letter and
//! retry headers, and only then acks it in the DLQ. The consumer dedupes by message id, so
//! replaying a message that did apply is harmless.

use lapin::options::{BasicAckOptions, BasicGetOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde::Serialize;

use super::{AmqpUrl, EventsConfig, message};

/// One dead-lettered message, as `weir dlq list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DlqMessage {
    /// AMQP `message_id` (the CloudEvents id for well-formed messages).
    pub message_id: Option<String>,
    /// Stable reason code (`malformed_json`, `unknown_order`, `retries_exhausted`, ...).
    pub reason: Option<String>,
    /// Human detail of the reason.
    pub detail: Option<String>,
    /// When it was dead-lettered.
    pub dead_lettered_at: Option<String>,
    /// Retries made before.
    pub retries: u32,
    /// Routing key it was first published with.
    pub original_routing_key: Option<String>,
    /// Body bytes.
    pub size: usize,
    /// The body if it is UTF-8, truncated to 500 characters.
    pub body: String,
}

/// What `weir dlq replay` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayReport {
    /// Republished to the consumer queue and removed from the DLQ.
    pub replayed: Vec<String>,
    /// Left in the DLQ (did not match `--id`).
    pub skipped: usize,
}

/// A failed DLQ operation.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// The broker could not be reached.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// Redacted URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// A broker operation failed.
    #[error("{0}")]
    Broker(String),
}

fn describe(m: &lapin::message::Delivery) -> DlqMessage {
    let p = &m.properties;
    DlqMessage {
        message_id: p.message_id().as_ref().map(|s| s.as_str().to_owned()),
        reason: message::header_str(p, message::H_REASON),
        detail: message::header_str(p, message::H_DETAIL),
        dead_lettered_at: message::header_str(p, message::H_DEAD_AT),
        retries: message::header_count(p, message::H_RETRIES),
        original_routing_key: message::header_str(p, message::H_ORIG_ROUTING_KEY),
        size: m.data.len(),
        body: String::from_utf8_lossy(&m.data).chars().take(500).collect(),
    }
}

async fn open(
    url: &AmqpUrl,
    c: &EventsConfig,
) -> Result<(lapin::Connection, lapin::Channel), DlqError> {
    let conn = super::connect(url, "dlq")
        .await
        .map_err(|reason| DlqError::Connect {
            url: url.redacted(),
            reason,
        })?;
    let setup = async {
        let channel = conn.create_channel().await?;
        channel
            .queue_declare(
                c.dead_letter_queue().as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok::<_, lapin::Error>(channel)
    };
    match setup.await {
        Ok(channel) => Ok((conn, channel)),
        Err(e) => {
            super::close(&conn).await;
            Err(DlqError::Broker(format!(
                "dead-letter queue {}: {}",
                c.dead_letter_queue(),
                super::describe(&e)
            )))
        }
    }
}

/// Up to `limit` dead-lettered messages, oldest first; all stay in the DLQ.
pub async fn list(
    url: &AmqpUrl,
    c: &EventsConfig,
    limit: usize,
) -> Result<Vec<DlqMessage>, DlqError> {
    let (conn, channel) = open(url, c).await?;
    let result = async {
        let mut out = Vec::new();
        while out.len() < limit {
            match channel
                .basic_get(
                    c.dead_letter_queue().as_str().into(),
                    BasicGetOptions { no_ack: false },
                )
                .await?
            {
                Some(m) => out.push(describe(&m.delivery)),
                None => break,
            }
        }
        Ok::<_, lapin::Error>(out)
    }
    .await;
    // Closing without acking puts every fetched message back.
    super::close(&conn).await;
    result.map_err(|e| DlqError::Broker(super::describe(&e)))
}

/// Republish up to `limit` messages (only those with message id `only`, if given) to the
/// consumer queue, acking each in the DLQ after its confirm.
pub async fn replay(
    url: &AmqpUrl,
    c: &EventsConfig,
    limit: usize,
    only: Option<&str>,
) -> Result<ReplayReport, DlqError> {
    let (conn, channel) = open(url, c).await?;
    let result = async {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| super::describe(&e))?;
        let mut report = ReplayReport::default();
        while report.replayed.len() < limit {
            let Some(m) = channel
                .basic_get(
                    c.dead_letter_queue().as_str().into(),
                    BasicGetOptions { no_ack: false },
                )
                .await
                .map_err(|e| super::describe(&e))?
            else {
                break;
            };
            let id = m
                .delivery
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default();
            if only.is_some_and(|want| want != id) {
                report.skipped += 1;
                continue;
            }
            let props = message::without_headers(
                m.delivery.properties.clone(),
                &[
                    message::H_REASON,
                    message::H_DETAIL,
                    message::H_DEAD_AT,
                    message::H_RETRIES,
                    "x-death",
                    "x-first-death-exchange",
                    "x-first-death-queue",
                    "x-first-death-reason",
                ],
            );
            super::consumer::confirm(
                &channel,
                "",
                &c.queue,
                &m.delivery.data,
                props,
                c.confirm_timeout,
            )
            .await?;
            m.delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(|e| super::describe(&e))?;
            report.replayed.push(id);
        }
        Ok::<_, String>(report)
    }
    .await;
    // Skipped (unacked) messages return to the DLQ when the connection closes.
    super::close(&conn).await;
    result.map_err(DlqError::Broker)
}
