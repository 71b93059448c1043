//! The time budget of the current call (WIT interface `weir:orders/deadline`).

use std::time::Duration;

/// Time left before the host interrupts this call, with millisecond resolution.
///
/// Check it before starting expensive or dependency-heavy work and fail fast with
/// [`crate::OrderError::Unavailable`] when too little is left.
///
/// ```
/// use std::time::Duration;
/// use weir_sdk::{OrderError, deadline};
///
/// let _host = weir_sdk::testing::FakeHost::new()
///     .deadline(Duration::from_millis(5))
///     .install();
/// let answer = if deadline::remaining() < Duration::from_millis(20) {
///     Err(OrderError::unavailable("deadline too close"))
/// } else {
///     Ok(())
/// };
/// assert!(matches!(answer, Err(OrderError::Unavailable(_))));
/// ```
pub fn remaining() -> Duration {
    #[cfg(all(target_arch = "wasm32", not(feature = "fake-host")))]
    {
        Duration::from_millis(crate::__bindings::weir::orders::deadline::remaining_ms())
    }
    #[cfg(any(not(target_arch = "wasm32"), feature = "fake-host"))]
    {
        crate::testing::with_host("weir_sdk::deadline::remaining", |host| {
            host.deadline_remaining()
        })
    }
}
