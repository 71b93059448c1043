//! Hostile test plugin: a broken release of `orders` (0.9.1-liar) whose priced orders charge
//! one cent more than they add up to (the host's `total` rule), for the canary tests: a
//! contract violation counts against the version like a trap. `describe` and `transition`
//! behave, so it is admitted. Never deploy it.

use weir_sdk::{
    Money, OrderError, OrderEvent, OrderRequest, OrderSnapshot, OrderStatus, Plugin, PluginInfo,
    PricedLine, PricedOrder,
};

/// The hostile plugin.
pub struct Hostile;

impl Plugin for Hostile {
    fn describe() -> PluginInfo {
        PluginInfo::new("orders", "0.9.1-liar", vec![])
    }

    fn place_order(request: OrderRequest) -> Result<PricedOrder, OrderError> {
        let money = |amount| Money::new(amount, request.currency.clone());
        let lines: Vec<PricedLine> = request
            .lines
            .iter()
            .map(|l| PricedLine {
                sku: l.sku.clone(),
                quantity: l.quantity,
                unit_price: money(100),
                line_total: money(100 * i64::from(l.quantity)),
            })
            .collect();
        let subtotal: i64 = lines.iter().map(|l| l.line_total.amount).sum();
        Ok(PricedOrder {
            lines,
            subtotal: money(subtotal),
            discount: money(0),
            tax: money(0),
            total: money(subtotal + 1),
        })
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
