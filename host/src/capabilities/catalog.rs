//! `weir:orders/catalog`: product lookups for plugins.
//!
//! The host side is the [`Catalog`] trait, implemented by the storage layer in production and
//! by [`StaticCatalog`] in tests and `weir plugin check`. Each lookup is bounded by the
//! smaller of the catalog timeout and the time left in the invocation; a lookup that runs out
//! of time is reported to the guest as `dependency-error::timeout`, never as a trap.

use std::collections::HashMap;
use std::time::Duration;

use crate::runtime::InvocationState;
use crate::runtime::bindings::catalog::{Host, Product};
use crate::runtime::bindings::{DependencyError, Money};

/// A product as the host's catalog knows it (also its JSON form in the Redis cache).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CatalogProduct {
    /// Stock keeping unit, the product's key.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Price in minor units of `currency`.
    pub unit_price: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Units available (negative values are reported as zero).
    pub stock: i64,
}

impl From<crate::storage::Product> for CatalogProduct {
    fn from(p: crate::storage::Product) -> Self {
        Self {
            sku: p.sku,
            name: p.name,
            unit_price: p.unit_price,
            currency: p.currency,
            stock: p.stock,
        }
    }
}

/// Why a catalog lookup failed. The cases map one to one onto the WIT `dependency-error`.
#[derive(Debug, Clone, thiserror::Error)]
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

/// Source of products for the `catalog` import.
#[async_trait::async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// The product for `sku`, `None` when unknown.
    async fn get(&self, sku: &str) -> Result<Option<CatalogProduct>, CatalogError>;
}

/// A fixed in-memory catalog.
#[derive(Debug, Default, Clone)]
pub struct StaticCatalog {
    products: HashMap<String, CatalogProduct>,
    delay: Option<Duration>,
}

impl StaticCatalog {
    /// A catalog holding `products`.
    pub fn new(products: impl IntoIterator<Item = CatalogProduct>) -> Self {
        Self {
            products: products.into_iter().map(|p| (p.sku.clone(), p)).collect(),
            delay: None,
        }
    }

    /// Make every lookup wait `delay` first (to exercise timeouts).
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }
}

#[async_trait::async_trait]
impl Catalog for StaticCatalog {
    async fn get(&self, sku: &str) -> Result<Option<CatalogProduct>, CatalogError> {
        if let Some(delay) = self.delay {
            tokio::time::sleep(delay).await;
        }
        Ok(self.products.get(sku).cloned())
    }
}

fn to_wit(p: CatalogProduct) -> Product {
    Product {
        sku: p.sku,
        name: p.name,
        unit_price: Money {
            amount: p.unit_price,
            currency: p.currency,
        },
        stock: u32::try_from(p.stock.max(0)).unwrap_or(u32::MAX),
    }
}

impl Host for InvocationState {
    #[tracing::instrument(name = "plugin.import.catalog.get", skip_all, fields(sku = %sku, outcome = tracing::field::Empty))]
    async fn get(
        &mut self,
        sku: String,
    ) -> wasmtime::Result<Result<Option<Product>, DependencyError>> {
        let limit = self.remaining().min(self.catalog_timeout);
        let result = match tokio::time::timeout(limit, self.catalog.get(&sku)).await {
            Err(_elapsed) => Err(DependencyError::Timeout),
            Ok(Ok(found)) => Ok(found.map(to_wit)),
            Ok(Err(CatalogError::Timeout)) => Err(DependencyError::Timeout),
            Ok(Err(CatalogError::Unavailable(m))) => Err(DependencyError::Unavailable(m)),
            Ok(Err(CatalogError::Internal(m))) => Err(DependencyError::Internal(m)),
        };
        let outcome = match &result {
            Ok(Some(_)) => "found",
            Ok(None) => "not_found",
            Err(DependencyError::Timeout) => "timeout",
            Err(DependencyError::Unavailable(_)) => "unavailable",
            Err(DependencyError::Internal(_)) => "internal",
        };
        tracing::Span::current().record("outcome", outcome);
        Ok(result)
    }
}
