//! The data of one store: everything a single invocation may touch.
//!
//! A store lives for exactly one invocation and is dropped with its instance, so nothing a
//! guest does survives into the next call. Building it must be cheap: it is on the hot path.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::limits::{Budget, Limiter};
use super::output::CapturedOutput;
use super::registry::PluginMeta;
use crate::capabilities::catalog::Catalog;

/// Store data of one invocation.
pub struct InvocationState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: Limiter,
    /// Which plugin version this call runs, for log fields and the `config` import.
    pub(crate) plugin: Arc<PluginMeta>,
    pub(crate) catalog: Arc<dyn Catalog>,
    /// Upper bound of one catalog lookup; the call deadline may cut it shorter.
    pub(crate) catalog_timeout: Duration,
    /// When the host will stop this call.
    pub(crate) deadline: Instant,
    pub(crate) log_records_left: u32,
    pub(crate) log_bytes_left: usize,
    pub(crate) stdout: CapturedOutput,
    pub(crate) stderr: CapturedOutput,
}

impl InvocationState {
    pub(crate) fn new(
        budget: &Budget,
        plugin: Arc<PluginMeta>,
        catalog: Arc<dyn Catalog>,
        catalog_timeout: Duration,
        deadline: Instant,
    ) -> Self {
        let stdout = CapturedOutput::new(budget.stdio_bytes);
        let stderr = CapturedOutput::new(budget.stdio_bytes);
        // No preopens, no environment, no arguments, stdin closed, no sockets or name
        // lookups: the only authority a plugin has is the weir:orders imports.
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter::new(budget),
            plugin,
            catalog,
            catalog_timeout,
            deadline,
            log_records_left: budget.log_records,
            log_bytes_left: budget.log_bytes,
            stdout,
            stderr,
        }
    }

    /// Time left before the host stops this call.
    pub(crate) fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
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
