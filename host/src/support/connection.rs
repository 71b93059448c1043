//! `Connection: close` on responses sent before the request body was read.
//!
//! A handler or an edge layer may answer without reading the request body: a 413 for a
//! declared length over the limit, a 401 on an upload without a token, a shed or rate-limited
//! request. The server then cannot reuse the connection (the unread bytes are still on it) and
//! closes it after the response; a client that kept the connection in its pool and sends the
//! next request on it sees a reset or an incomplete message. Saying `Connection: close` on
//! such responses tells the client not to reuse the connection, so the next request goes out
//! on a fresh one. Responses to requests whose body was read to its end are left alone.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http::HeaderValue;
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http_body::{Frame, SizeHint};

/// Middleware: mark the response `Connection: close` when the request declared a body that
/// was not read to its end.
pub async fn close_if_body_unread(req: Request, next: Next) -> Response {
    if !declares_body(&req) {
        return next.run(req).await;
    }
    let read = Arc::new(AtomicBool::new(false));
    let req = req.map(|inner| {
        Body::new(Tracked {
            inner,
            read: read.clone(),
        })
    });
    let mut res = next.run(req).await;
    if !read.load(Ordering::Acquire) {
        res.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

fn declares_body(req: &Request) -> bool {
    let headers = req.headers();
    headers.contains_key(TRANSFER_ENCODING)
        || headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

/// A request body that records when it was read to its end.
struct Tracked {
    inner: Body,
    read: Arc<AtomicBool>,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || this.inner.is_end_stream() {
            this.read.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::routing::post;
    use tower::ServiceExt as _;

    use super::*;

    fn app() -> Router {
        Router::new()
            .route(
                "/read",
                post(|body: Bytes| async move { body.len().to_string() }),
            )
            .route("/ignore", post(|| async { "not reading it" }))
            .layer(axum::middleware::from_fn(close_if_body_unread))
    }

    async fn connection(path: &str, body: &'static str) -> Option<HeaderValue> {
        let req = Request::post(path)
            .header(CONTENT_LENGTH, body.len())
            .body(Body::from(body))
            .unwrap();
        let res = app().oneshot(req).await.unwrap();
        res.headers().get(CONNECTION).cloned()
    }

    #[tokio::test]
    async fn only_responses_that_left_the_body_unread_close_the_connection() {
        assert_eq!(connection("/read", "hello").await, None);
        assert_eq!(
            connection("/ignore", "hello").await,
            Some(HeaderValue::from_static("close"))
        );
        // No body, nothing left on the connection.
        assert_eq!(connection("/ignore", "").await, None);
    }
}
