//! Rate limiting per client: `429 RATE_LIMITED` with `Retry-After` and `RateLimit-*` headers.
//!
//! The key is the tenant when `policy.request_log.tenant_header` is configured and present,
//! else the API key (`X-Api-Key`, hashed: raw keys are never held in the limiter's
//! map) when present, otherwise the peer IP address (from axum's `ConnectInfo`, which the
//! listeners' accept loop, `server::listener`, puts on every request). Each key has
//! a GCRA bucket from `governor` (keyed, DashMap state): `per_second` sustained with bursts
//! up to `burst`. Idle keys are purged (`retain_recent`) every few thousand requests, so the
//! map stays bounded by the number of recently active clients.
//!
//! `governor` is used directly rather than through `tower_governor`: the rejection has to be
//! our problem response (rendered by the request-context middleware) and the key rule is ours;
//! what is left of `tower_governor` would be its key extractor trait.
//!
//! The hashed API key is computed once per request: the request log, outside this layer,
//! records it as a [`ClientKey`] request extension, which this layer reads (and computes only
//! when absent, e.g. with the request log disabled).
//!
//! Headers (IETF `RateLimit` header fields, draft 7 names): `RateLimit-Limit` (the burst),
//! `RateLimit-Remaining` and `RateLimit-Reset` (seconds until a request will be admitted) on
//! every response of a limited route.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use http::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tower::{Layer, Service};

use super::refusal;

/// This policy's refusal: the client's bucket is empty. Carried in the response extensions
/// of the `429` it answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limit exceeded; retry in {}ms", retry_after.as_millis())]
pub struct RateLimited {
    /// When the next request of this client will be admitted (whole seconds, rounded up).
    pub retry_after: Duration,
}

/// Header carrying the client's API key.
pub const API_KEY: &str = "x-api-key";

/// Settings of the edge rate limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Off switch.
    pub enabled: bool,
    /// Sustained requests per second per client.
    pub per_second: u32,
    /// Requests a client may send at once after being idle.
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            per_second: 1000,
            burst: 2000,
        }
    }
}

/// A bucket's key ([`rate_key`]): reference-counted, so the client key recorded by the request
/// log is used as it is.
type Key = Arc<str>;
type Limiter =
    RateLimiter<Key, DefaultKeyedStateStore<Key>, DefaultClock, StateInformationMiddleware>;

struct Shared {
    tenant: Option<HeaderName>,
    limiter: Limiter,
    clock: DefaultClock,
    burst: u32,
    seen: AtomicU64,
}

/// Rate-limit requests by client key.
#[derive(Clone)]
pub struct RateLimitLayer {
    shared: Option<Arc<Shared>>,
}

impl std::fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("enabled", &self.shared.is_some())
            .finish_non_exhaustive()
    }
}

impl RateLimitLayer {
    /// A limiter as configured (a pass-through when disabled), keyed by `tenant_header`
    /// when set: that header must come from a trusted gateway, as clients could forge it.
    pub fn new(config: &RateLimitConfig, tenant_header: Option<&str>) -> Self {
        let tenant = tenant_header
            .and_then(|h| HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).ok());
        let shared = config.enabled.then(|| {
            let per_second = NonZeroU32::new(config.per_second.max(1)).unwrap_or(NonZeroU32::MIN);
            let burst = NonZeroU32::new(config.burst.max(1)).unwrap_or(NonZeroU32::MIN);
            let quota = Quota::per_second(per_second).allow_burst(burst);
            let clock = DefaultClock::default();
            Arc::new(Shared {
                tenant,
                limiter: RateLimiter::dashmap_with_clock(quota, clock.clone())
                    .with_middleware::<StateInformationMiddleware>(),
                clock,
                burst: burst.get(),
                seen: AtomicU64::new(0),
            })
        });
        Self { shared }
    }
}

