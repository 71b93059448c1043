//! In-memory ports for the use-case tests.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::idempotency::{ExistingKey, KeyDecision, decide_existing};
use crate::domain::release::{Release, ReleaseAudit};
use crate::domain::stock;
use crate::domain::{
    CatalogProduct, EventRecord, IdempotencyBegin, Money, NewEvent, Order, OrderError, OrderEvent,
    OrderRequest, OrderSnapshot, OrderStatus, PluginRef, PricedLine, PricedOrder, Product,
    StoredResponse,
};
use crate::ports::clock::Detached;
use crate::ports::*;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Default)]
pub struct State {
    pub components: BTreeMap<String, (ComponentRecord, Vec<u8>)>,
    pub releases: BTreeMap<String, Release>,
    pub history: Vec<ReleaseAudit>,
    pub orders: BTreeMap<Uuid, Order>,
    pub keys: HashMap<String, ExistingKey>,
    pub events: Vec<NewEvent>,
    pub inbox: HashSet<(String, String)>,
    /// Per tenant, the highest event seq retention deleted.
    pub purged_through: HashMap<String, i64>,
    /// Products as written: `stock` is the count on hand.
    pub products: BTreeMap<String, Product>,
    /// Units reserved per sku.
    pub reserved: BTreeMap<String, i64>,
    /// Orders that still hold their reservation.
    pub holding: HashSet<Uuid>,
}

impl State {
    /// A product as a store reads it back: `stock` available, `reserved` held.
    fn read_product(&self, p: &Product) -> Product {
        let reserved = self.reserved.get(&p.sku).copied().unwrap_or(0);
        Product {
            stock: crate::domain::stock::available(p.stock, reserved),
            reserved,
            ..p.clone()
        }
    }
}

/// Every store port in memory, with failure injection.
#[derive(Default)]
pub struct MemStore {
    pub state: Mutex<State>,
    /// The next `create_order` fails as unavailable.
    pub fail_next_create: AtomicBool,
    /// This many next transition writes are stale (a concurrent change).
    pub stale_writes: AtomicU32,
    /// Catalog lookups fail as unavailable while set.
    pub catalog_down: AtomicBool,
}

fn unavailable() -> StoreError {
    StoreError::Unavailable(DriverError::new(std::io::Error::other("connection reset")))
}

impl MemStore {
    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn write_transition(
        &self,
        id: Uuid,
        expected_version: i64,
        new_status: OrderStatus,
        events: &[NewEvent],
        now: DateTime<Utc>,
    ) -> Option<Order> {
        if self
            .stale_writes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return None;
        }
        let mut s = self.state();
        let order = s.orders.get_mut(&id)?;
        if order.version != expected_version {
            return None;
        }
        *order = order.transitioned(new_status, now);
        let updated = order.clone();
        s.events.extend(events.iter().cloned());
        if let Some(settlement) = stock::settlement(new_status)
            && s.holding.remove(&id)
        {
            for (sku, quantity) in stock::demand(&updated.lines) {
                *s.reserved.entry(sku.to_owned()).or_default() -= quantity;
                if settlement == stock::Settlement::Consume
                    && let Some(p) = s.products.get_mut(sku)
                {
                    p.stock -= quantity;
                }
            }
        }
        Some(updated)
    }
}

#[async_trait::async_trait]
impl IdempotencyStore for MemStore {
    async fn idempotency_begin(
        &self,
        _tenant: &str,
        key: &str,
        request_hash: &str,
        now: DateTime<Utc>,
        lock_ttl: Duration,
        retention: Duration,
    ) -> Result<IdempotencyBegin, StoreError> {
        let mut s = self.state();
        let fresh = ExistingKey {
            request_hash: request_hash.to_owned(),
            response: None,
            locked_until: now + chrono::Duration::from_std(lock_ttl).unwrap(),
            created_at: now,
        };
        let Some(existing) = s.keys.get(key).cloned() else {
            s.keys.insert(key.to_owned(), fresh);
            return Ok(IdempotencyBegin::Started);
        };
        match decide_existing(existing, request_hash, now, retention) {
            KeyDecision::Answer(a) => Ok(a),
            KeyDecision::Replace | KeyDecision::TakeOver => {
                s.keys.insert(key.to_owned(), fresh);
                Ok(IdempotencyBegin::Started)
            }
        }
    }

    async fn idempotency_release(&self, key: &str) -> Result<(), StoreError> {
        let mut s = self.state();
        if s.keys.get(key).is_some_and(|k| k.response.is_none()) {
            s.keys.remove(key);
        }
        Ok(())
    }

