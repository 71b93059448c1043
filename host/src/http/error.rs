//! The one error taxonomy of the HTTP API and its single mapping to problem responses.
//!
//! Every failure a client can see is an [`ApiError`]. [`ApiError::spec`] is the only place
//! that decides status, stable `code`, class and retryability; [`codes::CATALOG`] lists every code
//! (a test checks it against RUNBOOK.md). `IntoResponse` never logs: it puts the error in the
//! response extensions and the request-context middleware renders the problem body with the
//! request and trace ids and logs it inside the request span.

use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Serialize;

use weir_core::app::{PlaceError, ProductError, QuoteError, ReleaseError, TransitionError};
use weir_core::domain::OrderError;
use weir_core::ports::{CatalogError, DecideError, StoreError};

use crate::policy::RejectedBy;
use crate::policy::body_read::BodyRefused;
use crate::policy::http_metrics::Problem;
use crate::policy::load_shed::Shed;
use crate::policy::rate_limit::RateLimited;
use crate::policy::request_timeout::TimedOut;

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
        EVENTS_CURSOR_EXPIRED = ("EVENTS_CURSOR_EXPIRED", GONE, Expected, false, "Events after the cursor were deleted by retention");
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
        PLUGIN_CONTRACT_VIOLATION = ("PLUGIN_CONTRACT_VIOLATION", INTERNAL_SERVER_ERROR, Unexpected, false, "The order plugin's decision broke the host's contract");
        CAPABILITY_DENIED = ("CAPABILITY_DENIED", INTERNAL_SERVER_ERROR, Unexpected, false, "The order plugin called a host capability it did not declare");
        PLUGIN_TIMEOUT = ("PLUGIN_TIMEOUT", SERVICE_UNAVAILABLE, Unexpected, true, "The order plugin ran out of time");
        PLUGIN_BUDGET_EXCEEDED = ("PLUGIN_BUDGET_EXCEEDED", INTERNAL_SERVER_ERROR, Unexpected, false, "The order plugin exceeded its resource budget");
        PLUGIN_UNAVAILABLE = ("PLUGIN_UNAVAILABLE", SERVICE_UNAVAILABLE, Unexpected, true, "No order plugin can serve the request right now");
        PLUGIN_BUSY = ("PLUGIN_BUSY", SERVICE_UNAVAILABLE, Expected, true, "Every plugin instance stayed busy while the request waited for one");
        SHUTTING_DOWN = ("SHUTTING_DOWN", SERVICE_UNAVAILABLE, Expected, true, "The service is shutting down");
        REQUEST_BODY_TIMEOUT = ("REQUEST_BODY_TIMEOUT", REQUEST_TIMEOUT, Expected, true, "The request body did not arrive in time");
        RATE_LIMITED = ("RATE_LIMITED", TOO_MANY_REQUESTS, Expected, true, "Too many requests from this client");
        OVERLOADED = ("OVERLOADED", SERVICE_UNAVAILABLE, Expected, true, "The service is at capacity");
        REQUEST_TIMEOUT = ("REQUEST_TIMEOUT", GATEWAY_TIMEOUT, Unexpected, true, "The request did not finish in time");
        STORAGE_UNAVAILABLE = ("STORAGE_UNAVAILABLE", SERVICE_UNAVAILABLE, Unexpected, true, "The database is unavailable");
        BACKPRESSURE = ("BACKPRESSURE", SERVICE_UNAVAILABLE, Expected, true, "Order intake is paused until the event backlog drains");
        INTERNAL_ERROR = ("INTERNAL_ERROR", INTERNAL_SERVER_ERROR, Unexpected, false, "Internal error");
        ADMIN_DISABLED = ("ADMIN_DISABLED", NOT_FOUND, Expected, false, "Admin endpoints are disabled on this instance");
        ADMIN_UNAUTHORIZED = ("ADMIN_UNAUTHORIZED", UNAUTHORIZED, Expected, false, "A valid admin bearer token is required");
        PLUGIN_REJECTED = ("PLUGIN_REJECTED", UNPROCESSABLE_ENTITY, Expected, false, "The component was refused at admission");
        PLUGIN_TOO_LARGE = ("PLUGIN_TOO_LARGE", PAYLOAD_TOO_LARGE, Expected, false, "The component is larger than the upload limit");
        PLUGIN_NOT_FOUND = ("PLUGIN_NOT_FOUND", NOT_FOUND, Expected, false, "No such plugin");
        RELEASE_CONFLICT = ("RELEASE_CONFLICT", CONFLICT, Expected, false, "The release changed since it was read");
        RELEASE_INVALID = ("RELEASE_INVALID", UNPROCESSABLE_ENTITY, Expected, false, "The release change is not allowed");
        ADMISSION_BUSY = ("ADMISSION_BUSY", SERVICE_UNAVAILABLE, Expected, true, "Another component is being admitted");
        UNAUTHENTICATED = ("UNAUTHENTICATED", UNAUTHORIZED, Expected, false, "A valid credential is required");
        FORBIDDEN = ("FORBIDDEN", FORBIDDEN, Expected, false, "The credential lacks the scope this route needs");
        API_KEY_INVALID = ("API_KEY_INVALID", UNPROCESSABLE_ENTITY, Expected, false, "The API key request is invalid");
        API_KEY_NOT_FOUND = ("API_KEY_NOT_FOUND", NOT_FOUND, Expected, false, "No API key with that id");
        AUTHENTICATION_UNAVAILABLE = ("AUTHENTICATION_UNAVAILABLE", SERVICE_UNAVAILABLE, Unexpected, true, "The credential could not be checked right now");
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
    /// The events feed cursor lies below events retention deleted.
    #[error(
        "events up to seq {purged_through} were deleted by retention: the reader may have \
         missed some; continue with after={purged_through} to skip them knowingly"
    )]
    EventsCursorExpired {
        /// The highest seq of the tenant deleted so far.
        purged_through: i64,
    },
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
    #[error("plugin decided: {0}")]
    Plugin(OrderError),
    /// The plugin could not decide (trap, budget, shutdown, no version, breaker open).
    #[error(transparent)]
    Decide(DecideError),
    /// The store failed: a [`StoreError`] with the context of what the request was doing.
    #[error(transparent)]
    Store(anyhow::Error),
    /// The catalog read path failed: a quote's availability read, after the plugin priced.
    #[error("reading the catalog for a quote: {0}")]
    Catalog(CatalogError),
    /// A bug or unexpected state; the chain is logged, never sent.
    #[error(transparent)]
    Internal(anyhow::Error),
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
    /// An uploaded component was refused at admission `stage`.
    #[error("refused at the {stage} stage: {detail}")]
    PluginRejected {
        /// `decode`, `compile`, `imports`, `contract`, `world`, `describe` or `policy`.
        stage: &'static str,
        /// Why (bounded; the operator's own upload).
        detail: String,
        /// The precise differences of a `contract` (or `world`) refusal, bounded.
        contract: Option<Box<crate::world::contract::ContractReport>>,
    },
    /// An uploaded component is over the upload limit.
    #[error("the component is larger than {limit} bytes")]
    PluginTooLarge {
        /// `plugins.releases.upload_limit_bytes`.
        limit: usize,
    },
    /// No plugin (or no release of it) by that name.
    #[error("plugin {0} not found")]
    PluginNotFound(String),
    /// A release change based on a stale generation.
    #[error("the release of {name} is at generation {current}, not {expected}; read it again")]
    ReleaseConflict {
        /// Plugin name.
        name: String,
        /// The generation the caller sent.
        expected: i64,
        /// The generation stored.
        current: i64,
    },
    /// A release change that breaks a rule.
    #[error("{0}")]
    ReleaseInvalid(String),
    /// Another admission is running on this instance.
    #[error("another component is being admitted on this instance")]
    AdmissionBusy,
    /// No credential, or one that is malformed, unknown, revoked, expired or of the wrong kind.
    #[error("{0}")]
    Unauthenticated(crate::auth::AuthError),
    /// The principal lacks the scope the route needs.
    #[error("this route needs the {scope} scope")]
    Forbidden {
        /// The missing scope.
        scope: crate::auth::Scope,
    },
    /// An API key creation request breaks the rules listed (admin API).
    #[error("the API key request is invalid")]
    ApiKeyInvalid(Vec<FieldViolation>),
    /// No API key with this id (admin API).
    #[error("API key {0} not found")]
    ApiKeyNotFound(String),
    /// The credential could not be checked (API key store or JWKS unavailable).
    #[error("{0}")]
    AuthUnavailable(String),
    /// The client's rate limit is used up (edge rate-limit policy).
    #[error("rate limit exceeded; retry in {}ms", retry_after.as_millis())]
    RateLimited {
        /// When the next request will be admitted.
        retry_after: Duration,
    },
    /// The request body did not arrive by its deadline or fell below the minimum rate (edge
    /// body-read policy); the rest of it is not read and the connection is closed.
    #[error("{0}")]
    RequestBodyTimeout(BodyRefused),
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

