//! The order decider: the business decisions of placing and moving orders, made by a plugin
//! (the WebAssembly runtime implements this port in the host) or natively (benchmarks).
//!
//! [`DecideError`] keeps the failure families apart because each is answered differently: a
//! typed refusal is a business decision; a trap is a plugin bug; an exhausted budget is a
//! plugin that ran too long or too big; an unavailable decider is ours or temporary.

use std::fmt;
use std::time::{Duration, Instant};

use crate::domain::{
    ContractViolation, OrderError, OrderEvent, OrderRequest, OrderSnapshot, OrderStatus, PluginRef,
    PricedOrder,
};

/// A decision and the plugin version that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided<T> {
    /// The decision.
    pub value: T,
    /// Who decided (stored with the order for audits).
    pub by: PluginRef,
}

/// The circumstances of one decision.
#[derive(Debug, Clone, Copy)]
pub struct DecisionContext<'a> {
    /// The decision must be made by then; a decider may only shorten it.
    pub deadline: Instant,
    /// A stable key of what is being decided (the idempotency key of a new order, the order
    /// id of a transition), so that a retry of the same thing is routed to the same version.
    pub routing_key: RoutingKey<'a>,
}

/// A [`DecisionContext`]'s routing key: a text at hand, or one made when a route reads it.
/// Only a split route reads it (a canary share, a shadow sample); a quote's key is a hash of
/// its canonical body, which would otherwise be made for every quote and read by none.
#[derive(Clone, Copy)]
pub struct RoutingKey<'a>(KeySource<'a>);

#[derive(Clone, Copy)]
enum KeySource<'a> {
    Text(&'a str),
    Made(&'a (dyn Fn() -> String + Send + Sync)),
}

impl<'a> RoutingKey<'a> {
    /// The key `key`.
    pub fn new(key: &'a str) -> Self {
        Self(KeySource::Text(key))
    }

    /// The key `make` returns, made each time [`Self::get`] is called (a reader that needs
    /// it twice keeps it).
    pub fn made_by(make: &'a (dyn Fn() -> String + Send + Sync)) -> Self {
        Self(KeySource::Made(make))
    }

    /// The key.
    pub fn get(&self) -> std::borrow::Cow<'a, str> {
        match self.0 {
            KeySource::Text(key) => key.into(),
            KeySource::Made(make) => make().into(),
        }
    }
}

impl std::fmt::Debug for RoutingKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            KeySource::Text(key) => f.debug_tuple("RoutingKey").field(&key).finish(),
            KeySource::Made(_) => f.write_str("RoutingKey(<made when read>)"),
        }
    }
}

/// Which part of a decision's budget was exhausted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BudgetKind {
    /// The wall-clock deadline passed (for example while the guest waited in a host call).
    WallClock,
    /// The guest kept the CPU past its deadline and was interrupted.
    Cpu,
    /// Fuel metering ran out.
    Fuel,
    /// The guest tried to grow its memory past the budget.
    Memory,
    /// The guest tried to grow a table past the budget.
    Table,
    /// The guest logged more than its log budget.
    Log,
    /// The guest handed the host more data in one transfer (a returned value or an import's
    /// arguments) than the per-call copy budget.
    Copy,
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
            Self::Copy => "copy",
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

/// Why a plugin trapped.
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
}

impl fmt::Display for TrapKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A runtime's description of a failure (a trap with its guest backtrace, an instantiation
/// error): part of the error chain in logs and spans, never shown to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Detail(pub String);

