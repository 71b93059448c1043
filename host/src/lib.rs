//! Weir: a service host whose order business logic runs as sandboxed WebAssembly components.
//!
//! The order domain, its ports and its use-cases live in the `weir-core` crate, which knows
//! nothing of HTTP, SQL, AMQP or WebAssembly. This crate is the adapters around it, in layers
//! whose arrows only point down: a module uses only modules of lower layers (or, within a
//! layer, modules listed before it). A unit test (`layering.rs`) fails on any upward or
//! cyclic `crate::` path.
//!
//! # Layout
//!
//! 1. Foundations
//!    - [`support`]: serde helpers for durations, secrets and secret URLs, build facts.
//!    - [`telemetry`]: JSON logs, OpenTelemetry traces/metrics/logs, sampling, propagation,
//!      the meter provider and `/metrics` text.
//!    - [`lifecycle`]: the shutdown handle and drain coordinator, supervised workers.
//! 2. Adapters of the core's ports and the plugin boundary
//!    - [`storage`]: the SQLite and PostgreSQL stores, and the traced store wrapper.
//!    - [`world`]: the `weir:orders` bindings and WIT <-> core conversions.
//!    - [`capabilities`]: the host side of the interfaces plugins import, one file each.
//!    - [`policy`]: edge and dependency policies as tower layers, one per file.
//! 3. Engines and background paths
//!    - [`runtime`]: the wasmtime engine, admission, invocation, the registry, and the
//!      plugin decider (the core's `OrderDecider`).
//!    - [`catalog`]: the catalog read path (cache, then database).
//!    - [`events`]: the outbox relay, the idempotent consumer, dead letters, backpressure.
//!    - [`auth`]: principals, scopes and tenants; API keys and JWT validation.
//!    - `native` (`native-decider` feature, benchmarks only): the reference plugin's logic
//!      linked natively behind the same decider port.
//! 4. Listeners
//!    - [`http`]: the public API (thin handlers, problem responses, the edge stack).
//!    - [`ops`]: health, `/metrics` and the admin endpoints with their token check.
//! 5. Assembly
//!    - [`server`]: the full configuration, the shared state, the listeners; the only place
//!      that wires everything.
//! 6. Clients
//!    - [`cli`]: the `weir plugin push|list|...` commands, clients of the operations API, and
//!      `weir plugin new` (a plugin project on disk).
//!
//! # Where things go
//! - A new route: a handler in `http/` that extracts, calls one use-case of `weir-core` and
//!   maps the error (copy `http/products.rs`); register it in `http::router` and `ApiDoc`.
//! - A new use-case: one file in `core/src/app/` with its command, outcome and error types,
//!   tested with the in-memory ports (copy `core/src/app/transition.rs`).
//! - A new host capability: a WIT interface, then one file in `capabilities/` implementing
//!   its `Host` trait on `Imports`, with `#[tracing::instrument(name = "plugin.import...")]`
//!   (copy `capabilities/config.rs`).
//! - A new background worker: a body run by `lifecycle::Supervisor::spawn` or `periodic`,
//!   started from `server` (copy `events::backpressure::monitor` or `server::retention`).

pub mod auth;
pub mod capabilities;
pub mod catalog;
pub mod cli;
pub mod events;
pub mod http;
pub mod lifecycle;
#[cfg(feature = "native-decider")]
pub mod native;
pub mod ops;
pub mod policy;
pub mod runtime;
pub mod server;
pub mod storage;
pub mod support;
pub mod telemetry;
pub mod world;

#[cfg(test)]
mod layering;
