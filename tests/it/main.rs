//! Weir's cross-crate integration tests: one binary.
//!
//! - `runtime`: real components through the real engine (typed errors, hostile plugins).
//! - `api`: the HTTP API against SQLite and PostgreSQL, error catalog, idempotency, crash safety.
//! - `auth`: API keys, JWT bearer tokens, scopes and tenant isolation.
//! - `shutdown`: rotation (admin API), readiness while draining, the pre-stop delay.
//! - `python`: the `api` and `quotes` suites again with the Python port of the reference
//!   plugin serving, and its decisions compared with the Rust plugin's on a corpus of cases.
//! - `quotes`: `POST /v1/quotes` on SQLite and PostgreSQL: the price placing gets, nothing
//!   written, the same typed refusals, the `orders:write` scope.
//! - `cases`: case recording through the admin API (contents, redaction, bounds, window,
//!   sampling, refusals) and an offline replay reproducing every recorded decision.
//! - `integrity`: the host's contract on plugin decisions, the status graph, stock reservations.
//! - `releases`: the plugin lifecycle API: uploads, swaps under load, canaries, shadows.
//! - `sandbox`: the hostile suite (bounded plugin output, least authority, describe abuse,
//!   CPU saturation against breakers and readiness).
//! - `events`: RabbitMQ and PostgreSQL: the outbox relay, broker outages, the idempotent
//!   consumer with its retries and dead letters, intake backpressure.
//! - `pool`: instance-pool exhaustion: calls beyond `runtime.max_instances` wait (bounded by
//!   `runtime.instance_wait_ms` and their deadline), then `503 PLUGIN_BUSY`; shadows never wait.
//! - `policies`: edge and dependency policies end to end (real databases, Redis, plugin).
//! - `slow_deps`: real slow and broken dependencies: a locked PostgreSQL table, a hung private
//!   Redis, a fault proxy that partitions RabbitMQ silently or cuts a publish before its
//!   confirm, a private RabbitMQ node that restarts.
//! - `prometheus`: the alert and recording rules of `deploy/prometheus/` (`promtool check`
//!   and `promtool test`, every alert tested both ways, severity and runbook link).
//! - `telemetry`: OpenTelemetry traces verified against a real OTLP/gRPC receiver.
//! - `retention`: expired rows deleted by the running workers; the feed's expired cursors;
//!   the paginated catalog.
//! - `schemathesis`: the live API checked against its OpenAPI description by Schemathesis.
//! - `dashboards`: the Grafana dashboards and Prometheus rules query metrics a live server
//!   exposes.

mod api;
mod auth;
mod cases;
mod dashboards;
mod events;
mod integrity;
mod policies;
mod pool;
mod prometheus;
mod python;
mod quotes;
mod releases;
mod retention;
mod runtime;
mod sandbox;
mod schemathesis;
mod shutdown;
mod slow_deps;
mod support;
mod telemetry;
