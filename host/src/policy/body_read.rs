//! Request bodies read whole, under a deadline and a minimum rate, before the request goes on.
//!
//! A handler used to read its body lazily, inside the load-shed permit and the request
//! timeout: 300 clients sending the head of `POST /v1/orders` with `Content-Length: 60000`
//! and then a few bytes a second held every concurrency slot, and every other client got
//! `503 OVERLOADED`. This layer sits in front of the concurrency limit (see `http::edge`) and
//! buffers the body first, so a request takes a slot only once its body is here:
//!
//! - a declared `Content-Length` over the limit is refused at once, without reading
//!   ([`BodyRefused::TooLarge`], `413`); a chunked body is refused when it crosses it;
//! - the whole body must arrive within `timeout` of the head ([`BodyRefused::TimedOut`]);
//! - after `grace`, it must keep an average of at least `min_bytes_per_sec` since the head
//!   ([`BodyRefused::TooSlow`]): when no data arrives by the time the bytes received so far
//!   would satisfy the rate, the client is too slow. Both are `408`; the connection is
//!   closed after the answer (the rest of the body is never read);
//! - a body that fails to arrive (the client reset, broken chunked framing) is
//!   [`BodyRefused::Incomplete`] (`400`).
//!
//! The buffered body replaces the original, so extractors below read it from memory (trailers
//! are dropped: no route uses them). Requests that declare no body pass through untouched.
//!
//! `weir.http.server.body_reads_active` (up-down counter, by route template) counts bodies
//! being read now; refusals are counted by `policy::http_metrics` (`policy` `body_limit` or
//! `body_timeout` or `body_incomplete`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http_body_util::BodyExt as _;
use opentelemetry::KeyValue;
use opentelemetry::metrics::UpDownCounter;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt as _};

use super::refusal;

/// This policy's refusal, carried in the response extensions of the answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyRefused {
    /// The body is (or declared to be) larger than the limit.
    #[error("request body exceeds {limit} bytes")]
    TooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The body was not complete by the deadline.
    #[error("request body not complete within {}ms ({received} bytes received)", after.as_millis())]
    TimedOut {
        /// The deadline (`http.body_timeout_ms`).
        after: Duration,
        /// Bytes received by then.
        received: u64,
    },
    /// The body arrived slower than the minimum rate.
    #[error(
        "request body slower than {min_bytes_per_sec} bytes/s ({received} bytes in {}ms)",
        after.as_millis()
    )]
    TooSlow {
        /// The minimum rate (`http.body_min_bytes_per_sec`).
        min_bytes_per_sec: u64,
        /// Bytes received.
        received: u64,
        /// Time since the head.
        after: Duration,
    },
    /// The body could not be read to its end.
    #[error("request body could not be read: {0}")]
    Incomplete(String),
}

/// Bounds of a body read (from `[http]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyReadConfig {
    /// Largest body (`http.body_limit_bytes`).
    pub limit: usize,
    /// Deadline of the whole body, from the head (`http.body_timeout_ms`).
    pub timeout: Duration,
    /// Minimum average rate after `grace`; 0 turns it off (`http.body_min_bytes_per_sec`).
    pub min_bytes_per_sec: u64,
    /// Time before the minimum rate applies (`http.body_min_rate_grace_ms`).
    pub grace: Duration,
}

/// Buffer request bodies under [`BodyReadConfig`] before calling the inner service.
#[derive(Debug, Clone)]
pub struct BodyReadLayer {
    config: BodyReadConfig,
    active: UpDownCounter<i64>,
}

impl BodyReadLayer {
    /// The layer, with its instrument on the global meter provider.
    pub fn new(config: BodyReadConfig) -> Self {
        let active = opentelemetry::global::meter("weir.http")
            .i64_up_down_counter("weir.http.server.body_reads_active")
            .with_description("Request bodies being read, by route template")
            .build();
        Self { config, active }
    }
}

impl<S> Layer<S> for BodyReadLayer {
    type Service = BodyRead<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BodyRead {
            inner,
            layer: Arc::new(self.clone()),
        }
    }
}

