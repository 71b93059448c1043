//! Edge and dependency policies, one tower policy per file (Layer + Service + error + tests).
//!
//! A policy knows nothing of the API's error taxonomy: each refusing policy has its own
//! error type ([`load_shed::Shed`], [`rate_limit::RateLimited`],
//! [`request_timeout::TimedOut`], [`body_read::BodyRefused`]), answered with [`refusal`]; the API maps them to problem
//! responses (`http::error`) and assembles the edge stack (`http::edge`).
//!
//! # Layout
//! Inbound (the HTTP API), assembled by the API's edge stack:
//! - [`http_metrics`]: request duration, in-flight and rejections by route template.
//! - [`request_log`]: one structured, redacted event per request.
//! - [`rate_limit`]: per-client GCRA limit -> `429 RATE_LIMITED`.
//! - [`body_read`]: the body buffered under a deadline and a minimum rate before the
//!   concurrency limit -> `408 REQUEST_BODY_TIMEOUT`, `413 PAYLOAD_TOO_LARGE`.
//! - [`load_shed`]: global concurrency limit, shed at once -> `503 OVERLOADED`; the limit
//!   fixed, or measured by [`adaptive_limit`] from the latency it causes.
//! - [`request_timeout`]: per-route bound -> `504 REQUEST_TIMEOUT`, handler cancelled.
//!
//! Outbound (dependencies), assembled per dependency (see [`dependency`] for the order):
//! - [`retry`]: exponential backoff with full jitter under a retry budget.
//! - [`observe`]: per-attempt metrics and span.
//! - [`circuit_breaker`]: failure-rate breaker with bounded half-open probes.
//! - [`bulkhead`]: concurrency limit that rejects instead of queueing.
//! - [`timeout`]: per-attempt bound.

pub mod adaptive_limit;
pub mod body_read;
pub mod bulkhead;
pub mod circuit_breaker;
pub mod dependency;
pub mod http_metrics;
pub mod load_shed;
pub mod observe;
pub mod rate_limit;
pub mod request_log;
pub mod request_timeout;
pub mod retry;
pub mod timeout;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::response::Response;
use serde::{Deserialize, Serialize};

use crate::support::{InvalidKey, SecretUrl, ensure};
use circuit_breaker::BreakerConfig;
use dependency::DependencyConfig;
use rate_limit::RateLimitConfig;
use retry::RetryConfig;

/// Edge and dependency policy settings (`[policy]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Requests in flight across the API before new ones are shed with `OVERLOADED`. Keep it
    /// at most `runtime.max_instances` (the default of both is 128) so every admitted request
    /// can hold a plugin instance; start-up warns otherwise (`Config::warnings`).
    pub max_concurrency: usize,
    /// An adaptive limit on requests in flight, with `max_concurrency` as its ceiling.
    pub adaptive_concurrency: adaptive_limit::AdaptiveConcurrencyConfig,
    /// Per-route request timeouts by route template (e.g. `"/v1/orders" = 2000`), in ms;
    /// other routes use `http.request_timeout_ms`.
    pub route_timeouts_ms: BTreeMap<String, u64>,
    /// Per-client rate limit.
    pub rate_limit: RateLimitConfig,
    /// One structured, redacted log event per request.
    pub request_log: request_log::RequestLogConfig,
    /// The database's dependency stack (catalog reads).
    pub database: DependencyConfig,
    /// The catalog cache.
    pub cache: CacheConfig,
    /// The breaker of each plugin version (traps and exhausted budgets are failures).
    pub plugin_breaker: BreakerConfig,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            max_concurrency: 128,
            adaptive_concurrency: adaptive_limit::AdaptiveConcurrencyConfig::default(),
            route_timeouts_ms: BTreeMap::new(),
            rate_limit: RateLimitConfig::default(),
            request_log: request_log::RequestLogConfig::default(),
            database: DependencyConfig::default(),
            cache: CacheConfig::default(),
            plugin_breaker: BreakerConfig::default(),
        }
    }
}

