//! Order events: the outbox row shape, the CloudEvents 1.0 view of it, and the builders of
//! the events an order change produces.
//!
//! Every change to an order appends one event in the same transaction as the change (the
//! transactional outbox). The event's `data` is the order as it is after the change, in its
//! public JSON form ([`Order`]), and it carries the W3C trace context of whatever caused it so
//! the relay and consumers continue that trace.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::order::{Order, OrderStatus};

/// The CloudEvents `source` of the events this service produces, unless configured.
pub const DEFAULT_SOURCE: &str = "/weir/orders";

/// The W3C trace context (`traceparent`, `tracestate`) of the request or message that caused
/// a change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    /// W3C `traceparent`.
    pub traceparent: Option<String>,
    /// W3C `tracestate`.
    pub tracestate: Option<String>,
}

/// An event to append to the outbox in the same transaction as the change it describes.
/// Fields follow CloudEvents naming.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Unique per event (the outbox rejects a duplicate id); consumers dedupe on it.
    pub id: Uuid,
    /// CloudEvents `type`, e.g. `order.placed`.
    pub event_type: String,
    /// CloudEvents `source`.
    pub source: String,
    /// CloudEvents `subject`: the order id.
    pub subject: String,
    /// The tenant of the order the event is about; the events feed is scoped by it.
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// When the change happened.
    pub occurred_at: DateTime<Utc>,
    /// The order after the change.
    pub data: serde_json::Value,
    /// W3C trace context of the cause, propagated by the relay.
    pub traceparent: Option<String>,
    /// See `traceparent`.
    pub tracestate: Option<String>,
}

/// An outbox row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Position in the outbox; the events feed cursor.
    pub seq: i64,
    /// Event id.
    pub id: Uuid,
    /// CloudEvents `type`.
    pub event_type: String,
    /// CloudEvents `source`.
    pub source: String,
    /// CloudEvents `subject`.
    pub subject: String,
    /// The tenant of the order the event is about.
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Payload.
    pub data: serde_json::Value,
    /// W3C trace context of the cause.
    pub traceparent: Option<String>,
    /// See `traceparent`.
    pub tracestate: Option<String>,
    /// When the relay had it confirmed by the broker.
    pub published_at: Option<DateTime<Utc>>,
}

/// One event in CloudEvents 1.0 JSON format (structured mode): the events feed's items and
/// the body of every message the relay publishes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CloudEvent {
    /// Always `1.0`.
    pub specversion: String,
    /// Event id (UUIDv7), unique: consumers dedupe by it.
    pub id: String,
    /// Producer, e.g. `/weir/orders`.
    pub source: String,
    /// `order.placed`, `order.cancelled`, ...
    #[serde(rename = "type")]
    pub type_: String,
    /// The order id.
    pub subject: String,
    /// When it happened (RFC 3339).
    pub time: String,
    /// Always `application/json`.
    pub datacontenttype: String,
    /// Position in the outbox (CloudEvents sequence extension), as a decimal string.
    pub sequence: String,
    /// The tenant of the order (extension attribute `tenant`): consumers of the broker see
    /// every tenant's events and route or filter by it.
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// W3C trace context of the request that caused the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The order after the change.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: serde_json::Value,
}

fn default_tenant() -> String {
    super::tenant::DEFAULT_TENANT.to_owned()
}

impl From<EventRecord> for CloudEvent {
    fn from(e: EventRecord) -> Self {
        Self {
            specversion: "1.0".to_owned(),
            id: e.id.to_string(),
            source: e.source,
            type_: e.event_type,
            subject: e.subject,
            time: e.occurred_at.to_rfc3339(),
            datacontenttype: "application/json".to_owned(),
            sequence: e.seq.to_string(),
            tenant: e.tenant,
            traceparent: e.traceparent,
            data: e.data,
        }
    }
}

/// The `event_type` event about `order` (its data is `order` as given) from `source`.
pub fn order_event(
    source: &str,
    trace: &TraceContext,
    event_type: &str,
    order: &Order,
    now: DateTime<Utc>,
) -> NewEvent {
    NewEvent {
        id: Uuid::now_v7(),
        event_type: event_type.to_owned(),
        source: source.to_owned(),
        subject: order.id.to_string(),
        tenant: order.tenant.clone(),
        occurred_at: now,
        data: serde_json::to_value(order).unwrap_or(serde_json::Value::Null),
        traceparent: trace.traceparent.clone(),
        tracestate: trace.tracestate.clone(),
    }
}

/// `order.placed` for a new order.
pub fn order_placed(source: &str, trace: &TraceContext, order: &Order) -> NewEvent {
    order_event(source, trace, "order.placed", order, order.created_at)
}

/// `order.<next>` for `order` moving to `next` at `now`; its data is the order as it is
/// after the transition (status, version + 1, `updated_at`).
pub fn order_transitioned(
    source: &str,
    trace: &TraceContext,
    order: &Order,
    next: OrderStatus,
    now: DateTime<Utc>,
) -> NewEvent {
    let after = order.transitioned(next, now);
    order_event(source, trace, &format!("order.{next}"), &after, now)
}
