//! The reference Weir order plugin.
//!
//! [`OrdersPlugin`] validates an order request (reporting every violation at once), prices
//! it from the catalog, applies an optional discount and tax from the plugin configuration,
//! and decides order status transitions.
//!
//! Built as a `cdylib` for `wasm32-unknown-unknown` (no WASI imports; `plugins/artifacts`)
//! it is the component the host serves by default, and for `wasm32-wasip2` the build the
//! benchmarks compare it with; as an `rlib` the same logic runs natively (benchmarks, unit tests with
//! [`weir_sdk::testing::FakeHost`]).
//!
//! # Configuration keys
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `currencies` | comma-separated ISO 4217 codes accepted | `USD,EUR,GBP` |
//! | `discount.percent_bps` | discount in basis points (0..=10000) | `0` |
//! | `discount.min_subtotal` | minimum subtotal (minor units) for the discount | `0` |
//! | `tax.rate_bps` | tax rate in basis points on subtotal minus discount | `0` |
//!
//! A value that does not parse makes every `place-order` fail with `internal`, naming the
//! key: it is an operator error that must not be silently ignored.
//!
//! # Layout
//!
//! - [`settings`]: reads and parses the configuration.
//! - [`validate`]: request validation, one [`weir_sdk::Violation`] per problem.
//! - [`pricing`]: catalog lookups, line totals, discount, tax and rounding.
//! - [`lifecycle`]: the order status transition table.

pub mod lifecycle;
pub mod pricing;
pub mod settings;
pub mod validate;

use std::time::Duration;

use weir_sdk::{
    Capability, OrderError, OrderEvent, OrderRequest, OrderSnapshot, OrderStatus, Plugin,
    PluginInfo, PricedOrder, deadline, log,
};

/// Below this much time left, `place-order` gives up before calling the catalog.
pub const MIN_DEADLINE: Duration = Duration::from_millis(1);

/// The reference order plugin.
pub struct OrdersPlugin;

impl Plugin for OrdersPlugin {
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
        if deadline::remaining() < MIN_DEADLINE {
            return Err(OrderError::unavailable("deadline too close"));
        }
        let priced = pricing::price(&request, &settings)?;
        log::info(
            "order priced",
            &[
                ("lines", &priced.lines.len().to_string()),
                ("total", &priced.total.amount.to_string()),
                ("currency", &priced.total.currency),
            ],
        );
        Ok(priced)
    }

    fn transition(order: OrderSnapshot, event: OrderEvent) -> Result<OrderStatus, OrderError> {
        lifecycle::transition(order.status, event)
    }
}

weir_sdk::export_plugin!(OrdersPlugin);

#[cfg(test)]
mod tests;
