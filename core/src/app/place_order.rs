//! Place an order.
//!
//! Idempotency check -> intake gate -> decider `place` -> the host's contract
//! ([`crate::domain::contract::check_priced`]) -> ONE transaction reserving the stock and
//! writing the order, its `order.placed` outbox event and the completed idempotency record. A failure before the
//! transaction commits releases the key (transient failures: a retry runs again) or stores
//! the deterministic answer (business refusals: a retry replays it), so a client retry is
//! safe either way. If the caller's future is dropped mid-way (request timeout, client gone,
//! shutdown) the key is released in the background, so the retry is not blocked until the
//! lock expires.

use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::OrderService;
use super::checked_refusal;
use crate::chain;
use crate::domain::contract::check_priced;
use crate::domain::events::order_placed;
use crate::domain::stock::Shortage;
use crate::domain::{
    IdempotencyBegin, Order, OrderError, OrderLine, OrderRequest, OrderStatus, PricedOrder,
    Rejection, StoredResponse, TraceContext,
};
use crate::ports::{
    CreateOutcome, DecideError, Decided, DecisionContext, IdempotencyStore, RoutingKey, Spawner,
    StoreError,
};

/// A request to place an order.
#[derive(Debug, Clone)]
pub struct PlaceOrder {
    /// The tenant placing the order ([`crate::domain::tenant`]).
    pub tenant: String,
    /// The idempotency key, already scoped by the caller (tenant, route).
    pub idempotency_key: String,
    /// Canonical hash of the request ([`crate::domain::idempotency::request_hash`]).
    pub request_hash: String,
    /// What the client asks for.
    pub request: OrderRequest,
    /// When the decision must be made by.
    pub deadline: Instant,
    /// Trace context carried into the `order.placed` event.
    pub trace: TraceContext,
}

/// Turns outcomes into the responses stored for replay. Implemented by the API adapter: the
/// stored bytes are exactly what the client got.
pub trait ResponseEncoder: Send + Sync {
    /// The response to a placed order.
    fn created(&self, order: &Order) -> StoredResponse;
    /// The response to a deterministic refusal ([`OrderError::is_deterministic`]).
    fn refused(&self, error: &OrderError) -> StoredResponse;
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "a one-off return value, never stored in bulk"
)]
pub enum Placed {
    /// A new order was written; `response` was stored with the key.
    Created {
        /// The order as stored.
        order: Order,
        /// The response stored for replay.
        response: StoredResponse,
    },
    /// The key completed earlier with the same request: the stored response.
    Replayed(StoredResponse),
}

/// Why no order was placed.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    /// The key was used with a different request.
    #[error("this idempotency key was already used with a different request")]
    KeyReused,
    /// Another attempt with the key is running.
    #[error("a request with this idempotency key is still in progress")]
    KeyInProgress {
        /// When to retry.
        retry_after: Duration,
    },
    /// Intake is paused (events backpressure); nothing was written and the key released.
    #[error("order intake is paused while the event backlog drains")]
    Backpressure {
        /// When to retry.
        retry_after: Duration,
    },
    /// The decider refused or failed, or its decision broke the contract. A deterministic
    /// refusal was stored with the key.
    #[error(transparent)]
    Decide(DecideError),
    /// The host refused the priced order: its stock could not be reserved (`rejected` with
    /// `INSUFFICIENT_STOCK` or `UNKNOWN_SKU`). Stored with the key like a decider's refusal.
    #[error("{0}")]
    Refused(OrderError),
    /// A store call failed during `step`.
    #[error("{step}")]
    Store {
        /// What the use-case was doing.
        step: &'static str,
        /// The store's error.
        #[source]
        source: StoreError,
    },
}

fn store(step: &'static str) -> impl FnOnce(StoreError) -> PlaceError {
    move |source| PlaceError::Store { step, source }
}

impl OrderService {
    /// Place an order (see the module doc).
    pub async fn place_order(
        &self,
        cmd: PlaceOrder,
        encoder: &dyn ResponseEncoder,
    ) -> Result<Placed, PlaceError> {
        let p = &self.ports;
        let s = &self.settings;
        let begun = p
            .idempotency
            .idempotency_begin(
                &cmd.tenant,
                &cmd.idempotency_key,
                &cmd.request_hash,
                p.clock.now(),
                s.lock_ttl,
                s.retention,
            )
            .await
            .map_err(store("claiming the idempotency key"))?;
        match begun {
            IdempotencyBegin::Started => {}
            IdempotencyBegin::Replay(stored) => return Ok(Placed::Replayed(stored)),
            IdempotencyBegin::Mismatch => return Err(PlaceError::KeyReused),
            IdempotencyBegin::InProgress { retry_after } => {
                return Err(PlaceError::KeyInProgress { retry_after });
            }
        }
        // From here the key is ours: every path below completes or releases it, and the guard
        // releases it if this future is dropped first.
        let guard = ReleaseOnDrop {
            store: p.idempotency.clone(),
            spawner: p.spawner.clone(),
            key: Some(cmd.idempotency_key.clone()),
        };
        let outcome = self.place_claimed(&cmd, encoder).await;
        guard.disarm();
        outcome
    }

