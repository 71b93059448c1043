//! Reads, and product updates.

use uuid::Uuid;

use super::OrderService;
use crate::domain::product::{ProductChange, valid_sku};
use crate::domain::{EventRecord, Order, Product, Violation};
use crate::ports::{OrderFilter, StoreError};

/// Why a product update was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProductError {
    /// The sku is not a valid product key.
    #[error("sku must be 1-64 characters of A-Z, a-z, 0-9, '-' and '_'")]
    InvalidSku,
    /// The fields break the rules listed.
    #[error("product is invalid")]
    Invalid(Vec<Violation>),
    /// The store failed.
    #[error("writing the product")]
    Store(#[source] StoreError),
}

impl OrderService {
    /// One order of `tenant`: another tenant's order is `None`, exactly like a missing one,
    /// so its existence is not revealed.
    pub async fn get_order(&self, tenant: &str, id: Uuid) -> Result<Option<Order>, StoreError> {
        Ok(self
            .ports
            .orders
            .get_order(id)
            .await?
            .filter(|o| o.tenant == tenant))
    }

    /// Orders matching `filter` (always within `filter.tenant`), newest first.
    pub async fn list_orders(&self, filter: &OrderFilter) -> Result<Vec<Order>, StoreError> {
        self.ports.orders.list_orders(filter).await
    }

    /// The events feed of `tenant`: its outbox events after `after_seq`, ascending.
    pub async fn list_events(
        &self,
        tenant: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.ports
            .outbox
            .list_events(tenant, after_seq, limit)
            .await
    }

    /// The catalog, ordered by sku.
    pub async fn list_products(&self) -> Result<Vec<Product>, StoreError> {
        self.ports.products.list_products().await
    }

    /// Create or replace the product `sku` after validating the change.
    pub async fn put_product(
        &self,
        sku: &str,
        change: ProductChange,
    ) -> Result<Product, ProductError> {
        if !valid_sku(sku) {
            return Err(ProductError::InvalidSku);
        }
        let violations = change.violations();
        if !violations.is_empty() {
            return Err(ProductError::Invalid(violations));
        }
        let product = Product {
            sku: sku.to_owned(),
            name: change.name,
            unit_price: change.unit_price,
            currency: change.currency,
            stock: change.stock,
            reserved: 0,
            updated_at: self.ports.clock.now(),
        };
        self.ports
            .products
            .upsert_product(&product)
            .await
            .map_err(ProductError::Store)
    }
}
