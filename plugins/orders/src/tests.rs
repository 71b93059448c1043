//! Native unit tests of the plugin with the SDK's fake host.

use std::time::Duration;

use weir_sdk::testing::{FakeHost, FakeHostGuard};
use weir_sdk::{
    Capability, DependencyError, Level, Money, OrderError, OrderEvent, OrderLine, OrderRequest,
    OrderSnapshot, OrderStatus, Plugin, Product, Violation,
};

use crate::OrdersPlugin;

fn request(lines: &[(&str, u32)]) -> OrderRequest {
    OrderRequest {
        customer_id: "cus_abc123".into(),
        currency: "USD".into(),
        lines: lines
            .iter()
            .map(|(sku, quantity)| OrderLine {
                sku: (*sku).into(),
                quantity: *quantity,
            })
            .collect(),
        metadata: vec![("channel".into(), "web".into())],
    }
}

fn product(sku: &str, amount: i64, stock: u32) -> Product {
    Product::new(
        sku,
        format!("Product {sku}"),
        Money::new(amount, "USD"),
        stock,
    )
}

/// A host with `apple` at 1.50 (stock 10) and `pear` at 2.25 (stock 5).
fn host() -> FakeHost {
    FakeHost::new()
        .product(product("apple", 150, 10))
        .product(product("pear", 225, 5))
}

fn violations(result: Result<weir_sdk::PricedOrder, OrderError>) -> Vec<(String, String)> {
    match result {
        Err(OrderError::Invalid(v)) => v.into_iter().map(|v| (v.field, v.code)).collect(),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(f, c)| ((*f).to_owned(), (*c).to_owned()))
        .collect()
}

fn rejection_reason(result: Result<weir_sdk::PricedOrder, OrderError>) -> String {
    match result {
        Err(OrderError::Rejected(r)) => r.reason,
        other => panic!("expected Rejected, got {other:?}"),
    }
}

fn installed(host: FakeHost) -> FakeHostGuard {
    host.install()
}

// ---- describe ----

#[test]
fn describe_names_the_plugin_and_all_capabilities() {
    let info = OrdersPlugin::describe();
    assert_eq!(info.name, "orders");
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(
        info.capabilities,
        [
            Capability::Log,
            Capability::Catalog,
            Capability::Config,
            Capability::Deadline
        ]
    );
}

// ---- pricing ----

#[test]
fn prices_a_valid_order_and_logs_it() {
    let guard = installed(host());
    let priced = OrdersPlugin::place_order(request(&[("apple", 2), ("pear", 3)])).unwrap();
    assert_eq!(priced.lines.len(), 2);
    assert_eq!(priced.lines[0].sku, "apple");
    assert_eq!(priced.lines[0].quantity, 2);
    assert_eq!(priced.lines[0].unit_price, Money::new(150, "USD"));
    assert_eq!(priced.lines[0].line_total, Money::new(300, "USD"));
    assert_eq!(priced.lines[1].line_total, Money::new(675, "USD"));
    assert_eq!(priced.subtotal, Money::new(975, "USD"));
    assert_eq!(priced.discount, Money::new(0, "USD"));
    assert_eq!(priced.tax, Money::new(0, "USD"));
    assert_eq!(priced.total, Money::new(975, "USD"));
    assert_eq!(guard.catalog_calls(), ["apple", "pear"]);

    let logs = guard.logs();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].level, Level::Info);
    assert_eq!(logs[0].field("lines"), Some("2"));
    assert_eq!(logs[0].field("total"), Some("975"));
}

