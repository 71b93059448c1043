//! Time and background work, as ports so use-cases stay runtime-agnostic and testable.

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, SubsecRound, Utc};

/// Wall-clock time.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> DateTime<Utc>;

    /// Now at the microsecond precision every store keeps, so a value built from it equals
    /// the same value read back later.
    fn now_micros(&self) -> DateTime<Utc> {
        self.now().trunc_subsecs(6)
    }
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A future that runs on its own, detached from the request that started it.
pub type Detached = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Runs clean-up work detached from the caller: used when a use-case is cancelled mid-way
/// (its future dropped) and must still give back what it held, e.g. an idempotency key.
pub trait Spawner: Send + Sync {
    /// Run `task` to completion in the background; dropped silently when nothing can run it
    /// (the process is exiting).
    fn spawn(&self, task: Detached);
}
