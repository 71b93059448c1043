//! Per-call timeout of an outbound dependency call.
//!
//! Unlike `tower::timeout` this keeps the inner error type: a timeout becomes
//! `E::from(TimedOut)`, so the breaker, retry and metrics layers around it see one typed
//! error instead of a `BoxError` to downcast. The inner future is dropped at the deadline,
//! which cancels the call (a pooled connection in use is returned or discarded by its pool).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service};

/// The call did not finish within its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("dependency call timed out")]
pub struct TimedOut;

/// Bound every call of the wrapped service by `timeout`.
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    timeout: Duration,
}

impl TimeoutLayer {
    /// A layer bounding calls by `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout {
            inner,
            timeout: self.timeout,
        }
    }
}

/// See [`TimeoutLayer`].
#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S, Req> Service<Req> for Timeout<S>
where
    S: Service<Req>,
    S::Future: Send + 'static,
    S::Error: From<TimedOut>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let fut = self.inner.call(req);
        let timeout = self.timeout;
        Box::pin(async move {
            tokio::time::timeout(timeout, fut)
                .await
                .unwrap_or_else(|_| Err(S::Error::from(TimedOut)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[derive(Debug, PartialEq)]
    struct E;
    impl From<TimedOut> for E {
        fn from(_: TimedOut) -> Self {
            E
        }
    }

    #[tokio::test(start_paused = true)]
    async fn slow_calls_fail_at_the_bound_and_fast_ones_pass() {
        let svc = TimeoutLayer::new(Duration::from_millis(100)).layer(tower::service_fn(
            |d: u64| async move {
                tokio::time::sleep(Duration::from_millis(d)).await;
                Ok::<_, E>(d)
            },
        ));
        assert_eq!(svc.clone().oneshot(99).await, Ok(99));
        let started = tokio::time::Instant::now();
        assert_eq!(svc.oneshot(1_000).await, Err(E));
        // Paused time: the clock moved exactly to the bound, not to the inner sleep.
        assert_eq!(started.elapsed(), Duration::from_millis(100));
    }
}
