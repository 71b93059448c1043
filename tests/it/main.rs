//! Weir's cross-crate integration tests: one binary.
//!
//! - `runtime`: real components through the real engine (typed errors, hostile plugins).
//! - `api`: the HTTP API against SQLite and PostgreSQL, error catalog, idempotency, crash safety.

mod api;
mod runtime;
mod support;
