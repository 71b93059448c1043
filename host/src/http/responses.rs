//! OpenAPI descriptions of the problem responses several routes share, written once.
//!
//! Every route lists, in its `#[utoipa::path(responses(...))]`, each status it can return:
//! its own outcomes as tuples, and these groups for the statuses that come from the edge
//! stack or the JSON body extractor rather than from the handler:
//! - [`EdgeErrors`] on every route: `401 UNAUTHENTICATED`, `403 FORBIDDEN`,
//!   `408 REQUEST_BODY_TIMEOUT`, `429 RATE_LIMITED`, `500` (a panic, a store or plugin
//!   fault), `503` (`OVERLOADED`, `SHUTTING_DOWN`, `STORAGE_UNAVAILABLE`, a plugin or
//!   dependency unavailable) and `504 REQUEST_TIMEOUT`.
//! - [`JsonBodyErrors`] on routes with a JSON body: `413 PAYLOAD_TOO_LARGE` and
//!   `415 UNSUPPORTED_MEDIA_TYPE`. (`400 MALFORMED_JSON` and `422` are listed by each route
//!   with its own other reasons for them.)
//!
//! The Schemathesis run (`tests/it/schemathesis.rs`) fails on any status a route returns that
//! its description does not list.

use std::collections::BTreeMap;

use utoipa::IntoResponses;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder, response::Response};

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A response with a problem body and `description`.
pub fn problem(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
        .into()
}

/// Statuses any route can return from the edge stack or a fault (see the module doc).
#[derive(Debug)]
pub struct EdgeErrors;

impl IntoResponses for EdgeErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        BTreeMap::from([
            (
                "401".to_owned(),
                problem(
                    "`UNAUTHENTICATED`: no credential, or one that is malformed, unknown, revoked or expired (`WWW-Authenticate` names the scheme)",
                ),
            ),
            (
                "403".to_owned(),
                problem("`FORBIDDEN`: the credential lacks the scope this route needs"),
            ),
            (
                "408".to_owned(),
                problem(
                    "`REQUEST_BODY_TIMEOUT`: the request body did not arrive within its deadline or minimum rate",
                ),
            ),
            (
                "429".to_owned(),
                problem(
                    "`RATE_LIMITED`: this client's rate limit is used up; retry after `Retry-After` seconds",
                ),
            ),
            (
                "500".to_owned(),
                problem(
                    "An unexpected fault (`INTERNAL_ERROR`, or a plugin fault such as `PLUGIN_TRAPPED`); the detail is logged, not sent",
                ),
            ),
            (
                "503".to_owned(),
                problem(
                    "Temporarily unavailable (`OVERLOADED`, `SHUTTING_DOWN`, `STORAGE_UNAVAILABLE`, `PLUGIN_UNAVAILABLE`, `PLUGIN_BUSY`, `BACKPRESSURE`, ...); retryable, see `Retry-After`",
                ),
            ),
            (
                "504".to_owned(),
                problem(
                    "`REQUEST_TIMEOUT`: the request did not finish within its deadline; retryable",
                ),
            ),
        ])
    }
}

/// Statuses of the JSON body extractor (see the module doc).
#[derive(Debug)]
pub struct JsonBodyErrors;

impl IntoResponses for JsonBodyErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        BTreeMap::from([
            (
                "413".to_owned(),
                problem("`PAYLOAD_TOO_LARGE`: the body is over `http.body_limit_bytes`"),
            ),
            (
                "415".to_owned(),
                problem("`UNSUPPORTED_MEDIA_TYPE`: the body's `Content-Type` is not JSON"),
            ),
        ])
    }
}