/// Why no decision came back.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// The decider answered with its typed business error; the case is kept intact.
    #[error("plugin returned {}", .0.tag())]
    Refused(OrderError),
    /// The plugin trapped. `detail` is for logs and spans, never for clients.
    #[error("plugin trapped ({kind})")]
    Trap {
        /// Classified trap code.
        kind: TrapKind,
        /// The runtime's description, including the guest backtrace when available.
        #[source]
        detail: Detail,
    },
    /// The call used up part of its budget and was stopped.
    #[error("plugin exceeded its {0} budget")]
    Budget(BudgetKind),
    /// The decision breaks the host's contract (a priced order that does not add up, a
    /// status outside the graph): a plugin bug, nothing was stored.
    #[error("plugin broke the contract")]
    Contract(#[source] ContractViolation),
    /// The plugin called a host capability it did not declare in `describe`; the call was
    /// stopped there.
    #[error("plugin called the {capability} capability without declaring it")]
    CapabilityDenied {
        /// The capability (WIT interface name, e.g. `config`).
        capability: &'static str,
    },
    /// The host is shutting down and interrupted the call.
    #[error("plugin call interrupted by host shutdown")]
    Interrupted,
    /// The plugin version's circuit breaker is open: recent calls mostly trapped or ran out of
    /// budget, so the call was refused without running.
    #[error("plugin version short-circuited by its circuit breaker")]
    CircuitOpen {
        /// When the breaker admits a probe again.
        retry_after: Duration,
    },
    /// Every plugin instance (`runtime.max_instances`) stayed busy for as long as the call
    /// could wait for one (`runtime.instance_wait_ms`, cut by the caller's deadline); the call
    /// did not run. A capacity condition of the host, never a fault of the plugin version.
    #[error("no plugin instance became free within {}ms", waited.as_millis())]
    PoolExhausted {
        /// How long the call waited for an instance.
        waited: Duration,
        /// When a retry may find a free instance.
        retry_after: Duration,
    },
    /// The host could not set up the call.
    #[error("host could not instantiate the plugin")]
    Instantiate {
        /// The runtime's description, for logs only.
        #[source]
        detail: Detail,
    },
    /// No version of the plugin is active.
    #[error("no active version of plugin {0}")]
    NoPlugin(String),
}

impl DecideError {
    /// Stable snake-case outcome label for metrics and spans.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Refused(e) => e.tag(),
            Self::Trap { .. } => "trap",
            Self::Contract(_) => "contract_violation",
            Self::CapabilityDenied { .. } => "capability_denied",
            Self::Budget(k) if k.is_time() => "timeout",
            Self::Budget(_) => "budget_exceeded",
            Self::Interrupted => "interrupted",
            Self::CircuitOpen { .. } => "short_circuited",
            Self::PoolExhausted { .. } => "pool_exhausted",
            Self::Instantiate { .. } => "instantiate_failed",
            Self::NoPlugin(_) => "no_plugin",
        }
    }

    /// Whether this says something is wrong with the plugin version itself (a trap, an
    /// exhausted budget or a broken contract), as opposed to a business answer or a host
    /// condition. Such failures feed the version's circuit breaker.
    pub fn is_plugin_fault(&self) -> bool {
        matches!(
            self,
            Self::Trap { .. } | Self::Budget(_) | Self::Contract(_) | Self::CapabilityDenied { .. }
        )
    }

    /// Whether this counts against the version in its release (canary judgement): plugin
    /// faults and the plugin's own `internal` errors; never a business answer (invalid,
    /// rejected, not found, conflict, unavailable) or a host condition.
    pub fn counts_against_version(&self) -> bool {
        self.is_plugin_fault() || matches!(self, Self::Refused(OrderError::Internal(_)))
    }
}

/// Makes the business decisions about orders.
#[async_trait::async_trait]
pub trait OrderDecider: Send + Sync {
    /// Validate and price a new order.
    async fn place(
        &self,
        request: &OrderRequest,
        cx: DecisionContext<'_>,
    ) -> Result<Decided<PricedOrder>, DecideError>;

    /// Decide the status `order` moves to on `event`.
    async fn transition(
        &self,
        order: &OrderSnapshot,
        event: OrderEvent,
        cx: DecisionContext<'_>,
    ) -> Result<Decided<OrderStatus>, DecideError>;
}
