//! JWT bearer tokens validated against a JWKS (`auth.mode = "jwt"`).
//!
//! The signature, `exp`, `nbf`, `iss` and `aud` are checked by the `jsonwebtoken` crate (no
//! crypto of our own), with `leeway_s` of clock skew; only the algorithms in `algorithms` are
//! accepted (never `none`, never a symmetric one: the service holds no shared secret). The
//! signing key is picked by the token's `kid` from the key set; a token whose `kid` is not
//! in the set triggers at most one early refresh of a URL key set per 30 s (key rotation), so
//! a flood of made-up `kid`s cannot turn into a flood of fetches.
//!
//! The key set comes from `jwks_file` or `jwks_url` (at most 1 MiB, fetched with a 5 s
//! timeout), loaded at start-up (a failure stops start-up) and refreshed every
//! `refresh_interval_ms` by a supervised worker; a failed refresh keeps the last good set and
//! is logged. The tenant is the `tenant_claim` claim (a valid tenant name), the scopes the
//! `scope_claim` claim (a space-separated string or an array; unknown scopes are ignored).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use weir_core::domain::tenant::valid_tenant;

use super::{AuthError, Principal, PrincipalKind, Scopes};
use crate::support::{InvalidKey, duration_ms, ensure};

/// The largest key set accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// The least time between two refreshes caused by an unknown `kid`.
const EARLY_REFRESH_GAP: Duration = Duration::from_secs(30);

/// `[auth.jwt]` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// A JWKS document on disk.
    pub jwks_file: Option<PathBuf>,
    /// A JWKS document over HTTP(S).
    pub jwks_url: Option<String>,
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud` (one of the token's audiences).
    pub audience: String,
    /// The claim naming the tenant.
    pub tenant_claim: String,
    /// The claim listing the scopes.
    pub scope_claim: String,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_s: u64,
    /// How often the key set is reloaded.
    #[serde(with = "duration_ms", rename = "refresh_interval_ms")]
    pub refresh_interval: Duration,
    /// Accepted signature algorithms (asymmetric only).
    pub algorithms: Vec<Algorithm>,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            jwks_file: None,
            jwks_url: None,
            issuer: String::new(),
            audience: String::new(),
            tenant_claim: "tenant".to_owned(),
            scope_claim: "scope".to_owned(),
            leeway_s: 60,
            refresh_interval: Duration::from_secs(300),
            algorithms: vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA],
        }
    }
}

impl JwtConfig {
    /// Check values that parse but cannot work.
    pub fn validate(&self) -> Result<(), InvalidKey> {
        ensure(
            self.jwks_file.is_some() != self.jwks_url.is_some(),
            "auth.jwt.jwks_file",
            "set exactly one of auth.jwt.jwks_file and auth.jwt.jwks_url",
        )?;
        if let Some(url) = &self.jwks_url {
            ensure(
                url.starts_with("https://") || plain_http_to_loopback(url),
                "auth.jwt.jwks_url",
                "must be https:// (plain http only to a loopback address): whoever can change \
                 the key set can mint tokens",
            )?;
        }
        ensure(
            !self.issuer.is_empty(),
            "auth.jwt.issuer",
            "must be set: tokens of any issuer would be accepted",
        )?;
        ensure(
            !self.audience.is_empty(),
            "auth.jwt.audience",
            "must be set: tokens minted for other services would be accepted",
        )?;
        ensure(
            !self.algorithms.is_empty()
                && self
                    .algorithms
                    .iter()
                    .all(|a| !matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)),
            "auth.jwt.algorithms",
            "must list asymmetric algorithms only (RS*, PS*, ES*, EdDSA)",
        )?;
        ensure(
            self.leeway_s <= 300,
            "auth.jwt.leeway_s",
            "must be at most 300",
        )?;
        ensure(
            self.refresh_interval >= Duration::from_secs(1),
            "auth.jwt.refresh_interval_ms",
            "must be at least 1000",
        )
    }
}

/// Whether `url` is `http://` to `localhost`, `127.0.0.1` or `[::1]`.
fn plain_http_to_loopback(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    matches!(host, "localhost" | "127.0.0.1" | "::1")
}

/// Validates tokens against the current key set. Cheap to clone.
#[derive(Clone)]
pub struct JwtValidator {
    config: Arc<JwtConfig>,
    keys: Arc<ArcSwap<JwkSet>>,
    last_refresh: Arc<Mutex<Instant>>,
    http: reqwest::Client,
}

impl std::fmt::Debug for JwtValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtValidator")
            .field("issuer", &self.config.issuer)
            .field("keys", &self.keys.load().keys.len())
            .finish_non_exhaustive()
    }
}

impl JwtValidator {
    /// Loads the key set once; fails when it cannot be read or parsed.
    pub async fn load(config: JwtConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .context("could not build the JWKS HTTP client")?;
        // The RustCrypto backend is the only one compiled in; installing it explicitly keeps
        // the choice stable if another crate ever enables a second backend.
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
        let config = Arc::new(config);
        let set = fetch(&config, &http).await?;
        Ok(Self {
            config,
            keys: Arc::new(ArcSwap::from_pointee(set)),
            last_refresh: Arc::new(Mutex::new(Instant::now())),
            http,
        })
    }

    /// How often [`JwtValidator::refresh`] should run.
    pub fn refresh_interval(&self) -> Duration {
        self.config.refresh_interval
    }

    /// Reloads the key set; on failure the last good set stays.
    pub async fn refresh(&self) -> anyhow::Result<()> {
        *self
            .last_refresh
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
        self.fetch_now().await
    }

    async fn fetch_now(&self) -> anyhow::Result<()> {
        let set = fetch(&self.config, &self.http).await?;
        self.keys.store(Arc::new(set));
        Ok(())
    }