/// Every pricing this plugin answers passes the host's contract (what the host would refuse
/// with `PLUGIN_CONTRACT_VIOLATION`), and every transition follows the host's graph.
#[test]
fn every_answer_meets_the_host_contract() {
    let configs = [
        host(),
        host()
            .config("discount.percent_bps", "1250")
            .config("discount.min_subtotal", "1")
            .config("tax.rate_bps", "1900"),
        host().config("tax.rate_bps", "10000"),
    ];
    let requests = [
        request(&[("apple", 1)]),
        request(&[("apple", 2), ("pear", 3)]),
        request(&[("pear", 5), ("apple", 10)]),
    ];
    for config in configs {
        let _guard = installed(config);
        for req in &requests {
            let priced = OrdersPlugin::place_order(req.clone()).unwrap();
            assert_eq!(
                weir_sdk::contract::check_priced(req, &priced),
                Ok(()),
                "{priced:?}"
            );
        }
    }
    let _guard = installed(host());
    let statuses = [
        OrderStatus::Placed,
        OrderStatus::Paid,
        OrderStatus::Shipped,
        OrderStatus::Cancelled,
    ];
    let events = [
        OrderEvent::PaymentCaptured,
        OrderEvent::Shipped,
        OrderEvent::CancelRequested,
    ];
    // What the host's graph allows, and what the plugin decides: they must be the same set,
    // so a plugin refusing every event does not pass.
    let mut allowed = Vec::new();
    let mut decided = Vec::new();
    for from in statuses {
        for event in events {
            for to in statuses {
                if weir_sdk::contract::check_transition(from, event, to).is_ok() {
                    allowed.push((from, event, to));
                }
            }
            let order = OrderSnapshot {
                id: "o".into(),
                customer_id: "cus_abc123".into(),
                status: from,
                total: Money::new(100, "USD"),
            };
            match OrdersPlugin::transition(order, event) {
                Ok(to) => {
                    assert_eq!(
                        weir_sdk::contract::check_transition(from, event, to),
                        Ok(())
                    );
                    decided.push((from, event, to));
                }
                Err(e) => assert!(
                    matches!(e, OrderError::Conflict(_)),
                    "{from:?} + {event:?}: {e:?}"
                ),
            }
        }
    }
    // The graph as `weir_core::domain::status` documents it (so an empty `allowed` cannot make
    // this test vacuous either).
    assert_eq!(
        allowed,
        [
            (
                OrderStatus::Placed,
                OrderEvent::PaymentCaptured,
                OrderStatus::Paid
            ),
            (
                OrderStatus::Placed,
                OrderEvent::CancelRequested,
                OrderStatus::Cancelled
            ),
            (OrderStatus::Paid, OrderEvent::Shipped, OrderStatus::Shipped),
            (
                OrderStatus::Paid,
                OrderEvent::CancelRequested,
                OrderStatus::Cancelled
            ),
            (
                OrderStatus::Cancelled,
                OrderEvent::CancelRequested,
                OrderStatus::Cancelled
            ),
        ]
    );
    assert_eq!(decided, allowed);
}

#[test]
fn amounts_the_host_would_refuse_are_amount_too_large() {
    // 2^53 - 1 is the largest amount the host stores: one cent more is refused here, as a
    // violation the client can read, rather than by the host as a broken contract.
    let _guard = installed(FakeHost::new().product(product("big", weir_sdk::MAX_AMOUNT, 2)));
    assert!(OrdersPlugin::place_order(request(&[("big", 1)])).is_ok());
    assert_eq!(
        violations(OrdersPlugin::place_order(request(&[("big", 2)]))),
        pairs(&[("lines", "AMOUNT_TOO_LARGE")])
    );
}

#[test]
fn stock_equal_to_quantity_is_enough() {
    let _guard = installed(host());
    assert!(OrdersPlugin::place_order(request(&[("pear", 5)])).is_ok());
}

#[test]
fn discount_applies_from_the_minimum_subtotal_and_rounds_half_up() {
    // 1005 * 10% = 100.5 -> 101.
    let _guard = installed(
        FakeHost::new()
            .product(product("a", 335, 10))
            .config("discount.percent_bps", "1000")
            .config("discount.min_subtotal", "1005"),
    );
    let priced = OrdersPlugin::place_order(request(&[("a", 3)])).unwrap();
    assert_eq!(priced.subtotal.amount, 1005);
    assert_eq!(priced.discount.amount, 101);
    assert_eq!(priced.total.amount, 904);
}

