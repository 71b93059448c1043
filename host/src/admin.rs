//! The operations API's admin surface: one bearer-token guard, [`AdminAuth`], and the
//! rotation endpoints.
//!
//! # Guarding an admin handler
//!
//! Add `_: AdminAuth` as the first extractor of a handler on the operations router (state
//! [`AppState`]), and add [`crate::http::context::request_context`] as a layer of its routes
//! so errors render as problem responses. The check itself is
//! [`crate::telemetry::admin::authorize`] (constant-time comparison of SHA-256 digests): there
//! is exactly one token check in the code base. Outcomes:
//! - no `admin_token` configured: `404 ADMIN_DISABLED` (disabled, never open);
//! - missing or wrong `Authorization: Bearer <token>`: `401 ADMIN_UNAUTHORIZED` with
//!   `WWW-Authenticate: Bearer realm="weir-admin"`.
//!
//! ```ignore
//! async fn handler(_: AdminAuth, State(app): State<AppState>) -> Json<...> { ... }
//! ```
//!
//! # Rotation
//!
//! - `GET /admin/rotation`: `{"in_rotation": true, "draining": false}`.
//! - `PUT /admin/rotation` with `{"in_rotation": false}`: take the instance out of rotation
//!   (readiness fails with the `in_rotation` check; liveness is unaffected; requests still
//!   reaching it are served), or put it back with `true`. Not persisted: a restarted instance
//!   starts in rotation.

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::middleware;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use http::request::Parts;
use http::{HeaderValue, header};
use serde::{Deserialize, Serialize};

use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::JsonBody;

/// Proof that the request carried the configured admin bearer token.
#[derive(Debug, Clone, Copy)]
pub struct AdminAuth;

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Response> {
        crate::telemetry::admin::authorize(app, &parts.headers)
            .map(|()| AdminAuth)
            .map_err(rejection)
    }
}

/// The problem response of a failed admin check (adds `WWW-Authenticate` on 401).
pub fn rejection(err: ApiError) -> Response {
    let unauthorized = matches!(err, ApiError::AdminUnauthorized);
    let mut response = err.into_response();
    if unauthorized {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"weir-admin\""),
        );
    }
    response
}

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

async fn get_rotation(_: AdminAuth, State(app): State<AppState>) -> Json<RotationView> {
    Json(RotationView {
        in_rotation: app.shutdown.in_rotation(),
        draining: app.shutdown.is_draining(),
        previous: None,
    })
}

async fn put_rotation(
    _: AdminAuth,
    State(app): State<AppState>,
    body: Result<JsonBody<SetRotation>, ApiError>,
) -> Result<Json<RotationView>, ApiError> {
    let wanted = body?.value.in_rotation;
    let previous = app.shutdown.set_in_rotation(wanted);
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
        draining: app.shutdown.is_draining(),
        previous: Some(previous),
    }))
}

/// The admin routes of this module, with the request-context layer so errors are problems.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/rotation", get(get_rotation).put(put_rotation))
        .layer(middleware::from_fn(crate::http::context::request_context))
}
