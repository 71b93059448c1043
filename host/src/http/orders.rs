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
use super::extract::{IdempotencyKey, JsonBody, QueryParams, json_integer};
use super::responses::{EdgeErrors, JsonBodyErrors};
use crate::auth::Principal;

/// Route template of placing an order: part of the idempotency scope and request hash.
pub(crate) const PLACE_ROUTE: &str = "POST /v1/orders";

/// The stored idempotency key of placing with the client's `key` in `tenant` (scoped by
/// tenant: the same client key in two tenants is two keys). It is also what the decider
/// routes placing by, so a quote sent with the same key (`quotes::quote_order`) is routed to
/// the same plugin version.
pub(crate) fn placing_key(tenant: &str, key: &str) -> String {
    format!("{tenant}/{PLACE_ROUTE}:{key}")
}

/// Body of `POST /v1/orders`.
///
/// The bounds in the schema are the ones every request is checked against before it is
/// priced (by the reference plugin's validation: `ORDER_INVALID` with one violation per
/// field). A body inside them can still be refused with `422` for business reasons the
/// schema cannot know: an unknown or duplicated sku, a currency the plugin is not configured
/// for, not enough stock.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PlaceOrderBody {
    /// Customer placing the order: `cus_` and 3-40 characters of `A-Z a-z 0-9 _ -`.
    #[schema(pattern = r"^cus_[A-Za-z0-9_-]{3,40}$", example = "cus_alice")]
    pub customer_id: String,
    /// ISO 4217 currency; which ones are accepted is the plugin's configuration
    /// (`currencies`, by default EUR and USD).
    #[schema(pattern = "^[A-Z]{3}$", example = "EUR")]
    pub currency: String,
    /// Requested lines, 1-100, each sku at most once.
    #[schema(min_items = 1, max_items = 100)]
    pub lines: Vec<LineBody>,
    /// Free-form string metadata, stored and returned unchanged: at most 20 entries, keys
    /// 1-64 and values at most 512 bytes of UTF-8.
    #[serde(default)]
    #[schema(schema_with = metadata_schema)]
    pub metadata: BTreeMap<String, String>,
}

fn metadata_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
    let string = |min: usize, max: usize| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(min))
            .max_length(Some(max))
            .build()
    };
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .max_properties(Some(MAX_METADATA_ENTRIES))
        .property_names(Some(string(1, MAX_METADATA_KEY_BYTES)))
        .additional_properties(Some(AdditionalProperties::RefOr(
            string(0, MAX_METADATA_VALUE_BYTES).into(),
        )))
        .build()
}

/// Most metadata entries of an order.
const MAX_METADATA_ENTRIES: usize = 20;
/// Longest metadata key.
const MAX_METADATA_KEY_BYTES: usize = 64;
/// Longest metadata value.
const MAX_METADATA_VALUE_BYTES: usize = 512;

/// One requested line.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LineBody {
    /// Product sku: 1-64 characters of `A-Z a-z 0-9 _ -`.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$", example = "KB-001")]
    pub sku: String,
    /// Units, 1-1000.
    #[schema(minimum = 1, maximum = 1000)]
    #[serde(deserialize_with = "json_integer")]
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

/// Largest page of `GET /v1/orders`.
pub const MAX_LIST_LIMIT: u32 = 100;

/// Query of `GET /v1/orders`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this customer's orders.
    #[param(required = false)]
    pub customer_id: Option<String>,
    /// Only orders in this status.
    #[param(schema_with = status_schema, required = false)]
    pub status: Option<String>,
    /// Page size, 1-100 (default 20).
    #[param(minimum = 1, maximum = 100, required = false)]
    pub limit: Option<u32>,
    /// Cursor from a previous page's `next_cursor`.
    #[param(pattern = r"^o1\.[0-9a-f]{32}$", required = false)]
    pub cursor: Option<String>,
}

fn status_schema() -> utoipa::openapi::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(["placed", "paid", "shipped", "cancelled"]))
        .build()
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

