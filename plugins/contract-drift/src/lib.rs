//! Test plugin: built against `wit/orders.wit`, a deliberately changed copy of the
//! `weir:orders@0.1.0` contract (`order-line.quantity: u64`, `rejection.reason` renamed
//! `reason-code`, an extra `order-status` case `refunded`; `transition` takes an extra
//! `reason: string`), so the host's contract check can be tested to name each difference.
//! Never deploy it.

#[allow(unsafe_code, missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "plugin",
    });
}

use bindings::weir::orders::types::{
    OrderError, OrderEvent, OrderRequest, OrderSnapshot, OrderStatus, PluginInfo, PricedOrder,
};

/// Implements the drifted world.
pub struct Drift;

impl bindings::Guest for Drift {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "contract-drift".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            capabilities: Vec::new(),
        }
    }

    fn place_order(request: OrderRequest) -> Result<PricedOrder, OrderError> {
        let units: u64 = request.lines.iter().map(|l| l.quantity).sum();
        Err(OrderError::Internal(format!("{units} units: never priced")))
    }

    fn transition(
        order: OrderSnapshot,
        _event: OrderEvent,
        _reason: String,
    ) -> Result<OrderStatus, OrderError> {
        Ok(order.status)
    }
}

#[allow(unsafe_code)]
mod export {
    use super::{Drift, bindings};
    bindings::export!(Drift with_types_in bindings);
}
