//! Process-level tests of the `weir` binary, one test binary: the real executable, real files,
//! real signals, real exit codes, and the in-process runtime logging test.
//!
//! - [`support`]: one `weir` child process ([`support::Weir`]): spawn, wait for its start-up
//!   line, signal it, read its JSON log and stderr, poll `/infoz`, all bounded in time.
//! - `chaos`: SIGTERM (with work provably in flight, a pre-stop delay and an OTLP receiver;
//!   also with RabbitMQ) and SIGKILL under load on SQLite and PostgreSQL, the consumer killed
//!   mid-message, a second signal; `chaos::crash`: kill -9 with an order transaction provably
//!   open and the broker's `order.placed` collected by the test, the consumer killed between
//!   its commit and its ack (test-only failpoint).
//! - `chaos_drill`: the operators' drill `deploy/chaos/run.sh` against real processes, SQLite
//!   and PostgreSQL.
//! - `runbook`: RUNBOOK.md's blocks, run against a real instance (and checked for form).
//! - `auth`: `weir apikey create|list|revoke` against the real binary, the non-loopback
//!   refusal without an authentication mode, the loopback default's warning.
//! - `cases`: `weir plugin cases start|status|export|stop` against a real instance,
//!   `weir plugin test --cases` (replay, `--compare`, exit statuses), the SDK's conformance kit
//!   on conforming and non-conforming plugins, malformed cases files.
//! - `cli`: `weir plugin check`, `weir migrate`, configuration errors; release builds without
//!   the test-only `fault-injection` feature.
//! - `deploy`: deploy/k8s, deploy/systemd and the Containerfile against the code and each
//!   other (kubernetes-validate, systemd-analyze, the service under strace).
//! - `journey`: a plugin author's whole loop: `weir plugin new`, build, `weir serve --plugin
//!   --watch`, record cases, edit and rebuild (same version), the swap, `--compare` with a diff.
//! - `edge`: connection and request hardening: trickling bodies and partial heads against
//!   normal clients, the connection cap, idle and header timeouts, head size, HTTP/2 refused.
//! - `errors`: the context chain of start-up, store and plugin failures in one log line and
//!   one span error.
//! - `plugins_dir`: a component of `plugins.dir` refused at start-up: left out (logged,
//!   counted, in `/infoz`), or fatal with `--strict`; a refused orders plugin starts unready.
//! - `otel`: OpenTelemetry export to a real OTLP receiver, flushed at SIGTERM; a collector
//!   that is down or hung (accepts, never answers) bounds the exit by the flush timeout.
//! - `prometheus`: a real Prometheus scraping `weir` with the repository's rules (SLIs
//!   recorded, a locked catalog makes the breaker alert pending), and the previous run's
//!   shutdown outcome reported by the next start.
//! - `releases`: replicas converging on a release, the `weir plugin` client, the
//!   compiled-artifact cache across restarts.
//! - `slow_deps`: an OTLP collector that accepts and never answers does not fail requests.
//! - `scaffold`: `weir plugin new`: a scaffolded project built for wasm32-wasip2 and
//!   wasm32-unknown-unknown (sharing `target/plugins` with the plugins' build), its own
//!   native tests, `weir plugin check`; the refusals (name, language, directory, SDK path).
//! - `sandbox`: the process RSS bound under 8 and 64 concurrent hostile plugin calls.
//! - `secrets`: passwords in `DATABASE_URL`/`AMQP_URL`/`REDIS_URL`, the admin token and an API
//!   key never in stdout, stderr, OTLP exports, `/infoz`, `/readyz`, `/metrics` or problem
//!   bodies, serving and when each dependency refuses (unreachable, wrong password).
//! - `watch`: `weir serve --plugin FILE --watch`, the dev loop: good builds swapped in, garbage,
//!   a contract drift and a half-written file refused with the last good version serving, an
//!   unchanged rewrite not admitted again, SIGTERM while watching; a bad `--plugin` file stops
//!   start-up.
//! - `plugin_logs`: guest output and plugin logs inside the invocation span (it installs a
//!   thread-local subscriber; the other tests here run `weir` as a child process and install
//!   none, so callsite interest is never decided without it).

mod auth;
mod cases;
mod chaos;
mod chaos_drill;
mod cli;
mod deploy;
mod edge;
mod errors;
mod journey;
mod otel;
mod plugin_logs;
mod plugins_dir;
mod prometheus;
mod releases;
mod runbook;
mod sandbox;
mod scaffold;
mod secrets;
mod slow_deps;
mod support;
mod watch;
