//! Health: `/livez`, `/readyz`, `/infoz`.
//!
//! `/infoz` lists the components of `plugins.dir` refused at start-up (`refused_plugins`:
//! file, stage, error); they do not affect readiness unless the orders plugin is missing.
//!
//! Readiness also fails while the instance drains (`draining`, from the first shutdown
//! signal on) or when an operator took it out of rotation (`in_rotation`); liveness does not.
//!
//! Liveness only says the process and its async runtime respond. Readiness checks the
//! database (bounded by a timeout), the circuit breakers of essential dependencies, and that
//! the orders plugin has an active version, with a
//! per-check JSON body and 503 when any check fails.
//!
//! Each `/readyz` evaluation also updates the readiness metrics ([`ReadinessSignal`]): the
//! gauge `weir_ready` (1 ready, 0 not; absent until the first probe) and the counter
//! `weir_readiness_transitions_total{to="ready"|"unready"}`, which counts every change between
//! two consecutive evaluations, so flapping shows even between two scrapes. A change is also
//! logged once, with the failing checks. The readiness seen is the one the probes (load
//! balancer, kubelet) saw: the metrics move only when something asks `/readyz`. Beside it,
//! `weir_readiness_check{check}` (1 passing, 0 failing; `check` is one of the check names
//! below, a closed set) says which check failed.

use std::sync::Mutex;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Json, Response};
use http::StatusCode;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Meter};
use serde::Serialize;

use super::OpsState;
use crate::support::{GIT_COMMIT, VERSION};

/// What `/infoz` shows that is fixed at start-up.
#[derive(Debug, Clone, Serialize)]
pub struct InfoFacts {
    /// Short hash of the configuration with secrets redacted.
    pub config_hash: String,
    /// `environment`.
    pub environment: String,
    /// The invocation budget.
    pub budget: crate::runtime::Budget,
    /// Which optional features are on.
    pub features: serde_json::Value,
    /// `shutdown.pre_stop_delay_ms`.
    pub pre_stop_delay_ms: u64,
    /// `shutdown.drain_deadline_ms`.
    pub drain_deadline_ms: u64,
    /// Components of `plugins.dir` refused at start-up (and left out), in file order.
    pub refused_plugins: Vec<RefusedComponent>,
    /// How the previous run in the data directory ended (`None` on a first start).
    pub previous_shutdown: Option<crate::lifecycle::PreviousRun>,
}

/// The readiness metrics: the last result of `/readyz` and the changes between results.
#[derive(Debug)]
pub struct ReadinessSignal {
    last: Mutex<Option<bool>>,
    ready: Gauge<i64>,
    transitions: Counter<u64>,
}

impl Default for ReadinessSignal {
    fn default() -> Self {
        Self::new()
    }
}

impl ReadinessSignal {
    /// Instruments on the global meter provider.
    pub fn new() -> Self {
        Self::with_meter(&opentelemetry::global::meter("weir.ops"))
    }

    /// Instruments from `meter`. Both transition series start at 0, so `increase()` sees
    /// the first change.
    pub fn with_meter(meter: &Meter) -> Self {
        let transitions = meter
            .u64_counter("weir.readiness.transitions")
            .with_description("Changes of the /readyz result between consecutive evaluations")
            .build();
        for to in ["ready", "unready"] {
            transitions.add(0, &[KeyValue::new("to", to)]);
        }
        Self {
            last: Mutex::new(None),
            ready: meter
                .i64_gauge("weir.ready")
                .with_description("1 when the last /readyz evaluation was ready, else 0")
                .build(),
            transitions,
        }
    }

    /// Record one evaluation; `failing` names the checks that failed. Returns whether the
    /// result changed since the previous evaluation (the first one is no change).
    pub fn record(&self, ready: bool, failing: &[&str]) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        self.ready.record(i64::from(ready), &[]);
        let changed = last.is_some_and(|was| was != ready);
        *last = Some(ready);
        drop(last);
        if changed {
            let to = if ready { "ready" } else { "unready" };
            self.transitions.add(1, &[KeyValue::new("to", to)]);
            if ready {
                tracing::info!(to, "readiness changed: ready");
            } else {
                tracing::warn!(
                    to,
                    failing = %failing.join(","),
                    "readiness changed: unready (failing: {})",
                    failing.join(", ")
                );
            }
        }
        changed
    }
}

/// A component of `plugins.dir` that admission refused at start-up, for `/infoz`.
#[derive(Debug, Clone, Serialize)]
pub struct RefusedComponent {
    /// The file.
    pub file: String,
    /// The admission stage that refused it (`read`, `decode`, `compile`, `imports`,
    /// `world`, `describe`, `policy`).
    pub stage: &'static str,
    /// The error chain (bounded).
    pub error: String,
}

#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

#[derive(Debug, Serialize)]
struct Readiness {
    ready: bool,
    checks: Vec<Check>,
}

pub(super) async fn livez() -> &'static str {
    "ok\n"
}

