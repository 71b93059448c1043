//! `/v1/orders`: place, read, list and cancel orders.
//!
//! Placing an order: idempotency check -> plugin `place-order` -> ONE transaction writing the
//! order, its `order.placed` outbox event and the completed idempotency record. A failure
//! before the transaction commits releases the key (transient errors) or stores the
//! deterministic problem response (business rejections), so a retry is safe either way.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::{DateTime, SubsecRound, Utc};
use http::{HeaderName, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::context::{RequestContext, problem};
use super::error::ApiError;
use super::extract::{IdempotencyKey, JsonBody, QueryParams};
use crate::runtime::{self, OrderError, OrderEvent, PluginVersion};
use crate::storage::{
    IdempotencyBegin, NewEvent, OrderFilter, OrderLineRecord, OrderRecord, OrderStatus, PluginRef,
    StoredResponse, TransitionOutcome,
};
use crate::telemetry;

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

/// An order as returned by the API. Amounts are integer minor units of `currency`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderView {
    /// Order id (UUIDv7).
    pub id: Uuid,
    /// Customer.
    pub customer_id: String,
    /// ISO 4217 currency.
    pub currency: String,
    /// `placed`, `paid`, `shipped` or `cancelled`.
    pub status: String,
    /// Priced lines.
    pub lines: Vec<LineView>,
    /// Sum of line totals.
    pub subtotal: i64,
    /// Discount applied.
    pub discount: i64,
    /// Tax charged.
    pub tax: i64,
    /// Amount due.
    pub total: i64,
    /// Client metadata.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// The plugin version that priced the order.
    pub plugin: PluginView,
    /// Optimistic-concurrency version, incremented on every change.
    pub version: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// One priced line.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LineView {
    /// Product sku.
    pub sku: String,
    /// Units.
    pub quantity: u32,
    /// Price of one unit.
    pub unit_price: i64,
    /// `unit_price * quantity`.
    pub line_total: i64,
}

/// Which plugin version decided.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PluginView {
    /// Plugin name.
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// sha256 of the component.
    pub digest: String,
}

impl From<OrderRecord> for OrderView {
    fn from(o: OrderRecord) -> Self {
        Self {
            id: o.id,
            customer_id: o.customer_id,
            currency: o.currency,
            status: o.status.as_str().to_owned(),
            lines: o
                .lines
                .into_iter()
                .map(|l| LineView {
                    sku: l.sku,
                    quantity: l.quantity,
                    unit_price: l.unit_price,
                    line_total: l.line_total,
                })
                .collect(),
            subtotal: o.subtotal,
            discount: o.discount,
            tax: o.tax,
            total: o.total,
            metadata: o.metadata,
            plugin: PluginView {
                name: o.plugin.name,
                version: o.plugin.version,
                digest: o.plugin.digest,
            },
            version: o.version,
            created_at: o.created_at,
            updated_at: o.updated_at,
        }
    }
}

/// A page of orders.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderPage {
    /// Orders, newest first.
    pub items: Vec<OrderView>,
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

/// Deterministic JSON: object keys sorted at every level, so equal bodies hash equally
/// whatever key order the client used.
fn canonical_json(v: &serde_json::Value) -> String {
    fn write(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::String(k.clone()).to_string());
                    out.push(':');
                    write(&map[k], out);
                }
                out.push('}');
            }
            serde_json::Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// Hash identifying a request for idempotency: route plus canonical body.
pub fn request_hash(route: &str, body: &serde_json::Value) -> String {
    let mut h = Sha256::new();
    h.update(route.as_bytes());
    h.update([0]);
    h.update(canonical_json(body).as_bytes());
    hex::encode(h.finalize())
}

pub(crate) fn status_to_wit(s: OrderStatus) -> runtime::OrderStatus {
    match s {
        OrderStatus::Placed => runtime::OrderStatus::Placed,
        OrderStatus::Paid => runtime::OrderStatus::Paid,
        OrderStatus::Shipped => runtime::OrderStatus::Shipped,
        OrderStatus::Cancelled => runtime::OrderStatus::Cancelled,
    }
}

pub(crate) fn status_from_wit(s: runtime::OrderStatus) -> OrderStatus {
    match s {
        runtime::OrderStatus::Placed => OrderStatus::Placed,
        runtime::OrderStatus::Paid => OrderStatus::Paid,
        runtime::OrderStatus::Shipped => OrderStatus::Shipped,
        runtime::OrderStatus::Cancelled => OrderStatus::Cancelled,
    }
}

