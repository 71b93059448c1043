//! The backend-agnostic suite: every test is a function of `Arc<dyn Store>` and runs against a
//! SQLite database in a temporary directory and a fresh PostgreSQL database.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde_json::json;
use uuid::{NoContext, Timestamp, Uuid};

use super::*;
use weir_core::domain::release::{Canary, Release, ReleaseAudit, Shadow};
use weir_core::domain::stock::Shortage;
use weir_core::ports::{ComponentRecord, CreateOutcome, PutComponent};

const LOCK_TTL: Duration = Duration::from_secs(30);
const RETENTION: Duration = Duration::from_secs(24 * 3600);

/// A fixed instant with microsecond precision (what both backends keep).
fn t0() -> DateTime<Utc> {
    Utc.timestamp_opt(1_790_000_000, 123_456_000).unwrap()
}

fn at(seconds: i64) -> DateTime<Utc> {
    t0() + TimeDelta::seconds(seconds)
}

/// A UUIDv7 for the instant `t0 + seconds`: later ids sort after earlier ones.
fn order_id(seconds: u64) -> Uuid {
    Uuid::new_v7(Timestamp::from_unix(NoContext, 1_790_000_000 + seconds, 0))
}

fn order(id: Uuid, customer: &str, created: DateTime<Utc>) -> Order {
    let mut metadata = serde_json::Map::new();
    metadata.insert("channel".to_owned(), json!("web"));
    metadata.insert("tags".to_owned(), json!(["a", "b"]));
    Order {
        id,
        tenant: "default".to_owned(),
        customer_id: customer.to_owned(),
        currency: "EUR".to_owned(),
        status: OrderStatus::Placed,
        lines: vec![
            OrderLine {
                sku: "SKU-1".to_owned(),
                quantity: 2,
                unit_price: 1_000,
                line_total: 2_000,
            },
            OrderLine {
                sku: "SKU-2".to_owned(),
                quantity: u32::MAX,
                unit_price: 1,
                line_total: i64::from(u32::MAX),
            },
        ],
        subtotal: 2_000 + i64::from(u32::MAX),
        discount: 100,
        tax: 50,
        total: 1_950 + i64::from(u32::MAX),
        metadata,
        plugin: PluginRef {
            name: "orders".to_owned(),
            version: "1.2.3".to_owned(),
            digest: "ab".repeat(32),
        },
        version: 1,
        created_at: created,
        updated_at: created,
    }
}

fn event(order_id: Uuid, event_type: &str, occurred_at: DateTime<Utc>) -> NewEvent {
    NewEvent {
        id: Uuid::new_v4(),
        event_type: event_type.to_owned(),
        source: "/weir/orders".to_owned(),
        subject: order_id.to_string(),
        tenant: "default".to_owned(),
        occurred_at,
        data: json!({ "order_id": order_id, "total": 1950, "nested": { "ok": true } }),
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()),
        tracestate: None,
    }
}

fn response(status: u16, body: &str) -> StoredResponse {
    StoredResponse {
        status,
        body: body.as_bytes().to_vec(),
        headers: vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("x-dup".to_owned(), "1".to_owned()),
            ("x-dup".to_owned(), "2".to_owned()),
        ],
    }
}

fn product(sku: &str, price: i64) -> Product {
    Product {
        sku: sku.to_owned(),
        name: format!("Product {sku}"),
        unit_price: price,
        currency: "EUR".to_owned(),
        stock: 10,
        reserved: 0,
        updated_at: t0(),
    }
}

/// Puts the products [`order`] uses in the catalog, with (nearly) unlimited units on hand.
async fn stocked(store: &Arc<dyn Store>) {
    for sku in ["SKU-1", "SKU-2"] {
        let mut p = product(sku, 1);
        p.stock = 1 << 60;
        store.upsert_product(&p).await.unwrap();
    }
}

