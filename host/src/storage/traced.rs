//! [`TracedStore`]: every store call inside its own `db.*` client span.
//!
//! The one place store calls get their spans, so no caller wraps some calls by hand and
//! forgets others. Each call runs in [`crate::telemetry::traced`] with a
//! [`crate::telemetry::db_span`] named after the operation (`db.order.get`,
//! `db.transaction.create_order`, ...); a failure is recorded on that span, where it was
//! detected, with its stable code and its error chain. Claiming an idempotency key is the
//! `idempotency.lookup` span with its decision as `idempotency.outcome`.
//!
//! A call made outside any span (an idle background poll, such as the relay looking for
//! unpublished rows every few hundred milliseconds) is not traced: it would start a trace of
//! its own on every poll. Background work that does something runs inside its worker's
//! `worker.unit` span (or the relay's `amqp.publish`), so its calls are traced there.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::field::Empty;
use uuid::Uuid;

use super::{
    ConnectError, Database, EventRecord, Expiring, IdempotencyBegin, IdempotencyStore,
    InboxOutcome, InboxStore, NewEvent, Order, OrderFilter, OrderStatus, OrderStore, OutboxStats,
    OutboxStore, Product, ProductStore, RetentionStore, RowCounts, Store, StoreError,
    StoredResponse, TransitionOutcome,
};
use crate::telemetry::{db_span, traced};
use weir_core::domain::release::{Release, ReleaseAudit};
use weir_core::ports::{
    ComponentRecord, ComponentStore, CreateOutcome, PutComponent, ReleaseStore,
};

/// The stable code of a store error on the span that saw it: the API's codes for the same
/// failure (`STORAGE_UNAVAILABLE` when retrying may help, else `INTERNAL_ERROR`).
pub fn error_code(e: &StoreError) -> &'static str {
    if e.is_transient() {
        "STORAGE_UNAVAILABLE"
    } else {
        "INTERNAL_ERROR"
    }
}

/// A [`Store`] whose every call gets a `db.*` span (see the module doc).
#[derive(Debug, Clone)]
pub struct TracedStore {
    inner: Arc<dyn Store>,
}

impl TracedStore {
    /// Trace every call of `inner`.
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self { inner }
    }

    async fn call<T>(
        &self,
        operation: &'static str,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if tracing::Span::current().is_none() {
            return call.await;
        }
        traced(db_span(self.inner.backend(), operation), error_code, call).await
    }
}

#[async_trait::async_trait]
impl Database for TracedStore {
    async fn migrate(&self) -> Result<(), ConnectError> {
        self.inner.migrate().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.call("ping", self.inner.ping()).await
    }

    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn close(&self) {
        self.inner.close().await;
    }

    async fn count_rows(&self) -> Result<RowCounts, StoreError> {
        self.call("count_rows", self.inner.count_rows()).await
    }
}

#[async_trait::async_trait]
impl IdempotencyStore for TracedStore {
    async fn idempotency_begin(
        &self,
        tenant: &str,
        key: &str,
        request_hash: &str,
        now: DateTime<Utc>,
        lock_ttl: Duration,
        retention: Duration,
    ) -> Result<IdempotencyBegin, StoreError> {
        let span = tracing::info_span!(
            "idempotency.lookup",
            otel.kind = "client",
            db.system.name = self.inner.backend(),
            db.operation.name = "idempotency_begin",
            idempotency.outcome = Empty,
            otel.status_code = Empty,
        );
        let begun = traced(
            span.clone(),
            error_code,
            self.inner
                .idempotency_begin(tenant, key, request_hash, now, lock_ttl, retention),
        )
        .await;
        if let Ok(b) = &begun {
            span.record("idempotency.outcome", b.label());
        }
        begun
    }

    async fn idempotency_release(&self, key: &str) -> Result<(), StoreError> {
        self.call("idempotency.release", self.inner.idempotency_release(key))
            .await
    }

    async fn idempotency_complete(
        &self,
        key: &str,
        response: &StoredResponse,
    ) -> Result<(), StoreError> {
        self.call(
            "idempotency.complete",
            self.inner.idempotency_complete(key, response),
        )
        .await
    }
}

#[async_trait::async_trait]
impl RetentionStore for TracedStore {
    async fn purge_expired(
        &self,
        kind: Expiring,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let operation = match kind {
            Expiring::IdempotencyKeys => "retention.purge_idempotency_keys",
            Expiring::PublishedEvents => "retention.purge_published_events",
            Expiring::FeedEvents => "retention.purge_feed_events",
            Expiring::InboxMessages => "retention.purge_inbox_messages",
        };
        self.call(operation, self.inner.purge_expired(kind, before, limit))
            .await
    }
}

#[async_trait::async_trait]
impl OrderStore for TracedStore {
    async fn create_order(
        &self,
        order: &Order,
        events: &[NewEvent],
        idempotency: Option<(&str, &StoredResponse)>,
    ) -> Result<CreateOutcome, StoreError> {
        self.call(
            "transaction.create_order",
            self.inner.create_order(order, events, idempotency),
        )
        .await
    }

    async fn get_order(&self, id: Uuid) -> Result<Option<Order>, StoreError> {
        self.call("order.get", self.inner.get_order(id)).await
    }

    async fn list_orders(&self, filter: &OrderFilter) -> Result<Vec<Order>, StoreError> {
        self.call("order.list", self.inner.list_orders(filter))
            .await
    }

    async fn transition_order(
        &self,
        id: Uuid,
        expected_version: i64,
        new_status: OrderStatus,
        events: &[NewEvent],
        now: DateTime<Utc>,
    ) -> Result<TransitionOutcome, StoreError> {
        self.call(
            "transaction.transition_order",
            self.inner
                .transition_order(id, expected_version, new_status, events, now),
        )
        .await
    }

