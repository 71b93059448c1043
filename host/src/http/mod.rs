//! The public HTTP API: thin handlers that extract the request, call a use-case of the core,
//! and map its result.
//!
//! # Layout
//! - [`error`]: the error taxonomy and its single mapping to status/code/retryability.
//! - [`context`]: request identity, the request span, problem rendering and error logging.
//! - [`edge`]: the inbound stack of edge policies, in the one order that is right.
//! - [`extract`]: extractors whose rejections are problem responses.
//! - [`responses`]: the OpenAPI descriptions of the problem responses routes share.
//! - [`orders`], [`quotes`], [`products`], [`events`]: the handlers.

pub mod auth;
pub mod context;
pub mod edge;
pub mod error;
pub mod events;
pub mod extract;
pub mod orders;
pub mod products;
#[cfg(test)]
mod proptests;
pub mod quotes;
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
    /// Deadline of one request, plugin call and database work included (the body read is
    /// not: it has its own deadline below and happens before the request takes a slot).
    #[serde(with = "duration_ms", rename = "request_timeout_ms")]
    pub request_timeout: Duration,
    /// Deadline for receiving a whole request body, counted from the end of the head; a body
    /// still incomplete then is answered `408 REQUEST_BODY_TIMEOUT`.
    #[serde(with = "duration_ms", rename = "body_timeout_ms")]
    pub body_timeout: Duration,
    /// Minimum average rate of a request body after `body_min_rate_grace_ms`: a client that
    /// falls below it is answered `408 REQUEST_BODY_TIMEOUT` before the deadline. 0 turns the
    /// rate check off (the deadline still applies).
    pub body_min_bytes_per_sec: u64,
    /// How long a body may arrive at any rate before the minimum rate applies.
    #[serde(with = "duration_ms", rename = "body_min_rate_grace_ms")]
    pub body_min_rate_grace: Duration,
    /// Connection limits of the API listener (`[http.api]`).
    #[serde(deserialize_with = "ListenerLimits::api_table")]
    pub api: ListenerLimits,
    /// Connection limits of the operations listener (`[http.ops]`): separate from the API's,
    /// so health checks and metrics keep answering while the API listener is flooded.
    #[serde(deserialize_with = "ListenerLimits::ops_table")]
    pub ops: ListenerLimits,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            body_limit_bytes: 64 << 10,
            request_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(10),
            body_min_bytes_per_sec: 1024,
            body_min_rate_grace: Duration::from_secs(2),
            api: ListenerLimits::API,
            ops: ListenerLimits::OPS,
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
        )?;
        ensure(
            !self.body_timeout.is_zero(),
            "http.body_timeout_ms",
            "must be positive",
        )?;
        ensure(
            self.body_min_bytes_per_sec == 0 || self.body_min_rate_grace < self.body_timeout,
            "http.body_min_rate_grace_ms",
            "must be shorter than http.body_timeout_ms (or set http.body_min_bytes_per_sec = 0)",
        )?;
        self.api.validate("api")?;
        self.ops.validate("ops")
    }
}

/// Connection limits of one listener (`[http.api]`, `[http.ops]`); what each protects
/// against is in `server::listener`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerLimits {
    /// Connections open at once; one accepted over the cap is closed at once (and counted).
    /// Keep the sum of both listeners' caps below the process's file-descriptor limit.
    pub max_connections: usize,
    /// Deadline for a whole request head (request line and headers). hyper starts it when it
    /// begins waiting for a head, which on a kept-alive connection is right after the
    /// previous response: it also bounds how long such a connection may stay idle.
    #[serde(with = "duration_ms", rename = "header_read_timeout_ms")]
    pub header_read_timeout: Duration,
    /// A connection with no request in progress for this long is closed (keep-alive idle).
    /// At most `header_read_timeout_ms`, which bounds the idle wait anyway.
    #[serde(with = "duration_ms", rename = "idle_timeout_ms")]
    pub idle_timeout: Duration,
    /// Largest request head (request line and headers); a larger one is answered `431` and
    /// the connection closed.
    pub max_header_bytes: usize,
}

/// `[http.api]` or `[http.ops]` as written: every key optional, missing ones take the
/// listener's own defaults.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenerLimitsTable {
    max_connections: Option<usize>,
    header_read_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    max_header_bytes: Option<usize>,
}

