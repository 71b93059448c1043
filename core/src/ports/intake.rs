//! The intake gate: whether new orders are admitted right now.

use std::time::Duration;

/// Holds back new orders while something downstream cannot keep up (events backpressure).
pub trait IntakeGate: Send + Sync {
    /// `Err(retry_after)` while intake is paused.
    fn admit(&self) -> Result<(), Duration>;
}
