//! Rate limiting per client: `429 RATE_LIMITED` with `Retry-After` and `RateLimit-*` headers.
//!
//! The key is the authenticated principal ([`Caller`], recorded by the authentication layer
//! outside this one: tenant and subject), and the peer IP address for everyone else (no
//! credential in `open` mode; from axum's `ConnectInfo`, which the listeners' accept loop,
//! `server::listener`, puts on every request). Nothing a client merely sends (an
//! `X-Api-Key` that was never verified, a tenant header) picks its bucket: a client that
//! invents a new key per request is still one peer. Each key has a GCRA bucket from
//! `governor` (keyed, DashMap state): `per_second` sustained with bursts up to `burst`, or the
//! tenant's own quota from `policy.rate_limit.tenants`. Idle keys are purged
//! (`retain_recent`) every few thousand requests, so the map stays bounded by the number of
//! recently active clients.
//!
//! `governor` is used directly rather than through `tower_governor`: the rejection has to be
//! our problem response (rendered by the request-context middleware) and the key rule is ours;
//! what is left of `tower_governor` would be its key extractor trait.
//!
//! The peer key is computed once per request: the request log, outside this layer, records
//! it as a [`ClientKey`] request extension, which this layer reads (and computes only when
//! absent, e.g. with the request log disabled).
//!
//! Headers (IETF `RateLimit` header fields, draft 7 names): `RateLimit-Limit` (the burst),
//! `RateLimit-Remaining` and `RateLimit-Reset` (seconds until a request will be admitted) on
//! every response of a limited route.

use std::collections::HashMap;
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
use http::HeaderValue;
use serde::{Deserialize, Serialize};
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

/// Header that may carry an API key (redacted from logs; never a rate-limit key by itself).
pub const API_KEY: &str = "x-api-key";

/// Who the edge policies see once the authentication layer has run: a request extension for
/// the layers inside it (this one) and a response extension for the ones outside (the
/// request log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The principal's tenant.
    pub tenant: Arc<str>,
    /// The bucket key: `p:<tenant>:<subject>` for an authenticated principal, the peer key
    /// for an anonymous one.
    pub key: Arc<str>,
}

/// A tenant's own quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantQuota {
    /// Sustained requests per second per principal of the tenant.
    pub per_second: u32,
    /// Requests a principal may send at once after being idle.
    pub burst: u32,
}

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
    /// Per-tenant quotas for the principals of these tenants, e.g.
    /// `[policy.rate_limit.tenants.acme] per_second = 50, burst = 100`.
    pub tenants: std::collections::BTreeMap<String, TenantQuota>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            per_second: 1000,
            burst: 2000,
            tenants: std::collections::BTreeMap::new(),
        }
    }
}

/// A bucket's key ([`rate_key`]): reference-counted, so the client key recorded by the request
/// log is used as it is.
type Key = Arc<str>;
type Limiter =
    RateLimiter<Key, DefaultKeyedStateStore<Key>, DefaultClock, StateInformationMiddleware>;

struct Bucket {
    limiter: Limiter,
    burst: u32,
}

impl Bucket {
    fn new(per_second: u32, burst: u32, clock: &DefaultClock) -> Self {
        let per_second = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Self {
            limiter: RateLimiter::dashmap_with_clock(quota, clock.clone())
                .with_middleware::<StateInformationMiddleware>(),
            burst: burst.get(),
        }
    }
}

struct Shared {
    default: Bucket,
    tenants: HashMap<String, Bucket>,
    clock: DefaultClock,
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
    /// A limiter as configured (a pass-through when disabled).
    pub fn new(config: &RateLimitConfig) -> Self {
        let shared = config.enabled.then(|| {
            let clock = DefaultClock::default();
            Arc::new(Shared {
                default: Bucket::new(config.per_second, config.burst, &clock),
                tenants: config
                    .tenants
                    .iter()
                    .map(|(t, q)| (t.clone(), Bucket::new(q.per_second, q.burst, &clock)))
                    .collect(),
                clock,
                seen: AtomicU64::new(0),
            })
        });
        Self { shared }
    }
}

