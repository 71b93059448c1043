//! Hostile test plugin: a broken release of `orders` (0.9.1-liar) whose priced orders charge
//! one cent more than they add up to (the host's `total` rule), for the canary tests: a
//! contract violation counts against the version like a trap. `describe` and `transition`
//! behave, so it is admitted. Never deploy it.

use weir_sdk::{
    OrderError, OrderEvent, OrderRequest, OrderSnapshot, OrderStatus, Plugin, PluginInfo,
    PricedOrder,
};

#[path = "../../liar/src/honest.rs"]
mod honest;

/// The hostile plugin.
pub struct Hostile;

impl Plugin for Hostile {
    fn describe() -> PluginInfo {
        PluginInfo::new("orders", "0.9.1-liar", vec![])
    }

    fn place_order(request: OrderRequest) -> Result<PricedOrder, OrderError> {
        let mut priced = honest::price(&request);
        priced.total.amount += 1;
        Ok(priced)
    }

    fn transition(order: OrderSnapshot, event: OrderEvent) -> Result<OrderStatus, OrderError> {
        match (order.status, event) {
            (OrderStatus::Placed, OrderEvent::PaymentCaptured) => Ok(OrderStatus::Paid),
            (OrderStatus::Paid, OrderEvent::Shipped) => Ok(OrderStatus::Shipped),
            (
                OrderStatus::Placed | OrderStatus::Paid | OrderStatus::Cancelled,
                OrderEvent::CancelRequested,
            ) => Ok(OrderStatus::Cancelled),
            _ => Err(OrderError::Conflict("does not apply".into())),
        }
    }
}

weir_sdk::export_plugin!(Hostile);