    async fn idempotency_complete(
        &self,
        key: &str,
        response: &StoredResponse,
    ) -> Result<(), StoreError> {
        let mut s = self.state();
        match s.keys.get_mut(key) {
            Some(k) if k.response.is_none() => {
                k.response = Some(response.clone());
                Ok(())
            }
            _ => Err(StoreError::Conflict("key not in progress".into())),
        }
    }
}

#[async_trait::async_trait]
impl OrderStore for MemStore {
    async fn create_order(
        &self,
        order: &Order,
        events: &[NewEvent],
        idempotency: Option<(&str, &StoredResponse)>,
    ) -> Result<CreateOutcome, StoreError> {
        if self.fail_next_create.swap(false, Ordering::SeqCst) {
            return Err(unavailable());
        }
        let mut s = self.state();
        let demand = stock::demand(&order.lines);
        for (sku, &wanted) in &demand {
            let Some(product) = s.products.get(*sku) else {
                return Ok(CreateOutcome::Short(stock::Shortage::UnknownSku(
                    (*sku).to_owned(),
                )));
            };
            if s.read_product(product).stock < wanted {
                return Ok(CreateOutcome::Short(stock::Shortage::Insufficient {
                    sku: (*sku).to_owned(),
                    wanted,
                }));
            }
        }
        if let Some((key, response)) = idempotency {
            match s.keys.get_mut(key) {
                Some(k) if k.response.is_none() => k.response = Some(response.clone()),
                _ => return Err(StoreError::Conflict("key not in progress".into())),
            }
        }
        for (sku, wanted) in demand {
            *s.reserved.entry(sku.to_owned()).or_default() += wanted;
        }
        s.holding.insert(order.id);
        s.orders.insert(order.id, order.clone());
        s.events.extend(events.iter().cloned());
        Ok(CreateOutcome::Created)
    }

    async fn get_order(&self, id: Uuid) -> Result<Option<Order>, StoreError> {
        Ok(self.state().orders.get(&id).cloned())
    }

    async fn list_orders(&self, filter: &OrderFilter) -> Result<Vec<Order>, StoreError> {
        Ok(self
            .state()
            .orders
            .values()
            .rev()
            .filter(|o| o.tenant == filter.tenant)
            .filter(|o| filter.status.is_none_or(|s| o.status == s))
            .take(filter.limit as usize)
            .cloned()
            .collect())
    }

    async fn transition_order(
        &self,
        id: Uuid,
        expected_version: i64,
        new_status: OrderStatus,
        events: &[NewEvent],
        now: DateTime<Utc>,
    ) -> Result<TransitionOutcome, StoreError> {
        Ok(
            match self.write_transition(id, expected_version, new_status, events, now) {
                Some(o) => TransitionOutcome::Applied(o),
                None => TransitionOutcome::Stale,
            },
        )
    }

    async fn transition_order_once(
        &self,
        _tenant: &str,
        consumer: &str,
        message_id: &str,
        id: Uuid,
        expected_version: i64,
        new_status: OrderStatus,
        events: &[NewEvent],
        now: DateTime<Utc>,
    ) -> Result<InboxOutcome, StoreError> {
        let inbox_key = (consumer.to_owned(), message_id.to_owned());
        if self.state().inbox.contains(&inbox_key) {
            return Ok(InboxOutcome::Duplicate);
        }
        match self.write_transition(id, expected_version, new_status, events, now) {
            Some(o) => {
                self.state().inbox.insert(inbox_key);
                Ok(InboxOutcome::Applied(o))
            }
            None => Ok(InboxOutcome::Stale),
        }
    }
}

#[async_trait::async_trait]
impl InboxStore for MemStore {
    async fn record_inbox(
        &self,
        _tenant: &str,
        consumer: &str,
        message_id: &str,
        _now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Ok(self
            .state()
            .inbox
            .insert((consumer.to_owned(), message_id.to_owned())))
    }

    async fn inbox_contains(&self, consumer: &str, message_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .state()
            .inbox
            .contains(&(consumer.to_owned(), message_id.to_owned())))
    }
}

