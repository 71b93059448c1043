//! Per-route request timeout at the edge: `504 REQUEST_TIMEOUT` as a problem response.
//!
//! The bound of a route is looked up by its template (axum's `MatchedPath`), falling back to
//! the default. When it elapses the handler's future is dropped: an in-progress plugin call
//! is cancelled with it (its store and instance are dropped, never reused) and an open
//! database transaction is rolled back by its drop.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use tower::{Layer, Service};

use super::refusal;

/// This policy's refusal: the route's bound elapsed and the handler was cancelled. Carried in
/// the response extensions of the `504` it answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("request timed out after {}ms", after.as_millis())]
pub struct TimedOut {
    /// The bound that elapsed.
    pub after: Duration,
}

/// Bound every request by its route's timeout.
#[derive(Debug, Clone)]
pub struct RequestTimeoutLayer {
    default: Duration,
    routes: Arc<BTreeMap<String, Duration>>,
}

impl RequestTimeoutLayer {
    /// `default` for every route, except those in `routes` (route template -> bound).
    pub fn new(default: Duration, routes: BTreeMap<String, Duration>) -> Self {
        Self {
            default,
            routes: Arc::new(routes),
        }
    }

    fn bound(&self, route: Option<&str>) -> Duration {
        route
            .and_then(|r| self.routes.get(r).copied())
            .unwrap_or(self.default)
    }
}

impl<S> Layer<S> for RequestTimeoutLayer {
    type Service = RequestTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestTimeout {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`RequestTimeoutLayer`].
#[derive(Debug, Clone)]
pub struct RequestTimeout<S> {
    inner: S,
    layer: RequestTimeoutLayer,
}

impl<S> Service<Request> for RequestTimeout<S>
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
        let after = self.layer.bound(
            req.extensions()
                .get::<MatchedPath>()
                .map(MatchedPath::as_str),
        );
        let fut = self.inner.call(req);
        Box::pin(async move {
            tokio::time::timeout(after, fut).await.unwrap_or_else(|_| {
                Ok(refusal(
                    http::StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    TimedOut { after },
                ))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn each_route_gets_its_bound_and_the_handler_is_cancelled() {
        let dropped = Arc::new(tokio::sync::Notify::new());
        let d = dropped.clone();
        struct OnDrop(Arc<tokio::sync::Notify>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                self.0.notify_one();
            }
        }
        let app = Router::new()
            .route(
                "/slow/{id}",
                get(move || {
                    let guard = OnDrop(d.clone());
                    async move {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        drop(guard);
                        "late"
                    }
                }),
            )
            .route(
                "/quick",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "ok"
                }),
            )
            .layer(RequestTimeoutLayer::new(
                Duration::from_secs(1),
                BTreeMap::from([("/slow/{id}".to_owned(), Duration::from_millis(200))]),
            ));
        let req = |p: &str| Request::builder().uri(p).body(Body::empty()).unwrap();

        let started = tokio::time::Instant::now();
        let res = app.clone().oneshot(req("/slow/42")).await.unwrap();
        assert_eq!(res.status(), 504);
        assert_eq!(
            res.extensions().get::<TimedOut>(),
            Some(&TimedOut {
                after: Duration::from_millis(200)
            })
        );
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(200),
            "the route's own bound"
        );
        dropped.notified().await; // the handler future was dropped, not left running

        // 300ms is fine under the 1s default.
        assert_eq!(app.oneshot(req("/quick")).await.unwrap().status(), 200);
    }
}