/// The rate-limit key of a request: the tenant (when a tenant header is configured and
/// present), else the client key ([`ClientKey::of`]: hashed API key, else peer IP, else
/// `unknown`).
pub fn rate_key(req: &Request, tenant: Option<&HeaderName>) -> Arc<str> {
    if let Some(t) = tenant.and_then(|h| req.headers().get(h)) {
        let digest = Sha256::digest(t.as_bytes());
        return Arc::from(format!("tenant:{}", hex::encode(&digest[..12])));
    }
    ClientKey::of(req)
}

/// The client key of a request ([`client_key`]) as a request extension: the outermost layer
/// that needs it computes it once and records it ([`ClientKey::attach`]), the layers below
/// read it ([`ClientKey::of`]) instead of hashing the API key again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientKey(pub Arc<str>);

impl ClientKey {
    /// The key an outer layer recorded on `req`, else computed from it.
    pub fn of(req: &Request) -> Arc<str> {
        match req.extensions().get::<ClientKey>() {
            Some(ClientKey(key)) => key.clone(),
            None => Arc::from(client_key(req)),
        }
    }

    /// [`ClientKey::of`], recorded on `req` for the layers below.
    pub fn attach(req: &mut Request) -> Arc<str> {
        let key = Self::of(req);
        req.extensions_mut().insert(ClientKey(key.clone()));
        key
    }
}

/// The client of a request: hashed API key, else peer IP, else `unknown`.
pub fn client_key(req: &Request) -> String {
    if let Some(key) = req.headers().get(API_KEY) {
        let digest = Sha256::digest(key.as_bytes());
        return format!("key:{}", hex::encode(&digest[..12]));
    }
    match req.extensions().get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(addr)) => format!("ip:{}", addr.ip()),
        None => "unknown".to_owned(),
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// See [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    shared: Option<Arc<Shared>>,
}

fn set(response: &mut Response, name: &'static str, value: u64) {
    response
        .headers_mut()
        .insert(name, HeaderValue::from(value));
}

