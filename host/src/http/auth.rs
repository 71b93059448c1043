//! The authentication edge layer: who is calling, may they call this route, and what the
//! policies below should key on.
//!
//! For every API route but `/openapi.json`:
//! 1. read the credential ([`crate::auth::credential`]); a malformed one is `401`;
//! 2. a credential remembered by the [`Authenticator`] is answered from memory; any other
//!    credential first passes the per-peer limit of unverified credentials
//!    (`auth.unverified_per_second`, `429 RATE_LIMITED`), then is verified (a database lookup
//!    for an API key, a signature check for a token): a client inventing a new key per
//!    request is refused by peer before it costs any database work;
//! 3. no credential: the default tenant in `open` mode, `401 UNAUTHENTICATED` otherwise;
//! 4. the route's scope ([`required_access`]; `HEAD` is `GET`) must be granted, else `403
//!    FORBIDDEN`;
//! 5. the [`Principal`] goes into the request extensions (handlers scope every read and write
//!    to its tenant), the tenant and kind onto the `http.server` span, and a [`Caller`] into
//!    the request (for the rate limit, keyed by principal) and the response (for the request
//!    log).
//!
//! Failures are counted by reason in `weir.auth.failures`.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use http::Method;
use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;

use super::error::ApiError;
use crate::auth::{AuthConfig, AuthError, Authenticator, Principal, PrincipalKind, Scope};
use crate::policy::rate_limit::{Caller, ClientKey, whole_seconds};

type PeerLimiter = RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock>;

/// Shared state of the layer.
#[derive(Clone)]
pub struct AuthLayerState {
    authenticator: Authenticator,
    unverified: Arc<PeerLimiter>,
    seen: Arc<std::sync::atomic::AtomicU64>,
    failures: Counter<u64>,
}

impl std::fmt::Debug for AuthLayerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLayerState")
            .field("authenticator", &self.authenticator)
            .finish_non_exhaustive()
    }
}

impl AuthLayerState {
    /// The layer's state for `authenticator` with the per-peer limit of `config`.
    pub fn new(authenticator: Authenticator, config: &AuthConfig) -> Self {
        let per_second =
            NonZeroU32::new(config.unverified_per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.unverified_burst.max(1)).unwrap_or(NonZeroU32::MIN);
        Self {
            authenticator,
            unverified: Arc::new(RateLimiter::dashmap(
                Quota::per_second(per_second).allow_burst(burst),
            )),
            seen: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            failures: opentelemetry::global::meter("weir.http")
                .u64_counter("weir.auth.failures")
                .with_description("Requests refused by authentication or authorization, by reason")
                .build(),
        }
    }
}

/// What a route asks of an authenticated principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// This scope.
    Scope(Scope),
    /// Nothing more than being authenticated (the shared catalog's list).
    Authenticated,
    /// Not in the table: no handler serves this method on this route, which answers `405`.
    /// (Every operation of the OpenAPI description has a row: a unit test fails otherwise,
    /// so a new handler cannot be reachable without its scope.)
    Unlisted,
}

/// What each API route needs, by method and route template. `HEAD` is `GET` (axum serves
/// `HEAD` with the `GET` handler). A new route must get a row here (a unit test checks every
/// operation of the OpenAPI description has one).
pub fn required_access(method: &Method, route: &str) -> Access {
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    match (method, route) {
        // A quote stores nothing, but it is the pricing step of placing: the same plugin call
        // on the caller's input, so the same scope (a read-only credential runs no plugin).
        ("POST", "/v1/orders" | "/v1/orders/{id}/cancel" | "/v1/quotes") => {
            Access::Scope(Scope::OrdersWrite)
        }
        ("GET", "/v1/orders" | "/v1/orders/{id}") => Access::Scope(Scope::OrdersRead),
        ("PUT", "/v1/products/{sku}") => Access::Scope(Scope::ProductsWrite),
        ("GET", "/v1/events") => Access::Scope(Scope::EventsRead),
        ("GET", "/v1/products") => Access::Authenticated,
        _ => Access::Unlisted,
    }
}

/// Routes served without authentication.
fn is_public(route: Option<&str>) -> bool {
    // Unmatched paths answer 404 without learning anything about the caller.
    matches!(route, None | Some("/openapi.json"))
}

/// The peer's address as the unverified-credential limit keys it: an IPv6 client commonly
/// holds a whole /64, so it is one peer (else each request could come from a fresh address
/// with a fresh burst).
fn peer(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| match addr.ip() {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let s = v6.segments();
                    IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
                }
            },
            v4 => v4,
        })
}

impl AuthLayerState {
    fn refuse(&self, reason: &'static str, error: ApiError) -> Response {
        self.failures.add(1, &[KeyValue::new("reason", reason)]);
        error.into_response()
    }

