//! `/v1/events`: the caller's tenant's outbox as an ordered CloudEvents 1.0 feed (how the embedded default
//! exposes events). On PostgreSQL a sequence number can become visible after a higher one
//! when transactions commit out of order; production consumers read RabbitMQ instead.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use weir_core::app::FeedError;
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
    /// Return events after this sequence number (a previous page's `next_after`). Without
    /// it the feed starts at the oldest event still retained; with one below an event
    /// retention deleted, `410 EVENTS_CURSOR_EXPIRED`.
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
        (status = 410, description = "`EVENTS_CURSOR_EXPIRED`: retention deleted events after `after`; the detail names the seq to continue from", body = super::context::Problem, content_type = "application/problem+json"),
        EdgeErrors,
    )
)]
pub async fn list_events(
    State(api): State<ApiState>,
    axum::Extension(principal): axum::Extension<crate::auth::Principal>,
    QueryParams(q): QueryParams<EventsQuery>,
) -> Result<Json<EventPage>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if q.after.is_some_and(|after| after < 0) || !(1..=MAX_EVENTS_LIMIT).contains(&limit) {
        return Err(ApiError::InvalidQuery(format!(
            "`after` must be >= 0 and `limit` between 1 and {}",
            MAX_EVENTS_LIMIT
        )));
    }
    let page = api
        .orders
        .list_events(&principal.tenant, q.after, limit)
        .await
        .map_err(|e| match e {
            FeedError::CursorExpired { purged_through } => {
                ApiError::EventsCursorExpired { purged_through }
            }
            FeedError::Store(e) => ApiError::store("reading the events feed", e),
        })?;
    Ok(Json(EventPage {
        items: page.events.into_iter().map(CloudEvent::from).collect(),
        next_after: page.next_after,
    }))
}
