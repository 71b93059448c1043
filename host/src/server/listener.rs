//! The accept loop of both listeners: connections served with hyper's HTTP/1.1 server under
//! per-listener limits.
//!
//! `axum::serve` builds hyper without a timer, which silently drops hyper's header-read
//! timeout, and has no connection cap: a client opening thousands of connections and sending
//! half a request head on each held them forever, up to the file-descriptor limit, where
//! `accept` failed for everyone (`/livez` included). Here each listener serves its own
//! connections with `hyper::server::conn::http1` (through `hyper-util`'s tokio glue) and
//! these limits, from `[http.api]` and `[http.ops]` (see [`ListenerLimits`]):
//!
//! - **Connection cap** (`max_connections`): a semaphore per listener. A connection accepted
//!   while the cap is reached is closed at once (the client reads EOF), counted in
//!   `weir.http.connections.refused{listener}` and logged (at most one warning every 10 s).
//!   The two listeners have separate caps, so a flood of the API listener never takes the
//!   operations listener's slots: `/livez` and `/readyz` keep answering.
//! - **Header-read timeout** (`header_read_timeout_ms`): hyper's own, driven by a tokio
//!   timer. A request head (request line and headers) not complete within it closes the
//!   connection without a response. hyper starts the timer when it begins waiting for a head,
//!   which on a kept-alive connection is right after the previous response.
//! - **Idle timeout** (`idle_timeout_ms`): a connection with no request in progress (none
//!   being handled since the last response was produced) for this long is closed. A request
//!   head that started to arrive is left to the header-read timeout.
//! - **Largest request head** (`max_header_bytes`): hyper's `max_header_size` (and its read
//!   buffer, `max_buf_size`); a larger head gets `431` and the connection is closed.
//!
//! Every connection closed is counted in `weir.http.connections.closed{listener, reason}`
//! (`reason`: `closed` by the client or after `Connection: close`, `header_timeout`,
//! `idle_timeout`, `shutdown`, `bad_request` for an unparsable or too large head, `error`);
//! `weir.http.connections.open{listener}` is the number open now.
//!
//! **HTTP versions**: HTTP/1.0 and HTTP/1.1 only, by choice: hyper's HTTP/1 connection
//! does not serve HTTP/2, whatever features the workspace unifies into hyper (the test crate
//! pulls in tonic's HTTP/2 server). A client sending the HTTP/2 preface (`curl
//! --http2-prior-knowledge`) gets the connection closed without a response (`bad_request`).
//!
//! **Graceful shutdown**: when the listener token fires, the socket is closed (no new
//! connections), every connection is told to finish (hyper's graceful shutdown: an idle
//! keep-alive connection closes at once, one with a request in progress closes after its
//! response), and the listener task ends when the last connection has closed. Aborting the
//! task (the drain's last resort) aborts its connections.
//!
//! Each request carries `ConnectInfo<SocketAddr>` (the rate limit keys clients by peer
//! address). Each connection's task counts in [`super::waiting::Waiting`] while it is woken
//! and waits for a server thread (the inline rule of plugin calls reads it).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::response::Response;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, UpDownCounter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::http::ListenerLimits;

/// Pause after an `accept` failure that is not about one connection (out of file
/// descriptors, for instance), so the loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// At most one warning per listener about refused connections or accept failures per this.
const WARN_EVERY: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct Instruments {
    open: UpDownCounter<i64>,
    refused: Counter<u64>,
    closed: Counter<u64>,
    accept_errors: Counter<u64>,
}

impl Instruments {
    fn new() -> Self {
        let meter = opentelemetry::global::meter("weir.http");
        Self {
            open: meter
                .i64_up_down_counter("weir.http.connections.open")
                .with_description("Connections open, by listener")
                .build(),
            refused: meter
                .u64_counter("weir.http.connections.refused")
                .with_description(
                    "Connections closed at once because the listener's max_connections was reached",
                )
                .build(),
            closed: meter
                .u64_counter("weir.http.connections.closed")
                .with_description("Connections closed, by listener and reason")
                .build(),
            accept_errors: meter
                .u64_counter("weir.http.accept_errors")
                .with_description("Failed accept calls, by listener")
                .build(),
        }
    }
}

/// One listener's name (`api` or `ops`, the `listener` label), socket, routes and limits.
pub struct Listener {
    /// `api` or `ops`.
    pub name: &'static str,
    /// The bound socket.
    pub socket: TcpListener,
    /// What it serves.
    pub router: Router,
    /// Its connection limits.
    pub limits: ListenerLimits,
    /// Where its connections count while they wait for a server thread.
    pub waiting: super::waiting::Waiting,
}

impl Listener {
    /// Serve until `stop` fires and the last connection has closed (see the module doc).
    pub fn spawn(self, stop: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(self.run(stop))
    }

