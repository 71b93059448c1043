//! Durable storage: orders, the transactional outbox, idempotency records, the product catalog
//! and the consumer inbox.
//!
//! Everything above this module talks to one object-safe trait, [`Store`], held as
//! `Arc<dyn Store>`. [`connect`] picks the backend from the URL scheme.
//!
//! # Layout
//!
//! - `mod.rs` (this file): domain types, [`StoreError`] and its classification, the [`Store`]
//!   trait, [`connect`], helpers shared by both backends, and the backend-agnostic test suite
//!   that runs against both implementations.
//! - `sqlite.rs`: [`SqliteStore`], the embedded default (`sqlite:` URLs). WAL journal,
//!   `synchronous=NORMAL`, a 5 s busy timeout, foreign keys on. Every write transaction starts
//!   with `BEGIN IMMEDIATE`, so a writer takes the write lock up front instead of failing with
//!   `SQLITE_BUSY` when it tries to upgrade a read lock that another writer is also holding.
//! - `postgres.rs`: [`PgStore`], the production path (`postgres://` and `postgresql://`).
//! - [`testing`]: creates and drops a throw-away PostgreSQL database; shared with the
//!   cross-process tests in `tests/`.
//! - `host/migrations/{sqlite,postgres}/`: one migration folder per backend, embedded in the
//!   binary with `sqlx::migrate!` and applied by [`Store::migrate`].
//!
//! # Why two implementations instead of `sqlx::Any`
//!
//! `sqlx::Any` cannot bind UUIDs or timestamps, and the two engines differ where it matters:
//! PostgreSQL has native `uuid`, `timestamptz`, `jsonb` and row-level concurrency; SQLite has
//! a single writer and no native types for any of those. Each implementation uses its engine's
//! own idioms; the shared suite in this file pins down that both behave the same.
//!
//! # Representation notes
//!
//! - Order ids are UUIDv7 chosen by the caller, so `ORDER BY id DESC` is newest first. SQLite
//!   stores them as lowercase hyphenated TEXT, whose byte order is the same time order.
//! - Timestamps keep microsecond precision on both backends (PostgreSQL's resolution); SQLite
//!   stores them as fixed-width RFC 3339 text (`2026-11-01T12:00:00.000000Z`), so text
//!   comparison in SQL is chronological comparison.
//! - Money is always `i64` minor units.
//!
//! # Events feed caveat (PostgreSQL)
//!
//! [`Store::list_events`] pages by `seq`. On SQLite writers are serialized, so `seq` order is
//! commit order and a cursor never skips a row. On PostgreSQL a sequence value is taken at
//! insert time, so a transaction that commits later may expose a smaller `seq` than one already
//! read. The feed is the embedded default's way to expose the outbox; the production relay
//! claims unpublished rows instead (`FOR UPDATE SKIP LOCKED`) and is not affected.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

mod postgres;
mod sqlite;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// The most orders [`Store::list_orders`] returns in one page, whatever the filter asks for.
pub const MAX_LIST_LIMIT: u32 = 500;

/// The most events [`Store::list_events`] returns in one page, whatever the caller asks for.
pub const MAX_EVENTS_LIMIT: u32 = 1000;

/// Lifecycle state of an order. Stored as its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Placed,
    Paid,
    Shipped,
    Cancelled,
}

impl OrderStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [OrderStatus; 4] = [
        OrderStatus::Placed,
        OrderStatus::Paid,
        OrderStatus::Shipped,
        OrderStatus::Cancelled,
    ];

    /// The stored and serialized name: `"placed"`, `"paid"`, `"shipped"`, `"cancelled"`.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Placed => "placed",
            OrderStatus::Paid => "paid",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not one of the [`OrderStatus`] names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown order status {0:?}")]
pub struct UnknownOrderStatus(pub String);

impl FromStr for OrderStatus {
    type Err = UnknownOrderStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OrderStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownOrderStatus(s.to_owned()))
    }
}

/// One priced line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLineRecord {
    pub sku: String,
    pub quantity: u32,
    /// Minor units, as priced when the order was placed.
    pub unit_price: i64,
    /// Minor units; whatever the plugin decided (not recomputed here).
    pub line_total: i64,
}

