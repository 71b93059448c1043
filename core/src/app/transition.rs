//! Apply an event to an order: the decider picks the next status among those the status
//! graph allows ([`crate::domain::contract::check_transition`]), the store writes it with its
//! `order.<status>` event and settles the stock reservation when the order ends, guarded by
//! optimistic concurrency. A payment is applied only if it pays the order's total.
//!
//! The one retry loop: read the order, decide, write if the order's version is unchanged; a
//! concurrent change makes the write stale, and the event is decided again on the fresh order
//! a bounded number of times. The cancel route calls this without an inbox key; the payments
//! consumer with one, so that the transition and the message's inbox record commit together
//! and a redelivered message has no second effect.

use std::time::Instant;

use uuid::Uuid;

use super::OrderService;
use super::checked_refusal;
use crate::domain::contract::check_transition;
use crate::domain::events::order_transitioned;
use crate::domain::{Money, Order, OrderEvent, OrderStatus, TraceContext};
use crate::ports::{
    DecideError, DecisionContext, InboxOutcome, RoutingKey, StoreError, TransitionOutcome,
};

/// Which consumer processes which message, for inbox deduplication. A message is identified
/// by its source and id together (the CloudEvents rule): the same id from two sources is two
/// messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxKey {
    /// Consumer name (dedupe is per consumer).
    pub consumer: String,
    /// Where the message comes from (CloudEvents `source`); contains no whitespace.
    pub source: String,
    /// The message id (CloudEvents `id`).
    pub message_id: String,
}

impl InboxKey {
    /// The key the inbox stores: `"<source> <id>"`. Unambiguous because a source contains no
    /// whitespace (the consumer refuses one that does).
    pub fn dedupe_key(&self) -> String {
        format!("{} {}", self.source, self.message_id)
    }
}

/// A request to apply `event` to an order.
#[derive(Debug, Clone)]
pub struct ApplyTransition {
    /// The order.
    pub order_id: Uuid,
    /// The caller's tenant: an order of another tenant is [`TransitionError::NotFound`].
    /// `None` for the service's own consumers, which act on any tenant's order by id.
    pub tenant: Option<String>,
    /// What happened.
    pub event: OrderEvent,
    /// When every decision must be made by.
    pub deadline: Instant,
    /// Trace context carried into the event.
    pub trace: TraceContext,
    /// Set when the event comes from a message: the transition is applied at most once per
    /// message.
    pub inbox: Option<InboxKey>,
    /// For a captured payment: the amount captured. The event applies only if it equals the
    /// order's total in the order's currency.
    pub paid: Option<Money>,
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "a one-off return value, never stored in bulk"
)]
pub enum Transitioned {
    /// The order moved; it is returned as stored.
    Applied(Order),
    /// The order already is where the event takes it; nothing changed (with an inbox key, the
    /// message was recorded).
    Unchanged(Order),
    /// The message was processed before: nothing was done.
    Duplicate,
}

/// Why the event was not applied.
#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    /// No such order.
    #[error("order {0} not found")]
    NotFound(Uuid),
    /// The decider refused or failed for the order in `status`.
    #[error("deciding the transition of an order in status {status}")]
    Decide {
        /// The order's status when the decider was asked.
        status: OrderStatus,
        /// What the decider said.
        #[source]
        source: DecideError,
    },
    /// A store call failed during `step`.
    #[error("{step}")]
    Store {
        /// What the use-case was doing.
        step: &'static str,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// The order changed concurrently on every attempt.
    #[error("the order kept changing concurrently")]
    KeptChanging,
    /// A payment that does not pay the order's total: never applied.
    #[error("payment of {} {} does not match the order total {} {}", .paid.amount, .paid.currency, .due.amount, .due.currency)]
    PaymentMismatch {
        /// What the message says was captured.
        paid: Money,
        /// The order's total.
        due: Money,
    },
}

fn store(step: &'static str) -> impl FnOnce(StoreError) -> TransitionError {
    move |source| TransitionError::Store { step, source }
}

impl OrderService {
    /// Apply an event to an order (see the module doc).
    pub async fn apply_transition(
        &self,
        cmd: ApplyTransition,
    ) -> Result<Transitioned, TransitionError> {
        let p = &self.ports;
        // (consumer, dedupe key) of a message.
        let inbox = cmd
            .inbox
            .as_ref()
            .map(|k| (k.consumer.as_str(), k.dedupe_key()));
        if let Some((consumer, key)) = &inbox
            && p.inbox
                .inbox_contains(consumer, key)
                .await
                .map_err(store("checking the inbox"))?
        {
            return Ok(Transitioned::Duplicate);
        }
        let routing_key = cmd.order_id.to_string();
        for _ in 0..self.settings.transition_attempts.max(1) {
            let order = p
                .orders
                .get_order(cmd.order_id)
                .await
                .map_err(store("reading the order"))?
                .filter(|o| cmd.tenant.as_ref().is_none_or(|t| *t == o.tenant))
                .ok_or(TransitionError::NotFound(cmd.order_id))?;
            if let Some(paid) = &cmd.paid {
                let due = Money::new(order.total, order.currency.clone());
                if *paid != due {
                    return Err(TransitionError::PaymentMismatch {
                        paid: paid.clone(),
                        due,
                    });
                }
            }
            let cx = DecisionContext {
                deadline: cmd.deadline,
                routing_key: RoutingKey::new(&routing_key),
            };
            let next = p
                .decider
                .transition(&order.snapshot(), cmd.event, cx)
                .await
                .map_err(checked_refusal)
                .map_err(|source| TransitionError::Decide {
                    status: order.status,
                    source,
                })?
                .value;
            // The graph is the host's: a decision outside it is a broken contract.
            check_transition(order.status, cmd.event, next).map_err(|violation| {
                TransitionError::Decide {
                    status: order.status,
                    source: DecideError::Contract(violation),
                }
            })?;
            let now = p.clock.now_micros();
            if next == order.status {
                return match &inbox {
                    Some((consumer, key)) => {
                        let recorded = p
                            .inbox
                            .record_inbox(&order.tenant, consumer, key, now)
                            .await
                            .map_err(store("recording the message in the inbox"))?;
                        Ok(if recorded {
                            Transitioned::Unchanged(order)
                        } else {
                            Transitioned::Duplicate
                        })
                    }
                    None => Ok(Transitioned::Unchanged(order)),
                };
            }
            let event =
                order_transitioned(&self.settings.event_source, &cmd.trace, &order, next, now);
            let step = "writing the transition and its event";
            match &inbox {
                Some((consumer, key)) => match p
                    .orders
                    .transition_order_once(
                        &order.tenant,
                        consumer,
                        key,
                        order.id,
                        order.version,
                        next,
                        &[event],
                        now,
                    )
                    .await
                    .map_err(store(step))?
                {
                    InboxOutcome::Applied(updated) => return Ok(Transitioned::Applied(updated)),
                    InboxOutcome::Duplicate => return Ok(Transitioned::Duplicate),
                    InboxOutcome::Stale => continue,
                },
                None => match p
                    .orders
                    .transition_order(order.id, order.version, next, &[event], now)
                    .await
                    .map_err(store(step))?
                {
                    TransitionOutcome::Applied(updated) => {
                        return Ok(Transitioned::Applied(updated));
                    }
                    TransitionOutcome::Stale => continue,
                },
            }
        }
        Err(TransitionError::KeptChanging)
    }
}
