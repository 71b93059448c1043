//! Apply an event to an order: the decider picks the next status, the store writes it with
//! its `order.<status>` event, guarded by optimistic concurrency.
//!
//! The one retry loop: read the order, decide, write if the order's version is unchanged; a
//! concurrent change makes the write stale, and the event is decided again on the fresh order
//! a bounded number of times. The cancel route calls this without an inbox key; the payments
//! consumer with one, so that the transition and the message's inbox record commit together
//! and a redelivered message has no second effect.

use std::time::Instant;

use uuid::Uuid;

use super::OrderService;
use crate::domain::events::order_transitioned;
use crate::domain::{Order, OrderEvent, OrderStatus, TraceContext};
use crate::ports::{DecideError, DecisionContext, InboxOutcome, StoreError, TransitionOutcome};

/// Which consumer processes which message, for inbox deduplication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxKey {
    /// Consumer name (dedupe is per consumer).
    pub consumer: String,
    /// The message id.
    pub message_id: String,
}

/// A request to apply `event` to an order.
#[derive(Debug, Clone)]
pub struct ApplyTransition {
    /// The order.
    pub order_id: Uuid,
    /// What happened.
    pub event: OrderEvent,
    /// When every decision must be made by.
    pub deadline: Instant,
    /// Trace context carried into the event.
    pub trace: TraceContext,
    /// Set when the event comes from a message: the transition is applied at most once per
    /// message id.
    pub inbox: Option<InboxKey>,
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
        if let Some(inbox) = &cmd.inbox
            && p.inbox
                .inbox_contains(&inbox.consumer, &inbox.message_id)
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
                .ok_or(TransitionError::NotFound(cmd.order_id))?;
            let cx = DecisionContext {
                deadline: cmd.deadline,
                routing_key: &routing_key,
            };
            let next = p
                .decider
                .transition(&order.snapshot(), cmd.event, cx)
                .await
                .map_err(|source| TransitionError::Decide {
                    status: order.status,
                    source,
                })?
                .value;
            let now = p.clock.now_micros();
            if next == order.status {
                return match &cmd.inbox {
                    None => Ok(Transitioned::Unchanged(order)),
                    Some(inbox) => {
                        let recorded = p
                            .inbox
                            .record_inbox(&inbox.message_id, &inbox.consumer, now)
                            .await
                            .map_err(store("recording the message in the inbox"))?;
                        Ok(if recorded {
                            Transitioned::Unchanged(order)
                        } else {
                            Transitioned::Duplicate
                        })
                    }
                };
            }
            let event =
                order_transitioned(&self.settings.event_source, &cmd.trace, &order, next, now);
            let step = "writing the transition and its event";
            match &cmd.inbox {
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
                Some(inbox) => match p
                    .orders
                    .transition_order_once(
                        &inbox.consumer,
                        &inbox.message_id,
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
            }
        }
        Err(TransitionError::KeptChanging)
    }
}