    /// The principal of a valid token, and how long the token stays valid.
    pub async fn validate(&self, token: &str) -> Result<(Principal, Duration), AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Invalid(format!("malformed token: {e}")))?;
        if !self.config.algorithms.contains(&header.alg) {
            return Err(AuthError::Invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let key = match self.key_for(header.kid.as_deref()) {
            Some(key) => key,
            None => {
                self.refresh_early().await;
                self.key_for(header.kid.as_deref())
                    .ok_or_else(|| AuthError::Invalid("no key matches the token's kid".into()))?
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = self.config.leeway_s;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key,
            &validation,
        )
        .map_err(|e| AuthError::Invalid(format!("token refused: {e}")))?
        .claims;
        let tenant = claims
            .get(&self.config.tenant_claim)
            .and_then(|v| v.as_str())
            .filter(|t| valid_tenant(t))
            .ok_or_else(|| {
                AuthError::Invalid(format!(
                    "the token has no valid `{}` claim",
                    self.config.tenant_claim
                ))
            })?;
        let scopes = match claims.get(&self.config.scope_claim) {
            Some(serde_json::Value::String(s)) => Scopes::parse_lenient(s.split_ascii_whitespace()),
            Some(serde_json::Value::Array(items)) => {
                Scopes::parse_lenient(items.iter().filter_map(|v| v.as_str()))
            }
            _ => Scopes::default(),
        };
        let sub: String = claims
            .get("sub")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .take(128)
            .collect();
        if sub.is_empty() {
            // One empty subject would be one rate-limit bucket for everyone without one.
            return Err(AuthError::Invalid("the token's `sub` is empty".into()));
        }
        let exp = claims.get("exp").and_then(|v| v.as_u64()).unwrap_or(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let remaining = Duration::from_secs(exp.saturating_sub(now));
        Ok((
            Principal {
                tenant: Arc::from(tenant),
                subject: Arc::from(format!("jwt:{sub}")),
                scopes,
                kind: PrincipalKind::Jwt,
                // A token's subject is often an e-mail address: only a pseudonym goes into
                // the limiter and the access log.
                key: Arc::from(format!(
                    "p:{tenant}:jwt:{}",
                    crate::policy::request_log::pseudonym(sub.as_bytes())
                )),
            },
            remaining,
        ))
    }

    fn key_for(&self, kid: Option<&str>) -> Option<DecodingKey> {
        let set = self.keys.load();
        let jwk = match kid {
            Some(kid) => set.find(kid),
            // Without a kid, only an unambiguous set will do.
            None if set.keys.len() == 1 => set.keys.first(),
            None => None,
        }?;
        DecodingKey::from_jwk(jwk).ok()
    }

    async fn refresh_early(&self) {
        if self.config.jwks_url.is_none() {
            return;
        }
        // Checked and claimed under one lock: of a burst of tokens with made-up `kid`s, one
        // request fetches and the others go on with the set they have.
        let due = {
            let mut last = self
                .last_refresh
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let due = last.elapsed() >= EARLY_REFRESH_GAP;
            if due {
                *last = Instant::now();
            }
            due
        };
        if due && let Err(e) = self.fetch_now().await {
            tracing::warn!(error = %format!("{e:#}"), "JWKS refresh for an unknown kid failed");
        }
    }
}

/// When a verified token stops being remembered: `ttl` from now, never past its expiry.
pub fn remember_until(remaining: Duration, ttl: Duration) -> Instant {
    Instant::now() + remaining.min(ttl)
}

async fn fetch(config: &JwtConfig, http: &reqwest::Client) -> anyhow::Result<JwkSet> {
    let bytes = match (&config.jwks_file, &config.jwks_url) {
        (Some(path), _) => {
            let bytes = tokio::fs::read(path)
                .await
                .with_context(|| format!("could not read the JWKS file {}", path.display()))?;
            anyhow::ensure!(
                bytes.len() <= MAX_JWKS_BYTES,
                "the JWKS file {} is larger than 1 MiB",
                path.display()
            );
            bytes
        }
        (None, Some(url)) => {
            let shown = crate::support::redact_url(url);
            let mut response = http
                .get(url)
                .send()
                .await
                .with_context(|| format!("could not fetch the JWKS from {shown}"))?
                .error_for_status()
                .with_context(|| format!("the JWKS endpoint {shown} refused"))?;
            let mut bytes = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .with_context(|| format!("could not read the JWKS from {shown}"))?
            {
                bytes.extend_from_slice(&chunk);
                anyhow::ensure!(
                    bytes.len() <= MAX_JWKS_BYTES,
                    "the JWKS at {shown} is larger than 1 MiB"
                );
            }
            bytes
        }
        (None, None) => anyhow::bail!("auth.jwt has neither jwks_file nor jwks_url"),
    };
    let set: JwkSet = serde_json::from_slice(&bytes).context("the JWKS is not a valid key set")?;
    anyhow::ensure!(!set.keys.is_empty(), "the JWKS has no keys");
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwks_url_must_be_https_unless_on_loopback() {
        for ok in [
            "https://idp.example/jwks.json",
            "http://127.0.0.1:8080/jwks.json",
            "http://localhost/jwks",
            "http://[::1]:9/k",
        ] {
            assert!(
                ok.starts_with("https://") || plain_http_to_loopback(ok),
                "{ok}"
            );
        }
        for bad in [
            "http://idp.example/jwks.json",
            "http://127.0.0.1.evil.example/k",
            "http://localhost.evil/k",
            "ftp://127.0.0.1/k",
        ] {
            assert!(!plain_http_to_loopback(bad), "{bad}");
        }
    }
}
