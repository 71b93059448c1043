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
    components(schemas(context::Problem, error::FieldViolation)),
    modifiers(&ClosedRequestBodies)
)]
pub struct ApiDoc;

/// Request bodies whose unknown fields [`extract::JsonBody`] refuses (`UNKNOWN_FIELD`).
const REQUEST_BODY_SCHEMAS: [&str; 3] = ["PlaceOrderBody", "LineBody", "PutProductBody"];

/// Marks the request body schemas `additionalProperties: false`: the extractor refuses
/// unknown fields itself (listing all of them), so the Rust types cannot carry serde's
/// `deny_unknown_fields`, which is what utoipa would read.
struct ClosedRequestBodies;

impl utoipa::Modify for ClosedRequestBodies {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::schema::{AdditionalProperties, Schema};
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        for name in REQUEST_BODY_SCHEMAS {
            if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(name) {
                object.additional_properties =
                    Some(Box::new(AdditionalProperties::FreeForm(false)));
            }
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn operations() -> Vec<(String, String, serde_json::Value)> {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let mut ops = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                ops.push((method.clone(), path.clone(), op.clone()));
            }
        }
        ops
    }

    fn param<'a>(op: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
        op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no parameter {name}"))
    }

    #[test]
    fn every_operation_documents_the_statuses_the_edge_and_extractors_return() {
        for (method, path, op) in operations() {
            let responses = op["responses"].as_object().unwrap();
            let mut want = vec!["429", "500", "503", "504"];
            if op.get("requestBody").is_some() {
                want.extend(["400", "413", "415", "422"]);
            }
            if path.contains('{') {
                want.push("400");
            }
            for status in want {
                let r = &responses
                    .get(status)
                    .unwrap_or_else(|| panic!("{method} {path} does not document {status}"));
                assert!(
                    r["content"]["application/problem+json"].is_object(),
                    "{method} {path} {status} is not a problem"
                );
            }
        }
    }

    #[test]
    fn request_bodies_refuse_unknown_fields_in_the_schema_too() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        for name in REQUEST_BODY_SCHEMAS {
            assert_eq!(
                doc["components"]["schemas"][name]["additionalProperties"], false,
                "{name}"
            );
        }
    }

    #[test]
    fn documented_limits_are_the_enforced_ones() {
        let ops = operations();
        let op = |m: &str, p: &str| {
            ops.iter()
                .find(|(method, path, _)| method == m && path == p)
                .map(|(_, _, op)| op)
                .unwrap()
        };
        let limit = param(op("get", "/v1/orders"), "limit");
        assert_eq!(limit["schema"]["maximum"], orders::MAX_LIST_LIMIT);
        assert_eq!(limit["schema"]["minimum"], 1);
        let limit = param(op("get", "/v1/events"), "limit");
        assert_eq!(
            limit["schema"]["maximum"],
            weir_core::ports::store::MAX_EVENTS_LIMIT
        );
        assert_eq!(
            param(op("get", "/v1/events"), "after")["schema"]["minimum"],
            0
        );
        let sku = param(op("put", "/v1/products/{sku}"), "sku");
        assert_eq!(sku["schema"]["pattern"], "^[A-Za-z0-9_-]{1,64}$");
        assert_eq!(
            weir_core::domain::product::MAX_SKU_LEN,
            64,
            "the sku pattern states the core's bound"
        );
    }
}
