//! The one error taxonomy of the HTTP API and its single mapping to problem responses.
//!
//! Every failure a client can see is an [`ApiError`]. [`ApiError::spec`] is the only place
//! that decides status, stable `code`, class and retryability; [`CATALOG`] lists every code
//! (a test checks it against RUNBOOK.md). `IntoResponse` never logs: it puts the error in the
//! response extensions and the request-context middleware renders the problem body with the
//! request and trace ids and logs it inside the request span.

use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Serialize;

use crate::runtime::{InvokeError, OrderError};
use crate::storage::StoreError;

/// Whether an error is part of normal operation or a sign something is wrong with us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorClass {
    /// Caused by the request or a business rule; logged at info.
    Expected,
    /// A fault of the service or a dependency; logged at error and alerted on.
    Unexpected,
}

/// Fixed facts about one error code.
#[derive(Debug, Clone, Copy)]
pub struct ErrorSpec {
    /// Stable SCREAMING_SNAKE code; never renamed.
    pub code: &'static str,
    /// HTTP status.
    pub status: StatusCode,
    /// Short human title.
    pub title: &'static str,
    /// Expected or unexpected.
    pub class: ErrorClass,
    /// Whether retrying the same request later may succeed.
    pub retryable: bool,
}

macro_rules! specs {
    ($($name:ident = ($code:literal, $status:ident, $class:ident, $retry:literal, $title:literal);)*) => {
        $(
            #[doc = concat!("`", $code, "`: ", $title)]
            pub const $name: ErrorSpec = ErrorSpec {
                code: $code,
                status: StatusCode::$status,
                title: $title,
                class: ErrorClass::$class,
                retryable: $retry,
            };
        )*
        /// Every error code the API can return.
        pub const CATALOG: &[ErrorSpec] = &[$($name),*];
    };
}