#[test]
fn no_discount_below_the_minimum_subtotal() {
    let _guard = installed(
        FakeHost::new()
            .product(product("a", 335, 10))
            .config("discount.percent_bps", "1000")
            .config("discount.min_subtotal", "1006"),
    );
    let priced = OrdersPlugin::place_order(request(&[("a", 3)])).unwrap();
    assert_eq!(priced.discount.amount, 0);
    assert_eq!(priced.total.amount, 1005);
}

#[test]
fn tax_on_subtotal_minus_discount_rounds_half_up() {
    // subtotal 1000, discount 5% = 50, taxable 950, tax 7.5% = 71.25 -> 71; total 1021.
    let _guard = installed(
        FakeHost::new()
            .product(product("a", 250, 10))
            .config("discount.percent_bps", "500")
            .config("tax.rate_bps", "750"),
    );
    let priced = OrdersPlugin::place_order(request(&[("a", 4)])).unwrap();
    assert_eq!(priced.subtotal.amount, 1000);
    assert_eq!(priced.discount.amount, 50);
    assert_eq!(priced.tax.amount, 71);
    assert_eq!(priced.total.amount, 1021);
    assert_eq!(priced.tax.currency, "USD");

    // taxable 10, tax 25% = 2.5 -> 3 (exact half rounds up).
    let _guard = installed(
        FakeHost::new()
            .product(product("b", 10, 10))
            .config("tax.rate_bps", "2500"),
    );
    let priced = OrdersPlugin::place_order(request(&[("b", 1)])).unwrap();
    assert_eq!(priced.tax.amount, 3);
    assert_eq!(priced.total.amount, 13);
}

#[test]
fn apply_bps_rounds_half_up() {
    use crate::pricing::apply_bps;
    assert_eq!(apply_bps(0, 1234), Some(0));
    assert_eq!(apply_bps(1, 4999), Some(0));
    assert_eq!(apply_bps(1, 5000), Some(1));
    assert_eq!(apply_bps(3, 5000), Some(2));
    assert_eq!(apply_bps(10_000, 1), Some(1));
    assert_eq!(apply_bps(i64::MAX, 10_000), Some(i64::MAX));
    assert_eq!(apply_bps(i64::MAX, 20_000), None);
}

