//! Durable storage, split by aggregate: orders, idempotency keys, the outbox, the consumer
//! inbox and the product catalog. One error type, [`StoreError`], classified for the caller.
//!
//! Every method that writes more than one row does so in one transaction: either all of it
//! is visible afterwards or none of it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::stock::Shortage;
use crate::domain::{
    EventRecord, IdempotencyBegin, NewEvent, Order, OrderStatus, Product, StoredResponse,
};

/// The most orders [`OrderStore::list_orders`] returns in one page, whatever the filter asks.
pub const MAX_LIST_LIMIT: u32 = 500;

/// The most products [`ProductStore::list_products`] returns in one page.
pub const MAX_PRODUCTS_LIMIT: u32 = 1000;

/// The most events [`OutboxStore::list_events`] returns in one page, whatever the caller asks.
pub const MAX_EVENTS_LIMIT: u32 = 1000;

/// The error a database driver reported, kept opaque (the core names no driver) but intact:
/// its message and its own causes stay in the error chain.
#[derive(Debug)]
pub struct DriverError(Box<dyn std::error::Error + Send + Sync + 'static>);

impl DriverError {
    /// Wrap a driver's error.
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(e))
    }
}

impl std::fmt::Display for DriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DriverError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Storage failures, classified for the caller: retry ([`StoreError::is_transient`]), report
/// a conflict, or treat as a bug.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or did not answer in time (pool timeout, I/O,
    /// connection loss, lock timeout, serialization failure). Retryable.
    #[error("database unavailable")]
    Unavailable(#[source] DriverError),
    /// A constraint rejected the write (unique, foreign key, check, not null), or a
    /// precondition the store enforces did not hold.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A stored row cannot be decoded (e.g. an unknown status or a malformed id).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Anything else the database reported; a bug or an operator problem, not retryable.
    #[error("database error")]
    Internal(#[source] DriverError),
}

impl StoreError {
    /// Whether the same call may succeed if retried later.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Which orders [`OrderStore::list_orders`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderFilter {
    /// Only this tenant's orders (always applied: there is no cross-tenant list).
    pub tenant: String,
    /// Only this customer's orders.
    pub customer_id: Option<String>,
    /// Only orders in this status.
    pub status: Option<OrderStatus>,
    /// Page size; capped at [`MAX_LIST_LIMIT`]. Zero returns an empty page.
    pub limit: u32,
    /// Cursor: only orders with `id < before_id` (older ones), newest first.
    pub before_id: Option<Uuid>,
}

impl Default for OrderFilter {
    fn default() -> Self {
        OrderFilter {
            tenant: crate::domain::tenant::DEFAULT_TENANT.to_owned(),
            customer_id: None,
            status: None,
            limit: 50,
            before_id: None,
        }
    }
}

/// Result of [`OrderStore::create_order`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The order, its reservation, its events and the idempotency record were committed.
    Created,
    /// A line's quantity could not be reserved: nothing was written.
    Short(Shortage),
}

/// Result of [`OrderStore::transition_order`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "a one-off return value, never stored in bulk; unboxed keeps matching simple"
)]
pub enum TransitionOutcome {
    /// The order as stored after the transition.
    Applied(Order),
    /// The order's version was not `expected_version` (it changed concurrently) or the order
    /// does not exist; nothing was written.
    Stale,
}

/// Result of [`OrderStore::transition_order_once`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "a one-off return value, never stored in bulk; unboxed keeps matching simple"
)]
pub enum InboxOutcome {
    /// The transition and the inbox record were committed together.
    Applied(Order),
    /// The consumer had already recorded this message id: nothing was written.
    Duplicate,
    /// The order's version was not `expected_version` (or the order is gone): nothing was
    /// written, not even the inbox record, so the message can be processed again.
    Stale,
}

/// Unpublished outbox backlog, for metrics and backpressure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxStats {
    /// Rows not yet confirmed by the broker.
    pub unpublished: u64,
    /// `now - occurred_at` of the oldest unpublished event (zero if it lies in the future).
    pub oldest_unpublished_age: Option<Duration>,
}

