//! The intake gate: whether new orders are admitted right now.

use std::time::Duration;

/// Holds back new orders while something downstream cannot keep up (events backpressure).
pub trait IntakeGate: Send + Sync {
    /// `Err(retry_after)` while intake is paused.
    fn admit(&self) -> Result<(), Duration>;
}

/// A gate that always admits (the embedded default has no broker to fall behind).
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenIntake;

impl IntakeGate for OpenIntake {
    fn admit(&self) -> Result<(), Duration> {
        Ok(())
    }
}
