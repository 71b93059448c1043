//! The plugin lifecycle API (behind [`AdminAuth`]; the token's name is the audit actor):
//!
//! | method and path | what |
//! |---|---|
//! | `POST /admin/v1/plugins` (the component as the body) | admit it: decode, compile, world, `describe`, version policy; stored by digest (same digest: idempotent) |
//! | `GET /admin/v1/plugins` | every plugin: release and versions |
//! | `GET /admin/v1/plugins/{name}` | one plugin: release, versions with state and figures |
//! | `PUT /admin/v1/plugins/{name}/release` | `{generation, stable, canary?, shadow?, reason?}`: compare-and-set |
//! | `POST /admin/v1/plugins/{name}/promote` | the canary becomes stable (`{generation?, reason?}`) |
//! | `POST /admin/v1/plugins/{name}/rollback` | back to the previous stable at once |
//! | `GET /admin/v1/plugins/{name}/history?limit=` | the audit trail, newest first |
//!
//! A refused upload answers `422 PLUGIN_REJECTED` with its `stage` (`decode`, `compile`,
//! `world`, `describe`, `policy`), or `413 PLUGIN_TOO_LARGE` (stage `size`); the running
//! versions are untouched. A stale generation answers `409 RELEASE_CONFLICT`.

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::middleware;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post, put};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use weir_core::domain::release::{
    Canary, DesiredRelease, Release, ReleaseAudit, ReleaseChange, Shadow,
};
use weir_core::ports::ComponentRecord;

use super::OpsState;
use super::auth::AdminAuth;
use crate::http::error::ApiError;
use crate::http::extract::{JsonBody, QueryParams, parse_json};
use crate::runtime::releases::{AdmitError, VersionStats};

/// Longest `reason` kept in the audit trail.
const MAX_REASON: usize = 500;

/// Body of `PUT /admin/v1/plugins/{name}/release` (unknown fields are refused by
/// [`JsonBody`] with their paths).
#[derive(Debug, Deserialize)]
pub struct SetRelease {
    /// The generation this change is based on (0 when the plugin has no release yet).
    pub generation: i64,
    /// The digest serving everything not routed to the canary.
    pub stable: String,
    /// Optional canary: `{digest, weight}` (weight 1-100, percent of routing keys).
    #[serde(default)]
    pub canary: Option<Canary>,
    /// Optional shadow: `{digest, sample}` (0 < sample <= 1).
    #[serde(default)]
    pub shadow: Option<Shadow>,
    /// Why, for the audit trail.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Body of `promote` and `rollback` (optional).
#[derive(Debug, Default, Deserialize)]
pub struct Step {
    /// When given, the change applies only if the release is still at this generation.
    #[serde(default)]
    pub generation: Option<i64>,
    /// Why, for the audit trail.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Query of the history.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Entries, 1-1000 (default 50).
    pub limit: Option<u32>,
}

/// One version of a plugin, as `GET /admin/v1/plugins/{name}` shows it.
#[derive(Debug, Serialize)]
pub struct VersionView {
    /// The stored component.
    #[serde(flatten)]
    pub component: ComponentRecord,
    /// `stable`, `canary`, `shadow`, `previous` (where a rollback goes) or `retired`.
    pub state: &'static str,
    /// Canary weight (percent), when a canary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u8>,
    /// Shadow sample, when a shadow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample: Option<f64>,
    /// This replica's figures over the window.
    pub stats: VersionStats,
}

/// One plugin.
#[derive(Debug, Serialize)]
pub struct PluginView {
    /// Plugin name.
    pub name: String,
    /// Its release, if any.
    pub release: Option<Release>,
    /// The generation serving on this replica (`-1`: none).
    pub generation_here: i64,
    /// Every admitted version, oldest first.
    pub versions: Vec<VersionView>,
}

fn reason(r: Option<String>) -> Result<Option<String>, ApiError> {
    match r {
        Some(r) if r.len() > MAX_REASON || r.chars().any(char::is_control) => {
            Err(ApiError::SchemaInvalid(format!(
                "`reason` must be at most {MAX_REASON} bytes without control characters"
            )))
        }
        other => Ok(other),
    }
}

fn valid_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::InvalidPath {
            name: "name",
            reason: "must be 1-64 characters of a-z, 0-9 and '-'".to_owned(),
        })
    }
}

async fn view(ops: &OpsState, name: &str) -> Result<PluginView, ApiError> {
    let releases = &ops.releases;
    let release = releases.service().get(name).await?;
    let components = releases.service().components(Some(name)).await?;
    if release.is_none() && components.is_empty() {
        return Err(ApiError::PluginNotFound(name.to_owned()));
    }
    let versions = components
        .into_iter()
        .map(|component| {
            let r = release.as_ref();
            let d = component.digest.as_str();
            let canary = r.and_then(|r| r.canary.as_ref()).filter(|c| c.digest == d);
            let shadow = r.and_then(|r| r.shadow.as_ref()).filter(|s| s.digest == d);
            let state = if r.is_some_and(|r| r.stable == d) {
                "stable"
            } else if canary.is_some() {
                "canary"
            } else if shadow.is_some() {
                "shadow"
            } else if r.is_some_and(|r| r.previous_stable.as_deref() == Some(d)) {
                "previous"
            } else {
                "retired"
            };
            VersionView {
                stats: releases.stats(d),
                weight: canary.map(|c| c.weight),
                sample: shadow.map(|s| s.sample),
                state,
                component,
            }
        })
        .collect();
    Ok(PluginView {
        name: name.to_owned(),
        generation_here: releases
            .registry()
            .slot_of(name)
            .map_or(-1, |s| s.generation),
        release,
        versions,
    })
}

