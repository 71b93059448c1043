//! Who is calling: principals, scopes, tenants, and the two ways to prove it.
//!
//! Every request of the public API is made by a [`Principal`]: a tenant, a subject and the
//! scopes it was granted. The principal comes from exactly one credential:
//!
//! - **API keys** ([`keys`]): `Authorization: Bearer weir_<prefix>_<secret>` or
//!   `X-Api-Key: weir_<prefix>_<secret>`. 256 random bits, shown once at creation, stored only
//!   as a SHA-256 with the random prefix for lookup, compared in constant time. Managed with
//!   `weir apikey create|list|revoke` and `/admin/v1/apikeys`.
//! - **JWT bearer tokens** ([`jwt`]): for deployments behind an identity provider; validated
//!   against a JWKS (file or URL, cached and refreshed) with issuer, audience, expiry and
//!   not-before checks and a clock-skew leeway; tenant and scopes come from configured claims.
//!
//! `auth.mode` chooses: `api_keys`, `jwt`, or `open`. In `open` mode a request without a
//! credential acts as the [`DEFAULT_TENANT`] with every scope (a presented credential is still
//! checked, so tenants can be tried locally). `open` is only allowed while the API listens on
//! loopback; when `auth.mode` is unset it is the default there (with one warning at start-up),
//! and an instance bound to any other address refuses to start until a mode is set
//! ([`AuthConfig::resolve`]).
//!
//! Verified credentials are cached for a few seconds ([`AuthConfig::cache_ttl`]) so a busy
//! client costs one hash and a map lookup; a revocation through this instance evicts at once,
//! other replicas see it within the TTL. Credentials that are not in the cache are checked
//! only after the per-peer limit of the edge admits the request (the authentication layer of
//! `http`, above this module): a flood of random keys costs the database nothing beyond that
//! limit.

pub mod jwt;
pub mod keys;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use weir_core::domain::tenant::valid_tenant;

pub use weir_core::domain::tenant::DEFAULT_TENANT;

use crate::storage::{ApiKeyStore, StoreError};
use crate::support::{InvalidKey, duration_ms, ensure};

/// A permission of the public API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Place and cancel orders, and quote them (`POST /v1/quotes`).
    OrdersWrite,
    /// Read and list orders.
    OrdersRead,
    /// Create and change products (prices, stock).
    ProductsWrite,
    /// Read the events feed.
    EventsRead,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 4] = [
        Scope::OrdersWrite,
        Scope::OrdersRead,
        Scope::ProductsWrite,
        Scope::EventsRead,
    ];

    /// The scope's name, e.g. `orders:write`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::OrdersWrite => "orders:write",
            Scope::OrdersRead => "orders:read",
            Scope::ProductsWrite => "products:write",
            Scope::EventsRead => "events:read",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| UnknownScope(s.chars().take(64).collect()))
    }
}

/// A scope name this service does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope {0:?} (known: orders:write, orders:read, products:write, events:read)")]
pub struct UnknownScope(pub String);

/// A set of scopes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Scopes(u8);

impl Scopes {
    /// Every scope.
    pub fn all() -> Self {
        Scope::ALL.into_iter().collect()
    }

    /// Whether `scope` is in the set.
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// Parses space-separated names, refusing unknown ones (used for what operators grant).
    pub fn parse_strict(text: &str) -> Result<Self, UnknownScope> {
        text.split_ascii_whitespace()
            .map(str::parse::<Scope>)
            .collect()
    }

    /// Parses space-separated names, ignoring unknown ones (token claims carry scopes of
    /// other services too).
    pub fn parse_lenient<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        names
            .into_iter()
            .filter_map(|n| n.parse::<Scope>().ok())
            .collect()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Scopes(iter.into_iter().fold(0, |bits, s| bits | s.bit()))
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Scope::ALL
            .into_iter()
            .filter(|s| self.contains(*s))
            .map(Scope::as_str)
            .collect();
        f.write_str(&names.join(" "))
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scopes({self})")
    }
}

/// How a principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// No credential, `open` mode: the default tenant.
    Anonymous,
    /// An API key.
    ApiKey,
    /// A JWT bearer token.
    Jwt,
}