/// Place an order. Retry a `5xx` or `409` with the same `Idempotency-Key` and body.
#[utoipa::path(
    post, path = "/v1/orders", tag = "orders",
    request_body = PlaceOrderBody,
    params(("Idempotency-Key" = String, Header, pattern = r"^[!-~]{1,255}$", description = "Client-chosen key, 1-255 visible ASCII characters; retries reuse it")),
    responses(
        (status = 201, description = "Order placed (or replayed, with `Idempotent-Replayed: true`)", body = Order),
        (status = 400, description = "`MALFORMED_JSON`, `IDEMPOTENCY_KEY_MISSING` or `IDEMPOTENCY_KEY_INVALID`", body = super::context::Problem, content_type = "application/problem+json"),
        (status = 404, description = "`RESOURCE_NOT_FOUND`: the plugin found no such referenced resource", body = super::context::Problem, content_type = "application/problem+json"),
        (status = 409, description = "`IDEMPOTENCY_KEY_IN_PROGRESS` (same key in progress) or `ORDER_CONFLICT`", body = super::context::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`REQUEST_SCHEMA_INVALID`, `UNKNOWN_FIELD`, `ORDER_INVALID` (out of the schema's bounds, or a currency the plugin does not accept), `ORDER_REJECTED` (a business rule: unknown sku, not enough stock) or `IDEMPOTENCY_KEY_REUSED` (the key was used with another body)", body = super::context::Problem, content_type = "application/problem+json"),
        JsonBodyErrors,
        EdgeErrors,
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
        idempotency_key: placing_key(tenant, &key),
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
        (status = 200, description = "The order", body = Order),
        (status = 400, description = "`INVALID_PATH_PARAMETER`: the id is not a UUID", body = super::context::Problem, content_type = "application/problem+json"),
        (status = 404, description = "`ORDER_NOT_FOUND`", body = super::context::Problem, content_type = "application/problem+json"),
        EdgeErrors,
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

/// Cursors are `o1.` and the last order id of the page as 32 lower-case hex digits: a form
/// the schema states exactly (`^o1\.[0-9a-f]{32}$`), so every cursor the schema allows is
/// one the host accepts and no other. Pages continue before that id.
const CURSOR_PREFIX: &str = "o1.";
/// Prefix of the earlier base64 form (`base64url("o1:" + id)`), still decoded so a client
/// paging across an upgrade is not cut off; never issued.
const LEGACY_CURSOR_PREFIX: &str = "o1:";

fn encode_cursor(id: Uuid) -> String {
    format!("{CURSOR_PREFIX}{}", id.simple())
}

fn decode_cursor(cursor: &str) -> Result<Uuid, ApiError> {
    if let Some(hex) = cursor.strip_prefix(CURSOR_PREFIX) {
        let canonical = hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        return canonical
            .then(|| Uuid::parse_str(hex).ok())
            .flatten()
            .ok_or(ApiError::InvalidCursor);
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| ApiError::InvalidCursor)?;
    let text = String::from_utf8(bytes).map_err(|_| ApiError::InvalidCursor)?;
    let id = text
        .strip_prefix(LEGACY_CURSOR_PREFIX)
        .ok_or(ApiError::InvalidCursor)?;
    Uuid::parse_str(id).map_err(|_| ApiError::InvalidCursor)
}

/// List orders, newest first, with cursor pagination.
#[utoipa::path(
    get, path = "/v1/orders", tag = "orders",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of orders", body = OrderPage),
        (status = 400, description = "`INVALID_QUERY_PARAMETER` (unknown parameter, or one out of its bounds) or `INVALID_CURSOR`", body = super::context::Problem, content_type = "application/problem+json"),
        EdgeErrors,
    )
)]
pub async fn list_orders(
    State(api): State<ApiState>,
    Extension(principal): Extension<Principal>,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<OrderPage>, ApiError> {
    let limit = q.limit.unwrap_or(20);
    if !(1..=MAX_LIST_LIMIT).contains(&limit) {
        return Err(ApiError::InvalidQuery(format!(
            "`limit` must be between 1 and {MAX_LIST_LIMIT}"
        )));
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
    let orders = api
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
    let (items, next_cursor) = super::extract::page(orders, limit, |o| encode_cursor(o.id));
    Ok(Json(OrderPage { items, next_cursor }))
}

/// Cancel an order. Idempotent: cancelling a cancelled order returns it unchanged.
#[utoipa::path(
    post, path = "/v1/orders/{id}/cancel", tag = "orders",
    params(("id" = Uuid, Path, description = "Order id")),
    responses(
        (status = 200, description = "The cancelled order", body = Order),
        (status = 400, description = "`INVALID_PATH_PARAMETER`: the id is not a UUID", body = super::context::Problem, content_type = "application/problem+json"),
        (status = 404, description = "`ORDER_NOT_FOUND` (or `RESOURCE_NOT_FOUND` from the plugin)", body = super::context::Problem, content_type = "application/problem+json"),
        (status = 409, description = "`ORDER_CONFLICT`: the order can no longer be cancelled (e.g. shipped)", body = super::context::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`ORDER_INVALID` or `ORDER_REJECTED`: the plugin refused the cancellation", body = super::context::Problem, content_type = "application/problem+json"),
        EdgeErrors,
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
        assert!(encode_cursor(id).starts_with("o1.") && encode_cursor(id).len() == 35);
        let legacy = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("o1:{id}"));
        assert_eq!(decode_cursor(&legacy).unwrap(), id);
        // Only the form the schema states: lower-case simple hex.
        for bad in [
            format!("o1.{}", id.simple().to_string().to_uppercase()),
            format!("o1.{}", id.hyphenated()),
            format!("o1.{}", &id.simple().to_string()[1..]),
        ] {
            assert!(
                matches!(decode_cursor(&bad), Err(ApiError::InvalidCursor)),
                "{bad}"
            );
        }
        assert!(matches!(decode_cursor("!!"), Err(ApiError::InvalidCursor)));
        let foreign = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("x");
        assert!(matches!(
            decode_cursor(&foreign),
            Err(ApiError::InvalidCursor)
        ));
    }
}
