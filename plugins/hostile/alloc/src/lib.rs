//! Hostile test plugin `hostile-alloc`: allocates and keeps 1 MiB chunks forever in `place-order`, to test the memory limit.
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
            "hostile-alloc",
            env!("CARGO_PKG_VERSION"),
            vec![Capability::Log],
        )
    }

    fn place_order(_request: OrderRequest) -> Result<PricedOrder, OrderError> {
        const CHUNK: usize = 1024 * 1024;
        let mut kept: Vec<Vec<u8>> = Vec::new();
        loop {
            // Filled with a non-zero byte so every page is really written.
            kept.push(black_box(vec![0xA5u8; CHUNK]));
            black_box(&kept);
        }
    }

    fn transition(order: OrderSnapshot, _event: OrderEvent) -> Result<OrderStatus, OrderError> {
        Ok(order.status)
    }
}

weir_sdk::export_plugin!(Hostile);
