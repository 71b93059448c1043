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

/// An error and its causes on one line, `a: b: c` (what `{:#}` prints for `anyhow`).
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

pub mod domain;
pub mod ports;
