//! Load shedding under a global concurrency limit: `503 OVERLOADED`, never an unbounded queue.
//!
//! One limit shared by every route (a plain tower `ConcurrencyLimitLayer` on an axum router
//! would limit each route separately): when the requests in flight have reached it at the
//! moment a request arrives, the request is refused at once with a problem response and
//! `Retry-After`, instead of waiting. The slot is held until the response future finishes
//! (or is dropped), so the limit counts work in progress.
//!
//! The admission is [`AdaptiveLimit`]'s: fixed at `policy.max_concurrency` by default, or,
//! with `policy.adaptive_concurrency.enabled`, measured from the latency the admitted
//! requests see, with `policy.max_concurrency` as its ceiling. It replaced tower's semaphore
//! limit under tower's `LoadShed` when the adaptive limit came, so that both modes are one
//! path: a compare-and-swap on the requests in flight instead of a semaphore permit.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use http::StatusCode;
use tower::{Layer, Service};

use super::adaptive_limit::AdaptiveLimit;
use super::{PolicyConfig, refusal};

/// This policy's refusal: the global concurrency limit was reached and the request was shed
/// at once. Carried in the response extensions of the `503` it answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("concurrency limit reached; request shed")]
pub struct Shed;

/// At most `max` requests in flight across all routes, or an adaptive limit up to it; the
/// rest are shed.
#[derive(Debug, Clone)]
pub struct LoadShedLayer {
    limit: Arc<AdaptiveLimit>,
}

impl LoadShedLayer {
    /// A fixed limit of `max` concurrent requests (at least one).
    pub fn new(max: usize) -> Self {
        Self::with_limit(AdaptiveLimit::fixed(max))
    }

    /// The limit `policy` sets: adaptive when enabled, else fixed at `max_concurrency`.
    pub fn from_policy(policy: &PolicyConfig) -> Self {
        Self::with_limit(AdaptiveLimit::new(
            policy.adaptive_concurrency.clone(),
            policy.max_concurrency,
        ))
    }

    /// The shared `limit` (adaptive or fixed, as it was made).
    pub fn with_limit(limit: Arc<AdaptiveLimit>) -> Self {
        Self { limit }
    }

    /// Requests that could be admitted right now.
    pub fn available(&self) -> usize {
        self.limit.available()
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            limit: self.limit.clone(),
        }
    }
}

/// See [`LoadShedLayer`].
#[derive(Debug, Clone)]
pub struct LoadShed<S> {
    inner: S,
    limit: Arc<AdaptiveLimit>,
}

impl<S> Service<Request> for LoadShed<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Admission is decided in `call`. An axum router is always ready, so this never
        // waits; were the inner service to wait, the request would wait with it, as it
        // would without this layer.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let Some(admitted) = self.limit.try_admit() else {
            return Box::pin(async { Ok(refusal(StatusCode::SERVICE_UNAVAILABLE, "shed", Shed)) });
        };
        // The ready service answers this request; a clone waits for the next one.
        let clone = self.inner.clone();
        let fut = std::mem::replace(&mut self.inner, clone).call(req);
        Box::pin(async move {
            let response = fut.await;
            // Recorded only when answered: a request dropped mid-flight (its client gone)
            // frees its slot without a sample. Client errors free theirs without one too
            // (see `Admitted::complete`).
            let counted = response
                .as_ref()
                .is_ok_and(|r| !r.status().is_client_error());
            admitted.complete(counted);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tokio::sync::Notify;
    use tower::ServiceExt;

    use super::*;
    use crate::policy::adaptive_limit::AdaptiveConcurrencyConfig;

    /// A `/work` route answering after `delay_ms` (virtual time) under an adaptive limit:
    /// floor 2, ten samples per measurement, ceiling 32.
    fn adaptive_app(delay_ms: Arc<AtomicU64>) -> (Router, Arc<AdaptiveLimit>) {
        let limit = AdaptiveLimit::new(
            AdaptiveConcurrencyConfig {
                enabled: true,
                min_concurrency: 2,
                min_rtt_samples: 10,
                ..AdaptiveConcurrencyConfig::default()
            },
            32,
        );
        let app = Router::new()
            .route(
                "/work",
                get(move || async move {
                    let ms = delay_ms.load(Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    "done"
                }),
            )
            .layer(LoadShedLayer::with_limit(limit.clone()));
        (app, limit)
    }

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

    /// The adaptive limit through the layer: it measures what routes take, grows while they
    /// stay near the unloaded latency and sheds once they slow down (virtual time).
    #[tokio::test(start_paused = true)]
    async fn the_adaptive_limit_follows_the_latency_of_the_routes() {
        let delay_ms = Arc::new(AtomicU64::new(4));
        let (app, limit) = adaptive_app(delay_ms.clone());
        let wave = |n: usize| {
            let app = app.clone();
            async move {
                let answers = futures::future::join_all((0..n).map(|_| {
                    let req = Request::builder().uri("/work").body(Body::empty()).unwrap();
                    app.clone().oneshot(req)
                }))
                .await;
                let mut shed = 0;
                for r in answers.into_iter().map(Result::unwrap) {
                    if r.status() == 503 {
                        assert_eq!(r.extensions().get::<Shed>(), Some(&Shed));
                        shed += 1;
                    } else {
                        assert_eq!(r.status(), 200);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                (n - shed, shed)
            }
        };

        // Unloaded: two at a time while the floor holds.
        for _ in 0..5 {
            assert_eq!(wave(2).await, (2, 0));
        }
        // The timer wheel's millisecond ticks may add up to one.
        let min_rtt = limit.min_rtt().unwrap();
        assert!(min_rtt >= Duration::from_millis(4) && min_rtt <= Duration::from_millis(5));
        for _ in 0..10 {
            wave(32).await;
        }
        assert_eq!(limit.limit(), 32);
        assert_eq!(
            wave(32).await,
            (32, 0),
            "all admitted at the unloaded latency"
        );

        // The routes slow to five times the unloaded latency: the limit falls, and requests
        // are shed with fewer than the ceiling in flight.
        delay_ms.store(20, Ordering::Relaxed);
        let mut seen = vec![];
        for _ in 0..15 {
            seen.push(wave(32).await);
        }
        let (admitted, shed) = *seen.last().unwrap();
        assert!(
            admitted <= 8 && shed >= 24,
            "waves (admitted, shed): {seen:?}"
        );
        assert_eq!(limit.in_flight(), 0);
    }

    /// Client errors are answered but are not samples: a client sending cheap 404s while the
    /// unloaded latency is measured cannot drag it down.
    #[tokio::test(start_paused = true)]
    async fn client_errors_are_not_samples_of_the_unloaded_latency() {
        let (app, limit) = adaptive_app(Arc::new(AtomicU64::new(4)));
        let send = |path: &'static str| {
            let req = Request::builder().uri(path).body(Body::empty()).unwrap();
            app.clone().oneshot(req)
        };
        for _ in 0..10 {
            let (a, b) = tokio::join!(send("/missing"), send("/missing"));
            assert_eq!(
                (a.unwrap().status(), b.unwrap().status()),
                (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND)
            );
        }
        assert_eq!(limit.min_rtt(), None, "404s are not samples");
        for _ in 0..5 {
            let (a, b) = tokio::join!(send("/work"), send("/work"));
            assert_eq!(
                (a.unwrap().status(), b.unwrap().status()),
                (StatusCode::OK, StatusCode::OK)
            );
        }
        let min_rtt = limit.min_rtt().unwrap();
        assert!(min_rtt >= Duration::from_millis(4), "{min_rtt:?}");
        assert_eq!(limit.in_flight(), 0);
    }
}
