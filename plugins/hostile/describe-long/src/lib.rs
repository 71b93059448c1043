//! Hostile test plugin: `describe` returns a name of 10,000 characters, `"ab\u{7}\u{1b}[31m"`
//! repeated (bell and ANSI escapes; over the 64-character name limit but small), so admission
//! must refuse it and never echo it raw. Never deploy it.

use weir_sdk::{
    OrderError, OrderEvent, OrderRequest, OrderSnapshot, OrderStatus, Plugin, PluginInfo,
    PricedOrder,
};

/// The hostile plugin.
pub struct Hostile;

impl Plugin for Hostile {
    fn describe() -> PluginInfo {
        PluginInfo::new("ab\u{7}\u{1b}[31m".repeat(1250), "1.0.0", vec![])
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
