//! Hostile test plugin `hostile-sleep`: blocks in a WASI clock sleep for an hour in `place-order`, to test the wall-clock deadline of blocking host calls.
//!
//! `describe` and `transition` behave; only `place-order` misbehaves. Used by the host's
//! sandbox tests; never deploy it.

use std::time::Duration;

use weir_sdk::{
    Capability, OrderError, OrderEvent, OrderRequest, OrderSnapshot, OrderStatus, Plugin,
    PluginInfo, PricedOrder,
};

/// The hostile plugin.
pub struct Hostile;

impl Plugin for Hostile {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "hostile-sleep",
            env!("CARGO_PKG_VERSION"),
            vec![Capability::Log],
        )
    }

    fn place_order(_request: OrderRequest) -> Result<PricedOrder, OrderError> {
        std::thread::sleep(Duration::from_secs(3600));
        Err(OrderError::internal("hostile-sleep woke up"))
    }

    fn transition(order: OrderSnapshot, _event: OrderEvent) -> Result<OrderStatus, OrderError> {
        Ok(order.status)
    }
}

weir_sdk::export_plugin!(Hostile);