async fn upload(
    auth: AdminAuth,
    State(ops): State<OpsState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let limit = ops.releases.config().upload_limit_bytes;
    let bytes = body.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(_) => ApiError::PluginTooLarge { limit },
        other => ApiError::MalformedJson(other.body_text()),
    })?;
    let admitted = ops
        .releases
        .admit(bytes.to_vec(), &auth.actor)
        .await
        .map_err(|e| match e {
            AdmitError::Busy => ApiError::AdmissionBusy,
            AdmitError::PoolExhausted(e) => e.into(),
            AdmitError::Refused {
                stage,
                detail,
                contract,
            } => ApiError::PluginRejected {
                stage,
                detail,
                contract,
            },
            AdmitError::Release(e) => e.into(),
        })?;
    let status = if admitted.new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(admitted)).into_response())
}

async fn list(
    _: AdminAuth,
    State(ops): State<OpsState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut names: Vec<String> = ops
        .releases
        .service()
        .components(None)
        .await?
        .into_iter()
        .map(|c| c.name)
        .collect();
    names.sort();
    names.dedup();
    let mut plugins = Vec::with_capacity(names.len());
    for name in names {
        plugins.push(view(&ops, &name).await?);
    }
    Ok(Json(serde_json::json!({ "plugins": plugins })))
}

async fn one(
    _: AdminAuth,
    State(ops): State<OpsState>,
    Path(name): Path<String>,
) -> Result<Json<PluginView>, ApiError> {
    valid_name(&name)?;
    Ok(Json(view(&ops, &name).await?))
}

async fn set_release(
    auth: AdminAuth,
    State(ops): State<OpsState>,
    Path(name): Path<String>,
    body: JsonBody<SetRelease>,
) -> Result<Json<Release>, ApiError> {
    valid_name(&name)?;
    let b = body.value;
    let reason = reason(b.reason)?;
    let change = ReleaseChange::Set(DesiredRelease {
        stable: b.stable,
        canary: b.canary,
        shadow: b.shadow,
    });
    let release = ops
        .releases
        .change(
            &name,
            &change,
            Some(b.generation),
            &auth.actor,
            reason.as_deref(),
        )
        .await?;
    Ok(Json(release))
}

async fn step(
    ops: OpsState,
    auth: AdminAuth,
    name: String,
    change: ReleaseChange,
    body: Bytes,
) -> Result<Json<Release>, ApiError> {
    valid_name(&name)?;
    // The body is optional: an empty one means "whatever the generation, no reason".
    let step: Step = if body.is_empty() {
        Step::default()
    } else {
        parse_json::<Step>(&body)?.value
    };
    let reason = reason(step.reason)?;
    let release = ops
        .releases
        .change(
            &name,
            &change,
            step.generation,
            &auth.actor,
            reason.as_deref(),
        )
        .await?;
    Ok(Json(release))
}

async fn promote(
    auth: AdminAuth,
    State(ops): State<OpsState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Release>, ApiError> {
    step(ops, auth, name, ReleaseChange::Promote, body).await
}

async fn rollback(
    auth: AdminAuth,
    State(ops): State<OpsState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Release>, ApiError> {
    step(ops, auth, name, ReleaseChange::Rollback, body).await
}

async fn history(
    _: AdminAuth,
    State(ops): State<OpsState>,
    Path(name): Path<String>,
    QueryParams(q): QueryParams<HistoryQuery>,
) -> Result<Json<BTreeMap<&'static str, Vec<ReleaseAudit>>>, ApiError> {
    valid_name(&name)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::InvalidQuery(
            "`limit` must be between 1 and 1000".to_owned(),
        ));
    }
    let entries = ops.releases.service().history(&name, limit).await?;
    Ok(Json(BTreeMap::from([("history", entries)])))
}

/// The plugin lifecycle routes, with the request-context layer so errors are problems.
pub fn router(upload_limit: usize) -> Router<OpsState> {
    Router::new()
        .route(
            "/admin/v1/plugins",
            post(upload)
                .layer(DefaultBodyLimit::max(upload_limit))
                .get(list),
        )
        .route("/admin/v1/plugins/{name}", get(one))
        .route("/admin/v1/plugins/{name}/release", put(set_release))
        .route("/admin/v1/plugins/{name}/promote", post(promote))
        .route("/admin/v1/plugins/{name}/rollback", post(rollback))
        .route("/admin/v1/plugins/{name}/history", get(history))
        .layer(middleware::from_fn(crate::http::context::request_context))
}