impl PrincipalKind {
    /// Label for logs and span attributes.
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::Anonymous => "anonymous",
            PrincipalKind::ApiKey => "api_key",
            PrincipalKind::Jwt => "jwt",
        }
    }
}

/// The caller of a request, after authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The tenant it acts for; every read and write is scoped to it.
    pub tenant: Arc<str>,
    /// Who, within the tenant: `key:<id>` or `jwt:<sub>`; `anonymous` in open mode.
    pub subject: Arc<str>,
    /// What it may do.
    pub scopes: Scopes,
    /// How it was authenticated.
    pub kind: PrincipalKind,
    /// Its rate-limit bucket and access-log `client`, built once when the credential is
    /// verified (a token's subject only as a pseudonym); empty for the anonymous principal,
    /// whose bucket is its peer.
    pub key: Arc<str>,
}

impl Principal {
    /// The principal of a request without credentials in `open` mode.
    pub fn anonymous() -> Self {
        Self {
            tenant: Arc::from(DEFAULT_TENANT),
            subject: Arc::from("anonymous"),
            scopes: Scopes::all(),
            kind: PrincipalKind::Anonymous,
            key: Arc::from(""),
        }
    }
}

/// `auth.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Requests without credentials act as the default tenant with every scope; loopback
    /// only.
    Open,
    /// API keys are required.
    ApiKeys,
    /// JWT bearer tokens are required (`[auth.jwt]`).
    Jwt,
}

impl AuthMode {
    /// The mode's configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Open => "open",
            AuthMode::ApiKeys => "api_keys",
            AuthMode::Jwt => "jwt",
        }
    }
}

/// `[auth]` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `open`, `api_keys` or `jwt`; unset means `open` on loopback and a start-up refusal
    /// anywhere else.
    pub mode: Option<AuthMode>,
    /// How long a verified credential (or a revoked or unknown API key) is remembered.
    #[serde(with = "duration_ms", rename = "cache_ttl_ms")]
    pub cache_ttl: Duration,
    /// Requests per second per peer address allowed to present a credential that is not in
    /// the cache (each may cost a database lookup or a signature check).
    pub unverified_per_second: u32,
    /// Burst of the per-peer limit above.
    pub unverified_burst: u32,
    /// JWT validation (`auth.mode = "jwt"`).
    pub jwt: Option<jwt::JwtConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: None,
            cache_ttl: Duration::from_secs(5),
            unverified_per_second: 50,
            unverified_burst: 100,
            jwt: None,
        }
    }
}

impl AuthConfig {
    /// Check values that parse but cannot work.
    pub fn validate(&self) -> Result<(), InvalidKey> {
        ensure(
            self.cache_ttl <= Duration::from_secs(300),
            "auth.cache_ttl_ms",
            "must be at most 300000 (a revoked key must stop working soon)",
        )?;
        ensure(
            self.unverified_per_second > 0 && self.unverified_burst > 0,
            "auth.unverified_per_second",
            "the per-peer limit of unverified credentials must be positive",
        )?;
        if self.mode == Some(AuthMode::Jwt) {
            ensure(
                self.jwt.is_some(),
                "auth.jwt",
                "auth.mode = \"jwt\" needs an [auth.jwt] section (jwks_file or jwks_url, issuer, audience)",
            )?;
        }
        if let Some(jwt) = &self.jwt {
            jwt.validate()?;
        }
        Ok(())
    }

    /// The mode in effect for an API bound to `listen`: the configured one, or `open` on
    /// loopback. Refuses `open` (configured or defaulted) on any other address, naming the
    /// setting to change.
    pub fn resolve(&self, listen: SocketAddr) -> Result<AuthMode, InvalidKey> {
        let loopback = listen.ip().is_loopback();
        match self.mode {
            Some(AuthMode::Open) | None if !loopback => Err(InvalidKey::new(
                "auth.mode",
                format!(
                    "the API listens on {listen}, which is not loopback, and {}: set auth.mode \
                     to \"api_keys\" (create keys with `weir apikey create`) or \"jwt\" (with \
                     [auth.jwt])",
                    if self.mode.is_some() {
                        "auth.mode = \"open\" serves every caller as the default tenant"
                    } else {
                        "no authentication mode is set"
                    }
                ),
            )),
            Some(mode) => Ok(mode),
            None => Ok(AuthMode::Open),
        }
    }
}

