//! Weir's core: the order domain, the ports it needs, and the use-cases.
//!
//! This crate knows nothing of HTTP, SQL, AMQP or WebAssembly: it depends on no framework or
//! driver, and the compiler keeps it that way (`weir-host` depends on it, never the other
//! way round).
//!
//! # Layout
//!
//! - [`domain`]: orders, statuses and the allowed transitions, money, the priced-order
//!   contract, events, idempotency hashing and its state machine, products.
//! - [`ports`]: the traits the use-cases need: order, idempotency, outbox, inbox and product
//!   stores, the catalog, the order decider, the intake gate, the clock.
//! - [`app`]: the use-cases, one file each: place an order, apply a transition, queries.
//!
//! Arrows point down: `app` uses `ports` and `domain`, `ports` uses `domain`, `domain` uses
//! nothing of this crate but itself.

pub mod app;
pub mod domain;
pub mod ports;
