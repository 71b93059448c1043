//! The inbound edge stack of the API: the one place that decides the order of the layers.
//!
//! Outermost first (axum applies the last `.layer` outermost, hence the reverse order in the
//! code):
//! 1. **Request context** ([`super::context`]): request id, trace id and the `http.server`
//!    span exist before anything can fail, and it renders every error left by the layers
//!    below (a handler's [`ApiError`] or a policy's refusal) as a problem response with
//!    those ids. Outermost so nothing escapes it.
//! 2. **HTTP metrics**: inside the context (it reads the refusal, and the problem code of
//!    every error, before the context consumes them) and outside every policy, so
//!    rejections, errors by code and full durations are counted.
//! 3. **Request log**: one redacted event per request, inside the request span (so it
//!    carries the request and trace ids) and outside every policy, so rejected requests are
//!    logged with their final status too.
//! 4. **Panic catcher**: a panic anywhere below becomes a 500 problem, which the log, the
//!    metrics and the context above still see.
//! 5. **Body limit**: the limit configuration that extractors see (`DefaultBodyLimit` and
//!    the limit named in 413 problems); cheap, with the other request-shape checks.
//! 6. **Authentication** ([`super::auth`]): the principal, its tenant and its scopes (401,
//!    403), before anything keyed by the caller and before the body is read; credentials not
//!    yet verified pass a per-peer limit first, so a flood of made-up keys costs no database
//!    work.
//! 7. **Rate limit**: per authenticated principal (per peer without one), before the body is
//!    read and before the concurrency limit, so a noisy client is refused without us reading
//!    its body or taking one of the shared in-flight slots from well-behaved ones.
//! 8. **Body read** ([`crate::policy::body_read`]): the whole body is buffered under its
//!    own deadline and minimum rate (`408 REQUEST_BODY_TIMEOUT`) and the body limit (`413`)
//!    *before* the concurrency limit: a request takes a slot only once its body is here, so
//!    clients trickling bodies never hold the slots other clients need. Outside the request
//!    timeout too, which bounds only the work done with a complete request.
//! 9. **Load shed / concurrency limit**: refuses at once when the global limit (fixed, or
//!    adaptive: [`crate::policy::adaptive_limit`]) is reached;
//!    it is outside the timeout so a shed request costs no timer, and it holds its slot
//!    until the handler finishes or is cancelled by the timeout below.
//! 10. **Request timeout**: innermost, so it bounds only the handler's work (not time spent
//!     being rejected or receiving the body) and, by dropping the handler, cancels the
//!     plugin call inside it.
//!
//! Below the whole stack, each listener's accept loop (`server::listener`) bounds the
//! connection itself: header-read and idle timeouts, the connection cap, the head size.
//!
//! All of these are applied with `Router::layer`, i.e. per route after routing, which is what
//! makes the route template (`MatchedPath`) available to metrics and the timeout. The
//! shared state (rate-limit buckets, the concurrency limit) is shared by all routes.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;

use super::HttpConfig;
use super::context;
use super::error::ApiError;
use super::extract::BodyLimit;
use crate::policy::{
    PolicyConfig, body_read, http_metrics, load_shed, rate_limit, request_log, request_timeout,
};

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::Internal(anyhow::anyhow!("the handler panicked")).into_response()
}

/// Wrap the API routes in the edge stack (see the module doc for the order).
pub fn stack(
    routes: Router,
    http: &HttpConfig,
    policy: &PolicyConfig,
    auth: super::auth::AuthLayerState,
) -> Router {
    let limit = http.body_limit_bytes;
    routes
        .layer(request_timeout::RequestTimeoutLayer::new(
            http.request_timeout,
            policy.route_timeouts(),
        ))
        .layer(load_shed::LoadShedLayer::from_policy(policy))
        .layer(body_read::BodyReadLayer::new(body_read::BodyReadConfig {
            limit,
            timeout: http.body_timeout,
            min_bytes_per_sec: http.body_min_bytes_per_sec,
            grace: http.body_min_rate_grace,
        }))
        .layer(rate_limit::RateLimitLayer::new(&policy.rate_limit))
        .layer(middleware::from_fn_with_state(
            auth,
            super::auth::authenticate,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::Extension(BodyLimit(limit)))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(request_log::RequestLogLayer::new(&policy.request_log))
        .layer(http_metrics::HttpMetricsLayer::new().with_problems(super::error::problem_of))
        .layer(middleware::from_fn(context::request_context))
}
