//! Hostile test plugin: `describe` declares `log` twice (`[log, catalog, log]`), to test how
//! admission treats duplicate capabilities. Never deploy it.

use weir_sdk::{
    Capability, OrderError, OrderEvent, OrderRequest, OrderSnapshot, OrderStatus, Plugin,
    PluginInfo, PricedOrder,
};

/// The hostile plugin.
pub struct Hostile;

impl Plugin for Hostile {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "describe-dup",
            "1.0.0",
            vec![Capability::Log, Capability::Catalog, Capability::Log],
        )
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