impl<S> Service<Request> for RateLimit<S>
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
        let Some(shared) = self.shared.clone() else {
            return Box::pin(self.inner.call(req));
        };
        if shared.seen.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            shared.limiter.retain_recent();
            shared.limiter.shrink_to_fit();
        }
        let key = rate_key(&req, shared.tenant.as_ref());
        match shared.limiter.check_key(&key) {
            Ok(snapshot) => {
                let remaining = u64::from(snapshot.remaining_burst_capacity());
                let fut = self.inner.call(req);
                Box::pin(async move {
                    let mut response = fut.await?;
                    set(&mut response, "ratelimit-limit", u64::from(shared.burst));
                    set(&mut response, "ratelimit-remaining", remaining);
                    set(&mut response, "ratelimit-reset", 0);
                    Ok(response)
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(shared.clock.now());
                // Whole seconds, rounded up: a client that waits Retry-After is admitted.
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let mut response = refusal(
                    http::StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit",
                    RateLimited {
                        retry_after: Duration::from_secs(secs.max(1)),
                    },
                );
                set(&mut response, "ratelimit-limit", u64::from(shared.burst));
                set(&mut response, "ratelimit-remaining", 0);
                set(&mut response, "ratelimit-reset", secs.max(1));
                Box::pin(std::future::ready(Ok(response)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    fn req(key: Option<&str>, peer: [u8; 4]) -> Request {
        let mut r = Request::builder().uri("/x");
        if let Some(k) = key {
            r = r.header(API_KEY, k);
        }
        let mut r = r.body(Body::empty()).unwrap();
        r.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((peer, 4000))));
        r
    }

    #[tokio::test]
    async fn each_client_gets_its_burst_then_429_with_headers() {
        let app = Router::new()
            .route("/x", get(|| async { "ok" }))
            .layer(RateLimitLayer::new(
                &RateLimitConfig {
                    enabled: true,
                    per_second: 1,
                    burst: 2,
                },
                None,
            ));
        for remaining in ["1", "0"] {
            let res = app
                .clone()
                .oneshot(req(Some("k1"), [10, 0, 0, 1]))
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            assert_eq!(res.headers()["ratelimit-limit"], "2");
            assert_eq!(res.headers()["ratelimit-remaining"], remaining);
        }
        let res = app
            .clone()
            .oneshot(req(Some("k1"), [10, 0, 0, 1]))
            .await
            .unwrap();
        assert_eq!(res.status(), 429);
        assert_eq!(
            res.extensions().get::<RateLimited>(),
            Some(&RateLimited {
                retry_after: Duration::from_secs(1)
            })
        );
        assert_eq!(res.headers()["ratelimit-remaining"], "0");
        assert_eq!(res.headers()["ratelimit-reset"], "1");
        // Another API key from the same address has its own bucket; so does another address
        // without a key; the same address without a key is a third client.
        for (key, peer) in [
            (Some("k2"), [10, 0, 0, 1]),
            (None, [10, 0, 0, 2]),
            (None, [10, 0, 0, 1]),
        ] {
            assert_eq!(
                app.clone().oneshot(req(key, peer)).await.unwrap().status(),
                200
            );
        }
    }

    #[tokio::test]
    async fn a_configured_tenant_header_is_the_key() {
        let app = Router::new()
            .route("/x", get(|| async { "ok" }))
            .layer(RateLimitLayer::new(
                &RateLimitConfig {
                    enabled: true,
                    per_second: 1,
                    burst: 1,
                },
                Some("X-Tenant-Id"),
            ));
        let tenant_req = |key: &str| {
            let mut r = req(Some(key), [10, 0, 0, 9]);
            r.headers_mut()
                .insert("x-tenant-id", HeaderValue::from_static("acme"));
            r
        };
        assert_eq!(
            app.clone()
                .oneshot(tenant_req("k1"))
                .await
                .unwrap()
                .status(),
            200
        );
        // Another key of the same tenant shares the tenant's bucket.
        assert_eq!(
            app.clone()
                .oneshot(tenant_req("k2"))
                .await
                .unwrap()
                .status(),
            429
        );
        // Without the header the API key is the client again.
        assert_eq!(
            app.oneshot(req(Some("k2"), [10, 0, 0, 9]))
                .await
                .unwrap()
                .status(),
            200
        );
    }

    #[tokio::test]
    async fn a_client_key_recorded_by_an_outer_layer_is_the_key() {
        let app = Router::new()
            .route("/x", get(|| async { "ok" }))
            .layer(RateLimitLayer::new(
                &RateLimitConfig {
                    enabled: true,
                    per_second: 1,
                    burst: 1,
                },
                None,
            ));
        let recorded = |key: &str| {
            let mut r = req(Some(key), [10, 0, 0, 7]);
            r.extensions_mut()
                .insert(ClientKey(Arc::from("key:recorded")));
            r
        };
        assert_eq!(
            app.clone().oneshot(recorded("k1")).await.unwrap().status(),
            200
        );
        // Another API key, but the recorded client key is the same: the same bucket.
        assert_eq!(
            app.clone().oneshot(recorded("k2")).await.unwrap().status(),
            429
        );
        // Without the extension the key is hashed here: its own bucket.
        assert_eq!(
            app.oneshot(req(Some("k2"), [10, 0, 0, 7]))
                .await
                .unwrap()
                .status(),
            200
        );
    }

    #[test]
    fn the_recorded_client_key_is_the_computed_one() {
        let mut r = req(Some("secret"), [1, 2, 3, 4]);
        let computed = client_key(&r);
        assert_eq!(&*ClientKey::attach(&mut r), computed);
        assert_eq!(
            r.extensions().get::<ClientKey>(),
            Some(&ClientKey(Arc::from(computed.as_str())))
        );
        assert_eq!(&*rate_key(&r, None), computed);
    }

    #[test]
    fn keys_hash_api_keys_and_fall_back_to_the_peer() {
        assert!(client_key(&req(Some("secret"), [1, 2, 3, 4])).starts_with("key:"));
        assert!(!client_key(&req(Some("secret"), [1, 2, 3, 4])).contains("secret"));
        assert_eq!(client_key(&req(None, [1, 2, 3, 4])), "ip:1.2.3.4");
    }
}
