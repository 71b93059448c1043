//! Weir's cross-crate integration tests: one binary.
//!
//! - `runtime`: real components through the real engine (typed errors, hostile plugins).
//! - `api`: the HTTP API against SQLite and PostgreSQL, error catalog, idempotency, crash safety.
//! - `shutdown`: rotation (admin API), readiness while draining, the pre-stop delay.

mod api;
mod events;
mod policies;
mod runtime;
mod shutdown;
mod support;
mod telemetry;
