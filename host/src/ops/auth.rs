//! The admin bearer-token guard: [`authorize`], the one token check of the code base, and its
//! extractor form, [`AdminAuth`].
//!
//! # Guarding an admin handler
//!
//! Add `_: AdminAuth` as the first extractor of a handler on the operations router (state
//! [`OpsState`]), and add [`crate::http::context::request_context`] as a layer of its routes
//! so errors render as problem responses. Outcomes:
//! - no `admin_token` configured: `404 ADMIN_DISABLED` (disabled, never open);
//! - missing or wrong `Authorization: Bearer <token>`: `401 ADMIN_UNAUTHORIZED` with
//!   `WWW-Authenticate: Bearer realm="weir-admin"`.
//!
//! Tokens have names (`admin_token` is `admin`; `[admin_tokens]` adds named ones): the name
//! of the token used is the actor recorded in the audit trail of plugin releases. A token is
//! compared in constant time (SHA-256 of both sides, then `subtle`) against every configured
//! one, so neither its content nor its length nor which token matched leaks through timing.
//!
//! ```ignore
//! async fn handler(_: AdminAuth, State(ops): State<OpsState>) -> Json<...> { ... }
//! ```

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::OpsState;
use crate::http::error::ApiError;
use crate::support::Secret;

/// Why an admin request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// No admin token is configured: the admin API is off.
    #[error("admin endpoints are disabled: no admin token is configured")]
    Disabled,
    /// The bearer token is missing or wrong.
    #[error("missing or wrong admin bearer token")]
    Unauthorized,
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Disabled => ApiError::AdminDisabled,
            AdminError::Unauthorized => ApiError::AdminUnauthorized,
        }
    }
}

/// The configured admin tokens and their names.
pub type AdminTokens = [(String, Secret)];

/// Check the bearer token of an admin request against the configured ones; the name of the
/// token that matched.
pub fn authorize(tokens: &AdminTokens, headers: &HeaderMap) -> Result<String, AdminError> {
    if tokens.is_empty() {
        return Err(AdminError::Disabled);
    }
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
    let mut matched = None;
    for (name, token) in tokens {
        let b = Sha256::digest(token.expose().as_bytes());
        if bool::from(a.ct_eq(&b)) && matched.is_none() {
            matched = Some(name.clone());
        }
    }
    match matched {
        Some(name) if !provided.is_empty() => Ok(name),
        _ => Err(AdminError::Unauthorized),
    }
}

/// Proof that the request carried a configured admin bearer token; `actor` is its name.
#[derive(Debug, Clone)]
pub struct AdminAuth {
    /// The name of the token used (`admin` for `admin_token`).
    pub actor: String,
}

impl FromRequestParts<OpsState> for AdminAuth {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, ops: &OpsState) -> Result<Self, Response> {
        authorize(&ops.admin_tokens, &parts.headers)
            .map(|actor| AdminAuth { actor })
            .map_err(rejection)
    }
}

/// The problem response of a failed admin check (adds `WWW-Authenticate` on 401).
pub fn rejection(err: AdminError) -> Response {
    let mut response = ApiError::from(err).into_response();
    if err == AdminError::Unauthorized {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"weir-admin\""),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_must_match_exactly_and_names_the_actor() {
        let tokens = vec![
            ("admin".to_owned(), Secret::new("0123456789abcdef-admin")),
            ("ci".to_owned(), Secret::new("0123456789abcdef-ci-token")),
        ];
        let headers = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            h
        };
        assert_eq!(
            authorize(&[], &headers("Bearer x")),
            Err(AdminError::Disabled)
        );
        assert_eq!(
            authorize(&tokens, &HeaderMap::new()),
            Err(AdminError::Unauthorized)
        );
        assert_eq!(
            authorize(&tokens, &headers("Bearer 0123456789abcdef-admi")),
            Err(AdminError::Unauthorized)
        );
        assert_eq!(
            authorize(&tokens, &headers("Bearer 0123456789abcdef-admin")),
            Ok("admin".to_owned())
        );
        assert_eq!(
            authorize(&tokens, &headers("Bearer 0123456789abcdef-ci-token")),
            Ok("ci".to_owned())
        );
    }
}
