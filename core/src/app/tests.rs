//! Use-case tests against in-memory ports.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::executor::block_on;

use super::fakes::{Answer, FakeDecider, Gate, MemStore, Tasks};
use super::*;
use crate::domain::idempotency::request_hash;
use crate::domain::tenant::DEFAULT_TENANT;
use crate::domain::{
    ContractRule, LineRequest, Money, Order, OrderError, OrderEvent, OrderRequest, OrderStatus,
    PricedOrder, Rejection, StoredResponse,
};
use crate::ports::ProductStore;
use crate::ports::{CatalogError, DecideError, SystemClock, TrapKind};

struct World {
    store: Arc<MemStore>,
    decider: Arc<FakeDecider>,
    gate: Arc<Gate>,
    tasks: Arc<Tasks>,
    service: OrderService,
}

/// Units on hand of every product [`World::new`] stocks.
const PLENTY: i64 = 1_000;

impl World {
    /// A world whose catalog has `KB-001` and `HD-005`, [`PLENTY`] of each.
    fn new() -> Self {
        let w = Self::empty();
        for sku in ["KB-001", "HD-005"] {
            w.stock(sku, PLENTY);
        }
        w
    }

    /// Set the units on hand of `sku`.
    fn stock(&self, sku: &str, on_hand: i64) {
        block_on(self.service.put_product(
            sku,
            crate::domain::product::ProductChange {
                name: sku.into(),
                unit_price: 100,
                currency: "EUR".into(),
                stock: on_hand,
            },
        ))
        .unwrap();
    }

    /// (available, reserved) of `sku`.
    fn units(&self, sku: &str) -> (i64, i64) {
        let p = block_on(self.store.get_product(sku)).unwrap().unwrap();
        (p.stock, p.reserved)
    }

    /// A world with an empty catalog.
    fn empty() -> Self {
        let store = Arc::new(MemStore::default());
        let decider = Arc::new(FakeDecider::default());
        let gate = Arc::new(Gate::default());
        let tasks = Arc::new(Tasks::default());
        let ports = Ports {
            orders: store.clone(),
            idempotency: store.clone(),
            inbox: store.clone(),
            outbox: store.clone(),
            products: store.clone(),
            catalog: store.clone(),
            decider: decider.clone(),
            intake: gate.clone(),
            clock: Arc::new(SystemClock),
            spawner: tasks.clone(),
        };
        Self {
            service: OrderService::new(ports, Settings::default()),
            store,
            decider,
            gate,
            tasks,
        }
    }

    fn place(&self, key: &str, skus: &[(&str, u32)]) -> Result<Placed, PlaceError> {
        block_on(self.service.place_order(command(key, skus), &Encoder))
    }

    fn place_ok(&self, key: &str) -> Order {
        match self.place(key, &[("KB-001", 2)]) {
            Ok(Placed::Created { order, .. }) => order,
            other => panic!("expected a new order, got {other:?}"),
        }
    }

    fn transition(
        &self,
        order: &Order,
        event: OrderEvent,
        inbox: Option<&str>,
    ) -> Result<Transitioned, TransitionError> {
        self.transition_from(order, event, inbox.map(|m| ("/payments", m)), None)
    }

    /// A transition from a message `(source, id)`, optionally paying `paid`.
    fn transition_from(
        &self,
        order: &Order,
        event: OrderEvent,
        message: Option<(&str, &str)>,
        paid: Option<Money>,
    ) -> Result<Transitioned, TransitionError> {
        block_on(self.service.apply_transition(ApplyTransition {
            order_id: order.id,
            tenant: None,
            event,
            deadline: Instant::now() + Duration::from_secs(5),
            trace: Default::default(),
            inbox: message.map(|(source, id)| InboxKey {
                consumer: "payments".into(),
                source: source.into(),
                message_id: id.into(),
            }),
            paid,
        }))
    }
}

fn command(key: &str, skus: &[(&str, u32)]) -> PlaceOrder {
    let request = OrderRequest {
        customer_id: "cus_1".into(),
        currency: "EUR".into(),
        lines: skus
            .iter()
            .map(|(sku, quantity)| LineRequest {
                sku: (*sku).into(),
                quantity: *quantity,
            })
            .collect(),
        metadata: Default::default(),
    };
    PlaceOrder {
        tenant: DEFAULT_TENANT.into(),
        idempotency_key: format!("{DEFAULT_TENANT}/POST /v1/orders:{key}"),
        request_hash: request_hash("POST /v1/orders", &serde_json::to_value(&request).unwrap()),
        request,
        deadline: Instant::now() + Duration::from_secs(5),
        trace: Default::default(),
    }
}

struct Encoder;

impl ResponseEncoder for Encoder {
    fn created(&self, order: &Order) -> StoredResponse {
        StoredResponse {
            status: 201,
            body: serde_json::to_vec(order).unwrap(),
            headers: vec![],
        }
    }

