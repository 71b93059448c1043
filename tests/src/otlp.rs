//! An OTLP receiver for tests: the gRPC traces, metrics and logs services and the
//! OTLP/HTTP protobuf endpoints (`POST /v1/{traces,metrics,logs}`), each on its own
//! `127.0.0.1:0` port, storing every decoded export with the resource it came with.
//!
//! Tests wait for what they expect with [`Receiver::wait_for`], which re-checks a predicate
//! each time an export arrives and fails with a clear message (and what did arrive) at a
//! deadline: no sleeps.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use tokio::sync::{oneshot, watch};
use tonic::{Request, Response, Status};

pub use opentelemetry_proto::tonic::logs::v1::LogRecord;
pub use opentelemetry_proto::tonic::trace::v1::Span;

/// Attributes as strings (ints, bools and doubles formatted, arrays as JSON-ish text).
pub type Attributes = BTreeMap<String, String>;

fn any_to_string(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::ArrayValue(a)) => format!(
            "[{}]",
            a.values
                .iter()
                .map(any_to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// Key/values as a map of strings.
pub fn attributes(kvs: &[KeyValue]) -> Attributes {
    kvs.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(any_to_string).unwrap_or_default(),
            )
        })
        .collect()
}

fn resource_of(r: Option<&Resource>) -> Attributes {
    r.map(|r| attributes(&r.attributes)).unwrap_or_default()
}

/// One received span with its resource and scope.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// Resource attributes of the export.
    pub resource: Attributes,
    /// Instrumentation scope name.
    pub scope: String,
    /// The span as decoded.
    pub span: Span,
}

impl ReceivedSpan {
    /// Span name.
    pub fn name(&self) -> &str {
        &self.span.name
    }
    /// Trace id, 32 hex digits.
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }
    /// Span id, 16 hex digits.
    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }
    /// Parent span id, or empty for a root.
    pub fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
    /// Span attributes.
    pub fn attrs(&self) -> Attributes {
        attributes(&self.span.attributes)
    }
    /// One attribute.
    pub fn attr(&self, key: &str) -> Option<String> {
        self.attrs().remove(key)
    }
    /// One attribute, only when it was exported as an integer (`intValue`).
    pub fn int_attr(&self, key: &str) -> Option<i64> {
        self.span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| match kv.value.as_ref()?.value {
                Some(any_value::Value::IntValue(i)) => Some(i),
                _ => None,
            })
    }
}

/// One received log record with its resource.
#[derive(Debug, Clone)]
pub struct ReceivedLog {
    /// Resource attributes of the export.
    pub resource: Attributes,
    /// The record as decoded.
    pub record: LogRecord,
}

impl ReceivedLog {
    /// Body as text.
    pub fn body(&self) -> String {
        self.record
            .body
            .as_ref()
            .map(any_to_string)
            .unwrap_or_default()
    }
    /// Trace id, 32 hex digits (empty when uncorrelated).
    pub fn trace_id(&self) -> String {
        hex(&self.record.trace_id)
    }
    /// Span id, 16 hex digits (empty when uncorrelated).
    pub fn span_id(&self) -> String {
        hex(&self.record.span_id)
    }
    /// Record attributes.
    pub fn attrs(&self) -> Attributes {
        attributes(&self.record.attributes)
    }
}

/// One received metric (name only: tests check presence and resource).
#[derive(Debug, Clone)]
pub struct ReceivedMetric {
    /// Resource attributes of the export.
    pub resource: Attributes,
    /// Instrumentation scope name.
    pub scope: String,
    /// Metric name.
    pub name: String,
}

/// Hex of bytes (ids).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Everything received so far.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// Spans in arrival order.
    pub spans: Vec<ReceivedSpan>,
    /// Log records in arrival order.
    pub logs: Vec<ReceivedLog>,
    /// Metrics in arrival order (one entry per metric per export).
    pub metrics: Vec<ReceivedMetric>,
    /// Every export request of any signal as received, in its `Debug` text: resources,
    /// scopes, attributes, span events and links, log bodies, metric data points and their
    /// attributes. For scans of everything that crossed the wire (the fields above keep only
    /// what the assertions of the other tests read).
    pub exports: Vec<String>,
}

