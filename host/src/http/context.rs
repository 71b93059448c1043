//! Request identity and problem rendering.
//!
//! [`request_context`] is the middleware that gives every request its [`RequestContext`]
//! (request id accepted from `X-Request-Id` or assigned, see [`accept_request_id`]), opens the
//! `http.server` root span whose parent is the W3C trace context extracted from
//! `traceparent`/`tracestate` (so the caller's trace id is continued; whether the caller's
//! sampled flag is honoured is the sampler's decision, `telemetry.sampling.trust_incoming`,
//! see [`crate::telemetry::sampling`]), and turns an [`ApiError`] left in the
//! response extensions (or an edge policy's refusal) into an RFC 9457
//! `application/problem+json` body whose `trace_id` is the exported span's. It is the only
//! place request errors are logged: one line with the code and the full error chain
//! (`context: cause: root cause`). An unexpected error detected here (not inside the plugin
//! runtime or a store call, whose spans record their own) is recorded on the root span as an
//! `exception` event with its code and error chain; the client gets a generic detail.

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderValue, header};
use serde::Serialize;
use tracing::{Instrument, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::error::{ApiError, ErrorClass, ErrorExtension, FieldViolation, take_policy_refusal};
use crate::support::chain;

/// Header carrying the request id in both directions.
pub const REQUEST_ID: &str = "x-request-id";

/// Identity of the request being served.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// Accepted from the client or generated.
    pub request_id: String,
    /// W3C trace id (32 lower-case hex digits): the exported trace's id.
    pub trace_id: String,
    /// W3C `traceparent` of the `http.server` span (the incoming one when telemetry is not
    /// installed), carried into outbox rows so the relay continues the trace.
    pub traceparent: Option<String>,
    /// W3C `tracestate` to carry with `traceparent`.
    pub tracestate: Option<String>,
}

/// Longest client-chosen request id accepted, in bytes.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// Span (and log) attribute holding [`original_id_hash`] of a refused `X-Request-Id`.
pub const ORIGINAL_ID_HASH: &str = "http.request.original_id_hash";

/// Whether a client-sent request id is accepted as it is: 1-64 bytes of `A-Z a-z 0-9 . _ -`.
/// Anything else (longer, empty, spaces, quotes, control or non-ASCII characters) could
/// forge log fields, break a log pipeline's parser or flood it, so it is never echoed.
pub fn valid_request_id(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= MAX_REQUEST_ID_LEN
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The hash recorded instead of a refused request id: the first 16 bytes of its SHA-256,
/// in lower-case hex (32 digits). Lets an operator match a client's report ("I sent id X")
/// against the logs by hashing X, without the raw value ever reaching a log line or span.
pub fn original_id_hash(raw: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(&sha2::Sha256::digest(raw)[..16])
}

/// The request id of a request: the client's `X-Request-Id` when [`valid_request_id`], else
/// a generated one (32 hex digits) and, when the client sent something, the
/// [`original_id_hash`] of what it sent.
pub fn accept_request_id(headers: &http::HeaderMap) -> (String, Option<String>) {
    match headers.get(REQUEST_ID).map(HeaderValue::as_bytes) {
        Some(raw) if valid_request_id(raw) => (String::from_utf8_lossy(raw).into_owned(), None),
        sent => (
            uuid::Uuid::new_v4().simple().to_string(),
            sent.map(original_id_hash),
        ),
    }
}

/// The trace id of a valid W3C `traceparent` (see [`crate::telemetry::parse_traceparent`]).
pub fn trace_id_from_traceparent(tp: &str) -> Option<String> {
    crate::telemetry::parse_traceparent(tp).map(|(trace_id, _)| trace_id.to_owned())
}

/// RFC 9457 problem body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// URI identifying the problem type.
    #[serde(rename = "type")]
    pub type_: String,
    /// Short summary of the problem type.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// Explanation of this occurrence, safe to show.
    pub detail: String,
    /// Stable machine-readable code.
    pub code: String,
    /// The request's id.
    pub request_id: String,
    /// The W3C trace id of the request.
    pub trace_id: String,
    /// Whether retrying later may succeed.
    pub retryable: bool,
    /// The request path.
    pub instance: String,
    /// Field violations of validation errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub violations: Option<Vec<FieldViolation>>,
    /// Plugin rejection reason code (`ORDER_REJECTED`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The admission stage that refused an uploaded component (`PLUGIN_REJECTED`,
    /// `PLUGIN_TOO_LARGE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// What differs from the `weir:orders` contract, for a `PLUGIN_REJECTED` at the
    /// `contract` (or `world`) stage: the accepted versions and the typed mismatches
    /// (at most 32, `omitted` counts the rest).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub contract: Option<crate::world::contract::ContractReport>,
}

