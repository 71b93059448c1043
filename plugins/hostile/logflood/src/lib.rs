//! Hostile test plugin `hostile-logflood`: logs ~1 KiB records in an endless loop in `place-order`, to test the host's log budget.
//!
//! `describe` and `transition` behave; only `place-order` misbehaves. Used by the host's
//! sandbox tests; never deploy it.

use weir_sdk::{
    Capability, OrderError, OrderEvent, OrderRequest, OrderSnapshot, OrderStatus, Plugin,
    PluginInfo, PricedOrder,
};

/// The hostile plugin.
pub struct Hostile;

impl Plugin for Hostile {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "hostile-logflood",
            env!("CARGO_PKG_VERSION"),
            vec![Capability::Log],
        )
    }

    fn place_order(_request: OrderRequest) -> Result<PricedOrder, OrderError> {
        let message = "x".repeat(1024);
        let mut n: u64 = 0;
        loop {
            n = n.wrapping_add(1);
            weir_sdk::log::info(&message, &[("n", &n.to_string())]);
        }
    }

    fn transition(order: OrderSnapshot, _event: OrderEvent) -> Result<OrderStatus, OrderError> {
        Ok(order.status)
    }
}

weir_sdk::export_plugin!(Hostile);
