//! The public HTTP API.
//!
//! # Layout
//! - [`error`]: the error taxonomy and its single mapping to status/code/retryability.
//! - [`context`]: request identity, the request span, problem rendering and error logging.
//! - [`extract`]: extractors whose rejections are problem responses.
//! - [`orders`], [`products`], [`events`]: the handlers.

pub mod context;
pub mod error;
pub mod events;
pub mod extract;
pub mod orders;
pub mod products;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use utoipa::OpenApi;

use crate::config::Config;
use crate::runtime::{PluginVersion, Registry, Runtime};
use crate::storage::Store;
use error::ApiError;

/// Shared state of all handlers.
#[derive(Clone)]
pub struct AppState {
    /// Orders, products, idempotency records and the outbox.
    pub store: Arc<dyn Store>,
    /// The plugin engine.
    pub runtime: Runtime,
    /// Loaded plugin versions and active slots.
    pub registry: Arc<Registry>,
    /// Validated configuration.
    pub config: Arc<Config>,
    /// CloudEvents `source` of events this host produces.
    pub event_source: String,
    /// The broker path (relay, consumer, backpressure), or the embedded default.
    pub events: crate::events::EventsHandle,
    /// Outbound dependencies: breakers (readiness) and fault hooks (tests, drills).
    pub deps: Arc<crate::policy::dependency::Dependencies>,
    /// Readiness latches (draining, in rotation), in-flight requests, background workers.
    pub shutdown: crate::shutdown::Shutdown,
}

impl AppState {
    /// The plugin version that should serve the next orders call.
    pub fn orders_plugin(&self) -> Result<Arc<PluginVersion>, ApiError> {
        let name = &self.config.plugins.orders;
        self.registry
            .pick(name)
            .ok_or_else(|| ApiError::NoPlugin(name.clone()))
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
pub fn router(state: AppState) -> Router {
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
        .with_state(state.clone());
    // The edge stack (request context, metrics, panic catcher, body limit, rate limit, load
    // shedding, timeout) and why each layer sits where it does: `policy::edge`.
    crate::policy::edge(routes, &state.config)
}
