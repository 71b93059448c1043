//! Test plugin `slow-orders`: the reference order logic (`plugins/orders`, its source modules
//! compiled here again so the two components share no exported symbols), after holding every
//! `place-order` call for a known, bounded time.
//!
//! The hold is the plugin configuration key `hold_ms` (a WASI clock sleep; `0` or unset: no
//! hold). It keeps a known number of requests and plugin invocations provably in flight for a
//! known time, so the shutdown tests can signal the process while they run and still expect
//! every one of them to finish normally (`201`) within the drain deadline. Never deploy it.

#[path = "../../../orders/src/lifecycle.rs"]
pub mod lifecycle;
#[path = "../../../orders/src/pricing.rs"]
pub mod pricing;
#[path = "../../../orders/src/settings.rs"]
pub mod settings;
#[path = "../../../orders/src/validate.rs"]
pub mod validate;

use std::time::Duration;

use weir_sdk::{
    Capability, OrderError, OrderEvent, OrderRequest, OrderSnapshot, OrderStatus, Plugin,
    PluginInfo, PricedOrder, config,
};

/// The reference logic, held first.
pub struct SlowOrders;

impl Plugin for SlowOrders {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "slow-orders",
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
        let hold: u64 = match config::get("hold_ms") {
            None => 0,
            Some(raw) => raw.trim().parse().map_err(|_| {
                OrderError::internal(format!("config key hold_ms has an invalid value {raw:?}"))
            })?,
        };
        if hold > 0 {
            std::thread::sleep(Duration::from_millis(hold));
        }
        let settings = settings::Settings::load()?;
        let violations = validate::validate(&request, &settings);
        if !violations.is_empty() {
            return Err(OrderError::invalid(violations));
        }
        pricing::price(&request, &settings)
    }

    fn transition(order: OrderSnapshot, event: OrderEvent) -> Result<OrderStatus, OrderError> {
        lifecycle::transition(order.status, event)
    }
}

weir_sdk::export_plugin!(SlowOrders);
