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
//! 4. the route's scope ([`required_scope`]) must be granted, else `403 FORBIDDEN`;
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
use crate::policy::rate_limit::{Caller, ClientKey};

type PeerLimiter = RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock>;

/// Shared state of the layer.
#[derive(Clone)]
pub struct AuthLayerState {
    authenticator: Authenticator,
    unverified: Arc<PeerLimiter>,
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
            failures: opentelemetry::global::meter("weir.http")
                .u64_counter("weir.auth.failures")
                .with_description("Requests refused by authentication or authorization, by reason")
                .build(),
        }
    }
}

/// The scope a route needs, by method and route template; `None` for routes any
/// authenticated principal may call.
pub fn required_scope(method: &Method, route: &str) -> Option<Scope> {
    match (method.as_str(), route) {
        ("POST", "/v1/orders" | "/v1/orders/{id}/cancel") => Some(Scope::OrdersWrite),
        ("GET", "/v1/orders" | "/v1/orders/{id}") => Some(Scope::OrdersRead),
        ("PUT", "/v1/products/{sku}") => Some(Scope::ProductsWrite),
        ("GET", "/v1/events") => Some(Scope::EventsRead),
        _ => None,
    }
}

/// Routes served without authentication.
fn is_public(route: Option<&str>) -> bool {
    // Unmatched paths answer 404 without learning anything about the caller.
    matches!(route, None | Some("/openapi.json"))
}

fn peer(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
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
                    if let Some(ip) = peer
                        && let Err(not_until) = self.unverified.check_key(&ip)
                    {
                        let wait = not_until.wait_time_from(DefaultClock::default().now());
                        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                        return Err(self.refuse(
                            "unverified_rate",
                            ApiError::RateLimited {
                                retry_after: Duration::from_secs(secs.max(1)),
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
    if let Some(scope) = route
        .as_ref()
        .and_then(|r| required_scope(req.method(), r.as_str()))
        && !principal.scopes.contains(scope)
    {
        return state.refuse("scope", ApiError::Forbidden { scope });
    }
    let span = tracing::Span::current();
    span.record("weir.tenant", &*principal.tenant);
    span.record("weir.auth", principal.kind.as_str());
    let key: Arc<str> = match principal.kind {
        // Every anonymous caller is the default tenant: keep them apart by peer.
        PrincipalKind::Anonymous => ClientKey::of(&req),
        _ => Arc::from(format!("p:{}:{}", principal.tenant, principal.subject)),
    };
    let caller = Caller {
        tenant: principal.tenant.clone(),
        key,
    };
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
    fn every_api_route_has_its_scope() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(
            required_scope(&post, "/v1/orders"),
            Some(Scope::OrdersWrite)
        );
        assert_eq!(
            required_scope(&post, "/v1/orders/{id}/cancel"),
            Some(Scope::OrdersWrite)
        );
        assert_eq!(required_scope(&get, "/v1/orders"), Some(Scope::OrdersRead));
        assert_eq!(
            required_scope(&get, "/v1/orders/{id}"),
            Some(Scope::OrdersRead)
        );
        assert_eq!(
            required_scope(&Method::PUT, "/v1/products/{sku}"),
            Some(Scope::ProductsWrite)
        );
        assert_eq!(required_scope(&get, "/v1/events"), Some(Scope::EventsRead));
        assert_eq!(required_scope(&get, "/v1/products"), None);
        assert!(is_public(Some("/openapi.json")) && !is_public(Some("/v1/products")));
    }
}
