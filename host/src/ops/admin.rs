//! Rotation: take the instance out of rotation and back (behind [`AdminAuth`]).
//!
//! - `GET /admin/rotation`: `{"in_rotation": true, "draining": false}`.
//! - `PUT /admin/rotation` with `{"in_rotation": false}`: take the instance out of rotation
//!   (readiness fails with the `in_rotation` check; liveness is unaffected; requests still
//!   reaching it are served), or put it back with `true`. Not persisted: a restarted instance
//!   starts in rotation.

use axum::Router;
use axum::extract::State;
use axum::middleware;
use axum::response::Json;
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::OpsState;
use super::auth::AdminAuth;
use crate::http::error::ApiError;
use crate::http::extract::JsonBody;

/// Body of `PUT /admin/rotation`.
#[derive(Debug, Deserialize)]
pub struct SetRotation {
    /// `false` takes the instance out of rotation, `true` puts it back.
    pub in_rotation: bool,
}

/// Answer of both rotation endpoints.
#[derive(Debug, Serialize)]
pub struct RotationView {
    /// Whether operators keep the instance in rotation.
    pub in_rotation: bool,
    /// Whether the instance is shutting down (readiness fails regardless of rotation).
    pub draining: bool,
    /// Value before this call (only on `PUT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<bool>,
}

async fn get_rotation(_: AdminAuth, State(ops): State<OpsState>) -> Json<RotationView> {
    Json(RotationView {
        in_rotation: ops.shutdown.in_rotation(),
        draining: ops.shutdown.is_draining(),
        previous: None,
    })
}

async fn put_rotation(
    _: AdminAuth,
    State(ops): State<OpsState>,
    body: Result<JsonBody<SetRotation>, ApiError>,
) -> Result<Json<RotationView>, ApiError> {
    let wanted = body?.value.in_rotation;
    let previous = ops.shutdown.set_in_rotation(wanted);
    if previous != wanted {
        tracing::warn!(
            in_rotation = wanted,
            "instance {} rotation through the admin endpoint",
            if wanted {
                "put back into"
            } else {
                "taken out of"
            }
        );
    }
    Ok(Json(RotationView {
        in_rotation: wanted,
        draining: ops.shutdown.is_draining(),
        previous: Some(previous),
    }))
}

/// The admin routes of this module, with the request-context layer so errors are problems.
pub fn router() -> Router<OpsState> {
    Router::new()
        .route("/admin/rotation", get(get_rotation).put(put_rotation))
        .layer(middleware::from_fn(crate::http::context::request_context))
}
