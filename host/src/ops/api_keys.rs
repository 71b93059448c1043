//! API keys of the public API (behind [`AdminAuth`]; the token's name is recorded as the
//! key's creator):
//!
//! | method and path | what |
//! |---|---|
//! | `POST /admin/v1/apikeys` `{"tenant", "name", "scopes": [...], "expires_at"?}` | create a key; `201` with the key text, shown this once |
//! | `GET /admin/v1/apikeys[?tenant=T]` | list keys (never their secrets), newest first |
//! | `DELETE /admin/v1/apikeys/{id}` | revoke; the key stops working at once on this instance and within `auth.cache_ttl_ms` on the others |
//!
//! `weir apikey create|list|revoke` are the command-line clients of these endpoints.

use axum::Router;
use axum::extract::{Path, State};
use axum::middleware;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{delete, get};
use chrono::{DateTime, Utc};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use weir_core::domain::tenant::valid_tenant;

use super::OpsState;
use super::auth::AdminAuth;
use crate::auth::Scopes;
use crate::auth::keys::{KeyRequest, generate};
use crate::http::error::{ApiError, FieldViolation};
use crate::http::extract::{JsonBody, QueryParams};
use crate::storage::ApiKeyRecord;

/// Body of `POST /admin/v1/apikeys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// The tenant the key acts for.
    pub tenant: String,
    /// A label for operators (1-64 printable characters).
    pub name: String,
    /// Granted scopes, e.g. `["orders:write", "orders:read"]`.
    pub scopes: Vec<String>,
    /// When the key stops working (RFC 3339), if ever.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// Query of `GET /admin/v1/apikeys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListKeys {
    /// Only this tenant's keys.
    pub tenant: Option<String>,
}

/// A key as listed (no secret, no hash).
#[derive(Debug, Serialize, Deserialize)]
pub struct KeyView {
    /// Key id (revoke with it).
    pub id: Uuid,
    /// The public lookup prefix (the key text starts `weir_<prefix>_`).
    pub prefix: String,
    /// Tenant.
    pub tenant: String,
    /// Label.
    pub name: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// Created by (admin token name).
    pub created_by: String,
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiKeyRecord> for KeyView {
    fn from(r: ApiKeyRecord) -> Self {
        Self {
            id: r.id,
            prefix: r.prefix,
            tenant: r.tenant,
            name: r.name,
            scopes: r
                .scopes
                .split_ascii_whitespace()
                .map(str::to_owned)
                .collect(),
            created_at: r.created_at,
            created_by: r.created_by,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
        }
    }
}

/// Answer of `POST /admin/v1/apikeys`: the only time the key text is ever shown.
#[derive(Debug, Serialize, Deserialize)]
pub struct CreatedKey {
    /// The key to give to the client: `weir_<prefix>_<secret>`.
    pub key: String,
    /// The stored facts.
    #[serde(flatten)]
    pub view: KeyView,
}

fn violation(field: &str, message: &str) -> FieldViolation {
    FieldViolation {
        field: field.to_owned(),
        code: "INVALID".to_owned(),
        message: message.to_owned(),
    }
}

fn check(body: &CreateKey) -> Result<Scopes, ApiError> {
    let mut violations = Vec::new();
    if !valid_tenant(&body.tenant) {
        violations.push(violation(
            "tenant",
            "must be 1-64 characters of a-z, 0-9, '-', '_' and '.', starting with a letter or digit",
        ));
    }
    if body.name.is_empty()
        || body.name.chars().count() > 64
        || body.name.chars().any(char::is_control)
    {
        violations.push(violation("name", "must be 1-64 printable characters"));
    }
    let scopes = Scopes::parse_strict(&body.scopes.join(" "));
    match &scopes {
        Err(e) => violations.push(violation("scopes", &e.to_string())),
        Ok(s) if *s == Scopes::default() => {
            violations.push(violation("scopes", "grant at least one scope"))
        }
        Ok(_) => {}
    }
    if body.expires_at.is_some_and(|at| at <= Utc::now()) {
        violations.push(violation("expires_at", "must be in the future"));
    }
    match scopes {
        Ok(s) if violations.is_empty() => Ok(s),
        _ => Err(ApiError::ApiKeyInvalid(violations)),
    }
}

async fn create_key(
    admin: AdminAuth,
    State(ops): State<OpsState>,
    body: Result<JsonBody<CreateKey>, ApiError>,
) -> Result<Response, ApiError> {
    let body = body?.value;
    let scopes = check(&body)?;
    let new = generate(
        KeyRequest {
            tenant: body.tenant,
            name: body.name,
            scopes,
            expires_at: body.expires_at,
            created_by: admin.actor,
        },
        Utc::now(),
    )
    .map_err(|e| ApiError::Internal(anyhow::anyhow!("the OS random source failed: {e}")))?;
    ops.auth
        .keys()
        .insert_api_key(&new.record)
        .await
        .map_err(|e| ApiError::store("storing the API key", e))?;
    tracing::info!(
        key_id = %new.record.id,
        tenant = %new.record.tenant,
        scopes = %new.record.scopes,
        actor = %new.record.created_by,
        "API key created"
    );
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key: new.text,
            view: new.record.into(),
        }),
    )
        .into_response())
}

async fn list_keys(
    _: AdminAuth,
    State(ops): State<OpsState>,
    QueryParams(q): QueryParams<ListKeys>,
) -> Result<Json<Vec<KeyView>>, ApiError> {
    let keys = ops
        .auth
        .keys()
        .list_api_keys(q.tenant.as_deref())
        .await
        .map_err(|e| ApiError::store("listing API keys", e))?;
    Ok(Json(keys.into_iter().map(KeyView::from).collect()))
}

async fn revoke_key(
    admin: AdminAuth,
    State(ops): State<OpsState>,
    Path(id): Path<String>,
) -> Result<Json<KeyView>, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::InvalidPath {
        name: "id",
        reason: "must be a UUID".to_owned(),
    })?;
    let revoked = ops
        .auth
        .keys()
        .revoke_api_key(id, Utc::now())
        .await
        .map_err(|e| ApiError::store("revoking the API key", e))?
        .ok_or_else(|| ApiError::ApiKeyNotFound(id.to_string()))?;
    // This instance stops accepting it now; others within `auth.cache_ttl_ms`.
    ops.auth.forget_all();
    tracing::warn!(key_id = %id, tenant = %revoked.tenant, actor = %admin.actor, "API key revoked");
    Ok(Json(revoked.into()))
}

/// The API key routes, with the request-context layer so errors are problems.
pub fn router() -> Router<OpsState> {
    Router::new()
        .route("/admin/v1/apikeys", get(list_keys).post(create_key))
        .route("/admin/v1/apikeys/{id}", delete(revoke_key))
        .layer(middleware::from_fn(crate::http::context::request_context))
}