/// The plugin version that made the business decision for an order, kept for audits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRef {
    pub name: String,
    pub version: String,
    /// sha256 of the component, hex.
    pub digest: String,
}

/// An order with its lines, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRecord {
    /// UUIDv7 chosen by the caller: ids sort by creation time.
    pub id: Uuid,
    pub customer_id: String,
    pub currency: String,
    pub status: OrderStatus,
    /// In `line_no` order (stored as 1, 2, ... in vector order).
    pub lines: Vec<OrderLineRecord>,
    pub subtotal: i64,
    pub discount: i64,
    pub tax: i64,
    pub total: i64,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub plugin: PluginRef,
    /// Optimistic-concurrency version: 1 at creation, +1 per transition.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An event to append to the outbox in the same transaction as the change it describes.
/// Fields follow CloudEvents naming.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Unique per event (the outbox rejects a duplicate id); consumers dedupe on it.
    pub id: Uuid,
    pub event_type: String,
    pub source: String,
    pub subject: String,
    pub occurred_at: DateTime<Utc>,
    pub data: serde_json::Value,
    /// W3C trace context of the request that produced the event, propagated by the relay.
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

/// An outbox row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Position in the outbox; the events feed cursor.
    pub seq: i64,
    pub id: Uuid,
    pub event_type: String,
    pub source: String,
    pub subject: String,
    pub occurred_at: DateTime<Utc>,
    pub data: serde_json::Value,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub published_at: Option<DateTime<Utc>>,
}

/// A catalog entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub sku: String,
    pub name: String,
    /// Minor units of `currency`.
    pub unit_price: i64,
    pub currency: String,
    pub stock: i64,
    pub updated_at: DateTime<Utc>,
}

/// An HTTP response kept for idempotent replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: Vec<u8>,
    /// In order; a name may repeat.
    pub headers: Vec<(String, String)>,
}

/// What [`Store::idempotency_begin`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// The caller now holds the key (until `now + lock_ttl`) and must finish with
    /// [`Store::create_order`] (with the key), [`Store::idempotency_complete`] or
    /// [`Store::idempotency_release`].
    Started,
    /// The key completed earlier with the same request: send this response again.
    Replay(StoredResponse),
    /// Another attempt with the same key holds it right now.
    InProgress { retry_after: Duration },
    /// The key was used with a different request.
    Mismatch,
}

/// Which orders [`Store::list_orders`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderFilter {
    pub customer_id: Option<String>,
    pub status: Option<OrderStatus>,
    /// Page size; capped at [`MAX_LIST_LIMIT`]. Zero returns an empty page.
    pub limit: u32,
    /// Cursor: only orders with `id < before_id` (older ones), newest first.
    pub before_id: Option<Uuid>,
}

impl Default for OrderFilter {
    fn default() -> Self {
        OrderFilter {
            customer_id: None,
            status: None,
            limit: 50,
            before_id: None,
        }
    }
}

/// Result of [`Store::transition_order`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "a one-off return value, never stored in bulk; unboxed keeps matching simple"
)]
pub enum TransitionOutcome {
    /// The order as stored after the transition.
    Applied(OrderRecord),
    /// The order's version was not `expected_version` (it changed concurrently) or the order
    /// does not exist; nothing was written.
    Stale,
}

/// Result of [`Store::transition_order_once`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "a one-off return value, never stored in bulk; unboxed keeps matching simple"
)]
pub enum InboxOutcome {
    /// The transition and the inbox record were committed together.
    Applied(OrderRecord),
    /// The consumer had already recorded this message id: nothing was written.
    Duplicate,
    /// The order's version was not `expected_version` (or the order is gone): nothing was
    /// written, not even the inbox record, so the message can be processed again.
    Stale,
}

/// Unpublished outbox backlog, for metrics and readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxStats {
    pub unpublished: u64,
    /// `now - occurred_at` of the oldest unpublished event (zero if it lies in the future).
    pub oldest_unpublished_age: Option<Duration>,
}

/// Row counts used by crash-safety tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RowCounts {
    pub orders: u64,
    pub order_lines: u64,
    pub outbox_events: u64,
    pub idempotency_completed: u64,
}