/// A credential as presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An API key's full text.
    ApiKey(String),
    /// A bearer token that is not an API key.
    Bearer(String),
}

/// Why a request is not authenticated. The text is safe to show to the client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// No credential, and the mode requires one.
    #[error("this API requires a credential: send `Authorization: Bearer <token>`")]
    Missing,
    /// A credential of a kind the mode does not accept.
    #[error("{0}")]
    WrongKind(&'static str),
    /// The credential is malformed, unknown, revoked, expired or fails validation.
    #[error("the credential is not valid: {0}")]
    Invalid(String),
    /// The credential could not be checked now (database or JWKS unavailable); the error
    /// chain, for the log.
    #[error("the credential could not be checked: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// Metric label of the failure.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::WrongKind(_) => "wrong_kind",
            AuthError::Invalid(_) => "invalid",
            AuthError::Unavailable(_) => "unavailable",
        }
    }
}

/// The longest credential read from a header; anything longer is refused unread.
pub const MAX_CREDENTIAL_BYTES: usize = 8192;

/// The credential of a request's headers, if any: `Authorization: Bearer` first, then
/// `X-Api-Key`. A malformed `Authorization` header is an error, not an absent credential.
pub fn credential(headers: &http::HeaderMap) -> Result<Option<Credential>, AuthError> {
    let classify = |text: &str| {
        if text.starts_with(keys::KEY_PREFIX) {
            Credential::ApiKey(text.to_owned())
        } else {
            Credential::Bearer(text.to_owned())
        }
    };
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        if value.len() > MAX_CREDENTIAL_BYTES {
            return Err(AuthError::Invalid(
                "the Authorization header is too long".into(),
            ));
        }
        let text = value
            .to_str()
            .map_err(|_| AuthError::Invalid("the Authorization header is not ASCII".into()))?;
        let (scheme, token) = text.split_once(' ').unwrap_or((text, ""));
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(AuthError::Invalid(
                "only `Authorization: Bearer <token>` is accepted".into(),
            ));
        }
        return Ok(Some(classify(token.trim())));
    }
    if let Some(value) = headers.get(keys::API_KEY_HEADER) {
        if value.len() > MAX_CREDENTIAL_BYTES {
            return Err(AuthError::Invalid(
                "the X-Api-Key header is too long".into(),
            ));
        }
        let text = value
            .to_str()
            .map_err(|_| AuthError::Invalid("the X-Api-Key header is not ASCII".into()))?;
        return Ok(Some(Credential::ApiKey(text.trim().to_owned())));
    }
    Ok(None)
}

/// A remembered verification: the principal, or that the credential is not valid.
#[derive(Clone)]
struct Cached {
    outcome: Result<Principal, AuthError>,
    until: Instant,
}

/// The most credentials remembered at once, per kind of outcome. Verified and refused
/// credentials are kept apart: a flood of made-up keys fills (and clears) only the refused
/// ones, never evicting the clients that are real.
const CACHE_CAPACITY: usize = 10_000;

#[derive(Default)]
struct Cache {
    verified: HashMap<[u8; 32], Cached>,
    refused: HashMap<[u8; 32], Cached>,
}