    fn refused(&self, error: &OrderError) -> StoredResponse {
        StoredResponse {
            status: 422,
            body: error.tag().as_bytes().to_vec(),
            headers: vec![],
        }
    }
}

fn key_state(w: &World, key: &str) -> Option<bool> {
    w.store
        .state()
        .keys
        .get(&format!("{DEFAULT_TENANT}/POST /v1/orders:{key}"))
        .map(|k| k.response.is_some())
}

#[test]
fn a_placed_order_is_written_with_its_event_and_completed_key_then_replayed() {
    let w = World::new();
    let order = w.place_ok("k1");
    assert_eq!(order.status, OrderStatus::Placed);
    assert_eq!((order.total, order.version), (200, 1));
    {
        let s = w.store.state();
        assert_eq!(s.orders.len(), 1);
        assert_eq!(s.events.len(), 1);
        assert_eq!(s.events[0].event_type, "order.placed");
        assert_eq!(s.events[0].data, serde_json::to_value(&order).unwrap());
    }
    assert_eq!(key_state(&w, "k1"), Some(true));
    let Ok(Placed::Replayed(replayed)) = w.place("k1", &[("KB-001", 2)]) else {
        panic!("expected a replay")
    };
    assert_eq!(replayed.body, serde_json::to_vec(&order).unwrap());
    assert!(matches!(
        w.place("k1", &[("KB-001", 3)]),
        Err(PlaceError::KeyReused)
    ));
    assert_eq!(w.decider.place_calls.load(Ordering::SeqCst), 1);
    assert_eq!(w.store.state().orders.len(), 1, "nothing written twice");
}

#[test]
fn deterministic_refusals_are_stored_and_transient_failures_release_the_key() {
    let w = World::new();
    *w.decider.place.lock().unwrap() = Answer::Fail(|| {
        DecideError::Refused(OrderError::Rejected(Rejection {
            reason: "INSUFFICIENT_STOCK".into(),
            message: "no".into(),
        }))
    });
    assert!(matches!(
        w.place("r1", &[("HD-005", 1)]),
        Err(PlaceError::Decide(DecideError::Refused(_)))
    ));
    assert_eq!(key_state(&w, "r1"), Some(true), "the refusal is stored");
    let Ok(Placed::Replayed(stored)) = w.place("r1", &[("HD-005", 1)]) else {
        panic!("a refusal replays")
    };
    assert_eq!(stored.status, 422);

    for failure in [
        (|| DecideError::Trap {
            kind: TrapKind::Unreachable,
            detail: crate::ports::Detail("panic".into()),
        }) as fn() -> DecideError,
        || DecideError::Refused(OrderError::Unavailable("catalog down".into())),
        || DecideError::Interrupted,
    ] {
        *w.decider.place.lock().unwrap() = Answer::Fail(failure);
        assert!(matches!(
            w.place("t1", &[("KB-001", 1)]),
            Err(PlaceError::Decide(_))
        ));
        assert_eq!(key_state(&w, "t1"), None, "released for the retry");
    }
    *w.decider.place.lock().unwrap() = Answer::Price;
    w.place_ok("t1");
    assert_eq!(w.store.state().orders.len(), 1);
}

