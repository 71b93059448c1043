//! Hostile test plugin `hostile-liar`: well-formed answers that break the host's contract.
//!
//! It prices every unit at 100 in the request's currency and follows the status graph, unless
//! told to lie:
//! - `place-order` lies as the request's `metadata["lie"]` says: `empty`, `unrequested-sku`,
//!   `quantity`, `duplicate`, `currency`, `negative`, `huge`, `line-total`, `subtotal`,
//!   `discount`, `total`;
//! - `transition` lies for customers named `cancel-pays` (a cancel answers `paid`) and
//!   `uncancel` (cancelling a cancelled order answers `placed`).
//!
//! Used by the contract tests; never deploy it.

use weir_sdk::{
    OrderError, OrderEvent, OrderRequest, OrderSnapshot, OrderStatus, Plugin, PluginInfo,
    PricedOrder,
};

mod honest;

/// The hostile plugin.
pub struct Liar;

fn lie(how: &str, p: &mut PricedOrder) {
    match how {
        "empty" => p.lines.clear(),
        "unrequested-sku" => p.lines[0].sku = "NOT-ASKED".into(),
        "quantity" => {
            p.lines[0].quantity = 1000;
            p.lines[0].line_total.amount = 100_000;
        }
        "duplicate" => {
            let line = p.lines[0].clone();
            p.lines.push(line);
        }
        "currency" => {
            for m in [&mut p.subtotal, &mut p.discount, &mut p.tax, &mut p.total] {
                m.currency = "JPY".into();
            }
            for l in &mut p.lines {
                l.unit_price.currency = "JPY".into();
                l.line_total.currency = "JPY".into();
            }
        }
        "negative" => {
            p.discount.amount = p.subtotal.amount + 500;
            p.total.amount = -500;
        }
        "huge" => p.total.amount = i64::MAX,
        "line-total" => p.lines[0].line_total.amount += 1,
        "subtotal" => p.subtotal.amount += 1,
        "discount" => p.discount.amount = p.subtotal.amount + 1,
        "total" => p.total.amount += 1,
        _ => {}
    }
}

impl Plugin for Liar {
    fn describe() -> PluginInfo {
        PluginInfo::new("hostile-liar", env!("CARGO_PKG_VERSION"), vec![])
    }

    fn place_order(request: OrderRequest) -> Result<PricedOrder, OrderError> {
        let mut priced = honest::price(&request);
        if let Some((_, how)) = request.metadata.iter().find(|(k, _)| k == "lie") {
            lie(how, &mut priced);
        }
        Ok(priced)
    }

    fn transition(order: OrderSnapshot, event: OrderEvent) -> Result<OrderStatus, OrderError> {
        use OrderEvent as E;
        use OrderStatus as S;
        match (order.customer_id.as_str(), order.status, event) {
            ("cancel-pays", S::Placed, E::CancelRequested) => Ok(S::Paid),
            ("uncancel", S::Cancelled, E::CancelRequested) => Ok(S::Placed),
            (_, S::Placed, E::PaymentCaptured) => Ok(S::Paid),
            (_, S::Paid, E::Shipped) => Ok(S::Shipped),
            (_, S::Placed | S::Paid | S::Cancelled, E::CancelRequested) => Ok(S::Cancelled),
            _ => Err(OrderError::Conflict("does not apply".into())),
        }
    }
}

weir_sdk::export_plugin!(Liar);