    async fn run(self, stop: CancellationToken) {
        let Self {
            name,
            socket,
            router,
            limits,
            waiting,
        } = self;
        let instruments = Instruments::new();
        let label = [KeyValue::new("listener", name)];
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .keep_alive(true)
            .header_read_timeout(limits.header_read_timeout)
            .max_header_size(limits.max_header_bytes)
            .max_buf_size(limits.max_header_bytes.max(MIN_BUF));
        let conn = Arc::new(Connection {
            listener: name,
            http,
            router,
            idle_timeout: limits.idle_timeout,
            stop: stop.clone(),
            instruments: instruments.clone(),
        });
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        let mut connections = JoinSet::new();
        let mut refused_since_warning = 0u64;
        let mut last_warning: Option<Instant> = None;
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                Some(joined) = connections.join_next(), if !connections.is_empty() => {
                    if let Err(e) = joined
                        && e.is_panic()
                    {
                        tracing::error!(listener = name, error = %e, "a connection task panicked");
                    }
                }
                accepted = socket.accept() => match accepted {
                    Ok((stream, peer)) => match slots.clone().try_acquire_owned() {
                        Ok(slot) => {
                            connections.spawn(waiting.track(conn.clone().serve(stream, peer, slot)));
                        }
                        Err(_) => {
                            // Closed at once: the client reads EOF.
                            drop(stream);
                            instruments.refused.add(1, &label);
                            refused_since_warning += 1;
                            if last_warning.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                                tracing::warn!(
                                    listener = name,
                                    max_connections = limits.max_connections,
                                    refused = refused_since_warning,
                                    "connection cap reached: refusing new connections"
                                );
                                last_warning = Some(Instant::now());
                                refused_since_warning = 0;
                            }
                        }
                    },
                    Err(e) => {
                        instruments.accept_errors.add(1, &label);
                        if last_warning.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                            tracing::warn!(listener = name, error = %e, "accept failed");
                            last_warning = Some(Instant::now());
                        }
                        if !is_connection_error(&e) {
                            tokio::time::sleep(ACCEPT_BACKOFF).await;
                        }
                    }
                },
            }
        }
        // Stop accepting: close the socket, then let every connection finish (each got
        // `stop` too and shuts down gracefully).
        drop(socket);
        tracing::debug!(
            listener = name,
            open = connections.len(),
            "listener closed; waiting for its connections"
        );
        while connections.join_next().await.is_some() {}
    }
}

/// hyper's smallest read buffer (`max_buf_size` panics below it).
const MIN_BUF: usize = 8192;

/// Errors of one connection (reset before it was accepted): accept again at once.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// What every connection of one listener shares.
struct Connection {
    listener: &'static str,
    http: http1::Builder,
    router: Router,
    idle_timeout: Duration,
    stop: CancellationToken,
    instruments: Instruments,
}

/// Counts the connection open from creation to drop (also when its task is aborted).
struct OpenGuard {
    open: UpDownCounter<i64>,
    label: [KeyValue; 1],
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.open.add(-1, &self.label);
    }
}

/// A request being handled on a connection: counted from the parsed head until the
/// response is produced (or the request is dropped).
struct InProgress(watch::Sender<usize>);

impl InProgress {
    fn start(requests: &watch::Sender<usize>) -> Self {
        requests.send_modify(|n| *n += 1);
        Self(requests.clone())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Resolves once no request has been in progress for `timeout`.
async fn idle_for(mut requests: watch::Receiver<usize>, timeout: Duration) {
    loop {
        let in_progress = *requests.borrow_and_update();
        let changed = if in_progress == 0 {
            match tokio::time::timeout(timeout, requests.changed()).await {
                Err(_) => return,
                Ok(changed) => changed,
            }
        } else {
            requests.changed().await
        };
        if changed.is_err() {
            // The connection's service is gone: it is closing anyway.
            std::future::pending::<()>().await;
        }
    }
}

impl Connection {
    async fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        _slot: OwnedSemaphorePermit,
    ) {
        let label = [KeyValue::new("listener", self.listener)];
        self.instruments.open.add(1, &label);
        let _open = OpenGuard {
            open: self.instruments.open.clone(),
            label: label.clone(),
        };
        let _ = stream.set_nodelay(true);
        let (requests, watch_requests) = watch::channel(0usize);
        let router = self.router.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let in_progress = InProgress::start(&requests);
            let router = router.clone();
            async move {
                let res: Result<Response, Infallible> = router.oneshot(req).await;
                drop(in_progress);
                res
            }
        });
        let conn = self.http.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(conn);
        let idle = idle_for(watch_requests, self.idle_timeout);
        tokio::pin!(idle);
        let mut ending: Option<&'static str> = None;
        let served = loop {
            tokio::select! {
                served = conn.as_mut() => break served,
                () = self.stop.cancelled(), if ending.is_none() => {
                    ending = Some("shutdown");
                    conn.as_mut().graceful_shutdown();
                }
                () = &mut idle, if ending.is_none() => {
                    ending = Some("idle_timeout");
                    conn.as_mut().graceful_shutdown();
                }
            }
        };
        let reason = match &served {
            Ok(()) => ending.unwrap_or("closed"),
            Err(e) if e.is_timeout() => "header_timeout",
            Err(e) if e.is_parse() || e.is_parse_too_large() => "bad_request",
            Err(e) if e.is_incomplete_message() || e.is_closed() || e.is_canceled() => "closed",
            Err(_) => "error",
        };
        if let Err(e) = &served {
            tracing::debug!(listener = self.listener, peer = %peer, reason, error = %e, "connection closed");
        }
        self.instruments.closed.add(
            1,
            &[
                KeyValue::new("listener", self.listener),
                KeyValue::new("reason", reason),
            ],
        );
    }
}

/// The soft limit on open files of this process (`/proc/self/limits`), where known.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_time_counts_from_the_end_of_the_last_request() {
        let (requests, watched) = watch::channel(0usize);
        let started = Instant::now();
        let idle = tokio::spawn(idle_for(watched, Duration::from_secs(5)));
        tokio::time::sleep(Duration::from_secs(3)).await;
        let request = InProgress::start(&requests);
        // A request longer than the idle timeout: the connection is not idle meanwhile.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!idle.is_finished());
        drop(request);
        idle.await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(18));
    }

    #[test]
    fn the_open_files_limit_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(open_files_limit().is_some_and(|n| n > 0));
        }
    }
}