/// Idempotency keys (see [`crate::domain::idempotency`]).
#[async_trait::async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims a key (already scoped by the caller, e.g. `"acme/POST /v1/orders:<client key>"`:
    /// the tenant is part of the key, so two tenants never share one) for `tenant`'s request
    /// whose canonical hash is `request_hash`; the record carries `tenant`:
    ///
    /// - absent, or created more than `retention` ago: (re)created `in_progress`, locked until
    ///   `now + lock_ttl` -> [`IdempotencyBegin::Started`];
    /// - different `request_hash` -> [`IdempotencyBegin::Mismatch`];
    /// - completed -> [`IdempotencyBegin::Replay`];
    /// - in progress and locked -> [`IdempotencyBegin::InProgress`] (retry after the lock
    ///   expires, at least 1 s);
    /// - in progress with an expired lock (the holder died): taken over ->
    ///   [`IdempotencyBegin::Started`].
    ///
    /// Race-free: of any number of concurrent calls with one key, at most one is `Started`.
    async fn idempotency_begin(
        &self,
        tenant: &str,
        key: &str,
        request_hash: &str,
        now: DateTime<Utc>,
        lock_ttl: Duration,
        retention: Duration,
    ) -> Result<IdempotencyBegin, StoreError>;

    /// Deletes an `in_progress` key: the attempt failed without effects and a retry may run.
    /// A completed key is left alone.
    async fn idempotency_release(&self, key: &str) -> Result<(), StoreError>;

    /// Completes an `in_progress` key with a response that had no database effects (e.g. a
    /// deterministic 422). Fails with [`StoreError::Conflict`] if the key is not in progress
    /// (missing, purged or already completed).
    async fn idempotency_complete(
        &self,
        key: &str,
        response: &StoredResponse,
    ) -> Result<(), StoreError>;
}

/// Orders, with the outbox events and idempotency completion written alongside them.
#[async_trait::async_trait]
pub trait OrderStore: Send + Sync {
    /// In one transaction: reserves the order's quantities ([`crate::domain::stock`]: per
    /// sku in [`demand`](crate::domain::stock::demand) order, each only if enough units are
    /// available, never going below zero), inserts the order (holding its reservation), its
    /// lines (in vector order) and `events`, and, with `idempotency = Some((key, response))`,
    /// completes the key with the response. A sku that is unknown or short yields
    /// [`CreateOutcome::Short`] and writes nothing. The key must be `in_progress`, otherwise
    /// nothing is written and the call fails with [`StoreError::Conflict`]; this stops a slow
    /// attempt whose lock was taken over from creating a second order. Any failure writes
    /// nothing.
    async fn create_order(
        &self,
        order: &Order,
        events: &[NewEvent],
        idempotency: Option<(&str, &StoredResponse)>,
    ) -> Result<CreateOutcome, StoreError>;

    /// One order with its lines.
    async fn get_order(&self, id: Uuid) -> Result<Option<Order>, StoreError>;

    /// Orders matching `filter`, newest first, with their lines.
    async fn list_orders(&self, filter: &OrderFilter) -> Result<Vec<Order>, StoreError>;

    /// In one transaction: sets the status if the order's version is `expected_version`
    /// (bumping the version, `updated_at = now`), settles the order's stock reservation if
    /// the new status does ([`crate::domain::stock::settlement`]; only while the order
    /// still holds it, so at most once per order) and appends `events`. A version mismatch or
    /// a missing order yields [`TransitionOutcome::Stale`] and writes nothing. The store does
    /// not judge whether the transition is allowed; the use-case does.
    async fn transition_order(
        &self,
        id: Uuid,
        expected_version: i64,
        new_status: OrderStatus,
        events: &[NewEvent],
        now: DateTime<Utc>,
    ) -> Result<TransitionOutcome, StoreError>;

    /// In ONE transaction: records `(consumer, message_id)` in the inbox (with the order's
    /// `tenant`) and applies the
    /// transition like [`OrderStore::transition_order`]. A message id the consumer already
    /// recorded yields [`InboxOutcome::Duplicate`]; a version mismatch
    /// [`InboxOutcome::Stale`]; either way nothing is written. Concurrent calls with one
    /// message id apply at most once.
    #[allow(
        clippy::too_many_arguments,
        reason = "mirrors transition_order plus the inbox key; a struct would only rename them"
    )]
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
    ) -> Result<InboxOutcome, StoreError>;
}

