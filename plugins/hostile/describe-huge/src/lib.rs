//! Hostile test plugin: `describe` returns a name of 50,000,000 bytes (`a`), so admission
//! must refuse it (bounded name length) without choking on it. Never deploy it.

use weir_sdk::{
    OrderError, OrderEvent, OrderRequest, OrderSnapshot, OrderStatus, Plugin, PluginInfo,
    PricedOrder,
};

/// The hostile plugin.
pub struct Hostile;

impl Plugin for Hostile {
    fn describe() -> PluginInfo {
        PluginInfo::new("a".repeat(50_000_000), "1.0.0", vec![])
    }

    fn place_order(_request: OrderRequest) -> Result<PricedOrder, OrderError> {
        Err(OrderError::rejected(
            "DESCRIBE_ONLY",
            "this plugin only misbehaves in describe",
        ))
    }

    fn transition(order: OrderSnapshot, _event: OrderEvent) -> Result<OrderStatus, OrderError> {
        Ok(order.status)
    }
}

weir_sdk::export_plugin!(Hostile);
