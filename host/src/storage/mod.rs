//! Durable storage: the SQLite and PostgreSQL adapters of the core's store ports.
//!
//! The use-cases talk to the port traits of [`weir_core::ports::store`] (orders, idempotency
//! keys, the outbox, the inbox, products). This module implements them twice and adds what
//! only the host needs ([`Database`]: migrations, ping, close, row counts). [`Store`] is all
//! of it in one object-safe trait, held as `Arc<dyn Store>` and handed to the core as each
//! port (trait upcasting). [`connect`] picks the backend from the URL scheme; [`traced`]
//! wraps a store so every call gets its `db.*` span.
//!
//! # Layout
//!
//! - `mod.rs` (this file): [`Database`], [`Store`], [`connect`], [`ConnectError`], the
//!   classification of driver errors into [`StoreError`], and helpers shared by both
//!   backends.
//! - [`api_keys`]: the API key records the authentication layer looks keys up in (the
//!   secret is never stored).
//! - `sqlite.rs`: [`SqliteStore`], the embedded default (`sqlite:` URLs). WAL journal,
//!   `synchronous=NORMAL`, a 5 s busy timeout, foreign keys on. Every write transaction starts
//!   with `BEGIN IMMEDIATE`, so a writer takes the write lock up front instead of failing with
//!   `SQLITE_BUSY` when it tries to upgrade a read lock that another writer is also holding.
//! - `write_lane.rs`: the queue (first come, first served) in which the SQLite writers of this
//!   process wait for that lock, instead of in SQLite's busy handler.
//! - `postgres.rs`: [`PgStore`], the production path (`postgres://` and `postgresql://`).
//! - [`traced`]: [`traced::TracedStore`], the one place store calls get their spans.
//! - [`testing`]: creates and drops a throw-away PostgreSQL database; shared with the
//!   cross-process tests in `tests/`.
//! - `tests.rs`: the backend-agnostic suite, run against both implementations.
//! - `host/migrations/{sqlite,postgres}/`: one migration folder per backend, embedded in the
//!   binary with `sqlx::migrate!` and applied by [`Database::migrate`].
//!
//! # Why two implementations instead of `sqlx::Any`
//!
//! `sqlx::Any` cannot bind UUIDs or timestamps, and the two engines differ where it matters:
//! PostgreSQL has native `uuid`, `timestamptz`, `jsonb` and row-level concurrency; SQLite has
//! a single writer and no native types for any of those. Each implementation uses its engine's
//! own idioms; the shared suite pins down that both behave the same.
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
//! [`OutboxStore::list_events`] pages by `seq`. On SQLite writers are serialized, so `seq`
//! order is commit order and a cursor never skips a row. On PostgreSQL a sequence value is
//! taken at insert time, so a transaction that commits later may expose a smaller `seq` than
//! one already read. The feed is the embedded default's way to expose the outbox; the
//! production relay claims unpublished rows instead (`FOR UPDATE SKIP LOCKED`) and is not
//! affected.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

pub mod api_keys;
mod postgres;
mod sqlite;
pub mod traced;
mod write_lane;

pub use api_keys::{ApiKeyRecord, ApiKeyStore};
pub use postgres::PgStore;
pub use postgres::{RELEASE_CHANNEL, ReleaseListener};
pub use sqlite::SqliteStore;
pub use traced::TracedStore;
pub use weir_core::domain::idempotency::{
    BEGIN_ATTEMPTS, ExistingKey, KeyDecision, decide_existing,
};
pub use weir_core::domain::{
    EventRecord, IdempotencyBegin, NewEvent, Order, OrderLine, OrderStatus, PluginRef, Product,
    StoredResponse, UnknownOrderStatus,
};
pub use weir_core::ports::store::{MAX_EVENTS_LIMIT, MAX_LIST_LIMIT, MAX_PRODUCTS_LIMIT};
pub use weir_core::ports::{
    ComponentStore, DriverError, Expiring, IdempotencyStore, InboxOutcome, InboxStore, OrderFilter,
    OrderStore, OutboxStats, OutboxStore, ProductStore, ReleaseStore, RetentionStore, StoreError,
    TransitionOutcome,
};

use crate::support::{SecretUrl, redact_url};

/// A database URL; its password is redacted wherever it is shown.
pub type DatabaseUrl = SecretUrl;

/// `"sqlite"` or `"postgres"` for a URL this build can open, from its scheme.
pub fn backend_of(url: &str) -> Option<&'static str> {
    if url.starts_with("sqlite:") {
        Some("sqlite")
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Some("postgres")
    } else {
        None
    }
}

/// Row counts used by crash-safety tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RowCounts {
    /// Orders.
    pub orders: u64,
    /// Order lines.
    pub order_lines: u64,
    /// Outbox events.
    pub outbox_events: u64,
    /// Completed idempotency keys.
    pub idempotency_completed: u64,
    /// Idempotency keys in any state (in progress or completed).
    pub idempotency_keys: u64,
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

/// Opening a database or applying its migrations failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL is malformed or has an unsupported scheme (password redacted).
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    /// The database could not be opened.
    #[error("cannot open the database")]
    Open(#[source] StoreError),
    /// Applying the embedded migrations failed.
    #[error("database migration failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

impl From<sqlx::migrate::MigrateError> for ConnectError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        ConnectError::Migrate(err)
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
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(DriverError::new(err)),
        sqlx::Error::Decode(ref source) => {
            StoreError::Corrupt(format!("undecodable value: {source}"))
        }
        sqlx::Error::ColumnDecode {
            ref index,
            ref source,
        } => StoreError::Corrupt(format!("undecodable column {index}: {source}")),
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
                StoreError::Unavailable(DriverError::new(err))
            } else {
                StoreError::Internal(DriverError::new(err))
            }
        }
        other => StoreError::Internal(DriverError::new(other)),
    }
}

