//! Metrics and a span for every attempt of an outbound dependency call.
//!
//! Placed inside the retry layer, so each attempt is one data point; a call refused by the
//! breaker or the bulkhead is recorded with its own outcome (`short_circuited`,
//! `saturated`) and takes no time. Instruments: `weir.dependency.calls` (counter) and
//! `weir.dependency.duration` (histogram, seconds), both by `dependency`, `operation` and
//! `outcome`. All three label values are static strings: bounded by construction.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};
use tokio::time::Instant;
use tower::{Layer, Service};
use tracing::Instrument;

/// The bounded outcome label of an error.
pub trait Outcome {
    /// E.g. `timeout`, `unavailable`, `short_circuited`.
    fn outcome(&self) -> &'static str;
}

/// Record calls of the dependency `dependency` doing `operation`.
#[derive(Debug, Clone)]
pub struct ObserveLayer {
    dependency: &'static str,
    operation: &'static str,
    calls: Counter<u64>,
    duration: Histogram<f64>,
}

impl ObserveLayer {
    /// Instruments for one dependency operation.
    pub fn new(dependency: &'static str, operation: &'static str) -> Self {
        let meter = opentelemetry::global::meter("weir.policy");
        Self {
            dependency,
            operation,
            calls: meter
                .u64_counter("weir.dependency.calls")
                .with_description("Dependency call attempts by dependency, operation and outcome")
                .build(),
            duration: meter
                .f64_histogram("weir.dependency.duration")
                .with_unit("s")
                .with_description("Duration of dependency call attempts")
                .with_boundaries(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                .build(),
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`ObserveLayer`].
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    layer: ObserveLayer,
}

impl<S, Req> Service<Req> for Observe<S>
where
    S: Service<Req>,
    S::Future: Send + 'static,
    S::Error: Outcome,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let l = self.layer.clone();
        let span = tracing::info_span!(
            "dependency.call",
            dependency = l.dependency,
            operation = l.operation,
            outcome = tracing::field::Empty,
        );
        let fut = self.inner.call(req);
        Box::pin(
            async move {
                let started = Instant::now();
                let result = fut.await;
                let outcome = match &result {
                    Ok(_) => "ok",
                    Err(e) => e.outcome(),
                };
                tracing::Span::current().record("outcome", outcome);
                let attrs = [
                    KeyValue::new("dependency", l.dependency),
                    KeyValue::new("operation", l.operation),
                    KeyValue::new("outcome", outcome),
                ];
                l.calls.add(1, &attrs);
                l.duration.record(started.elapsed().as_secs_f64(), &attrs);
                result
            }
            .instrument(span),
        )
    }
}