    async fn transition_order_once(
        &self,
        tenant: &str,
        consumer: &str,
        message_id: &str,
        id: Uuid,
        expected_version: i64,
        new_status: OrderStatus,
        events: &[NewEvent],
        now: DateTime<Utc>,
    ) -> Result<InboxOutcome, StoreError> {
        self.call(
            "transaction.transition_order_once",
            self.inner.transition_order_once(
                tenant,
                consumer,
                message_id,
                id,
                expected_version,
                new_status,
                events,
                now,
            ),
        )
        .await
    }
}

#[async_trait::async_trait]
impl InboxStore for TracedStore {
    async fn record_inbox(
        &self,
        tenant: &str,
        consumer: &str,
        message_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.call(
            "inbox.record",
            self.inner.record_inbox(tenant, consumer, message_id, now),
        )
        .await
    }

    async fn inbox_contains(&self, consumer: &str, message_id: &str) -> Result<bool, StoreError> {
        self.call(
            "inbox.contains",
            self.inner.inbox_contains(consumer, message_id),
        )
        .await
    }
}

#[async_trait::async_trait]
impl OutboxStore for TracedStore {
    async fn list_events(
        &self,
        tenant: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.call(
            "outbox.list",
            self.inner.list_events(tenant, after_seq, limit),
        )
        .await
    }

    async fn events_purged_through(&self, tenant: &str) -> Result<i64, StoreError> {
        self.call(
            "outbox.purged_through",
            self.inner.events_purged_through(tenant),
        )
        .await
    }

    async fn outbox_stats(&self, now: DateTime<Utc>) -> Result<OutboxStats, StoreError> {
        self.call("outbox.stats", self.inner.outbox_stats(now))
            .await
    }

    async fn claim_outbox(
        &self,
        claimant: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.call(
            "outbox.claim",
            self.inner.claim_outbox(claimant, now, lease, limit),
        )
        .await
    }

    async fn mark_published(&self, ids: &[Uuid], now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.call("outbox.mark_published", self.inner.mark_published(ids, now))
            .await
    }

    async fn release_outbox(
        &self,
        claimant: &str,
        ids: &[Uuid],
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        self.call(
            "outbox.release",
            self.inner.release_outbox(claimant, ids, retry_at),
        )
        .await
    }
}

#[async_trait::async_trait]
impl ProductStore for TracedStore {
    async fn get_product(&self, sku: &str) -> Result<Option<Product>, StoreError> {
        self.call("product.get", self.inner.get_product(sku)).await
    }

    async fn list_products(
        &self,
        after_sku: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Product>, StoreError> {
        self.call("product.list", self.inner.list_products(after_sku, limit))
            .await
    }

    async fn upsert_product(&self, product: &Product) -> Result<Product, StoreError> {
        self.call("product.upsert", self.inner.upsert_product(product))
            .await
    }

    async fn seed_products_if_empty(&self, products: &[Product]) -> Result<bool, StoreError> {
        self.call("product.seed", self.inner.seed_products_if_empty(products))
            .await
    }
}

#[async_trait::async_trait]
impl ComponentStore for TracedStore {
    async fn put_component(
        &self,
        record: &ComponentRecord,
        bytes: &[u8],
    ) -> Result<PutComponent, StoreError> {
        self.call("component.put", self.inner.put_component(record, bytes))
            .await
    }

    async fn get_component(&self, digest: &str) -> Result<Option<ComponentRecord>, StoreError> {
        self.call("component.get", self.inner.get_component(digest))
            .await
    }

    async fn component_bytes(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.call("component.bytes", self.inner.component_bytes(digest))
            .await
    }

    async fn list_components(
        &self,
        name: Option<&str>,
    ) -> Result<Vec<ComponentRecord>, StoreError> {
        self.call("component.list", self.inner.list_components(name))
            .await
    }
}

#[async_trait::async_trait]
impl ReleaseStore for TracedStore {
    async fn get_release(&self, name: &str) -> Result<Option<Release>, StoreError> {
        self.call("release.get", self.inner.get_release(name)).await
    }

    async fn list_releases(&self) -> Result<Vec<Release>, StoreError> {
        self.call("release.list", self.inner.list_releases()).await
    }

    async fn swap_release(
        &self,
        expected: i64,
        next: &Release,
        audit: &ReleaseAudit,
    ) -> Result<bool, StoreError> {
        self.call(
            "transaction.swap_release",
            self.inner.swap_release(expected, next, audit),
        )
        .await
    }

    async fn release_history(
        &self,
        name: &str,
        limit: u32,
    ) -> Result<Vec<ReleaseAudit>, StoreError> {
        self.call("release.history", self.inner.release_history(name, limit))
            .await
    }
}

#[async_trait::async_trait]
impl super::ApiKeyStore for TracedStore {
    async fn insert_api_key(&self, key: &super::ApiKeyRecord) -> Result<(), StoreError> {
        self.call("api_keys.insert", self.inner.insert_api_key(key))
            .await
    }

    async fn find_api_key(&self, prefix: &str) -> Result<Option<super::ApiKeyRecord>, StoreError> {
        self.call("api_keys.find", self.inner.find_api_key(prefix))
            .await
    }

    async fn list_api_keys(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<super::ApiKeyRecord>, StoreError> {
        self.call("api_keys.list", self.inner.list_api_keys(tenant))
            .await
    }

    async fn revoke_api_key(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<super::ApiKeyRecord>, StoreError> {
        self.call("api_keys.revoke", self.inner.revoke_api_key(id, now))
            .await
    }
}
