//! Hostile test plugin `hostile-stack`: recurses without bound in `place-order`, to test stack overflow handling.
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
            "hostile-stack",
            env!("CARGO_PKG_VERSION"),
            vec![Capability::Log],
        )
    }

    fn place_order(_request: OrderRequest) -> Result<PricedOrder, OrderError> {
        Err(OrderError::internal(format!("depth {}", recurse(0))))
    }

    fn transition(order: OrderSnapshot, _event: OrderEvent) -> Result<OrderStatus, OrderError> {
        Ok(order.status)
    }
}

weir_sdk::export_plugin!(Hostile);

/// Non-tail recursion with a 1 KiB black-boxed array per frame; never returns in practice
/// (the stop condition is opaque to the optimiser and never true).
#[inline(never)]
pub fn recurse(depth: u64) -> u64 {
    if black_box(depth) == u64::MAX {
        return 0;
    }
    let frame = black_box([depth as u8; 1024]);
    let below = recurse(black_box(depth + 1));
    below.wrapping_add(u64::from(black_box(frame)[(depth % 1024) as usize]))
}