impl PolicyConfig {
    /// Check values that parse but cannot work.
    pub fn validate(&self) -> Result<(), InvalidKey> {
        ensure(
            self.max_concurrency > 0,
            "policy.max_concurrency",
            "must be positive",
        )?;
        // Checked when off too, so that turning it on later cannot surprise.
        let adaptive = self.adaptive_concurrency.problem(self.max_concurrency);
        ensure(
            adaptive.is_none(),
            "policy.adaptive_concurrency",
            adaptive.unwrap_or_default(),
        )?;
        ensure(
            self.route_timeouts_ms.values().all(|ms| *ms > 0),
            "policy.route_timeouts_ms",
            "every timeout must be positive",
        )?;
        ensure(
            !self.rate_limit.enabled
                || (self.rate_limit.per_second > 0 && self.rate_limit.burst > 0),
            "policy.rate_limit",
            "per_second and burst must be positive",
        )?;
        for (key, dep) in [
            ("policy.database", &self.database),
            ("policy.cache.dependency", &self.cache.dependency),
            (
                "policy.plugin_breaker",
                &DependencyConfig {
                    breaker: self.plugin_breaker.clone(),
                    ..DependencyConfig::default()
                },
            ),
        ] {
            let b = &dep.breaker;
            ensure(
                !dep.timeout.is_zero() && dep.max_concurrency > 0,
                key,
                "timeout_ms and max_concurrency must be positive",
            )?;
            ensure(
                b.failure_rate > 0.0
                    && b.failure_rate <= 1.0
                    && b.min_calls > 0
                    && b.half_open_probes > 0
                    && !b.window.is_zero()
                    && !b.open_for.is_zero(),
                key,
                "breaker needs 0 < failure_rate <= 1 and positive min_calls, half_open_probes, window_ms, open_ms",
            )?;
        }
        Ok(())
    }

    /// The request timeouts by route template.
    pub fn route_timeouts(&self) -> BTreeMap<String, Duration> {
        self.route_timeouts_ms
            .iter()
            .map(|(r, ms)| (r.clone(), Duration::from_millis(*ms)))
            .collect()
    }
}

/// Settings of the catalog cache (`[policy.cache]`): where entries live, how long, and the
/// cache's dependency stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// How long an entry is served; 0 disables the cache.
    #[serde(with = "crate::support::duration_ms", rename = "ttl_ms")]
    pub ttl: Duration,
    /// Entries kept by the in-process cache.
    pub max_entries: usize,
    /// Redis URL (`redis://host:port/db`); the in-process cache when unset. Its password
    /// is redacted wherever the configuration is shown.
    pub redis_url: Option<SecretUrl>,
    /// Prefix of Redis keys, to share one Redis between services or environments.
    pub key_prefix: String,
    /// The cache's dependency stack.
    pub dependency: DependencyConfig,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(2),
            max_entries: 10_000,
            redis_url: None,
            key_prefix: "weir:catalog:v1:".to_owned(),
            dependency: DependencyConfig {
                timeout: Duration::from_millis(25),
                max_concurrency: 128,
                breaker: BreakerConfig::default(),
                // A cache miss is cheap: never retry the cache.
                retry: RetryConfig {
                    max_retries: 0,
                    ..RetryConfig::default()
                },
            },
        }
    }
}

/// Which edge policy refused a request (`rate_limit`, `shed`, `timeout`, `body_limit`,
/// `body_timeout`, `body_incomplete`), in
/// the response extensions of the refusal so [`http_metrics`] counts it. The policy's own
/// error rides beside it for the API to render as a problem response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RejectedBy(pub &'static str);

/// The bare response of a policy refusal: `status`, [`RejectedBy`] and the policy's error
/// in the extensions. The API's request-context middleware turns it into a problem body.
pub fn refusal<E>(status: http::StatusCode, policy: &'static str, error: E) -> Response
where
    E: Clone + Send + Sync + 'static,
{
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = status;
    response.extensions_mut().insert(RejectedBy(policy));
    response.extensions_mut().insert(error);
    response
}