impl From<DecideError> for ApiError {
    fn from(e: DecideError) -> Self {
        match e {
            DecideError::Refused(g) => ApiError::Plugin(g),
            other => ApiError::Decide(other),
        }
    }
}

impl ApiError {
    /// A store failure while doing `what` (the context in the logged chain).
    pub fn store(what: &'static str, e: StoreError) -> Self {
        ApiError::Store(anyhow::Error::new(e).context(what))
    }
}

impl From<PlaceError> for ApiError {
    fn from(e: PlaceError) -> Self {
        match e {
            PlaceError::KeyReused => ApiError::IdempotencyKeyReused,
            PlaceError::KeyInProgress { retry_after } => {
                ApiError::IdempotencyKeyInProgress { retry_after }
            }
            PlaceError::Backpressure { retry_after } => ApiError::Backpressure { retry_after },
            PlaceError::Decide(d) => d.into(),
            PlaceError::Refused(g) => ApiError::Plugin(g),
            PlaceError::Store { step, source } => ApiError::Store(
                anyhow::Error::new(source)
                    .context(step)
                    .context("placing an order"),
            ),
        }
    }
}

impl From<QuoteError> for ApiError {
    fn from(e: QuoteError) -> Self {
        match e {
            QuoteError::Decide(d) => d.into(),
            QuoteError::Catalog(source) => ApiError::Catalog(source),
        }
    }
}

