//! [`SqliteStore`]: the embedded default backend.
//!
//! One file, WAL journal (readers never block the writer), `synchronous=NORMAL` (durable at
//! checkpoints, never corrupt), a 5 s busy timeout and foreign keys on. SQLite has a single
//! writer: every multi-statement write runs in a `BEGIN IMMEDIATE` transaction, which takes the
//! write lock up front and so waits in the busy handler instead of failing with `SQLITE_BUSY`
//! when two deferred transactions both try to upgrade their read locks. Writers of this
//! process queue for that lock on a [`WriteLane`] (first come, first served) before they ask
//! for a connection, so they never wait in SQLite's busy handler for each other.
//!
//! Types: UUIDs are lowercase hyphenated TEXT, timestamps fixed-width RFC 3339 TEXT with
//! microseconds (see [`ts`]), JSON is TEXT.

use std::collections::HashMap;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::types::Json;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, Transaction};
use uuid::Uuid;

use super::write_lane::{Turn, WriteLane};
use super::{
    ApiKeyRecord, ApiKeyStore, BEGIN_ATTEMPTS, COUNT_ROWS_SQL, ConnectError, Database, EventRecord,
    ExistingKey, Expiring, IdempotencyBegin, IdempotencyStore, InboxOutcome, InboxStore,
    KeyDecision, MAX_PRODUCTS_LIMIT, NewEvent, Order, OrderFilter, OrderLine, OrderStatus,
    OrderStore, OutboxStats, OutboxStore, PluginRef, Product, ProductStore, ResponseColumns,
    RetentionStore, RowCounts, StoreError, StoreOptions, StoredResponse, TransitionOutcome,
    add_duration, classify, decide_existing, events_limit, page_limit, parse_status,
    quantity_from_db, row_counts, shortage, stored_response,
};
use crate::support::redact_url;
use weir_core::domain::release::{Release, ReleaseAudit};
use weir_core::domain::stock::{self, Settlement, Shortage};
use weir_core::ports::CreateOutcome;
use weir_core::ports::releases::may_reuse_version;
use weir_core::ports::{ComponentRecord, ComponentStore, PutComponent, ReleaseStore};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a connection waits for the write lock before failing with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Primary result codes (the low byte of an extended code) worth retrying: `SQLITE_BUSY` (5)
/// and `SQLITE_LOCKED` (6).
pub(crate) fn is_transient_sqlite_code(code: &str) -> bool {
    code.parse::<i32>()
        .is_ok_and(|code| matches!(code & 0xff, 5 | 6))
}

fn db_err(err: sqlx::Error) -> StoreError {
    classify(err, is_transient_sqlite_code)
}

/// Fixed-width UTC text with microseconds, so SQL text comparison is time comparison.
pub(crate) fn ts(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn parse_ts(text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("bad timestamp {text:?}: {e}")))
}

fn opt_ts(text: Option<String>) -> Result<Option<DateTime<Utc>>, StoreError> {
    text.as_deref().map(parse_ts).transpose()
}

fn id_text(id: Uuid) -> String {
    id.hyphenated().to_string()
}

fn parse_id(text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(|e| StoreError::Corrupt(format!("bad uuid {text:?}: {e}")))
}

fn get<'r, T>(row: &'r SqliteRow, column: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    row.try_get(column).map_err(db_err)
}

/// Column list matching [`order_from_row`].
macro_rules! order_columns {
    () => {
        "id, tenant, customer_id, currency, status, subtotal, discount, tax, total, metadata, \
         plugin_name, plugin_version, plugin_digest, version, created_at, updated_at"
    };
}

/// Column list matching [`event_from_row`].
macro_rules! event_columns {
    () => {
        "seq, id, event_type, source, subject, tenant, occurred_at, data, traceparent, \
         tracestate, published_at"
    };
}

/// Column list matching [`product_from_row`].
macro_rules! product_columns {
    () => {
        "sku, name, unit_price, currency, MAX(stock - reserved, 0) AS stock, reserved, updated_at"
    };
}

/// An order row without its lines.
fn order_from_row(row: &SqliteRow) -> Result<Order, StoreError> {
    let metadata: Json<serde_json::Map<String, serde_json::Value>> = get(row, "metadata")?;
    Ok(Order {
        id: parse_id(&get::<String>(row, "id")?)?,
        tenant: get(row, "tenant")?,
        customer_id: get(row, "customer_id")?,
        currency: get(row, "currency")?,
        status: parse_status(&get::<String>(row, "status")?)?,
        lines: Vec::new(),
        subtotal: get(row, "subtotal")?,
        discount: get(row, "discount")?,
        tax: get(row, "tax")?,
        total: get(row, "total")?,
        metadata: metadata.0,
        plugin: PluginRef {
            name: get(row, "plugin_name")?,
            version: get(row, "plugin_version")?,
            digest: get(row, "plugin_digest")?,
        },
        version: get(row, "version")?,
        created_at: parse_ts(&get::<String>(row, "created_at")?)?,
        updated_at: parse_ts(&get::<String>(row, "updated_at")?)?,
    })
}

fn line_from_row(row: &SqliteRow) -> Result<OrderLine, StoreError> {
    Ok(OrderLine {
        sku: get(row, "sku")?,
        quantity: quantity_from_db(get(row, "quantity")?)?,
        unit_price: get(row, "unit_price")?,
        line_total: get(row, "line_total")?,
    })
}

fn event_from_row(row: &SqliteRow) -> Result<EventRecord, StoreError> {
    let data: Json<serde_json::Value> = get(row, "data")?;
    Ok(EventRecord {
        seq: get(row, "seq")?,
        id: parse_id(&get::<String>(row, "id")?)?,
        event_type: get(row, "event_type")?,
        source: get(row, "source")?,
        subject: get(row, "subject")?,
        tenant: get(row, "tenant")?,
        occurred_at: parse_ts(&get::<String>(row, "occurred_at")?)?,
        data: data.0,
        traceparent: get(row, "traceparent")?,
        tracestate: get(row, "tracestate")?,
        published_at: opt_ts(get(row, "published_at")?)?,
    })
}

fn product_from_row(row: &SqliteRow) -> Result<Product, StoreError> {
    Ok(Product {
        sku: get(row, "sku")?,
        name: get(row, "name")?,
        unit_price: get(row, "unit_price")?,
        currency: get(row, "currency")?,
        stock: get(row, "stock")?,
        reserved: get(row, "reserved")?,
        updated_at: parse_ts(&get::<String>(row, "updated_at")?)?,
    })
}

