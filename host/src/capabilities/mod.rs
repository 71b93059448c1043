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
//!
//! Least authority: each import first checks that the plugin declared its capability in
//! `describe`; an undeclared use is recorded ([`ImportRefusal::Undeclared`]) and traps the
//! guest, and the runtime reports it as `CAPABILITY_DENIED`. Arguments are bounded before
//! any work is done on them (a sku or configuration key over its limit is refused as an
//! `import_argument` contract violation, before any cache or database call).

pub mod catalog;
pub mod config;
pub mod deadline;
pub mod log;
pub mod trace;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use weir_core::domain::contract::{self, ContractViolation};
use weir_core::ports::Catalog;

use crate::world::bindings::Capability;
use crate::world::conversions::capability_name;

/// Why an import refused a call (recorded before the guest is trapped, read by the runtime
/// to classify the failure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportRefusal {
    /// The plugin did not declare this capability.
    Undeclared(&'static str),
    /// An argument is over its bound.
    Argument(ContractViolation),
}

/// Raised into the guest as a trap when an import refuses a call.
#[derive(Debug, thiserror::Error)]
#[error("host import refused the call")]
pub struct ImportRefused;

/// The capabilities a plugin declared, as a set.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Granted(u8);

impl Granted {
    /// The set of `declared`.
    pub fn of(declared: &[Capability]) -> Self {
        Self(declared.iter().fold(0, |set, c| set | Self::bit(*c)))
    }

    fn bit(c: Capability) -> u8 {
        match c {
            Capability::Log => 1,
            Capability::Catalog => 2,
            Capability::Config => 4,
            Capability::Deadline => 8,
        }
    }

    /// Whether `c` was declared.
    pub fn contains(self, c: Capability) -> bool {
        self.0 & Self::bit(c) != 0
    }

    /// How many distinct capabilities were declared.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Whether none was declared.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

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
    /// The capabilities the plugin declared.
    pub(crate) granted: Granted,
    /// Set when an import refused a call (the call was trapped for it).
    pub(crate) refusal: Option<ImportRefusal>,
    /// Where catalog lookups run: the server's runtime, not the plugin threads, so that a
    /// lookup's own timeout measures the dependency, not how busy plugin code keeps the CPU.
    pub(crate) host: tokio::runtime::Handle,
    /// What this call sees, when it is recorded or replayed ([`trace`]).
    pub(crate) trace: Option<trace::CallTrace>,
    /// Import calls so far.
    calls: u32,
}

impl Imports {
    /// The imports of one call of `plugin` that must end by `deadline`.
    pub fn new(
        plugin: Arc<PluginMeta>,
        catalog: Arc<dyn Catalog>,
        catalog_timeout: Duration,
        deadline: Instant,
        log: LogBudget,
        granted: Granted,
        host: tokio::runtime::Handle,
    ) -> Self {
        Self {
            plugin,
            catalog,
            catalog_timeout,
            deadline,
            log,
            log_exceeded: false,
            granted,
            refusal: None,
            host,
            trace: None,
            calls: 0,
        }
    }

    /// Trace what this call's imports answer (and, with a script, answer from it).
    pub fn with_trace(mut self, trace: Option<trace::CallTrace>) -> Self {
        self.trace = trace;
        self
    }

    /// Why an import refused a call, if one did.
    pub fn refusal(&self) -> Option<&ImportRefusal> {
        self.refusal.as_ref()
    }

    /// Refuse the call unless the plugin declared `capability`.
    pub(crate) fn require(&mut self, capability: Capability) -> wasmtime::Result<()> {
        self.calls = self.calls.saturating_add(1);
        if let Some(trace) = &self.trace {
            trace.host_call();
        }
        if self.granted.contains(capability) {
            return Ok(());
        }
        self.refuse(ImportRefusal::Undeclared(capability_name(capability)))
    }

    /// Refuse the call if `value`, the argument `what` of an import, is over `limit` bytes.
    pub(crate) fn bound(&mut self, what: &str, value: &str, limit: usize) -> wasmtime::Result<()> {
        if value.len() <= limit {
            return Ok(());
        }
        self.refuse(ImportRefusal::Argument(contract::import_argument(
            what,
            value.len(),
            limit,
        )))
    }

    fn refuse(&mut self, refusal: ImportRefusal) -> wasmtime::Result<()> {
        self.refusal.get_or_insert(refusal);
        Err(wasmtime::Error::new(ImportRefused))
    }

    /// Import calls the guest made so far (of the `weir:orders` interfaces).
    pub fn calls(&self) -> u32 {
        self.calls
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
