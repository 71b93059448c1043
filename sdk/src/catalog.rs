//! The read-only product catalog (WIT interface `weir:orders/catalog`).

use crate::{DependencyError, Product};

/// Look up one product by sku.
///
/// `Ok(None)` means the catalog does not know the sku; `Err` means the lookup itself failed
/// (timeout, catalog down, ...), which a plugin usually reports as
/// [`crate::OrderError::Unavailable`].
pub fn get(sku: &str) -> Result<Option<Product>, DependencyError> {
    #[cfg(target_arch = "wasm32")]
    {
        crate::__bindings::weir::orders::catalog::get(sku)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        crate::testing::with_host("weir_sdk::catalog::get", |host| host.catalog_get(sku))
    }
}