/// The SQLite implementation of the store ports ([`super::Store`]).
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Every write of this process takes its turn here first (see the module doc).
    lane: WriteLane,
    /// The connect URL with any password redacted.
    url: String,
}

/// A write transaction together with its turn on the write lane: the lane is free again
/// once the transaction has committed or, dropped, rolled back.
///
/// Dropping a sqlx transaction only *queues* its `ROLLBACK` on the connection's worker
/// thread, and the write lock stays taken until that statement has run. Giving up the turn
/// at the drop would let the next writer begin while the lock is still held, and wait in
/// SQLite's busy handler after all. So a transaction dropped without a commit (a shortage,
/// an error, a cancelled request) hands itself and its turn to a task that rolls back and
/// only then gives the turn up.
struct WriteTx {
    /// The open transaction and its turn: `None` once [`WriteTx::commit`] or the drop has
    /// taken them.
    open: Option<(Transaction<'static, Sqlite>, Turn)>,
}

impl WriteTx {
    async fn commit(mut self) -> Result<(), sqlx::Error> {
        let (tx, _turn) = self
            .open
            .take()
            .expect("a write transaction is open until it commits");
        // The turn is given up once the commit has returned, committed or not: a failed
        // COMMIT leaves the transaction rolled back.
        tx.commit().await
    }

    fn open(&self) -> &Transaction<'static, Sqlite> {
        &self
            .open
            .as_ref()
            .expect("a write transaction is open until it commits")
            .0
    }

    fn open_mut(&mut self) -> &mut Transaction<'static, Sqlite> {
        &mut self
            .open
            .as_mut()
            .expect("a write transaction is open until it commits")
            .0
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        let Some((tx, turn)) = self.open.take() else {
            return;
        };
        // Outside a runtime (the process is going down) the transaction's own drop queues the
        // rollback and the turn goes with it: nobody is left to write.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = tx.rollback().await {
                    tracing::warn!(error = %e, "rolling back an abandoned SQLite write failed");
                }
                drop(turn);
            });
        }
    }
}

