//! The per-invocation budget: how much wall time, CPU, memory, log and stdio one plugin call
//! may use, and the [`wasmtime::ResourceLimiter`] that enforces the memory and table parts.
//!
//! A limit that is hit is recorded in [`LimitHits`] before the guest traps, so the host can
//! tell "the plugin ran out of memory" from "the plugin trapped" by a flag it set itself,
//! never by reading an error message.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Budget for a single plugin invocation. Every field has a safe default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Budget {
    /// Wall-clock limit of one call, instantiation included, from the moment it has its
    /// instance (a wait for a free one is not counted). Enforced by a tokio timeout and,
    /// while the guest is running wasm, by epoch interruption.
    #[serde(with = "crate::support::duration_ms", rename = "timeout_ms")]
    pub timeout: Duration,
    /// Largest linear memory one instance may grow to, in bytes.
    pub memory_bytes: usize,
    /// Largest table one instance may grow to, in elements.
    pub table_elements: usize,
    /// Maximum wasm call-stack size, in bytes.
    pub max_wasm_stack: usize,
    /// Optional fuel (roughly: wasm instructions) per call; `None` disables fuel metering.
    pub fuel: Option<u64>,
    /// Log records one call may emit through the `log` import before it is trapped.
    pub log_records: u32,
    /// Bytes of log message and fields one call may emit before it is trapped.
    pub log_bytes: usize,
    /// Bytes of guest stdout and stderr kept per call; the rest is dropped and counted.
    pub stdio_bytes: usize,
    /// Lines of guest stdout and stderr kept per call (each becomes one log record); the
    /// rest is dropped and counted.
    pub stdio_lines: usize,
    /// Most bytes the host copies out of the guest in one transfer: a returned value, or the
    /// arguments of one import call (wasmtime's hostcall fuel). A guest that hands over more
    /// (a huge list, strings aliasing one buffer many times) is stopped with the `copy`
    /// budget instead of making the host allocate for it.
    pub copy_bytes: usize,
    /// Most core module instances one component instance may create (the pooling allocator's
    /// per-component limit; a component needing more is refused at the `compile` stage). A
    /// Rust wasip2 component makes a handful; a `componentize-py` (Python) component makes 38,
    /// so a host serving Python plugins sets 64. Headroom is not free: every call pays a little
    /// for it (BENCHMARKS.md).
    pub core_instances: u32,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(500),
            memory_bytes: 64 << 20,
            table_elements: 20_000,
            max_wasm_stack: 512 << 10,
            fuel: None,
            log_records: 256,
            log_bytes: 64 << 10,
            stdio_bytes: 16 << 10,
            stdio_lines: 256,
            copy_bytes: 1 << 20,
            core_instances: 32,
        }
    }
}

/// Which limits one invocation hit; set by the limiter before it refuses, read by the invoker
/// to classify the failure (the log budget is the `log` import's, see `capabilities`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LimitHits {
    /// A memory grow beyond [`Budget::memory_bytes`] was refused.
    pub memory: bool,
    /// A table grow beyond [`Budget::table_elements`] was refused.
    pub table: bool,
}

/// Error raised into the guest (as a trap) when it grows past its memory budget.
#[derive(Debug, thiserror::Error)]
#[error("memory budget of {limit} bytes exceeded (requested {requested})")]
pub struct MemoryBudgetExceeded {
    /// Configured limit in bytes.
    pub limit: usize,
    /// Size the guest asked for.
    pub requested: usize,
}

/// Error raised into the guest (as a trap) when it grows a table past its budget.
#[derive(Debug, thiserror::Error)]
#[error("table budget of {limit} elements exceeded (requested {requested})")]
pub struct TableBudgetExceeded {
    /// Configured limit in elements.
    pub limit: usize,
    /// Size the guest asked for.
    pub requested: usize,
}

/// Enforces [`Budget::memory_bytes`] and [`Budget::table_elements`] for one store.
#[derive(Debug)]
pub struct Limiter {
    memory_bytes: usize,
    table_elements: usize,
    core_instances: usize,
    /// Bytes of all the store's linear memories together: the budget is per call, however
    /// many memories a component defines.
    memory_used: usize,
    /// Memory grow requests so far (the initial sizes at instantiation included).
    grows: u32,
    /// What was hit; read after the call.
    pub hits: LimitHits,
}

impl Limiter {
    /// A limiter for `budget`.
    pub fn new(budget: &Budget) -> Self {
        Self {
            memory_bytes: budget.memory_bytes,
            table_elements: budget.table_elements,
            core_instances: budget.core_instances as usize,
            memory_used: 0,
            grows: 0,
            hits: LimitHits::default(),
        }
    }
}

impl Limiter {
    /// Bytes of linear memory the store's memories have now (what they started with and grew).
    pub fn memory_used(&self) -> usize {
        self.memory_used
    }

    /// Memory grow requests so far (the initial sizes at instantiation included).
    pub fn grows(&self) -> u32 {
        self.grows
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grows = self.grows.saturating_add(1);
        let total = self
            .memory_used
            .saturating_add(desired.saturating_sub(current));
        if total > self.memory_bytes {
            self.hits.memory = true;
            return Err(wasmtime::Error::new(MemoryBudgetExceeded {
                limit: self.memory_bytes,
                requested: total,
            }));
        }
        self.memory_used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            self.hits.table = true;
            return Err(wasmtime::Error::new(TableBudgetExceeded {
                limit: self.table_elements,
                requested: desired,
            }));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        // As the pool allows (`Budget::core_instances`); more is hostile.
        self.core_instances
    }

    fn tables(&self) -> usize {
        32
    }

    fn memories(&self) -> usize {
        4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn memory_growth_beyond_budget_is_refused_and_recorded() {
        let budget = Budget {
            memory_bytes: 1 << 20,
            ..Budget::default()
        };
        let mut limiter = Limiter::new(&budget);
        assert!(limiter.memory_growing(0, 1 << 20, None).unwrap());
        assert!(!limiter.hits.memory);
        let err = limiter
            .memory_growing(1 << 20, (1 << 20) + 65536, None)
            .unwrap_err();
        assert!(err.downcast_ref::<MemoryBudgetExceeded>().is_some());
        assert!(limiter.hits.memory);
    }

    #[test]
    fn the_memory_budget_covers_all_memories_of_a_call_together() {
        let budget = Budget {
            memory_bytes: 1 << 20,
            ..Budget::default()
        };
        let mut limiter = Limiter::new(&budget);
        assert!(limiter.memory_growing(0, 768 << 10, None).unwrap());
        // A second memory: within the budget on its own, over it together with the first.
        assert!(limiter.memory_growing(0, 512 << 10, None).is_err());
        assert!(limiter.hits.memory);
    }

    #[test]
    fn core_instances_follow_the_budget() {
        assert_eq!(Limiter::new(&Budget::default()).instances(), 32);
        let budget = Budget {
            core_instances: 64,
            ..Budget::default()
        };
        assert_eq!(Limiter::new(&budget).instances(), 64);
    }

    #[test]
    fn table_growth_beyond_budget_is_refused_and_recorded() {
        let budget = Budget {
            table_elements: 10,
            ..Budget::default()
        };
        let mut limiter = Limiter::new(&budget);
        assert!(limiter.table_growing(0, 10, None).unwrap());
        assert!(limiter.table_growing(10, 11, None).is_err());
        assert!(limiter.hits.table);
    }
}
