//! The data of one store: everything a single invocation may touch.
//!
//! A store lives for exactly one invocation and is dropped with its instance, so nothing a
//! guest does survives into the next call. Building it must be cheap: it is on the hot path.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::limits::{Budget, Limiter};
use super::output::CapturedOutput;
use super::wasi::{CoarseMonotonicClock, CoarseWallClock};
use crate::capabilities::Imports;

/// Store data of one invocation.
pub struct InvocationState {
    /// Made on the guest's first WASI call: most calls of a Rust plugin make none, and
    /// building one costs two builders, three seeded generators and a dozen allocations
    /// (BENCHMARKS.md). What it grants does not depend on when it is made.
    wasi: Option<WasiCtx>,
    /// Bytes one `wasi:random` call may ask for.
    max_random: u64,
    /// When the call started (where its monotonic clock counts from).
    started: std::time::Instant,
    table: ResourceTable,
    pub(crate) limiter: Limiter,
    /// The state of the `weir:orders` imports (see [`crate::capabilities`]).
    pub(crate) imports: Imports,
    pub(crate) stdout: CapturedOutput,
    pub(crate) stderr: CapturedOutput,
}

impl InvocationState {
    pub(crate) fn new(budget: &Budget, imports: Imports) -> Self {
        Self {
            wasi: None,
            max_random: budget.copy_bytes as u64,
            started: std::time::Instant::now(),
            table: ResourceTable::new(),
            limiter: Limiter::new(budget),
            imports,
            stdout: CapturedOutput::new(budget.stdio_bytes, budget.stdio_lines),
            stderr: CapturedOutput::new(budget.stdio_bytes, budget.stdio_lines),
        }
    }

    /// Whether the guest has used WASI in this call.
    pub fn used_wasi(&self) -> bool {
        self.wasi.is_some()
    }
}

/// The WASI context of a call that started at `started`. No preopens, no environment, no
/// arguments, stdin closed, no sockets or name lookups (and none linked, see `wasi`), clocks
/// at 1 ms: the only authority a plugin has is the weir:orders imports it declared.
fn wasi_ctx(
    stdout: &CapturedOutput,
    stderr: &CapturedOutput,
    max_random: u64,
    started: std::time::Instant,
) -> WasiCtx {
    WasiCtx::builder()
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .max_random_size(max_random)
        .wall_clock(CoarseWallClock)
        .monotonic_clock(CoarseMonotonicClock::since(started))
        .build()
}

impl WasiView for InvocationState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let Self {
            wasi,
            table,
            stdout,
            stderr,
            max_random,
            started,
            ..
        } = self;
        let ctx = wasi.get_or_insert_with(|| wasi_ctx(stdout, stderr, *max_random, *started));
        WasiCtxView { ctx, table }
    }
}
