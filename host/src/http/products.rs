//! `/v1/products`: the catalog plugins price from.

use axum::Json;
use axum::extract::{Path, State};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use weir_core::domain::Product;
use weir_core::domain::product::{ProductChange, valid_sku};

use super::ApiState;
use super::error::ApiError;
use super::extract::{JsonBody, QueryParams, json_integer};
use super::responses::{EdgeErrors, JsonBodyErrors};

/// A catalog product.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProductView {
    /// Stock keeping unit.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Price of one unit in minor units of `currency`.
    pub unit_price: i64,
    /// ISO 4217 currency.
    pub currency: String,
    /// Units that can still be ordered: on hand minus reserved, never below zero.
    pub stock: i64,
    /// Units held by placed and paid orders (released when one is cancelled, taken off the
    /// count on hand when it ships).
    pub reserved: i64,
    /// Last change.
    pub updated_at: chrono::DateTime<Utc>,
}

impl From<Product> for ProductView {
    fn from(p: Product) -> Self {
        Self {
            sku: p.sku,
            name: p.name,
            unit_price: p.unit_price,
            currency: p.currency,
            stock: p.stock,
            reserved: p.reserved,
            updated_at: p.updated_at,
        }
    }
}

/// A page of the catalog.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProductList {
    /// Products ordered by sku.
    pub items: Vec<ProductView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Largest page of `GET /v1/products`.
pub const MAX_PRODUCTS_PAGE: u32 = 200;

/// Query of `GET /v1/products`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProductsQuery {
    /// Page size, 1-200 (default 50).
    #[param(minimum = 1, maximum = 200, required = false)]
    pub limit: Option<u32>,
    /// Cursor from a previous page's `next_cursor`.
    #[param(pattern = r"^p1\.[A-Za-z0-9_-]{1,64}$", required = false)]
    pub cursor: Option<String>,
}

/// Cursors are `p1.` and the last sku of the page (skus are already URL-safe): the schema
/// states the form exactly. Pages continue after that sku.
const CURSOR_PREFIX: &str = "p1.";

fn encode_cursor(sku: &str) -> String {
    format!("{CURSOR_PREFIX}{sku}")
}

fn decode_cursor(cursor: &str) -> Result<&str, ApiError> {
    cursor
        .strip_prefix(CURSOR_PREFIX)
        .filter(|sku| valid_sku(sku))
        .ok_or(ApiError::InvalidCursor)
}

/// Body of `PUT /v1/products/{sku}`. Its bounds are exactly what the host checks
/// (`weir_core::domain::product::ProductChange::violations`, `PRODUCT_INVALID`).
#[derive(Debug, Deserialize, ToSchema)]
pub struct PutProductBody {
    /// Display name, 1-200 characters, not only white space.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"\S",
        example = "Keyboard"
    )]
    pub name: String,
    /// Price of one unit in minor units, 0 to 2^53 - 1.
    #[schema(minimum = 0, maximum = 9007199254740991_i64, example = 4900)]
    #[serde(deserialize_with = "json_integer")]
    pub unit_price: i64,
    /// ISO 4217 code, three upper-case letters.
    #[schema(pattern = "^[A-Z]{3}$", example = "EUR")]
    pub currency: String,
    /// Units on hand, 0 to 2^53 - 1, reserved units included: the response's `stock` is this
    /// minus the units placed and paid orders hold, so setting the count never loses a
    /// reservation made concurrently.
    #[schema(minimum = 0, maximum = 9007199254740991_i64, example = 10)]
    #[serde(deserialize_with = "json_integer")]
    pub stock: i64,
}

/// List the catalog, ordered by sku, with cursor pagination.
#[utoipa::path(
    get, path = "/v1/products", tag = "catalog",
    params(ProductsQuery),
    responses(
        (status = 200, description = "A page of the catalog", body = ProductList),
        (status = 400, description = "`INVALID_QUERY_PARAMETER` (unknown parameter, or one out of its bounds) or `INVALID_CURSOR`", body = super::context::Problem, content_type = "application/problem+json"),
        EdgeErrors,
    )
)]
pub async fn list_products(
    State(api): State<ApiState>,
    QueryParams(q): QueryParams<ProductsQuery>,
) -> Result<Json<ProductList>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=MAX_PRODUCTS_PAGE).contains(&limit) {
        return Err(ApiError::InvalidQuery(format!(
            "`limit` must be between 1 and {MAX_PRODUCTS_PAGE}"
        )));
    }
    let after = q.cursor.as_deref().map(decode_cursor).transpose()?;
    let items = api
        .orders
        .list_products(after, limit + 1)
        .await
        .map_err(|e| ApiError::store("listing products", e))?;
    let (items, next_cursor) = super::extract::page(items, limit, |p| encode_cursor(&p.sku));
    Ok(Json(ProductList {
        items: items.into_iter().map(ProductView::from).collect(),
        next_cursor,
    }))
}

/// Create or replace a product. `stock` sets the count on hand; reservations are kept.
#[utoipa::path(
    put, path = "/v1/products/{sku}", tag = "catalog",
    params(("sku" = String, Path, pattern = "^[A-Za-z0-9_-]{1,64}$", description = "1-64 characters of A-Z, a-z, 0-9, '-' and '_'")),
    request_body = PutProductBody,
    responses(
        (status = 200, description = "The product as stored", body = ProductView),
        (status = 400, description = "`INVALID_PATH_PARAMETER` (the sku) or `MALFORMED_JSON`", body = super::context::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`PRODUCT_INVALID`, `REQUEST_SCHEMA_INVALID` or `UNKNOWN_FIELD`", body = super::context::Problem, content_type = "application/problem+json"),
        JsonBodyErrors,
        EdgeErrors,
    )
)]
pub async fn put_product(
    State(api): State<ApiState>,
    Path(sku): Path<String>,
    body: JsonBody<PutProductBody>,
) -> Result<Json<ProductView>, ApiError> {
    let b = body.value;
    let change = ProductChange {
        name: b.name,
        unit_price: b.unit_price,
        currency: b.currency,
        stock: b.stock,
    };
    let saved = api.orders.put_product(&sku, change).await?;
    Ok(Json(saved.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_rejected() {
        assert_eq!(decode_cursor(&encode_cursor("KB-001")).unwrap(), "KB-001");
        for bad in [
            "KB-001",
            "p1.",
            "p1.bad sku",
            "o1.KB-001",
            "p1.KB/001",
            "p2.KB-001",
        ] {
            assert!(
                matches!(decode_cursor(bad), Err(ApiError::InvalidCursor)),
                "{bad:?} was accepted"
            );
        }
        let longest = "A".repeat(64);
        assert!(decode_cursor(&encode_cursor(&longest)).is_ok());
        assert!(decode_cursor(&encode_cursor(&"A".repeat(65))).is_err());
    }
}