/// A wait in whole seconds, rounded up and at least 1: what `Retry-After` says, so a client
/// that waits it is admitted.
pub fn whole_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// The rate-limit key of a request: the authenticated caller ([`Caller::key`]) when the
/// authentication layer recorded one, else the peer ([`ClientKey::of`]).
pub fn rate_key(req: &Request) -> Arc<str> {
    match req.extensions().get::<Caller>() {
        Some(caller) => caller.key.clone(),
        None => ClientKey::of(req),
    }
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

/// The peer of a request: its IP address, else `unknown`.
pub fn client_key(req: &Request) -> String {
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
            for bucket in std::iter::once(&shared.default).chain(shared.tenants.values()) {
                bucket.limiter.retain_recent();
                bucket.limiter.shrink_to_fit();
            }
        }
        let key = rate_key(&req);
        let bucket = req
            .extensions()
            .get::<Caller>()
            .and_then(|c| shared.tenants.get(&*c.tenant))
            .unwrap_or(&shared.default);
        let burst = bucket.burst;
        match bucket.limiter.check_key(&key) {
            Ok(snapshot) => {
                let remaining = u64::from(snapshot.remaining_burst_capacity());
                let fut = self.inner.call(req);
                Box::pin(async move {
                    let mut response = fut.await?;
                    set(&mut response, "ratelimit-limit", u64::from(burst));
                    set(&mut response, "ratelimit-remaining", remaining);
                    set(&mut response, "ratelimit-reset", 0);
                    Ok(response)
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(shared.clock.now());
                let secs = whole_seconds(wait);
                let mut response = refusal(
                    http::StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit",
                    RateLimited {
                        retry_after: Duration::from_secs(secs),
                    },
                );
                set(&mut response, "ratelimit-limit", u64::from(burst));
                set(&mut response, "ratelimit-remaining", 0);
                set(&mut response, "ratelimit-reset", secs);
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

    /// A request from `peer`, authenticated as `caller` (tenant, subject) when given.
    fn req(caller: Option<(&str, &str)>, peer: [u8; 4]) -> Request {
        let mut r = Request::builder()
            .uri("/x")
            // Never a key by itself: only what authentication recorded counts.
            .header(API_KEY, format!("weir_{}", fastrand::u64(..)))
            .body(Body::empty())
            .unwrap();
        r.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((peer, 4000))));
        if let Some((tenant, subject)) = caller {
            r.extensions_mut().insert(Caller {
                tenant: Arc::from(tenant),
                key: Arc::from(format!("p:{tenant}:{subject}")),
            });
        }
        r
    }

    fn layer(per_second: u32, burst: u32, tenants: &[(&str, u32)]) -> RateLimitLayer {
        RateLimitLayer::new(&RateLimitConfig {
            enabled: true,
            per_second,
            burst,
            tenants: tenants
                .iter()
                .map(|(t, b)| {
                    (
                        (*t).to_owned(),
                        TenantQuota {
                            per_second: 1,
                            burst: *b,
                        },
                    )
                })
                .collect(),
        })
    }

    async fn status(app: &Router, r: Request) -> u16 {
        app.clone().oneshot(r).await.unwrap().status().as_u16()
    }

    #[tokio::test]
    async fn each_client_gets_its_burst_then_429_with_headers() {
        let app = Router::new()
            .route("/x", get(|| async { "ok" }))
            .layer(layer(1, 2, &[]));
        for remaining in ["1", "0"] {
            let res = app
                .clone()
                .oneshot(req(Some(("acme", "key:1")), [10, 0, 0, 1]))
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            assert_eq!(res.headers()["ratelimit-limit"], "2");
            assert_eq!(res.headers()["ratelimit-remaining"], remaining);
        }
        let res = app
            .clone()
            .oneshot(req(Some(("acme", "key:1")), [10, 0, 0, 1]))
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
        // Another principal from the same address has its own bucket; so does another
        // address without one; the same address without one is a third client.
        for (caller, peer) in [
            (Some(("acme", "key:2")), [10, 0, 0, 1]),
            (None, [10, 0, 0, 2]),
            (None, [10, 0, 0, 1]),
        ] {
            assert_eq!(status(&app, req(caller, peer)).await, 200);
        }
    }

    #[tokio::test]
    async fn unverified_api_key_headers_do_not_escape_the_peer_bucket() {
        let app = Router::new()
            .route("/x", get(|| async { "ok" }))
            .layer(layer(1, 1, &[]));
        // Each request carries a fresh random X-Api-Key (see `req`): still one peer.
        assert_eq!(status(&app, req(None, [10, 0, 0, 3])).await, 200);
        assert_eq!(status(&app, req(None, [10, 0, 0, 3])).await, 429);
    }

    #[tokio::test]
    async fn a_tenant_quota_applies_to_its_principals() {
        let app = Router::new()
            .route("/x", get(|| async { "ok" }))
            .layer(layer(1, 1, &[("big", 3)]));
        for _ in 0..3 {
            assert_eq!(
                status(&app, req(Some(("big", "key:1")), [10, 0, 0, 4])).await,
                200
            );
        }
        assert_eq!(
            status(&app, req(Some(("big", "key:1")), [10, 0, 0, 4])).await,
            429
        );
        // Other tenants get the default quota.
        assert_eq!(
            status(&app, req(Some(("small", "key:2")), [10, 0, 0, 4])).await,
            200
        );
        assert_eq!(
            status(&app, req(Some(("small", "key:2")), [10, 0, 0, 4])).await,
            429
        );
    }

    #[tokio::test]
    async fn a_client_key_recorded_by_an_outer_layer_is_the_key() {
        let app = Router::new()
            .route("/x", get(|| async { "ok" }))
            .layer(layer(1, 1, &[]));
        let recorded = |peer: [u8; 4]| {
            let mut r = req(None, peer);
            r.extensions_mut()
                .insert(ClientKey(Arc::from("ip:recorded")));
            r
        };
        assert_eq!(status(&app, recorded([10, 0, 0, 7])).await, 200);
        // Another address, but the recorded client key is the same: the same bucket.
        assert_eq!(status(&app, recorded([10, 0, 0, 8])).await, 429);
        // Without the extension the key is computed here: its own bucket.
        assert_eq!(status(&app, req(None, [10, 0, 0, 8])).await, 200);
    }

    #[test]
    fn the_recorded_client_key_is_the_computed_one() {
        let mut r = req(None, [1, 2, 3, 4]);
        let computed = client_key(&r);
        assert_eq!(&*ClientKey::attach(&mut r), computed);
        assert_eq!(
            r.extensions().get::<ClientKey>(),
            Some(&ClientKey(Arc::from(computed.as_str())))
        );
        assert_eq!(&*rate_key(&r), computed);
        assert_eq!(computed, "ip:1.2.3.4");
        let authed = req(Some(("acme", "key:9")), [1, 2, 3, 4]);
        assert_eq!(&*rate_key(&authed), "p:acme:key:9");
    }
}