/// The consumer inbox: which messages each consumer already processed.
#[async_trait::async_trait]
pub trait InboxStore: Send + Sync {
    /// Records that `consumer` received `message_id`; `false` if it already had (a duplicate
    /// delivery to skip). Dedupe is per consumer; the record carries the `tenant` of the order
    /// the message is about.
    async fn record_inbox(
        &self,
        tenant: &str,
        consumer: &str,
        message_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Whether `consumer` already recorded `message_id` (a cheap pre-check; the authoritative
    /// dedupe is the inbox insert inside [`OrderStore::transition_order_once`]).
    async fn inbox_contains(&self, consumer: &str, message_id: &str) -> Result<bool, StoreError>;
}

/// The transactional outbox: the events feed and the relay's claims.
#[async_trait::async_trait]
pub trait OutboxStore: Send + Sync {
    /// `tenant`'s outbox events with `seq > after_seq`, ascending, at most `limit` (capped at
    /// [`MAX_EVENTS_LIMIT`]).
    async fn list_events(
        &self,
        tenant: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError>;

    /// The highest `seq` of `tenant` that retention has purged (0 when none was): a feed
    /// reader whose cursor lies below it may have missed events.
    async fn events_purged_through(&self, tenant: &str) -> Result<i64, StoreError>;

    /// The unpublished backlog.
    async fn outbox_stats(&self, now: DateTime<Utc>) -> Result<OutboxStats, StoreError>;

    /// Claims up to `limit` unpublished events for the relay `claimant` until `now + lease`,
    /// in `seq` order. A row is claimable when it is unpublished and not leased (no lease or
    /// an expired one); a row is skipped while an earlier unpublished row of the same
    /// `subject` (order) is leased, by anyone, so events of one order are never published by
    /// two relays at once nor out of order.
    async fn claim_outbox(
        &self,
        claimant: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError>;

    /// Marks these events published at `now` and drops their leases; returns how many rows
    /// changed (already published rows are left alone).
    async fn mark_published(&self, ids: &[Uuid], now: DateTime<Utc>) -> Result<u64, StoreError>;

    /// After a failed publish of these unpublished events held by `claimant`: counts the
    /// attempt and either gives the leases back at once (`retry_at = None`) or keeps them
    /// until `retry_at` (a deferred retry, e.g. after the broker returned the message).
    async fn release_outbox(
        &self,
        claimant: &str,
        ids: &[Uuid],
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError>;
}

/// Records that retention deletes once they are old enough
/// ([`crate::app::retention`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Expiring {
    /// Idempotency keys and their stored responses, by creation time. A key still in
    /// progress is deleted like a completed one: it is older than its lock by then.
    IdempotencyKeys,
    /// Outbox events the broker confirmed, by publication time. Unpublished events are never
    /// deleted, whatever their age.
    PublishedEvents,
    /// Every outbox event, by occurrence time: for an instance without a broker, where the
    /// events feed is their only reader and nothing ever marks them published.
    FeedEvents,
    /// Consumer inbox records, by reception time.
    InboxMessages,
}

impl Expiring {
    /// Stable name, for logs and metrics: the table purged (both event kinds purge the
    /// outbox).
    pub fn name(self) -> &'static str {
        match self {
            Expiring::IdempotencyKeys => "idempotency_keys",
            Expiring::PublishedEvents | Expiring::FeedEvents => "outbox_events",
            Expiring::InboxMessages => "inbox_messages",
        }
    }
}

/// Bounded deletes of expired records, so no purge holds a write lock for long.
#[async_trait::async_trait]
pub trait RetentionStore: Send + Sync {
    /// In one short transaction, deletes at most `limit` records of `kind` older than
    /// `before` (oldest first); returns how many. Deleting events also raises
    /// [`OutboxStore::events_purged_through`] of their tenants. [`Expiring::FeedEvents`]
    /// looks only at the `limit` lowest seqs (occurrence time follows seq), so a batch may
    /// delete fewer rows than expired and a run stops at the first unexpired event.
    async fn purge_expired(
        &self,
        kind: Expiring,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError>;
}

/// The product catalog.
#[async_trait::async_trait]
pub trait ProductStore: Send + Sync {
    /// One product.
    async fn get_product(&self, sku: &str) -> Result<Option<Product>, StoreError>;

    /// At most `limit` products (capped at [`MAX_PRODUCTS_LIMIT`]) whose sku sorts after
    /// `after_sku` (all when `None`), ordered by sku.
    async fn list_products(
        &self,
        after_sku: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Product>, StoreError>;

    /// Inserts the product or replaces its name, price, currency and count on hand
    /// (`product.stock`), in one statement that leaves the units reserved by orders as they
    /// are; returns it as read back (`stock` = available).
    async fn upsert_product(&self, product: &Product) -> Result<Product, StoreError>;

    /// Inserts `products` if the catalog is empty; returns whether it did. Safe against
    /// concurrent seeding from several replicas.
    async fn seed_products_if_empty(&self, products: &[Product]) -> Result<bool, StoreError>;
}