/// Connection pool settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Pool size. An in-memory SQLite database always uses one connection.
    pub max_connections: u32,
    /// How long a query waits for a free connection before failing with
    /// [`StoreError::Unavailable`].
    pub acquire_timeout: Duration,
    /// PostgreSQL `statement_timeout` for every session; SQLite has no equivalent (its busy
    /// timeout is fixed at 5 s) and ignores it.
    pub statement_timeout: Option<Duration>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: None,
        }
    }
}

/// Storage failures, classified for the caller: retry ([`StoreError::is_transient`]), report a
/// conflict, or treat as a bug.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or did not answer in time (pool timeout, I/O,
    /// connection loss, lock timeout, serialization failure). Retryable.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// A constraint rejected the write (unique, foreign key, check, not null), or a
    /// precondition the store enforces did not hold.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Applying the embedded migrations failed.
    #[error("database migration failed")]
    Migration(#[source] sqlx::migrate::MigrateError),
    /// The database URL is malformed or has an unsupported scheme (password redacted).
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    /// A stored row cannot be decoded (e.g. an unknown status or a malformed id).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Anything else the database reported; a bug or an operator problem, not retryable.
    #[error("database error")]
    Internal(#[source] sqlx::Error),
}

impl StoreError {
    /// Whether the same call may succeed if retried later.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migration(err)
    }
}

/// Maps a sqlx error by its variant and, for database errors, by constraint kind or by the
/// backend's error code (`is_transient_code`); never by message text.
pub(crate) fn classify(err: sqlx::Error, is_transient_code: fn(&str) -> bool) -> StoreError {
    use sqlx::error::ErrorKind;
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(err),
        sqlx::Error::Decode(ref source) => {
            StoreError::Corrupt(format!("undecodable value: {source}"))
        }
        sqlx::Error::ColumnDecode {
            ref index,
            ref source,
        } => StoreError::Corrupt(format!("undecodable column {index}: {source}")),
        sqlx::Error::Migrate(migrate) => StoreError::Migration(*migrate),
        sqlx::Error::Database(ref db) => {
            let kind = match db.kind() {
                ErrorKind::UniqueViolation => Some("unique"),
                ErrorKind::ForeignKeyViolation => Some("foreign key"),
                ErrorKind::NotNullViolation => Some("not null"),
                ErrorKind::CheckViolation => Some("check"),
                ErrorKind::ExclusionViolation => Some("exclusion"),
                _ => None,
            };
            if let Some(kind) = kind {
                let constraint = db
                    .constraint()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default();
                return StoreError::Conflict(format!(
                    "{kind} constraint violated{constraint}: {}",
                    db.message()
                ));
            }
            if db.code().is_some_and(|code| is_transient_code(&code)) {
                StoreError::Unavailable(err)
            } else {
                StoreError::Internal(err)
            }
        }
        other => StoreError::Internal(other),
    }
}

/// Returns `url` with any password (userinfo or `password=` query parameter) replaced by
/// `[redacted]`, for logs, `Debug` and `/infoz`. The one redactor of connection URLs:
/// [`crate::config::DatabaseUrl`] and [`crate::events::AmqpUrl`] use it too.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let authority_start = scheme_end + 3;
        let authority_end = out[authority_start..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| authority_start + i);
        if let Some(at) = out[authority_start..authority_end].rfind('@') {
            let userinfo_end = authority_start + at;
            if let Some(colon) = out[authority_start..userinfo_end].find(':') {
                out.replace_range(authority_start + colon + 1..userinfo_end, "[redacted]");
            }
        }
    }
    if let Some(query_start) = out.find('?') {
        let (head, query) = out.split_at(query_start + 1);
        let redacted: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                    format!("{key}=[redacted]")
                }
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{head}{}", redacted.join("&"));
    }
    out
}