impl Received {
    /// Spans of one trace.
    pub fn trace(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        self.spans
            .iter()
            .filter(|s| s.trace_id() == trace_id)
            .cloned()
            .collect()
    }

    fn summary(&self) -> String {
        let spans: Vec<String> = self
            .spans
            .iter()
            .map(|s| format!("{} {}", s.trace_id(), s.name()))
            .collect();
        let mut metrics: Vec<&str> = self.metrics.iter().map(|m| m.name.as_str()).collect();
        metrics.sort_unstable();
        metrics.dedup();
        format!(
            "{} spans {spans:?}; {} log records; metrics {metrics:?}",
            self.spans.len(),
            self.logs.len()
        )
    }
}

#[derive(Clone)]
struct Sink {
    received: Arc<Mutex<Received>>,
    changed: Arc<watch::Sender<u64>>,
}

impl Sink {
    fn push(&self, f: impl FnOnce(&mut Received)) {
        f(&mut self.received.lock().expect("receiver lock"));
        self.changed.send_modify(|n| *n += 1);
    }
}

impl Sink {
    fn traces(&self, req: ExportTraceServiceRequest) {
        self.push(|r| {
            r.exports.push(format!("{req:?}"));
            for rs in req.resource_spans {
                let resource = resource_of(rs.resource.as_ref());
                for ss in rs.scope_spans {
                    let scope = ss.scope.map(|s| s.name).unwrap_or_default();
                    for span in ss.spans {
                        r.spans.push(ReceivedSpan {
                            resource: resource.clone(),
                            scope: scope.clone(),
                            span,
                        });
                    }
                }
            }
        });
    }

    fn logs(&self, req: ExportLogsServiceRequest) {
        self.push(|r| {
            r.exports.push(format!("{req:?}"));
            for rl in req.resource_logs {
                let resource = resource_of(rl.resource.as_ref());
                for sl in rl.scope_logs {
                    for record in sl.log_records {
                        r.logs.push(ReceivedLog {
                            resource: resource.clone(),
                            record,
                        });
                    }
                }
            }
        });
    }

