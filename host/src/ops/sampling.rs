//! The live trace sampling ratio (behind [`AdminAuth`]).
//!
//! - `GET /admin/telemetry/sampling`: the live [`SamplingView`].
//! - `PUT /admin/telemetry/sampling` with `{"ratio": 0.5}`: change the root sampling ratio at
//!   once, without a restart (raise it during an incident, lower it after). Not persisted: a
//!   restart returns to `telemetry.sampling.ratio`.

use axum::Router;
use axum::middleware;
use axum::response::Json;
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::OpsState;
use super::auth::AdminAuth;
use crate::http::error::ApiError;
use crate::http::extract::JsonBody;
use crate::telemetry::{SamplingControl, SamplingView};

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

fn control() -> Result<&'static std::sync::Arc<SamplingControl>, ApiError> {
    crate::telemetry::global()
        .map(|t| t.sampling())
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("telemetry is not initialised")))
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
pub fn router() -> Router<OpsState> {
    Router::new()
        .route(
            "/admin/telemetry/sampling",
            get(get_sampling).put(put_sampling),
        )
        .layer(middleware::from_fn(crate::http::context::request_context))
}