impl From<TransitionError> for ApiError {
    fn from(e: TransitionError) -> Self {
        match e {
            TransitionError::NotFound(id) => ApiError::OrderNotFound(id.to_string()),
            TransitionError::Decide { source, .. } => source.into(),
            TransitionError::Store { step, source } => ApiError::Store(
                anyhow::Error::new(source)
                    .context(step)
                    .context("applying a transition"),
            ),
            TransitionError::KeptChanging => ApiError::Plugin(OrderError::Conflict(
                "the order kept changing concurrently; retry".to_owned(),
            )),
            // Only messages carry payments; no route can get here.
            e @ TransitionError::PaymentMismatch { .. } => {
                ApiError::Internal(anyhow::Error::new(e))
            }
        }
    }
}

impl From<ProductError> for ApiError {
    fn from(e: ProductError) -> Self {
        match e {
            ProductError::InvalidSku => ApiError::InvalidPath {
                name: "sku",
                reason: "must be 1-64 characters of A-Z, a-z, 0-9, '-' and '_'".to_owned(),
            },
            ProductError::Invalid(v) => ApiError::ProductInvalid(
                v.into_iter()
                    .map(|v| FieldViolation {
                        field: v.field,
                        code: v.code,
                        message: v.message,
                    })
                    .collect(),
            ),
            ProductError::Store(e) => ApiError::store("writing the product", e),
        }
    }
}

