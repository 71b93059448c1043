//! `/v1/events`: the caller's tenant's outbox as an ordered CloudEvents 1.0 feed (how the embedded default
//! exposes events). On PostgreSQL a sequence number can become visible after a higher one
//! when transactions commit out of order; production consumers read RabbitMQ instead.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use weir_core::domain::CloudEvent;
use weir_core::ports::store::MAX_EVENTS_LIMIT;

use super::ApiState;
use super::error::ApiError;
use super::extract::QueryParams;
use super::responses::EdgeErrors;

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
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Return events after this sequence number (default 0).
    #[param(minimum = 0, required = false)]
    pub after: Option<i64>,
    /// Page size, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000, required = false)]
    pub limit: Option<u32>,
}

/// Read the event feed.
#[utoipa::path(
    get, path = "/v1/events", tag = "events", params(EventsQuery),
    responses(
        (status = 200, description = "A page of the feed", body = EventPage),
        (status = 400, description = "`INVALID_QUERY_PARAMETER`: an unknown parameter, or one out of its bounds", body = super::context::Problem, content_type = "application/problem+json"),
        EdgeErrors,
    )
)]
pub async fn list_events(
    State(api): State<ApiState>,
    axum::Extension(principal): axum::Extension<crate::auth::Principal>,
    QueryParams(q): QueryParams<EventsQuery>,
) -> Result<Json<EventPage>, ApiError> {
    let after = q.after.unwrap_or(0);
    let limit = q.limit.unwrap_or(100);
    if after < 0 || !(1..=MAX_EVENTS_LIMIT).contains(&limit) {
        return Err(ApiError::InvalidQuery(format!(
            "`after` must be >= 0 and `limit` between 1 and {}",
            MAX_EVENTS_LIMIT
        )));
    }
    let events = api
        .orders
        .list_events(&principal.tenant, after, limit)
        .await
        .map_err(|e| ApiError::store("reading the events feed", e))?;
    let next_after = events.last().map_or(after, |e| e.seq);
    Ok(Json(EventPage {
        items: events.into_iter().map(CloudEvent::from).collect(),
        next_after,
    }))
}