/// Build the problem body for `err`.
pub fn problem(err: &ApiError, ctx: &RequestContext, instance: &str) -> Problem {
    let spec = err.spec();
    Problem {
        type_: format!(
            "urn:weir:problem:{}",
            spec.code.to_ascii_lowercase().replace('_', "-")
        ),
        title: spec.title.to_owned(),
        status: spec.status.as_u16(),
        detail: err.public_detail(),
        code: spec.code.to_owned(),
        request_id: ctx.request_id.clone(),
        trace_id: ctx.trace_id.clone(),
        retryable: spec.retryable,
        instance: instance.to_owned(),
        violations: err.violations(),
        reason: err.reason().map(str::to_owned),
        stage: err.stage().map(str::to_owned),
        contract: err.contract().cloned(),
    }
}

fn render(err: &ApiError, ctx: &RequestContext, instance: &str) -> Response {
    let spec = err.spec();
    let body = serde_json::to_vec(&problem(err, ctx, instance)).unwrap_or_default();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = spec.status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if let Some(after) = err.retry_after() {
        let secs = after.as_secs().max(1);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    // RFC 6750: a 401 names the scheme, and says when a presented token was refused.
    match err {
        ApiError::Unauthenticated(crate::auth::AuthError::Missing) => {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"weir\""),
            );
        }
        ApiError::Unauthenticated(_) => {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"weir\", error=\"invalid_token\""),
            );
        }
        ApiError::Forbidden { .. } => {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"weir\", error=\"insufficient_scope\""),
            );
        }
        _ => {}
    }
    response
}

/// The `http.server` span of one request, with the fields the handlers and layers record
/// later declared empty. Public for the `log_lines` benchmark, which must format the span a
/// served request has.
pub fn request_span(
    method: &str,
    route: &str,
    path: &str,
    request_id: &str,
    original_id_hash: Option<&str>,
) -> tracing::Span {
    tracing::info_span!(
        "http.server",
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        url.path = %path,
        request_id = %request_id,
        http.request.original_id_hash = original_id_hash,
        weir.tenant = Empty,
        weir.auth = Empty,
        http.response.status_code = Empty,
        error.type = Empty,
        otel.status_code = Empty,
        otel.status_description = Empty,
    )
}

