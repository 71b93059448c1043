//! The use-cases: one file each. The HTTP handlers and the AMQP consumer of the host call
//! these and nothing below them.
//!
//! - [`place_order`]: idempotency, the decider's pricing, and the ONE transaction that writes
//!   the order, its `order.placed` event and the completed idempotency record.
//! - [`quote_order`]: the decider's pricing of a request, checked against the host's
//!   contract, with the stock the catalog read path has; nothing is stored.
//! - [`transition`]: apply an event to an order through the decider, with optimistic
//!   concurrency (the one retry loop, shared by the cancel route and the payments consumer).
//! - [`queries`]: reads (orders, the events feed, products) and product updates.
//! - [`releases`]: plugin components and releases (compare-and-set, audited).
//! - [`retention`]: expired records deleted in bounded batches.

pub mod place_order;
pub mod queries;
pub mod quote_order;
pub mod releases;
pub mod retention;
pub mod transition;

#[cfg(test)]
mod fakes;

use std::sync::Arc;
use std::time::Duration;

use crate::domain::contract::check_refusal;
use crate::ports::{
    Catalog, Clock, DecideError, IdempotencyStore, InboxStore, IntakeGate, OrderDecider,
    OrderStore, OutboxStore, ProductStore, Spawner,
};

pub use place_order::{PlaceError, PlaceOrder, Placed, ResponseEncoder};
pub use queries::{FeedError, FeedPage, ProductError};
pub use quote_order::{Quote, QuoteError, QuoteKey, QuoteOrder};
pub use releases::{Registered, ReleaseError, ReleaseService};
pub use retention::{Purged, RetentionPolicy, purge_expired};
pub use transition::{ApplyTransition, InboxKey, TransitionError, Transitioned};

/// A decider's refusal that is too large or malformed to show, log or store is a broken
/// contract ([`check_refusal`]); every other answer passes unchanged.
pub(crate) fn checked_refusal(e: DecideError) -> DecideError {
    match e {
        DecideError::Refused(refusal) => match check_refusal(&refusal) {
            Ok(()) => DecideError::Refused(refusal),
            Err(violation) => DecideError::Contract(violation),
        },
        other => other,
    }
}

/// What the use-cases run against.
#[derive(Clone)]
pub struct Ports {
    /// Orders (and the events and idempotency completion written with them).
    pub orders: Arc<dyn OrderStore>,
    /// Idempotency keys.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// The consumer inbox.
    pub inbox: Arc<dyn InboxStore>,
    /// The outbox feed.
    pub outbox: Arc<dyn OutboxStore>,
    /// The product catalog.
    pub products: Arc<dyn ProductStore>,
    /// The catalog as deciders read it (cached by the host): what a quote's availability is
    /// read from.
    pub catalog: Arc<dyn Catalog>,
    /// The business decisions.
    pub decider: Arc<dyn OrderDecider>,
    /// Whether new orders are admitted.
    pub intake: Arc<dyn IntakeGate>,
    /// Wall-clock time.
    pub clock: Arc<dyn Clock>,
    /// Detached clean-up work.
    pub spawner: Arc<dyn Spawner>,
}

/// Settings of the use-cases.
#[derive(Debug, Clone)]
pub struct Settings {
    /// CloudEvents `source` of the events produced.
    pub event_source: String,
    /// How long a claimed idempotency key blocks other attempts.
    pub lock_ttl: Duration,
    /// How long a key and its stored response are kept.
    pub retention: Duration,
    /// How many times a transition is decided again after a concurrent change.
    pub transition_attempts: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            event_source: crate::domain::events::DEFAULT_SOURCE.to_owned(),
            lock_ttl: Duration::from_secs(30),
            retention: Duration::from_secs(24 * 3600),
            transition_attempts: 3,
        }
    }
}

/// The order use-cases over one set of ports. Cheap to clone.
#[derive(Clone)]
pub struct OrderService {
    ports: Ports,
    settings: Arc<Settings>,
}

impl std::fmt::Debug for OrderService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderService")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl OrderService {
    /// The use-cases over `ports` with `settings`.
    pub fn new(ports: Ports, settings: Settings) -> Self {
        Self {
            ports,
            settings: Arc::new(settings),
        }
    }
}

#[cfg(test)]
mod tests;
