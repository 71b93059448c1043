//! Concurrency limit of an outbound dependency that rejects instead of queueing.
//!
//! A call beyond `max` in-flight calls fails at once with `E::from(Saturated)`. Queueing in
//! front of a slow dependency only converts its slowness into our latency and memory; failing
//! fast lets the caller degrade (the catalog cache falls back to the database, a request
//! gets a retryable 503). The permit is held until the call's future completes or is dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Semaphore;
use tower::{Layer, Service};

/// The dependency already has its maximum number of calls in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("dependency concurrency limit reached")]
pub struct Saturated;

/// Allow at most `max` concurrent calls across all clones.
#[derive(Debug, Clone)]
pub struct BulkheadLayer {
    permits: Arc<Semaphore>,
}

impl BulkheadLayer {
    /// A limit of `max` concurrent calls (at least one).
    pub fn new(max: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max.max(1))),
        }
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = Bulkhead<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Bulkhead {
            inner,
            permits: self.permits.clone(),
        }
    }
}

/// See [`BulkheadLayer`].
#[derive(Debug, Clone)]
pub struct Bulkhead<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

impl<S, Req> Service<Req> for Bulkhead<S>
where
    S: Service<Req>,
    S::Future: Send + 'static,
    S::Error: From<Saturated> + Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.permits.clone().try_acquire_owned() {
            Err(_) => Box::pin(std::future::ready(Err(S::Error::from(Saturated)))),
            Ok(permit) => {
                let fut = self.inner.call(req);
                Box::pin(async move {
                    let result = fut.await;
                    drop(permit);
                    result
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[derive(Debug, PartialEq)]
    struct E;
    impl From<Saturated> for E {
        fn from(_: Saturated) -> Self {
            E
        }
    }

    #[tokio::test]
    async fn calls_beyond_the_limit_fail_at_once_and_permits_come_back() {
        let gate = Arc::new(tokio::sync::Notify::new());
        let g = gate.clone();
        let svc = BulkheadLayer::new(1).layer(tower::service_fn(move |wait: bool| {
            let g = g.clone();
            async move {
                if wait {
                    g.notified().await;
                }
                Ok::<_, E>(())
            }
        }));
        let held = tokio::spawn(svc.clone().oneshot(true));
        // Wait until the first call holds the permit (an event, not a sleep).
        while svc.permits.available_permits() != 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(svc.clone().oneshot(false).await, Err(E));
        gate.notify_one();
        held.await.unwrap().unwrap();
        assert_eq!(svc.oneshot(false).await, Ok(()));
    }
}
