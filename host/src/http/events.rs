//! `/v1/events`: the outbox as an ordered CloudEvents 1.0 feed (how the embedded default
//! exposes events). On PostgreSQL a sequence number can become visible after a higher one
//! when transactions commit out of order; production consumers read RabbitMQ instead.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;
use super::extract::QueryParams;
use crate::storage::EventRecord;

/// One event in CloudEvents 1.0 JSON format.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
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
    /// Position in the feed (CloudEvents sequence extension), as a decimal string.
    pub sequence: String,
    /// W3C trace context of the request that caused the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The order after the change.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
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
            traceparent: e.traceparent,
            data: e.data,
        }
    }
}

/// A page of the feed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    /// Events in feed order.
    pub items: Vec<CloudEvent>,
    /// Pass as `after` to continue.
    pub next_after: i64,
}

/// Query of `GET /v1/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Return events after this sequence number (default 0).
    pub after: Option<i64>,
    /// Page size, 1-1000 (default 100).
    pub limit: Option<u32>,
}

/// Read the event feed.
#[utoipa::path(
    get, path = "/v1/events", tag = "events", params(EventsQuery),
    responses((status = 200, body = EventPage), (status = 400, body = super::context::Problem, content_type = "application/problem+json"))
)]
pub async fn list_events(
    State(app): State<AppState>,
    QueryParams(q): QueryParams<EventsQuery>,
) -> Result<Json<EventPage>, ApiError> {
    let after = q.after.unwrap_or(0);
    let limit = q.limit.unwrap_or(100);
    if after < 0 || !(1..=crate::storage::MAX_EVENTS_LIMIT).contains(&limit) {
        return Err(ApiError::InvalidQuery(format!(
            "`after` must be >= 0 and `limit` between 1 and {}",
            crate::storage::MAX_EVENTS_LIMIT
        )));
    }
    let events = app.store.list_events(after, limit).await?;
    let next_after = events.last().map_or(after, |e| e.seq);
    Ok(Json(EventPage {
        items: events.into_iter().map(CloudEvent::from).collect(),
        next_after,
    }))
}
