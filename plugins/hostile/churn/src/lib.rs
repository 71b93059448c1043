//! Test plugin `hostile-churn`: `place-order` allocates a 1 MiB buffer, writes it and frees it,
//! 256 times over (256 MiB in all), then refuses the order with `rejected` `CHURNED` and the
//! sum of the bytes it read back. With the metadata key `panic` it panics instead (it declares
//! no capability, so the SDK's panic hook must not call the log import).
//!
//! Built for `wasm32-unknown-unknown` with the SDK's heap (`weir_sdk::heap`): the call stays
//! within a memory budget far below 256 MiB only if the heap reuses what was freed (a heap
//! that never frees would run into the budget). Used by the host's runtime tests; never
//! deploy it.

use std::hint::black_box;

use weir_sdk::{
    OrderError, OrderEvent, OrderRequest, OrderSnapshot, OrderStatus, Plugin, PluginInfo,
    PricedOrder,
};

/// The test plugin.
pub struct Churn;

impl Plugin for Churn {
    fn describe() -> PluginInfo {
        PluginInfo::new("hostile-churn", env!("CARGO_PKG_VERSION"), vec![])
    }

    fn place_order(request: OrderRequest) -> Result<PricedOrder, OrderError> {
        if request.metadata.iter().any(|(key, _)| key == "panic") {
            panic!("hostile-churn panicked on request");
        }
        let mut sum = 0u64;
        for round in 0..256u32 {
            let buffer = black_box(vec![(round % 251) as u8; 1 << 20]);
            sum += u64::from(buffer[buffer.len() - 1]);
        }
        Err(OrderError::rejected("CHURNED", sum.to_string()))
    }

    fn transition(order: OrderSnapshot, _event: OrderEvent) -> Result<OrderStatus, OrderError> {
        Ok(order.status)
    }
}

weir_sdk::export_plugin!(Churn);
