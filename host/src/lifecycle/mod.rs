//! The process lifecycle: graceful shutdown and supervised background workers.
//!
//! - [`shutdown`]: the [`Shutdown`] handle (readiness latches, tokens, in-flight request
//!   tracking), the drain coordinator ([`shutdown::drain`]) and signal handling.
//! - [`worker`]: the [`Supervisor`] that runs every background job (cancellation, a span per
//!   unit of work, metrics, panic isolation with restart, a place in the drain).
//! - [`outcome`]: the [`RunMarker`] that makes a drain's outcome observable after the process
//!   exits (a marker in the data directory read by the next start, and a counter for OTLP).

pub mod outcome;
pub mod shutdown;
pub mod worker;

pub use outcome::{Outcome, PreviousRun, RunMarker};
pub use shutdown::{
    Closer, DrainPlan, DrainReport, EXIT_FORCED, Interruptible, Shutdown, ShutdownConfig, Signals,
};
pub use worker::{Backoff, Supervisor, WorkerContext, WorkerError, WorkerView};
