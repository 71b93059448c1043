//! The operations listener: `/livez`, `/readyz`, `/infoz`.
//!
//! Liveness only says the process and its async runtime respond. Readiness checks the
//! database (bounded by a timeout) and that the orders plugin has an active version, with a
//! per-check JSON body and 503 when any check fails.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use http::StatusCode;
use serde::Serialize;

use crate::http::AppState;

/// Build facts compiled into the binary.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Git commit of the build, or `unknown`.
pub const GIT_COMMIT: &str = match option_env!("WEIR_GIT_COMMIT") {
    Some(c) => c,
    None => "unknown",
};

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

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(app): State<AppState>) -> Response {
    let mut checks = Vec::new();
    let db = tokio::time::timeout(Duration::from_secs(2), app.store.ping()).await;
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
    let plugin = app.orders_plugin();
    checks.push(Check {
        name: "plugin",
        ok: plugin.is_ok(),
        detail: Some(match plugin {
            Ok(p) => format!(
                "{} {} sha256:{}",
                p.meta.name, p.meta.version, p.meta.digest
            ),
            Err(_) => format!("no active version of {}", app.config.plugins.orders),
        }),
    });
    let ready = checks.iter().all(|c| c.ok);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(Readiness { ready, checks })).into_response()
}

#[derive(Debug, Serialize)]
struct PluginInfoz {
    name: String,
    stable: VersionInfoz,
    #[serde(skip_serializing_if = "Option::is_none")]
    canary: Option<(VersionInfoz, u8)>,
}

#[derive(Debug, Serialize)]
struct VersionInfoz {
    version: String,
    digest: String,
}

async fn infoz(State(app): State<AppState>) -> Json<serde_json::Value> {
    let plugins: Vec<PluginInfoz> = app
        .registry
        .active_names()
        .into_iter()
        .filter_map(|name| {
            let slot = app.registry.slot_of(&name)?;
            let v = |p: &crate::runtime::PluginVersion| VersionInfoz {
                version: p.meta.version.clone(),
                digest: format!("sha256:{}", p.meta.digest),
            };
            Some(PluginInfoz {
                name,
                stable: v(&slot.stable),
                canary: slot.canary.as_ref().map(|(c, w)| (v(c), *w)),
            })
        })
        .collect();
    Json(serde_json::json!({
        "service": "weir",
        "version": VERSION,
        "git_commit": GIT_COMMIT,
        "config_hash": app.config.hash(),
        "database": app.store.backend(),
        "environment": app.config.environment,
        "orders_plugin": app.config.plugins.orders,
        "plugins": plugins,
        "runtime": {
            "in_flight": app.runtime.in_flight(),
            "budget": app.runtime.config().budget,
        },
    }))
}

/// The operations router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/infoz", get(infoz))
        .with_state(state)
}
