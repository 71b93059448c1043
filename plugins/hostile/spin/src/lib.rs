//! Hostile test plugin `hostile-spin`: spins forever in `place-order` (after printing one line to stdout), to test epoch interruption and stdout capture.
//!
//! `describe` and `transition` behave; only `place-order` misbehaves. Used by the host's
//! sandbox tests; never deploy it.

use std::hint::black_box;

use weir_sdk::{
    Capability, OrderError, OrderEvent, OrderRequest, OrderSnapshot, OrderStatus, Plugin,
    PluginInfo, PricedOrder,
};

/// The hostile plugin.
pub struct Hostile;

impl Plugin for Hostile {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "hostile-spin",
            env!("CARGO_PKG_VERSION"),
            vec![Capability::Log],
        )
    }

    fn place_order(_request: OrderRequest) -> Result<PricedOrder, OrderError> {
        println!("hostile-spin: spinning forever");
        let mut counter: u64 = 0;
        loop {
            counter = black_box(counter.wrapping_add(1));
        }
    }

    fn transition(order: OrderSnapshot, _event: OrderEvent) -> Result<OrderStatus, OrderError> {
        Ok(order.status)
    }
}

weir_sdk::export_plugin!(Hostile);
