//! Structured request logging: one event per request, secrets and personal data redacted.
//!
//! Each request produces one `info` event with target `weir::access` inside the request span
//! (so it carries `request_id` and the trace id like every other line): `method`, `route`
//! (the template, never the raw path), `status`, `duration_ms`, `client` (the authenticated
//! principal's key, else the peer IP), `tenant` (of the authenticated principal, from the
//! [`Caller`] the authentication layer leaves on the response), and `headers` restricted to
//! an allow-list.
//!
//! Redaction by default: `Authorization`, `Cookie`, `Set-Cookie`, `Proxy-Authorization` and
//! the API key header are never written, even when allow-listed (`[redacted]`); the
//! `Idempotency-Key` and a `customer_id` query parameter are written only as hashes
//! (`idempotency_key_hash`, `customer_id_hash`) so one client's requests can be correlated
//! without storing the values. Hashes are SHA-256 with a random per-process salt, truncated:
//! stable within one process, not reversible by a dictionary of customer ids.
//!
//! The peer key is recorded on the request as a [`ClientKey`] extension, which the rate limit
//! (inside this layer) reads rather than computing it again.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use http::HeaderName;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tower::{Layer, Service};

use super::rate_limit::{Caller, ClientKey};

/// Settings of the request log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RequestLogConfig {
    /// Off switch.
    pub enabled: bool,
    /// Request headers written verbatim (lower-case names); secrets are redacted anyway.
    pub allow_headers: Vec<String>,
}

impl Default for RequestLogConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            allow_headers: vec!["user-agent".to_owned()],
        }
    }
}

const ALWAYS_REDACTED: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    super::rate_limit::API_KEY,
    "idempotency-key",
];

/// A salted, truncated hash for correlating values that must not be logged.
pub fn pseudonym(value: &[u8]) -> String {
    static SALT: OnceLock<[u8; 16]> = OnceLock::new();
    let salt = SALT.get_or_init(|| {
        let mut s = [0u8; 16];
        s.iter_mut().for_each(|b| *b = fastrand::u8(..));
        s
    });
    let mut h = Sha256::new();
    h.update(salt);
    h.update(value);
    hex::encode(&h.finalize()[..8])
}

/// Log one event per request.
#[derive(Debug, Clone)]
pub struct RequestLogLayer {
    allow: Option<Arc<Vec<HeaderName>>>,
}

impl RequestLogLayer {
    /// A request log as configured (a pass-through when disabled).
    pub fn new(config: &RequestLogConfig) -> Self {
        let allow = config.enabled.then(|| {
            Arc::new(
                config
                    .allow_headers
                    .iter()
                    .filter_map(|h| HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).ok())
                    .collect(),
            )
        });
        Self { allow }
    }
}

impl<S> Layer<S> for RequestLogLayer {
    type Service = RequestLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestLog {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`RequestLogLayer`].
#[derive(Debug, Clone)]
pub struct RequestLog<S> {
    inner: S,
    layer: RequestLogLayer,
}

fn headers_field(req: &Request, allow: &[HeaderName]) -> String {
    let mut out = serde_json::Map::new();
    for name in allow {
        if let Some(v) = req.headers().get(name) {
            let shown = if ALWAYS_REDACTED.contains(&name.as_str()) {
                "[redacted]".to_owned()
            } else {
                String::from_utf8_lossy(v.as_bytes())
                    .chars()
                    .take(256)
                    .collect()
            };
            out.insert(name.as_str().to_owned(), shown.into());
        }
    }
    serde_json::Value::Object(out).to_string()
}

fn customer_id(req: &Request) -> Option<String> {
    form_urlencoded::parse(req.uri().query()?.as_bytes())
        .find(|(k, _)| k == "customer_id")
        .map(|(_, v)| pseudonym(v.as_bytes()))
}

impl<S> Service<Request> for RequestLog<S>
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