impl From<ReleaseError> for ApiError {
    fn from(e: ReleaseError) -> Self {
        match e {
            ReleaseError::NotFound(name) => ApiError::PluginNotFound(name),
            ReleaseError::Stale {
                name,
                expected,
                current,
            } => ApiError::ReleaseConflict {
                name,
                expected,
                current,
            },
            ReleaseError::Invalid(m) => ApiError::ReleaseInvalid(m),
            e @ ReleaseError::VersionTaken { .. } => ApiError::PluginRejected {
                stage: "policy",
                detail: e.to_string(),
                contract: None,
            },
            ReleaseError::Store { step, source } => {
                ApiError::Store(anyhow::Error::new(source).context(step))
            }
        }
    }
}

impl From<RateLimited> for ApiError {
    fn from(e: RateLimited) -> Self {
        ApiError::RateLimited {
            retry_after: e.retry_after,
        }
    }
}

impl From<BodyRefused> for ApiError {
    fn from(e: BodyRefused) -> Self {
        match e {
            BodyRefused::TooLarge { limit } => ApiError::PayloadTooLarge { limit },
            // A body that ended early or broke its framing is not a valid JSON body.
            BodyRefused::Incomplete(_) => ApiError::MalformedJson(e.to_string()),
            slow @ (BodyRefused::TimedOut { .. } | BodyRefused::TooSlow { .. }) => {
                ApiError::RequestBodyTimeout(slow)
            }
        }
    }
}

impl From<Shed> for ApiError {
    fn from(_: Shed) -> Self {
        ApiError::Overloaded
    }
}

