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
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: Limiter,
    /// The state of the `weir:orders` imports (see [`crate::capabilities`]).
    pub(crate) imports: Imports,
    pub(crate) stdout: CapturedOutput,
    pub(crate) stderr: CapturedOutput,
}

impl InvocationState {
    pub(crate) fn new(budget: &Budget, imports: Imports) -> Self {
        let stdout = CapturedOutput::new(budget.stdio_bytes, budget.stdio_lines);
        let stderr = CapturedOutput::new(budget.stdio_bytes, budget.stdio_lines);
        // No preopens, no environment, no arguments, stdin closed, no sockets or name
        // lookups (and none linked, see `wasi`), clocks at 1 ms: the only authority a plugin
        // has is the weir:orders imports it declared.
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .max_random_size(budget.copy_bytes as u64)
            .wall_clock(CoarseWallClock)
            .monotonic_clock(CoarseMonotonicClock::new())
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter::new(budget),
            imports,
            stdout,
            stderr,
        }
    }
}

impl WasiView for InvocationState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