#[test]
fn unknown_sku_is_rejected_naming_the_sku() {
    let _guard = installed(host());
    match OrdersPlugin::place_order(request(&[("apple", 1), ("kiwi", 1)])) {
        Err(OrderError::Rejected(r)) => {
            assert_eq!(r.reason, "UNKNOWN_SKU");
            assert!(r.message.contains("kiwi"), "{}", r.message);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn insufficient_stock_is_rejected() {
    let _guard = installed(host());
    assert_eq!(
        rejection_reason(OrdersPlugin::place_order(request(&[("pear", 6)]))),
        "INSUFFICIENT_STOCK"
    );
}

#[test]
fn currency_mismatch_is_rejected() {
    let _guard =
        installed(FakeHost::new().product(Product::new("eu", "EU", Money::new(100, "EUR"), 10)));
    assert_eq!(
        rejection_reason(OrdersPlugin::place_order(request(&[("eu", 1)]))),
        "CURRENCY_MISMATCH"
    );
}

#[test]
fn catalog_timeout_and_unavailability_are_unavailable() {
    for error in [
        DependencyError::Timeout,
        DependencyError::Unavailable("down".into()),
    ] {
        let _guard = installed(host().catalog_error("apple", error));
        let result = OrdersPlugin::place_order(request(&[("apple", 1)]));
        assert!(
            matches!(result, Err(OrderError::Unavailable(_))),
            "{result:?}"
        );
    }
}

#[test]
fn catalog_internal_error_is_internal() {
    let _guard = installed(host().catalog_error("apple", DependencyError::Internal("bug".into())));
    let result = OrdersPlugin::place_order(request(&[("apple", 1)]));
    assert!(matches!(result, Err(OrderError::Internal(_))), "{result:?}");
}

#[test]
fn line_total_overflow_is_amount_too_large() {
    let _guard = installed(FakeHost::new().product(product("big", i64::MAX / 2, 1000)));
    assert_eq!(
        violations(OrdersPlugin::place_order(request(&[("big", 3)]))),
        pairs(&[("lines[0].quantity", "AMOUNT_TOO_LARGE")])
    );
}

#[test]
fn subtotal_overflow_is_amount_too_large() {
    let _guard = installed(
        FakeHost::new()
            .product(product("a", i64::MAX / 2 + 1, 10))
            .product(product("b", i64::MAX / 2 + 1, 10)),
    );
    assert_eq!(
        violations(OrdersPlugin::place_order(request(&[("a", 1), ("b", 1)]))),
        pairs(&[("lines", "AMOUNT_TOO_LARGE")])
    );
}

#[test]
fn tax_overflow_is_amount_too_large() {
    let _guard = installed(
        FakeHost::new()
            .product(product("a", i64::MAX / 2, 10))
            .config("tax.rate_bps", "30000"),
    );
    assert_eq!(
        violations(OrdersPlugin::place_order(request(&[("a", 1)]))),
        pairs(&[("lines", "AMOUNT_TOO_LARGE")])
    );
}

#[test]
fn close_deadline_is_unavailable_before_any_catalog_call() {
    let guard = installed(host().deadline(Duration::from_micros(900)));
    assert_eq!(
        OrdersPlugin::place_order(request(&[("apple", 1)])),
        Err(OrderError::unavailable("deadline too close"))
    );
    assert!(guard.catalog_calls().is_empty());

    let _guard = installed(host().deadline(Duration::from_millis(1)));
    assert!(OrdersPlugin::place_order(request(&[("apple", 1)])).is_ok());
}

// ---- configuration ----

#[test]
fn unparsable_config_is_internal_naming_the_key() {
    for (key, value) in [
        ("discount.percent_bps", "ten"),
        ("discount.percent_bps", "10001"),
        ("discount.min_subtotal", "-1"),
        ("tax.rate_bps", "7.5"),
    ] {
        let _guard = installed(host().config(key, value));
        match OrdersPlugin::place_order(request(&[("apple", 1)])) {
            Err(OrderError::Internal(message)) => {
                assert!(message.contains(key), "{key}: {message}")
            }
            other => panic!("{key}={value}: unexpected {other:?}"),
        }
    }
}

#[test]
fn configured_currencies_replace_the_default() {
    let _guard = installed(
        FakeHost::new()
            .product(Product::new("a", "A", Money::new(100, "CHF"), 10))
            .config("currencies", "CHF, JPY"),
    );
    let mut req = request(&[("a", 1)]);
    req.currency = "CHF".into();
    assert!(OrdersPlugin::place_order(req.clone()).is_ok());
    req.currency = "USD".into();
    assert_eq!(
        violations(OrdersPlugin::place_order(req)),
        pairs(&[("currency", "UNSUPPORTED")])
    );
}

// ---- validation ----

#[test]
fn default_currencies_are_usd_eur_gbp() {
    let _guard = installed(host());
    for currency in ["USD", "EUR", "GBP"] {
        let mut req = request(&[("nope", 1)]);
        req.currency = currency.into();
        // Valid request: fails later, in pricing, not validation.
        assert_eq!(
            rejection_reason(OrdersPlugin::place_order(req)),
            "UNKNOWN_SKU"
        );
    }
    let mut req = request(&[("apple", 1)]);
    req.currency = "usd".into();
    assert_eq!(
        violations(OrdersPlugin::place_order(req)),
        pairs(&[("currency", "UNSUPPORTED")])
    );
}

#[test]
fn empty_lines_are_required() {
    let _guard = installed(host());
    assert_eq!(
        violations(OrdersPlugin::place_order(request(&[]))),
        pairs(&[("lines", "REQUIRED")])
    );
}

#[test]
fn too_many_lines() {
    let _guard = installed(host());
    let skus: Vec<String> = (0..101).map(|i| format!("sku-{i}")).collect();
    let lines: Vec<(&str, u32)> = skus.iter().map(|s| (s.as_str(), 1)).collect();
    assert_eq!(
        violations(OrdersPlugin::place_order(request(&lines))),
        pairs(&[("lines", "TOO_MANY")])
    );
    // Exactly 100 passes validation (and fails on the unknown skus).
    assert_eq!(
        rejection_reason(OrdersPlugin::place_order(request(&lines[..100]))),
        "UNKNOWN_SKU"
    );
}

#[test]
fn quantity_must_be_between_1_and_1000() {
    let _guard = installed(host().product(product("many", 1, 5000)));
    assert_eq!(
        violations(OrdersPlugin::place_order(request(&[
            ("apple", 1),
            ("pear", 0),
            ("many", 1001)
        ]))),
        pairs(&[
            ("lines[1].quantity", "OUT_OF_RANGE"),
            ("lines[2].quantity", "OUT_OF_RANGE")
        ])
    );
    assert!(OrdersPlugin::place_order(request(&[("many", 1000)])).is_ok());
}

#[test]
fn sku_format() {
    let _guard = installed(host());
    let long_ok = "a".repeat(64);
    let too_long = "a".repeat(65);
    let result = OrdersPlugin::place_order(request(&[
        ("", 1),
        (&too_long, 1),
        ("has space", 1),
        ("émoji", 1),
        ("ok_-AZ09", 1),
        (&long_ok, 1),
    ]));
    assert_eq!(
        violations(result),
        pairs(&[
            ("lines[0].sku", "INVALID_FORMAT"),
            ("lines[1].sku", "INVALID_FORMAT"),
            ("lines[2].sku", "INVALID_FORMAT"),
            ("lines[3].sku", "INVALID_FORMAT"),
        ])
    );
}

#[test]
fn duplicate_skus() {
    let _guard = installed(host());
    assert_eq!(
        violations(OrdersPlugin::place_order(request(&[
            ("apple", 1),
            ("pear", 1),
            ("apple", 2),
            ("apple", 3)
        ]))),
        pairs(&[("lines[2].sku", "DUPLICATE"), ("lines[3].sku", "DUPLICATE")])
    );
}

#[test]
fn customer_id_format() {
    let _guard = installed(host());
    let valid = [
        "cus_abc".to_owned(),
        format!("cus_{}", "x".repeat(40)),
        "cus_A-b_9".to_owned(),
    ];
    for id in valid {
        let mut req = request(&[("apple", 1)]);
        req.customer_id = id.clone();
        assert!(OrdersPlugin::place_order(req).is_ok(), "{id}");
    }
    let invalid = [
        String::new(),
        "cus_".to_owned(),
        "cus_ab".to_owned(),
        format!("cus_{}", "x".repeat(41)),
        "cust_abc".to_owned(),
        "CUS_abc".to_owned(),
        "cus_ab c".to_owned(),
        "cus_abc!".to_owned(),
    ];
    for id in invalid {
        let mut req = request(&[("apple", 1)]);
        req.customer_id = id.clone();
        assert_eq!(
            violations(OrdersPlugin::place_order(req)),
            pairs(&[("customer_id", "INVALID_FORMAT")]),
            "{id:?}"
        );
    }
}

#[test]
fn metadata_limits() {
    let _guard = installed(host());
    let mut req = request(&[("apple", 1)]);
    req.metadata = (0..20).map(|i| (format!("k{i}"), "v".into())).collect();
    req.metadata[0] = ("k".repeat(64), "v".repeat(512));
    assert!(OrdersPlugin::place_order(req.clone()).is_ok());

    req.metadata.push(("one-too-many".into(), "v".into()));
    assert_eq!(
        violations(OrdersPlugin::place_order(req)),
        pairs(&[("metadata", "TOO_LARGE")])
    );

    let mut req = request(&[("apple", 1)]);
    req.metadata = vec![("k".repeat(65), "v".into()), ("ok".into(), "v".repeat(513))];
    assert_eq!(
        violations(OrdersPlugin::place_order(req)),
        pairs(&[("metadata", "TOO_LARGE"), ("metadata", "TOO_LARGE")])
    );

    // Keys are 1-64 bytes, as the API schema states.
    let mut req = request(&[("apple", 1)]);
    req.metadata = vec![(String::new(), String::new())];
    assert_eq!(
        violations(OrdersPlugin::place_order(req)),
        pairs(&[("metadata", "INVALID_FORMAT")])
    );
}

#[test]
fn all_violations_are_reported_together_without_catalog_calls() {
    let guard = installed(host());
    let req = OrderRequest {
        customer_id: "bob".into(),
        currency: "XXX".into(),
        lines: vec![
            OrderLine {
                sku: "bad sku".into(),
                quantity: 0,
            },
            OrderLine {
                sku: "apple".into(),
                quantity: 1,
            },
            OrderLine {
                sku: "apple".into(),
                quantity: 2000,
            },
        ],
        metadata: (0..21).map(|i| (i.to_string(), String::new())).collect(),
    };
    let result = OrdersPlugin::place_order(req);
    assert_eq!(
        violations(result.clone()),
        pairs(&[
            ("customer_id", "INVALID_FORMAT"),
            ("currency", "UNSUPPORTED"),
            ("lines[0].sku", "INVALID_FORMAT"),
            ("lines[0].quantity", "OUT_OF_RANGE"),
            ("lines[2].sku", "DUPLICATE"),
            ("lines[2].quantity", "OUT_OF_RANGE"),
            ("metadata", "TOO_LARGE"),
        ])
    );
    let Err(OrderError::Invalid(list)) = result else {
        unreachable!()
    };
    assert!(list.iter().all(|v: &Violation| !v.message.is_empty()));
    assert!(guard.catalog_calls().is_empty());
    assert!(guard.logs().is_empty());
}

// ---- transitions ----

#[test]
fn transition_table() {
    use OrderEvent as E;
    use OrderStatus as S;
    let _guard = installed(host());
    let statuses = [S::Placed, S::Paid, S::Shipped, S::Cancelled];
    let events = [E::PaymentCaptured, E::Shipped, E::CancelRequested];
    let allowed = |s: S, e: E| match (s, e) {
        (S::Placed, E::PaymentCaptured) => Some(S::Paid),
        (S::Paid, E::Shipped) => Some(S::Shipped),
        (S::Placed | S::Paid | S::Cancelled, E::CancelRequested) => Some(S::Cancelled),
        _ => None,
    };
    for status in statuses {
        for event in events {
            let order = OrderSnapshot {
                id: "ord_1".into(),
                customer_id: "cus_abc".into(),
                status,
                total: Money::new(100, "USD"),
            };
            let result = OrdersPlugin::transition(order, event);
            match allowed(status, event) {
                Some(next) => assert_eq!(result, Ok(next), "{status:?} + {event:?}"),
                None => match result {
                    Err(OrderError::Conflict(message)) => {
                        let s = crate::lifecycle::status_name(status);
                        let e = crate::lifecycle::event_name(event);
                        assert!(message.contains(s) && message.contains(e), "{message}");
                    }
                    other => panic!("{status:?} + {event:?}: unexpected {other:?}"),
                },
            }
        }
    }
}

#[test]
fn transitions_need_no_host() {
    // transition uses no capability: it works without a fake host.
    let order = OrderSnapshot {
        id: "ord_1".into(),
        customer_id: "cus_abc".into(),
        status: OrderStatus::Shipped,
        total: Money::new(100, "USD"),
    };
    assert_eq!(
        OrdersPlugin::transition(order, OrderEvent::CancelRequested),
        Err(OrderError::conflict(
            "event cancel-requested does not apply to an order in status shipped"
        ))
    );
}