/// The request-context middleware (see the module doc).
pub async fn request_context(mut req: Request, next: Next) -> Response {
    let (request_id, original_id_hash) = accept_request_id(req.headers());
    // The caller's context, parsed once: kept as-is when no OpenTelemetry layer is installed.
    let incoming = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Some((trace_id_from_traceparent(v)?, v.to_owned())));
    let parent = crate::telemetry::extract_http(req.headers());
    // Borrowed: the span records it as it is created.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let instance = req.uri().path().to_owned();
    let span = request_span(
        req.method().as_str(),
        route,
        &instance,
        &request_id,
        original_id_hash.as_deref(),
    );
    // Before the span is first entered: the sampler sees the caller's context (its flag is
    // honoured only on routes trusted by `telemetry.sampling.trust_incoming`).
    let _ = span.set_parent(parent);
    let otel_cx = span.context();
    let (traceparent, tracestate) = match crate::telemetry::traceparent_of(&otel_cx) {
        (Some(tp), ts) => (Some(tp), ts),
        // No OpenTelemetry layer installed: keep the caller's context as it came.
        (None, _) => (incoming.as_ref().map(|(_, tp)| tp.clone()), None),
    };
    let trace_id = crate::telemetry::trace_id_of(&otel_cx)
        .or_else(|| incoming.map(|(trace_id, _)| trace_id))
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let ctx = RequestContext {
        request_id: request_id.clone(),
        trace_id,
        traceparent,
        tracestate,
    };
    req.extensions_mut().insert(ctx.clone());

    let mut response = next.run(req).instrument(span.clone()).await;
    let error = match response.extensions_mut().remove::<ErrorExtension>() {
        Some(ErrorExtension(err)) => Some(err),
        None => take_policy_refusal(&mut response).map(std::sync::Arc::new),
    };
    if let Some(err) = error {
        let spec = err.spec();
        span.record("error.type", spec.code);
        let _enter = span.enter();
        let error_chain = chain(&*err);
        match spec.class {
            ErrorClass::Expected => {
                tracing::info!(code = spec.code, status = spec.status.as_u16(), error = %error_chain, "request failed");
            }
            ErrorClass::Unexpected => {
                span.record("otel.status_code", "ERROR");
                span.record("otel.status_description", spec.code);
                // Plugin and store failures were recorded on the span that saw them.
                if !matches!(
                    *err,
                    ApiError::Decide(_) | ApiError::Plugin(_) | ApiError::Store(_)
                ) {
                    crate::telemetry::record_exception(&span, spec.code, &*err);
                }
                tracing::error!(code = spec.code, status = spec.status.as_u16(), error = %error_chain, "request failed");
            }
        }
        let headers = std::mem::take(response.headers_mut());
        response = render(&err, &ctx, &instance);
        for (name, value) in &headers {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                response.headers_mut().append(name, value.clone());
            }
        }
    }
    span.record(
        "http.response.status_code",
        crate::telemetry::int_field(response.status().as_u16()),
    );
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted(sent: Option<&[u8]>) -> (String, Option<String>) {
        let mut headers = http::HeaderMap::new();
        if let Some(raw) = sent {
            headers.insert(REQUEST_ID, HeaderValue::from_bytes(raw).unwrap());
        }
        accept_request_id(&headers)
    }

    #[test]
    fn well_formed_request_ids_are_kept() {
        let longest = "a".repeat(MAX_REQUEST_ID_LEN);
        for ok in [
            "r",
            "req-1.2_3",
            "0af7651916cd43dd8448eb211c80319c",
            &longest,
        ] {
            assert_eq!(accepted(Some(ok.as_bytes())), (ok.to_owned(), None), "{ok}");
        }
    }

    #[test]
    fn other_request_ids_are_replaced_and_only_their_hash_is_kept() {
        let too_long = "a".repeat(MAX_REQUEST_ID_LEN + 1);
        for bad in [
            too_long.as_bytes(),
            b"",
            b"has space",
            b"quote\"",
            b"a=b",
            b"tab\there",
            "caf\u{e9}".as_bytes(),
        ] {
            let (id, hash) = accepted(Some(bad));
            assert_ne!(id.as_bytes(), bad);
            assert!(valid_request_id(id.as_bytes()), "generated {id}");
            assert_eq!(hash.as_deref(), Some(original_id_hash(bad).as_str()));
        }
        let (id, hash) = accepted(None);
        assert!(valid_request_id(id.as_bytes()) && hash.is_none());
        // Stable, short, and not the input.
        let h = original_id_hash(too_long.as_bytes());
        assert_eq!(h.len(), 32);
        assert_eq!(h, original_id_hash(too_long.as_bytes()));
        assert_ne!(h, original_id_hash(b"b"));
    }

    #[test]
    fn traceparent_parsing_accepts_only_valid_headers() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            trace_id_from_traceparent(tp).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(trace_id_from_traceparent(bad), None, "{bad}");
        }
    }
}
