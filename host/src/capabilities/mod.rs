//! Host capabilities: the implementations of the interfaces a plugin imports.
//!
//! One file per imported WIT interface, each implementing its generated `Host` trait on
//! [`Imports`], the per-call state of the imports. These are the only authority a plugin has;
//! each call gets its own child span of `plugin.invoke` (`plugin.import.<interface>.<function>`).
//! Every import returns `wasmtime::Result<..>`: the outer error traps the guest (host bug or
//! exhausted budget), an inner WIT error is what the guest sees and handles.
//!
//! [`Imports`] knows nothing of the engine: the runtime puts one in each invocation's store
//! data and links the world's imports to it.

pub mod catalog;
pub mod config;
pub mod deadline;
pub mod log;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use weir_core::ports::Catalog;

/// What identifies a loaded plugin version and what it runs with.
#[derive(Debug, Clone, Serialize)]
pub struct PluginMeta {
    /// Name reported by `describe`.
    pub name: String,
    /// Version reported by `describe`.
    pub version: String,
    /// Lower-case hex sha256 of the component bytes.
    pub digest: String,
    /// Operator configuration visible through the `config` import.
    #[serde(skip)]
    pub config: BTreeMap<String, String>,
}

/// How much one call may log through `log.emit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBudget {
    /// Records left.
    pub records: u32,
    /// Bytes (message plus fields) left.
    pub bytes: usize,
}

/// The state of the imports during one invocation (a fresh one per call).
pub struct Imports {
    /// Which plugin version this call runs, for log fields and the `config` import.
    pub(crate) plugin: Arc<PluginMeta>,
    pub(crate) catalog: Arc<dyn Catalog>,
    /// Upper bound of one catalog lookup; the call deadline may cut it shorter.
    pub(crate) catalog_timeout: Duration,
    /// When the host will stop this call.
    pub(crate) deadline: Instant,
    pub(crate) log: LogBudget,
    /// Set when the guest overran its log budget (the call was trapped for it).
    pub(crate) log_exceeded: bool,
}

impl Imports {
    /// The imports of one call of `plugin` that must end by `deadline`.
    pub fn new(
        plugin: Arc<PluginMeta>,
        catalog: Arc<dyn Catalog>,
        catalog_timeout: Duration,
        deadline: Instant,
        log: LogBudget,
    ) -> Self {
        Self {
            plugin,
            catalog,
            catalog_timeout,
            deadline,
            log,
            log_exceeded: false,
        }
    }

    /// Whether the guest overran its log budget.
    pub fn log_exceeded(&self) -> bool {
        self.log_exceeded
    }

    /// Time left before the host stops this call.
    pub(crate) fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

impl crate::world::bindings::types::Host for Imports {}