    async fn principal(
        &self,
        headers: &http::HeaderMap,
        peer: Option<IpAddr>,
    ) -> Result<Principal, Response> {
        let credential = crate::auth::credential(headers)
            .map_err(|e| self.refuse(e.reason(), ApiError::Unauthenticated(e)))?;
        let outcome = match credential {
            None => self.authenticator.without_credential(),
            Some(credential) => match self.authenticator.cached(&credential) {
                Some(remembered) => remembered,
                None => {
                    // Idle peers are forgotten now and then: the map stays bounded by the
                    // recently active ones.
                    let seen = self.seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if seen % 1024 == 1023 {
                        self.unverified.retain_recent();
                        self.unverified.shrink_to_fit();
                    }
                    if let Some(ip) = peer
                        && let Err(not_until) = self.unverified.check_key(&ip)
                    {
                        let wait = not_until.wait_time_from(DefaultClock::default().now());
                        return Err(self.refuse(
                            "unverified_rate",
                            ApiError::RateLimited {
                                retry_after: Duration::from_secs(whole_seconds(wait)),
                            },
                        ));
                    }
                    self.authenticator.verify(&credential).await
                }
            },
        };
        outcome.map_err(|e| match e {
            AuthError::Unavailable(source) => {
                self.refuse("unavailable", ApiError::AuthUnavailable(source))
            }
            other => self.refuse(other.reason(), ApiError::Unauthenticated(other)),
        })
    }
}

/// The middleware (see the module doc).
pub async fn authenticate(
    State(state): State<AuthLayerState>,
    mut req: Request,
    next: Next,
) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    if is_public(route.as_ref().map(MatchedPath::as_str)) {
        return next.run(req).await;
    }
    // Only `Sync` parts of the request are held across the verification.
    let headers = std::mem::take(req.headers_mut());
    let verified = state.principal(&headers, peer(&req)).await;
    *req.headers_mut() = headers;
    let principal = match verified {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    let span = tracing::Span::current();
    span.record("weir.tenant", &*principal.tenant);
    span.record("weir.auth", principal.kind.as_str());
    let key = match principal.kind {
        // Every anonymous caller is the default tenant: keep them apart by peer.
        PrincipalKind::Anonymous => ClientKey::of(&req),
        // Built once at verification, not per request.
        _ => principal.key.clone(),
    };
    let caller = Caller {
        tenant: principal.tenant.clone(),
        key,
    };
    let refused_scope =
        route
            .as_ref()
            .and_then(|r| match required_access(req.method(), r.as_str()) {
                Access::Scope(scope) if !principal.scopes.contains(scope) => Some(scope),
                _ => None,
            });
    if let Some(scope) = refused_scope {
        let mut refused = state.refuse("scope", ApiError::Forbidden { scope });
        // The refusal's log line still says who was refused.
        refused.extensions_mut().insert(caller);
        return refused;
    }
    req.extensions_mut().insert(caller.clone());
    req.extensions_mut().insert(principal);
    let mut response = next.run(req).await;
    response.extensions_mut().insert(caller);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_api_route_has_its_scope_and_head_is_get() {
        let get = Method::GET;
        let post = Method::POST;
        let scope = |m: &Method, r: &str| required_access(m, r);
        assert_eq!(
            scope(&post, "/v1/orders"),
            Access::Scope(Scope::OrdersWrite)
        );
        assert_eq!(
            scope(&post, "/v1/orders/{id}/cancel"),
            Access::Scope(Scope::OrdersWrite)
        );
        assert_eq!(
            scope(&post, "/v1/quotes"),
            Access::Scope(Scope::OrdersWrite)
        );
        assert_eq!(scope(&get, "/v1/quotes"), Access::Unlisted);
        assert_eq!(scope(&get, "/v1/orders"), Access::Scope(Scope::OrdersRead));
        assert_eq!(
            scope(&get, "/v1/orders/{id}"),
            Access::Scope(Scope::OrdersRead)
        );
        assert_eq!(
            scope(&Method::PUT, "/v1/products/{sku}"),
            Access::Scope(Scope::ProductsWrite)
        );
        assert_eq!(scope(&get, "/v1/events"), Access::Scope(Scope::EventsRead));
        assert_eq!(scope(&get, "/v1/products"), Access::Authenticated);
        for route in ["/v1/orders", "/v1/orders/{id}", "/v1/events"] {
            assert_eq!(scope(&Method::HEAD, route), scope(&get, route), "{route}");
        }
        assert_eq!(scope(&Method::DELETE, "/v1/orders/{id}"), Access::Unlisted);
        assert!(is_public(Some("/openapi.json")) && !is_public(Some("/v1/products")));
    }

    #[test]
    fn every_documented_operation_has_a_row() {
        use utoipa::OpenApi as _;
        let doc = serde_json::to_value(super::super::ApiDoc::openapi()).unwrap();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                let m = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
                assert_ne!(
                    required_access(&m, path),
                    Access::Unlisted,
                    "{method} {path} has no row in required_access"
                );
            }
        }
    }

    #[test]
    fn ipv6_peers_are_keyed_by_their_64() {
        let req = |addr: &str| {
            let mut r = Request::new(axum::body::Body::empty());
            r.extensions_mut()
                .insert(ConnectInfo(addr.parse::<SocketAddr>().unwrap()));
            r
        };
        assert_eq!(
            peer(&req("[2001:db8:1:2:aaaa::1]:1")),
            peer(&req("[2001:db8:1:2:bbbb::2]:1"))
        );
        assert_ne!(
            peer(&req("[2001:db8:1:2::1]:1")),
            peer(&req("[2001:db8:1:3::1]:1"))
        );
        assert_eq!(
            peer(&req("[::ffff:10.0.0.1]:1")),
            Some("10.0.0.1".parse().unwrap())
        );
        assert_ne!(peer(&req("10.0.0.1:1")), peer(&req("10.0.0.2:1")));
    }
}