    fn metrics(&self, req: ExportMetricsServiceRequest) {
        self.push(|r| {
            r.exports.push(format!("{req:?}"));
            for rm in req.resource_metrics {
                let resource = resource_of(rm.resource.as_ref());
                for sm in rm.scope_metrics {
                    let scope = sm.scope.map(|s| s.name).unwrap_or_default();
                    for m in sm.metrics {
                        r.metrics.push(ReceivedMetric {
                            resource: resource.clone(),
                            scope: scope.clone(),
                            name: m.name,
                        });
                    }
                }
            }
        });
    }
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.traces(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Sink {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        self.logs(request.into_inner());
        Ok(Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.metrics(request.into_inner());
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// `POST /v1/{signal}` with a binary protobuf body (OTLP/HTTP).
async fn http_export(
    axum::extract::State(sink): axum::extract::State<Sink>,
    axum::extract::Path(signal): axum::extract::Path<String>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use prost::Message;
    let reply = |bytes: Vec<u8>| {
        (
            [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
            bytes,
        )
            .into_response()
    };
    let bad = |e: prost::DecodeError| {
        (axum::http::StatusCode::BAD_REQUEST, e.to_string()).into_response()
    };
    match signal.as_str() {
        "traces" => match ExportTraceServiceRequest::decode(body) {
            Ok(req) => {
                sink.traces(req);
                reply(ExportTraceServiceResponse::default().encode_to_vec())
            }
            Err(e) => bad(e),
        },
        "logs" => match ExportLogsServiceRequest::decode(body) {
            Ok(req) => {
                sink.logs(req);
                reply(ExportLogsServiceResponse::default().encode_to_vec())
            }
            Err(e) => bad(e),
        },
        "metrics" => match ExportMetricsServiceRequest::decode(body) {
            Ok(req) => {
                sink.metrics(req);
                reply(ExportMetricsServiceResponse::default().encode_to_vec())
            }
            Err(e) => bad(e),
        },
        _ => axum::http::StatusCode::NOT_FOUND.into_response(),
    }
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    http_addr: SocketAddr,
    sink: Sink,
    changed: watch::Receiver<u64>,
    stop: Option<oneshot::Sender<()>>,
    http_stop: Option<oneshot::Sender<()>>,
}

impl Receiver {
    /// Start on an ephemeral loopback port (inside a Tokio runtime).
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP receiver");
        let addr = listener.local_addr().expect("receiver address");
        let (tx, changed) = watch::channel(0);
        let sink = Sink {
            received: Arc::default(),
            changed: Arc::new(tx),
        };
        let http = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP/HTTP receiver");
        let http_addr = http.local_addr().expect("receiver address");
        let app = axum::Router::new()
            .route("/v1/{signal}", axum::routing::post(http_export))
            .with_state(sink.clone());
        let (http_stop, http_stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(http, app)
                .with_graceful_shutdown(async {
                    let _ = http_stopped.await;
                })
                .await;
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let router = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(sink.clone()))
            .add_service(LogsServiceServer::new(sink.clone()))
            .add_service(MetricsServiceServer::new(sink.clone()));
        tokio::spawn(async move {
            let _ = router
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await;
        });
        Self {
            addr,
            http_addr,
            sink,
            changed,
            stop: Some(stop),
            http_stop: Some(http_stop),
        }
    }

    /// `http://127.0.0.1:PORT`, for `OTEL_EXPORTER_OTLP_ENDPOINT` with the gRPC protocol.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT` of the OTLP/HTTP endpoints, for `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// with `http/protobuf` (the exporter appends `/v1/<signal>`).
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// A snapshot of everything received.
    pub fn received(&self) -> Received {
        self.sink.received.lock().expect("receiver lock").clone()
    }

    /// Wait until `check` returns `Some` for what has arrived, re-checking after every
    /// export; panic after `timeout` naming `what` and listing what did arrive.
    pub async fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Received) -> Option<T>,
    ) -> T {
        let mut changed = self.changed.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changed.borrow_and_update();
            let snapshot = self.received();
            if let Some(found) = check(&snapshot) {
                return found;
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => panic!(
                    "OTLP receiver: timed out after {timeout:?} waiting for {what}; received {}",
                    self.received().summary()
                ),
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        for stop in [self.stop.take(), self.http_stop.take()]
            .into_iter()
            .flatten()
        {
            let _ = stop.send(());
        }
    }
}

/// A collector that accepts TCP connections and never answers: it holds every accepted
/// socket open without reading from it or writing to it, so an exporter's request (OTLP/HTTP
/// or gRPC) waits for an answer that never comes. No RST, no FIN: the silent collector of a
/// hung or partitioned backend. Stops (and closes what it holds) when dropped.
pub struct Blackhole {
    addr: SocketAddr,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Blackhole {
    /// Listen on an ephemeral loopback port.
    pub fn start() -> Self {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the blackhole");
        listener
            .set_nonblocking(true)
            .expect("non-blocking blackhole listener");
        let addr = listener.local_addr().expect("blackhole address");
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let (accepted, stop) = (accepted.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut held = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((socket, _)) => {
                            held.push(socket);
                            accepted.fetch_add(1, Ordering::SeqCst);
                        }
                        // Polling keeps the thread stoppable; the sockets it holds are never
                        // touched.
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Self {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`, for `OTEL_EXPORTER_OTLP_ENDPOINT` (either protocol).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted (and held) so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
