//! API key records: what the database keeps of a key (never the secret itself).
//!
//! The authentication layer (`auth`, a layer above) owns the key format and the checks; this module
//! is only the storage port it uses, implemented by both backends.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreError;

/// One API key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Key id (public; used to revoke).
    pub id: Uuid,
    /// Random lookup prefix, part of the key text (public).
    pub prefix: String,
    /// Lowercase hex SHA-256 of the whole key text.
    pub secret_hash: String,
    /// The tenant the key acts for.
    pub tenant: String,
    /// Operator's label.
    pub name: String,
    /// Granted scopes, space-separated (`orders:write orders:read`).
    pub scopes: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Who created it (the admin token's name).
    pub created_by: String,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// API key storage.
#[async_trait::async_trait]
pub trait ApiKeyStore: Send + Sync {
    /// Stores a new key. A duplicate id or prefix is [`StoreError::Conflict`].
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError>;

    /// The key with this lookup prefix, revoked or not.
    async fn find_api_key(&self, prefix: &str) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// All keys (of `tenant` when given), newest first.
    async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKeyRecord>, StoreError>;

    /// Revokes the key at `now`; returns the record as revoked, or `None` when there is no
    /// such key. Revoking twice keeps the first revocation time.
    async fn revoke_api_key(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<ApiKeyRecord>, StoreError>;
}