/// Checks credentials (see the module doc). Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    mode: AuthMode,
    keys: Arc<dyn ApiKeyStore>,
    jwt: Option<jwt::JwtValidator>,
    ttl: Duration,
    cache: Mutex<Cache>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("mode", &self.inner.mode)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator for `mode`, looking API keys up in `keys` and validating tokens with
    /// `jwt` (required for [`AuthMode::Jwt`]).
    pub fn new(
        mode: AuthMode,
        keys: Arc<dyn ApiKeyStore>,
        jwt: Option<jwt::JwtValidator>,
        ttl: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                mode,
                keys,
                jwt,
                ttl,
                cache: Mutex::new(Cache::default()),
            }),
        }
    }

    /// The JWT validator, in `jwt` mode.
    pub fn jwt(&self) -> Option<&jwt::JwtValidator> {
        self.inner.jwt.as_ref()
    }

    /// The API key store.
    pub fn keys(&self) -> &Arc<dyn ApiKeyStore> {
        &self.inner.keys
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.inner
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn digest(credential: &Credential) -> [u8; 32] {
        let text = match credential {
            Credential::ApiKey(t) | Credential::Bearer(t) => t,
        };
        Sha256::digest(text.as_bytes()).into()
    }

    /// The remembered outcome of `credential`, if it is still fresh: answers without any
    /// database work or signature check.
    pub fn cached(&self, credential: &Credential) -> Option<Result<Principal, AuthError>> {
        let digest = Self::digest(credential);
        let mut guard = self.cache();
        let cache = &mut *guard;
        let now = Instant::now();
        for map in [&mut cache.verified, &mut cache.refused] {
            match map.get(&digest) {
                Some(hit) if hit.until > now => return Some(hit.outcome.clone()),
                Some(_) => {
                    map.remove(&digest);
                }
                None => {}
            }
        }
        None
    }

    /// The principal of a request without a credential: anonymous in open mode.
    pub fn without_credential(&self) -> Result<Principal, AuthError> {
        match self.inner.mode {
            AuthMode::Open => Ok(Principal::anonymous()),
            _ => Err(AuthError::Missing),
        }
    }

    /// Verifies `credential` (database lookup for an API key, signature and claims for a
    /// token) and remembers the outcome. Transient failures are not remembered.
    pub async fn verify(&self, credential: &Credential) -> Result<Principal, AuthError> {
        let outcome = match (self.inner.mode, credential) {
            (AuthMode::Jwt, Credential::ApiKey(_)) => Err(AuthError::WrongKind(
                "API keys are not accepted here: auth.mode is jwt",
            )),
            (AuthMode::ApiKeys | AuthMode::Open, Credential::Bearer(_)) => {
                Err(AuthError::WrongKind(
                    "only API keys (`weir_...`) are accepted here: auth.mode is not jwt",
                ))
            }
            (_, Credential::ApiKey(text)) => self.verify_key(text).await,
            (_, Credential::Bearer(token)) => match &self.inner.jwt {
                Some(v) => v.validate(token).await,
                None => Err(AuthError::WrongKind("JWT validation is not configured")),
            },
        };
        let outcome = outcome.map(|(principal, valid_for)| {
            // A token is never remembered past its own expiry.
            (principal, jwt::remember_until(valid_for, self.inner.ttl))
        });
        if !matches!(outcome, Err(AuthError::Unavailable(_))) {
            let until = match &outcome {
                Ok((_, until)) => *until,
                Err(_) => Instant::now() + self.inner.ttl,
            };
            let outcome = outcome.clone().map(|(p, _)| p);
            let mut guard = self.cache();
            let cache = &mut *guard;
            let map = if outcome.is_ok() {
                &mut cache.verified
            } else {
                &mut cache.refused
            };
            if map.len() >= CACHE_CAPACITY {
                map.clear();
            }
            map.insert(Self::digest(credential), Cached { outcome, until });
        }
        outcome.map(|(p, _)| p)
    }

    /// The key's principal, and how long it may be remembered (never past its expiry).
    async fn verify_key(&self, text: &str) -> Result<(Principal, Duration), AuthError> {
        let Some(parsed) = keys::parse(text) else {
            return Err(AuthError::Invalid("malformed API key".into()));
        };
        let record =
            self.inner
                .keys
                .find_api_key(parsed.prefix)
                .await
                .map_err(|e: StoreError| {
                    AuthError::Unavailable(format!(
                        "looking up the API key: {}",
                        crate::support::chain(&e)
                    ))
                })?;
        let record = record.ok_or_else(|| AuthError::Invalid("unknown API key".into()))?;
        keys::check(text, &record, chrono::Utc::now())?;
        if !valid_tenant(&record.tenant) {
            return Err(AuthError::Invalid("the key's tenant is not valid".into()));
        }
        let valid_for = match record.expires_at {
            Some(at) => (at - chrono::Utc::now()).to_std().unwrap_or_default(),
            None => self.inner.ttl,
        };
        Ok((
            Principal {
                tenant: Arc::from(record.tenant.as_str()),
                subject: Arc::from(format!("key:{}", record.id)),
                scopes: Scopes::parse_lenient(record.scopes.split_ascii_whitespace()),
                kind: PrincipalKind::ApiKey,
                key: Arc::from(format!("p:{}:key:{}", record.tenant, record.id)),
            },
            valid_for,
        ))
    }

    /// Forget everything remembered (after a revocation on this instance).
    pub fn forget_all(&self) {
        let mut cache = self.cache();
        cache.verified.clear();
        cache.refused.clear();
    }
}