#[async_trait::async_trait]
impl OutboxStore for MemStore {
    async fn list_events(
        &self,
        tenant: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError> {
        Ok(self
            .state()
            .events
            .iter()
            .enumerate()
            .map(|(i, e)| EventRecord {
                seq: i as i64 + 1,
                id: e.id,
                event_type: e.event_type.clone(),
                source: e.source.clone(),
                subject: e.subject.clone(),
                tenant: e.tenant.clone(),
                occurred_at: e.occurred_at,
                data: e.data.clone(),
                traceparent: e.traceparent.clone(),
                tracestate: e.tracestate.clone(),
                published_at: None,
            })
            .filter(|e| e.seq > after_seq && e.tenant == tenant)
            .take(limit as usize)
            .collect())
    }

    async fn events_purged_through(&self, tenant: &str) -> Result<i64, StoreError> {
        Ok(self
            .state()
            .purged_through
            .get(tenant)
            .copied()
            .unwrap_or(0))
    }

    async fn outbox_stats(&self, _now: DateTime<Utc>) -> Result<OutboxStats, StoreError> {
        Ok(OutboxStats::default())
    }

    async fn claim_outbox(
        &self,
        _claimant: &str,
        _now: DateTime<Utc>,
        _lease: Duration,
        _limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError> {
        Ok(Vec::new())
    }

    async fn mark_published(&self, _ids: &[Uuid], _now: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(0)
    }

    async fn release_outbox(
        &self,
        _claimant: &str,
        _ids: &[Uuid],
        _retry_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl ProductStore for MemStore {
    async fn get_product(&self, sku: &str) -> Result<Option<Product>, StoreError> {
        let s = self.state();
        Ok(s.products.get(sku).map(|p| s.read_product(p)))
    }

    async fn list_products(
        &self,
        after_sku: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Product>, StoreError> {
        let s = self.state();
        Ok(s.products
            .values()
            .filter(|p| after_sku.is_none_or(|after| p.sku.as_str() > after))
            .take(limit as usize)
            .map(|p| s.read_product(p))
            .collect())
    }

    async fn upsert_product(&self, product: &Product) -> Result<Product, StoreError> {
        let mut s = self.state();
        s.products.insert(product.sku.clone(), product.clone());
        Ok(s.read_product(product))
    }

    async fn seed_products_if_empty(&self, products: &[Product]) -> Result<bool, StoreError> {
        let mut s = self.state();
        if !s.products.is_empty() {
            return Ok(false);
        }
        for p in products {
            s.products.insert(p.sku.clone(), p.clone());
        }
        Ok(true)
    }
}

/// The catalog read path without a cache: every lookup reads the products as stored.
#[async_trait::async_trait]
impl Catalog for MemStore {
    async fn get(&self, sku: &str) -> Result<Option<CatalogProduct>, CatalogError> {
        if self.catalog_down.load(Ordering::SeqCst) {
            return Err(CatalogError::Unavailable("catalog down".into()));
        }
        let s = self.state();
        Ok(s.products.get(sku).map(|p| s.read_product(p).into()))
    }
}

/// What the fake decider answers next.
pub enum Answer {
    /// Price every line at 100 per unit.
    Price,
    /// Refuse with this error.
    Fail(fn() -> DecideError),
    /// Never answer.
    Hang,
    /// Price correctly, then change the pricing like this (a lying decider).
    Lie(fn(&mut PricedOrder)),
}

/// A decider with scripted answers; transitions follow the reference lifecycle.
pub struct FakeDecider {
    pub place: Mutex<Answer>,
    /// When set, every transition decides this status, allowed or not.
    pub transition_to: Mutex<Option<OrderStatus>>,
    pub place_calls: AtomicU32,
    pub transition_calls: AtomicU32,
}

impl Default for FakeDecider {
    fn default() -> Self {
        Self {
            place: Mutex::new(Answer::Price),
            transition_to: Mutex::new(None),
            place_calls: AtomicU32::new(0),
            transition_calls: AtomicU32::new(0),
        }
    }
}

pub fn plugin() -> PluginRef {
    PluginRef {
        name: "fake".into(),
        version: "1.0.0".into(),
        digest: "00".repeat(32),
    }
}

#[async_trait::async_trait]
impl OrderDecider for FakeDecider {
    async fn place(
        &self,
        request: &OrderRequest,
        _cx: DecisionContext<'_>,
    ) -> Result<Decided<PricedOrder>, DecideError> {
        self.place_calls.fetch_add(1, Ordering::SeqCst);
        let mut lie = None;
        let answer = match &*lock(&self.place) {
            Answer::Price => None,
            Answer::Lie(f) => {
                lie = Some(*f);
                None
            }
            Answer::Fail(f) => Some(Err(f())),
            Answer::Hang => Some(Ok(())),
        };
        match answer {
            Some(Err(e)) => return Err(e),
            Some(Ok(())) => std::future::pending::<()>().await,
            None => {}
        }
        let money = |amount| Money::new(amount, request.currency.clone());
        let lines: Vec<PricedLine> = request
            .lines
            .iter()
            .map(|l| PricedLine {
                sku: l.sku.clone(),
                quantity: l.quantity,
                unit_price: money(100),
                line_total: money(100 * i64::from(l.quantity)),
            })
            .collect();
        let subtotal: i64 = lines.iter().map(|l| l.line_total.amount).sum();
        let mut priced = PricedOrder {
            lines,
            subtotal: money(subtotal),
            discount: money(0),
            tax: money(0),
            total: money(subtotal),
        };
        if let Some(lie) = lie {
            lie(&mut priced);
        }
        Ok(Decided {
            value: priced,
            by: plugin(),
        })
    }

    async fn transition(
        &self,
        order: &OrderSnapshot,
        event: OrderEvent,
        _cx: DecisionContext<'_>,
    ) -> Result<Decided<OrderStatus>, DecideError> {
        self.transition_calls.fetch_add(1, Ordering::SeqCst);
        if let Some(to) = *lock(&self.transition_to) {
            return Ok(Decided {
                value: to,
                by: plugin(),
            });
        }
        match crate::domain::status::allowed_targets(order.status, event).first() {
            Some(next) => Ok(Decided {
                value: *next,
                by: plugin(),
            }),
            None => Err(DecideError::Refused(OrderError::Conflict(format!(
                "{event} does not apply to a {} order",
                order.status
            )))),
        }
    }
}

/// An intake gate that can be closed.
#[derive(Default)]
pub struct Gate(pub AtomicBool);

impl IntakeGate for Gate {
    fn admit(&self) -> Result<(), Duration> {
        if self.0.load(Ordering::SeqCst) {
            Err(Duration::from_secs(7))
        } else {
            Ok(())
        }
    }
}

/// Collects detached tasks; the test runs them when it wants.
#[derive(Default)]
pub struct Tasks(pub Mutex<Vec<Detached>>);

impl Spawner for Tasks {
    fn spawn(&self, task: Detached) {
        lock(&self.0).push(task);
    }
}

impl Tasks {
    pub fn run_all(&self) {
        let tasks: Vec<Detached> = std::mem::take(&mut *lock(&self.0));
        for t in tasks {
            futures::executor::block_on(t);
        }
    }
}

#[async_trait::async_trait]
impl ComponentStore for MemStore {
    async fn put_component(
        &self,
        record: &ComponentRecord,
        bytes: &[u8],
    ) -> Result<PutComponent, StoreError> {
        let mut s = self.state();
        if let Some((existing, _)) = s.components.get(&record.digest) {
            return Ok(PutComponent::Existing(existing.clone()));
        }
        if let Some((taken, _)) = s.components.values().find(|(r, _)| {
            !crate::ports::releases::may_reuse_version(&record.admitted_by)
                && r.name == record.name
                && r.version == record.version
        }) {
            return Ok(PutComponent::VersionTaken(taken.clone()));
        }
        s.components
            .insert(record.digest.clone(), (record.clone(), bytes.to_vec()));
        Ok(PutComponent::Inserted)
    }

    async fn get_component(&self, digest: &str) -> Result<Option<ComponentRecord>, StoreError> {
        Ok(self.state().components.get(digest).map(|(r, _)| r.clone()))
    }

    async fn component_bytes(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.state().components.get(digest).map(|(_, b)| b.clone()))
    }

    async fn list_components(
        &self,
        name: Option<&str>,
    ) -> Result<Vec<ComponentRecord>, StoreError> {
        Ok(self
            .state()
            .components
            .values()
            .filter(|(r, _)| name.is_none_or(|n| r.name == n))
            .map(|(r, _)| r.clone())
            .collect())
    }
}

#[async_trait::async_trait]
impl ReleaseStore for MemStore {
    async fn get_release(&self, name: &str) -> Result<Option<Release>, StoreError> {
        Ok(self.state().releases.get(name).cloned())
    }

    async fn list_releases(&self) -> Result<Vec<Release>, StoreError> {
        Ok(self.state().releases.values().cloned().collect())
    }

    async fn swap_release(
        &self,
        expected: i64,
        next: &Release,
        audit: &ReleaseAudit,
    ) -> Result<bool, StoreError> {
        let mut s = self.state();
        let current = s.releases.get(&next.name).map_or(0, |r| r.generation);
        if current != expected {
            return Ok(false);
        }
        s.releases.insert(next.name.clone(), next.clone());
        s.history.push(audit.clone());
        Ok(true)
    }

    async fn release_history(
        &self,
        name: &str,
        limit: u32,
    ) -> Result<Vec<ReleaseAudit>, StoreError> {
        Ok(self
            .state()
            .history
            .iter()
            .rev()
            .filter(|a| a.name == name)
            .take(limit as usize)
            .cloned()
            .collect())
    }
}