impl From<TimedOut> for ApiError {
    fn from(e: TimedOut) -> Self {
        ApiError::RequestTimeout { after: e.after }
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
            Self::EventsCursorExpired { .. } => EVENTS_CURSOR_EXPIRED,
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
            Self::Decide(DecideError::Trap { .. }) => PLUGIN_TRAPPED,
            Self::Decide(DecideError::Contract(_)) => PLUGIN_CONTRACT_VIOLATION,
            Self::Decide(DecideError::CapabilityDenied { .. }) => CAPABILITY_DENIED,
            Self::Decide(DecideError::Budget(k)) if k.is_time() => PLUGIN_TIMEOUT,
            Self::Decide(DecideError::Budget(_)) => PLUGIN_BUDGET_EXCEEDED,
            Self::Decide(DecideError::Interrupted) => SHUTTING_DOWN,
            Self::Decide(DecideError::PoolExhausted { .. }) => PLUGIN_BUSY,
            Self::Decide(
                DecideError::Instantiate { .. }
                | DecideError::CircuitOpen { .. }
                | DecideError::NoPlugin(_),
            ) => PLUGIN_UNAVAILABLE,
            // Refusals are converted to `Plugin` by `From`; this arm only guards misuse.
            Self::Decide(DecideError::Refused(_)) => INTERNAL_ERROR,
            Self::Store(e)
                if e.downcast_ref::<StoreError>()
                    .is_some_and(StoreError::is_transient) =>
            {
                STORAGE_UNAVAILABLE
            }
            Self::Catalog(CatalogError::Timeout | CatalogError::Unavailable(_)) => {
                DEPENDENCY_UNAVAILABLE
            }
            Self::Store(_) | Self::Internal(_) | Self::Catalog(CatalogError::Internal(_)) => {
                INTERNAL_ERROR
            }
            Self::Backpressure { .. } => BACKPRESSURE,
            Self::AdminDisabled => ADMIN_DISABLED,
            Self::AdminUnauthorized => ADMIN_UNAUTHORIZED,
            Self::PluginRejected { .. } => PLUGIN_REJECTED,
            Self::PluginTooLarge { .. } => PLUGIN_TOO_LARGE,
            Self::PluginNotFound(_) => PLUGIN_NOT_FOUND,
            Self::ReleaseConflict { .. } => RELEASE_CONFLICT,
            Self::ReleaseInvalid(_) => RELEASE_INVALID,
            Self::AdmissionBusy => ADMISSION_BUSY,
            Self::Unauthenticated(_) => UNAUTHENTICATED,
            Self::Forbidden { .. } => FORBIDDEN,
            Self::AuthUnavailable(_) => AUTHENTICATION_UNAVAILABLE,
            Self::ApiKeyInvalid(_) => API_KEY_INVALID,
            Self::ApiKeyNotFound(_) => API_KEY_NOT_FOUND,
            Self::RateLimited { .. } => RATE_LIMITED,
            Self::RequestBodyTimeout(_) => REQUEST_BODY_TIMEOUT,
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
            | Self::Decide(
                DecideError::CircuitOpen { retry_after }
                | DecideError::PoolExhausted { retry_after, .. },
            ) => Some(*retry_after),
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
                Self::Decide(DecideError::Budget(k)) if k.is_time() => {
                    "The order plugin did not finish within its time budget; retry later.".into()
                }
                Self::Decide(DecideError::Budget(k)) => {
                    format!("The order plugin exceeded its {k} budget.")
                }
                Self::Decide(DecideError::PoolExhausted { .. }) => {
                    "Every order plugin instance is busy; retry after the Retry-After delay.".into()
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
            Self::UnknownFields(v) | Self::ProductInvalid(v) | Self::ApiKeyInvalid(v) => {
                Some(v.clone())
            }
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

    /// The contract report of a `PLUGIN_REJECTED` at the `contract` (or `world`) stage.
    pub fn contract(&self) -> Option<&crate::world::contract::ContractReport> {
        match self {
            Self::PluginRejected { contract, .. } => contract.as_deref(),
            _ => None,
        }
    }

    /// The admission stage that refused an upload (`PLUGIN_REJECTED`, `PLUGIN_TOO_LARGE`).
    pub fn stage(&self) -> Option<&'static str> {
        match self {
            Self::PluginRejected { stage, .. } => Some(stage),
            Self::PluginTooLarge { .. } => Some("size"),
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
        if matches!(self, ApiError::PayloadTooLarge { .. }) {
            // Counted with the edge policies' refusals (`policy::http_metrics`).
            response.extensions_mut().insert(RejectedBy("body_limit"));
        }
        response
            .extensions_mut()
            .insert(ErrorExtension(Arc::new(self)));
        response
    }
}

/// The API error of a policy refusal left in `response`'s extensions by an edge policy
/// (see [`crate::policy::refusal`]), if any; removes it.
pub fn take_policy_refusal(response: &mut Response) -> Option<ApiError> {
    let refusal = policy_refusal(response.extensions());
    let ext = response.extensions_mut();
    ext.remove::<RateLimited>();
    ext.remove::<BodyRefused>();
    ext.remove::<Shed>();
    ext.remove::<TimedOut>();
    refusal
}

/// The one list of edge-policy refusals and their API errors, read without removing them.
fn policy_refusal(ext: &axum::http::Extensions) -> Option<ApiError> {
    if let Some(e) = ext.get::<RateLimited>() {
        return Some((*e).into());
    }
    if let Some(e) = ext.get::<BodyRefused>() {
        return Some(e.clone().into());
    }
    if let Some(e) = ext.get::<Shed>() {
        return Some((*e).into());
    }
    ext.get::<TimedOut>().map(|e| ApiError::from(*e))
}

/// The problem of a response not rendered yet (the [`ApiError`] a handler left, or an edge
/// policy's refusal, as [`take_policy_refusal`] would take it) without removing it: what
/// `weir.http.server.errors` counts (`policy::http_metrics`). Its code is the error's
/// [`ErrorSpec::code`], so always a member of [`codes::CATALOG`]: a bounded label.
pub fn problem_of(response: &Response) -> Option<Problem> {
    let ext = response.extensions();
    let spec = if let Some(ErrorExtension(err)) = ext.get::<ErrorExtension>() {
        err.spec()
    } else {
        policy_refusal(ext)?.spec()
    };
    Some(Problem {
        code: spec.code,
        unexpected: spec.class == ErrorClass::Unexpected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every problem the metrics layer can see carries its catalog code (a bounded label),
    /// read without consuming what the request-context middleware renders afterwards.
    #[test]
    fn problem_of_reads_catalog_codes_from_errors_and_refusals_without_taking_them() {
        let catalog: Vec<&str> = codes::CATALOG.iter().map(|s| s.code).collect();
        let mut responses = vec![
            (
                ApiError::OrderNotFound("ord_1".into()).into_response(),
                "ORDER_NOT_FOUND",
                false,
            ),
            (
                ApiError::Internal(anyhow::anyhow!("boom")).into_response(),
                "INTERNAL_ERROR",
                true,
            ),
            (
                crate::policy::refusal(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit",
                    RateLimited {
                        retry_after: Duration::from_secs(1),
                    },
                ),
                "RATE_LIMITED",
                false,
            ),
            (
                crate::policy::refusal(StatusCode::SERVICE_UNAVAILABLE, "shed", Shed),
                "OVERLOADED",
                false,
            ),
            (
                crate::policy::refusal(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    TimedOut {
                        after: Duration::from_secs(1),
                    },
                ),
                "REQUEST_TIMEOUT",
                true,
            ),
        ];
        for (response, code, unexpected) in &mut responses {
            let problem = problem_of(response).expect("a problem");
            assert_eq!((problem.code, problem.unexpected), (*code, *unexpected));
            assert!(catalog.contains(&problem.code));
            // Still there for the middleware to render.
            assert!(
                response.extensions().get::<ErrorExtension>().is_some()
                    || take_policy_refusal(response).is_some()
            );
        }
        assert_eq!(problem_of(&StatusCode::OK.into_response()), None);
    }

    #[test]
    fn store_errors_map_by_their_class_through_the_context() {
        let transient = ApiError::store(
            "reading the order",
            StoreError::Unavailable(weir_core::ports::DriverError::new(std::io::Error::other(
                "pool timed out",
            ))),
        );
        assert_eq!(transient.spec().code, "STORAGE_UNAVAILABLE");
        assert_eq!(
            crate::support::chain(&transient),
            "reading the order: database unavailable: pool timed out"
        );
        let corrupt = ApiError::store("reading the order", StoreError::Corrupt("bad".into()));
        assert_eq!(corrupt.spec().code, "INTERNAL_ERROR");
        // The traced store labels its spans with the same codes.
        for e in [
            StoreError::Conflict("x".into()),
            StoreError::Unavailable(weir_core::ports::DriverError::new(std::io::Error::other(
                "x",
            ))),
        ] {
            let code = crate::storage::traced::error_code(&e);
            assert_eq!(ApiError::store("x", e).spec().code, code);
        }
    }

    /// A quote whose availability read fails: a lookup that may succeed on retry is a 503
    /// the client may retry, a permanent failure an internal error.
    #[test]
    fn a_quotes_catalog_failure_maps_by_its_kind() {
        for (e, code, status) in [
            (
                CatalogError::Timeout,
                "DEPENDENCY_UNAVAILABLE",
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                CatalogError::Unavailable("down".into()),
                "DEPENDENCY_UNAVAILABLE",
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                CatalogError::Internal("bad row".into()),
                "INTERNAL_ERROR",
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ] {
            let err = ApiError::from(QuoteError::Catalog(e));
            assert_eq!((err.spec().code, err.spec().status), (code, status));
            assert_eq!(
                err.retry_after().is_some(),
                status == StatusCode::SERVICE_UNAVAILABLE
            );
        }
    }
}
