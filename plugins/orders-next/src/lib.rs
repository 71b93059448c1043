//! Test plugin: the next release of the reference `orders` plugin, `orders` 0.2.0.
//!
//! The same validation, pricing, tax and lifecycle as `plugins/orders` (its source modules,
//! compiled here again so the two components share no exported symbols), plus one observable
//! difference: a loyalty discount of 1% of the subtotal (rounded down), granted after tax, so
//! `total = subtotal - discount + tax` still holds. Used by the release tests (swap, canary,
//! shadow) as "version B"; never deploy it.

#[path = "../../orders/src/lifecycle.rs"]
pub mod lifecycle;
#[path = "../../orders/src/pricing.rs"]
pub mod pricing;
#[path = "../../orders/src/settings.rs"]
pub mod settings;
#[path = "../../orders/src/validate.rs"]
pub mod validate;

use weir_sdk::{
    Capability, Money, OrderError, OrderEvent, OrderRequest, OrderSnapshot, OrderStatus, Plugin,
    PluginInfo, PricedOrder,
};

/// The loyalty discount, in basis points of the subtotal.
pub const LOYALTY_BPS: i64 = 100;

/// `orders` 0.2.0.
pub struct OrdersNext;

impl Plugin for OrdersNext {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "orders",
            env!("CARGO_PKG_VERSION"),
            vec![
                Capability::Log,
                Capability::Catalog,
                Capability::Config,
                Capability::Deadline,
            ],
        )
    }

    fn place_order(request: OrderRequest) -> Result<PricedOrder, OrderError> {
        let settings = settings::Settings::load()?;
        let violations = validate::validate(&request, &settings);
        if !violations.is_empty() {
            return Err(OrderError::invalid(violations));
        }
        let mut priced = pricing::price(&request, &settings)?;
        let loyalty = priced.subtotal.amount * LOYALTY_BPS / 10_000;
        let currency = priced.total.currency.clone();
        priced.discount = Money::new(priced.discount.amount + loyalty, currency.clone());
        priced.total = Money::new(
            priced.subtotal.amount - priced.discount.amount + priced.tax.amount,
            currency,
        );
        Ok(priced)
    }

    fn transition(order: OrderSnapshot, event: OrderEvent) -> Result<OrderStatus, OrderError> {
        lifecycle::transition(order.status, event)
    }
}

weir_sdk::export_plugin!(OrdersNext);