/// An API key store with no keys, for tests of layers that never see a key.
#[cfg(test)]
pub(crate) struct NoKeys;

#[cfg(test)]
#[async_trait::async_trait]
impl ApiKeyStore for NoKeys {
    async fn insert_api_key(&self, _: &crate::storage::ApiKeyRecord) -> Result<(), StoreError> {
        Ok(())
    }
    async fn find_api_key(
        &self,
        _: &str,
    ) -> Result<Option<crate::storage::ApiKeyRecord>, StoreError> {
        Ok(None)
    }
    async fn list_api_keys(
        &self,
        _: Option<&str>,
    ) -> Result<Vec<crate::storage::ApiKeyRecord>, StoreError> {
        Ok(Vec::new())
    }
    async fn revoke_api_key(
        &self,
        _: uuid::Uuid,
        _: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<crate::storage::ApiKeyRecord>, StoreError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_print() {
        let s = Scopes::parse_strict("orders:read  events:read").unwrap();
        assert!(s.contains(Scope::OrdersRead) && s.contains(Scope::EventsRead));
        assert!(!s.contains(Scope::OrdersWrite));
        assert_eq!(s.to_string(), "orders:read events:read");
        assert!(Scopes::parse_strict("orders:read admin").is_err());
        assert_eq!(
            Scopes::parse_lenient(["openid", "products:write"]).to_string(),
            "products:write"
        );
        assert_eq!(
            Scopes::all().to_string(),
            "orders:write orders:read products:write events:read"
        );
    }

    #[test]
    fn open_mode_is_loopback_only() {
        let cfg = AuthConfig::default();
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let lo6: SocketAddr = "[::1]:8080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(cfg.resolve(lo).unwrap(), AuthMode::Open);
        assert_eq!(cfg.resolve(lo6).unwrap(), AuthMode::Open);
        let err = cfg.resolve(any).unwrap_err();
        assert_eq!(err.key, "auth.mode");
        assert!(err.reason.contains("not loopback"), "{}", err.reason);
        let open = AuthConfig {
            mode: Some(AuthMode::Open),
            ..AuthConfig::default()
        };
        assert!(open.resolve(any).is_err());
        let keys = AuthConfig {
            mode: Some(AuthMode::ApiKeys),
            ..AuthConfig::default()
        };
        assert_eq!(keys.resolve(any).unwrap(), AuthMode::ApiKeys);
    }

    #[test]
    fn credentials_come_from_bearer_or_api_key_headers() {
        let mut h = http::HeaderMap::new();
        assert!(matches!(credential(&h), Ok(None)));
        h.insert("x-api-key", "weir_abc_def".parse().unwrap());
        assert!(matches!(credential(&h), Ok(Some(Credential::ApiKey(k))) if k == "weir_abc_def"));
        h.insert("authorization", "Bearer eyJ.a.b".parse().unwrap());
        assert!(matches!(credential(&h), Ok(Some(Credential::Bearer(t))) if t == "eyJ.a.b"));
        h.insert("authorization", "bearer weir_x_y".parse().unwrap());
        assert!(matches!(credential(&h), Ok(Some(Credential::ApiKey(k))) if k == "weir_x_y"));
        h.insert("authorization", "Basic dXNlcjpwdw==".parse().unwrap());
        assert!(matches!(credential(&h), Err(AuthError::Invalid(_))));
        h.insert("authorization", "Bearer ".parse().unwrap());
        assert!(matches!(credential(&h), Err(AuthError::Invalid(_))));
    }
}