impl ListenerLimits {
    /// Defaults of the API listener.
    pub const API: Self = Self {
        max_connections: 4096,
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(5),
        max_header_bytes: 16 << 10,
    };

    /// Defaults of the operations listener: few clients (probes, scrapers, operators).
    pub const OPS: Self = Self {
        max_connections: 256,
        header_read_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        max_header_bytes: 16 << 10,
    };

    fn merged<'de, D: serde::Deserializer<'de>>(d: D, defaults: Self) -> Result<Self, D::Error> {
        let t = ListenerLimitsTable::deserialize(d)?;
        Ok(Self {
            max_connections: t.max_connections.unwrap_or(defaults.max_connections),
            header_read_timeout: t
                .header_read_timeout_ms
                .map_or(defaults.header_read_timeout, Duration::from_millis),
            idle_timeout: t
                .idle_timeout_ms
                .map_or(defaults.idle_timeout, Duration::from_millis),
            max_header_bytes: t.max_header_bytes.unwrap_or(defaults.max_header_bytes),
        })
    }

    fn api_table<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::merged(d, Self::API)
    }

    fn ops_table<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::merged(d, Self::OPS)
    }

    /// Check values that parse but cannot work; `section` (`api` or `ops`) names the keys.
    pub fn validate(&self, section: &'static str) -> Result<(), InvalidKey> {
        let api = section == "api";
        let key =
            |api_key: &'static str, ops_key: &'static str| if api { api_key } else { ops_key };
        ensure(
            self.max_connections > 0,
            key("http.api.max_connections", "http.ops.max_connections"),
            "must be positive",
        )?;
        ensure(
            !self.header_read_timeout.is_zero(),
            key(
                "http.api.header_read_timeout_ms",
                "http.ops.header_read_timeout_ms",
            ),
            "must be positive",
        )?;
        ensure(
            !self.idle_timeout.is_zero() && self.idle_timeout <= self.header_read_timeout,
            key("http.api.idle_timeout_ms", "http.ops.idle_timeout_ms"),
            "must be positive and at most header_read_timeout_ms (hyper's header timer also \
             bounds the idle wait of a kept-alive connection)",
        )?;
        ensure(
            (MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&self.max_header_bytes),
            key("http.api.max_header_bytes", "http.ops.max_header_bytes"),
            "must be between 8192 and 1048576",
        )
    }
}

/// Smallest `max_header_bytes`: hyper's smallest read buffer.
const MIN_HEADER_BYTES: usize = 8192;
/// Largest `max_header_bytes`.
const MAX_HEADER_BYTES: usize = 1 << 20;

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
        quotes::quote_order,
        products::list_products,
        products::put_product,
        events::list_events,
    ),
    components(schemas(context::Problem, error::FieldViolation)),
    modifiers(&Security, &ClosedRequestBodies)
)]
pub struct ApiDoc;

/// Declares the security schemes (an API key or a JWT as a bearer token, or an API key in
/// `X-Api-Key`) and requires one of them on every route (see [`auth`] for which scope each
/// route needs; `401` and `403` are in [`responses::EdgeErrors`]).
struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("weir API key (weir_...) or JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Api-Key"))),
        );
        openapi.security = Some(vec![
            SecurityRequirement::new("bearer", Vec::<String>::new()),
            SecurityRequirement::new("api_key", Vec::<String>::new()),
        ]);
    }
}

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
pub fn router(state: ApiState, policy: &PolicyConfig, auth: auth::AuthLayerState) -> Router {
    let config = state.config.clone();
    let routes = Router::new()
        .route(
            "/v1/orders",
            post(orders::place_order).get(orders::list_orders),
        )
        .route("/v1/orders/{id}", get(orders::get_order))
        .route("/v1/orders/{id}/cancel", post(orders::cancel_order))
        .route("/v1/quotes", post(quotes::quote_order))
        .route("/v1/products", get(products::list_products))
        .route("/v1/products/{sku}", put(products::put_product))
        .route("/v1/events", get(events::list_events))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    // The edge stack (request context, metrics, panic catcher, body limit, authentication,
    // rate limit, body read, load shedding, timeout) and why each layer sits where it does: `edge::stack`.
    edge::stack(routes, &config, policy, auth)
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
