//! Admin endpoints of telemetry, on the operations listener.
//!
//! - `GET /admin/telemetry/sampling`: the live [`SamplingView`].
//! - `PUT /admin/telemetry/sampling` with `{"ratio": 0.5}`: change the root sampling ratio at
//!   once, without a restart (raise it during an incident, lower it after). Not persisted: a
//!   restart returns to `telemetry.sampling.ratio`.
//!
//! Every admin endpoint needs `Authorization: Bearer <admin_token>`; [`authorize`] is the one
//! token check of the code base (`crate::admin::AdminAuth` is its extractor form, used here
//! too). The token is compared in constant time (SHA-256 of both sides, then `subtle`), so
//! neither its content nor its length leaks through timing. Without a configured token the
//! endpoints answer `404 ADMIN_DISABLED` (disabled, never open); a missing or wrong token is
//! `401 ADMIN_UNAUTHORIZED` with `WWW-Authenticate`.

use axum::Router;
use axum::middleware;
use axum::response::Json;
use axum::routing::get;
use http::{HeaderMap, header};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::SamplingView;
use crate::admin::AdminAuth;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::JsonBody;

/// Check the bearer token of an admin request against the configured one.
pub fn authorize(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = app.config.admin_token.as_ref() else {
        return Err(ApiError::AdminDisabled);
    };
    let provided = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .unwrap_or_default();
    let a = Sha256::digest(provided.as_bytes());
    let b = Sha256::digest(expected.expose().as_bytes());
    if bool::from(a.ct_eq(&b)) && !provided.is_empty() {
        Ok(())
    } else {
        Err(ApiError::AdminUnauthorized)
    }
}

/// Body of `PUT /admin/telemetry/sampling`.
#[derive(Debug, Deserialize)]
pub struct SetSampling {
    /// New root sampling ratio, 0.0-1.0.
    pub ratio: f64,
}

/// Answer of both sampling endpoints.
#[derive(Debug, Serialize)]
pub struct SamplingAnswer {
    /// The ratio before this call (only on `PUT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_ratio: Option<f64>,
    /// The live sampling configuration.
    #[serde(flatten)]
    pub sampling: SamplingView,
}

fn control() -> Result<&'static std::sync::Arc<super::SamplingControl>, ApiError> {
    super::global()
        .map(|t| t.sampling())
        .ok_or_else(|| ApiError::Internal("telemetry is not initialised".to_owned()))
}

async fn get_sampling(_: AdminAuth) -> Result<Json<SamplingAnswer>, ApiError> {
    Ok(Json(SamplingAnswer {
        previous_ratio: None,
        sampling: control()?.view(),
    }))
}

async fn put_sampling(
    _: AdminAuth,
    body: Result<JsonBody<SetSampling>, ApiError>,
) -> Result<Json<SamplingAnswer>, ApiError> {
    let ratio = body?.value.ratio;
    let control = control()?;
    let previous = control
        .set_ratio(ratio)
        .map_err(|e| ApiError::SchemaInvalid(format!("ratio: {e}")))?;
    tracing::warn!(
        previous_ratio = previous,
        ratio,
        "sampling ratio changed through the admin endpoint"
    );
    Ok(Json(SamplingAnswer {
        previous_ratio: Some(previous),
        sampling: control.view(),
    }))
}

/// The admin routes, with the request-context layer so errors are problem responses.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/admin/telemetry/sampling",
            get(get_sampling).put(put_sampling),
        )
        .layer(middleware::from_fn(crate::http::context::request_context))
}
