//! Load shedding under a global concurrency limit: `503 OVERLOADED`, never an unbounded queue.
//!
//! tower's `GlobalConcurrencyLimit` (one semaphore shared by every route; a plain
//! `ConcurrencyLimitLayer` on an axum router would limit each route separately) under
//! tower's `LoadShed`: when no permit is free at the moment the request arrives, the request
//! is refused at once with a problem response and `Retry-After`, instead of waiting. The
//! permit is held until the response future finishes, so the limit counts work in progress.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use http::StatusCode;
use tokio::sync::Semaphore;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::error::Overloaded;
use tower::{Layer, Service};

use super::refusal;

/// This policy's refusal: the global concurrency limit was reached and the request was shed
/// at once. Carried in the response extensions of the `503` it answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("concurrency limit reached; request shed")]
pub struct Shed;

/// At most `max` requests in flight across all routes; the rest are shed.
#[derive(Debug, Clone)]
pub struct LoadShedLayer {
    semaphore: Arc<Semaphore>,
}

impl LoadShedLayer {
    /// A limit of `max` concurrent requests (at least one).
    pub fn new(max: usize) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(max.max(1))),
        }
    }

    /// Requests that could be admitted right now.
    pub fn available(&self) -> usize {
        self.semaphore.available_permits()
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let limited =
            GlobalConcurrencyLimitLayer::with_semaphore(self.semaphore.clone()).layer(inner);
        LoadShed {
            inner: tower::load_shed::LoadShed::new(limited),
        }
    }
}

/// See [`LoadShedLayer`].
#[derive(Debug, Clone)]
pub struct LoadShed<S> {
    inner: tower::load_shed::LoadShed<tower::limit::ConcurrencyLimit<S>>,
}

impl<S> Service<Request> for LoadShed<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // `LoadShed` is always ready: it remembers whether the limit had room and sheds in
        // `call` when it had none. The inner services never fail.
        match self.inner.poll_ready(cx) {
            Poll::Ready(_) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let fut = self.inner.call(req);
        Box::pin(async move {
            Ok(match fut.await {
                Ok(response) => response,
                // The inner services never fail, so every error is the shed.
                Err(e) => {
                    if !e.is::<Overloaded>() {
                        tracing::error!(error = %e, "load shed layer failed; shedding");
                    }
                    refusal(StatusCode::SERVICE_UNAVAILABLE, "shed", Shed)
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tokio::sync::Notify;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn requests_over_the_limit_are_shed_at_once_and_admitted_ones_finish() {
        let gate = Arc::new(Notify::new());
        let entered = Arc::new(Notify::new());
        let (g, e) = (gate.clone(), entered.clone());
        let shed = LoadShedLayer::new(1);
        let app = Router::new()
            .route(
                "/slow",
                get(move || async move {
                    e.notify_one();
                    g.notified().await;
                    "done"
                }),
            )
            .route("/fast", get(|| async { "fast" }))
            .layer(shed.clone());
        let req = |p: &str| Request::builder().uri(p).body(Body::empty()).unwrap();

        let admitted = tokio::spawn(app.clone().oneshot(req("/slow")));
        entered.notified().await;
        assert_eq!(shed.available(), 0);
        // The limit is global: another route is shed too, and without waiting.
        let refused = app.clone().oneshot(req("/fast")).await.unwrap();
        assert_eq!(refused.status(), 503);
        assert_eq!(refused.extensions().get::<Shed>(), Some(&Shed));

        gate.notify_one();
        assert_eq!(admitted.await.unwrap().unwrap().status(), 200);
        assert_eq!(shed.available(), 1);
        assert_eq!(app.oneshot(req("/fast")).await.unwrap().status(), 200);
    }
}
