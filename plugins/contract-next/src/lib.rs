//! Test plugin: built against `wit/orders.wit`, a copy of the contract declared as
//! `weir:orders@0.2.0`, a version the host does not accept, so the host's contract check can
//! be tested to name the version seen and the accepted ones. Never deploy it.

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

/// Implements the future version's world.
pub struct Next;

impl bindings::Guest for Next {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "contract-next".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            capabilities: Vec::new(),
        }
    }

    fn place_order(request: OrderRequest) -> Result<PricedOrder, OrderError> {
        Err(OrderError::Internal(format!(
            "{} lines: never priced",
            request.lines.len()
        )))
    }

    fn transition(order: OrderSnapshot, _event: OrderEvent) -> Result<OrderStatus, OrderError> {
        Ok(order.status)
    }
}

#[allow(unsafe_code)]
mod export {
    use super::{Next, bindings};
    bindings::export!(Next with_types_in bindings);
}