fn plugin_ref(p: &PluginVersion) -> PluginRef {
    PluginRef {
        name: p.meta.name.clone(),
        version: p.meta.version.clone(),
        digest: p.meta.digest.clone(),
    }
}

/// Now, at the microsecond precision both databases store, so a response built from this
/// value equals the record read back later.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// An outbox event about `order`, carrying the W3C trace context (`traceparent`,
/// `tracestate`) of whatever caused it.
pub(crate) fn order_event(
    app: &AppState,
    trace: (Option<String>, Option<String>),
    event_type: &str,
    order: &OrderView,
    now: DateTime<Utc>,
) -> NewEvent {
    NewEvent {
        id: Uuid::now_v7(),
        event_type: event_type.to_owned(),
        source: app.event_source.clone(),
        subject: order.id.to_string(),
        occurred_at: now,
        data: serde_json::to_value(order).unwrap_or(serde_json::Value::Null),
        traceparent: trace.0,
        tracestate: trace.1,
    }
}

/// The `order.<next>` outbox event of a status transition of `order`, with the order as it
/// will be after the transition (status, version + 1, `updated_at`) as its data. Shared by
/// the cancel endpoint and the payments consumer.
pub(crate) fn transition_event(
    app: &AppState,
    trace: (Option<String>, Option<String>),
    order: &OrderRecord,
    next: OrderStatus,
    now: DateTime<Utc>,
) -> NewEvent {
    let mut view = OrderView::from(order.clone());
    view.status = next.as_str().to_owned();
    view.version += 1;
    view.updated_at = now;
    order_event(app, trace, &format!("order.{next}"), &view, now)
}

fn request_trace(ctx: &RequestContext) -> (Option<String>, Option<String>) {
    (ctx.traceparent.clone(), ctx.tracestate.clone())
}

fn is_deterministic(err: &ApiError) -> bool {
    matches!(
        err,
        ApiError::Plugin(
            OrderError::Invalid(_)
                | OrderError::Rejected(_)
                | OrderError::NotFound(_)
                | OrderError::Conflict(_)
        )
    )
}

fn replay(stored: StoredResponse) -> Response {
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
    response.headers_mut().insert(
        HeaderName::from_static("idempotent-replayed"),
        HeaderValue::from_static("true"),
    );
    response
}

/// Place an order.
#[utoipa::path(
    post, path = "/v1/orders", tag = "orders",
    request_body = PlaceOrderBody,
    params(("Idempotency-Key" = String, Header, description = "Client-chosen key, 1-255 visible ASCII characters; retries reuse it")),
    responses(
        (status = 201, description = "Order placed (or replayed, with `Idempotent-Replayed: true`)", body = OrderView),
        (status = 400, description = "Malformed request", body = super::context::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Same key in progress", body = super::context::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid, rejected, or key reused with another body", body = super::context::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Temporarily unavailable; retry with the same key", body = super::context::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn place_order(
    State(app): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    IdempotencyKey(key): IdempotencyKey,
    body: JsonBody<PlaceOrderBody>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let scoped = format!("POST /v1/orders:{key}");
    let hash = request_hash("POST /v1/orders", &body.raw);
    let cfg = &app.config.idempotency;
    let lookup = tracing::info_span!(
        "idempotency.lookup",
        otel.kind = "client",
        db.system.name = app.store.backend(),
        db.operation.name = "idempotency_begin",
        idempotency.outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let begun = telemetry::traced(
        lookup.clone(),
        store_code,
        app.store
            .idempotency_begin(&scoped, &hash, Utc::now(), cfg.lock_ttl, cfg.retention),
    )
    .await?;
    lookup.record(
        "idempotency.outcome",
        match &begun {
            IdempotencyBegin::Started => "started",
            IdempotencyBegin::Replay(_) => "replay",
            IdempotencyBegin::Mismatch => "mismatch",
            IdempotencyBegin::InProgress { .. } => "in_progress",
        },
    );
    // The span ends when its last handle drops: now, not at the end of the request.
    drop(lookup);
    match begun {
        IdempotencyBegin::Started => {}
        IdempotencyBegin::Replay(stored) => return Ok(replay(stored)),
        IdempotencyBegin::Mismatch => return Err(ApiError::IdempotencyKeyReused),
        IdempotencyBegin::InProgress { retry_after } => {
            return Err(ApiError::IdempotencyKeyInProgress { retry_after });
        }
    }
    // From here the key is ours. Every path below completes or releases it; if the request
    // is cancelled mid-way (edge timeout, client gone, shutdown) the guard releases it so the
    // client's retry is not blocked until the lock expires.
    let guard = ReleaseOnCancel {
        store: app.store.clone(),
        key: Some(scoped.clone()),
    };
    let outcome = after_begin(&app, &ctx, &scoped, body.value, started).await;
    guard.disarm();
    outcome
}

/// Releases an in-progress idempotency key when dropped while armed (the request future was
/// cancelled before it could complete or release the key itself).
struct ReleaseOnCancel {
    store: std::sync::Arc<dyn crate::storage::Store>,
    key: Option<String>,
}

impl ReleaseOnCancel {
    fn disarm(mut self) {
        self.key = None;
    }
}

impl Drop for ReleaseOnCancel {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let store = self.store.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    if let Err(e) = store.idempotency_release(&key).await {
                        tracing::warn!(error = %e, "could not release the idempotency key of a cancelled request");
                    }
                });
            }
        }
    }
}

