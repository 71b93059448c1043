//! `/v1/quotes`: price an order through the plugin without placing it.
//!
//! A thin handler over the core's `OrderService::quote_order`: the body is the one of
//! `POST /v1/orders` (same schema, same refusals of malformed JSON and unknown fields), the
//! plugin prices it under the request's deadline, the host's contract checks the pricing, and
//! the answer says per line whether the stock covers it (as the catalog read path has it, at
//! most the catalog cache's lifetime old). Nothing is stored: no
//! order, no event, no reservation, no idempotency record.
//!
//! `Idempotency-Key` is optional and is not an idempotency key here: nothing is claimed,
//! stored or replayed under it (a quote is safe to repeat by itself). When sent (well-formed,
//! as on placing) it only routes the quote: to the plugin version (stable or canary, and the
//! shadow sample) that `POST /v1/orders` with the same key will be routed to, so a client
//! that quotes and then places with one key gets the quoted price from the same version.
//! Without it the quote is routed by the request's content.

use std::time::Instant;

use axum::Json;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use http::{HeaderValue, header};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use weir_core::app::{Quote, QuoteKey, QuoteOrder};
use weir_core::domain::PluginRef;

use super::ApiState;
use super::error::ApiError;
use super::extract::{IdempotencyKey, JsonBody};
use super::orders::{PlaceOrderBody, placing_key};
use super::responses::{EdgeErrors, JsonBodyErrors};
use crate::auth::Principal;

/// Route template of quoting: the scope of the content-based routing key.
const QUOTE_ROUTE: &str = "POST /v1/quotes";

/// One priced line of a quote.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QuoteLine {
    /// Product sku.
    pub sku: String,
    /// Units.
    pub quantity: u32,
    /// Price of one unit, in minor units.
    pub unit_price: i64,
    /// `unit_price * quantity`, in minor units.
    pub line_total: i64,
    /// Whether the units available cover what the request asks of this sku (over all its
    /// lines), as the catalog the plugin priced with has them: at most the catalog cache's
    /// lifetime old (`policy.cache.ttl_ms`, 2 s by default). Nothing is reserved: placing may
    /// still be refused for stock.
    pub available: bool,
}

/// A priced order that was not placed. Amounts are integer minor units of `currency`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QuoteView {
    /// ISO 4217 currency.
    pub currency: String,
    /// Priced lines, in request order.
    pub lines: Vec<QuoteLine>,
    /// Sum of line totals.
    pub subtotal: i64,
    /// Discount applied.
    pub discount: i64,
    /// Tax charged.
    pub tax: i64,
    /// Amount due.
    pub total: i64,
    /// The plugin version that priced it.
    pub plugin: PluginRef,
    /// When the quote was made (RFC 3339, microseconds).
    pub quoted_at: DateTime<Utc>,
}

impl From<Quote> for QuoteView {
    fn from(q: Quote) -> Self {
        let lines = q
            .priced
            .lines
            .into_iter()
            .zip(q.available)
            .map(|(l, available)| QuoteLine {
                sku: l.sku,
                quantity: l.quantity,
                unit_price: l.unit_price.amount,
                line_total: l.line_total.amount,
                available,
            })
            .collect();
        Self {
            currency: q.priced.total.currency,
            lines,
            subtotal: q.priced.subtotal.amount,
            discount: q.priced.discount.amount,
            tax: q.priced.tax.amount,
            total: q.priced.total.amount,
            plugin: q.by,
            quoted_at: q.quoted_at,
        }
    }
}

/// Price an order without placing it: nothing is stored or reserved. Safe to repeat.
#[utoipa::path(
    post, path = "/v1/quotes", tag = "orders",
    request_body = PlaceOrderBody,
    params(("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$", description = "Optional. Not an idempotency key here (nothing is stored under it): the key you will place the order with, so the quote is priced by the plugin version that placing with this key is routed to")),
    responses(
        (status = 200, description = "The priced order, not placed (`Cache-Control: no-store`)", body = QuoteView,
            headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 400, description = "`MALFORMED_JSON` or `IDEMPOTENCY_KEY_INVALID`", body = super::context::Problem, content_type = "application/problem+json"),
        (status = 404, description = "`RESOURCE_NOT_FOUND`: the plugin found no such referenced resource", body = super::context::Problem, content_type = "application/problem+json"),
        (status = 409, description = "`ORDER_CONFLICT`: the plugin refused the request as conflicting", body = super::context::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`REQUEST_SCHEMA_INVALID`, `UNKNOWN_FIELD`, `ORDER_INVALID` (out of the schema's bounds, or a currency the plugin does not accept) or `ORDER_REJECTED` (a business rule: unknown sku, not enough stock): the answers placing gives", body = super::context::Problem, content_type = "application/problem+json"),
        JsonBodyErrors,
        EdgeErrors,
    )
)]
pub async fn quote_order(
    State(api): State<ApiState>,
    Extension(principal): Extension<Principal>,
    key: Option<IdempotencyKey>,
    body: JsonBody<PlaceOrderBody>,
) -> Result<Response, ApiError> {
    let tenant = &*principal.tenant;
    let routing_key = match key {
        // The routing key placing uses for this key.
        Some(IdempotencyKey(key)) => QuoteKey::Placing(placing_key(tenant, &key)),
        None => QuoteKey::Content {
            scope: tenant.to_owned(),
            route: QUOTE_ROUTE,
            body: body.raw,
        },
    };
    let quote = api
        .orders
        .quote_order(QuoteOrder {
            request: body.value.into(),
            deadline: Instant::now() + api.config.request_timeout,
            routing_key,
        })
        .await?;
    let mut response = Json(QuoteView::from(quote)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
