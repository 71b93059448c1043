//! The public HTTP API: thin handlers that extract the request, call a use-case of the core,
//! and map its result.
//!
//! # Layout
//! - [`error`]: the error taxonomy and its single mapping to status/code/retryability.
//! - [`context`]: request identity, the request span, problem rendering and error logging.
//! - [`edge`]: the inbound stack of edge policies, in the one order that is right.
//! - [`extract`]: extractors whose rejections are problem responses.
//! - [`responses`]: the OpenAPI descriptions of the problem responses routes share.
//! - [`orders`], [`products`], [`events`]: the handlers.

pub mod context;
pub mod edge;
pub mod error;
pub mod events;
pub mod extract;
pub mod orders;
pub mod products;
#[cfg(test)]
mod proptests;
pub mod responses;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;
use weir_core::app::OrderService;

use crate::policy::PolicyConfig;
use crate::support::{InvalidKey, duration_ms, ensure};
use error::ApiError;

/// HTTP edge settings (`[http]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest accepted request body.
    pub body_limit_bytes: usize,
    /// Deadline of one request, plugin call and database work included.
    #[serde(with = "duration_ms", rename = "request_timeout_ms")]
    pub request_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            body_limit_bytes: 64 << 10,
            request_timeout: Duration::from_secs(5),
        }
    }
}

impl HttpConfig {
    /// Check values that parse but cannot work.
    pub fn validate(&self) -> Result<(), InvalidKey> {
        ensure(
            self.body_limit_bytes >= 1024,
            "http.body_limit_bytes",
            "must be at least 1024",
        )?;
        ensure(
            !self.request_timeout.is_zero(),
            "http.request_timeout_ms",
            "must be positive",
        )
    }
}

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct ApiState {
    /// The order use-cases.
    pub orders: OrderService,
    /// The `[http]` settings.
    pub config: Arc<HttpConfig>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The OpenAPI 3.1 description of the public API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Weir orders API",
        description = "Orders decided by sandboxed WebAssembly plugins. Every error is an RFC 9457 problem with a stable `code`."
    ),
    paths(
        orders::place_order,
        orders::get_order,
        orders::list_orders,
        orders::cancel_order,
        products::list_products,
        products::put_product,
        events::list_events,
    ),
    components(schemas(context::Problem, error::FieldViolation))
)]
pub struct ApiDoc;

async fn openapi() -> Response {
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        ApiDoc::openapi().to_pretty_json().unwrap_or_default(),
    )
        .into_response()
}

async fn not_found(req: Request) -> ApiError {
    ApiError::RouteNotFound(req.uri().path().to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The public API router with its edge layers.
pub fn router(state: ApiState, policy: &PolicyConfig) -> Router {
    let config = state.config.clone();
    let routes = Router::new()
        .route(
            "/v1/orders",
            post(orders::place_order).get(orders::list_orders),
        )
        .route("/v1/orders/{id}", get(orders::get_order))
        .route("/v1/orders/{id}/cancel", post(orders::cancel_order))
        .route("/v1/products", get(products::list_products))
        .route("/v1/products/{sku}", put(products::put_product))
        .route("/v1/events", get(events::list_events))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    // The edge stack (request context, metrics, panic catcher, body limit, rate limit, load
    // shedding, timeout) and why each layer sits where it does: `edge::stack`.
    edge::stack(routes, &config, policy)
}
