//! Test plugin that returns each `order-error` case on demand, so the host's error mapping
//! can be tested end to end.
//!
//! `place-order` is keyed on `request.customer_id` and `transition` on `order.customer_id`:
//! `invalid`, `not-found`, `conflict`, `rejected`, `unavailable` and `internal` return that
//! case; anything else succeeds (every line priced at 100 minor units; status `paid`).

use weir_sdk::{
    Money, OrderError, OrderEvent, OrderRequest, OrderSnapshot, OrderStatus, Plugin, PluginInfo,
    PricedLine, PricedOrder, Violation,
};

/// Unit price of every line of a successful `place-order`.
pub const UNIT_PRICE: i64 = 100;

/// The error-returning test plugin.
pub struct ErrorsPlugin;

/// The error selected by `key`, if any.
pub fn error_for(key: &str) -> Option<OrderError> {
    Some(match key {
        "invalid" => OrderError::invalid(vec![Violation::new(
            "customer_id",
            "TEST_INVALID",
            "the errors plugin was asked for an invalid error",
        )]),
        "not-found" => OrderError::not_found("the errors plugin was asked for not-found"),
        "conflict" => OrderError::conflict("the errors plugin was asked for conflict"),
        "rejected" => {
            OrderError::rejected("TEST_REASON", "the errors plugin was asked for rejected")
        }
        "unavailable" => OrderError::unavailable("the errors plugin was asked for unavailable"),
        "internal" => OrderError::internal("the errors plugin was asked for internal"),
        _ => return None,
    })
}

impl Plugin for ErrorsPlugin {
    fn describe() -> PluginInfo {
        PluginInfo::new("errors", env!("CARGO_PKG_VERSION"), vec![])
    }

    fn place_order(request: OrderRequest) -> Result<PricedOrder, OrderError> {
        if let Some(error) = error_for(&request.customer_id) {
            return Err(error);
        }
        let currency = request.currency;
        let money = |amount: i64| Money::new(amount, currency.clone());
        let lines: Vec<PricedLine> = request
            .lines
            .iter()
            .map(|line| PricedLine {
                sku: line.sku.clone(),
                quantity: line.quantity,
                unit_price: money(UNIT_PRICE),
                line_total: money(UNIT_PRICE.saturating_mul(i64::from(line.quantity))),
            })
            .collect();
        let subtotal = lines
            .iter()
            .fold(0i64, |sum, l| sum.saturating_add(l.line_total.amount));
        Ok(PricedOrder {
            lines,
            subtotal: money(subtotal),
            discount: money(0),
            tax: money(0),
            total: money(subtotal),
        })
    }

    fn transition(order: OrderSnapshot, _event: OrderEvent) -> Result<OrderStatus, OrderError> {
        match error_for(&order.customer_id) {
            Some(error) => Err(error),
            None => Ok(OrderStatus::Paid),
        }
    }
}

weir_sdk::export_plugin!(ErrorsPlugin);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::OrderLine;

    fn request(customer_id: &str) -> OrderRequest {
        OrderRequest {
            customer_id: customer_id.into(),
            currency: "EUR".into(),
            lines: vec![
                OrderLine {
                    sku: "a".into(),
                    quantity: 2,
                },
                OrderLine {
                    sku: "b".into(),
                    quantity: 1,
                },
            ],
            metadata: vec![],
        }
    }

    #[test]
    fn each_key_selects_its_case() {
        let cases = [
            "invalid",
            "not-found",
            "conflict",
            "rejected",
            "unavailable",
            "internal",
        ];
        for key in cases {
            let err = ErrorsPlugin::place_order(request(key)).unwrap_err();
            let tag = match &err {
                OrderError::Invalid(v) => {
                    assert_eq!(v[0].code, "TEST_INVALID");
                    "invalid"
                }
                OrderError::NotFound(_) => "not-found",
                OrderError::Conflict(_) => "conflict",
                OrderError::Rejected(r) => {
                    assert_eq!(r.reason, "TEST_REASON");
                    "rejected"
                }
                OrderError::Unavailable(_) => "unavailable",
                OrderError::Internal(_) => "internal",
            };
            assert_eq!(tag, key);
            let order = OrderSnapshot {
                id: "o".into(),
                customer_id: key.into(),
                status: OrderStatus::Placed,
                total: Money::new(1, "EUR"),
            };
            assert_eq!(
                ErrorsPlugin::transition(order, OrderEvent::Shipped),
                Err(err)
            );
        }
    }

    #[test]
    fn other_keys_succeed() {
        let priced = ErrorsPlugin::place_order(request("cus_ok")).unwrap();
        assert_eq!(priced.lines[0].line_total, Money::new(200, "EUR"));
        assert_eq!(priced.total, Money::new(300, "EUR"));
        let order = OrderSnapshot {
            id: "o".into(),
            customer_id: "cus_ok".into(),
            status: OrderStatus::Placed,
            total: Money::new(1, "EUR"),
        };
        assert_eq!(
            ErrorsPlugin::transition(order, OrderEvent::PaymentCaptured),
            Ok(OrderStatus::Paid)
        );
        assert_eq!(ErrorsPlugin::describe().name, "errors");
    }
}
