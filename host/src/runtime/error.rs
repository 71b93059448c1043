//! Errors of the plugin runtime.
//!
//! [`InvokeError`] keeps four failure families apart, because the host answers each
//! differently: a typed guest error is the plugin's business decision; a trap is a plugin
//! bug; an exhausted budget is a plugin that ran too long or too big; a host failure is ours.

use std::fmt;

use super::bindings::OrderError;

/// Which part of the invocation budget was exhausted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BudgetKind {
    /// The wall-clock deadline passed (for example while the guest waited in a host call).
    WallClock,
    /// The guest kept the CPU past its deadline and was interrupted by the epoch ticker.
    Cpu,
    /// Fuel metering ran out.
    Fuel,
    /// The guest tried to grow its memory past the budget.
    Memory,
    /// The guest tried to grow a table past the budget.
    Table,
    /// The guest logged more than its log budget.
    Log,
}

impl BudgetKind {
    /// Stable lower-case name, used as a metric label and span attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WallClock => "wall_clock",
            Self::Cpu => "cpu",
            Self::Fuel => "fuel",
            Self::Memory => "memory",
            Self::Table => "table",
            Self::Log => "log",
        }
    }

    /// Whether this is a time budget (the call was too slow rather than too big).
    pub fn is_time(self) -> bool {
        matches!(self, Self::WallClock | Self::Cpu | Self::Fuel)
    }
}

impl fmt::Display for BudgetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a guest trapped, from wasmtime's trap code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrapKind {
    /// `unreachable` executed; a Rust guest panic ends here (panic = abort).
    Unreachable,
    /// The wasm call stack was exhausted.
    StackOverflow,
    /// Out-of-bounds linear memory access (also how a Rust guest's shadow-stack overflow shows).
    MemoryOutOfBounds,
    /// Out-of-bounds table access or call through a null/mismatched table entry.
    BadIndirectCall,
    /// Integer division by zero or overflow, or a bad float-to-int conversion.
    Arithmetic,
    /// The component model refused to re-enter or lift/lower a value.
    ComponentModel,
    /// A host import failed in a way that must stop the guest (a host-side bug or limit).
    Host,
    /// Any other trap code.
    Other,
}

impl TrapKind {
    /// Stable lower-case name, used as a metric label and span attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::StackOverflow => "stack_overflow",
            Self::MemoryOutOfBounds => "memory_out_of_bounds",
            Self::BadIndirectCall => "bad_indirect_call",
            Self::Arithmetic => "arithmetic",
            Self::ComponentModel => "component_model",
            Self::Host => "host",
            Self::Other => "other",
        }
    }

    pub(crate) fn from_trap(trap: wasmtime::Trap) -> Self {
        use wasmtime::Trap;
        match trap {
            Trap::UnreachableCodeReached => Self::Unreachable,
            Trap::StackOverflow => Self::StackOverflow,
            Trap::MemoryOutOfBounds | Trap::HeapMisaligned => Self::MemoryOutOfBounds,
            Trap::TableOutOfBounds | Trap::IndirectCallToNull | Trap::BadSignature => {
                Self::BadIndirectCall
            }
            Trap::IntegerOverflow | Trap::IntegerDivisionByZero | Trap::BadConversionToInteger => {
                Self::Arithmetic
            }
            Trap::CannotEnterComponent => Self::ComponentModel,
            _ => Self::Other,
        }
    }
}

impl fmt::Display for TrapKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Failure of one plugin invocation.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// The plugin returned its typed `order-error`; the variant is kept intact.
    #[error("plugin returned {}", guest_error_tag(.0))]
    Guest(OrderError),
    /// The guest trapped. `detail` is for logs and spans, never for clients.
    #[error("plugin trapped ({kind})")]
    Trap {
        /// Classified trap code.
        kind: TrapKind,
        /// wasmtime's description, including the guest backtrace when available.
        detail: String,
    },
    /// The invocation used up part of its budget and was stopped.
    #[error("plugin exceeded its {0} budget")]
    Budget(BudgetKind),
    /// The host is shutting down and interrupted the call.
    #[error("plugin call interrupted by host shutdown")]
    Interrupted,
    /// The circuit breaker of this plugin version is open: recent calls mostly trapped or ran
    /// out of budget, so the call was refused without running.
    #[error("plugin version short-circuited by its circuit breaker")]
    CircuitOpen {
        /// When the breaker admits a probe again.
        retry_after: std::time::Duration,
    },
    /// The host could not set up the call (for example the instance pool is exhausted).
    #[error("host could not instantiate the plugin")]
    Instantiate {
        /// wasmtime's description, for logs only.
        detail: String,
    },
}

impl InvokeError {
    /// Stable snake-case outcome label for metrics and spans.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Guest(e) => guest_error_tag(e),
            Self::Trap { .. } => "trap",
            Self::Budget(k) if k.is_time() => "timeout",
            Self::Budget(_) => "budget_exceeded",
            Self::Interrupted => "interrupted",
            Self::CircuitOpen { .. } => "short_circuited",
            Self::Instantiate { .. } => "instantiate_failed",
        }
    }
}

/// The WIT case name of a guest error, e.g. `not-found`.
pub fn guest_error_tag(e: &OrderError) -> &'static str {
    match e {
        OrderError::Invalid(_) => "invalid",
        OrderError::NotFound(_) => "not-found",
        OrderError::Conflict(_) => "conflict",
        OrderError::Rejected(_) => "rejected",
        OrderError::Unavailable(_) => "unavailable",
        OrderError::Internal(_) => "internal",
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
    /// The component does not implement the `weir:orders/plugin` world (missing exports,
    /// or imports the host does not provide).
    #[error("component does not implement weir:orders/plugin@0.1.0: {0}")]
    WorldMismatch(String),
    /// The `describe` self-test failed.
    #[error("describe self-test failed: {0}")]
    Describe(#[source] InvokeError),
    /// `describe` returned an unusable plugin-info.
    #[error("describe returned invalid plugin info: {0}")]
    InvalidInfo(String),
    /// Reading the file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The runtime could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the plugin engine: {0}")]
pub struct EngineError(pub String);
