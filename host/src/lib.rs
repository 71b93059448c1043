//! Weir: a service host whose order business logic runs as sandboxed WebAssembly components.
//!
//! # Layout
//! - [`runtime`]: the wasmtime engine, bindings, budgets, registry and invocation.
//! - [`capabilities`]: host implementations of the interfaces plugins import.
//! - [`config`]: configuration types, loading and validation.
//! - [`storage`]: the store trait with SQLite and PostgreSQL implementations.
//! - [`http`]: the public API (handlers, problem responses, extractors).
//! - [`health`]: the operations listener (`/livez`, `/readyz`, `/infoz`).
//! - [`server`]: start-up wiring of all of the above.
//! - [`telemetry`]: logging set-up.
//! - [`plugin_check`]: `weir plugin check`.

pub mod capabilities;
pub mod config;
pub mod health;
pub mod http;
pub mod plugin_check;
pub mod runtime;
pub mod server;
pub mod storage;
pub mod telemetry;
