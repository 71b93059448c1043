//! Hostile test plugin: a broken release of `orders` (0.9.0-trap) whose `place-order` panics
//! (a trap), for the canary auto-rollback tests. `describe` and `transition` behave, so it is
//! admitted. Never deploy it.

use weir_sdk::{
    Capability, OrderError, OrderEvent, OrderRequest, OrderSnapshot, OrderStatus, Plugin,
    PluginInfo, PricedOrder,
};

/// The hostile plugin.
pub struct Hostile;

impl Plugin for Hostile {
    fn describe() -> PluginInfo {
        PluginInfo::new("orders", "0.9.0-trap", vec![Capability::Log])
    }

    fn place_order(_request: OrderRequest) -> Result<PricedOrder, OrderError> {
        panic!("orders 0.9.0-trap: place-order is broken")
    }

    fn transition(order: OrderSnapshot, event: OrderEvent) -> Result<OrderStatus, OrderError> {
        match (order.status, event) {
            (OrderStatus::Placed, OrderEvent::PaymentCaptured) => Ok(OrderStatus::Paid),
            (OrderStatus::Paid, OrderEvent::Shipped) => Ok(OrderStatus::Shipped),
            (OrderStatus::Placed | OrderStatus::Paid, OrderEvent::CancelRequested) => {
                Ok(OrderStatus::Cancelled)
            }
            (status, _) => Ok(status),
        }
    }
}

weir_sdk::export_plugin!(Hostile);
