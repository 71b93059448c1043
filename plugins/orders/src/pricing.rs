//! Pricing: catalog lookups, line totals, discount and tax, all in checked integer minor
//! units with half-up rounding.

use weir_sdk::{
    DependencyError, MAX_AMOUNT, Money, OrderError, OrderRequest, PricedLine, PricedOrder,
    Violation, catalog,
};

use crate::settings::{BPS_DENOMINATOR, Settings};

/// Price a validated request. Stops at the first line the catalog refuses.
pub fn price(request: &OrderRequest, settings: &Settings) -> Result<PricedOrder, OrderError> {
    let currency = request.currency.as_str();
    let mut lines = Vec::with_capacity(request.lines.len());
    let mut subtotal: i64 = 0;

    for (i, line) in request.lines.iter().enumerate() {
        let product = catalog::get(&line.sku)
            .map_err(|e| dependency_error(&line.sku, e))?
            .ok_or_else(|| {
                OrderError::rejected("UNKNOWN_SKU", format!("unknown sku {}", line.sku))
            })?;
        if product.stock < line.quantity {
            return Err(OrderError::rejected(
                "INSUFFICIENT_STOCK",
                format!(
                    "sku {}: {} requested, {} in stock",
                    line.sku, line.quantity, product.stock
                ),
            ));
        }
        if product.unit_price.currency != currency {
            return Err(OrderError::rejected(
                "CURRENCY_MISMATCH",
                format!(
                    "sku {} is priced in {}, the order is in {currency}",
                    line.sku, product.unit_price.currency
                ),
            ));
        }
        if product.unit_price.amount < 0 {
            return Err(OrderError::internal(format!(
                "catalog returned a negative price for sku {}",
                line.sku
            )));
        }
        let line_total = product
            .unit_price
            .amount
            .checked_mul(i64::from(line.quantity))
            .ok_or_else(|| too_large(format!("lines[{i}].quantity"), "line total"))?;
        subtotal = subtotal
            .checked_add(line_total)
            .ok_or_else(|| too_large("lines".to_owned(), "subtotal"))?;
        lines.push(PricedLine {
            sku: line.sku.clone(),
            quantity: line.quantity,
            unit_price: product.unit_price,
            line_total: Money::new(line_total, currency),
        });
    }

    // The host accepts amounts up to MAX_AMOUNT; every other amount is at most the subtotal
    // or the total.
    if subtotal > MAX_AMOUNT {
        return Err(too_large("lines".to_owned(), "subtotal"));
    }
    let discount = if subtotal >= settings.discount_min_subtotal {
        apply_bps(subtotal, settings.discount_bps)
            .ok_or_else(|| too_large("lines".to_owned(), "discount"))?
    } else {
        0
    };
    let taxable = subtotal - discount; // discount <= subtotal: at most 10000 bps
    let tax =
        apply_bps(taxable, settings.tax_bps).ok_or_else(|| too_large("lines".to_owned(), "tax"))?;
    let total = taxable
        .checked_add(tax)
        .filter(|t| *t <= MAX_AMOUNT)
        .ok_or_else(|| too_large("lines".to_owned(), "total"))?;

    Ok(PricedOrder {
        lines,
        subtotal: Money::new(subtotal, currency),
        discount: Money::new(discount, currency),
        tax: Money::new(tax, currency),
        total: Money::new(total, currency),
    })
}

/// `amount * bps / 10000` rounded half up, for a non-negative `amount`; `None` when the
/// result does not fit an `i64`.
pub fn apply_bps(amount: i64, bps: i64) -> Option<i64> {
    let scaled = i128::from(amount) * i128::from(bps);
    let denominator = i128::from(BPS_DENOMINATOR);
    i64::try_from((scaled + denominator / 2) / denominator).ok()
}

fn too_large(field: String, what: &str) -> OrderError {
    OrderError::invalid(vec![Violation::new(
        field,
        "AMOUNT_TOO_LARGE",
        format!("the {what} is larger than the host accepts ({MAX_AMOUNT} minor units)"),
    )])
}

fn dependency_error(sku: &str, error: DependencyError) -> OrderError {
    match error {
        DependencyError::Timeout => {
            OrderError::unavailable(format!("catalog lookup of sku {sku} timed out"))
        }
        DependencyError::Unavailable(message) => OrderError::unavailable(format!(
            "catalog unavailable looking up sku {sku}: {message}"
        )),
        DependencyError::Internal(message) => {
            OrderError::internal(format!("catalog failed looking up sku {sku}: {message}"))
        }
    }
}