/// The error codes.
pub mod codes {
    use super::*;
    specs! {
        MALFORMED_JSON = ("MALFORMED_JSON", BAD_REQUEST, Expected, false, "Request body is not valid JSON");
        UNSUPPORTED_MEDIA_TYPE = ("UNSUPPORTED_MEDIA_TYPE", UNSUPPORTED_MEDIA_TYPE, Expected, false, "Content-Type must be application/json");
        UNKNOWN_FIELD = ("UNKNOWN_FIELD", UNPROCESSABLE_ENTITY, Expected, false, "Request body has fields this API does not know");
        REQUEST_SCHEMA_INVALID = ("REQUEST_SCHEMA_INVALID", UNPROCESSABLE_ENTITY, Expected, false, "Request body does not match the schema");
        PAYLOAD_TOO_LARGE = ("PAYLOAD_TOO_LARGE", PAYLOAD_TOO_LARGE, Expected, false, "Request body is too large");
        INVALID_PATH_PARAMETER = ("INVALID_PATH_PARAMETER", BAD_REQUEST, Expected, false, "A path parameter is malformed");
        INVALID_QUERY_PARAMETER = ("INVALID_QUERY_PARAMETER", BAD_REQUEST, Expected, false, "A query parameter is malformed");
        INVALID_CURSOR = ("INVALID_CURSOR", BAD_REQUEST, Expected, false, "The pagination cursor is not valid");
        ROUTE_NOT_FOUND = ("ROUTE_NOT_FOUND", NOT_FOUND, Expected, false, "No such route");
        METHOD_NOT_ALLOWED = ("METHOD_NOT_ALLOWED", METHOD_NOT_ALLOWED, Expected, false, "Method not allowed on this route");
        IDEMPOTENCY_KEY_MISSING = ("IDEMPOTENCY_KEY_MISSING", BAD_REQUEST, Expected, false, "The Idempotency-Key header is required");
        IDEMPOTENCY_KEY_INVALID = ("IDEMPOTENCY_KEY_INVALID", BAD_REQUEST, Expected, false, "The Idempotency-Key header is malformed");
        IDEMPOTENCY_KEY_REUSED = ("IDEMPOTENCY_KEY_REUSED", UNPROCESSABLE_ENTITY, Expected, false, "Idempotency key was used with a different request");
        IDEMPOTENCY_KEY_IN_PROGRESS = ("IDEMPOTENCY_KEY_IN_PROGRESS", CONFLICT, Expected, true, "A request with this idempotency key is still in progress");
        ORDER_NOT_FOUND = ("ORDER_NOT_FOUND", NOT_FOUND, Expected, false, "Order not found");
        PRODUCT_INVALID = ("PRODUCT_INVALID", UNPROCESSABLE_ENTITY, Expected, false, "Product is invalid");
        ORDER_INVALID = ("ORDER_INVALID", UNPROCESSABLE_ENTITY, Expected, false, "Order request is invalid");
        ORDER_REJECTED = ("ORDER_REJECTED", UNPROCESSABLE_ENTITY, Expected, false, "Order was rejected by a business rule");
        RESOURCE_NOT_FOUND = ("RESOURCE_NOT_FOUND", NOT_FOUND, Expected, false, "A referenced resource does not exist");
        ORDER_CONFLICT = ("ORDER_CONFLICT", CONFLICT, Expected, false, "The request conflicts with the order's current state");
        DEPENDENCY_UNAVAILABLE = ("DEPENDENCY_UNAVAILABLE", SERVICE_UNAVAILABLE, Unexpected, true, "A dependency is unavailable");
        PLUGIN_INTERNAL_ERROR = ("PLUGIN_INTERNAL_ERROR", INTERNAL_SERVER_ERROR, Unexpected, false, "The order plugin failed");
        PLUGIN_TRAPPED = ("PLUGIN_TRAPPED", INTERNAL_SERVER_ERROR, Unexpected, false, "The order plugin crashed");
        PLUGIN_TIMEOUT = ("PLUGIN_TIMEOUT", SERVICE_UNAVAILABLE, Unexpected, true, "The order plugin ran out of time");
        PLUGIN_BUDGET_EXCEEDED = ("PLUGIN_BUDGET_EXCEEDED", INTERNAL_SERVER_ERROR, Unexpected, false, "The order plugin exceeded its resource budget");
        PLUGIN_UNAVAILABLE = ("PLUGIN_UNAVAILABLE", SERVICE_UNAVAILABLE, Unexpected, true, "No order plugin can serve the request right now");
        SHUTTING_DOWN = ("SHUTTING_DOWN", SERVICE_UNAVAILABLE, Expected, true, "The service is shutting down");
        RATE_LIMITED = ("RATE_LIMITED", TOO_MANY_REQUESTS, Expected, true, "Too many requests from this client");
        OVERLOADED = ("OVERLOADED", SERVICE_UNAVAILABLE, Expected, true, "The service is at capacity");
        REQUEST_TIMEOUT = ("REQUEST_TIMEOUT", GATEWAY_TIMEOUT, Unexpected, true, "The request did not finish in time");
        STORAGE_UNAVAILABLE = ("STORAGE_UNAVAILABLE", SERVICE_UNAVAILABLE, Unexpected, true, "The database is unavailable");
        BACKPRESSURE = ("BACKPRESSURE", SERVICE_UNAVAILABLE, Expected, true, "Order intake is paused until the event backlog drains");
        INTERNAL_ERROR = ("INTERNAL_ERROR", INTERNAL_SERVER_ERROR, Unexpected, false, "Internal error");
        ADMIN_DISABLED = ("ADMIN_DISABLED", NOT_FOUND, Expected, false, "Admin endpoints are disabled on this instance");
        ADMIN_UNAUTHORIZED = ("ADMIN_UNAUTHORIZED", UNAUTHORIZED, Expected, false, "A valid admin bearer token is required");
    }
}

/// One field-level problem, in problem bodies of validation errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldViolation {
    /// Path of the field, e.g. `lines[0].quantity`.
    pub field: String,
    /// Stable code, e.g. `OUT_OF_RANGE`.
    pub code: String,
    /// Explanation.
    pub message: String,
}