/// See [`BodyReadLayer`].
#[derive(Debug, Clone)]
pub struct BodyRead<S> {
    inner: S,
    layer: Arc<BodyReadLayer>,
}

fn declares_body(req: &Request) -> bool {
    let headers = req.headers();
    headers.contains_key(TRANSFER_ENCODING) || declared_length(req).is_some_and(|n| n > 0)
}

fn declared_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Counts one body read from creation to drop (also when the request is cancelled).
struct Reading {
    active: UpDownCounter<i64>,
    labels: [KeyValue; 1],
}

impl Drop for Reading {
    fn drop(&mut self) {
        self.active.add(-1, &self.labels);
    }
}

impl<S> Service<Request> for BodyRead<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The inner service (the concurrency limit) is made ready only once the body is
        // here: readiness is what takes its permit.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let inner = self.inner.clone();
        if !declares_body(&req) {
            return Box::pin(inner.oneshot(req));
        }
        let layer = self.layer.clone();
        Box::pin(async move {
            let config = layer.config;
            if declared_length(&req).is_some_and(|n| n > config.limit as u64) {
                return Ok(refused(BodyRefused::TooLarge {
                    limit: config.limit,
                }));
            }
            let route = req
                .extensions()
                .get::<MatchedPath>()
                .map_or_else(|| Arc::<str>::from("unmatched"), |m| Arc::from(m.as_str()));
            let labels = [KeyValue::new("http.route", route)];
            layer.active.add(1, &labels);
            let reading = Reading {
                active: layer.active.clone(),
                labels,
            };
            let (parts, body) = req.into_parts();
            let read = read_body(body, &config).await;
            drop(reading);
            match read {
                Ok(bytes) => {
                    inner
                        .oneshot(Request::from_parts(parts, Body::from(bytes)))
                        .await
                }
                Err(refusal) => Ok(refused(refusal)),
            }
        })
    }
}

fn refused(e: BodyRefused) -> Response {
    let (status, policy) = match e {
        BodyRefused::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_limit"),
        BodyRefused::TimedOut { .. } | BodyRefused::TooSlow { .. } => {
            (StatusCode::REQUEST_TIMEOUT, "body_timeout")
        }
        BodyRefused::Incomplete(_) => (StatusCode::BAD_REQUEST, "body_incomplete"),
    };
    refusal(status, policy, e)
}