async fn begin(
    store: &Arc<dyn Store>,
    key: &str,
    hash: &str,
    now: DateTime<Utc>,
) -> IdempotencyBegin {
    store
        .idempotency_begin("default", key, hash, now, LOCK_TTL, RETENTION)
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// The suite.

async fn migrate_twice_is_idempotent(store: Arc<dyn Store>) {
    // The harness migrated once already.
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
    assert!(["sqlite", "postgres"].contains(&store.backend()));
    assert_eq!(store.count_rows().await.unwrap(), RowCounts::default());
}

async fn create_get_and_list_with_cursor_and_filters(store: Arc<dyn Store>) {
    stocked(&store).await;
    // Six orders, one second apart, alternating customers.
    let mut created = Vec::new();
    for i in 0..6_u64 {
        let customer = if i % 2 == 0 { "alice" } else { "bob" };
        let record = order(order_id(i), customer, at(i as i64));
        store.create_order(&record, &[], None).await.unwrap();
        created.push(record);
    }

    let first = &created[0];
    assert_eq!(
        store.get_order(first.id).await.unwrap().as_ref(),
        Some(first)
    );
    assert_eq!(store.get_order(Uuid::now_v7()).await.unwrap(), None);

    // Newest first, paged with the cursor.
    let mut seen = Vec::new();
    let mut filter = OrderFilter {
        limit: 4,
        ..OrderFilter::default()
    };
    loop {
        let page = store.list_orders(&filter).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 4);
        filter.before_id = Some(page.last().unwrap().id);
        seen.extend(page);
    }
    let expected: Vec<Order> = created.iter().rev().cloned().collect();
    assert_eq!(seen, expected, "all orders, newest first, with their lines");

    // Customer filter plus cursor.
    let alice = store
        .list_orders(&OrderFilter {
            customer_id: Some("alice".to_owned()),
            limit: 10,
            before_id: Some(created[4].id),
            ..OrderFilter::default()
        })
        .await
        .unwrap();
    let ids: Vec<Uuid> = alice.iter().map(|o| o.id).collect();
    assert_eq!(ids, vec![created[2].id, created[0].id]);

    // Status filter.
    let outcome = store
        .transition_order(created[3].id, 1, OrderStatus::Paid, &[], at(100))
        .await
        .unwrap();
    assert!(matches!(outcome, TransitionOutcome::Applied(_)));
    let paid = store
        .list_orders(&OrderFilter {
            status: Some(OrderStatus::Paid),
            ..OrderFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(paid.len(), 1);
    assert_eq!(paid[0].id, created[3].id);
    assert_eq!(paid[0].lines, created[3].lines);
    let bob_placed = store
        .list_orders(&OrderFilter {
            customer_id: Some("bob".to_owned()),
            status: Some(OrderStatus::Placed),
            ..OrderFilter::default()
        })
        .await
        .unwrap();
    let ids: Vec<Uuid> = bob_placed.iter().map(|o| o.id).collect();
    assert_eq!(ids, vec![created[5].id, created[1].id]);

    // A zero limit is an empty page.
    let empty = store
        .list_orders(&OrderFilter {
            limit: 0,
            ..OrderFilter::default()
        })
        .await
        .unwrap();
    assert!(empty.is_empty());

    // A duplicate id is a conflict.
    let err = store.create_order(first, &[], None).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert!(!err.is_transient());
}

async fn transition_with_stale_version_is_stale(store: Arc<dyn Store>) {
    stocked(&store).await;
    let record = order(order_id(1), "alice", t0());
    store.create_order(&record, &[], None).await.unwrap();

    let paid_event = event(record.id, "order.paid", at(5));
    let outcome = store
        .transition_order(record.id, 1, OrderStatus::Paid, &[paid_event], at(5))
        .await
        .unwrap();
    let TransitionOutcome::Applied(updated) = outcome else {
        panic!("expected Applied, got {outcome:?}");
    };
    assert_eq!(updated.status, OrderStatus::Paid);
    assert_eq!(updated.version, 2);
    assert_eq!(updated.updated_at, at(5));
    assert_eq!(updated.created_at, record.created_at);
    assert_eq!(updated.lines, record.lines);
    assert_eq!(store.get_order(record.id).await.unwrap(), Some(updated));

    // The same expected version again: someone else already moved it.
    let stale_event = event(record.id, "order.cancelled", at(6));
    let outcome = store
        .transition_order(record.id, 1, OrderStatus::Cancelled, &[stale_event], at(6))
        .await
        .unwrap();
    assert_eq!(outcome, TransitionOutcome::Stale);
    // A missing order is stale too.
    let outcome = store
        .transition_order(Uuid::now_v7(), 1, OrderStatus::Paid, &[], at(6))
        .await
        .unwrap();
    assert_eq!(outcome, TransitionOutcome::Stale);

    let stored = store.get_order(record.id).await.unwrap().unwrap();
    assert_eq!(stored.status, OrderStatus::Paid);
    assert_eq!(stored.version, 2);
    // Only the applied transition wrote its event.
    assert_eq!(store.count_rows().await.unwrap().outbox_events, 1);
    let events = store.list_events("default", 0, 10).await.unwrap();
    assert_eq!(events[0].event_type, "order.paid");
}

async fn idempotency_state_machine(store: Arc<dyn Store>) {
    // Absent -> Started; a second attempt while locked -> InProgress until the lock expires.
    assert_eq!(
        begin(&store, "k1", "h1", t0()).await,
        IdempotencyBegin::Started
    );
    assert_eq!(
        begin(&store, "k1", "h1", at(10)).await,
        IdempotencyBegin::InProgress {
            retry_after: Duration::from_secs(20)
        }
    );
    assert_eq!(
        begin(&store, "k1", "h1", at(29) + TimeDelta::milliseconds(900)).await,
        IdempotencyBegin::InProgress {
            retry_after: Duration::from_secs(1)
        },
        "retry_after is at least one second"
    );
    // Same key, different request.
    assert_eq!(
        begin(&store, "k1", "other", at(10)).await,
        IdempotencyBegin::Mismatch
    );

    // Completed -> Replay, byte for byte; completing twice is a conflict.
    let stored = response(422, "{\"code\":\"INVALID\"}");
    store.idempotency_complete("k1", &stored).await.unwrap();
    assert_eq!(
        begin(&store, "k1", "h1", at(11)).await,
        IdempotencyBegin::Replay(stored.clone())
    );
    assert_eq!(
        begin(&store, "k1", "other", at(11)).await,
        IdempotencyBegin::Mismatch
    );
    let err = store.idempotency_complete("k1", &stored).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    // Release leaves a completed key alone.
    store.idempotency_release("k1").await.unwrap();
    assert_eq!(
        begin(&store, "k1", "h1", at(12)).await,
        IdempotencyBegin::Replay(stored)
    );

    // Past retention the key is forgotten, whatever the request.
    let later = t0() + TimeDelta::from_std(RETENTION).unwrap() + TimeDelta::seconds(1);
    assert_eq!(
        begin(&store, "k1", "h2", later).await,
        IdempotencyBegin::Started
    );
    assert_eq!(
        begin(&store, "k1", "h2", later + TimeDelta::seconds(1)).await,
        IdempotencyBegin::InProgress {
            retry_after: Duration::from_secs(29)
        }
    );

    // The holder crashed: once its lock expires the key is taken over, exactly once.
    assert_eq!(
        begin(&store, "k2", "h", t0()).await,
        IdempotencyBegin::Started
    );
    assert_eq!(
        begin(&store, "k2", "h", at(31)).await,
        IdempotencyBegin::Started
    );
    assert_eq!(
        begin(&store, "k2", "h", at(32)).await,
        IdempotencyBegin::InProgress {
            retry_after: Duration::from_secs(29)
        }
    );

    // Release lets a retry start at once.
    store.idempotency_release("k2").await.unwrap();
    assert_eq!(
        begin(&store, "k2", "h", at(33)).await,
        IdempotencyBegin::Started
    );

    // Purge forgets keys created before the cutoff, in batches of at most `limit`.
    let purge = |before| {
        let store = store.clone();
        async move {
            store
                .purge_expired(Expiring::IdempotencyKeys, before, 1)
                .await
                .unwrap()
        }
    };
    assert_eq!(purge(at(1)).await, 0);
    assert_eq!(purge(later + TimeDelta::seconds(10)).await, 1);
    assert_eq!(purge(later + TimeDelta::seconds(10)).await, 1);
    assert_eq!(purge(later + TimeDelta::seconds(10)).await, 0);
    assert_eq!(
        begin(&store, "k1", "h1", at(40)).await,
        IdempotencyBegin::Started
    );

    // Completing a key nobody began is a conflict, and writes nothing.
    let err = store
        .idempotency_complete("never-begun", &response(200, "{}"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
}

async fn concurrent_begins_start_exactly_once(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .idempotency_begin(
                        "default",
                        "POST /v1/orders:race",
                        "h",
                        t0(),
                        LOCK_TTL,
                        RETENTION,
                    )
                    .await
            })
        })
        .collect();
    let mut started = 0;
    for task in tasks {
        match task.await.unwrap().unwrap() {
            IdempotencyBegin::Started => started += 1,
            IdempotencyBegin::InProgress { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(started, 1);

    // The same race on an expired lock: exactly one takes it over.
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .idempotency_begin(
                        "default",
                        "POST /v1/orders:race",
                        "h",
                        at(60),
                        LOCK_TTL,
                        RETENTION,
                    )
                    .await
            })
        })
        .collect();
    let mut started = 0;
    for task in tasks {
        if task.await.unwrap().unwrap() == IdempotencyBegin::Started {
            started += 1;
        }
    }
    assert_eq!(started, 1);
}