async fn after_begin(
    app: &AppState,
    ctx: &RequestContext,
    scoped: &str,
    body: PlaceOrderBody,
    started: Instant,
) -> Result<Response, ApiError> {
    // Events backpressure: checked after the key so replays of completed requests are still
    // served; nothing was written, so the key is released for the client's retry.
    if let Err(retry_after) = app.events.admit_intake() {
        if let Err(store_err) = db(
            app,
            "idempotency.release",
            app.store.idempotency_release(scoped),
        )
        .await
        {
            tracing::warn!(error = %store_err, "could not release the idempotency key");
        }
        return Err(ApiError::Backpressure { retry_after });
    }

    let result = place_started(app, ctx, scoped, body, started).await;
    match result {
        Ok(response) => Ok(response),
        Err(err) if is_deterministic(&err) => {
            let problem = problem(&err, ctx, "/v1/orders");
            let stored = StoredResponse {
                status: err.spec().status.as_u16(),
                body: serde_json::to_vec(&problem).unwrap_or_default(),
                headers: vec![(
                    header::CONTENT_TYPE.as_str().to_owned(),
                    "application/problem+json".to_owned(),
                )],
            };
            if let Err(store_err) = db(
                app,
                "idempotency.complete",
                app.store.idempotency_complete(scoped, &stored),
            )
            .await
            {
                tracing::warn!(error = %store_err, "could not store the idempotent error response; releasing the key");
                let _ = db(
                    app,
                    "idempotency.release",
                    app.store.idempotency_release(scoped),
                )
                .await;
            }
            Err(err)
        }
        Err(err) => {
            if let Err(store_err) = db(
                app,
                "idempotency.release",
                app.store.idempotency_release(scoped),
            )
            .await
            {
                // The lock expires after idempotency.lock_ttl; retries get 409 until then.
                tracing::warn!(error = %store_err, "could not release the idempotency key");
            }
            Err(err)
        }
    }
}

