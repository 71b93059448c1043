//! `/v1/products`: the catalog plugins price from.

use axum::Json;
use axum::extract::{Path, State};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, FieldViolation};
use super::extract::JsonBody;
use crate::storage::Product;

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
    /// Units in stock.
    pub stock: i64,
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
            updated_at: p.updated_at,
        }
    }
}

/// The catalog.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProductList {
    /// Products ordered by sku.
    pub items: Vec<ProductView>,
}

/// Body of `PUT /v1/products/{sku}`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PutProductBody {
    /// Display name, 1-200 characters.
    pub name: String,
    /// Price of one unit in minor units, 0 or more.
    pub unit_price: i64,
    /// ISO 4217 code, three upper-case letters.
    pub currency: String,
    /// Units in stock, 0 or more.
    pub stock: i64,
}

/// Whether `sku` is a valid product key.
pub fn valid_sku(sku: &str) -> bool {
    !sku.is_empty()
        && sku.len() <= 64
        && sku
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// List the catalog.
#[utoipa::path(get, path = "/v1/products", tag = "catalog", responses((status = 200, body = ProductList)))]
pub async fn list_products(State(app): State<AppState>) -> Result<Json<ProductList>, ApiError> {
    let items = app.store.list_products().await?;
    Ok(Json(ProductList {
        items: items.into_iter().map(ProductView::from).collect(),
    }))
}

/// Create or replace a product.
#[utoipa::path(
    put, path = "/v1/products/{sku}", tag = "catalog",
    params(("sku" = String, Path, description = "1-64 characters of A-Z, a-z, 0-9, '-' and '_'")),
    request_body = PutProductBody,
    responses(
        (status = 200, body = ProductView),
        (status = 422, body = super::context::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn put_product(
    State(app): State<AppState>,
    Path(sku): Path<String>,
    body: JsonBody<PutProductBody>,
) -> Result<Json<ProductView>, ApiError> {
    if !valid_sku(&sku) {
        return Err(ApiError::InvalidPath {
            name: "sku",
            reason: "must be 1-64 characters of A-Z, a-z, 0-9, '-' and '_'".to_owned(),
        });
    }
    let b = body.value;
    let mut violations = Vec::new();
    let mut violation = |field: &str, code: &str, message: &str| {
        violations.push(FieldViolation {
            field: field.to_owned(),
            code: code.to_owned(),
            message: message.to_owned(),
        })
    };
    if b.name.trim().is_empty() || b.name.chars().count() > 200 {
        violation("name", "INVALID_LENGTH", "must be 1-200 characters");
    }
    if b.unit_price < 0 {
        violation("unit_price", "OUT_OF_RANGE", "must not be negative");
    }
    if b.currency.len() != 3 || !b.currency.bytes().all(|c| c.is_ascii_uppercase()) {
        violation(
            "currency",
            "INVALID_FORMAT",
            "must be an ISO 4217 code like EUR",
        );
    }
    if b.stock < 0 {
        violation("stock", "OUT_OF_RANGE", "must not be negative");
    }
    if !violations.is_empty() {
        return Err(ApiError::ProductInvalid(violations));
    }
    let saved = app
        .store
        .upsert_product(&Product {
            sku,
            name: b.name,
            unit_price: b.unit_price,
            currency: b.currency,
            stock: b.stock,
            updated_at: Utc::now(),
        })
        .await?;
    Ok(Json(saved.into()))
}
