//! The read-only product catalog (WIT interface `weir:orders/catalog`).

use crate::{DependencyError, Product};

/// Look up one product by sku.
///
/// `Ok(None)` means the catalog does not know the sku; `Err` means the lookup itself failed
/// (timeout, catalog down, ...), which a plugin usually reports as
/// [`crate::OrderError::Unavailable`].
///
/// ```
/// use weir_sdk::testing::FakeHost;
/// use weir_sdk::{DependencyError, Money, OrderError, Product, catalog};
///
/// let _host = FakeHost::new()
///     .product(Product::new("KB-001", "Keyboard", Money::new(8900, "EUR"), 3))
///     .catalog_error("FLAKY-1", DependencyError::Timeout)
///     .install();
/// assert_eq!(catalog::get("KB-001").unwrap().unwrap().stock, 3);
/// assert_eq!(catalog::get("NOPE-1"), Ok(None));
/// let failed = catalog::get("FLAKY-1")
///     .map_err(|e| OrderError::unavailable(format!("catalog: {e:?}")));
/// assert!(matches!(failed, Err(OrderError::Unavailable(_))));
/// ```
pub fn get(sku: &str) -> Result<Option<Product>, DependencyError> {
    #[cfg(all(target_arch = "wasm32", not(feature = "fake-host")))]
    {
        crate::__bindings::weir::orders::catalog::get(sku)
    }
    #[cfg(any(not(target_arch = "wasm32"), feature = "fake-host"))]
    {
        crate::testing::with_host("weir_sdk::catalog::get", |host| host.catalog_get(sku))
    }
}
