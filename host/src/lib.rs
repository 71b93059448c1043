//! Weir: a service host whose order business logic runs as sandboxed WebAssembly components.
//!
//! # Layout
//! - [`runtime`]: the wasmtime engine, bindings, budgets, registry and invocation.
//! - [`capabilities`]: host implementations of the interfaces plugins import.
//! - [`config`]: configuration types, loading and validation.
//! - [`storage`]: the store trait with SQLite and PostgreSQL implementations.
//! - [`events`]: RabbitMQ outbox relay, idempotent consumer, dead letters, backpressure.
//! - [`http`]: the public API (handlers, problem responses, extractors).
//! - [`health`]: the operations listener (`/livez`, `/readyz`, `/infoz`).
//! - [`admin`]: the admin bearer-token guard ([`admin::AdminAuth`]) and rotation endpoints.
//! - [`shutdown`]: the graceful-shutdown coordinator and the [`shutdown::Shutdown`] handle.
//! - [`worker`]: supervised background workers (cancellation, spans, metrics, restarts).
//! - [`server`]: start-up wiring of all of the above.
//! - [`telemetry`]: JSON logs and OpenTelemetry traces, metrics and logs (OTLP), sampling,
//!   W3C propagation.
//! - [`plugin_check`]: `weir plugin check`.
//! - [`policy`]: edge and dependency policies as tower layers (one per file).
//! - [`metrics`]: the meter provider and the Prometheus text of `/metrics`.
//! - [`cache`]: the catalog read path (cache, then database).

pub mod admin;
pub mod cache;
pub mod capabilities;
pub mod config;
pub mod events;
pub mod health;
pub mod http;
pub mod metrics;
pub mod plugin_check;
pub mod policy;
pub mod runtime;
pub mod server;
pub mod shutdown;
pub mod storage;
pub mod telemetry;
pub mod worker;