pub(super) async fn readyz(State(app): State<OpsState>) -> Response {
    let mut checks = Vec::new();
    let db = tokio::time::timeout(Duration::from_secs(2), app.database.ping()).await;
    checks.push(match db {
        Ok(Ok(())) => Check {
            name: "database",
            ok: true,
            detail: None,
        },
        Ok(Err(e)) => Check {
            name: "database",
            ok: false,
            detail: Some(format!(
                "ping failed ({})",
                if e.is_transient() {
                    "unavailable"
                } else {
                    "error"
                }
            )),
        },
        Err(_) => Check {
            name: "database",
            ok: false,
            detail: Some("ping timed out after 2s".to_owned()),
        },
    });
    // The orders plugin serves, and this replica applied the releases in the database.
    let slot = app.registry.slot_of(&app.orders_plugin);
    let synced = app.releases.synced();
    checks.push(Check {
        name: "plugin",
        ok: slot.is_some() && synced,
        detail: Some(match &slot {
            Some(s) => {
                let v = |p: &crate::runtime::PluginVersion| {
                    format!(
                        "{} {} sha256:{}",
                        p.meta.name, p.meta.version, p.meta.digest
                    )
                };
                let mut d = v(&s.stable);
                if let Some((c, w)) = &s.canary {
                    d.push_str(&format!("; canary {} at {w}%", v(c)));
                }
                if let Some((sh, sample)) = &s.shadow {
                    d.push_str(&format!("; shadow {} sampled {sample}", v(sh)));
                }
                if !synced {
                    d.push_str("; releases not applied yet");
                }
                d
            }
            None => {
                let refused = app.facts.refused_plugins.len();
                let mut d = format!("no active version of {}", app.orders_plugin);
                if refused > 0 {
                    d.push_str(&format!(
                        "; {refused} component(s) of plugins.dir refused at start-up (see /infoz)"
                    ));
                }
                d
            }
        }),
    });
    // An open breaker on an essential dependency makes the instance unready; an optional
    // one (the cache) is reported but does not. Once the open period ends the breaker
    // reports half-open and readiness returns, so traffic can probe the dependency.
    for b in app.deps.breakers() {
        let open = b.state == crate::policy::circuit_breaker::BreakerState::Open;
        checks.push(Check {
            name: match b.name {
                "database" => "database.breaker",
                "cache" => "cache.breaker",
                _ => "breaker",
            },
            ok: !(open && b.essential),
            detail: Some(match b.retry_after_ms {
                Some(ms) if open => format!("open: recent calls failed; probing in {ms}ms"),
                _ => b.state.as_str().to_owned(),
            }),
        });
    }
    // The broker is degraded, never failing: orders are still accepted and their events wait
    // in the outbox (backpressure, not readiness, limits how far that goes).
    if let Some(broker) = app.events.broker_health() {
        let link = |name: &str, l: &crate::events::LinkState| {
            if l.connected {
                None
            } else {
                Some(format!(
                    "{name} disconnected since {}{}",
                    l.since.to_rfc3339(),
                    l.last_error
                        .as_deref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                ))
            }
        };
        let problems: Vec<String> = [
            link("relay", &broker.relay),
            link("consumer", &broker.consumer),
        ]
        .into_iter()
        .flatten()
        .collect();
        checks.push(Check {
            name: "broker",
            ok: true,
            detail: Some(if problems.is_empty() {
                "connected".to_owned()
            } else {
                format!(
                    "degraded: {}; events wait in the outbox",
                    problems.join("; ")
                )
            }),
        });
    }
    // Shutdown latches: checked last so a draining instance still reports its dependencies.
    checks.push(Check {
        name: "draining",
        ok: !app.shutdown.is_draining(),
        detail: app
            .shutdown
            .is_draining()
            .then(|| "shutting down: finishing in-flight work".to_owned()),
    });
    checks.push(Check {
        name: "in_rotation",
        ok: app.shutdown.in_rotation(),
        detail: (!app.shutdown.in_rotation())
            .then(|| "taken out of rotation by an operator (PUT /admin/rotation)".to_owned()),
    });
    let ready = checks.iter().all(|c| c.ok);
    let failing: Vec<&str> = checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
    app.readiness.record(ready, &failing);
    record_checks(&checks);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(Readiness { ready, checks })).into_response()
}

/// The last readiness answer as gauges (see the module doc).
/// The per-check readiness gauge (the overall answer is [`ReadinessSignal`]'s).
fn record_checks(checks: &[Check]) {
    static GAUGE: std::sync::OnceLock<opentelemetry::metrics::Gauge<i64>> =
        std::sync::OnceLock::new();
    let gauge = GAUGE.get_or_init(|| {
        opentelemetry::global::meter("weir.ops")
            .i64_gauge("weir.readiness.check")
            .with_description("1 when the check passed at the last /readyz, 0 when it failed")
            .build()
    });
    for c in checks {
        gauge.record(
            i64::from(c.ok),
            &[opentelemetry::KeyValue::new("check", c.name)],
        );
    }
}

#[derive(Debug, Serialize)]
struct PluginInfoz {
    name: String,
    generation: i64,
    stable: VersionInfoz,
    #[serde(skip_serializing_if = "Option::is_none")]
    canary: Option<VersionInfoz>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow: Option<VersionInfoz>,
}

