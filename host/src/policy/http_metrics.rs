//! HTTP server metrics: duration by route template, in-flight requests, rejections by policy.
//!
//! - `http.server.request.duration` (histogram, seconds) by `http.route` (the template from
//!   `MatchedPath`, `unmatched` otherwise: never the raw path), `http.request.method` (known
//!   methods, else `_OTHER`) and `http.response.status_class` (`2xx`..`5xx`). Its `_count`
//!   is the request count.
//! - `http.server.active_requests` (up-down counter) by route and method.
//! - `weir.http.server.rejections` (counter) by `policy` (`rate_limit`, `shed`, `timeout`,
//!   `body_limit`, `body_timeout`, `body_incomplete`) and route, read from the error the policy left in the response.
//! - `weir.http.server.errors` (counter) by `code` (the problem response's stable code),
//!   `class` (`expected` or `unexpected`), route and method: one per problem response. The
//!   code comes from the classifier the API gives the layer ([`HttpMetricsLayer::with_problems`]):
//!   the API's error catalog is a closed set, so the label is bounded; a classifier that
//!   returns codes outside it is a bug its own tests catch.
//!
//! It sits inside the request-context middleware (which consumes that error to render the
//! problem body) and outside every policy, so it sees each rejection and each request's
//! whole duration.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use http::Method;
use opentelemetry::metrics::{Counter, Histogram, UpDownCounter};
use opentelemetry::{KeyValue, Value};
use tokio::time::Instant;
use tower::{Layer, Service};

use super::RejectedBy;

/// The problem a response carries, as the API's classifier reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Problem {
    /// The stable problem code (e.g. `ORDER_NOT_FOUND`), from a closed catalog.
    pub code: &'static str,
    /// Whether the error is a fault of the service or a dependency (not of the request).
    pub unexpected: bool,
}

/// Reads the [`Problem`] of an error response (before it is rendered), `None` otherwise.
pub type ProblemOf = fn(&Response) -> Option<Problem>;

fn no_problem(_: &Response) -> Option<Problem> {
    None
}

#[derive(Debug, Clone)]
struct Instruments {
    duration: Histogram<f64>,
    active: UpDownCounter<i64>,
    rejections: Counter<u64>,
    errors: Counter<u64>,
    problem_of: ProblemOf,
}

/// Record HTTP server metrics.
#[derive(Debug, Clone)]
pub struct HttpMetricsLayer {
    instruments: Instruments,
}

impl Default for HttpMetricsLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpMetricsLayer {
    /// Instruments on the global meter provider.
    pub fn new() -> Self {
        let meter = opentelemetry::global::meter("weir.http");
        Self {
            instruments: Instruments {
                duration: meter
                    .f64_histogram("http.server.request.duration")
                    .with_unit("s")
                    .with_description(
                        "Duration of HTTP requests by route template, method and status class",
                    )
                    .with_boundaries(vec![
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0,
                    ])
                    .build(),
                active: meter
                    .i64_up_down_counter("http.server.active_requests")
                    .with_description("HTTP requests in flight")
                    .build(),
                rejections: meter
                    .u64_counter("weir.http.server.rejections")
                    .with_description("Requests refused by an edge policy")
                    .build(),
                errors: meter
                    .u64_counter("weir.http.server.errors")
                    .with_description(
                        "Problem responses by stable error code, class, route template and method",
                    )
                    .build(),
                problem_of: no_problem,
            },
        }
    }

    /// Count problem responses by the code `problem_of` reads from them (without it,
    /// `weir.http.server.errors` stays empty).
    pub fn with_problems(mut self, problem_of: ProblemOf) -> Self {
        self.instruments.problem_of = problem_of;
        self
    }
}

impl<S> Layer<S> for HttpMetricsLayer {
    type Service = HttpMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpMetrics {
            inner,
            instruments: self.instruments.clone(),
        }
    }
}

/// See [`HttpMetricsLayer`].
#[derive(Debug, Clone)]
pub struct HttpMetrics<S> {
    inner: S,
    instruments: Instruments,
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "_OTHER",
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

impl<S> Service<Request> for HttpMetrics<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // One shared copy of the template: every label below clones the reference.
        let route = match req.extensions().get::<MatchedPath>() {
            Some(m) => Value::from(Arc::<str>::from(m.as_str())),
            None => Value::from("unmatched"),
        };
        let method = method_label(req.method());
        let i = self.instruments.clone();
        let base = [
            KeyValue::new("http.route", route),
            KeyValue::new("http.request.method", method),
        ];
        i.active.add(1, &base);
        let started = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            // Decrement even if the connection is dropped mid-request.
            struct Active(Instruments, [KeyValue; 2]);
            impl Drop for Active {
                fn drop(&mut self) {
                    self.0.active.add(-1, &self.1);
                }
            }
            let active = Active(i.clone(), base.clone());
            let response = fut.await?;
            let [route, method] = base;
            let status = response.status().as_u16();
            i.duration.record(
                started.elapsed().as_secs_f64(),
                &[
                    route.clone(),
                    method.clone(),
                    KeyValue::new("http.response.status_class", status_class(status)),
                ],
            );
            if let Some(problem) = (i.problem_of)(&response) {
                i.errors.add(
                    1,
                    &[
                        KeyValue::new("code", problem.code),
                        KeyValue::new(
                            "class",
                            if problem.unexpected {
                                "unexpected"
                            } else {
                                "expected"
                            },
                        ),
                        route.clone(),
                        method.clone(),
                    ],
                );
            }
            if let Some(RejectedBy(policy)) = response.extensions().get::<RejectedBy>().copied() {
                i.rejections
                    .add(1, &[KeyValue::new("policy", policy), route]);
            }
            drop(active);
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(
            method_label(&Method::from_bytes(b"BREW").unwrap()),
            "_OTHER"
        );
        assert_eq!(status_class(503), "5xx");
    }
}
