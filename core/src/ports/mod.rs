//! The ports: what the use-cases need from the world, as traits. Adapters in `weir-host`
//! implement them (SQLite and PostgreSQL stores, the WebAssembly decider, the events
//! backpressure gate); the use-case tests implement them in memory.
//!
//! - [`store`]: order, idempotency, outbox, inbox and product stores, split by aggregate, and
//!   their one error type.
//! - [`catalog`]: product lookups for deciders.
//! - [`decider`]: the order decider (place / transition) and its failures.
//! - [`intake`]: the gate that can hold back new orders (events backpressure).
//! - [`releases`]: stored plugin components and their releases.
//! - [`clock`]: wall-clock time and background spawning.

pub mod catalog;
pub mod clock;
pub mod decider;
pub mod intake;
pub mod releases;
pub mod store;

pub use catalog::{Catalog, CatalogError};
pub use clock::{Clock, Detached, Spawner, SystemClock};
pub use decider::{
    BudgetKind, DecideError, Decided, DecisionContext, Detail, OrderDecider, RoutingKey, TrapKind,
};
pub use intake::IntakeGate;
pub use releases::{ComponentRecord, ComponentStore, PutComponent, ReleaseStore};
pub use store::{
    CreateOutcome, DriverError, Expiring, IdempotencyStore, InboxOutcome, InboxStore, OrderFilter,
    OrderStore, OutboxStats, OutboxStore, ProductStore, RetentionStore, StoreError,
    TransitionOutcome,
};
