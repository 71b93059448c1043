//! Case recording (behind [`AdminAuth`]): real plugin inputs kept for `weir plugin test`
//! (see [`crate::runtime::cases`]).
//!
//! - `PUT /admin/recording` with a [`RecordingSpec`] (every field optional: `sample_percent`
//!   1-100, default 100; `max_cases` 1-10000, default 1000; `window_seconds` 1-86400, default
//!   600; `redact`, default true): start a recording, discarding any earlier one. Answers its
//!   status.
//! - `GET /admin/recording`: the status of the current recording (`{"recording": null}` when
//!   there is none).
//! - `GET /admin/recording/cases`: the cases kept so far, as a `weir.cases/1` file (what
//!   `weir plugin cases export` writes). The recording goes on.
//! - `DELETE /admin/recording`: stop the recording and discard its cases.
//!
//! A recording lives in this process only (not shared between replicas, lost on restart).

use axum::Router;
use axum::middleware;
use axum::response::Json;
use axum::routing::get;
use serde::Serialize;

use super::OpsState;
use super::auth::AdminAuth;
use crate::http::error::ApiError;
use crate::http::extract::JsonBody;
use crate::runtime::cases::{CasesFile, RecordingSpec, RecordingStatus};

/// Answer of `GET`, `PUT` and `DELETE /admin/recording`.
#[derive(Debug, Serialize)]
pub struct RecordingAnswer {
    /// The recording (for `DELETE`: the one stopped), or none.
    pub recording: Option<RecordingStatus>,
}

async fn get_recording(
    _: AdminAuth,
    axum::extract::State(state): axum::extract::State<OpsState>,
) -> Json<RecordingAnswer> {
    Json(RecordingAnswer {
        recording: state.runtime.recording().map(|r| r.status()),
    })
}

async fn put_recording(
    _: AdminAuth,
    axum::extract::State(state): axum::extract::State<OpsState>,
    body: Result<JsonBody<RecordingSpec>, ApiError>,
) -> Result<Json<RecordingAnswer>, ApiError> {
    let spec = body?.value;
    spec.validate()
        .map_err(|(field, why)| ApiError::SchemaInvalid(format!("{field}: {why}")))?;
    let recorder = state.runtime.start_recording(spec.clone());
    tracing::warn!(
        sample_percent = spec.sample_percent,
        max_cases = spec.max_cases,
        window_seconds = spec.window_seconds,
        redact = spec.redact,
        "case recording started through the admin endpoint"
    );
    Ok(Json(RecordingAnswer {
        recording: Some(recorder.status()),
    }))
}

async fn delete_recording(
    _: AdminAuth,
    axum::extract::State(state): axum::extract::State<OpsState>,
) -> Json<RecordingAnswer> {
    let stopped = state.runtime.stop_recording();
    if stopped.is_some() {
        tracing::warn!("case recording stopped and discarded through the admin endpoint");
    }
    Json(RecordingAnswer {
        recording: stopped.map(|r| r.status()),
    })
}

async fn get_cases(
    _: AdminAuth,
    axum::extract::State(state): axum::extract::State<OpsState>,
) -> Json<CasesFile> {
    Json(match state.runtime.recording() {
        Some(recorder) => recorder.export(),
        None => CasesFile::new(Vec::new()),
    })
}

/// The recording routes, with the request-context layer so errors are problem responses.
pub fn router() -> Router<OpsState> {
    Router::new()
        .route(
            "/admin/recording",
            get(get_recording)
                .put(put_recording)
                .delete(delete_recording),
        )
        .route("/admin/recording/cases", get(get_cases))
        .layer(middleware::from_fn(crate::http::context::request_context))
}
