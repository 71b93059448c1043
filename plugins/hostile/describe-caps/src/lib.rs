//! Hostile test plugin: `describe` declares 4,000,000 capabilities (all `log`), so admission
//! must refuse it (or bound what it lifts) without choking on it. Never deploy it.

use weir_sdk::{
    Capability, OrderError, OrderEvent, OrderRequest, OrderSnapshot, OrderStatus, Plugin,
    PluginInfo, PricedOrder,
};

/// The hostile plugin.
pub struct Hostile;

impl Plugin for Hostile {
    fn describe() -> PluginInfo {
        PluginInfo::new("describe-caps", "1.0.0", vec![Capability::Log; 4_000_000])
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
