//! [`PgStore`]: the production backend.
//!
//! Native `uuid`, `timestamptz` and `jsonb` columns. Multi-row writes run in one transaction at
//! READ COMMITTED; races are settled by constraints (`ON CONFLICT`) and conditional updates
//! (`WHERE version = $n`, `WHERE locked_until = $old`), never by read-then-write assumptions.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};
use uuid::Uuid;

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

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// SQLSTATEs worth retrying: connection exceptions (class 08), insufficient resources
/// (class 53), serialization failure, deadlock, lock not available, query cancelled (statement
/// timeout) and the server shutting down or starting up.
pub(crate) fn is_transient_pg_code(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            "40001" | "40P01" | "55P03" | "57014" | "57P01" | "57P02" | "57P03"
        )
}

/// Key of the transaction-scoped advisory lock that serializes outbox claims ("weir" + 1).
const OUTBOX_CLAIM_LOCK: i64 = 0x7765_6972_0001;

fn db_err(err: sqlx::Error) -> StoreError {
    classify(err, is_transient_pg_code)
}

/// A transaction on `pool` whose `BEGIN` no cancellation can cut short.
///
/// sqlx 0.9.0 counts a PostgreSQL transaction as open only once the server has answered its
/// `BEGIN`. A caller dropped in between (a client that disconnects, a request timeout)
/// leaves the connection inside a transaction that nothing rolls back, and the pool hands
/// it to the next borrower: that borrower's statements run inside it, unseen by others and
/// lost if it is ever rolled back (an idempotency key begun there was "not in progress" when
/// its order completed it, a 500; transact-rs/sqlx#4393, fixed upstream after 0.9.0). Here
/// the `BEGIN` runs on a task of its own, which a dropped caller does not stop: the begun
/// transaction is then dropped and rolled back as any dropped transaction is. A task per
/// transaction costs about a microsecond against a database round trip.
async fn begin(pool: &PgPool) -> Result<sqlx::Transaction<'static, Postgres>, StoreError> {
    let pool = pool.clone();
    tokio::spawn(async move { pool.begin().await })
        .await
        .map_err(|e| StoreError::Internal(weir_core::ports::DriverError::new(e)))?
        .map_err(db_err)
}

fn get<'r, T>(row: &'r PgRow, column: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
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
        "sku, name, unit_price, currency, GREATEST(stock - reserved, 0) AS stock, reserved, \
         updated_at"
    };
}

/// An order row without its lines.
fn order_from_row(row: &PgRow) -> Result<Order, StoreError> {
    let metadata: Json<serde_json::Map<String, serde_json::Value>> = get(row, "metadata")?;
    Ok(Order {
        id: get(row, "id")?,
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
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

fn line_from_row(row: &PgRow) -> Result<OrderLine, StoreError> {
    Ok(OrderLine {
        sku: get(row, "sku")?,
        quantity: quantity_from_db(get(row, "quantity")?)?,
        unit_price: get(row, "unit_price")?,
        line_total: get(row, "line_total")?,
    })
}

fn event_from_row(row: &PgRow) -> Result<EventRecord, StoreError> {
    let data: Json<serde_json::Value> = get(row, "data")?;
    Ok(EventRecord {
        seq: get(row, "seq")?,
        id: get(row, "id")?,
        event_type: get(row, "event_type")?,
        source: get(row, "source")?,
        subject: get(row, "subject")?,
        tenant: get(row, "tenant")?,
        occurred_at: get(row, "occurred_at")?,
        data: data.0,
        traceparent: get(row, "traceparent")?,
        tracestate: get(row, "tracestate")?,
        published_at: get(row, "published_at")?,
    })
}

fn product_from_row(row: &PgRow) -> Result<Product, StoreError> {
    Ok(Product {
        sku: get(row, "sku")?,
        name: get(row, "name")?,
        unit_price: get(row, "unit_price")?,
        currency: get(row, "currency")?,
        stock: get(row, "stock")?,
        reserved: get(row, "reserved")?,
        updated_at: get(row, "updated_at")?,
    })
}

/// The PostgreSQL implementation of the store ports ([`super::Store`]).
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// The connect URL with any password redacted (`PgConnectOptions`' own `Debug` shows it).
    url: String,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.url)
            .field("connections", &self.pool.size())
            .finish()
    }
}

impl PgStore {
    /// Connects a pool to `url` (`postgres://` or `postgresql://`). Sessions are named `weir`
    /// in `pg_stat_activity` and get `statement_timeout` from `opts`.
    pub async fn connect(url: &str, opts: &StoreOptions) -> Result<Self, ConnectError> {
        let redacted = redact_url(url);
        let mut options = PgConnectOptions::from_str(url)
            .map_err(|e| ConnectError::InvalidUrl(format!("{redacted}: {e}")))?
            .application_name("weir");
        if let Some(timeout) = opts.statement_timeout {
            options = options.options([("statement_timeout", timeout.as_millis().to_string())]);
        }
        let pool = match PgPoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(options.clone())
            .await
        {
            Ok(pool) => pool,
            // The pool retries until its timeout and then reports only that; one direct
            // attempt names the cause (refused, authentication, unknown database...).
            Err(sqlx::Error::PoolTimedOut) => {
                let cause = match sqlx::ConnectOptions::connect(&options).await {
                    Ok(_) => sqlx::Error::PoolTimedOut,
                    Err(e) => e,
                };
                return Err(ConnectError::Open(db_err(cause)));
            }
            Err(e) => return Err(ConnectError::Open(db_err(e))),
        };
        Ok(PgStore {
            pool,
            url: redacted,
        })
    }

