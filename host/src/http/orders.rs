//! `/v1/orders`: place, read, list and cancel orders.
//!
//! Thin handlers: extract the request, call the core's use-case
//! (`OrderService::place_order`, `OrderService::apply_transition`, the queries), map the
//! result. The idempotency, the plugin call and the one transaction live in `weir-core`.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::response::Response;
use base64::Engine as _;
use http::{HeaderName, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use weir_core::app::{ApplyTransition, PlaceOrder, Placed, ResponseEncoder, Transitioned};
use weir_core::domain::{
    LineRequest, Order, OrderError, OrderEvent, OrderRequest, OrderStatus, StoredResponse,
    TraceContext,
};
use weir_core::ports::OrderFilter;

pub use weir_core::domain::idempotency::request_hash;

use super::ApiState;
use super::context::{RequestContext, problem};
use super::error::ApiError;
use super::extract::{IdempotencyKey, JsonBody, QueryParams};
use crate::auth::Principal;

/// Route template of placing an order: part of the idempotency scope and request hash.
const PLACE_ROUTE: &str = "POST /v1/orders";

/// Body of `POST /v1/orders`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PlaceOrderBody {
    /// Customer placing the order, e.g. `cus_123`.
    pub customer_id: String,
    /// ISO 4217 currency.
    pub currency: String,
    /// Requested lines.
    pub lines: Vec<LineBody>,
    /// Free-form string metadata, stored and returned unchanged.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// One requested line.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LineBody {
    /// Product sku.
    pub sku: String,
    /// Units, 1 or more.
    pub quantity: u32,
}

impl From<PlaceOrderBody> for OrderRequest {
    fn from(b: PlaceOrderBody) -> Self {
        Self {
            customer_id: b.customer_id,
            currency: b.currency,
            lines: b
                .lines
                .into_iter()
                .map(|l| LineRequest {
                    sku: l.sku,
                    quantity: l.quantity,
                })
                .collect(),
            metadata: b.metadata,
        }
    }
}

/// A page of orders.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderPage {
    /// Orders, newest first.
    pub items: Vec<Order>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Query of `GET /v1/orders`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this customer's orders.
    pub customer_id: Option<String>,
    /// Only orders in this status.
    pub status: Option<String>,
    /// Page size, 1-100 (default 20).
    pub limit: Option<u32>,
    /// Opaque cursor from a previous page.
    pub cursor: Option<String>,
}

fn request_trace(ctx: &RequestContext) -> TraceContext {
    TraceContext {
        traceparent: ctx.traceparent.clone(),
        tracestate: ctx.tracestate.clone(),
    }
}

/// The responses of `POST /v1/orders` as stored for replay: exactly what the client gets.
struct Responses<'a> {
    ctx: &'a RequestContext,
}

impl ResponseEncoder for Responses<'_> {
    fn created(&self, order: &Order) -> StoredResponse {
        StoredResponse {
            status: StatusCode::CREATED.as_u16(),
            body: serde_json::to_vec(order).unwrap_or_default(),
            headers: vec![
                ("content-type".to_owned(), "application/json".to_owned()),
                ("location".to_owned(), format!("/v1/orders/{}", order.id)),
            ],
        }
    }

    fn refused(&self, error: &OrderError) -> StoredResponse {
        let err = ApiError::Plugin(error.clone());
        StoredResponse {
            status: err.spec().status.as_u16(),
            body: serde_json::to_vec(&problem(&err, self.ctx, "/v1/orders")).unwrap_or_default(),
            headers: vec![(
                header::CONTENT_TYPE.as_str().to_owned(),
                "application/problem+json".to_owned(),
            )],
        }
    }
}

/// `stored` as a response; `replayed` adds `Idempotent-Replayed: true`.
fn respond(stored: StoredResponse, replayed: bool) -> Response {
    let mut response = Response::new(axum::body::Body::from(stored.body));
    *response.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    for (name, value) in stored.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            response.headers_mut().append(n, v);
        }
    }
    if replayed {
        response.headers_mut().insert(
            HeaderName::from_static("idempotent-replayed"),
            HeaderValue::from_static("true"),
        );
    }
    response
}

/// Place an order.
#[utoipa::path(
    post, path = "/v1/orders", tag = "orders",
    request_body = PlaceOrderBody,
    params(("Idempotency-Key" = String, Header, description = "Client-chosen key, 1-255 visible ASCII characters; retries reuse it")),
    responses(
        (status = 201, description = "Order placed (or replayed, with `Idempotent-Replayed: true`)", body = Order),
        (status = 400, description = "Malformed request", body = super::context::Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive in time (`REQUEST_BODY_TIMEOUT`)", body = super::context::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Same key in progress", body = super::context::Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is over the limit (`PAYLOAD_TOO_LARGE`)", body = super::context::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid, rejected, or key reused with another body", body = super::context::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Temporarily unavailable; retry with the same key", body = super::context::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn place_order(
    State(api): State<ApiState>,
    Extension(ctx): Extension<RequestContext>,
    Extension(principal): Extension<Principal>,
    IdempotencyKey(key): IdempotencyKey,
    body: JsonBody<PlaceOrderBody>,
) -> Result<Response, ApiError> {
    let tenant = &*principal.tenant;
    let cmd = PlaceOrder {
        tenant: tenant.to_owned(),
        // Scoped by tenant: the same client key in two tenants is two keys.
        idempotency_key: format!("{tenant}/{PLACE_ROUTE}:{key}"),
        request_hash: request_hash(PLACE_ROUTE, &body.raw),
        request: body.value.into(),
        deadline: Instant::now() + api.config.request_timeout,
        trace: request_trace(&ctx),
    };
    match api
        .orders
        .place_order(cmd, &Responses { ctx: &ctx })
        .await?
    {
        Placed::Created { response, .. } => Ok(respond(response, false)),
        Placed::Replayed(stored) => Ok(respond(stored, true)),
    }
}

/// Parse an order id path parameter.
pub(crate) fn parse_order_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::InvalidPath {
        name: "id",
        reason: "must be a UUID".to_owned(),
    })
}

