//! Errors of the plugin runtime.
//!
//! An invocation fails with the core's `DecideError` (re-exported as [`InvokeError`]): it
//! keeps four failure families apart, because the host answers each differently: a typed
//! guest error is the plugin's business decision; a trap is a plugin bug; an exhausted budget
//! is a plugin that ran too long or too big; a host failure is ours. This module adds what
//! only the runtime knows: admission errors and how wasmtime's trap codes classify.

use weir_core::ports::TrapKind;
pub use weir_core::ports::{BudgetKind, DecideError as InvokeError};

use crate::world::{PACKAGE, WORLD};

/// The [`TrapKind`] of a wasmtime trap code.
pub(crate) fn trap_kind(trap: wasmtime::Trap) -> TrapKind {
    use wasmtime::Trap;
    match trap {
        Trap::UnreachableCodeReached => TrapKind::Unreachable,
        Trap::StackOverflow => TrapKind::StackOverflow,
        Trap::MemoryOutOfBounds | Trap::HeapMisaligned => TrapKind::MemoryOutOfBounds,
        Trap::TableOutOfBounds | Trap::IndirectCallToNull | Trap::BadSignature => {
            TrapKind::BadIndirectCall
        }
        Trap::IntegerOverflow | Trap::IntegerDivisionByZero | Trap::BadConversionToInteger => {
            TrapKind::Arithmetic
        }
        Trap::CannotEnterComponent => TrapKind::ComponentModel,
        _ => TrapKind::Other,
    }
}

/// Why a component could not be admitted.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not a WebAssembly component at all.
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    /// The component is malformed or failed validation/compilation.
    #[error("invalid component: {0}")]
    Invalid(String),
    /// Compiling took longer than `runtime.compile_timeout_ms`.
    #[error("compiling the component took longer than {}ms", .0.as_millis())]
    CompileTimeout(std::time::Duration),
    /// The component does not implement the `weir:orders/plugin` world (missing exports,
    /// or imports the host does not provide).
    #[error("component does not implement {WORLD}: {0}")]
    WorldMismatch(String),
    /// The component's `weir:orders` imports or exports differ from every accepted contract
    /// version: an unaccepted version, a missing export, a function or type of another shape
    /// (checked before instantiation; the report lists each difference, bounded).
    #[error("{}", contract_message(.0))]
    Contract(Box<crate::world::contract::ContractReport>),
    /// The component imports an interface outside the allow-list (see `runtime::wasi`).
    #[error(
        "component imports {0}, which plugins may not use (allowed: weir:orders and the WASI interfaces listed in SECURITY.md)"
    )]
    ImportNotAllowed(String),
    /// The `describe` self-test failed.
    #[error("describe self-test failed")]
    Describe(#[source] InvokeError),
    /// `describe` returned an unusable plugin-info.
    #[error("describe returned invalid plugin info: {0}")]
    InvalidInfo(String),
    /// Reading the file failed.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl LoadError {
    /// The admission stage that refused the component: `decode` (not a component),
    /// `compile`, `imports` (imports an interface outside the allow-list), `contract` (uses
    /// `weir:orders` at a version or in a shape the host does not accept), `world` (does not
    /// implement `weir:orders/plugin`: another world altogether), `describe` (the
    /// self-test failed or returned unusable info), `read` (the file).
    pub fn stage(&self) -> &'static str {
        match self {
            LoadError::NotAComponent(_) => "decode",
            LoadError::Invalid(_) | LoadError::CompileTimeout(_) => "compile",
            LoadError::WorldMismatch(_) => "world",
            LoadError::Contract(report) if report.other_world => "world",
            LoadError::Contract(_) => "contract",
            LoadError::ImportNotAllowed(_) => "imports",
            LoadError::Describe(_) | LoadError::InvalidInfo(_) => "describe",
            LoadError::Io { .. } => "read",
        }
    }

    /// The contract report of a `contract` (or `world`) refusal.
    pub fn contract(&self) -> Option<&crate::world::contract::ContractReport> {
        match self {
            LoadError::Contract(report) => Some(report),
            _ => None,
        }
    }
}

fn contract_message(report: &crate::world::contract::ContractReport) -> String {
    if report.other_world {
        format!("component does not implement {WORLD}: {report}")
    } else {
        format!("component does not match the {PACKAGE} contract: {report}")
    }
}

/// The runtime could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the plugin engine: {0}")]
pub struct EngineError(pub String);