    async fn place_claimed(
        &self,
        cmd: &PlaceOrder,
        encoder: &dyn ResponseEncoder,
    ) -> Result<Placed, PlaceError> {
        let p = &self.ports;
        let key = cmd.idempotency_key.as_str();
        // Checked after the key so replays of completed requests are still served.
        if let Err(retry_after) = p.intake.admit() {
            self.release(key).await;
            return Err(PlaceError::Backpressure { retry_after });
        }
        let cx = DecisionContext {
            deadline: cmd.deadline,
            routing_key: RoutingKey::new(key),
        };
        let decided = match self.price(&cmd.request, cx).await {
            Ok(decided) => decided,
            Err(DecideError::Refused(refusal)) if refusal.is_deterministic() => {
                self.complete_refused(key, &encoder.refused(&refusal)).await;
                return Err(PlaceError::Decide(DecideError::Refused(refusal)));
            }
            // Failures, and pricings that break the host's contract: nothing is stored.
            Err(e) => {
                self.release(key).await;
                return Err(PlaceError::Decide(e));
            }
        };

        let now = p.clock.now_micros();
        let priced = decided.value;
        let order = Order {
            id: Uuid::now_v7(),
            tenant: cmd.tenant.clone(),
            customer_id: cmd.request.customer_id.clone(),
            currency: cmd.request.currency.clone(),
            status: OrderStatus::Placed,
            lines: priced
                .lines
                .iter()
                .map(|l| OrderLine {
                    sku: l.sku.clone(),
                    quantity: l.quantity,
                    unit_price: l.unit_price.amount,
                    line_total: l.line_total.amount,
                })
                .collect(),
            subtotal: priced.subtotal.amount,
            discount: priced.discount.amount,
            tax: priced.tax.amount,
            total: priced.total.amount,
            metadata: cmd
                .request
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
            plugin: decided.by,
            version: 1,
            created_at: now,
            updated_at: now,
        };
        let event = order_placed(&self.settings.event_source, &cmd.trace, &order);
        let response = encoder.created(&order);
        match p
            .orders
            .create_order(&order, &[event], Some((key, &response)))
            .await
        {
            Ok(CreateOutcome::Created) => Ok(Placed::Created { order, response }),
            Ok(CreateOutcome::Short(shortage)) => {
                let refusal = shortage_refusal(&shortage);
                self.complete_refused(key, &encoder.refused(&refusal)).await;
                Err(PlaceError::Refused(refusal))
            }
            Err(e) => {
                self.release(key).await;
                Err(store(
                    "writing the order, its event and the idempotency record",
                )(e))
            }
        }
    }

    /// The pricing step placing and quoting share: the decider's `place` (routed by
    /// `cx.routing_key`), its refusal checked ([`checked_refusal`]) and its pricing held to the
    /// host's contract ([`check_priced`]), whatever decided. A pricing that breaks the contract
    /// is `DecideError::Contract`.
    pub(crate) async fn price(
        &self,
        request: &OrderRequest,
        cx: DecisionContext<'_>,
    ) -> Result<Decided<PricedOrder>, DecideError> {
        let decided = self
            .ports
            .decider
            .place(request, cx)
            .await
            .map_err(checked_refusal)?;
        check_priced(request, &decided.value).map_err(DecideError::Contract)?;
        Ok(decided)
    }

    /// Store a deterministic refusal with the key so a retry replays it; if that fails, give
    /// the key back so the retry runs again.
    async fn complete_refused(&self, key: &str, response: &StoredResponse) {
        if let Err(e) = self
            .ports
            .idempotency
            .idempotency_complete(key, response)
            .await
        {
            tracing::warn!(error = %chain(&e), "could not store the idempotent error response; releasing the key");
            self.release(key).await;
        }
    }

    /// Give the key back after a failure without effects; a failure to do so only delays the
    /// client's retry until the lock expires.
    async fn release(&self, key: &str) {
        if let Err(e) = self.ports.idempotency.idempotency_release(key).await {
            tracing::warn!(error = %chain(&e), "could not release the idempotency key; retries get 409 until its lock expires");
        }
    }
}

/// The host's answer to a priced order whose stock cannot be reserved: the same `rejected`
/// reasons the reference plugin uses when it sees the shortage itself.
fn shortage_refusal(shortage: &Shortage) -> OrderError {
    let (reason, message) = match shortage {
        Shortage::UnknownSku(sku) => ("UNKNOWN_SKU", format!("no product with sku {sku}")),
        Shortage::Insufficient { sku, wanted } => (
            "INSUFFICIENT_STOCK",
            format!("fewer than {wanted} unit(s) of {sku} are available"),
        ),
    };
    OrderError::Rejected(Rejection {
        reason: reason.to_owned(),
        message,
    })
}

/// Releases a claimed idempotency key when dropped while armed (the use-case's future was
/// dropped before it could complete or release the key itself).
struct ReleaseOnDrop {
    store: Arc<dyn IdempotencyStore>,
    spawner: Arc<dyn Spawner>,
    key: Option<String>,
}

impl ReleaseOnDrop {
    fn disarm(mut self) {
        self.key = None;
    }
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let store = self.store.clone();
            self.spawner.spawn(Box::pin(async move {
                if let Err(e) = store.idempotency_release(&key).await {
                    tracing::warn!(error = %chain(&e), "could not release the idempotency key of a cancelled request");
                }
            }));
        }
    }
}
