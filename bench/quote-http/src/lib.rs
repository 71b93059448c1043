//! The end-to-end benchmark's peer (`scripts/bench`): a `wasi:http/proxy` component, served by
//! `wasmtime serve`, that answers `POST /v1/quotes` like Weir does, with the same logic and
//! no host around it.
//!
//! The request body is Weir's (`customer_id`, `currency`, `lines`, `metadata`; unknown fields
//! refused); it is priced by the reference plugin's own code (`weir-plugin-orders`, compiled
//! into this component) against an in-memory copy of the catalog the benchmark seeds into
//! Weir ([`catalog`]); the answer is Weir's `QuoteView` JSON (`available` per line from the
//! same stock). The plugin reads its capabilities (`catalog`, `config`, `deadline`, `log`)
//! from the SDK's fake host, installed for each request with that catalog, no configuration
//! and the SDK's default deadline: the SDK's `fake-host` feature serves them on wasm32 too,
//! so the component imports nothing of `weir:orders`. (The plugin's own `weir:orders/plugin`
//! exports come along, unused.)
//!
//! What it does not do that Weir does: authentication, idempotency-key routing, the
//! database read of the stock, the host's contract checks, request ids, traces, metrics and
//! logs. Refusals are plain `application/problem+json` with Weir's status and `code`.
//!
//! - [`quote`]: the handler's logic, target-independent (unit-tested natively).
//! - `component` (wasm32 only): the `wasi:http/incoming-handler` export.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weir_plugin_orders::OrdersPlugin;
use weir_sdk::testing::FakeHost;
use weir_sdk::{Money, OrderError, OrderLine, OrderRequest, Plugin as _, Product};

#[cfg(target_arch = "wasm32")]
mod component;

/// Units on hand that `scripts/bench` gives the skus it orders (`KB-001`, `CB-004`), so that
/// a long run never runs out.
pub const BENCH_STOCK: u32 = 1_000_000_000;

/// Weir's demo catalog (`weir_host::server::demo_catalog`) with the stock `scripts/bench`
/// sets for the skus it orders: what Weir's catalog holds during the benchmark.
pub fn catalog() -> Vec<Product> {
    [
        ("KB-001", "Mechanical keyboard", 8900, BENCH_STOCK),
        ("MS-002", "Wireless mouse", 2900, 25_000),
        ("MN-003", "27-inch monitor", 27900, 4_000),
        ("CB-004", "USB-C cable", 900, BENCH_STOCK),
        ("HD-005", "Noise-cancelling headphones", 19900, 0),
    ]
    .into_iter()
    .map(|(sku, name, price, stock)| Product::new(sku, name, Money::new(price, "EUR"), stock))
    .collect()
}

/// The body of `POST /v1/quotes` (Weir's `PlaceOrderBody`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuoteBody {
    customer_id: String,
    currency: String,
    lines: Vec<LineBody>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LineBody {
    sku: String,
    quantity: u32,
}

#[derive(Debug, Serialize)]
struct QuoteLine<'a> {
    sku: &'a str,
    quantity: u32,
    unit_price: i64,
    line_total: i64,
    available: bool,
}

#[derive(Debug, Serialize)]
struct PluginRef {
    name: String,
    version: String,
    digest: &'static str,
}

/// Weir's `QuoteView`.
#[derive(Debug, Serialize)]
struct QuoteView<'a> {
    currency: &'a str,
    lines: Vec<QuoteLine<'a>>,
    subtotal: i64,
    discount: i64,
    tax: i64,
    total: i64,
    plugin: PluginRef,
    quoted_at: String,
}

/// An HTTP answer: status, content type and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// A problem (`application/problem+json`) with Weir's status and `code`.
    pub fn problem(status: u16, code: &str, detail: &str) -> Self {
        let body = serde_json::json!({
            "type": format!("urn:weir:problem:{}", code.to_ascii_lowercase().replace('_', "-")),
            "title": code,
            "status": status,
            "code": code,
            "detail": detail,
        });
        Self {
            status,
            content_type: "application/problem+json",
            body: body.to_string().into_bytes(),
        }
    }
}

fn refusal(error: &OrderError) -> Answer {
    match error {
        OrderError::Invalid(_) => Answer::problem(422, "ORDER_INVALID", &error.to_string()),
        OrderError::Rejected(_) => Answer::problem(422, "ORDER_REJECTED", &error.to_string()),
        OrderError::NotFound(_) => Answer::problem(404, "RESOURCE_NOT_FOUND", &error.to_string()),
        OrderError::Conflict(_) => Answer::problem(409, "ORDER_CONFLICT", &error.to_string()),
        OrderError::Unavailable(_) => {
            Answer::problem(503, "DEPENDENCY_UNAVAILABLE", &error.to_string())
        }
        OrderError::Internal(_) => Answer::problem(500, "PLUGIN_ERROR", &error.to_string()),
    }
}

