//! The operations listener: health (`/livez`, `/readyz`, `/infoz`), `/metrics`, and the admin
//! endpoints behind the bearer token (disabled without one).
//!
//! # Layout
//! - [`health`]: liveness, readiness with per-check detail, build and runtime facts.
//! - [`auth`]: the one admin token check and its extractor, [`auth::AdminAuth`].
//! - [`admin`]: rotation (take the instance out of rotation and back).
//! - [`api_keys`]: API keys of the public API (create, list, revoke).
//! - [`plugins`]: the plugin lifecycle (upload, release, promote, roll back, history).
//! - [`sampling`]: the live trace sampling ratio.
//! - [`recording`]: case recording for `weir plugin test`.
//!
//! Errors are the API's problem responses ([`crate::http::error`]), rendered by the same
//! request-context middleware.

pub mod admin;
pub mod api_keys;
pub mod auth;
pub mod health;
pub mod plugins;
pub mod recording;
pub mod sampling;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

use crate::events::EventsHandle;
use crate::lifecycle::Shutdown;
use crate::policy::dependency::Dependencies;
use crate::runtime::releases::Releases;
use crate::runtime::{Registry, Runtime};
use crate::storage::Database;
use crate::support::Secret;

pub use health::InfoFacts;

/// Shared state of the operations listener.
#[derive(Clone)]
pub struct OpsState {
    /// The database (ping, backend name).
    pub database: Arc<dyn Database>,
    /// Loaded plugin versions and active slots.
    pub registry: Arc<Registry>,
    /// The plugin engine (in-flight calls, budget).
    pub runtime: Runtime,
    /// Name of the plugin serving the orders API.
    pub orders_plugin: String,
    /// Outbound dependencies (breakers, for readiness).
    pub deps: Arc<Dependencies>,
    /// The broker path, or the embedded default.
    pub events: EventsHandle,
    /// Readiness latches, in-flight requests, workers.
    pub shutdown: Shutdown,
    /// The admin bearer tokens by name; admin endpoints are disabled without any.
    pub admin_tokens: Arc<Vec<(String, Secret)>>,
    /// The plugin lifecycle.
    pub releases: Arc<Releases>,
    /// Authentication of the public API (its API key store, its credential cache).
    pub auth: crate::auth::Authenticator,
    /// Facts fixed at start-up, shown by `/infoz`.
    pub facts: Arc<InfoFacts>,
    /// The readiness metrics, updated by every `/readyz` evaluation.
    pub readiness: Arc<health::ReadinessSignal>,
}

/// The operations router.
pub fn router(state: OpsState) -> Router {
    let upload_limit = state.releases.config().upload_limit_bytes;
    Router::new()
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/infoz", get(health::infoz))
        .route("/metrics", get(crate::telemetry::metrics::handler))
        .merge(sampling::router())
        .merge(recording::router())
        .merge(admin::router())
        .merge(api_keys::router())
        .merge(plugins::router(upload_limit))
        .with_state(state)
}
