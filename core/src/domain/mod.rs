//! The order domain: plain data and pure rules, no I/O.
//!
//! - [`order`]: orders, their lines, statuses and the plugin version that decided them.
//! - [`status`]: the events that move an order and the status graph they may follow.
//! - [`money`]: amounts in integer minor units of an ISO 4217 currency.
//! - [`pricing`]: the priced order a decider hands back for an order request.
//! - [`contract`]: what a priced order and a transition decision must satisfy before anything
//!   is stored.
//! - [`error`]: the business errors a decider may answer with (the WIT `order-error`).
//! - [`events`]: the outbox event shape, the CloudEvents view and the order-event builders.
//! - [`idempotency`]: request hashing and the idempotency key state machine.
//! - [`product`]: catalog products and their validation.
//! - [`stock`]: stock reservations held by orders and settled when they end.
//! - [`release`]: plugin releases (stable, canary, shadow), their rules and sticky routing.
//! - [`tenant`]: tenant names and the default tenant.

pub mod contract;
pub mod error;
pub mod events;
pub mod idempotency;
pub mod money;
pub mod order;
pub mod pricing;
pub mod product;
#[cfg(test)]
mod proptests;
pub mod release;
pub mod status;
pub mod stock;
pub mod tenant;

pub use contract::{ContractRule, ContractViolation};
pub use error::{OrderError, Rejection, Violation};
pub use events::{CloudEvent, EventRecord, NewEvent, TraceContext};
pub use idempotency::{IdempotencyBegin, StoredResponse};
pub use money::Money;
pub use order::{
    LineRequest, Order, OrderLine, OrderRequest, OrderSnapshot, OrderStatus, PluginRef,
    UnknownOrderStatus,
};
pub use pricing::{PricedLine, PricedOrder};
pub use product::{CatalogProduct, Product};
pub use status::OrderEvent;
