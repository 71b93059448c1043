//! `weir:orders/deadline`: how much of the call's time budget is left.

use super::Imports;
use crate::world::bindings::Capability;
use crate::world::bindings::deadline::Host;

impl Host for Imports {
    #[tracing::instrument(
        name = "plugin.import.deadline.remaining_ms",
        skip_all,
        level = "debug"
    )]
    fn remaining_ms(&mut self) -> wasmtime::Result<u64> {
        self.require(Capability::Deadline)?;
        Ok(u64::try_from(self.remaining().as_millis()).unwrap_or(u64::MAX))
    }
}
