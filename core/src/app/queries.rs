//! Reads, and product updates.

use uuid::Uuid;

use super::OrderService;
use crate::domain::product::{ProductChange, valid_sku};
use crate::domain::{EventRecord, Order, Product, Violation};
use crate::ports::{OrderFilter, StoreError};

/// A page of the events feed.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedPage {
    /// Events in feed order.
    pub events: Vec<EventRecord>,
    /// The cursor continuing after this page.
    pub next_after: i64,
}

/// Why the events feed cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// Retention deleted events of this tenant after the reader's cursor: the reader may have
    /// missed some. Continuing from `purged_through` skips what is gone, knowingly.
    #[error("events up to seq {purged_through} were deleted by retention")]
    CursorExpired {
        /// The highest seq of the tenant deleted so far.
        purged_through: i64,
    },
    /// The store failed.
    #[error("reading the events feed")]
    Store(#[source] StoreError),
}

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

    /// A page of `tenant`'s events feed: its outbox events after `after_seq`, ascending.
    /// Without a cursor the page starts at the oldest event retention kept; with one that
    /// lies below an event retention deleted, [`FeedError::CursorExpired`] (checked after the
    /// read, so a purge running meanwhile cannot slip a gap through).
    pub async fn list_events(
        &self,
        tenant: &str,
        after_seq: Option<i64>,
        limit: u32,
    ) -> Result<FeedPage, FeedError> {
        let outbox = &self.ports.outbox;
        let events = outbox
            .list_events(tenant, after_seq.unwrap_or(0), limit)
            .await
            .map_err(FeedError::Store)?;
        let purged_through = outbox
            .events_purged_through(tenant)
            .await
            .map_err(FeedError::Store)?;
        let start = match after_seq {
            Some(after) if after < purged_through => {
                return Err(FeedError::CursorExpired { purged_through });
            }
            Some(after) => after,
            // An empty page continues after what is gone, not before it.
            None => purged_through,
        };
        let next_after = events.last().map_or(start, |e| e.seq.max(start));
        Ok(FeedPage { events, next_after })
    }

    /// A page of the catalog: at most `limit` products after `after_sku`, ordered by sku.
    pub async fn list_products(
        &self,
        after_sku: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Product>, StoreError> {
        self.ports.products.list_products(after_sku, limit).await
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