/// Read `body` to its end under `config` (see the module doc).
async fn read_body(mut body: Body, config: &BodyReadConfig) -> Result<Bytes, BodyRefused> {
    let started = Instant::now();
    let deadline = started + config.timeout;
    let mut buf = BytesMut::new();
    let mut received: u64 = 0;
    loop {
        // The moment by which more data must arrive: the deadline, or earlier the time at
        // which the bytes received so far stop satisfying the minimum rate.
        let rate_due = (config.min_bytes_per_sec > 0).then(|| {
            started
                + config.grace
                + Duration::from_secs_f64(received as f64 / config.min_bytes_per_sec as f64)
        });
        let due = rate_due.map_or(deadline, |r| r.min(deadline));
        let frame = match tokio::time::timeout_at(due, body.frame()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(e))) => return Err(BodyRefused::Incomplete(e.to_string())),
            Err(_) if due < deadline => {
                return Err(BodyRefused::TooSlow {
                    min_bytes_per_sec: config.min_bytes_per_sec,
                    received,
                    after: started.elapsed(),
                });
            }
            Err(_) => {
                return Err(BodyRefused::TimedOut {
                    after: config.timeout,
                    received,
                });
            }
        };
        if let Ok(data) = frame.into_data() {
            received += data.len() as u64;
            if received > config.limit as u64 {
                return Err(BodyRefused::TooLarge {
                    limit: config.limit,
                });
            }
            buf.extend_from_slice(&data);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::routing::post;
    use futures::StreamExt as _;
    use tokio::sync::mpsc;
    use tower::ServiceExt as _;

    use super::*;

    const CONFIG: BodyReadConfig = BodyReadConfig {
        limit: 1000,
        timeout: Duration::from_secs(10),
        min_bytes_per_sec: 100,
        grace: Duration::from_secs(2),
    };

    /// An app whose handler counts its calls and echoes the body length.
    fn app(calls: Arc<AtomicUsize>) -> Router {
        Router::new()
            .route(
                "/echo",
                post(move |body: Bytes| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    async move { body.len().to_string() }
                }),
            )
            .layer(BodyReadLayer::new(CONFIG))
    }

    /// A request whose body is fed through the returned sender.
    fn streamed(len: usize) -> (Request, mpsc::Sender<Bytes>) {
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        let stream = tokio_stream_from(rx);
        let req = Request::post("/echo")
            .header(CONTENT_LENGTH, len)
            .body(Body::from_stream(stream))
            .unwrap();
        (req, tx)
    }

    fn tokio_stream_from(
        rx: mpsc::Receiver<Bytes>,
    ) -> impl futures::Stream<Item = Result<Bytes, Infallible>> {
        futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|b| (Ok(b), rx)) },
        )
        .boxed()
    }

    #[tokio::test(start_paused = true)]
    async fn the_inner_service_is_called_only_once_the_body_is_here() {
        let calls = Arc::new(AtomicUsize::new(0));
        let (req, tx) = streamed(10);
        let res = tokio::spawn(app(calls.clone()).oneshot(req));
        tx.send(Bytes::from_static(b"hello")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "half a body: not called yet"
        );
        tx.send(Bytes::from_static(b"world")).await.unwrap();
        drop(tx);
        let res = res.await.unwrap().unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"10");
    }

    #[tokio::test(start_paused = true)]
    async fn a_declared_length_over_the_limit_is_refused_without_reading() {
        let calls = Arc::new(AtomicUsize::new(0));
        let (req, _tx) = streamed(1001);
        let res = app(calls.clone()).oneshot(req).await.unwrap();
        assert_eq!(res.status(), 413);
        assert_eq!(
            res.extensions().get::<BodyRefused>(),
            Some(&BodyRefused::TooLarge { limit: 1000 })
        );
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_slower_than_the_minimum_rate_is_refused_after_the_grace() {
        let calls = Arc::new(AtomicUsize::new(0));
        let (req, tx) = streamed(900);
        let started = Instant::now();
        let res = tokio::spawn(app(calls.clone()).oneshot(req));
        // 50 bytes at once, then nothing: 50 bytes satisfy 100 B/s for 0.5 s after the grace.
        tx.send(Bytes::from(vec![b'x'; 50])).await.unwrap();
        let res = res.await.unwrap().unwrap();
        assert_eq!(res.status(), 408);
        assert_eq!(started.elapsed(), Duration::from_millis(2500));
        assert!(matches!(
            res.extensions().get::<BodyRefused>(),
            Some(BodyRefused::TooSlow { received: 50, .. })
        ));
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_fast_enough_but_not_done_by_the_deadline_is_refused() {
        let calls = Arc::new(AtomicUsize::new(0));
        let (req, tx) = streamed(1000);
        let res = tokio::spawn(app(calls.clone()).oneshot(req));
        // 45 bytes every 0.5 s (90 B/s, the average stays above the rate due after the
        // grace): still under 1000 bytes at the 10 s deadline.
        let feeder = tokio::spawn(async move {
            for _ in 0..30 {
                if tx.send(Bytes::from(vec![b'x'; 45])).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        let started = Instant::now();
        let res = res.await.unwrap().unwrap();
        assert_eq!(res.status(), 408);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert!(matches!(
            res.extensions().get::<BodyRefused>(),
            Some(BodyRefused::TimedOut { .. })
        ));
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        feeder.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn requests_without_a_body_pass_through() {
        let calls = Arc::new(AtomicUsize::new(0));
        let req = Request::post("/echo").body(Body::empty()).unwrap();
        let res = app(calls.clone()).oneshot(req).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