async fn place_started(
    app: &AppState,
    ctx: &RequestContext,
    scoped_key: &str,
    body: PlaceOrderBody,
    started: Instant,
) -> Result<Response, ApiError> {
    let plugin = app.orders_plugin()?;
    let request = runtime::OrderRequest {
        customer_id: body.customer_id.clone(),
        currency: body.currency.clone(),
        lines: body
            .lines
            .iter()
            .map(|l| runtime::OrderLine {
                sku: l.sku.clone(),
                quantity: l.quantity,
            })
            .collect(),
        metadata: body
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    let deadline = started + app.config.http.request_timeout;
    let priced = app
        .runtime
        .place_order(&plugin, &request, Some(deadline))
        .await?;

    let now = now();
    let order = OrderRecord {
        id: Uuid::now_v7(),
        customer_id: body.customer_id,
        currency: body.currency,
        status: OrderStatus::Placed,
        lines: priced
            .lines
            .iter()
            .map(|l| OrderLineRecord {
                sku: l.sku.clone(),
                quantity: l.quantity,
                unit_price: l.unit_price.amount,
                line_total: l.line_total.amount,
            })
            .collect(),
        subtotal: priced.subtotal.amount,
        discount: priced.discount.amount,
        tax: priced.tax.amount,
        total: priced.total.amount,
        metadata: body
            .metadata
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect(),
        plugin: plugin_ref(&plugin),
        version: 1,
        created_at: now,
        updated_at: now,
    };
    let view = OrderView::from(order.clone());
    let event = order_event(app, request_trace(ctx), "order.placed", &view, now);
    let location = format!("/v1/orders/{}", order.id);
    let body = serde_json::to_vec(&view).map_err(|e| ApiError::Internal(e.to_string()))?;
    let stored = StoredResponse {
        status: 201,
        body: body.clone(),
        headers: vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("location".to_owned(), location.clone()),
        ],
    };
    telemetry::traced(
        telemetry::db_span(app.store.backend(), "transaction.create_order"),
        store_code,
        app.store
            .create_order(&order, &[event], Some((scoped_key, &stored))),
    )
    .await?;

    let mut response = (StatusCode::CREATED, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// A store call as a `db.<operation>` client span (see `telemetry::traced`).
fn db<'a, T: 'a>(
    app: &AppState,
    operation: &'static str,
    call: impl std::future::Future<Output = Result<T, crate::storage::StoreError>> + 'a,
) -> impl std::future::Future<Output = Result<T, crate::storage::StoreError>> + 'a {
    telemetry::traced(
        telemetry::db_span(app.store.backend(), operation),
        store_code,
        call,
    )
}

/// The problem code a store error maps to, for the span that saw it fail.
fn store_code(e: &crate::storage::StoreError) -> &'static str {
    use super::error::codes::{INTERNAL_ERROR, STORAGE_UNAVAILABLE};
    if e.is_transient() {
        STORAGE_UNAVAILABLE.code
    } else {
        INTERNAL_ERROR.code
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
        (status = 200, body = OrderView),
        (status = 400, body = super::context::Problem, content_type = "application/problem+json"),
        (status = 404, body = super::context::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_order(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<OrderView>, ApiError> {
    let id = parse_order_id(&id)?;
    let order = db(&app, "order.get", app.store.get_order(id))
        .await?
        .ok_or_else(|| ApiError::OrderNotFound(id.to_string()))?;
    Ok(Json(order.into()))
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
    State(app): State<AppState>,
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
    let mut orders = app
        .store
        .list_orders(&OrderFilter {
            customer_id: q.customer_id,
            status,
            limit: limit + 1,
            before_id,
        })
        .await?;
    let next_cursor = if orders.len() > limit as usize {
        orders.truncate(limit as usize);
        orders.last().map(|o| encode_cursor(o.id))
    } else {
        None
    };
    Ok(Json(OrderPage {
        items: orders.into_iter().map(OrderView::from).collect(),
        next_cursor,
    }))
}

/// Cancel an order. Idempotent: cancelling a cancelled order returns it unchanged.
#[utoipa::path(
    post, path = "/v1/orders/{id}/cancel", tag = "orders",
    params(("id" = Uuid, Path, description = "Order id")),
    responses(
        (status = 200, body = OrderView),
        (status = 404, body = super::context::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The order can no longer be cancelled", body = super::context::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel_order(
    State(app): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Path(id): Path<String>,
) -> Result<Json<OrderView>, ApiError> {
    let id = parse_order_id(&id)?;
    let deadline = Instant::now() + app.config.http.request_timeout;
    // Optimistic concurrency: a concurrent change makes the update stale; re-read and decide
    // again a bounded number of times.
    for _ in 0..3 {
        let order = db(&app, "order.get", app.store.get_order(id))
            .await?
            .ok_or_else(|| ApiError::OrderNotFound(id.to_string()))?;
        let plugin = app.orders_plugin()?;
        let snapshot = runtime::OrderSnapshot {
            id: order.id.to_string(),
            customer_id: order.customer_id.clone(),
            status: status_to_wit(order.status),
            total: runtime::Money {
                amount: order.total,
                currency: order.currency.clone(),
            },
        };
        let next = status_from_wit(
            app.runtime
                .transition(
                    &plugin,
                    &snapshot,
                    OrderEvent::CancelRequested,
                    Some(deadline),
                )
                .await?,
        );
        if next == order.status {
            return Ok(Json(order.into()));
        }
        let now = now();
        let event = transition_event(&app, request_trace(&ctx), &order, next, now);
        match db(
            &app,
            "transaction.transition_order",
            app.store
                .transition_order(id, order.version, next, &[event], now),
        )
        .await?
        {
            TransitionOutcome::Applied(updated) => return Ok(Json(updated.into())),
            TransitionOutcome::Stale => continue,
        }
    }
    Err(ApiError::Plugin(OrderError::Conflict(
        "the order kept changing concurrently; retry".to_owned(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_hash_ignores_key_order_but_not_values() {
        let a = serde_json::json!({"a": 1, "b": {"x": [1, 2], "y": "z"}});
        let b = serde_json::json!({"b": {"y": "z", "x": [1, 2]}, "a": 1});
        let c = serde_json::json!({"b": {"y": "z", "x": [2, 1]}, "a": 1});
        assert_eq!(request_hash("r", &a), request_hash("r", &b));
        assert_ne!(request_hash("r", &a), request_hash("r", &c));
        assert_ne!(request_hash("r", &a), request_hash("s", &a));
    }

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
