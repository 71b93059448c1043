//! An honest pricing of any request: 100 minor units per unit, no discount, no tax. Shared
//! by the lying test plugins (`hostile-liar`, `orders` 0.9.1-liar), which then lie about it.

use weir_sdk::{Money, OrderRequest, PricedLine, PricedOrder};

/// 100 per unit in the request's currency; subtotal = total.
pub fn price(request: &OrderRequest) -> PricedOrder {
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
    let subtotal = lines.iter().map(|l| l.line_total.amount).sum();
    PricedOrder {
        lines,
        subtotal: money(subtotal),
        discount: money(0),
        tax: money(0),
        total: money(subtotal),
    }
}