/// Every error the API returns to a client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Body is not JSON.
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(String),
    /// Wrong or missing content type.
    #[error("expected Content-Type application/json")]
    UnsupportedMediaType,
    /// Fields the schema does not have.
    #[error("unknown fields: {}", .0.iter().map(|v| v.field.as_str()).collect::<Vec<_>>().join(", "))]
    UnknownFields(Vec<FieldViolation>),
    /// JSON of the wrong shape or types.
    #[error("request body does not match the schema: {0}")]
    SchemaInvalid(String),
    /// Body over the limit.
    #[error("request body exceeds {limit} bytes")]
    PayloadTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// Bad path parameter.
    #[error("path parameter {name} is invalid: {reason}")]
    InvalidPath {
        /// Parameter name.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// Bad query string.
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// Undecodable cursor.
    #[error("the cursor is not valid")]
    InvalidCursor,
    /// No route.
    #[error("no route for {0}")]
    RouteNotFound(String),
    /// Method not allowed.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// `Idempotency-Key` missing.
    #[error("the Idempotency-Key header is required")]
    IdempotencyKeyMissing,
    /// `Idempotency-Key` malformed.
    #[error("the Idempotency-Key header must be 1-255 visible ASCII characters")]
    IdempotencyKeyInvalid,
    /// Key reused with another body.
    #[error("this idempotency key was already used with a different request")]
    IdempotencyKeyReused,
    /// Key in use by a running request.
    #[error("a request with this idempotency key is still in progress")]
    IdempotencyKeyInProgress {
        /// When to retry.
        retry_after: Duration,
    },
    /// No such order.
    #[error("order {0} not found")]
    OrderNotFound(String),
    /// Invalid product in a catalog update.
    #[error("product is invalid")]
    ProductInvalid(Vec<FieldViolation>),
    /// The plugin returned a typed error.
    #[error("plugin decided: {0:?}")]
    Plugin(OrderError),
    /// The plugin invocation failed (trap, budget, shutdown, instantiation).
    #[error(transparent)]
    Invoke(InvokeError),
    /// No active plugin version.
    #[error("no active version of plugin {0}")]
    NoPlugin(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bug or unexpected state; detail is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
    /// Order intake is held back: the outbox lag or the consumer backlog is over its
    /// threshold (events backpressure).
    #[error("order intake is paused while the event backlog drains")]
    Backpressure {
        /// When to retry.
        retry_after: Duration,
    },
    /// An admin endpoint was called but no `admin_token` is configured.
    #[error("admin endpoints are disabled: no admin token is configured")]
    AdminDisabled,
    /// An admin endpoint was called without the configured bearer token.
    #[error("missing or wrong admin bearer token")]
    AdminUnauthorized,
    /// The client's rate limit is used up (edge rate-limit policy).
    #[error("rate limit exceeded; retry in {}ms", retry_after.as_millis())]
    RateLimited {
        /// When the next request will be admitted.
        retry_after: Duration,
    },
    /// The global concurrency limit is reached (edge load-shedding policy).
    #[error("concurrency limit reached; request shed")]
    Overloaded,
    /// The route's request timeout elapsed; the handler (and any plugin call) was cancelled.
    #[error("request timed out after {}ms", after.as_millis())]
    RequestTimeout {
        /// The bound that elapsed.
        after: Duration,
    },
}

impl From<InvokeError> for ApiError {
    fn from(e: InvokeError) -> Self {
        match e {
            InvokeError::Guest(g) => ApiError::Plugin(g),
            other => ApiError::Invoke(other),
        }
    }
}

impl ApiError {
    /// The code, status, class and retryability of this error: the single mapping.
    pub fn spec(&self) -> ErrorSpec {
        use codes::*;
        match self {
            Self::MalformedJson(_) => MALFORMED_JSON,
            Self::UnsupportedMediaType => UNSUPPORTED_MEDIA_TYPE,
            Self::UnknownFields(_) => UNKNOWN_FIELD,
            Self::SchemaInvalid(_) => REQUEST_SCHEMA_INVALID,
            Self::PayloadTooLarge { .. } => PAYLOAD_TOO_LARGE,
            Self::InvalidPath { .. } => INVALID_PATH_PARAMETER,
            Self::InvalidQuery(_) => INVALID_QUERY_PARAMETER,
            Self::InvalidCursor => INVALID_CURSOR,
            Self::RouteNotFound(_) => ROUTE_NOT_FOUND,
            Self::MethodNotAllowed => METHOD_NOT_ALLOWED,
            Self::IdempotencyKeyMissing => IDEMPOTENCY_KEY_MISSING,
            Self::IdempotencyKeyInvalid => IDEMPOTENCY_KEY_INVALID,
            Self::IdempotencyKeyReused => IDEMPOTENCY_KEY_REUSED,
            Self::IdempotencyKeyInProgress { .. } => IDEMPOTENCY_KEY_IN_PROGRESS,
            Self::OrderNotFound(_) => ORDER_NOT_FOUND,
            Self::ProductInvalid(_) => PRODUCT_INVALID,
            Self::Plugin(OrderError::Invalid(_)) => ORDER_INVALID,
            Self::Plugin(OrderError::Rejected(_)) => ORDER_REJECTED,
            Self::Plugin(OrderError::NotFound(_)) => RESOURCE_NOT_FOUND,
            Self::Plugin(OrderError::Conflict(_)) => ORDER_CONFLICT,
            Self::Plugin(OrderError::Unavailable(_)) => DEPENDENCY_UNAVAILABLE,
            Self::Plugin(OrderError::Internal(_)) => PLUGIN_INTERNAL_ERROR,
            Self::Invoke(InvokeError::Trap { .. }) => PLUGIN_TRAPPED,
            Self::Invoke(InvokeError::Budget(k)) if k.is_time() => PLUGIN_TIMEOUT,
            Self::Invoke(InvokeError::Budget(_)) => PLUGIN_BUDGET_EXCEEDED,
            Self::Invoke(InvokeError::Interrupted) => SHUTTING_DOWN,
            Self::Invoke(InvokeError::Instantiate { .. } | InvokeError::CircuitOpen { .. })
            | Self::NoPlugin(_) => PLUGIN_UNAVAILABLE,
            // Guest errors are converted to `Plugin` by `From`; this arm only guards misuse.
            Self::Invoke(InvokeError::Guest(_)) => INTERNAL_ERROR,
            Self::Store(e) if e.is_transient() => STORAGE_UNAVAILABLE,
            Self::Store(_) | Self::Internal(_) => INTERNAL_ERROR,
            Self::Backpressure { .. } => BACKPRESSURE,
            Self::AdminDisabled => ADMIN_DISABLED,
            Self::AdminUnauthorized => ADMIN_UNAUTHORIZED,
            Self::RateLimited { .. } => RATE_LIMITED,
            Self::Overloaded => OVERLOADED,
            Self::RequestTimeout { .. } => REQUEST_TIMEOUT,
        }
    }

    /// Seconds a client should wait before retrying, for retryable errors.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::IdempotencyKeyInProgress { retry_after }
            | Self::RateLimited { retry_after }
            | Self::Backpressure { retry_after }
            | Self::Invoke(InvokeError::CircuitOpen { retry_after }) => Some(*retry_after),
            _ if self.spec().retryable => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    /// Client-safe detail. Unexpected (5xx) errors get a generic sentence: the real cause
    /// goes to the span and the log, never to the client.
    pub fn public_detail(&self) -> String {
        let spec = self.spec();
        if spec.status.is_server_error() {
            return match self {
                Self::Invoke(InvokeError::Budget(k)) if k.is_time() => {
                    "The order plugin did not finish within its time budget; retry later.".into()
                }
                Self::Invoke(InvokeError::Budget(k)) => {
                    format!("The order plugin exceeded its {k} budget.")
                }
                Self::Backpressure { .. } => {
                    "New orders are paused while the event backlog drains; retry after the Retry-After delay.".into()
                }
                _ if spec.retryable => "The service cannot handle the request right now; retry later.".into(),
                _ => "The service failed to handle the request. Quote the request_id when reporting it.".into(),
            };
        }
        match self {
            Self::Plugin(OrderError::Invalid(v)) => format!("{} field(s) are invalid", v.len()),
            Self::Plugin(OrderError::Rejected(r)) => r.message.clone(),
            Self::Plugin(OrderError::NotFound(m) | OrderError::Conflict(m)) => m.clone(),
            other => other.to_string(),
        }
    }

    /// Field violations carried by validation errors.
    pub fn violations(&self) -> Option<Vec<FieldViolation>> {
        match self {
            Self::UnknownFields(v) | Self::ProductInvalid(v) => Some(v.clone()),
            Self::Plugin(OrderError::Invalid(v)) => Some(
                v.iter()
                    .map(|v| FieldViolation {
                        field: v.field.clone(),
                        code: v.code.clone(),
                        message: v.message.clone(),
                    })
                    .collect(),
            ),
            _ => None,
        }
    }

    /// The plugin's rejection reason code, for `ORDER_REJECTED`.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Plugin(OrderError::Rejected(r)) => Some(&r.reason),
            _ => None,
        }
    }
}

/// The error as carried in response extensions until the middleware renders it.
#[derive(Debug, Clone)]
pub struct ErrorExtension(pub Arc<ApiError>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let spec = self.spec();
        let mut response = spec.status.into_response();
        response
            .extensions_mut()
            .insert(ErrorExtension(Arc::new(self)));
        response
    }
}