async fn create_order_is_atomic(store: Arc<dyn Store>) {
    stocked(&store).await;
    let first = order(order_id(1), "alice", t0());
    let first_event = event(first.id, "order.placed", t0());
    assert_eq!(
        begin(&store, "key-a", "ha", t0()).await,
        IdempotencyBegin::Started
    );
    let created = response(201, "{\"id\":1}");
    store
        .create_order(
            &first,
            std::slice::from_ref(&first_event),
            Some(("key-a", &created)),
        )
        .await
        .unwrap();
    let baseline = store.count_rows().await.unwrap();
    assert_eq!(
        baseline,
        RowCounts {
            orders: 1,
            order_lines: 2,
            outbox_events: 1,
            idempotency_completed: 1,
            idempotency_keys: 1,
        }
    );
    assert_eq!(
        begin(&store, "key-a", "ha", at(1)).await,
        IdempotencyBegin::Replay(created.clone())
    );

    // The second order fails on its last event (a duplicate event id): nothing of it stays.
    let second = order(order_id(2), "bob", at(2));
    assert_eq!(
        begin(&store, "key-b", "hb", at(2)).await,
        IdempotencyBegin::Started
    );
    let events = [event(second.id, "order.placed", at(2)), first_event.clone()];
    let err = store
        .create_order(&second, &events, Some(("key-b", &created)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    // Only key-b's claim (in progress) is new.
    let claimed = RowCounts {
        idempotency_keys: baseline.idempotency_keys + 1,
        ..baseline
    };
    assert_eq!(store.count_rows().await.unwrap(), claimed);
    assert_eq!(store.get_order(second.id).await.unwrap(), None);
    // The key was not completed: still held by the failed attempt.
    assert!(matches!(
        begin(&store, "key-b", "hb", at(3)).await,
        IdempotencyBegin::InProgress { .. }
    ));

    // A key that is not in progress (never begun, or already completed) aborts the order.
    let err = store
        .create_order(&second, &events[..1], Some(("never-begun", &created)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let err = store
        .create_order(&second, &events[..1], Some(("key-a", &created)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(store.count_rows().await.unwrap(), claimed);

    // The retry after release succeeds.
    store.idempotency_release("key-b").await.unwrap();
    assert_eq!(
        begin(&store, "key-b", "hb", at(4)).await,
        IdempotencyBegin::Started
    );
    store
        .create_order(&second, &events[..1], Some(("key-b", &created)))
        .await
        .unwrap();
    assert_eq!(
        store.count_rows().await.unwrap(),
        RowCounts {
            orders: 2,
            order_lines: 4,
            outbox_events: 2,
            idempotency_completed: 2,
            idempotency_keys: 2,
        }
    );
}

/// One order of `quantity` units of `sku` (a single line).
fn order_of(i: u64, sku: &str, quantity: u32) -> Order {
    let mut o = order(order_id(i), "carol", at(i as i64));
    o.lines = vec![OrderLine {
        sku: sku.to_owned(),
        quantity,
        unit_price: 100,
        line_total: 100 * i64::from(quantity),
    }];
    o
}

/// (available, reserved) of `sku`.
async fn units(store: &Arc<dyn Store>, sku: &str) -> (i64, i64) {
    let p = store.get_product(sku).await.unwrap().unwrap();
    (p.stock, p.reserved)
}

async fn reservations_never_oversell_and_settle_once(store: Arc<dyn Store>) {
    let mut p = product("LIM-1", 100);
    p.stock = 10;
    store.upsert_product(&p).await.unwrap();

    // 50 orders of one unit race for 10.
    let orders: Vec<Order> = (0..50_u64).map(|i| order_of(i, "LIM-1", 1)).collect();
    let tasks: Vec<_> = orders
        .iter()
        .map(|o| {
            let (store, o) = (store.clone(), o.clone());
            tokio::spawn(async move { store.create_order(&o, &[], None).await.unwrap() })
        })
        .collect();
    let mut created = Vec::new();
    for (o, task) in orders.iter().zip(tasks) {
        match task.await.unwrap() {
            CreateOutcome::Created => created.push(o.id),
            CreateOutcome::Short(Shortage::Insufficient { sku, wanted }) => {
                assert_eq!((sku.as_str(), wanted), ("LIM-1", 1));
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(created.len(), 10);
    assert_eq!(units(&store, "LIM-1").await, (0, 10));
    assert_eq!(store.count_rows().await.unwrap().orders, 10);

    // Unknown and short skus write nothing, whatever else the order holds.
    let mut two = order_of(100, "LIM-1", 1);
    two.lines
        .insert(0, order_of(0, "AAA-0", 1).lines[0].clone());
    assert_eq!(
        store.create_order(&two, &[], None).await.unwrap(),
        CreateOutcome::Short(Shortage::UnknownSku("AAA-0".to_owned()))
    );
    assert_eq!(store.count_rows().await.unwrap().orders, 10);
    assert_eq!(units(&store, "LIM-1").await, (0, 10));
    // With its event and its idempotency key too: a shortage is found after the other writes
    // of the transaction (the stock is reserved last), and none of them stays; the key stays
    // in progress, for the use-case to complete with the refusal.
    let before = store.count_rows().await.unwrap();
    assert_eq!(
        begin(&store, "short-key", "hs", at(70)).await,
        IdempotencyBegin::Started
    );
    let short = order_of(101, "LIM-1", 1);
    let placed = event(short.id, "order.placed", at(70));
    assert_eq!(
        store
            .create_order(&short, &[placed], Some(("short-key", &response(201, "{}"))))
            .await
            .unwrap(),
        CreateOutcome::Short(Shortage::Insufficient {
            sku: "LIM-1".to_owned(),
            wanted: 1
        })
    );
    assert_eq!(
        store.count_rows().await.unwrap(),
        RowCounts {
            idempotency_keys: before.idempotency_keys + 1,
            ..before
        }
    );
    assert_eq!(store.get_order(short.id).await.unwrap(), None);
    assert!(matches!(
        begin(&store, "short-key", "hs", at(71)).await,
        IdempotencyBegin::InProgress { .. }
    ));
    assert_eq!(units(&store, "LIM-1").await, (0, 10));

    // The operator counts 12 on hand: the 10 reserved stay reserved.
    p.stock = 12;
    let read = store.upsert_product(&p).await.unwrap();
    assert_eq!((read.stock, read.reserved), (2, 10));

    // Cancelling releases once: again (cancelled -> cancelled) and through the inbox path
    // nothing more comes back.
    let a = store.get_order(created[0]).await.unwrap().unwrap();
    let cancelled = match store
        .transition_order(a.id, 1, OrderStatus::Cancelled, &[], at(60))
        .await
        .unwrap()
    {
        TransitionOutcome::Applied(o) => o,
        other => panic!("{other:?}"),
    };
    assert_eq!(units(&store, "LIM-1").await, (3, 9));
    store
        .transition_order(a.id, cancelled.version, OrderStatus::Cancelled, &[], at(61))
        .await
        .unwrap();
    store
        .transition_order_once(
            "default",
            "payments",
            "m-x",
            a.id,
            cancelled.version + 1,
            OrderStatus::Cancelled,
            &[],
            at(62),
        )
        .await
        .unwrap();
    assert_eq!(units(&store, "LIM-1").await, (3, 9));

    // Shipping consumes: off the reservation and off the count on hand.
    let b = store.get_order(created[1]).await.unwrap().unwrap();
    store
        .transition_order(b.id, 1, OrderStatus::Paid, &[], at(63))
        .await
        .unwrap();
    assert_eq!(units(&store, "LIM-1").await, (3, 9), "paid still holds");
    store
        .transition_order(b.id, 2, OrderStatus::Shipped, &[], at(64))
        .await
        .unwrap();
    assert_eq!(units(&store, "LIM-1").await, (3, 8));
    let on_hand = store.list_products(None, 10).await.unwrap()[0].clone();
    assert_eq!(
        on_hand.stock + on_hand.reserved,
        11,
        "12 on hand, 1 shipped"
    );
}

async fn setting_the_count_on_hand_keeps_concurrent_reservations(store: Arc<dyn Store>) {
    let mut p = product("CNT-1", 100);
    p.stock = 1_000;
    store.upsert_product(&p).await.unwrap();
    // Reservations and count updates interleave; every reservation survives every update.
    let mut tasks = Vec::new();
    for i in 0..40_u64 {
        let store = store.clone();
        let mut p = p.clone();
        tasks.push(tokio::spawn(async move {
            if i % 4 == 0 {
                p.stock = 500;
                store.upsert_product(&p).await.unwrap();
                false
            } else {
                store
                    .create_order(&order_of(i, "CNT-1", 3), &[], None)
                    .await
                    .unwrap()
                    == CreateOutcome::Created
            }
        }));
    }
    let mut reserved = 0;
    for task in tasks {
        if task.await.unwrap() {
            reserved += 3;
        }
    }
    assert_eq!(reserved, 90, "30 orders of 3 units all fit in 500");
    let (available, held) = units(&store, "CNT-1").await;
    assert_eq!(held, reserved);
    assert_eq!(available, 500 - reserved);
}

async fn products_upsert_list_and_seed(store: Arc<dyn Store>) {
    assert!(store.list_products(None, 100).await.unwrap().is_empty());
    let seed = [product("B-2", 200), product("A-1", 100)];
    assert!(store.seed_products_if_empty(&seed).await.unwrap());
    assert!(
        !store
            .seed_products_if_empty(&[product("C-3", 1)])
            .await
            .unwrap()
    );
    let listed = store.list_products(None, 100).await.unwrap();
    assert_eq!(
        listed,
        vec![seed[1].clone(), seed[0].clone()],
        "ordered by sku"
    );

    let mut changed = product("A-1", 150);
    changed.stock = 3;
    changed.updated_at = at(9);
    assert_eq!(store.upsert_product(&changed).await.unwrap(), changed);
    assert_eq!(
        store.get_product("A-1").await.unwrap(),
        Some(changed.clone())
    );
    let fresh = product("0-0", 5);
    assert_eq!(store.upsert_product(&fresh).await.unwrap(), fresh);
    assert_eq!(store.get_product("missing").await.unwrap(), None);
    let skus = |after: Option<&'static str>, limit| {
        let store = store.clone();
        async move {
            store
                .list_products(after, limit)
                .await
                .unwrap()
                .into_iter()
                .map(|p| p.sku)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(skus(None, 100).await, ["0-0", "A-1", "B-2"]);
    // Pages: after a sku, at most `limit`, neither overlapping nor skipping.
    assert_eq!(skus(None, 2).await, ["0-0", "A-1"]);
    assert_eq!(skus(Some("A-1"), 2).await, ["B-2"]);
    assert_eq!(skus(Some("A"), 1).await, ["A-1"]);
    assert!(skus(Some("B-2"), 10).await.is_empty());
    assert!(skus(None, 0).await.is_empty());
}

/// Retention deletes only expired rows, oldest first, at most `limit` per call; published
/// events only (never an unpublished one, however old), and the feed learns how far each
/// tenant's events were deleted.
async fn retention_purges_expired_rows_in_bounded_batches(store: Arc<dyn Store>) {
    stocked(&store).await;
    // Six events of acme (published at 10..15 s), two of bravo (published at 20, 21 s), one
    // old unpublished event of acme.
    for (i, tenant) in [
        "acme", "acme", "acme", "acme", "acme", "acme", "bravo", "bravo", "acme",
    ]
    .into_iter()
    .enumerate()
    {
        let mut o = order(Uuid::now_v7(), "alice", at(0));
        o.tenant = tenant.to_owned();
        let mut e = event(o.id, "order.placed", at(0));
        e.tenant = tenant.to_owned();
        store.create_order(&o, &[e.clone()], None).await.unwrap();
        if i < 8 {
            let when = if tenant == "acme" { 10 + i } else { 14 + i };
            store
                .mark_published(&[e.id], at(when as i64))
                .await
                .unwrap();
        }
    }
    let feed = |tenant: &'static str| {
        let store = store.clone();
        async move {
            store
                .list_events(tenant, 0, 100)
                .await
                .unwrap()
                .into_iter()
                .map(|e| (e.seq, e.published_at.is_some()))
                .collect::<Vec<_>>()
        }
    };
    let acme = feed("acme").await;
    let bravo = feed("bravo").await;
    assert_eq!((acme.len(), bravo.len()), (7, 2));
    assert_eq!(store.events_purged_through("acme").await.unwrap(), 0);

    let purge = |before, limit| {
        let store = store.clone();
        async move {
            store
                .purge_expired(Expiring::PublishedEvents, before, limit)
                .await
                .unwrap()
        }
    };
    // Nothing was published before 10 s.
    assert_eq!(purge(at(10), 100).await, 0);
    // Published before 13 s: acme's first three, two per batch, oldest first.
    assert_eq!(purge(at(13), 2).await, 2);
    assert_eq!(feed("acme").await, acme[2..].to_vec());
    assert_eq!(
        store.events_purged_through("acme").await.unwrap(),
        acme[1].0
    );
    assert_eq!(purge(at(13), 2).await, 1);
    assert_eq!(purge(at(13), 2).await, 0);
    assert_eq!(
        store.events_purged_through("acme").await.unwrap(),
        acme[2].0
    );
    assert_eq!(store.events_purged_through("bravo").await.unwrap(), 0);
    // Everything published long ago: the rest of acme's and bravo's, never the unpublished
    // one, and each tenant's mark moves to its own highest deleted seq.
    assert_eq!(purge(at(1000), 100).await, 5);
    assert_eq!(feed("acme").await, vec![(acme[6].0, false)]);
    assert!(feed("bravo").await.is_empty());
    assert_eq!(
        store.events_purged_through("acme").await.unwrap(),
        acme[5].0
    );
    assert_eq!(
        store.events_purged_through("bravo").await.unwrap(),
        bravo[1].0
    );
    assert_eq!(purge(at(1000), 100).await, 0);
    assert_eq!(store.outbox_stats(at(1000)).await.unwrap().unpublished, 1);

    // Without a broker, events expire by occurrence, published or not: the lowest seqs first,
    // stopping at the first one not yet expired.
    let mut later = Vec::new();
    for t in [5, 6, 50] {
        let o = order(Uuid::now_v7(), "alice", at(0));
        let mut e = event(o.id, "order.placed", at(t));
        e.tenant = "default".to_owned();
        store.create_order(&o, &[e], None).await.unwrap();
    }
    for e in store.list_events("default", 0, 10).await.unwrap() {
        later.push(e.seq);
    }
    let feed_purge = |before, limit| {
        let store = store.clone();
        async move {
            store
                .purge_expired(Expiring::FeedEvents, before, limit)
                .await
                .unwrap()
        }
    };
    // The lowest seq is acme's unpublished event (occurred at 0 s): deleted like any other.
    assert_eq!(feed_purge(at(10), 2).await, 2);
    assert_eq!(store.outbox_stats(at(1000)).await.unwrap().unpublished, 2);
    assert_eq!(feed_purge(at(10), 2).await, 1);
    assert_eq!(feed_purge(at(10), 2).await, 0, "the event of 50 s is kept");
    assert_eq!(
        store
            .list_events("default", 0, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>(),
        [later[2]]
    );
    assert_eq!(
        store.events_purged_through("default").await.unwrap(),
        later[1]
    );
    assert_eq!(
        store.events_purged_through("acme").await.unwrap(),
        acme[6].0
    );

    // Inbox records, by reception time.
    for (i, id) in ["m-1", "m-2", "m-3"].into_iter().enumerate() {
        store
            .record_inbox("default", "payments", id, at(i as i64))
            .await
            .unwrap();
    }
    let purge_inbox = |before, limit| {
        let store = store.clone();
        async move {
            store
                .purge_expired(Expiring::InboxMessages, before, limit)
                .await
                .unwrap()
        }
    };
    assert_eq!(purge_inbox(at(2), 1).await, 1);
    assert!(!store.inbox_contains("payments", "m-1").await.unwrap());
    assert!(store.inbox_contains("payments", "m-2").await.unwrap());
    assert_eq!(purge_inbox(at(2), 10).await, 1);
    assert!(store.inbox_contains("payments", "m-3").await.unwrap());
    assert_eq!(purge_inbox(at(2), 10).await, 0);
}

async fn events_feed_is_ordered(store: Arc<dyn Store>) {
    stocked(&store).await;
    let mut expected = Vec::new();
    for i in 0..3_u64 {
        let record = order(order_id(i), "alice", at(i as i64));
        let events = [
            event(record.id, "order.placed", at(i as i64)),
            event(record.id, "order.priced", at(i as i64)),
        ];
        store.create_order(&record, &events, None).await.unwrap();
        expected.extend(events);
    }
    let feed = store.list_events("default", 0, 100).await.unwrap();
    assert_eq!(feed.len(), 6);
    assert!(feed.windows(2).all(|w| w[0].seq < w[1].seq));
    for (got, want) in feed.iter().zip(&expected) {
        assert_eq!(got.id, want.id);
        assert_eq!(got.event_type, want.event_type);
        assert_eq!(got.source, want.source);
        assert_eq!(got.subject, want.subject);
        assert_eq!(got.occurred_at, want.occurred_at);
        assert_eq!(got.data, want.data);
        assert_eq!(got.traceparent, want.traceparent);
        assert_eq!(got.tracestate, want.tracestate);
        assert_eq!(got.published_at, None);
    }
    // Paging with the cursor.
    let page = store.list_events("default", feed[1].seq, 2).await.unwrap();
    assert_eq!(page, feed[2..4].to_vec());
    assert!(
        store
            .list_events("default", feed[5].seq, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.list_events("default", 0, 0).await.unwrap().is_empty());
}

async fn tenants_scope_lists_and_the_events_feed(store: Arc<dyn Store>) {
    stocked(&store).await;
    let mut a = order(Uuid::now_v7(), "alice", at(1));
    a.tenant = "acme".to_owned();
    let mut b = order(Uuid::now_v7(), "alice", at(2));
    b.tenant = "bravo".to_owned();
    for o in [&a, &b] {
        let mut e = event(o.id, "order.placed", o.created_at);
        e.tenant = o.tenant.clone();
        assert_eq!(
            store.create_order(o, &[e], None).await.unwrap(),
            CreateOutcome::Created
        );
    }
    let list = |tenant: &str| OrderFilter {
        tenant: tenant.to_owned(),
        customer_id: Some("alice".to_owned()),
        ..OrderFilter::default()
    };
    let ids = |orders: Vec<Order>| orders.into_iter().map(|o| o.id).collect::<Vec<_>>();
    assert_eq!(ids(store.list_orders(&list("acme")).await.unwrap()), [a.id]);
    assert_eq!(
        ids(store.list_orders(&list("bravo")).await.unwrap()),
        [b.id]
    );
    assert!(
        store
            .list_orders(&list("default"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.get_order(a.id).await.unwrap().unwrap().tenant, "acme");
    let feed = store.list_events("bravo", 0, 10).await.unwrap();
    assert_eq!(feed.len(), 1);
    assert_eq!(
        (feed[0].tenant.as_str(), feed[0].subject.clone()),
        ("bravo", b.id.to_string())
    );
    assert!(
        store
            .list_events("default", 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn record_inbox_dedupes_per_consumer(store: Arc<dyn Store>) {
    assert!(
        store
            .record_inbox("default", "billing", "m-1", t0())
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_inbox("default", "billing", "m-1", at(1))
            .await
            .unwrap()
    );
    assert!(
        store
            .record_inbox("default", "shipping", "m-1", at(1))
            .await
            .unwrap()
    );
    assert!(
        store
            .record_inbox("default", "billing", "m-2", at(2))
            .await
            .unwrap()
    );
}

async fn outbox_stats_report_the_backlog(store: Arc<dyn Store>) {
    stocked(&store).await;
    assert_eq!(
        store.outbox_stats(t0()).await.unwrap(),
        OutboxStats::default()
    );
    let record = order(order_id(1), "alice", t0());
    let events = [
        event(record.id, "order.placed", at(5)),
        event(record.id, "order.priced", t0()),
    ];
    store.create_order(&record, &events, None).await.unwrap();
    assert_eq!(
        store.outbox_stats(at(10)).await.unwrap(),
        OutboxStats {
            unpublished: 2,
            oldest_unpublished_age: Some(Duration::from_secs(10)),
        }
    );
    // An event stamped in the future has no negative age.
    assert_eq!(
        store
            .outbox_stats(at(-5))
            .await
            .unwrap()
            .oldest_unpublished_age,
        Some(Duration::ZERO)
    );
}

async fn outbox_claims_are_leased_ordered_and_exclusive(store: Arc<dyn Store>) {
    stocked(&store).await;
    const LEASE: Duration = Duration::from_secs(30);
    // Order A has two events, order B one; seq order is A1, B1, A2.
    let a = order(order_id(1), "alice", t0());
    let b = order(order_id(2), "bob", t0());
    let a1 = event(a.id, "order.placed", t0());
    store
        .create_order(&a, std::slice::from_ref(&a1), None)
        .await
        .unwrap();
    let b1 = event(b.id, "order.placed", t0());
    store
        .create_order(&b, std::slice::from_ref(&b1), None)
        .await
        .unwrap();
    let a2 = event(a.id, "order.paid", at(1));
    assert!(matches!(
        store
            .transition_order(a.id, 1, OrderStatus::Paid, std::slice::from_ref(&a2), at(1))
            .await
            .unwrap(),
        TransitionOutcome::Applied(_)
    ));

    // Relay r1 claims one row: the oldest.
    let r1 = store.claim_outbox("r1", t0(), LEASE, 1).await.unwrap();
    assert_eq!(r1.iter().map(|e| e.id).collect::<Vec<_>>(), vec![a1.id]);
    // Relay r2 gets B1 but not A2: A1 of the same order is leased by r1.
    let r2 = store.claim_outbox("r2", t0(), LEASE, 10).await.unwrap();
    assert_eq!(r2.iter().map(|e| e.id).collect::<Vec<_>>(), vec![b1.id]);
    // Leased rows are nobody's to claim again, not even their holder's.
    assert!(
        store
            .claim_outbox("r2", t0(), LEASE, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .claim_outbox("r3", t0(), LEASE, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // r1 publishes A1: now A2 is claimable, in order.
    assert_eq!(store.mark_published(&[a1.id], at(2)).await.unwrap(), 1);
    assert_eq!(store.mark_published(&[a1.id], at(3)).await.unwrap(), 0);
    let r3 = store.claim_outbox("r3", at(2), LEASE, 10).await.unwrap();
    assert_eq!(r3.iter().map(|e| e.id).collect::<Vec<_>>(), vec![a2.id]);

    // r3's publish is returned: it defers A2 until t+7; nobody may take it before.
    store
        .release_outbox("r3", &[a2.id], Some(at(7)))
        .await
        .unwrap();
    assert!(
        store
            .claim_outbox("r1", at(6), LEASE, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .claim_outbox("r3", at(7), LEASE, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    // r3 then loses its link: A2 is released at once for anyone.
    store.release_outbox("r3", &[a2.id], None).await.unwrap();
    // A release by someone who does not hold the lease changes nothing.
    store.release_outbox("r9", &[b1.id], None).await.unwrap();
    assert!(
        store
            .claim_outbox("r1", at(2), LEASE, 10)
            .await
            .unwrap()
            .iter()
            .all(|e| e.id == a2.id)
    );

    // An expired lease (r2 crashed holding B1) is claimable by another relay.
    let later = at(2) + TimeDelta::from_std(LEASE).unwrap();
    let taken = store.claim_outbox("r4", later, LEASE, 10).await.unwrap();
    let ids: Vec<Uuid> = taken.iter().map(|e| e.id).collect();
    assert!(ids.contains(&b1.id), "{ids:?}");
    assert!(taken.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(
        store.mark_published(&ids, later).await.unwrap(),
        ids.len() as u64
    );
    let stats = store.outbox_stats(later).await.unwrap();
    assert_eq!(stats.unpublished, 3 - 1 - ids.len() as u64);
    let feed = store.list_events("default", 0, 10).await.unwrap();
    assert!(
        feed.iter()
            .filter(|e| ids.contains(&e.id) || e.id == a1.id)
            .all(|e| e.published_at.is_some())
    );
}

async fn concurrent_claims_never_overlap(store: Arc<dyn Store>) {
    stocked(&store).await;
    for i in 0..40u64 {
        let o = order(order_id(100 + i), "carol", t0());
        store
            .create_order(&o, &[event(o.id, "order.placed", t0())], None)
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for r in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let me = format!("relay-{r}");
            let mut mine = Vec::new();
            loop {
                let batch = store
                    .claim_outbox(&me, t0(), Duration::from_secs(30), 3)
                    .await
                    .unwrap();
                if batch.is_empty() {
                    return mine;
                }
                let ids: Vec<Uuid> = batch.iter().map(|e| e.id).collect();
                store.mark_published(&ids, t0()).await.unwrap();
                mine.extend(ids);
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let distinct: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 40, "every row claimed exactly once");
    assert_eq!(distinct.len(), 40);
}

async fn transition_once_applies_each_message_once(store: Arc<dyn Store>) {
    stocked(&store).await;
    let o = order(order_id(7), "dora", t0());
    store.create_order(&o, &[], None).await.unwrap();
    assert!(!store.inbox_contains("payments", "m-1").await.unwrap());
    // A stale version writes nothing, not even the inbox record.
    assert_eq!(
        store
            .transition_order_once(
                "default",
                "payments",
                "m-1",
                o.id,
                5,
                OrderStatus::Paid,
                &[],
                at(1)
            )
            .await
            .unwrap(),
        InboxOutcome::Stale
    );
    assert!(!store.inbox_contains("payments", "m-1").await.unwrap());
    let paid = event(o.id, "order.paid", at(1));
    let applied = store
        .transition_order_once(
            "default",
            "payments",
            "m-1",
            o.id,
            1,
            OrderStatus::Paid,
            &[paid],
            at(1),
        )
        .await
        .unwrap();
    let InboxOutcome::Applied(updated) = applied else {
        panic!("expected applied, got {applied:?}");
    };
    assert_eq!((updated.status, updated.version), (OrderStatus::Paid, 2));
    assert!(store.inbox_contains("payments", "m-1").await.unwrap());
    // The duplicate writes nothing: same version, no second event.
    assert_eq!(
        store
            .transition_order_once(
                "default",
                "payments",
                "m-1",
                o.id,
                2,
                OrderStatus::Shipped,
                &[],
                at(2)
            )
            .await
            .unwrap(),
        InboxOutcome::Duplicate
    );
    let now = store.get_order(o.id).await.unwrap().unwrap();
    assert_eq!((now.status, now.version), (OrderStatus::Paid, 2));
    assert_eq!(store.count_rows().await.unwrap().outbox_events, 1);
    // Concurrent deliveries of one new message id: exactly one applies.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .transition_order_once(
                    "default",
                    "payments",
                    "m-2",
                    o.id,
                    2,
                    OrderStatus::Shipped,
                    &[],
                    at(3),
                )
                .await
                .unwrap()
        }));
    }
    let mut applied = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), InboxOutcome::Applied(_)) {
            applied += 1;
        }
    }
    assert_eq!(applied, 1);
    assert_eq!(store.get_order(o.id).await.unwrap().unwrap().version, 3);
}

fn component(name: &str, version: &str, digest: &str, by: &str) -> ComponentRecord {
    ComponentRecord {
        digest: digest.to_owned(),
        name: name.to_owned(),
        version: version.to_owned(),
        size: 3,
        capabilities: vec!["log".to_owned(), "catalog".to_owned()],
        admitted_at: t0(),
        admitted_by: by.to_owned(),
    }
}

fn release(name: &str, generation: i64, stable: &str) -> Release {
    Release {
        name: name.to_owned(),
        generation,
        stable: stable.to_owned(),
        previous_stable: None,
        canary: Some(Canary {
            digest: "cc".to_owned(),
            weight: 20,
        }),
        shadow: Some(Shadow {
            digest: "dd".to_owned(),
            sample: 0.25,
        }),
        updated_at: at(generation),
        updated_by: "alice".to_owned(),
    }
}

fn audit(r: &Release, from: Option<Release>) -> ReleaseAudit {
    ReleaseAudit {
        name: r.name.clone(),
        generation: r.generation,
        at: r.updated_at,
        actor: r.updated_by.clone(),
        action: "set".to_owned(),
        from,
        to: r.clone(),
        reason: Some("because".to_owned()),
    }
}

async fn components_are_stored_once_and_uploaded_versions_are_immutable(store: Arc<dyn Store>) {
    let a = component("orders", "1.0.0", "aa", "alice");
    assert_eq!(
        store.put_component(&a, b"bytes-a").await.unwrap(),
        PutComponent::Inserted
    );
    assert_eq!(
        store.put_component(&a, b"bytes-a").await.unwrap(),
        PutComponent::Existing(a.clone())
    );
    // An upload of other bytes under the same version is refused...
    let b = component("orders", "1.0.0", "bb", "bob");
    assert_eq!(
        store.put_component(&b, b"bytes-b").await.unwrap(),
        PutComponent::VersionTaken(a.clone())
    );
    // ...but start-up components (a rebuilt binary) and the dev loop's builds may share a
    // version.
    let built = component("orders", "1.0.0", "b2", "startup");
    assert_eq!(
        store.put_component(&built, b"bytes-b2").await.unwrap(),
        PutComponent::Inserted
    );
    let watched = component("orders", "1.0.0", "b3", "watch");
    assert_eq!(
        store.put_component(&watched, b"bytes-b3").await.unwrap(),
        PutComponent::Inserted
    );
    assert_eq!(store.get_component("aa").await.unwrap(), Some(a.clone()));
    assert_eq!(
        store.component_bytes("b2").await.unwrap().as_deref(),
        Some(&b"bytes-b2"[..])
    );
    assert_eq!(store.get_component("zz").await.unwrap(), None);
    store
        .put_component(&component("other", "1.0.0", "oo", "alice"), b"o")
        .await
        .unwrap();
    let digests: Vec<String> = store
        .list_components(Some("orders"))
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.digest)
        .collect();
    assert_eq!(digests, ["aa", "b2", "b3"]);
    assert_eq!(store.list_components(None).await.unwrap().len(), 4);
}

async fn concurrent_uploads_of_one_version_store_one(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let c = component("orders", "2.0.0", &format!("d{i}"), "ci");
                store.put_component(&c, b"x").await.unwrap()
            })
        })
        .collect();
    let mut inserted = 0;
    for t in tasks {
        if t.await.unwrap() == PutComponent::Inserted {
            inserted += 1;
        }
    }
    assert_eq!(inserted, 1, "one set of bytes per uploaded version");
}

async fn releases_are_compare_and_set_with_an_audit_trail(store: Arc<dyn Store>) {
    assert_eq!(store.get_release("orders").await.unwrap(), None);
    let r1 = release("orders", 1, "aa");
    assert!(store.swap_release(0, &r1, &audit(&r1, None)).await.unwrap());
    // A second creator loses.
    assert!(!store.swap_release(0, &r1, &audit(&r1, None)).await.unwrap());
    let r2 = release("orders", 2, "bb");
    assert!(
        !store
            .swap_release(5, &r2, &audit(&r2, Some(r1.clone())))
            .await
            .unwrap()
    );
    assert!(
        store
            .swap_release(1, &r2, &audit(&r2, Some(r1.clone())))
            .await
            .unwrap()
    );
    assert_eq!(store.get_release("orders").await.unwrap(), Some(r2.clone()));
    let other = release("other", 1, "oo");
    assert!(
        store
            .swap_release(0, &other, &audit(&other, None))
            .await
            .unwrap()
    );
    let names: Vec<String> = store
        .list_releases()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["orders", "other"]);
    let history = store.release_history("orders", 10).await.unwrap();
    assert_eq!(
        history.iter().map(|a| a.generation).collect::<Vec<_>>(),
        [2, 1]
    );
    assert_eq!(history[0].from.as_ref(), Some(&r1));
    assert_eq!(history[0].reason.as_deref(), Some("because"));
    assert_eq!(store.release_history("orders", 1).await.unwrap().len(), 1);
}

async fn concurrent_release_changes_apply_one(store: Arc<dyn Store>) {
    let r1 = release("orders", 1, "aa");
    assert!(store.swap_release(0, &r1, &audit(&r1, None)).await.unwrap());
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            let r1 = r1.clone();
            tokio::spawn(async move {
                let next = release("orders", 2, &format!("s{i}"));
                store
                    .swap_release(1, &next, &audit(&next, Some(r1)))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.unwrap());
    }
    assert_eq!(won, 1);
    assert_eq!(store.release_history("orders", 10).await.unwrap().len(), 2);
}

async fn debug_has_no_password(store: Arc<dyn Store>) {
    let debug = format!("{store:?}");
    assert!(!debug.contains("s3cret"), "{debug}");
}

// ---------------------------------------------------------------------------------------------
// Harness: each test runs once per backend.

async fn sqlite_store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    let url = format!("sqlite://{}", dir.path().join("weir.db").display());
    let store = connect(&url, &StoreOptions::default()).await.unwrap();
    assert_eq!(store.backend(), "sqlite");
    store.migrate().await.unwrap();
    // Through the traced wrapper the service uses: it must not change any behaviour.
    Arc::new(TracedStore::new(store))
}

async fn postgres_store(db: &testing::PgTestDb) -> Arc<dyn Store> {
    // Trust auth ignores the password; it is there to prove `Debug` hides it.
    let url = db.url().replacen("postgres@", "postgres:s3cret@", 1);
    let opts = StoreOptions {
        statement_timeout: Some(Duration::from_secs(30)),
        ..StoreOptions::default()
    };
    let store = connect(&url, &opts).await.unwrap();
    assert_eq!(store.backend(), "postgres");
    store.migrate().await.unwrap();
    store
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = super::sqlite_store(&dir).await;
                    super::$name(store.clone()).await;
                    store.close().await;
                }
            )*
        }

        mod postgres_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = super::testing::PgTestDb::create().await.unwrap();
                    let store = super::postgres_store(&db).await;
                    super::$name(store.clone()).await;
                    store.close().await;
                    db.drop_db().await.unwrap();
                }
            )*
        }
    };
}

both_backends!(
    migrate_twice_is_idempotent,
    create_get_and_list_with_cursor_and_filters,
    transition_with_stale_version_is_stale,
    idempotency_state_machine,
    concurrent_begins_start_exactly_once,
    create_order_is_atomic,
    products_upsert_list_and_seed,
    retention_purges_expired_rows_in_bounded_batches,
    reservations_never_oversell_and_settle_once,
    setting_the_count_on_hand_keeps_concurrent_reservations,
    events_feed_is_ordered,
    record_inbox_dedupes_per_consumer,
    tenants_scope_lists_and_the_events_feed,
    outbox_stats_report_the_backlog,
    outbox_claims_are_leased_ordered_and_exclusive,
    concurrent_claims_never_overlap,
    transition_once_applies_each_message_once,
    components_are_stored_once_and_uploaded_versions_are_immutable,
    concurrent_uploads_of_one_version_store_one,
    releases_are_compare_and_set_with_an_audit_trail,
    concurrent_release_changes_apply_one,
    debug_has_no_password,
);

// ---------------------------------------------------------------------------------------------
// Backend-independent unit tests.

#[test]
fn status_round_trips() {
    for status in OrderStatus::ALL {
        assert_eq!(status.as_str().parse::<OrderStatus>(), Ok(status));
        assert_eq!(
            serde_json::to_value(status).unwrap(),
            json!(status.as_str())
        );
    }
    assert!("PLACED".parse::<OrderStatus>().is_err());
    assert!(matches!(parse_status("lost"), Err(StoreError::Corrupt(_))));
}

#[test]
fn urls_are_redacted() {
    assert_eq!(
        redact_url("postgres://weir:s3cret@db:5432/weir"),
        "postgres://weir:[redacted]@db:5432/weir"
    );
    assert_eq!(
        redact_url("postgresql://weir:p@ss@db/weir?sslmode=require"),
        "postgresql://weir:[redacted]@db/weir?sslmode=require"
    );
    assert_eq!(
        redact_url("postgres://db/weir?user=weir&password=s3cret"),
        "postgres://db/weir?user=weir&password=[redacted]"
    );
    assert_eq!(
        redact_url("postgres://weir@db/weir"),
        "postgres://weir@db/weir"
    );
    assert_eq!(redact_url("sqlite://weir.db"), "sqlite://weir.db");
}

#[tokio::test]
async fn unknown_schemes_are_rejected_without_leaking_the_password() {
    let err = connect("mysql://root:s3cret@db/weir", &StoreOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::InvalidUrl(_)), "{err:?}");
    assert!(!err.to_string().contains("s3cret"));
}

#[test]
fn decisions_follow_the_documented_order() {
    let existing = |hash: &str, done: bool, locked: i64, created: i64| ExistingKey {
        request_hash: hash.to_owned(),
        response: done.then(|| response(200, "")),
        locked_until: at(locked),
        created_at: at(created),
    };
    // Retention wins over everything else.
    let expired = t0() + TimeDelta::from_std(RETENTION).unwrap();
    assert_eq!(
        decide_existing(existing("x", true, 30, 0), "h", expired, RETENTION),
        KeyDecision::Replace
    );
    assert_eq!(
        decide_existing(existing("x", true, 30, 0), "h", at(1), RETENTION),
        KeyDecision::Answer(IdempotencyBegin::Mismatch)
    );
    assert_eq!(
        decide_existing(existing("h", false, 30, 0), "h", at(30), RETENTION),
        KeyDecision::TakeOver
    );
}