/// The storage interface of the host. One implementation per backend; see the module docs.
///
/// Every method that writes more than one row does so in one transaction: either all of it is
/// visible afterwards or none of it. `Debug` never shows a password.
#[async_trait::async_trait]
pub trait Store: fmt::Debug + Send + Sync + 'static {
    /// Applies the embedded migrations of this backend. Idempotent; safe to run from several
    /// replicas at once (sqlx takes a lock).
    async fn migrate(&self) -> Result<(), StoreError>;

    /// `SELECT 1`, for readiness.
    async fn ping(&self) -> Result<(), StoreError>;

    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    /// Closes the pool, waiting for checked-out connections to come back.
    async fn close(&self);

    /// Claims an idempotency key (already scoped by the caller, e.g.
    /// `"POST /v1/orders:<client key>"`) for a request whose canonical hash is
    /// `request_hash`.
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

    /// Deletes keys created before `created_before`; returns how many.
    async fn purge_idempotency(&self, created_before: DateTime<Utc>) -> Result<u64, StoreError>;

    /// In one transaction: inserts the order, its lines (`line_no` 1, 2, ... in vector order) and
    /// `events`, and, with `idempotency = Some((key, response))`, completes the key with the
    /// response. The key must be `in_progress`, otherwise nothing is written and the call
    /// fails with [`StoreError::Conflict`]; this stops a slow attempt whose lock was taken
    /// over from creating a second order. Any failure writes nothing.
    async fn create_order(
        &self,
        order: &OrderRecord,
        events: &[NewEvent],
        idempotency: Option<(&str, &StoredResponse)>,
    ) -> Result<(), StoreError>;

    async fn get_order(&self, id: Uuid) -> Result<Option<OrderRecord>, StoreError>;

    /// Orders matching `filter`, newest first, with their lines (two queries per page).
    async fn list_orders(&self, filter: &OrderFilter) -> Result<Vec<OrderRecord>, StoreError>;

    /// In one transaction: sets the status if the order's version is `expected_version`
    /// (bumping the version, `updated_at = now`) and appends `events`. A version mismatch or
    /// a missing order yields [`TransitionOutcome::Stale`] and writes nothing. The store does
    /// not judge whether the transition is allowed; the caller (plugin) does.
    async fn transition_order(
        &self,
        id: Uuid,
        expected_version: i64,
        new_status: OrderStatus,
        events: &[NewEvent],
        now: DateTime<Utc>,
    ) -> Result<TransitionOutcome, StoreError>;

    async fn get_product(&self, sku: &str) -> Result<Option<Product>, StoreError>;

    /// All products, ordered by sku.
    async fn list_products(&self) -> Result<Vec<Product>, StoreError>;

    /// Inserts or replaces the product with this sku; returns it as stored.
    async fn upsert_product(&self, product: &Product) -> Result<Product, StoreError>;

    /// Inserts `products` if the catalog is empty; returns whether it did. Safe against
    /// concurrent seeding from several replicas.
    async fn seed_products_if_empty(&self, products: &[Product]) -> Result<bool, StoreError>;

    /// Outbox events with `seq > after_seq`, ascending, at most `limit` (capped at
    /// [`MAX_EVENTS_LIMIT`]). See the module docs for the PostgreSQL ordering caveat.
    async fn list_events(&self, after_seq: i64, limit: u32)
    -> Result<Vec<EventRecord>, StoreError>;

    async fn outbox_stats(&self, now: DateTime<Utc>) -> Result<OutboxStats, StoreError>;

    /// Records that `consumer` received `message_id`; `false` if it already had (a duplicate
    /// delivery to skip). Dedupe is per consumer.
    async fn record_inbox(
        &self,
        message_id: &str,
        consumer: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Row counts for crash-safety tests.
    async fn count_rows(&self) -> Result<RowCounts, StoreError>;

    /// Claims up to `limit` unpublished outbox events for the relay `claimant` until
    /// `now + lease`, in `seq` order, and returns them in `seq` order.
    ///
    /// A row is claimable when it is unpublished and not leased (no lease or an expired one).
    /// A row is skipped while an earlier unpublished row of the same `subject` (order) is
    /// leased, by anyone, so events of one order are never published by two relays at once
    /// nor out of order (a deferred row, see [`Store::release_outbox`], holds back the later
    /// events of its order too). On PostgreSQL
    /// claims are serialized by a transaction-scoped advisory lock and rows are picked with
    /// `FOR UPDATE SKIP LOCKED`; on SQLite the write lock of `BEGIN IMMEDIATE` does the same.
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
    /// attempt (`publish_attempts + 1`) and either gives the leases back at once
    /// (`retry_at = None`: any relay may retry them) or keeps them until `retry_at` (a
    /// deferred retry, e.g. after the broker returned the message as unroutable).
    async fn release_outbox(
        &self,
        claimant: &str,
        ids: &[Uuid],
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError>;

    /// Whether `consumer` already recorded `message_id` (a cheap pre-check; the authoritative
    /// dedupe is the inbox insert inside [`Store::transition_order_once`]).
    async fn inbox_contains(&self, consumer: &str, message_id: &str) -> Result<bool, StoreError>;

    /// In ONE transaction: records `(consumer, message_id)` in the inbox and applies the
    /// transition like [`Store::transition_order`]. A message id the consumer already recorded
    /// yields [`InboxOutcome::Duplicate`]; a version mismatch [`InboxOutcome::Stale`]; either
    /// way nothing is written. Concurrent calls with one message id apply at most once.
    #[allow(
        clippy::too_many_arguments,
        reason = "mirrors transition_order plus the inbox key; a struct would only rename them"
    )]
    async fn transition_order_once(
        &self,
        consumer: &str,
        message_id: &str,
        id: Uuid,
        expected_version: i64,
        new_status: OrderStatus,
        events: &[NewEvent],
        now: DateTime<Utc>,
    ) -> Result<InboxOutcome, StoreError>;
}