    async fn attach_lines(conn: &mut PgConnection, orders: &mut [Order]) -> Result<(), StoreError> {
        if orders.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = orders.iter().map(|order| order.id).collect();
        let rows = sqlx::query(
            "SELECT order_id, line_no, sku, quantity, unit_price, line_total \
             FROM order_lines WHERE order_id = ANY($1) ORDER BY order_id, line_no",
        )
        .bind(ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
        let mut lines: HashMap<Uuid, Vec<OrderLine>> = HashMap::new();
        for row in &rows {
            let order_id: Uuid = get(row, "order_id")?;
            lines.entry(order_id).or_default().push(line_from_row(row)?);
        }
        for order in orders.iter_mut() {
            order.lines = lines.remove(&order.id).unwrap_or_default();
        }
        Ok(())
    }

    async fn fetch_order(conn: &mut PgConnection, id: Uuid) -> Result<Option<Order>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            order_columns!(),
            " FROM orders WHERE id = $1"
        ))
        .bind(id)
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

    async fn insert_events(conn: &mut PgConnection, events: &[NewEvent]) -> Result<(), StoreError> {
        for event in events {
            sqlx::query(
                "INSERT INTO outbox_events \
                 (id, event_type, source, subject, occurred_at, data, traceparent, tracestate, \
                 tenant) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(event.id)
            .bind(&event.event_type)
            .bind(&event.source)
            .bind(&event.subject)
            .bind(event.occurred_at)
            .bind(Json(&event.data))
            .bind(&event.traceparent)
            .bind(&event.tracestate)
            .bind(&event.tenant)
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
        conn: &mut PgConnection,
        id: Uuid,
        expected_version: i64,
        new_status: OrderStatus,
        events: &[NewEvent],
        now: DateTime<Utc>,
    ) -> Result<Option<Order>, StoreError> {
        let updated = sqlx::query(
            "UPDATE orders SET status = $1, version = version + 1, updated_at = $2 \
                 WHERE id = $3 AND version = $4",
        )
        .bind(new_status.as_str())
        .bind(now)
        .bind(id)
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

    /// Reserve the order's quantities, per sku in lock order (so concurrent orders cannot
    /// deadlock); the first shortage stops it (the caller drops the transaction). Under READ
    /// COMMITTED a concurrent reservation of the same product makes this one wait and then
    /// re-check `stock - reserved` on the committed row, so stock never goes below zero.
    async fn reserve(
        conn: &mut PgConnection,
        lines: &[OrderLine],
    ) -> Result<Option<Shortage>, StoreError> {
        for (sku, wanted) in stock::demand(lines) {
            let reserved = sqlx::query(
                "UPDATE products SET reserved = reserved + $1 \
                 WHERE sku = $2 AND stock - reserved >= $1",
            )
            .bind(wanted)
            .bind(sku)
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
            if reserved.rows_affected() == 1 {
                continue;
            }
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM products WHERE sku = $1)")
                    .bind(sku)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(db_err)?;
            return Ok(Some(shortage(sku, wanted, exists)));
        }
        Ok(None)
    }

    /// Settle the order's reservation if it still holds one (at most once per order: the
    /// flag is cleared in the same transaction, under the order's row lock).
    async fn settle(
        conn: &mut PgConnection,
        order: &Order,
        settlement: Settlement,
    ) -> Result<(), StoreError> {
        let held = sqlx::query(
            "UPDATE orders SET stock_reserved = FALSE WHERE id = $1 AND stock_reserved",
        )
        .bind(order.id)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
        if held.rows_affected() == 0 {
            return Ok(());
        }
        let sql = match settlement {
            Settlement::Release => {
                "UPDATE products SET reserved = GREATEST(reserved - $1, 0) WHERE sku = $2"
            }
            Settlement::Consume => {
                "UPDATE products SET reserved = GREATEST(reserved - $1, 0), \
                 stock = GREATEST(stock - $1, 0) WHERE sku = $2"
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
        conn: &mut PgConnection,
        tenant: &str,
        consumer: &str,
        message_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let recorded = sqlx::query(
            "INSERT INTO inbox_messages (consumer, message_id, received_at, tenant) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (consumer, message_id) DO NOTHING",
        )
        .bind(consumer)
        .bind(message_id)
        .bind(now)
        .bind(tenant)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
        Ok(recorded.rows_affected() == 1)
    }

    /// Completes an `in_progress` key; `false` if there was none.
    async fn complete_key(
        conn: &mut PgConnection,
        key: &str,
        response: &StoredResponse,
        resource_id: Option<Uuid>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE idempotency_keys SET state = 'completed', response_status = $1, \
             response_body = $2, response_headers = $3, resource_id = $4, completed_at = now() \
             WHERE key = $5 AND state = 'in_progress'",
        )
        .bind(i32::from(response.status))
        .bind(&response.body)
        .bind(Json(&response.headers))
        .bind(resource_id.map(|id| id.to_string()))
        .bind(key)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    /// One round of [`Store::idempotency_begin`]; `None` if the row changed under us (deleted,
    /// replaced or taken over by a concurrent call), so the caller reads it again.
    async fn begin_round(
        &self,
        tenant: &str,
        key: &str,
        request_hash: &str,
        now: DateTime<Utc>,
        lock_ttl: Duration,
        retention: Duration,
    ) -> Result<Option<IdempotencyBegin>, StoreError> {
        let locked_until = add_duration(now, lock_ttl);
        // The claim commits without waiting for its WAL to reach the disk (the `set_config`
        // makes this one statement's transaction an asynchronous commit: one round trip, and
        // no flush wait on every order's path). Losing it in a database crash loses nothing:
        // the order's own transaction commits synchronously, which flushes the WAL up to it,
        // so the claim is durable before anything that depends on it is, and that transaction
        // completes the key only if the claim is there (`complete_key`), or writes nothing.
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys \
             (key, request_hash, state, locked_until, created_at, tenant) \
             SELECT $1, $2, 'in_progress', $3, $4, $5 \
             FROM (SELECT set_config('synchronous_commit', 'off', true)) AS asynchronous_commit \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(request_hash)
        .bind(locked_until)
        .bind(now)
        .bind(tenant)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        if inserted.rows_affected() == 1 {
            return Ok(Some(IdempotencyBegin::Started));
        }

        let row = sqlx::query(
            "SELECT request_hash, state, response_status, response_body, response_headers, \
             locked_until, created_at FROM idempotency_keys WHERE key = $1",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let old_locked_until: DateTime<Utc> = get(&row, "locked_until")?;
        let old_created_at: DateTime<Utc> = get(&row, "created_at")?;
        let state: String = get(&row, "state")?;
        let response = stored_response(key, &state, || {
            let status: Option<i32> = get(&row, "response_status")?;
            let body: Option<Vec<u8>> = get(&row, "response_body")?;
            let headers: Option<Json<Vec<(String, String)>>> = get(&row, "response_headers")?;
            Ok(ResponseColumns {
                status: status.map(i64::from),
                body,
                headers: headers.map(|h| h.0),
            })
        })?;
        let existing = ExistingKey {
            request_hash: get(&row, "request_hash")?,
            response,
            locked_until: old_locked_until,
            created_at: old_created_at,
        };
        let updated = match decide_existing(existing, request_hash, now, retention) {
            KeyDecision::Answer(answer) => return Ok(Some(answer)),
            KeyDecision::Replace => sqlx::query(
                "UPDATE idempotency_keys SET request_hash = $1, state = 'in_progress', \
                 response_status = NULL, response_body = NULL, response_headers = NULL, \
                 resource_id = NULL, locked_until = $2, created_at = $3, completed_at = NULL \
                 WHERE key = $4 AND created_at = $5",
            )
            .bind(request_hash)
            .bind(locked_until)
            .bind(now)
            .bind(key)
            .bind(old_created_at),
            KeyDecision::TakeOver => sqlx::query(
                "UPDATE idempotency_keys SET locked_until = $1 \
                 WHERE key = $2 AND state = 'in_progress' AND locked_until = $3",
            )
            .bind(locked_until)
            .bind(key)
            .bind(old_locked_until),
        }
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok((updated.rows_affected() == 1).then_some(IdempotencyBegin::Started))
    }
}

#[async_trait::async_trait]
impl Database for PgStore {
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
        "postgres"
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
impl IdempotencyStore for PgStore {
    async fn idempotency_begin(
        &self,
        tenant: &str,
        key: &str,
        request_hash: &str,
        now: DateTime<Utc>,
        lock_ttl: Duration,
        retention: Duration,
    ) -> Result<IdempotencyBegin, StoreError> {
        for _ in 0..BEGIN_ATTEMPTS {
            if let Some(outcome) = self
                .begin_round(tenant, key, request_hash, now, lock_ttl, retention)
                .await?
            {
                return Ok(outcome);
            }
        }
        // The row kept changing under us: someone else is actively working on this key.
        Ok(IdempotencyBegin::InProgress {
            retry_after: Duration::from_secs(1),
        })
    }

    async fn idempotency_release(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM idempotency_keys WHERE key = $1 AND state = 'in_progress'")
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
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        if !Self::complete_key(&mut conn, key, response, None).await? {
            return Err(StoreError::Conflict(format!(
                "idempotency key {key:?} is not in progress"
            )));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl RetentionStore for PgStore {
    async fn purge_expired(
        &self,
        kind: Expiring,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError> {
        // One statement per batch. `SKIP LOCKED`: a row another transaction holds (a key being
        // completed, an event being marked) is left for the next run instead of waited for.
        let sql = match kind {
            Expiring::IdempotencyKeys => {
                "WITH gone AS (DELETE FROM idempotency_keys WHERE key IN (SELECT key FROM \
                 idempotency_keys WHERE created_at < $1 ORDER BY created_at LIMIT $2 \
                 FOR UPDATE SKIP LOCKED) RETURNING 1) SELECT COUNT(*) FROM gone"
            }
            Expiring::InboxMessages => {
                "WITH gone AS (DELETE FROM inbox_messages WHERE (consumer, message_id) IN \
                 (SELECT consumer, message_id FROM inbox_messages WHERE received_at < $1 \
                 ORDER BY received_at LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING 1) \
                 SELECT COUNT(*) FROM gone"
            }
            // The purge marks move in the same statement as the delete.
            Expiring::PublishedEvents => {
                "WITH gone AS (DELETE FROM outbox_events WHERE seq IN (SELECT seq FROM \
                 outbox_events WHERE published_at IS NOT NULL AND published_at < $1 \
                 ORDER BY published_at LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING tenant, seq), \
                 marks AS (INSERT INTO outbox_purge_marks (tenant, purged_through) \
                 SELECT tenant, MAX(seq) FROM gone GROUP BY tenant ON CONFLICT (tenant) DO \
                 UPDATE SET purged_through = GREATEST(outbox_purge_marks.purged_through, \
                 EXCLUDED.purged_through)) SELECT COUNT(*) FROM gone"
            }
            Expiring::FeedEvents => {
                "WITH gone AS (DELETE FROM outbox_events WHERE seq IN (SELECT seq FROM \
                 (SELECT seq, occurred_at FROM outbox_events ORDER BY seq LIMIT $2) AS first \
                 WHERE occurred_at < $1) RETURNING tenant, seq), \
                 marks AS (INSERT INTO outbox_purge_marks (tenant, purged_through) \
                 SELECT tenant, MAX(seq) FROM gone GROUP BY tenant ON CONFLICT (tenant) DO \
                 UPDATE SET purged_through = GREATEST(outbox_purge_marks.purged_through, \
                 EXCLUDED.purged_through)) SELECT COUNT(*) FROM gone"
            }
        };
        let deleted: i64 = sqlx::query_scalar(sql)
            .bind(before)
            .bind(i64::from(limit))
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(u64::try_from(deleted).unwrap_or_default())
    }
}

#[async_trait::async_trait]
impl OrderStore for PgStore {
    async fn create_order(
        &self,
        order: &Order,
        events: &[NewEvent],
        idempotency: Option<(&str, &StoredResponse)>,
    ) -> Result<CreateOutcome, StoreError> {
        let mut tx = begin(&self.pool).await?;
        sqlx::query(
            "INSERT INTO orders (id, customer_id, currency, status, subtotal, discount, tax, \
             total, metadata, plugin_name, plugin_version, plugin_digest, version, created_at, \
             updated_at, stock_reserved, tenant) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, TRUE, $16)",
        )
        .bind(order.id)
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
        .bind(order.created_at)
        .bind(order.updated_at)
        .bind(&order.tenant)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if !order.lines.is_empty() {
            // One statement for all lines, from parallel arrays.
            let count = i32::try_from(order.lines.len())
                .map_err(|_| StoreError::Conflict("too many order lines".to_owned()))?;
            let line_nos: Vec<i32> = (1..=count).collect();
            let skus: Vec<&str> = order.lines.iter().map(|l| l.sku.as_str()).collect();
            let quantities: Vec<i64> = order.lines.iter().map(|l| i64::from(l.quantity)).collect();
            let unit_prices: Vec<i64> = order.lines.iter().map(|l| l.unit_price).collect();
            let line_totals: Vec<i64> = order.lines.iter().map(|l| l.line_total).collect();
            sqlx::query(
                "INSERT INTO order_lines \
                 (order_id, line_no, sku, quantity, unit_price, line_total) \
                 SELECT $1, * FROM UNNEST($2::int4[], $3::text[], $4::int8[], $5::int8[], \
                 $6::int8[])",
            )
            .bind(order.id)
            .bind(line_nos)
            .bind(skus)
            .bind(quantities)
            .bind(unit_prices)
            .bind(line_totals)
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
        // The stock last: from here to the commit the products' rows stay locked, and every
        // other order of the same product waits for them. Dropping the transaction on a
        // shortage writes nothing.
        if let Some(shortage) = Self::reserve(&mut tx, &order.lines).await? {
            return Ok(CreateOutcome::Short(shortage));
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
        let mut query = QueryBuilder::<Postgres>::new(concat!(
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
            query.push(" AND id < ").push_bind(before_id);
        }
        query.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
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
        let mut tx = begin(&self.pool).await?;
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
        let mut tx = begin(&self.pool).await?;
        // A concurrent insert of the same key waits on the unique index until the other
        // transaction ends, then does nothing: at most one of them applies.
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
impl InboxStore for PgStore {
    async fn record_inbox(
        &self,
        tenant: &str,
        consumer: &str,
        message_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        Self::insert_inbox(&mut conn, tenant, consumer, message_id, now).await
    }

    async fn inbox_contains(&self, consumer: &str, message_id: &str) -> Result<bool, StoreError> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM inbox_messages WHERE consumer = $1 AND message_id = $2)",
        )
        .bind(consumer)
        .bind(message_id)
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)
    }
}

#[async_trait::async_trait]
impl OutboxStore for PgStore {
    async fn list_events(
        &self,
        tenant: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM outbox_events WHERE tenant = $3 AND seq > $1 ORDER BY seq LIMIT $2"
        ))
        .bind(after_seq)
        .bind(events_limit(limit))
        .bind(tenant)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(event_from_row).collect()
    }

    async fn events_purged_through(&self, tenant: &str) -> Result<i64, StoreError> {
        let mark: Option<i64> =
            sqlx::query_scalar("SELECT purged_through FROM outbox_purge_marks WHERE tenant = $1")
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
        let oldest: Option<DateTime<Utc>> = get(&row, "oldest")?;
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
        let mut tx = begin(&self.pool).await?;
        // Claims are short; serializing them makes the per-subject ordering check below exact
        // (no two claimers can both see an earlier row of a subject as unleased).
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(OUTBOX_CLAIM_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let rows = sqlx::query(concat!(
            "UPDATE outbox_events SET claimed_by = $1, claimed_until = $3 WHERE seq IN ( \
               SELECT e.seq FROM outbox_events e \
               WHERE e.published_at IS NULL \
                 AND (e.claimed_until IS NULL OR e.claimed_until <= $2) \
                 AND NOT EXISTS ( \
                   SELECT 1 FROM outbox_events p \
                   WHERE p.subject = e.subject AND p.published_at IS NULL AND p.seq < e.seq \
                     AND p.claimed_until > $2) \
               ORDER BY e.seq LIMIT $4 \
               FOR UPDATE SKIP LOCKED) \
             RETURNING ",
            event_columns!()
        ))
        .bind(claimant)
        .bind(now)
        .bind(add_duration(now, lease))
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
        let done = sqlx::query(
            "UPDATE outbox_events SET published_at = $1, claimed_by = NULL, claimed_until = NULL \
             WHERE published_at IS NULL AND id = ANY($2)",
        )
        .bind(now)
        .bind(ids)
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
        sqlx::query(
            "UPDATE outbox_events SET \
             claimed_by = CASE WHEN $3::timestamptz IS NULL THEN NULL ELSE claimed_by END, \
             claimed_until = $3, publish_attempts = publish_attempts + 1 \
             WHERE published_at IS NULL AND claimed_by = $1 AND id = ANY($2)",
        )
        .bind(claimant)
        .bind(ids)
        .bind(retry_at)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl ProductStore for PgStore {
    async fn get_product(&self, sku: &str) -> Result<Option<Product>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            product_columns!(),
            " FROM products WHERE sku = $1"
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
        // The database's collation orders skus (the primary key's index serves the page);
        // the comparison uses the same collation, so pages neither overlap nor skip.
        let rows = sqlx::query(concat!(
            "SELECT ",
            product_columns!(),
            " FROM products WHERE $1::text IS NULL OR sku > $1 ORDER BY sku LIMIT $2"
        ))
        .bind(after_sku)
        .bind(i64::from(limit.min(MAX_PRODUCTS_LIMIT)))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(product_from_row).collect()
    }

    async fn upsert_product(&self, product: &Product) -> Result<Product, StoreError> {
        let row = sqlx::query(concat!(
            "INSERT INTO products (sku, name, unit_price, currency, stock, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (sku) DO UPDATE SET \
             name = excluded.name, unit_price = excluded.unit_price, \
             currency = excluded.currency, stock = excluded.stock, \
             updated_at = excluded.updated_at RETURNING ",
            product_columns!()
        ))
        .bind(&product.sku)
        .bind(&product.name)
        .bind(product.unit_price)
        .bind(&product.currency)
        .bind(product.stock)
        .bind(product.updated_at)
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        product_from_row(&row)
    }

    async fn seed_products_if_empty(&self, products: &[Product]) -> Result<bool, StoreError> {
        let mut tx = begin(&self.pool).await?;
        // Serializes seeding replicas (and blocks concurrent writers to the catalog, which
        // only matters at startup); readers are not blocked.
        sqlx::query("LOCK TABLE products IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
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
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&product.sku)
            .bind(&product.name)
            .bind(product.unit_price)
            .bind(&product.currency)
            .bind(product.stock)
            .bind(product.updated_at)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }
}

/// The channel a release change is announced on (payload: the plugin name).
pub const RELEASE_CHANNEL: &str = "weir_plugin_release";

/// Announcements of release changes from every replica (PostgreSQL `LISTEN`), on a
/// connection of its own.
pub struct ReleaseListener {
    inner: sqlx::postgres::PgListener,
}

impl std::fmt::Debug for ReleaseListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReleaseListener").finish_non_exhaustive()
    }
}

impl ReleaseListener {
    /// Listen on [`RELEASE_CHANNEL`] of the database at `url`.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let mut inner = sqlx::postgres::PgListener::connect(url)
            .await
            .map_err(db_err)?;
        inner.listen(RELEASE_CHANNEL).await.map_err(db_err)?;
        Ok(Self { inner })
    }

    /// The next announced plugin name. After a lost connection the listener reconnects on
    /// the next call; what was announced meanwhile is lost (callers also poll).
    pub async fn recv(&mut self) -> Result<String, StoreError> {
        self.inner
            .recv()
            .await
            .map(|n| n.payload().to_owned())
            .map_err(db_err)
    }
}

fn component_from_row(row: &PgRow) -> Result<ComponentRecord, StoreError> {
    let capabilities: Json<Vec<String>> = get(row, "capabilities")?;
    Ok(ComponentRecord {
        digest: get(row, "digest")?,
        name: get(row, "name")?,
        version: get(row, "version")?,
        size: u64::try_from(get::<i64>(row, "size")?)
            .map_err(|_| StoreError::Corrupt("negative component size".to_owned()))?,
        capabilities: capabilities.0,
        admitted_at: get(row, "admitted_at")?,
        admitted_by: get(row, "admitted_by")?,
    })
}

#[async_trait::async_trait]
impl ComponentStore for PgStore {
    async fn put_component(
        &self,
        record: &ComponentRecord,
        bytes: &[u8],
    ) -> Result<PutComponent, StoreError> {
        if let Some(existing) = self.get_component(&record.digest).await? {
            return Ok(PutComponent::Existing(existing));
        }
        if !may_reuse_version(&record.admitted_by)
            && let Some(row) = sqlx::query(
                "SELECT digest, name, version, size, capabilities, admitted_at, admitted_by \
                 FROM plugin_components WHERE name = $1 AND version = $2 LIMIT 1",
            )
            .bind(&record.name)
            .bind(&record.version)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
        {
            return Ok(PutComponent::VersionTaken(component_from_row(&row)?));
        }
        // A concurrent insert of the digest or of an uploaded version inserts nothing here;
        // find out which.
        let inserted = sqlx::query(
            "INSERT INTO plugin_components \
             (digest, name, version, size, capabilities, bytes, admitted_at, admitted_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(&record.digest)
        .bind(&record.name)
        .bind(&record.version)
        .bind(i64::try_from(record.size).unwrap_or(i64::MAX))
        .bind(Json(&record.capabilities))
        .bind(bytes)
        .bind(record.admitted_at)
        .bind(&record.admitted_by)
        .execute(&self.pool)
        .await
        .map_err(db_err)?
        .rows_affected();
        if inserted == 1 {
            return Ok(PutComponent::Inserted);
        }
        if let Some(existing) = self.get_component(&record.digest).await? {
            return Ok(PutComponent::Existing(existing));
        }
        let row = sqlx::query(
            "SELECT digest, name, version, size, capabilities, admitted_at, admitted_by \
             FROM plugin_components WHERE name = $1 AND version = $2 LIMIT 1",
        )
        .bind(&record.name)
        .bind(&record.version)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        match row {
            Some(row) => Ok(PutComponent::VersionTaken(component_from_row(&row)?)),
            None => Err(StoreError::Conflict(format!(
                "component {} conflicted but no conflicting row exists",
                record.digest
            ))),
        }
    }

    async fn get_component(&self, digest: &str) -> Result<Option<ComponentRecord>, StoreError> {
        sqlx::query(
            "SELECT digest, name, version, size, capabilities, admitted_at, admitted_by \
             FROM plugin_components WHERE digest = $1",
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
        sqlx::query_scalar("SELECT bytes FROM plugin_components WHERE digest = $1")
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
             FROM plugin_components WHERE $1::text IS NULL OR name = $1 \
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
impl ReleaseStore for PgStore {
    async fn get_release(&self, name: &str) -> Result<Option<Release>, StoreError> {
        let doc: Option<Json<Release>> =
            sqlx::query_scalar("SELECT release FROM plugin_releases WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?;
        Ok(doc.map(|d| d.0))
    }

    async fn list_releases(&self) -> Result<Vec<Release>, StoreError> {
        let docs: Vec<Json<Release>> =
            sqlx::query_scalar("SELECT release FROM plugin_releases ORDER BY name")
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?;
        Ok(docs.into_iter().map(|d| d.0).collect())
    }

    async fn swap_release(
        &self,
        expected: i64,
        next: &Release,
        audit: &ReleaseAudit,
    ) -> Result<bool, StoreError> {
        let mut tx = begin(&self.pool).await?;
        let written = if expected == 0 {
            sqlx::query(
                "INSERT INTO plugin_releases (name, generation, release, updated_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
            )
            .bind(&next.name)
            .bind(next.generation)
            .bind(Json(next))
            .bind(next.updated_at)
            .execute(&mut *tx)
            .await
        } else {
            sqlx::query(
                "UPDATE plugin_releases SET generation = $2, release = $3, updated_at = $4 \
                 WHERE name = $1 AND generation = $5",
            )
            .bind(&next.name)
            .bind(next.generation)
            .bind(Json(next))
            .bind(next.updated_at)
            .bind(expected)
            .execute(&mut *tx)
            .await
        }
        .map_err(db_err)?
        .rows_affected();
        if written != 1 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO plugin_release_history (name, generation, at, audit) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&audit.name)
        .bind(audit.generation)
        .bind(audit.at)
        .bind(Json(audit))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        // Delivered at commit, to every replica listening.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(RELEASE_CHANNEL)
            .bind(&next.name)
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
        let docs: Vec<Json<ReleaseAudit>> = sqlx::query_scalar(
            "SELECT audit FROM plugin_release_history WHERE name = $1 \
             ORDER BY generation DESC LIMIT $2",
        )
        .bind(name)
        .bind(i64::from(limit.min(1000)))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(docs.into_iter().map(|d| d.0).collect())
    }
}

fn api_key_from_row(row: &PgRow) -> Result<ApiKeyRecord, StoreError> {
    Ok(ApiKeyRecord {
        id: get(row, "id")?,
        prefix: get(row, "prefix")?,
        secret_hash: get(row, "secret_hash")?,
        tenant: get(row, "tenant")?,
        name: get(row, "name")?,
        scopes: get(row, "scopes")?,
        created_at: get(row, "created_at")?,
        created_by: get(row, "created_by")?,
        expires_at: get(row, "expires_at")?,
        revoked_at: get(row, "revoked_at")?,
    })
}

const API_KEY_COLUMNS: &str =
    "id, prefix, secret_hash, tenant, name, scopes, created_at, created_by, expires_at, revoked_at";

#[async_trait::async_trait]
impl ApiKeyStore for PgStore {
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_keys (id, prefix, secret_hash, tenant, name, scopes, created_at, \
             created_by, expires_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(key.id)
        .bind(&key.prefix)
        .bind(&key.secret_hash)
        .bind(&key.tenant)
        .bind(&key.name)
        .bind(&key.scopes)
        .bind(key.created_at)
        .bind(&key.created_by)
        .bind(key.expires_at)
        .bind(key.revoked_at)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn find_api_key(&self, prefix: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE prefix = $1"
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
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE $1::text IS NULL OR tenant = $1 \
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
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 \
             RETURNING {API_KEY_COLUMNS}"
        )))
        .bind(now)
        .bind(id)
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
    use super::*;

    /// A store on `db` with only the migrations numbered below `first_missing` applied.
    async fn migrated_before(
        db: &crate::storage::testing::PgTestDb,
        first_missing: &str,
    ) -> PgStore {
        let dir = tempfile::tempdir().unwrap();
        let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
        for entry in std::fs::read_dir(&all).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if name.as_str() < first_missing {
                std::fs::copy(&path, dir.path().join(&name)).unwrap();
            }
        }
        let store = PgStore::connect(db.url(), &StoreOptions::default())
            .await
            .unwrap();
        sqlx::migrate::Migrator::new(dir.path())
            .await
            .unwrap()
            .run(&store.pool)
            .await
            .unwrap();
        store
    }

    /// A loopback relay to PostgreSQL for one test: it counts the `BEGIN` statements it
    /// forwards from the client, and holds the server's answers while `held` is true (then
    /// delivers them).
    struct Relay {
        port: u16,
        held: tokio::sync::watch::Sender<bool>,
        forwarded: tokio::sync::watch::Sender<u64>,
    }

    async fn relay(upstream: String) -> Relay {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (held, _) = tokio::sync::watch::channel(false);
        let (forwarded, _) = tokio::sync::watch::channel(0u64);
        let (hold, count) = (held.clone(), forwarded.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = server.into_split();
                let count = count.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                        if to_server.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        let begins = buf[..n].windows(5).filter(|w| w == b"BEGIN").count();
                        count.send_modify(|c| *c += begins as u64);
                    }
                });
                let mut held = hold.subscribe();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n @ 1..) = from_server.read(&mut buf).await {
                        if held.wait_for(|held| !held).await.is_err()
                            || to_client.write_all(&buf[..n]).await.is_err()
                        {
                            break;
                        }
                    }
                });
            }
        });
        Relay {
            port,
            held,
            forwarded,
        }
    }

    /// A caller dropped after its `BEGIN` reached the server, before the answer came back (a
    /// client gone, a request timeout), leaves no transaction open on the pooled connection
    /// (see [`begin`]). The answer is held by a relay until the caller is gone; then the same
    /// (only) connection runs a statement that is the first of its own transaction only when
    /// none was left open: `now()`, the transaction's start, equals the statement's start.
    #[tokio::test]
    async fn a_begin_dropped_before_the_server_answers_leaves_no_transaction_open() {
        let db = crate::storage::testing::PgTestDb::create().await.unwrap();
        let direct = PgConnectOptions::from_str(db.url()).unwrap();
        let relay = relay(format!("{}:{}", direct.get_host(), direct.get_port())).await;
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(direct.clone().host("127.0.0.1").port(relay.port))
            .await
            .unwrap();
        // A simple query (one message): with a prepared statement's several messages the
        // two clocks differ even in a transaction of its own.
        let alone = |pool: PgPool| async move {
            sqlx::raw_sql("SELECT now() = statement_timestamp()")
                .fetch_one(&pool)
                .await
                .unwrap()
                .get::<bool, _>(0)
        };
        assert!(alone(pool.clone()).await, "no transaction before the test");
        // Back in the pool (a released connection is pinged first), then the answers held.
        tokio::time::timeout(Duration::from_secs(10), async {
            while pool.num_idle() == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the connection did not come back to the pool within 10 s");
        relay.held.send_replace(true);
        let mut forwarded = relay.forwarded.subscribe();
        let before = *forwarded.borrow_and_update();
        let begun = begin(&pool);
        tokio::select! {
            _ = begun => panic!("the begin finished while the server's answer was held"),
            sent = forwarded.wait_for(|&begins| begins > before) => drop(sent.unwrap()),
        }
        // The caller is gone (`begun` dropped by the select); now the answer comes back.
        relay.held.send_replace(false);
        assert!(
            alone(pool.clone()).await,
            "the dropped begin left the pooled connection inside a transaction"
        );
        pool.close().await;
        db.drop_db().await.unwrap();
    }

    /// The runbook's procedure for a large database (RUNBOOK.md, "Data retention"): at
    /// migration 0005, the retention indexes are built CONCURRENTLY by
    ///
    /// psql -X -v ON_ERROR_STOP=1 "$DATABASE_URL" -f deploy/sql/retention-indexes.postgres.sql
    /// weir migrate
    ///
    /// (the first line run here exactly so, through bash; the second is `store.migrate()`,
    /// which is what `weir migrate` runs), and migration 0006 then succeeds around them.
    #[tokio::test]
    async fn retention_indexes_can_be_built_concurrently_before_migration_0006() {
        let db = crate::storage::testing::PgTestDb::create().await.unwrap();
        let store = migrated_before(&db, "0006").await;
        let host = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let procedure = "psql -X -v ON_ERROR_STOP=1 \"$DATABASE_URL\" -f \
                         deploy/sql/retention-indexes.postgres.sql";
        let out = std::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", procedure])
            .current_dir(host.parent().unwrap())
            .env("DATABASE_URL", db.url())
            .output()
            .expect("bash and psql (RUNBOOK.md's tools)");
        assert!(
            out.status.success(),
            "{procedure}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let valid: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE c.relname IN ('outbox_events_published_at_idx', \
             'inbox_messages_received_at_idx') AND i.indisvalid",
        )
        .fetch_one(&store.pool)
        .await
        .unwrap();
        assert_eq!(
            valid, 2,
            "both indexes built and valid before the migration"
        );
        store.migrate().await.unwrap();
        assert_eq!(store.events_purged_through("default").await.unwrap(), 0);
        store.close().await;
        db.drop_db().await.unwrap();
    }

    /// Rows written before migration 0005 (tenants) belong to the default tenant afterwards,
    /// and an idempotency key in flight across the upgrade keeps working in its new scope.
    #[tokio::test]
    async fn upgrading_moves_existing_rows_to_the_default_tenant() {
        let db = crate::storage::testing::PgTestDb::create().await.unwrap();
        let store = migrated_before(&db, "0005").await;
        let id = Uuid::now_v7();
        let now = Utc::now();
        sqlx::query(
            "INSERT INTO orders (id, customer_id, currency, status, subtotal, discount, tax, \
             total, plugin_name, plugin_version, plugin_digest, created_at, updated_at) \
             VALUES ($1, 'cus_old', 'EUR', 'placed', 100, 0, 0, 100, 'orders', '0.1.0', 'ab', $2, $2)",
        )
        .bind(id)
        .bind(now)
        .execute(&store.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO outbox_events (id, event_type, source, subject, occurred_at, data) \
             VALUES ($1, 'order.placed', '/weir/orders', $2, $3, '{}')",
        )
        .bind(Uuid::now_v7())
        .bind(id.to_string())
        .bind(now)
        .execute(&store.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO idempotency_keys (key, request_hash, state, locked_until, created_at) \
             VALUES ('POST /v1/orders:in-flight', 'h1', 'in_progress', $1, $2)",
        )
        .bind(now + chrono::TimeDelta::minutes(5))
        .bind(now)
        .execute(&store.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO inbox_messages (consumer, message_id, received_at) \
             VALUES ('payments', 'src m-1', $1)",
        )
        .bind(now)
        .execute(&store.pool)
        .await
        .unwrap();

        store.migrate().await.unwrap();

        assert_eq!(
            store.get_order(id).await.unwrap().unwrap().tenant,
            "default"
        );
        let filter = OrderFilter {
            tenant: "default".to_owned(),
            ..OrderFilter::default()
        };
        assert_eq!(store.list_orders(&filter).await.unwrap().len(), 1);
        let feed = store.list_events("default", 0, 10).await.unwrap();
        assert_eq!((feed.len(), feed[0].tenant.as_str()), (1, "default"));
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
        .fetch_all(&store.pool)
        .await
        .unwrap();
        assert!(tenants.iter().all(|t| t == "default"), "{tenants:?}");
        store.close().await;
        db.drop_db().await.unwrap();
    }

    #[test]
    fn transient_sqlstates() {
        assert!(is_transient_pg_code("08006")); // connection_failure
        assert!(is_transient_pg_code("40001")); // serialization_failure
        assert!(is_transient_pg_code("40P01")); // deadlock_detected
        assert!(is_transient_pg_code("53300")); // too_many_connections
        assert!(is_transient_pg_code("57P01")); // admin_shutdown
        assert!(!is_transient_pg_code("23505")); // unique_violation
        assert!(!is_transient_pg_code("42P01")); // undefined_table
    }

    #[tokio::test]
    async fn debug_redacts_the_password() {
        // Connecting fails fast (nothing listens on port 1); the error must not leak it.
        let opts = StoreOptions {
            acquire_timeout: Duration::from_millis(500),
            ..StoreOptions::default()
        };
        let err = PgStore::connect("postgres://weir:s3cret@127.0.0.1:1/weir", &opts)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ConnectError::Open(e) if e.is_transient()),
            "{err:?}"
        );
        assert!(!format!("{err:?}").contains("s3cret"));
    }
}
