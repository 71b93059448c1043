//! Stored plugin components and their releases.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::store::StoreError;
use crate::domain::release::{Release, ReleaseAudit};

/// The actor of what the process does at start-up (loading the built-in plugin and
/// `plugins.dir`, adopting them as releases nobody else set). Components admitted by it may
/// share a version with other bytes (a rebuilt binary); uploaded ones may not.
pub const STARTUP: &str = "startup";

/// The actor of the plugin author's dev loop (`weir serve --plugin FILE --watch`): each build
/// of the watched file is admitted by it, and like [`STARTUP`] it may admit a version already
/// stored with other bytes (an author edits and rebuilds without bumping the version each
/// time). Never the actor of an upload through the admin API.
pub const WATCH: &str = "watch";

/// Whether components admitted by `actor` may share a version with other bytes
/// ([`STARTUP`], [`WATCH`]); an upload may not.
pub fn may_reuse_version(actor: &str) -> bool {
    actor == STARTUP || actor == WATCH
}

/// An admitted component, as stored (its bytes are stored beside it, by digest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentRecord {
    /// Lower-case hex sha256 of the bytes.
    pub digest: String,
    /// Plugin name from `describe`.
    pub name: String,
    /// Plugin version from `describe`.
    pub version: String,
    /// Size in bytes.
    pub size: u64,
    /// Capabilities declared in `describe`.
    pub capabilities: Vec<String>,
    /// When it was admitted.
    pub admitted_at: DateTime<Utc>,
    /// Who admitted it.
    pub admitted_by: String,
}

/// Result of [`ComponentStore::put_component`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutComponent {
    /// Stored now.
    Inserted,
    /// The digest was stored before: nothing changed (uploads are idempotent).
    Existing(ComponentRecord),
    /// The plugin already has this version with other bytes: refused.
    VersionTaken(ComponentRecord),
}

/// Admitted components by digest.
#[async_trait::async_trait]
pub trait ComponentStore: Send + Sync {
    /// Stores `record` and `bytes` unless the digest is stored (idempotent) or, for an upload
    /// (an actor that may not [reuse a version](may_reuse_version)), the plugin's version is
    /// taken by other bytes; race-free.
    async fn put_component(
        &self,
        record: &ComponentRecord,
        bytes: &[u8],
    ) -> Result<PutComponent, StoreError>;

    /// One component's record.
    async fn get_component(&self, digest: &str) -> Result<Option<ComponentRecord>, StoreError>;

    /// One component's bytes.
    async fn component_bytes(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// The components of `name` (all plugins when `None`), oldest first.
    async fn list_components(&self, name: Option<&str>)
    -> Result<Vec<ComponentRecord>, StoreError>;
}

/// Releases, compare-and-set on their generation, with their audit trail.
#[async_trait::async_trait]
pub trait ReleaseStore: Send + Sync {
    /// One plugin's release.
    async fn get_release(&self, name: &str) -> Result<Option<Release>, StoreError>;

    /// Every release, by name.
    async fn list_releases(&self) -> Result<Vec<Release>, StoreError>;

    /// In one transaction: if the stored generation of `next.name` is `expected` (0: none
    /// stored), store `next` (whose generation is `expected + 1`) and append `audit`, and tell
    /// other replicas; `false` (nothing written) otherwise.
    async fn swap_release(
        &self,
        expected: i64,
        next: &Release,
        audit: &ReleaseAudit,
    ) -> Result<bool, StoreError>;

    /// The audit trail of `name`, newest first, at most `limit` entries.
    async fn release_history(
        &self,
        name: &str,
        limit: u32,
    ) -> Result<Vec<ReleaseAudit>, StoreError>;
}