/// Opens a pool for `url`: `sqlite:` URLs (e.g. `sqlite://weir.db`, `sqlite::memory:`) give a
/// [`SqliteStore`], `postgres://` and `postgresql://` a [`PgStore`]. Does not migrate.
pub async fn connect(url: &str, opts: &StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url, opts).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(url, opts).await?))
    } else {
        Err(StoreError::InvalidUrl(format!(
            "unsupported scheme (expected sqlite:, postgres:// or postgresql://): {}",
            redact_url(url)
        )))
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by both backends.

/// `now + d`, saturating instead of overflowing.
pub(crate) fn add_duration(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    let delta = TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX);
    now.checked_add_signed(delta)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `later - earlier` as a std duration, zero if negative.
pub(crate) fn elapsed(earlier: DateTime<Utc>, later: DateTime<Utc>) -> Duration {
    (later - earlier).to_std().unwrap_or(Duration::ZERO)
}

pub(crate) fn parse_status(s: &str) -> Result<OrderStatus, StoreError> {
    s.parse()
        .map_err(|e: UnknownOrderStatus| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn quantity_from_db(quantity: i64) -> Result<u32, StoreError> {
    u32::try_from(quantity)
        .map_err(|_| StoreError::Corrupt(format!("order line quantity {quantity} out of range")))
}

pub(crate) fn status_from_db(status: i64) -> Result<u16, StoreError> {
    u16::try_from(status)
        .map_err(|_| StoreError::Corrupt(format!("stored HTTP status {status} out of range")))
}

/// The effective page size for [`Store::list_orders`].
pub(crate) fn page_limit(limit: u32) -> i64 {
    i64::from(limit.min(MAX_LIST_LIMIT))
}

/// The effective page size for [`Store::list_events`].
pub(crate) fn events_limit(limit: u32) -> i64 {
    i64::from(limit.min(MAX_EVENTS_LIMIT))
}

/// An idempotency row as read by [`Store::idempotency_begin`].
pub(crate) struct ExistingKey {
    pub(crate) request_hash: String,
    /// `Some` when the key is completed.
    pub(crate) response: Option<StoredResponse>,
    pub(crate) locked_until: DateTime<Utc>,
    pub(crate) created_at: DateTime<Utc>,
}

/// What to do about an existing idempotency row.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum KeyDecision {
    /// Past retention: overwrite it with a fresh `in_progress` row (conditional on the old
    /// `created_at`).
    Replace,
    /// In progress with an expired lock: extend the lock (conditional on the old
    /// `locked_until`).
    TakeOver,
    /// Answer without writing.
    Answer(IdempotencyBegin),
}

/// The idempotency state machine, shared by both backends so they cannot drift apart.
pub(crate) fn decide_existing(
    existing: ExistingKey,
    request_hash: &str,
    now: DateTime<Utc>,
    retention: Duration,
) -> KeyDecision {
    if elapsed(existing.created_at, now) >= retention {
        return KeyDecision::Replace;
    }
    if existing.request_hash != request_hash {
        return KeyDecision::Answer(IdempotencyBegin::Mismatch);
    }
    if let Some(response) = existing.response {
        return KeyDecision::Answer(IdempotencyBegin::Replay(response));
    }
    if existing.locked_until > now {
        let retry_after = elapsed(now, existing.locked_until).max(Duration::from_secs(1));
        return KeyDecision::Answer(IdempotencyBegin::InProgress { retry_after });
    }
    KeyDecision::TakeOver
}

/// How many times `idempotency_begin` re-reads a row that changed under it before giving up
/// with `InProgress` (only reachable under heavy contention on one key).
pub(crate) const BEGIN_ATTEMPTS: usize = 5;

/// Throw-away PostgreSQL databases for tests.
#[doc(hidden)]
pub mod testing {
    use sqlx::{Connection, PgConnection};
    use uuid::Uuid;

    use super::{StoreError, classify, postgres::is_transient_pg_code};

    /// The maintenance database used to create and drop test databases; override with
    /// `WEIR_TEST_PG_URL`.
    pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

    fn admin_url() -> String {
        std::env::var("WEIR_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
    }

    /// A fresh database `weir_test_<uuid>`, dropped by [`PgTestDb::drop_db`] or, failing that
    /// (a panicking test), on `Drop` from a helper thread.
    #[derive(Debug)]
    pub struct PgTestDb {
        admin_url: String,
        name: String,
        url: String,
        dropped: bool,
    }

    impl PgTestDb {
        pub async fn create() -> Result<Self, StoreError> {
            let admin_url = admin_url();
            let name = format!("weir_test_{}", Uuid::new_v4().simple());
            let mut conn = PgConnection::connect(&admin_url)
                .await
                .map_err(|e| classify(e, is_transient_pg_code))?;
            // The name is generated above from a UUID: no injection possible.
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                .execute(&mut conn)
                .await
                .map_err(|e| classify(e, is_transient_pg_code))?;
            conn.close().await.ok();
            let url = database_url(&admin_url, &name);
            Ok(PgTestDb {
                admin_url,
                name,
                url,
                dropped: false,
            })
        }

        /// The URL of the test database.
        pub fn url(&self) -> &str {
            &self.url
        }

        pub fn name(&self) -> &str {
            &self.name
        }

        /// Drops the database, disconnecting any remaining sessions.
        pub async fn drop_db(mut self) -> Result<(), StoreError> {
            self.dropped = true;
            drop_database(&self.admin_url, &self.name).await
        }
    }

    impl Drop for PgTestDb {
        fn drop(&mut self) {
            if self.dropped {
                return;
            }
            let admin_url = self.admin_url.clone();
            let name = self.name.clone();
            // Drop cannot await; run the cleanup on its own thread and runtime.
            let cleanup = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(runtime) = runtime {
                    let _ = runtime.block_on(drop_database(&admin_url, &name));
                }
            });
            let _ = cleanup.join();
        }
    }

    async fn drop_database(admin_url: &str, name: &str) -> Result<(), StoreError> {
        let mut conn = PgConnection::connect(admin_url)
            .await
            .map_err(|e| classify(e, is_transient_pg_code))?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await
        .map_err(|e| classify(e, is_transient_pg_code))?;
        conn.close().await.ok();
        Ok(())
    }

    /// `admin_url` with its database path replaced by `name`.
    fn database_url(admin_url: &str, name: &str) -> String {
        let (base, query) = match admin_url.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (admin_url, None),
        };
        let authority_start = base.find("://").map_or(0, |i| i + 3);
        let base = match base[authority_start..].find('/') {
            Some(slash) => &base[..authority_start + slash],
            None => base,
        };
        match query {
            Some(query) => format!("{base}/{name}?{query}"),
            None => format!("{base}/{name}"),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::database_url;

        #[test]
        fn database_url_replaces_the_path() {
            assert_eq!(
                database_url("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
                "postgres://postgres@127.0.0.1:5432/t1"
            );
            assert_eq!(
                database_url("postgres://u:p@h/postgres?sslmode=disable", "t1"),
                "postgres://u:p@h/t1?sslmode=disable"
            );
            assert_eq!(
                database_url("postgres://h:5432", "t1"),
                "postgres://h:5432/t1"
            );
        }
    }
}

#[cfg(test)]
mod tests;
