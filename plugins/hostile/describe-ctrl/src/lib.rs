//! Hostile test plugin: `describe` returns a version with terminal control characters and a
//! forged log line (`"1.0.0\u{1b}[2J\r\nFAKE LOG LINE"`), so admission must refuse it and never
//! echo it raw into logs or responses. Never deploy it.

use weir_sdk::{
    OrderError, OrderEvent, OrderRequest, OrderSnapshot, OrderStatus, Plugin, PluginInfo,
    PricedOrder,
};

/// The hostile plugin.
pub struct Hostile;

impl Plugin for Hostile {
    fn describe() -> PluginInfo {
        PluginInfo::new("describe-ctrl", "1.0.0\u{1b}[2J\r\nFAKE LOG LINE", vec![])
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