impl Deref for WriteTx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        self.open()
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.open_mut()
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("url", &self.url)
            .field("connections", &self.pool.size())
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url`. An in-memory database
    /// (`sqlite::memory:`) is kept on a single connection that is never recycled, since the
    /// data lives only as long as a connection does.
    pub async fn connect(url: &str, opts: &StoreOptions) -> Result<Self, ConnectError> {
        Self::connect_with_busy_timeout(url, opts, BUSY_TIMEOUT).await
    }

    /// [`SqliteStore::connect`] with another busy timeout (the tests use none at all, to show
    /// that this process's writers never need it).
    async fn connect_with_busy_timeout(
        url: &str,
        opts: &StoreOptions,
        busy_timeout: Duration,
    ) -> Result<Self, ConnectError> {
        let redacted = redact_url(url);
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| ConnectError::InvalidUrl(format!("{redacted}: {e}")))?
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(busy_timeout)
            .foreign_keys(true)
            .create_if_missing(true);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let mut pool = SqlitePoolOptions::new().acquire_timeout(opts.acquire_timeout);
        pool = if in_memory {
            pool.max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            pool.max_connections(opts.max_connections.max(1))
        };
        let pool = pool
            .connect_with(options)
            .await
            .map_err(|e| ConnectError::Open(db_err(e)))?;
        Ok(SqliteStore {
            pool,
            lane: WriteLane::new(BUSY_TIMEOUT),
            url: redacted,
        })
    }

    /// The underlying pool, for the pragma checks of the unit tests.
    #[cfg(test)]
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A write transaction holding the database write lock from its first statement, begun
    /// once this writer's turn on the lane has come.
    async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        let turn = self.lane.turn().await?;
        let tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        Ok(WriteTx {
            open: Some((tx, turn)),
        })
    }

    async fn attach_lines(
        conn: &mut SqliteConnection,
        orders: &mut [Order],
    ) -> Result<(), StoreError> {
        if orders.is_empty() {
            return Ok(());
        }
        let mut query = QueryBuilder::<Sqlite>::new(
            "SELECT order_id, line_no, sku, quantity, unit_price, line_total \
             FROM order_lines WHERE order_id IN (",
        );
        let mut ids = query.separated(", ");
        for order in orders.iter() {
            ids.push_bind(id_text(order.id));
        }
        query.push(") ORDER BY order_id, line_no");
        let rows = query.build().fetch_all(&mut *conn).await.map_err(db_err)?;
        let mut lines: HashMap<Uuid, Vec<OrderLine>> = HashMap::new();
        for row in &rows {
            let order_id = parse_id(&get::<String>(row, "order_id")?)?;
            lines.entry(order_id).or_default().push(line_from_row(row)?);
        }
        for order in orders.iter_mut() {
            order.lines = lines.remove(&order.id).unwrap_or_default();
        }
        Ok(())
    }

    async fn fetch_order(
        conn: &mut SqliteConnection,
        id: Uuid,
    ) -> Result<Option<Order>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            order_columns!(),
            " FROM orders WHERE id = ?"
        ))
        .bind(id_text(id))
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut orders = [order_from_row(&row)?];
        Self::attach_lines(conn, &mut orders).await?;
        let [order] = orders;
        Ok(Some(order))
    }

    async fn insert_events(
        conn: &mut SqliteConnection,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        for event in events {
            sqlx::query(
                "INSERT INTO outbox_events \
                 (id, event_type, source, subject, tenant, occurred_at, data, traceparent, \
                 tracestate) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(id_text(event.id))
            .bind(&event.event_type)
            .bind(&event.source)
            .bind(&event.subject)
            .bind(&event.tenant)
            .bind(ts(event.occurred_at))
            .bind(Json(&event.data))
            .bind(&event.traceparent)
            .bind(&event.tracestate)
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
        }
        Ok(())
    }

    /// The transition write shared by `transition_order` and `transition_order_once`: bump
    /// the version if it is still `expected_version`, add the events, and read the order back.
    /// `None` when the order changed concurrently (the caller drops the transaction).
    async fn apply_transition(
        conn: &mut SqliteConnection,
        id: Uuid,
        expected_version: i64,
        new_status: OrderStatus,
        events: &[NewEvent],
        now: DateTime<Utc>,
    ) -> Result<Option<Order>, StoreError> {
        let updated = sqlx::query(
            "UPDATE orders SET status = ?, version = version + 1, updated_at = ? \
                 WHERE id = ? AND version = ?",
        )
        .bind(new_status.as_str())
        .bind(ts(now))
        .bind(id_text(id))
        .bind(expected_version)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
        if updated.rows_affected() != 1 {
            return Ok(None);
        }
        Self::insert_events(conn, events).await?;
        let order = Self::fetch_order(conn, id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("order {id} vanished mid-transaction")))?;
        if let Some(settlement) = stock::settlement(new_status) {
            Self::settle(conn, &order, settlement).await?;
        }
        Ok(Some(order))
    }

    /// Reserve the order's quantities, per sku in lock order; the first shortage stops it
    /// (the caller drops the transaction).
    async fn reserve(
        conn: &mut SqliteConnection,
        lines: &[OrderLine],
    ) -> Result<Option<Shortage>, StoreError> {
        for (sku, wanted) in stock::demand(lines) {
            let reserved = sqlx::query(
                "UPDATE products SET reserved = reserved + ? \
                 WHERE sku = ? AND stock - reserved >= ?",
            )
            .bind(wanted)
            .bind(sku)
            .bind(wanted)
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
            if reserved.rows_affected() == 1 {
                continue;
            }
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM products WHERE sku = ?)")
                    .bind(sku)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(db_err)?;
            return Ok(Some(shortage(sku, wanted, exists)));
        }
        Ok(None)
    }

    /// Settle the order's reservation if it still holds one (at most once per order).
    async fn settle(
        conn: &mut SqliteConnection,
        order: &Order,
        settlement: Settlement,
    ) -> Result<(), StoreError> {
        let held =
            sqlx::query("UPDATE orders SET stock_reserved = 0 WHERE id = ? AND stock_reserved = 1")
                .bind(id_text(order.id))
                .execute(&mut *conn)
                .await
                .map_err(db_err)?;
        if held.rows_affected() == 0 {
            return Ok(());
        }
        let sql = match settlement {
            Settlement::Release => {
                "UPDATE products SET reserved = MAX(reserved - ?1, 0) WHERE sku = ?2"
            }
            Settlement::Consume => {
                "UPDATE products SET reserved = MAX(reserved - ?1, 0), \
                 stock = MAX(stock - ?1, 0) WHERE sku = ?2"
            }
        };
        for (sku, quantity) in stock::demand(&order.lines) {
            sqlx::query(sql)
                .bind(quantity)
                .bind(sku)
                .execute(&mut *conn)
                .await
                .map_err(db_err)?;
        }
        Ok(())
    }

    /// Record `message_id` as seen by `consumer`; false when it already was.
    async fn insert_inbox(
        conn: &mut SqliteConnection,
        tenant: &str,
        consumer: &str,
        message_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let recorded = sqlx::query(
            "INSERT INTO inbox_messages (tenant, consumer, message_id, received_at) \
             VALUES (?, ?, ?, ?) ON CONFLICT (consumer, message_id) DO NOTHING",
        )
        .bind(tenant)
        .bind(consumer)
        .bind(message_id)
        .bind(ts(now))
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
        Ok(recorded.rows_affected() == 1)
    }

    /// Completes an `in_progress` key; `false` if there was none.
    async fn complete_key(
        conn: &mut SqliteConnection,
        key: &str,
        response: &StoredResponse,
        resource_id: Option<Uuid>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE idempotency_keys SET state = 'completed', response_status = ?, \
             response_body = ?, response_headers = ?, resource_id = ?, completed_at = ? \
             WHERE key = ? AND state = 'in_progress'",
        )
        .bind(i64::from(response.status))
        .bind(&response.body)
        .bind(Json(&response.headers))
        .bind(resource_id.map(id_text))
        .bind(ts(Utc::now()))
        .bind(key)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    /// One round of [`Store::idempotency_begin`]; `None` if the row changed under us.
    async fn begin_round(
        &self,
        tenant: &str,
        key: &str,
        request_hash: &str,
        now: DateTime<Utc>,
        lock_ttl: Duration,
        retention: Duration,
    ) -> Result<Option<IdempotencyBegin>, StoreError> {
        let locked_until = ts(add_duration(now, lock_ttl));
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys \
             (key, tenant, request_hash, state, locked_until, created_at) \
             VALUES (?, ?, ?, 'in_progress', ?, ?) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(tenant)
        .bind(request_hash)
        .bind(&locked_until)
        .bind(ts(now))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if inserted.rows_affected() == 1 {
            tx.commit().await.map_err(db_err)?;
            return Ok(Some(IdempotencyBegin::Started));
        }

        let row = sqlx::query(
            "SELECT request_hash, state, response_status, response_body, response_headers, \
             locked_until, created_at FROM idempotency_keys WHERE key = ?",
        )
        .bind(key)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let old_locked_until: String = get(&row, "locked_until")?;
        let old_created_at: String = get(&row, "created_at")?;
        let state: String = get(&row, "state")?;
        let response = stored_response(key, &state, || {
            let status: Option<i64> = get(&row, "response_status")?;
            let body: Option<Vec<u8>> = get(&row, "response_body")?;
            let headers: Option<Json<Vec<(String, String)>>> = get(&row, "response_headers")?;
            Ok(ResponseColumns {
                status,
                body,
                headers: headers.map(|h| h.0),
            })
        })?;
        let existing = ExistingKey {
            request_hash: get(&row, "request_hash")?,
            response,
            locked_until: parse_ts(&old_locked_until)?,
            created_at: parse_ts(&old_created_at)?,
        };
        let updated = match decide_existing(existing, request_hash, now, retention) {
            KeyDecision::Answer(answer) => return Ok(Some(answer)),
            KeyDecision::Replace => sqlx::query(
                "UPDATE idempotency_keys SET request_hash = ?, state = 'in_progress', \
                 response_status = NULL, response_body = NULL, response_headers = NULL, \
                 resource_id = NULL, locked_until = ?, created_at = ?, completed_at = NULL \
                 WHERE key = ? AND created_at = ?",
            )
            .bind(request_hash)
            .bind(&locked_until)
            .bind(ts(now))
            .bind(key)
            .bind(&old_created_at),
            KeyDecision::TakeOver => sqlx::query(
                "UPDATE idempotency_keys SET locked_until = ? \
                 WHERE key = ? AND state = 'in_progress' AND locked_until = ?",
            )
            .bind(&locked_until)
            .bind(key)
            .bind(&old_locked_until),
        }
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if updated.rows_affected() != 1 {
            return Ok(None);
        }
        tx.commit().await.map_err(db_err)?;
        Ok(Some(IdempotencyBegin::Started))
    }
}

#[async_trait::async_trait]
impl Database for SqliteStore {
    async fn migrate(&self) -> Result<(), ConnectError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn count_rows(&self) -> Result<RowCounts, StoreError> {
        let row = sqlx::query(COUNT_ROWS_SQL)
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)?;
        row_counts(|column| get::<i64>(&row, column))
    }
}

#[async_trait::async_trait]
impl IdempotencyStore for SqliteStore {
    async fn idempotency_begin(
        &self,
        tenant: &str,
        key: &str,
        request_hash: &str,
        now: DateTime<Utc>,
        lock_ttl: Duration,
        retention: Duration,
    ) -> Result<IdempotencyBegin, StoreError> {
        // Under BEGIN IMMEDIATE nothing changes between the read and the write, so the first
        // round always decides; the loop mirrors the PostgreSQL implementation.
        for _ in 0..BEGIN_ATTEMPTS {
            if let Some(outcome) = self
                .begin_round(tenant, key, request_hash, now, lock_ttl, retention)
                .await?
            {
                return Ok(outcome);
            }
        }
        Ok(IdempotencyBegin::InProgress {
            retry_after: Duration::from_secs(1),
        })
    }

    async fn idempotency_release(&self, key: &str) -> Result<(), StoreError> {
        let _turn = self.lane.turn().await?;
        sqlx::query("DELETE FROM idempotency_keys WHERE key = ? AND state = 'in_progress'")
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn idempotency_complete(
        &self,
        key: &str,
        response: &StoredResponse,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        if !Self::complete_key(&mut tx, key, response, None).await? {
            return Err(StoreError::Conflict(format!(
                "idempotency key {key:?} is not in progress"
            )));
        }
        tx.commit().await.map_err(db_err)
    }
}

#[async_trait::async_trait]
impl RetentionStore for SqliteStore {
    async fn purge_expired(
        &self,
        kind: Expiring,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError> {
        // A rowid subquery stands in for `DELETE ... LIMIT` (not compiled into the bundled
        // SQLite); each batch is its own short write transaction.
        let single = match kind {
            Expiring::IdempotencyKeys => Some(
                "DELETE FROM idempotency_keys WHERE rowid IN (SELECT rowid FROM \
                 idempotency_keys WHERE created_at < ? ORDER BY created_at LIMIT ?)",
            ),
            Expiring::InboxMessages => Some(
                "DELETE FROM inbox_messages WHERE rowid IN (SELECT rowid FROM inbox_messages \
                 WHERE received_at < ? ORDER BY received_at LIMIT ?)",
            ),
            Expiring::PublishedEvents | Expiring::FeedEvents => None,
        };
        if let Some(sql) = single {
            let _turn = self.lane.turn().await?;
            let done = sqlx::query(sql)
                .bind(ts(before))
                .bind(i64::from(limit))
                .execute(&self.pool)
                .await
                .map_err(db_err)?;
            return Ok(done.rows_affected());
        }
        let mut tx = self.begin_write().await?;
        let sql = if kind == Expiring::PublishedEvents {
            "DELETE FROM outbox_events WHERE seq IN (SELECT seq FROM outbox_events \
             WHERE published_at IS NOT NULL AND published_at < ? ORDER BY published_at LIMIT ?) \
             RETURNING tenant, seq"
        } else {
            "DELETE FROM outbox_events WHERE seq IN (SELECT seq FROM (SELECT seq, occurred_at \
             FROM outbox_events ORDER BY seq LIMIT ?2) WHERE occurred_at < ?1) \
             RETURNING tenant, seq"
        };
        let gone = sqlx::query(sql)
            .bind(ts(before))
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        let mut highest: HashMap<String, i64> = HashMap::new();
        for row in &gone {
            let seq: i64 = get(row, "seq")?;
            let top = highest.entry(get(row, "tenant")?).or_insert(seq);
            *top = (*top).max(seq);
        }
        for (tenant, seq) in &highest {
            sqlx::query(
                "INSERT INTO outbox_purge_marks (tenant, purged_through) VALUES (?, ?) \
                 ON CONFLICT (tenant) DO UPDATE SET \
                 purged_through = MAX(purged_through, excluded.purged_through)",
            )
            .bind(tenant)
            .bind(seq)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(gone.len() as u64)
    }
}

#[async_trait::async_trait]
impl OrderStore for SqliteStore {
    async fn create_order(
        &self,
        order: &Order,
        events: &[NewEvent],
        idempotency: Option<(&str, &StoredResponse)>,
    ) -> Result<CreateOutcome, StoreError> {
        let mut tx = self.begin_write().await?;
        // Dropping the transaction on a shortage writes nothing.
        if let Some(shortage) = Self::reserve(&mut tx, &order.lines).await? {
            return Ok(CreateOutcome::Short(shortage));
        }
        sqlx::query(
            "INSERT INTO orders (id, tenant, customer_id, currency, status, subtotal, discount, \
             tax, total, metadata, plugin_name, plugin_version, plugin_digest, version, \
             created_at, updated_at, stock_reserved) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
        )
        .bind(id_text(order.id))
        .bind(&order.tenant)
        .bind(&order.customer_id)
        .bind(&order.currency)
        .bind(order.status.as_str())
        .bind(order.subtotal)
        .bind(order.discount)
        .bind(order.tax)
        .bind(order.total)
        .bind(Json(&order.metadata))
        .bind(&order.plugin.name)
        .bind(&order.plugin.version)
        .bind(&order.plugin.digest)
        .bind(order.version)
        .bind(ts(order.created_at))
        .bind(ts(order.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        for (line_no, line) in (1_i64..).zip(&order.lines) {
            sqlx::query(
                "INSERT INTO order_lines \
                 (order_id, line_no, sku, quantity, unit_price, line_total) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(id_text(order.id))
            .bind(line_no)
            .bind(&line.sku)
            .bind(i64::from(line.quantity))
            .bind(line.unit_price)
            .bind(line.line_total)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        Self::insert_events(&mut tx, events).await?;
        if let Some((key, response)) = idempotency
            && !Self::complete_key(&mut tx, key, response, Some(order.id)).await?
        {
            return Err(StoreError::Conflict(format!(
                "idempotency key {key:?} is not in progress"
            )));
        }
        tx.commit().await.map_err(db_err)?;
        Ok(CreateOutcome::Created)
    }

    async fn get_order(&self, id: Uuid) -> Result<Option<Order>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        Self::fetch_order(&mut conn, id).await
    }

    async fn list_orders(&self, filter: &OrderFilter) -> Result<Vec<Order>, StoreError> {
        let limit = page_limit(filter.limit);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut query = QueryBuilder::<Sqlite>::new(concat!(
            "SELECT ",
            order_columns!(),
            " FROM orders WHERE tenant = "
        ));
        query.push_bind(filter.tenant.clone());
        if let Some(customer_id) = &filter.customer_id {
            query
                .push(" AND customer_id = ")
                .push_bind(customer_id.clone());
        }
        if let Some(status) = filter.status {
            query.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(before_id) = filter.before_id {
            query.push(" AND id < ").push_bind(id_text(before_id));
        }
        query.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
        // One connection for both queries: the page and its lines.
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        let rows = query.build().fetch_all(&mut *conn).await.map_err(db_err)?;
        let mut orders = rows
            .iter()
            .map(order_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Self::attach_lines(&mut conn, &mut orders).await?;
        Ok(orders)
    }

    async fn transition_order(
        &self,
        id: Uuid,
        expected_version: i64,
        new_status: OrderStatus,
        events: &[NewEvent],
        now: DateTime<Utc>,
    ) -> Result<TransitionOutcome, StoreError> {
        let mut tx = self.begin_write().await?;
        match Self::apply_transition(&mut tx, id, expected_version, new_status, events, now).await?
        {
            None => Ok(TransitionOutcome::Stale),
            Some(order) => {
                tx.commit().await.map_err(db_err)?;
                Ok(TransitionOutcome::Applied(order))
            }
        }
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
        let mut tx = self.begin_write().await?;
        if !Self::insert_inbox(&mut tx, tenant, consumer, message_id, now).await? {
            return Ok(InboxOutcome::Duplicate);
        }
        // On `None` dropping the transaction rolls the inbox record back too.
        match Self::apply_transition(&mut tx, id, expected_version, new_status, events, now).await?
        {
            None => Ok(InboxOutcome::Stale),
            Some(order) => {
                tx.commit().await.map_err(db_err)?;
                Ok(InboxOutcome::Applied(order))
            }
        }
    }
}

#[async_trait::async_trait]
impl InboxStore for SqliteStore {
    async fn record_inbox(
        &self,
        tenant: &str,
        consumer: &str,
        message_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let _turn = self.lane.turn().await?;
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        Self::insert_inbox(&mut conn, tenant, consumer, message_id, now).await
    }

    async fn inbox_contains(&self, consumer: &str, message_id: &str) -> Result<bool, StoreError> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM inbox_messages WHERE consumer = ? AND message_id = ?)",
        )
        .bind(consumer)
        .bind(message_id)
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)
    }
}

#[async_trait::async_trait]
impl OutboxStore for SqliteStore {
    async fn list_events(
        &self,
        tenant: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM outbox_events WHERE tenant = ? AND seq > ? ORDER BY seq LIMIT ?"
        ))
        .bind(tenant)
        .bind(after_seq)
        .bind(events_limit(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(event_from_row).collect()
    }

    async fn events_purged_through(&self, tenant: &str) -> Result<i64, StoreError> {
        let mark: Option<i64> =
            sqlx::query_scalar("SELECT purged_through FROM outbox_purge_marks WHERE tenant = ?")
                .bind(tenant)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?;
        Ok(mark.unwrap_or(0))
    }

    async fn outbox_stats(&self, now: DateTime<Utc>) -> Result<OutboxStats, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS unpublished, MIN(occurred_at) AS oldest \
             FROM outbox_events WHERE published_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        let unpublished: i64 = get(&row, "unpublished")?;
        let oldest = opt_ts(get(&row, "oldest")?)?;
        Ok(OutboxStats {
            unpublished: u64::try_from(unpublished).unwrap_or_default(),
            oldest_unpublished_age: oldest
                .map(|oldest| weir_core::domain::idempotency::elapsed(oldest, now)),
        })
    }

    async fn claim_outbox(
        &self,
        claimant: &str,
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(concat!(
            "UPDATE outbox_events SET claimed_by = ?1, claimed_until = ?3 WHERE seq IN ( \
               SELECT e.seq FROM outbox_events e \
               WHERE e.published_at IS NULL \
                 AND (e.claimed_until IS NULL OR e.claimed_until <= ?2) \
                 AND NOT EXISTS ( \
                   SELECT 1 FROM outbox_events p \
                   WHERE p.subject = e.subject AND p.published_at IS NULL AND p.seq < e.seq \
                     AND p.claimed_until > ?2) \
               ORDER BY e.seq LIMIT ?4) \
             RETURNING ",
            event_columns!()
        ))
        .bind(claimant)
        .bind(ts(now))
        .bind(ts(add_duration(now, lease)))
        .bind(events_limit(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        let mut events = rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit().await.map_err(db_err)?;
        events.sort_by_key(|e| e.seq);
        Ok(events)
    }

    async fn mark_published(&self, ids: &[Uuid], now: DateTime<Utc>) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let ids: Vec<String> = ids.iter().copied().map(id_text).collect();
        let _turn = self.lane.turn().await?;
        let done = sqlx::query(
            "UPDATE outbox_events SET published_at = ?, claimed_by = NULL, claimed_until = NULL \
             WHERE published_at IS NULL AND id IN (SELECT value FROM json_each(?))",
        )
        .bind(ts(now))
        .bind(Json(ids))
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected())
    }

    async fn release_outbox(
        &self,
        claimant: &str,
        ids: &[Uuid],
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = ids.iter().copied().map(id_text).collect();
        let _turn = self.lane.turn().await?;
        sqlx::query(
            "UPDATE outbox_events SET claimed_by = CASE WHEN ?1 IS NULL THEN NULL ELSE claimed_by END, \
             claimed_until = ?1, publish_attempts = publish_attempts + 1 \
             WHERE published_at IS NULL AND claimed_by = ?2 \
             AND id IN (SELECT value FROM json_each(?3))",
        )
        .bind(retry_at.map(ts))
        .bind(claimant)
        .bind(Json(ids))
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl ProductStore for SqliteStore {
    async fn get_product(&self, sku: &str) -> Result<Option<Product>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            product_columns!(),
            " FROM products WHERE sku = ?"
        ))
        .bind(sku)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.as_ref().map(product_from_row).transpose()
    }

    async fn list_products(
        &self,
        after_sku: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Product>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            product_columns!(),
            " FROM products WHERE ? IS NULL OR sku > ? ORDER BY sku LIMIT ?"
        ))
        .bind(after_sku)
        .bind(after_sku)
        .bind(i64::from(limit.min(MAX_PRODUCTS_LIMIT)))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(product_from_row).collect()
    }

    async fn upsert_product(&self, product: &Product) -> Result<Product, StoreError> {
        let _turn = self.lane.turn().await?;
        let row = sqlx::query(concat!(
            "INSERT INTO products (sku, name, unit_price, currency, stock, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (sku) DO UPDATE SET name = excluded.name, \
             unit_price = excluded.unit_price, currency = excluded.currency, \
             stock = excluded.stock, updated_at = excluded.updated_at RETURNING ",
            product_columns!()
        ))
        .bind(&product.sku)
        .bind(&product.name)
        .bind(product.unit_price)
        .bind(&product.currency)
        .bind(product.stock)
        .bind(ts(product.updated_at))
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        product_from_row(&row)
    }

    async fn seed_products_if_empty(&self, products: &[Product]) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let any: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM products)")
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
        if any {
            return Ok(false);
        }
        for product in products {
            sqlx::query(
                "INSERT INTO products (sku, name, unit_price, currency, stock, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&product.sku)
            .bind(&product.name)
            .bind(product.unit_price)
            .bind(&product.currency)
            .bind(product.stock)
            .bind(ts(product.updated_at))
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }
}

fn component_from_row(row: &SqliteRow) -> Result<ComponentRecord, StoreError> {
    let capabilities: String = get(row, "capabilities")?;
    Ok(ComponentRecord {
        digest: get(row, "digest")?,
        name: get(row, "name")?,
        version: get(row, "version")?,
        size: u64::try_from(get::<i64>(row, "size")?)
            .map_err(|_| StoreError::Corrupt("negative component size".to_owned()))?,
        capabilities: serde_json::from_str(&capabilities)
            .map_err(|e| StoreError::Corrupt(format!("component capabilities: {e}")))?,
        admitted_at: parse_ts(&get::<String>(row, "admitted_at")?)?,
        admitted_by: get(row, "admitted_by")?,
    })
}

fn json_doc<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(format!("cannot encode: {e}")))
}

#[async_trait::async_trait]
impl ComponentStore for SqliteStore {
    async fn put_component(
        &self,
        record: &ComponentRecord,
        bytes: &[u8],
    ) -> Result<PutComponent, StoreError> {
        let mut tx = self.begin_write().await?;
        if let Some(row) = sqlx::query(
            "SELECT digest, name, version, size, capabilities, admitted_at, admitted_by \
             FROM plugin_components WHERE digest = ?1",
        )
        .bind(&record.digest)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?
        {
            return Ok(PutComponent::Existing(component_from_row(&row)?));
        }
        if !may_reuse_version(&record.admitted_by)
            && let Some(row) = sqlx::query(
                "SELECT digest, name, version, size, capabilities, admitted_at, admitted_by \
                 FROM plugin_components WHERE name = ?1 AND version = ?2 LIMIT 1",
            )
            .bind(&record.name)
            .bind(&record.version)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?
        {
            return Ok(PutComponent::VersionTaken(component_from_row(&row)?));
        }
        sqlx::query(
            "INSERT INTO plugin_components \
             (digest, name, version, size, capabilities, bytes, admitted_at, admitted_by) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .bind(&record.digest)
        .bind(&record.name)
        .bind(&record.version)
        .bind(i64::try_from(record.size).unwrap_or(i64::MAX))
        .bind(to_json(&record.capabilities)?)
        .bind(bytes)
        .bind(ts(record.admitted_at))
        .bind(&record.admitted_by)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(PutComponent::Inserted)
    }

    async fn get_component(&self, digest: &str) -> Result<Option<ComponentRecord>, StoreError> {
        sqlx::query(
            "SELECT digest, name, version, size, capabilities, admitted_at, admitted_by \
             FROM plugin_components WHERE digest = ?1",
        )
        .bind(digest)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?
        .as_ref()
        .map(component_from_row)
        .transpose()
    }

    async fn component_bytes(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        sqlx::query_scalar("SELECT bytes FROM plugin_components WHERE digest = ?1")
            .bind(digest)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)
    }

    async fn list_components(
        &self,
        name: Option<&str>,
    ) -> Result<Vec<ComponentRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT digest, name, version, size, capabilities, admitted_at, admitted_by \
             FROM plugin_components WHERE ?1 IS NULL OR name = ?1 \
             ORDER BY admitted_at, digest",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(component_from_row).collect()
    }
}

#[async_trait::async_trait]
impl ReleaseStore for SqliteStore {
    async fn get_release(&self, name: &str) -> Result<Option<Release>, StoreError> {
        let doc: Option<String> =
            sqlx::query_scalar("SELECT release FROM plugin_releases WHERE name = ?1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?;
        doc.as_deref().map(|d| json_doc(d, "release")).transpose()
    }

    async fn list_releases(&self) -> Result<Vec<Release>, StoreError> {
        let docs: Vec<String> =
            sqlx::query_scalar("SELECT release FROM plugin_releases ORDER BY name")
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?;
        docs.iter().map(|d| json_doc(d, "release")).collect()
    }

    async fn swap_release(
        &self,
        expected: i64,
        next: &Release,
        audit: &ReleaseAudit,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let current: Option<i64> =
            sqlx::query_scalar("SELECT generation FROM plugin_releases WHERE name = ?1")
                .bind(&next.name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
        if current.unwrap_or(0) != expected {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO plugin_releases (name, generation, release, updated_at) \
             VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (name) DO UPDATE SET generation = excluded.generation, \
             release = excluded.release, updated_at = excluded.updated_at",
        )
        .bind(&next.name)
        .bind(next.generation)
        .bind(to_json(next)?)
        .bind(ts(next.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        sqlx::query(
            "INSERT INTO plugin_release_history (name, generation, at, audit) \
             VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(&audit.name)
        .bind(audit.generation)
        .bind(ts(audit.at))
        .bind(to_json(audit)?)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }

    async fn release_history(
        &self,
        name: &str,
        limit: u32,
    ) -> Result<Vec<ReleaseAudit>, StoreError> {
        let docs: Vec<String> = sqlx::query_scalar(
            "SELECT audit FROM plugin_release_history WHERE name = ?1 \
             ORDER BY generation DESC LIMIT ?2",
        )
        .bind(name)
        .bind(i64::from(limit.min(1000)))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        docs.iter().map(|d| json_doc(d, "release audit")).collect()
    }
}

fn api_key_from_row(row: &SqliteRow) -> Result<ApiKeyRecord, StoreError> {
    Ok(ApiKeyRecord {
        id: parse_id(&get::<String>(row, "id")?)?,
        prefix: get(row, "prefix")?,
        secret_hash: get(row, "secret_hash")?,
        tenant: get(row, "tenant")?,
        name: get(row, "name")?,
        scopes: get(row, "scopes")?,
        created_at: parse_ts(&get::<String>(row, "created_at")?)?,
        created_by: get(row, "created_by")?,
        expires_at: opt_ts(get(row, "expires_at")?)?,
        revoked_at: opt_ts(get(row, "revoked_at")?)?,
    })
}

const API_KEY_COLUMNS: &str =
    "id, prefix, secret_hash, tenant, name, scopes, created_at, created_by, expires_at, revoked_at";

#[async_trait::async_trait]
impl ApiKeyStore for SqliteStore {
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        let _turn = self.lane.turn().await?;
        sqlx::query(
            "INSERT INTO api_keys (id, prefix, secret_hash, tenant, name, scopes, created_at, \
             created_by, expires_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id_text(key.id))
        .bind(&key.prefix)
        .bind(&key.secret_hash)
        .bind(&key.tenant)
        .bind(&key.name)
        .bind(&key.scopes)
        .bind(ts(key.created_at))
        .bind(&key.created_by)
        .bind(key.expires_at.map(ts))
        .bind(key.revoked_at.map(ts))
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn find_api_key(&self, prefix: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE prefix = ?"
        )))
        .bind(prefix)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?
        .as_ref()
        .map(api_key_from_row)
        .transpose()
    }

    async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE ?1 IS NULL OR tenant = ?1 \
             ORDER BY created_at DESC, id DESC"
        )))
        .bind(tenant)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(api_key_from_row).collect()
    }

    async fn revoke_api_key(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let turn = self.lane.turn().await?;
        sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?")
            .bind(ts(now))
            .bind(id_text(id))
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        drop(turn);
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = ?"
        )))
        .bind(id_text(id))
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?
        .as_ref()
        .map(api_key_from_row)
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn timestamps_are_fixed_width_and_round_trip() {
        let at = Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0).unwrap();
        assert_eq!(ts(at), "2026-11-01T12:00:00.000000Z");
        let precise = at + chrono::TimeDelta::microseconds(1_234);
        assert_eq!(parse_ts(&ts(precise)).unwrap(), precise);
        assert!(ts(at) < ts(precise));
    }

    #[test]
    fn busy_and_locked_are_transient() {
        assert!(is_transient_sqlite_code("5")); // SQLITE_BUSY
        assert!(is_transient_sqlite_code("517")); // SQLITE_BUSY_SNAPSHOT
        assert!(is_transient_sqlite_code("6")); // SQLITE_LOCKED
        assert!(!is_transient_sqlite_code("2067")); // SQLITE_CONSTRAINT_UNIQUE
        assert!(!is_transient_sqlite_code("not a number"));
    }

    /// Rows written before migration 0005 (tenants) belong to the default tenant afterwards,
    /// and an idempotency key in flight across the upgrade keeps working in its new scope.
    #[tokio::test]
    async fn upgrading_moves_existing_rows_to_the_default_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let before = dir.path().join("before-tenants");
        std::fs::create_dir(&before).unwrap();
        let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
        for entry in std::fs::read_dir(&all).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if name.as_str() < "0005" {
                std::fs::copy(&path, before.join(&name)).unwrap();
            }
        }
        let url = format!("sqlite://{}", dir.path().join("weir.db").display());
        let store = SqliteStore::connect(&url, &StoreOptions::default())
            .await
            .unwrap();
        sqlx::migrate::Migrator::new(before.as_path())
            .await
            .unwrap()
            .run(store.pool())
            .await
            .unwrap();
        let id = Uuid::now_v7();
        let now = ts(Utc::now());
        let later = ts(Utc::now() + chrono::TimeDelta::minutes(5));
        sqlx::query(
            "INSERT INTO orders (id, customer_id, currency, status, subtotal, discount, tax, \
             total, plugin_name, plugin_version, plugin_digest, created_at, updated_at) \
             VALUES (?, 'cus_old', 'EUR', 'placed', 100, 0, 0, 100, 'orders', '0.1.0', 'ab', ?, ?)",
        )
        .bind(id_text(id))
        .bind(&now)
        .bind(&now)
        .execute(store.pool())
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO outbox_events (id, event_type, source, subject, occurred_at, data) \
             VALUES (?, 'order.placed', '/weir/orders', ?, ?, '{}')",
        )
        .bind(id_text(Uuid::now_v7()))
        .bind(id_text(id))
        .bind(&now)
        .execute(store.pool())
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO idempotency_keys (key, request_hash, state, locked_until, created_at) \
             VALUES ('POST /v1/orders:in-flight', 'h1', 'in_progress', ?, ?)",
        )
        .bind(&later)
        .bind(&now)
        .execute(store.pool())
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO inbox_messages (consumer, message_id, received_at) \
             VALUES ('payments', 'src m-1', ?)",
        )
        .bind(&now)
        .execute(store.pool())
        .await
        .unwrap();

        store.migrate().await.unwrap();

        let order = store.get_order(id).await.unwrap().unwrap();
        assert_eq!(order.tenant, "default");
        let filter = OrderFilter {
            tenant: "default".to_owned(),
            ..OrderFilter::default()
        };
        assert_eq!(store.list_orders(&filter).await.unwrap().len(), 1);
        let feed = store.list_events("default", 0, 10).await.unwrap();
        assert_eq!((feed.len(), feed[0].tenant.as_str()), (1, "default"));
        // The key a client was retrying across the upgrade is still held, now in the
        // default tenant's scope; a brand-new key there is not.
        let begin = |key: &'static str| {
            store.idempotency_begin(
                "default",
                key,
                "h1",
                Utc::now(),
                Duration::from_secs(30),
                Duration::from_secs(3600),
            )
        };
        assert!(matches!(
            begin("default/POST /v1/orders:in-flight").await.unwrap(),
            IdempotencyBegin::InProgress { .. }
        ));
        assert_eq!(
            begin("default/POST /v1/orders:fresh").await.unwrap(),
            IdempotencyBegin::Started
        );
        let tenants: Vec<String> = sqlx::query_scalar(
            "SELECT tenant FROM inbox_messages UNION ALL SELECT tenant FROM idempotency_keys",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        assert!(tenants.iter().all(|t| t == "default"), "{tenants:?}");
        assert!(store.inbox_contains("payments", "src m-1").await.unwrap());
        store.close().await;
    }

    #[tokio::test]
    async fn pragmas_are_applied() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("weir.db").display());
        let store = SqliteStore::connect(&url, &StoreOptions::default())
            .await
            .unwrap();
        let mut conn = store.pool().acquire().await.unwrap();
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(journal, "wal");
        let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(foreign_keys, 1);
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(synchronous, 1, "NORMAL");
        let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(busy, 5000);
        drop(conn);
        store.close().await;
    }

    /// A migrated store in `dir` whose connections never wait for the write lock: a writer
    /// that meets another fails at once with `SQLITE_BUSY`.
    async fn store_failing_on_contact(dir: &tempfile::TempDir) -> SqliteStore {
        let url = format!("sqlite://{}", dir.path().join("weir.db").display());
        let store =
            SqliteStore::connect_with_busy_timeout(&url, &StoreOptions::default(), Duration::ZERO)
                .await
                .unwrap();
        store.migrate().await.unwrap();
        let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(busy, 0, "the test needs writers to fail on contact");
        store
    }

    /// The errors of writer tasks, each with its source.
    fn failures(
        results: Vec<Result<Result<(), StoreError>, tokio::task::JoinError>>,
    ) -> Vec<String> {
        results
            .into_iter()
            .filter_map(|r| r.expect("writer task").err())
            .map(|e| format!("{e}: {:?}", std::error::Error::source(&e)))
            .collect()
    }

    /// Writers of one process queue on the write lane, never in SQLite's busy handler: with
    /// the busy timeout at zero, any two of them meeting at the write lock would fail at once
    /// with `SQLITE_BUSY`. Many overlapping writers of every kind the order path makes
    /// (claim a key, complete it, record a message) all succeed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_never_meet_at_the_write_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_failing_on_contact(&dir).await;
        let in_flight = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let writers = (0..64).map(|i| {
            let store = store.clone();
            let (in_flight, most) = (in_flight.clone(), most.clone());
            tokio::spawn(async move {
                use std::sync::atomic::Ordering::SeqCst;
                let now = in_flight.fetch_add(1, SeqCst) + 1;
                most.fetch_max(now, SeqCst);
                let key = format!("key-{i}");
                for round in 0..5 {
                    let begun = store
                        .idempotency_begin(
                            "default",
                            &format!("{key}-{round}"),
                            "hash",
                            Utc::now(),
                            Duration::from_secs(30),
                            Duration::from_secs(3600),
                        )
                        .await?;
                    assert!(matches!(begun, IdempotencyBegin::Started), "{begun:?}");
                    store
                        .idempotency_complete(
                            &format!("{key}-{round}"),
                            &StoredResponse {
                                status: 201,
                                body: b"{}".to_vec(),
                                headers: Vec::new(),
                            },
                        )
                        .await?;
                    store
                        .record_inbox("default", "c", &format!("{key}-{round}"), Utc::now())
                        .await?;
                }
                in_flight.fetch_sub(1, SeqCst);
                Ok::<_, StoreError>(())
            })
        });
        let failed = failures(futures::future::join_all(writers).await);
        assert!(
            failed.is_empty(),
            "{} writers failed: {failed:?}",
            failed.len()
        );
        let most = most.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            most > 1,
            "the writers never overlapped (at most {most} at once)"
        );
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM idempotency_keys")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(rows, 64 * 5);
        store.close().await;
    }

    /// A write transaction dropped without a commit keeps its turn until its rollback has
    /// run: with no busy timeout, a writer that began while the lock was still held would
    /// fail at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_abandoned_write_keeps_its_turn_until_it_has_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_failing_on_contact(&dir).await;
        let insert = "INSERT INTO inbox_messages (tenant, consumer, message_id, received_at) \
                      VALUES ('default', 'c', ?, '2026-01-01T00:00:00Z')";
        let writers = (0..16).map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                for round in 0..20 {
                    let mut abandoned = store.begin_write().await?;
                    sqlx::query(insert)
                        .bind(format!("dropped-{i}-{round}"))
                        .execute(&mut *abandoned)
                        .await
                        .map_err(db_err)?;
                    drop(abandoned);
                    let mut kept = store.begin_write().await?;
                    sqlx::query(insert)
                        .bind(format!("kept-{i}-{round}"))
                        .execute(&mut *kept)
                        .await
                        .map_err(db_err)?;
                    kept.commit().await.map_err(db_err)?;
                }
                Ok::<_, StoreError>(())
            })
        });
        let failed = failures(futures::future::join_all(writers).await);
        assert!(
            failed.is_empty(),
            "{} writers met a lock still held by a rollback: {failed:?}",
            failed.len()
        );
        let (kept, dropped): (i64, i64) = sqlx::query_as(
            "SELECT SUM(message_id LIKE 'kept-%'), SUM(message_id LIKE 'dropped-%') FROM inbox_messages",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert_eq!((kept, dropped), (16 * 20, 0), "abandoned writes were kept");
        store.close().await;
    }

    #[tokio::test]
    async fn in_memory_database_keeps_its_data() {
        let store = SqliteStore::connect("sqlite::memory:", &StoreOptions::default())
            .await
            .unwrap();
        store.migrate().await.unwrap();
        assert!(
            store
                .record_inbox("default", "c", "m1", Utc::now())
                .await
                .unwrap()
        );
        assert!(
            !store
                .record_inbox("default", "c", "m1", Utc::now())
                .await
                .unwrap()
        );
        store.close().await;
    }
}
