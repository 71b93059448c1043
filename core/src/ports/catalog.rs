//! Product lookups for deciders (the `catalog` capability of plugins).

use crate::domain::CatalogProduct;

/// Why a catalog lookup failed. The cases map one to one onto the WIT `dependency-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// The lookup did not finish in time.
    #[error("catalog lookup timed out")]
    Timeout,
    /// The backing store is unreachable or refusing calls.
    #[error("catalog unavailable: {0}")]
    Unavailable(String),
    /// The backing store failed permanently for this lookup.
    #[error("catalog failed: {0}")]
    Internal(String),
}

/// Source of products.
#[async_trait::async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// The product for `sku`, `None` when unknown.
    async fn get(&self, sku: &str) -> Result<Option<CatalogProduct>, CatalogError>;
}