/// Answer `POST /v1/quotes` with `body`, pricing from `catalog`, quoted at `now` (RFC 3339).
pub fn quote(body: &[u8], catalog: &[Product], now: String) -> Answer {
    let body: QuoteBody = match serde_json::from_slice(body) {
        Ok(body) => body,
        Err(e) if e.is_data() => {
            return Answer::problem(422, "REQUEST_SCHEMA_INVALID", &e.to_string());
        }
        Err(e) => return Answer::problem(400, "MALFORMED_JSON", &e.to_string()),
    };
    let request = OrderRequest {
        customer_id: body.customer_id,
        currency: body.currency,
        lines: body
            .lines
            .iter()
            .map(|l| OrderLine {
                sku: l.sku.clone(),
                quantity: l.quantity,
            })
            .collect(),
        metadata: body.metadata.into_iter().collect(),
    };
    let mut host = FakeHost::new();
    for product in catalog {
        host = host.product(product.clone());
    }
    let priced = {
        let _installed = host.install();
        OrdersPlugin::place_order(request)
    };
    let priced = match priced {
        Ok(priced) => priced,
        Err(e) => return refusal(&e),
    };
    // What the request asks of each sku in all, against the stock (as Weir's quote does).
    let mut wanted: BTreeMap<&str, u64> = BTreeMap::new();
    for line in &body.lines {
        *wanted.entry(line.sku.as_str()).or_default() += u64::from(line.quantity);
    }
    let available = |sku: &str| {
        catalog
            .iter()
            .find(|p| p.sku == sku)
            .is_some_and(|p| u64::from(p.stock) >= wanted.get(sku).copied().unwrap_or(0))
    };
    let info = OrdersPlugin::describe();
    let view = QuoteView {
        currency: &priced.total.currency,
        lines: priced
            .lines
            .iter()
            .map(|l| QuoteLine {
                sku: &l.sku,
                quantity: l.quantity,
                unit_price: l.unit_price.amount,
                line_total: l.line_total.amount,
                available: available(&l.sku),
            })
            .collect(),
        subtotal: priced.subtotal.amount,
        discount: priced.discount.amount,
        tax: priced.tax.amount,
        total: priced.total.amount,
        plugin: PluginRef {
            name: info.name,
            version: info.version,
            // Compiled into this component: no component of its own to digest.
            digest: "",
        },
        quoted_at: now,
    };
    match serde_json::to_vec(&view) {
        Ok(body) => Answer {
            status: 200,
            content_type: "application/json",
            body,
        },
        Err(e) => Answer::problem(500, "INTERNAL", &e.to_string()),
    }
}

/// Now, as Weir writes `quoted_at`.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(answer: &Answer) -> serde_json::Value {
        serde_json::from_slice(&answer.body).expect("JSON")
    }

    #[test]
    fn prices_the_benchmark_request_as_weir_does() {
        let body = br#"{"customer_id":"cus_bench","currency":"EUR","lines":[{"sku":"KB-001","quantity":1},{"sku":"CB-004","quantity":2}]}"#;
        let answer = quote(body, &catalog(), now());
        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        let view = json(&answer);
        assert_eq!(view["total"], 8900 + 2 * 900);
        assert_eq!(view["currency"], "EUR");
        assert_eq!(view["lines"][1]["line_total"], 1800);
        assert_eq!(view["lines"][0]["available"], true);
        assert_eq!(view["plugin"]["name"], "orders");
    }

    #[test]
    fn refuses_as_weir_does() {
        let cases: [(&[u8], u16, &str); 5] = [
            (br#"{"customer_id":"cus_bench","currency":"EUR","lines":[{"sku":"NOPE-1","quantity":1}]}"#, 422, "ORDER_REJECTED"),
            (br#"{"customer_id":"cus_bench","currency":"EUR","lines":[{"sku":"HD-005","quantity":1}]}"#, 422, "ORDER_REJECTED"),
            (br#"{"customer_id":"cus_bench","currency":"XXX","lines":[]}"#, 422, "ORDER_INVALID"),
            (br#"{"customer_id":"cus_bench","currency":"EUR","lines":[],"extra":1}"#, 422, "REQUEST_SCHEMA_INVALID"),
            (b"{", 400, "MALFORMED_JSON"),
        ];
        for (body, status, code) in cases {
            let answer = quote(body, &catalog(), now());
            assert_eq!(
                (answer.status, json(&answer)["code"].as_str()),
                (status, Some(code))
            );
        }
    }
}