#[test]
fn an_oversized_refusal_is_a_broken_contract_and_nothing_is_stored() {
    let w = World::new();
    *w.decider.place.lock().unwrap() =
        Answer::Fail(|| DecideError::Refused(OrderError::NotFound("n".repeat(48 << 20))));
    let err = w.place("big", &[("KB-001", 1)]).unwrap_err();
    assert!(
        matches!(
            &err,
            PlaceError::Decide(DecideError::Contract(v)) if v.rule == ContractRule::ErrorShape
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().len() < 200,
        "the plugin's text is not echoed"
    );
    assert_eq!(
        key_state(&w, "big"),
        None,
        "not stored, released for the retry"
    );
    assert!(w.store.state().orders.is_empty());
}

#[test]
fn backpressure_and_a_failed_write_release_the_key_and_write_nothing() {
    let w = World::new();
    w.gate.0.store(true, Ordering::SeqCst);
    assert!(matches!(
        w.place("b1", &[("KB-001", 1)]),
        Err(PlaceError::Backpressure { retry_after }) if retry_after == Duration::from_secs(7)
    ));
    assert_eq!(key_state(&w, "b1"), None);
    assert_eq!(
        w.decider.place_calls.load(Ordering::SeqCst),
        0,
        "decided nothing"
    );
    w.gate.0.store(false, Ordering::SeqCst);

    w.store.fail_next_create.store(true, Ordering::SeqCst);
    let err = w.place("b1", &[("KB-001", 1)]).unwrap_err();
    assert!(matches!(err, PlaceError::Store { .. }), "{err:?}");
    assert_eq!(
        crate::chain(&err),
        "writing the order, its event and the idempotency record: database unavailable: connection reset"
    );
    assert_eq!(key_state(&w, "b1"), None);
    assert!(w.store.state().orders.is_empty() && w.store.state().events.is_empty());
    w.place_ok("b1");
}

#[test]
fn a_request_dropped_mid_decision_releases_its_key_in_the_background() {
    let w = World::new();
    *w.decider.place.lock().unwrap() = Answer::Hang;
    block_on(async {
        let fut = w
            .service
            .place_order(command("d1", &[("KB-001", 1)]), &Encoder);
        futures::pin_mut!(fut);
        assert!(futures::poll!(fut.as_mut()).is_pending());
    });
    assert_eq!(key_state(&w, "d1"), Some(false), "held until the task runs");
    assert!(matches!(
        w.place("d1", &[("KB-001", 1)]),
        Err(PlaceError::KeyInProgress { .. })
    ));
    w.tasks.run_all();
    assert_eq!(key_state(&w, "d1"), None);
    *w.decider.place.lock().unwrap() = Answer::Price;
    w.place_ok("d1");
}

#[test]
fn transitions_apply_once_and_retry_after_a_concurrent_change() {
    let w = World::new();
    let order = w.place_ok("o1");
    let Ok(Transitioned::Applied(paid)) = w.transition(&order, OrderEvent::PaymentCaptured, None)
    else {
        panic!("payment applies")
    };
    assert_eq!((paid.status, paid.version), (OrderStatus::Paid, 2));
    assert_eq!(
        w.store.state().events.last().unwrap().event_type,
        "order.paid"
    );

    // Two stale writes: decided three times, applied on the third.
    w.store.stale_writes.store(2, Ordering::SeqCst);
    let before = w.decider.transition_calls.load(Ordering::SeqCst);
    let Ok(Transitioned::Applied(cancelled)) =
        w.transition(&order, OrderEvent::CancelRequested, None)
    else {
        panic!("cancel applies")
    };
    assert_eq!(cancelled.status, OrderStatus::Cancelled);
    assert_eq!(
        w.decider.transition_calls.load(Ordering::SeqCst) - before,
        3
    );
    // Cancelling again changes nothing.
    assert!(matches!(
        w.transition(&order, OrderEvent::CancelRequested, None),
        Ok(Transitioned::Unchanged(o)) if o.version == 3
    ));
    // Always stale: bounded.
    let other = w.place_ok("o2");
    w.store.stale_writes.store(100, Ordering::SeqCst);
    assert!(matches!(
        w.transition(&other, OrderEvent::CancelRequested, None),
        Err(TransitionError::KeptChanging)
    ));
    w.store.stale_writes.store(0, Ordering::SeqCst);
    // A refusal carries the status it was decided on.
    assert!(matches!(
        w.transition(&order, OrderEvent::Shipped, None),
        Err(TransitionError::Decide {
            status: OrderStatus::Cancelled,
            source: DecideError::Refused(OrderError::Conflict(_))
        })
    ));
    let missing = Order {
        id: uuid::Uuid::now_v7(),
        ..order
    };
    assert!(matches!(
        w.transition(&missing, OrderEvent::CancelRequested, None),
        Err(TransitionError::NotFound(_))
    ));
}

#[test]
fn messages_are_applied_at_most_once_by_the_inbox() {
    let w = World::new();
    let order = w.place_ok("m1");
    assert!(matches!(
        w.transition(&order, OrderEvent::PaymentCaptured, Some("msg-1")),
        Ok(Transitioned::Applied(_))
    ));
    assert!(matches!(
        w.transition(&order, OrderEvent::PaymentCaptured, Some("msg-1")),
        Ok(Transitioned::Duplicate)
    ));
    assert_eq!(w.store.state().orders[&order.id].version, 2);
    // No change still records the message, once.
    assert!(matches!(
        w.transition(&order, OrderEvent::CancelRequested, Some("msg-2")),
        Ok(Transitioned::Applied(_))
    ));
    assert!(matches!(
        w.transition(&order, OrderEvent::CancelRequested, Some("msg-3")),
        Ok(Transitioned::Unchanged(_))
    ));
    assert!(
        w.store
            .state()
            .inbox
            .contains(&("payments".into(), "/payments msg-3".into()))
    );
    assert!(matches!(
        w.transition(&order, OrderEvent::CancelRequested, Some("msg-3")),
        Ok(Transitioned::Duplicate)
    ));
    assert_eq!(w.store.state().events.len(), 3, "placed, paid, cancelled");
}

#[test]
fn product_updates_are_validated_before_anything_is_written() {
    let w = World::empty();
    let change = |price| crate::domain::product::ProductChange {
        name: "Keyboard".into(),
        unit_price: price,
        currency: "EUR".into(),
        stock: 3,
    };
    assert!(matches!(
        block_on(w.service.put_product("bad sku", change(1))),
        Err(ProductError::InvalidSku)
    ));
    assert!(matches!(
        block_on(w.service.put_product("KB-001", change(-1))),
        Err(ProductError::Invalid(v)) if v.len() == 1 && v[0].field == "unit_price"
    ));
    assert!(w.store.state().products.is_empty());
    let saved = block_on(w.service.put_product("KB-001", change(8900))).unwrap();
    assert_eq!(
        block_on(w.service.list_products(None, 10)).unwrap(),
        vec![saved.clone()]
    );
    assert!(
        block_on(w.service.list_products(Some("KB-001"), 10))
            .unwrap()
            .is_empty()
    );
    let mut later = change(100);
    later.name = "Mouse".into();
    let mouse = block_on(w.service.put_product("MS-001", later)).unwrap();
    assert_eq!(
        block_on(w.service.list_products(None, 1)).unwrap(),
        vec![saved]
    );
    assert_eq!(
        block_on(w.service.list_products(Some("KB-001"), 1)).unwrap(),
        vec![mouse]
    );
}

/// The contract broken by a decider that changes a correct pricing like `lie`.
fn broken_by(lie: fn(&mut PricedOrder)) -> ContractRule {
    let w = World::new();
    *w.decider.place.lock().unwrap() = Answer::Lie(lie);
    let err = w
        .place("liar", &[("KB-001", 2), ("HD-005", 1)])
        .unwrap_err();
    let PlaceError::Decide(DecideError::Contract(violation)) = err else {
        panic!("expected a contract violation, got {err:?}")
    };
    let s = w.store.state();
    assert!(s.orders.is_empty() && s.events.is_empty(), "nothing stored");
    assert!(s.reserved.values().all(|&r| r == 0), "nothing reserved");
    drop(s);
    assert_eq!(
        key_state(&w, "liar"),
        None,
        "released like other plugin bugs"
    );
    violation.rule
}

#[test]
fn a_lying_decider_is_refused_for_each_rule_and_nothing_is_stored() {
    use ContractRule as R;
    type Lie = fn(&mut PricedOrder);
    let cases: [(ContractRule, Lie); 12] = [
        (R::Lines, |p| p.lines.clear()),
        (R::Lines, |p| p.lines[0].sku = "XX-999".into()),
        (R::Lines, |p| p.lines[0].quantity = 1000),
        (R::Lines, |p| {
            let dup = p.lines[0].clone();
            p.lines.push(dup);
        }),
        (R::Currency, |p| {
            for l in &mut p.lines {
                l.unit_price.currency = "JPY".into();
                l.line_total.currency = "JPY".into();
            }
        }),
        (R::Range, |p| p.total.amount = -1),
        (R::Range, |p| p.total.amount = i64::MAX),
        (R::LineTotal, |p| p.lines[1].line_total.amount += 1),
        (R::Subtotal, |p| p.subtotal.amount += 1),
        (R::Discount, |p| p.discount.amount = p.subtotal.amount + 1),
        (R::Total, |p| p.total.amount -= 1),
        (R::Total, |p| p.tax.amount = 5),
    ];
    for (i, (rule, lie)) in cases.into_iter().enumerate() {
        assert_eq!(broken_by(lie), rule, "case {i}");
    }
    // The honest pricing of the same request passes.
    let w = World::new();
    assert!(matches!(
        w.place("honest", &[("KB-001", 2), ("HD-005", 1)]),
        Ok(Placed::Created { .. })
    ));
}

#[test]
fn a_decider_cannot_invent_a_transition() {
    let w = World::new();
    let order = w.place_ok("g1");
    // A cancel that pays.
    *w.decider.transition_to.lock().unwrap() = Some(OrderStatus::Paid);
    let err = w
        .transition(&order, OrderEvent::CancelRequested, None)
        .unwrap_err();
    assert!(
        matches!(&err, TransitionError::Decide { status: OrderStatus::Placed, source: DecideError::Contract(v) } if v.rule == ContractRule::StatusGraph),
        "{err:?}"
    );
    // A cancel that un-cancels, and an event that "applies" without moving.
    *w.decider.transition_to.lock().unwrap() = None;
    w.transition(&order, OrderEvent::CancelRequested, None)
        .unwrap();
    *w.decider.transition_to.lock().unwrap() = Some(OrderStatus::Placed);
    assert!(
        w.transition(&order, OrderEvent::CancelRequested, None)
            .is_err()
    );
    *w.decider.transition_to.lock().unwrap() = Some(OrderStatus::Cancelled);
    assert!(
        w.transition_from(&order, OrderEvent::Shipped, Some(("/shipping", "s1")), None)
            .is_err(),
        "shipping a cancelled order is not a no-op the decider may pick"
    );
    let s = w.store.state();
    assert_eq!(s.orders[&order.id].status, OrderStatus::Cancelled);
    assert_eq!(s.orders[&order.id].version, 2);
    assert_eq!(s.events.len(), 2, "placed, cancelled");
    assert!(s.inbox.is_empty(), "a refused message is not recorded");
}

#[test]
fn stock_is_reserved_with_the_order_and_released_exactly_once() {
    let w = World::new();
    w.stock("KB-001", 3);
    let a = w.place_ok("s1"); // 2 units
    assert_eq!(w.units("KB-001"), (1, 2));
    // Short: refused by the host, stored with the key, nothing written.
    let err = w.place("s2", &[("KB-001", 2)]).unwrap_err();
    assert!(
        matches!(&err, PlaceError::Refused(OrderError::Rejected(r)) if r.reason == "INSUFFICIENT_STOCK"),
        "{err:?}"
    );
    assert_eq!(key_state(&w, "s2"), Some(true));
    assert!(matches!(
        w.place("s2", &[("KB-001", 2)]),
        Ok(Placed::Replayed(r)) if r.status == 422
    ));
    let err = w.place("s3", &[("NOPE-1", 1)]).unwrap_err();
    assert!(
        matches!(&err, PlaceError::Refused(OrderError::Rejected(r)) if r.reason == "UNKNOWN_SKU"),
        "{err:?}"
    );
    assert_eq!(w.store.state().orders.len(), 1);
    assert_eq!(w.units("KB-001"), (1, 2));

    // The operator counts 10 on hand: the 2 reserved stay reserved.
    w.stock("KB-001", 10);
    assert_eq!(w.units("KB-001"), (8, 2));

    // Cancel releases once, however often it is asked.
    w.transition(&a, OrderEvent::CancelRequested, None).unwrap();
    assert_eq!(w.units("KB-001"), (10, 0));
    w.transition(&a, OrderEvent::CancelRequested, None).unwrap();
    w.transition(&a, OrderEvent::CancelRequested, Some("c1"))
        .unwrap();
    assert_eq!(w.units("KB-001"), (10, 0));

    // Shipping consumes the reservation and the units on hand.
    let b = w.place_ok("s4");
    w.transition(&b, OrderEvent::PaymentCaptured, None).unwrap();
    w.transition(&b, OrderEvent::Shipped, None).unwrap();
    assert_eq!(w.units("KB-001"), (8, 0));
    assert_eq!(w.store.state().products["KB-001"].stock, 8, "on hand");
}

#[test]
fn a_payment_must_pay_the_total_and_messages_are_told_apart_by_source() {
    let w = World::new();
    let order = w.place_ok("p1"); // 2 x 100 EUR
    for wrong in [Money::new(199, "EUR"), Money::new(200, "JPY")] {
        let err = w
            .transition_from(
                &order,
                OrderEvent::PaymentCaptured,
                Some(("/payments", "m1")),
                Some(wrong.clone()),
            )
            .unwrap_err();
        assert!(
            matches!(&err, TransitionError::PaymentMismatch { paid, due } if *paid == wrong && *due == Money::new(200, "EUR")),
            "{err:?}"
        );
    }
    assert_eq!(
        w.store.state().orders[&order.id].status,
        OrderStatus::Placed
    );
    assert!(
        w.store.state().inbox.is_empty(),
        "a forged message is not recorded"
    );
    assert!(matches!(
        w.transition_from(
            &order,
            OrderEvent::PaymentCaptured,
            Some(("/payments", "m1")),
            Some(Money::new(200, "EUR")),
        ),
        Ok(Transitioned::Applied(o)) if o.status == OrderStatus::Paid
    ));
    // The same id from another source is another message; from the same one, a duplicate.
    assert!(matches!(
        w.transition_from(&order, OrderEvent::Shipped, Some(("/shipping", "m1")), None),
        Ok(Transitioned::Applied(o)) if o.status == OrderStatus::Shipped
    ));
    assert!(matches!(
        w.transition_from(&order, OrderEvent::Shipped, Some(("/shipping", "m1")), None),
        Ok(Transitioned::Duplicate)
    ));
}

mod releases {
    use std::sync::Arc;

    use futures::executor::block_on;

    use super::super::fakes::MemStore;
    use super::super::{Registered, ReleaseError, ReleaseService};
    use crate::domain::release::{Canary, DesiredRelease, ReleaseChange};
    use crate::ports::{ComponentRecord, SystemClock};

    fn record(name: &str, version: &str, digest: &str) -> ComponentRecord {
        ComponentRecord {
            digest: digest.into(),
            name: name.into(),
            version: version.into(),
            size: 3,
            capabilities: vec![],
            admitted_at: chrono::Utc::now(),
            admitted_by: "ops".into(),
        }
    }

    fn service() -> (Arc<MemStore>, ReleaseService) {
        let store = Arc::new(MemStore::default());
        let svc = ReleaseService::new(store.clone(), store.clone(), Arc::new(SystemClock));
        (store, svc)
    }

    fn set(stable: &str, canary: Option<(&str, u8)>) -> ReleaseChange {
        ReleaseChange::Set(DesiredRelease {
            stable: stable.into(),
            canary: canary.map(|(d, w)| Canary {
                digest: d.into(),
                weight: w,
            }),
            shadow: None,
        })
    }

    #[test]
    fn registration_is_idempotent_and_versions_are_immutable() {
        let (_, svc) = service();
        let a = record("orders", "1.0.0", "aa");
        assert_eq!(
            block_on(svc.register(&a, b"aaa")).unwrap(),
            Registered::New(a.clone())
        );
        assert!(matches!(
            block_on(svc.register(&a, b"aaa")).unwrap(),
            Registered::Existing(r) if r == a
        ));
        let err = block_on(svc.register(&record("orders", "1.0.0", "bb"), b"bbb")).unwrap_err();
        assert!(
            matches!(err, ReleaseError::VersionTaken { ref digest, .. } if digest == "aa"),
            "{err}"
        );
    }

    #[test]
    fn changes_are_compare_and_set_audited_and_checked_against_admitted_versions() {
        let (store, svc) = service();
        for (v, d) in [("1.0.0", "aa"), ("2.0.0", "bb")] {
            block_on(svc.register(&record("orders", v, d), b"x")).unwrap();
        }
        block_on(svc.register(&record("other", "1.0.0", "cc"), b"x")).unwrap();
        let r1 = block_on(svc.change("orders", &set("aa", None), Some(0), "alice", None)).unwrap();
        assert_eq!(r1.generation, 1);
        // A stale writer is refused; a digest of another plugin is refused.
        assert!(matches!(
            block_on(svc.change("orders", &set("bb", None), Some(0), "bob", None)),
            Err(ReleaseError::Stale {
                expected: 0,
                current: 1,
                ..
            })
        ));
        assert!(matches!(
            block_on(svc.change("orders", &set("cc", None), Some(1), "bob", None)),
            Err(ReleaseError::Invalid(_))
        ));
        let r2 = block_on(svc.change(
            "orders",
            &set("aa", Some(("bb", 20))),
            Some(1),
            "bob",
            Some("try b"),
        ))
        .unwrap();
        assert_eq!((r2.generation, r2.canary.unwrap().weight), (2, 20));
        let r3 =
            block_on(svc.change("orders", &ReleaseChange::Promote, None, "bob", None)).unwrap();
        assert_eq!(
            (r3.stable.as_str(), r3.previous_stable.as_deref()),
            ("bb", Some("aa"))
        );
        let r4 = block_on(svc.change(
            "orders",
            &ReleaseChange::Rollback,
            Some(3),
            "carol",
            Some("oops"),
        ))
        .unwrap();
        assert_eq!((r4.generation, r4.stable.as_str()), (4, "aa"));
        let history = block_on(svc.history("orders", 10)).unwrap();
        let actions: Vec<_> = history
            .iter()
            .map(|a| (a.action.as_str(), a.actor.as_str(), a.generation))
            .collect();
        assert_eq!(
            actions,
            [
                ("rollback", "carol", 4),
                ("promote", "bob", 3),
                ("set", "bob", 2),
                ("set", "alice", 1)
            ]
        );
        assert_eq!(history[0].reason.as_deref(), Some("oops"));
        assert_eq!(history[0].from.as_ref().unwrap().stable, "bb");
        assert_eq!(store.state().releases["orders"].generation, 4);
        assert!(matches!(
            block_on(svc.change("nothing", &ReleaseChange::Promote, None, "x", None)),
            Err(ReleaseError::NotFound(_))
        ));
    }

    #[test]
    fn start_up_follows_its_own_releases_but_never_an_operators() {
        let (_, svc) = service();
        for (v, d) in [("1.0.0", "aa"), ("2.0.0", "bb"), ("3.0.0", "cc")] {
            block_on(svc.register(&record("orders", v, d), b"x")).unwrap();
        }
        assert_eq!(
            block_on(svc.adopt_at_startup("orders", "aa"))
                .unwrap()
                .stable,
            "aa"
        );
        // A restart with another built-in version moves a start-up release along...
        let r = block_on(svc.adopt_at_startup("orders", "bb")).unwrap();
        assert_eq!((r.stable.as_str(), r.generation), ("bb", 2));
        // ...but not an operator's.
        block_on(svc.change("orders", &set("cc", None), None, "alice", None)).unwrap();
        assert_eq!(
            block_on(svc.adopt_at_startup("orders", "aa"))
                .unwrap()
                .stable,
            "cc"
        );
    }
}

/// Placed in tenant `tenant` with its own tenant-scoped key.
fn place_in(w: &World, tenant: &str, key: &str) -> Placed {
    let mut cmd = command(key, &[("KB-001", 1)]);
    cmd.tenant = tenant.into();
    cmd.idempotency_key = format!("{tenant}/POST /v1/orders:{key}");
    block_on(w.service.place_order(cmd, &Encoder)).unwrap()
}

#[test]
fn tenants_see_only_their_own_orders_and_events() {
    let w = World::new();
    let Placed::Created { order: a, .. } = place_in(&w, "acme", "k") else {
        panic!("not created")
    };
    // The same client key in another tenant is another order, not a replay.
    let Placed::Created { order: b, .. } = place_in(&w, "bravo", "k") else {
        panic!("the same key in another tenant was replayed")
    };
    assert_ne!(a.id, b.id);
    assert_eq!((a.tenant.as_str(), b.tenant.as_str()), ("acme", "bravo"));

    let get = |tenant: &str, id| block_on(w.service.get_order(tenant, id)).unwrap();
    assert_eq!(get("acme", a.id).map(|o| o.id), Some(a.id));
    assert_eq!(
        get("bravo", a.id),
        None,
        "another tenant's order is not found"
    );

    let list = |tenant: &str| {
        block_on(w.service.list_orders(&crate::ports::OrderFilter {
            tenant: tenant.into(),
            ..Default::default()
        }))
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect::<Vec<_>>()
    };
    assert_eq!(list("acme"), vec![a.id]);
    assert_eq!(list("bravo"), vec![b.id]);

    let events = |tenant: &str| {
        block_on(w.service.list_events(tenant, Some(0), 100))
            .unwrap()
            .events
            .into_iter()
            .map(|e| (e.tenant, e.subject))
            .collect::<Vec<_>>()
    };
    assert_eq!(events("acme"), vec![("acme".to_owned(), a.id.to_string())]);
    assert_eq!(
        events("bravo"),
        vec![("bravo".to_owned(), b.id.to_string())]
    );

    // Retention deleted acme's events up to seq 1: a cursor below that may have missed some;
    // no cursor starts at what is left; bravo's feed is not affected.
    w.store.state().purged_through.insert("acme".to_owned(), 1);
    assert!(matches!(
        block_on(w.service.list_events("acme", Some(0), 100)),
        Err(crate::app::FeedError::CursorExpired { purged_through: 1 })
    ));
    let page = block_on(w.service.list_events("acme", Some(1), 100)).unwrap();
    assert_eq!((page.events.len(), page.next_after), (0, 1));
    let page = block_on(w.service.list_events("acme", None, 100)).unwrap();
    assert_eq!((page.events.len(), page.next_after), (1, 1));
    // Everything purged: a reader without a cursor is told to continue after the gap.
    w.store.state().purged_through.insert("acme".to_owned(), 7);
    let page = block_on(w.service.list_events("acme", None, 100)).unwrap();
    assert_eq!(page.next_after, 7);
    assert_eq!(events("bravo").len(), 1);

    // Another tenant cannot cancel it; its own tenant and the service's consumers can.
    let cancel = |tenant: Option<&str>| {
        block_on(w.service.apply_transition(ApplyTransition {
            order_id: a.id,
            tenant: tenant.map(str::to_owned),
            event: OrderEvent::CancelRequested,
            deadline: Instant::now() + Duration::from_secs(5),
            trace: Default::default(),
            inbox: None,
            paid: None,
        }))
    };
    assert!(matches!(
        cancel(Some("bravo")),
        Err(TransitionError::NotFound(_))
    ));
    assert_eq!(get("acme", a.id).unwrap().status, OrderStatus::Placed);
    assert!(matches!(cancel(Some("acme")), Ok(Transitioned::Applied(_))));
}

fn quote(w: &World, skus: &[(&str, u32)]) -> Result<Quote, QuoteError> {
    let cmd = command("quote", skus);
    block_on(w.service.quote_order(QuoteOrder {
        request: cmd.request,
        deadline: cmd.deadline,
        routing_key: QuoteKey::Placing("quote".into()),
    }))
}

/// (orders, events, idempotency keys, units reserved in all) of the store.
fn footprint(w: &World) -> (usize, usize, usize, i64) {
    let s = w.store.state();
    (
        s.orders.len(),
        s.events.len(),
        s.keys.len(),
        s.reserved.values().sum(),
    )
}

#[test]
fn a_quote_is_the_price_placing_gets_and_writes_nothing() {
    let w = World::new();
    w.stock("LOW-1", 1);
    let skus = [("KB-001", 2), ("LOW-1", 2), ("HD-005", 1)];
    let before = footprint(&w);
    let q = quote(&w, &skus).unwrap();
    assert_eq!(footprint(&w), before, "a quote writes nothing");
    assert_eq!(
        q.available,
        [true, false, true],
        "LOW-1 has 1 unit for 2 asked"
    );
    assert_eq!(q.by, super::fakes::plugin());

    let Ok(Placed::Created { order, .. }) = w.place("after-quote", &[("KB-001", 2), ("HD-005", 1)])
    else {
        panic!("expected a new order")
    };
    let q = quote(&w, &[("KB-001", 2), ("HD-005", 1)]).unwrap();
    let priced: Vec<(i64, i64)> = q
        .priced
        .lines
        .iter()
        .map(|l| (l.unit_price.amount, l.line_total.amount))
        .collect();
    let placed: Vec<(i64, i64)> = order
        .lines
        .iter()
        .map(|l| (l.unit_price, l.line_total))
        .collect();
    assert_eq!(priced, placed);
    assert_eq!(
        (
            q.priced.subtotal.amount,
            q.priced.discount.amount,
            q.priced.tax.amount,
            q.priced.total.amount
        ),
        (order.subtotal, order.discount, order.tax, order.total)
    );
}

#[test]
fn availability_sums_a_sku_over_its_lines_and_an_unknown_sku_is_unavailable() {
    let w = World::new();
    w.stock("LOW-1", 3);
    let q = quote(&w, &[("LOW-1", 2), ("NOPE-1", 1), ("LOW-1", 2)]).unwrap();
    assert_eq!(
        q.available,
        [false, false, false],
        "4 of LOW-1 asked, 3 there"
    );
    let q = quote(&w, &[("LOW-1", 2), ("LOW-1", 1)]).unwrap();
    assert_eq!(q.available, [true, true]);
}

#[test]
fn a_quote_is_held_to_the_contract_and_refusals_pass_unchanged() {
    let w = World::new();
    *w.decider.place.lock().unwrap() = Answer::Lie(|p| p.total.amount += 1);
    let err = quote(&w, &[("KB-001", 1)]).unwrap_err();
    assert!(
        matches!(&err, QuoteError::Decide(DecideError::Contract(v)) if v.rule == ContractRule::Total),
        "{err:?}"
    );
    *w.decider.place.lock().unwrap() = Answer::Fail(|| {
        DecideError::Refused(OrderError::Rejected(Rejection {
            reason: "INSUFFICIENT_STOCK".into(),
            message: "no".into(),
        }))
    });
    assert!(matches!(
        quote(&w, &[("KB-001", 1)]),
        Err(QuoteError::Decide(DecideError::Refused(OrderError::Rejected(r)))) if r.reason == "INSUFFICIENT_STOCK"
    ));
    *w.decider.place.lock().unwrap() =
        Answer::Fail(|| DecideError::Refused(OrderError::NotFound("n".repeat(48 << 20))));
    assert!(matches!(
        quote(&w, &[("KB-001", 1)]),
        Err(QuoteError::Decide(DecideError::Contract(v))) if v.rule == ContractRule::ErrorShape
    ));
    assert_eq!(footprint(&w), (0, 0, 0, 0));
}

/// A quote's availability is the catalog's: what the catalog read path has of each sku, and
/// its failure (after the decider priced) is the quote's typed failure, writing nothing.
#[test]
fn a_quote_reads_availability_from_the_catalog_and_fails_typed_with_it() {
    let w = World::new();
    w.stock("LOW-1", 2);
    w.store.catalog_down.store(true, Ordering::SeqCst);
    let err = quote(&w, &[("LOW-1", 1)]).unwrap_err();
    assert!(
        matches!(&err, QuoteError::Catalog(CatalogError::Unavailable(_))),
        "{err:?}"
    );
    assert_eq!(footprint(&w), (0, 0, 0, 0));
    w.store.catalog_down.store(false, Ordering::SeqCst);
    assert_eq!(quote(&w, &[("LOW-1", 2)]).unwrap().available, [true]);
}

/// The availability lookups stop at the request's deadline: a quote whose deadline passed
/// while it was being priced fails as a catalog timeout instead of reading on.
#[test]
fn a_quote_past_its_deadline_does_not_read_the_catalog() {
    let w = World::new();
    let cmd = command("quote", &[("KB-001", 1)]);
    let late = block_on(w.service.quote_order(QuoteOrder {
        request: cmd.request,
        deadline: Instant::now(),
        routing_key: QuoteKey::Placing("quote".into()),
    }));
    assert!(
        matches!(late, Err(QuoteError::Catalog(CatalogError::Timeout))),
        "{late:?}"
    );
}

#[test]
fn a_quote_is_not_held_back_by_the_intake_gate() {
    let w = World::new();
    w.gate.0.store(true, Ordering::SeqCst);
    assert!(matches!(
        w.place("gated", &[("KB-001", 1)]),
        Err(PlaceError::Backpressure { .. })
    ));
    assert!(quote(&w, &[("KB-001", 1)]).is_ok(), "a quote adds no event");
}