    fn call(&mut self, mut req: Request) -> Self::Future {
        let Some(allow) = self.layer.allow.clone() else {
            return Box::pin(self.inner.call(req));
        };
        let method = req.method().to_string();
        // A reference-counted copy of the template, not a new string.
        let route = req.extensions().get::<MatchedPath>().cloned();
        // Hashed once here, for this log line and the rate limit below.
        let client = ClientKey::attach(&mut req);
        let idempotency = req
            .headers()
            .get("idempotency-key")
            .map(|v| pseudonym(v.as_bytes()));
        let customer = customer_id(&req);
        let headers = headers_field(&req, &allow);
        let started = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let response = fut.await?;
            let caller = response.extensions().get::<Caller>();
            let client = caller.map_or(&client, |c| &c.key);
            let tenant = caller.map(|c| &*c.tenant);
            tracing::info!(
                target: "weir::access",
                method = %method,
                route = %route.as_ref().map_or("unmatched", MatchedPath::as_str),
                status = response.status().as_u16(),
                duration_ms = started.elapsed().as_secs_f64() * 1e3,
                client = %client,
                tenant = tenant,
                idempotency_key_hash = idempotency.as_deref(),
                customer_id_hash = customer.as_deref(),
                headers = %headers,
                "request"
            );
            Ok(response)
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
    use crate::support::captured_log::CapturedLog;

    #[tokio::test]
    async fn one_line_per_request_with_secrets_and_personal_data_redacted() {
        let buf = CapturedLog::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(buf.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let app = Router::new()
            .route("/v1/orders/{id}", get(|| async { "ok" }))
            // What the authentication layer (inside the log) leaves on the response.
            .layer(axum::middleware::map_response(
                |mut r: axum::response::Response| async move {
                    r.extensions_mut().insert(Caller {
                        tenant: Arc::from("acme"),
                        key: Arc::from("p:acme:key:1"),
                    });
                    r
                },
            ))
            .layer(RequestLogLayer::new(&RequestLogConfig {
                enabled: true,
                allow_headers: vec!["user-agent".into(), "authorization".into()],
            }));
        let req = || {
            Request::builder()
                .uri("/v1/orders/0190a1b2-c3d4?customer_id=cus_alice")
                .header("authorization", "Bearer hunter2")
                .header("cookie", "session=s3cr3t")
                .header("x-api-key", "key-123")
                .header("idempotency-key", "idem-xyz")
                .header("user-agent", "curl/8")
                .body(Body::empty())
                .unwrap()
        };
        assert_eq!(app.clone().oneshot(req()).await.unwrap().status(), 200);
        if buf.text().is_empty() {
            // `tracing` caches a callsite's interest globally. Another test thread that hits
            // this callsite for the first time with no subscriber, while this thread installs
            // its scoped one, can leave "never" cached (a race inside `tracing`, seen under
            // parallel filtered runs). Recompute the cache now that both exist and ask again:
            // still exactly one line per request is required.
            tracing::callsite::rebuild_interest_cache();
            assert_eq!(app.oneshot(req()).await.unwrap().status(), 200);
        }

        let text = buf.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let line: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(line["route"], "/v1/orders/{id}");
        assert_eq!(line["status"], 200);
        assert_eq!(line["tenant"], "acme");
        assert_eq!(line["client"], "p:acme:key:1");
        assert_eq!(line["idempotency_key_hash"], pseudonym(b"idem-xyz"));
        assert_eq!(line["customer_id_hash"], pseudonym(b"cus_alice"));
        let headers: serde_json::Value =
            serde_json::from_str(line["headers"].as_str().unwrap()).unwrap();
        assert_eq!(headers["user-agent"], "curl/8");
        assert_eq!(headers["authorization"], "[redacted]");
        for secret in [
            "hunter2",
            "s3cr3t",
            "key-123",
            "idem-xyz",
            "cus_alice",
            "0190a1b2",
        ] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
    }

    #[tokio::test]
    async fn the_client_key_is_recorded_for_the_layers_below() {
        let app = Router::new()
            .route(
                "/x",
                get(|req: Request| async move {
                    req.extensions()
                        .get::<ClientKey>()
                        .map(|ClientKey(k)| k.to_string())
                        .unwrap_or_default()
                }),
            )
            .layer(RequestLogLayer::new(&RequestLogConfig::default()));
        let req = || {
            Request::builder()
                .uri("/x")
                .header("x-api-key", "key-123")
                .body(Body::empty())
                .unwrap()
        };
        let expected = crate::policy::rate_limit::client_key(&req());
        let response = app.oneshot(req()).await.unwrap();
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(body, expected.as_bytes());
    }
}