/// Get one order.
#[utoipa::path(
    get, path = "/v1/orders/{id}", tag = "orders",
    params(("id" = Uuid, Path, description = "Order id")),
    responses(
        (status = 200, body = Order),
        (status = 400, body = super::context::Problem, content_type = "application/problem+json"),
        (status = 404, body = super::context::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_order(
    State(api): State<ApiState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Order>, ApiError> {
    let id = parse_order_id(&id)?;
    let order = api
        .orders
        .get_order(&principal.tenant, id)
        .await
        .map_err(|e| ApiError::store("reading the order", e))?
        .ok_or_else(|| ApiError::OrderNotFound(id.to_string()))?;
    Ok(Json(order))
}

const CURSOR_PREFIX: &str = "o1:";

fn encode_cursor(id: Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{CURSOR_PREFIX}{id}"))
}

fn decode_cursor(cursor: &str) -> Result<Uuid, ApiError> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| ApiError::InvalidCursor)?;
    let text = String::from_utf8(bytes).map_err(|_| ApiError::InvalidCursor)?;
    let id = text
        .strip_prefix(CURSOR_PREFIX)
        .ok_or(ApiError::InvalidCursor)?;
    Uuid::parse_str(id).map_err(|_| ApiError::InvalidCursor)
}

/// List orders, newest first, with cursor pagination.
#[utoipa::path(
    get, path = "/v1/orders", tag = "orders",
    params(ListQuery),
    responses(
        (status = 200, body = OrderPage),
        (status = 400, body = super::context::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_orders(
    State(api): State<ApiState>,
    Extension(principal): Extension<Principal>,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<OrderPage>, ApiError> {
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::InvalidQuery(
            "`limit` must be between 1 and 100".to_owned(),
        ));
    }
    let status = q
        .status
        .as_deref()
        .map(|s| {
            s.parse::<OrderStatus>().map_err(|_| {
                ApiError::InvalidQuery(
                    "`status` must be one of placed, paid, shipped, cancelled".to_owned(),
                )
            })
        })
        .transpose()?;
    let before_id = q.cursor.as_deref().map(decode_cursor).transpose()?;
    let mut orders = api
        .orders
        .list_orders(&OrderFilter {
            tenant: principal.tenant.to_string(),
            customer_id: q.customer_id,
            status,
            limit: limit + 1,
            before_id,
        })
        .await
        .map_err(|e| ApiError::store("listing orders", e))?;
    let next_cursor = if orders.len() > limit as usize {
        orders.truncate(limit as usize);
        orders.last().map(|o| encode_cursor(o.id))
    } else {
        None
    };
    Ok(Json(OrderPage {
        items: orders,
        next_cursor,
    }))
}

/// Cancel an order. Idempotent: cancelling a cancelled order returns it unchanged.
#[utoipa::path(
    post, path = "/v1/orders/{id}/cancel", tag = "orders",
    params(("id" = Uuid, Path, description = "Order id")),
    responses(
        (status = 200, body = Order),
        (status = 404, body = super::context::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The order can no longer be cancelled", body = super::context::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel_order(
    State(api): State<ApiState>,
    Extension(ctx): Extension<RequestContext>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Order>, ApiError> {
    let order_id = parse_order_id(&id)?;
    let outcome = api
        .orders
        .apply_transition(ApplyTransition {
            order_id,
            tenant: Some(principal.tenant.to_string()),
            event: OrderEvent::CancelRequested,
            deadline: Instant::now() + api.config.request_timeout,
            trace: request_trace(&ctx),
            inbox: None,
            paid: None,
        })
        .await?;
    match outcome {
        Transitioned::Applied(order) | Transitioned::Unchanged(order) => Ok(Json(order)),
        // Only messages (with an inbox key) can be duplicates.
        Transitioned::Duplicate => Err(ApiError::Internal(anyhow::anyhow!(
            "a cancel without an inbox key was reported as a duplicate"
        ))),
    }
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_rejected() {
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(id)).unwrap(), id);
        assert!(matches!(decode_cursor("!!"), Err(ApiError::InvalidCursor)));
        let foreign = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("x");
        assert!(matches!(
            decode_cursor(&foreign),
            Err(ApiError::InvalidCursor)
        ));
    }
}