#[derive(Debug, Serialize)]
struct VersionInfoz {
    version: String,
    digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    weight: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sample: Option<f64>,
    /// How its calls used their inline slice (`runtime.inline_calls`).
    inline: crate::runtime::InlineState,
}

pub(super) async fn infoz(State(app): State<OpsState>) -> Json<serde_json::Value> {
    let plugins: Vec<PluginInfoz> = app
        .registry
        .active_names()
        .into_iter()
        .filter_map(|name| {
            let slot = app.registry.slot_of(&name)?;
            let v = |p: &crate::runtime::PluginVersion| VersionInfoz {
                version: p.meta.version.clone(),
                digest: format!("sha256:{}", p.meta.digest),
                weight: None,
                sample: None,
                inline: app.runtime.inline_of(p),
            };
            Some(PluginInfoz {
                name,
                generation: slot.generation,
                stable: v(&slot.stable),
                canary: slot.canary.as_ref().map(|(c, w)| VersionInfoz {
                    weight: Some(*w),
                    ..v(c)
                }),
                shadow: slot.shadow.as_ref().map(|(s, sample)| VersionInfoz {
                    sample: Some(*sample),
                    ..v(s)
                }),
            })
        })
        .collect();
    let facts = &app.facts;
    Json(serde_json::json!({
        "service": "weir",
        "version": VERSION,
        "git_commit": GIT_COMMIT,
        "config_hash": facts.config_hash,
        "database": app.database.backend(),
        "environment": facts.environment,
        "orders_plugin": app.orders_plugin,
        "plugins": plugins,
        "refused_plugins": facts.refused_plugins,
        "releases": {
            "synced": app.releases.synced(),
            "rollbacks_total": app.releases.rollbacks_total(),
            "recent_rollbacks": app.releases.recent_rollbacks(),
        },
        // The server runtime's workers as running (`server_threads`; 0 asks for half the CPUs).
        "server": {
            "worker_threads": tokio::runtime::Handle::current().metrics().num_workers(),
        },
        "runtime": {
            "in_flight": app.runtime.in_flight(),
            "budget": facts.budget,
            "memory_reset": app.runtime.memory_reset(),
            "threads": app.runtime.config().threads,
            "inline_calls": app.runtime.config().inline_calls,
            "placements": app.runtime.placements(),
            "contract": {
                "package": crate::world::PACKAGE,
                "accepted_versions": crate::world::ACCEPTED_VERSIONS,
            },
        },
        "telemetry": crate::telemetry::info(),
        "events": app.events.info(),
        "features": facts.features,
        "shutdown": {
            "draining": app.shutdown.is_draining(),
            "in_rotation": app.shutdown.in_rotation(),
            "in_flight_requests": app.shutdown.in_flight_requests(),
            "pre_stop_delay_ms": facts.pre_stop_delay_ms,
            "drain_deadline_ms": facts.drain_deadline_ms,
            "previous": facts.previous_shutdown,
        },
        "workers": app.shutdown.supervisor().view(),
    }))
}

#[cfg(test)]
mod tests {
    use opentelemetry::metrics::MeterProvider as _;
    use prometheus::Encoder as _;

    use super::*;

    /// The value of the series `name` (one series, any labels).
    fn sample(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    #[test]
    fn readiness_changes_are_counted_and_the_gauge_follows_the_last_result() {
        // Its own provider and registry: other tests' instruments do not mix in.
        let registry = prometheus::Registry::new();
        let provider = crate::telemetry::metrics::provider_builder(&registry)
            .unwrap()
            .build();
        let signal = ReadinessSignal::with_meter(&provider.meter("weir.ops"));
        let render = || {
            let mut out = Vec::new();
            prometheus::TextEncoder::new()
                .encode(&registry.gather(), &mut out)
                .unwrap();
            String::from_utf8(out).unwrap()
        };
        let count = |text: &str, to: &str| {
            text.lines()
                .filter(|l| l.starts_with("weir_readiness_transitions_total{"))
                .find(|l| l.contains(&format!("to=\"{to}\"")))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        };

        let text = render();
        assert!(
            sample(&text, "weir_ready").is_none(),
            "no value before a probe: {text}"
        );
        assert_eq!(count(&text, "ready"), Some(0.0), "{text}");
        assert_eq!(count(&text, "unready"), Some(0.0), "{text}");

        // The first result is no change; repeats are no change.
        assert!(!signal.record(true, &[]));
        assert!(!signal.record(true, &[]));
        assert_eq!(sample(&render(), "weir_ready"), Some(1.0));
        // Flapping: down, up, down.
        assert!(signal.record(false, &["database"]));
        assert!(!signal.record(false, &["database"]));
        assert!(signal.record(true, &[]));
        assert!(signal.record(false, &["draining"]));
        let text = render();
        assert_eq!(sample(&text, "weir_ready"), Some(0.0), "{text}");
        assert_eq!(count(&text, "unready"), Some(2.0), "{text}");
        assert_eq!(count(&text, "ready"), Some(1.0), "{text}");
    }
}
