//! Edge and dependency policies, one tower policy per file (Layer + Service + error + tests).
//!
//! # Layout
//! Inbound (the HTTP API), assembled by [`edge`]:
//! - [`http_metrics`]: request duration, in-flight and rejections by route template.
//! - [`request_log`]: one structured, redacted event per request.
//! - [`rate_limit`]: per-client GCRA limit -> `429 RATE_LIMITED`.
//! - [`load_shed`]: global concurrency limit, shed at once -> `503 OVERLOADED`.
//! - [`request_timeout`]: per-route bound -> `504 REQUEST_TIMEOUT`, handler cancelled.
//!
//! Outbound (dependencies), assembled per dependency (see [`dependency`] for the order):
//! - [`retry`]: exponential backoff with full jitter under a retry budget.
//! - [`observe`]: per-attempt metrics and span.
//! - [`circuit_breaker`]: failure-rate breaker with bounded half-open probes.
//! - [`bulkhead`]: concurrency limit that rejects instead of queueing.
//! - [`timeout`]: per-attempt bound.

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

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tower_http::catch_panic::CatchPanicLayer;

use crate::cache::CacheConfig;
use crate::config::{Config, ConfigError};
use crate::http::context;
use crate::http::error::ApiError;
use crate::http::extract::BodyLimit;
use dependency::DependencyConfig;
use rate_limit::RateLimitConfig;

/// Edge and dependency policy settings (`[policy]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Requests in flight across the API before new ones are shed with `OVERLOADED`.
    pub max_concurrency: usize,
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
    pub plugin_breaker: circuit_breaker::BreakerConfig,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            max_concurrency: 256,
            route_timeouts_ms: BTreeMap::new(),
            rate_limit: RateLimitConfig::default(),
            request_log: request_log::RequestLogConfig::default(),
            database: DependencyConfig::default(),
            cache: CacheConfig::default(),
            plugin_breaker: circuit_breaker::BreakerConfig::default(),
        }
    }
}

impl PolicyConfig {
    /// Check values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        };
        if self.max_concurrency == 0 {
            return invalid("policy.max_concurrency", "must be positive");
        }
        if self.route_timeouts_ms.values().any(|ms| *ms == 0) {
            return invalid("policy.route_timeouts_ms", "every timeout must be positive");
        }
        if self.rate_limit.enabled
            && (self.rate_limit.per_second == 0 || self.rate_limit.burst == 0)
        {
            return invalid("policy.rate_limit", "per_second and burst must be positive");
        }
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
            if dep.timeout.is_zero() || dep.max_concurrency == 0 {
                return invalid(key, "timeout_ms and max_concurrency must be positive");
            }
            if !(b.failure_rate > 0.0 && b.failure_rate <= 1.0)
                || b.min_calls == 0
                || b.half_open_probes == 0
                || b.window.is_zero()
                || b.open_for.is_zero()
            {
                return invalid(
                    key,
                    "breaker needs 0 < failure_rate <= 1 and positive min_calls, half_open_probes, window_ms, open_ms",
                );
            }
        }
        Ok(())
    }
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::Internal("the handler panicked".to_owned()).into_response()
}

/// Wrap the API routes in the edge stack. This is the one place that decides the order.
///
/// Outermost first (axum applies the last `.layer` outermost, hence the reverse order in the
/// code):
/// 1. **Request context** (`http::context`): request id, trace id and the `http.request`
///    span exist before anything can fail, and it renders every error left by the layers
///    below as a problem response with those ids. Outermost so nothing escapes it.
/// 2. **HTTP metrics**: inside the context (it reads the policy error before the context
///    consumes it) and outside every policy, so rejections and full durations are counted.
/// 3. **Request log**: one redacted event per request, inside the request span (so it
///    carries the request and trace ids) and outside every policy, so rejected requests are
///    logged with their final status too.
/// 4. **Panic catcher**: a panic anywhere below becomes a 500 problem, which the log, the
///    metrics and the context above still see.
/// 5. **Body limit**: a limit configuration that extractors enforce lazily (413); cheap,
///    so it sits with the other request-shape checks before the expensive policies.
/// 6. **Rate limit**: per client, before the concurrency limit, so a noisy client is refused
///    without taking one of the shared in-flight slots from well-behaved ones.
/// 7. **Load shed / concurrency limit**: refuses at once when the global limit is reached;
///    it is outside the timeout so a shed request costs no timer, and it holds its slot
///    until the handler finishes or is cancelled by the timeout below.
/// 8. **Request timeout**: innermost, so it bounds only the handler's work (not time spent
///    being rejected) and, by dropping the handler, cancels the plugin call inside it.
///
/// All of these are applied with `Router::layer`, i.e. per route after routing, which is what
/// makes the route template (`MatchedPath`) available to metrics and the timeout. The
/// shared state (rate-limit buckets, the concurrency semaphore) is shared by all routes.
pub fn edge(routes: Router, config: &Config) -> Router {
    let limit = config.http.body_limit_bytes;
    let policy = &config.policy;
    let route_timeouts = policy
        .route_timeouts_ms
        .iter()
        .map(|(r, ms)| (r.clone(), Duration::from_millis(*ms)))
        .collect();
    routes
        .layer(request_timeout::RequestTimeoutLayer::new(
            config.http.request_timeout,
            route_timeouts,
        ))
        .layer(load_shed::LoadShedLayer::new(policy.max_concurrency))
        .layer(rate_limit::RateLimitLayer::new(
            &policy.rate_limit,
            policy.request_log.tenant_header.as_deref(),
        ))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::Extension(BodyLimit(limit)))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(request_log::RequestLogLayer::new(&policy.request_log))
        .layer(http_metrics::HttpMetricsLayer::new())
        .layer(middleware::from_fn(context::request_context))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    fn load(toml: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.toml");
        std::fs::write(&path, toml).unwrap();
        Config::load(&Overrides {
            config_file: Some(path),
            ..Overrides::default()
        })
    }

    #[test]
    fn policy_settings_load_from_toml_and_bad_values_are_named() {
        let cfg = load(
            "[policy]\nmax_concurrency = 32\nroute_timeouts_ms = { \"/v1/orders\" = 3000 }\n\
             [policy.rate_limit]\nper_second = 10\nburst = 20\n\
             [policy.database.breaker]\nfailure_rate = 0.25\nopen_ms = 1000\n\
             [policy.cache]\nttl_ms = 0\n",
        )
        .unwrap();
        let p = &cfg.policy;
        assert_eq!(p.max_concurrency, 32);
        assert_eq!(p.route_timeouts_ms["/v1/orders"], 3000);
        assert_eq!((p.rate_limit.per_second, p.rate_limit.burst), (10, 20));
        assert_eq!(p.database.breaker.failure_rate, 0.25);
        assert_eq!(p.database.breaker.open_for, Duration::from_secs(1));
        assert!(p.cache.ttl.is_zero());

        for (toml, key) in [
            ("[policy]\nmax_concurrency = 0\n", "policy.max_concurrency"),
            (
                "[policy.database.breaker]\nfailure_rate = 1.5\n",
                "policy.database",
            ),
            (
                "[policy.plugin_breaker]\nmin_calls = 0\n",
                "policy.plugin_breaker",
            ),
        ] {
            let err = load(toml).unwrap_err().to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
        let err = load("[policy]\nmax_concurency = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_concurency"), "{err}");
    }
}