/// What only the host needs of a database, beyond the core's ports.
#[async_trait::async_trait]
pub trait Database: fmt::Debug + Send + Sync + 'static {
    /// Applies the embedded migrations of this backend. Idempotent; safe to run from several
    /// replicas at once (sqlx takes a lock).
    async fn migrate(&self) -> Result<(), ConnectError>;

    /// `SELECT 1`, for readiness.
    async fn ping(&self) -> Result<(), StoreError>;

    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    /// Closes the pool, waiting for checked-out connections to come back.
    async fn close(&self);

    /// Row counts for crash-safety tests.
    async fn count_rows(&self) -> Result<RowCounts, StoreError>;
}

/// Every store port plus [`Database`]: one object per database, `Arc<dyn Store>`. `Debug`
/// never shows a password.
pub trait Store:
    Database
    + ApiKeyStore
    + OrderStore
    + IdempotencyStore
    + OutboxStore
    + InboxStore
    + ProductStore
    + RetentionStore
    + ComponentStore
    + ReleaseStore
{
}

impl<T> Store for T where
    T: Database
        + ApiKeyStore
        + OrderStore
        + IdempotencyStore
        + OutboxStore
        + InboxStore
        + ProductStore
        + RetentionStore
        + ComponentStore
        + ReleaseStore
{
}

/// Opens a pool for `url`: `sqlite:` URLs (e.g. `sqlite://weir.db`, `sqlite::memory:`) give a
/// [`SqliteStore`], `postgres://` and `postgresql://` a [`PgStore`]. Does not migrate.
pub async fn connect(url: &str, opts: &StoreOptions) -> Result<Arc<dyn Store>, ConnectError> {
    match backend_of(url) {
        Some("sqlite") => Ok(Arc::new(SqliteStore::connect(url, opts).await?)),
        Some(_) => Ok(Arc::new(PgStore::connect(url, opts).await?)),
        None => Err(ConnectError::InvalidUrl(format!(
            "unsupported scheme (expected sqlite:, postgres:// or postgresql://): {}",
            redact_url(url)
        ))),
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

/// The SQL behind [`Database::count_rows`]; the same text on both backends. Decode its row
/// with [`row_counts`].
pub(crate) const COUNT_ROWS_SQL: &str = "SELECT (SELECT COUNT(*) FROM orders) AS orders, \
     (SELECT COUNT(*) FROM order_lines) AS order_lines, \
     (SELECT COUNT(*) FROM outbox_events) AS outbox_events, \
     (SELECT COUNT(*) FROM idempotency_keys WHERE state = 'completed') AS completed, \
     (SELECT COUNT(*) FROM idempotency_keys) AS idempotency_keys";

/// [`RowCounts`] from the row of [`COUNT_ROWS_SQL`]; `column` reads one named `BIGINT` column
/// of it.
pub(crate) fn row_counts(
    column: impl Fn(&str) -> Result<i64, StoreError>,
) -> Result<RowCounts, StoreError> {
    let count = |name: &str| -> Result<u64, StoreError> {
        Ok(u64::try_from(column(name)?).unwrap_or_default())
    };
    Ok(RowCounts {
        orders: count("orders")?,
        order_lines: count("order_lines")?,
        outbox_events: count("outbox_events")?,
        idempotency_completed: count("completed")?,
        idempotency_keys: count("idempotency_keys")?,
    })
}

/// The stored response columns of a `completed` idempotency key, as read from its row.
pub(crate) struct ResponseColumns {
    /// `response_status`.
    pub status: Option<i64>,
    /// `response_body`.
    pub body: Option<Vec<u8>>,
    /// `response_headers`.
    pub headers: Option<Vec<(String, String)>>,
}

/// The response of an existing idempotency key `key` in `state`: `None` while
/// `in_progress`, the stored response once `completed` (`columns` reads it; it is only
/// called then). An unknown state or a completed key without a status is corrupt.
pub(crate) fn stored_response(
    key: &str,
    state: &str,
    columns: impl FnOnce() -> Result<ResponseColumns, StoreError>,
) -> Result<Option<StoredResponse>, StoreError> {
    match state {
        "in_progress" => Ok(None),
        "completed" => {
            let ResponseColumns {
                status,
                body,
                headers,
            } = columns()?;
            let status = status.ok_or_else(|| {
                StoreError::Corrupt(format!("completed idempotency key {key:?} has no status"))
            })?;
            Ok(Some(StoredResponse {
                status: status_from_db(status)?,
                body: body.unwrap_or_default(),
                headers: headers.unwrap_or_default(),
            }))
        }
        other => Err(StoreError::Corrupt(format!(
            "idempotency key {key:?} has unknown state {other:?}"
        ))),
    }
}

/// The effective page size for [`OrderStore::list_orders`].
pub(crate) fn page_limit(limit: u32) -> i64 {
    i64::from(limit.min(MAX_LIST_LIMIT))
}

/// The effective page size for [`OutboxStore::list_events`].
pub(crate) fn events_limit(limit: u32) -> i64 {
    i64::from(limit.min(MAX_EVENTS_LIMIT))
}

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

/// Why `wanted` units of `sku` could not be reserved, given whether the product exists.
pub(crate) fn shortage(sku: &str, wanted: i64, exists: bool) -> weir_core::domain::stock::Shortage {
    use weir_core::domain::stock::Shortage;
    if exists {
        Shortage::Insufficient {
            sku: sku.to_owned(),
            wanted,
        }
    } else {
        Shortage::UnknownSku(sku.to_owned())
    }
}
