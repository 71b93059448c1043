//! The Python port of the reference order logic (`plugins/python/orders`, built by
//! `componentize-py` in `weir-plugin-artifacts-python`) serving the API: the test bodies of
//! `api` and `quotes` run again with it, and every decision it makes on a corpus of edge cases
//! is compared with the Rust plugin's, message for message.
//!
//! Not repeated here, each for its reason:
//! - the parts of `every_error_code` served by the `errors` and hostile test plugins (they
//!   replace the orders plugin; they run as they do in `api`, against the same host);
//! - `runbook_catalog_matches_the_code` (reads files, starts no plugin);
//! - `a_quote_reports_stock_and_is_held_to_the_contract` (served by `hostile-liar`);
//! - `a_quote_with_the_placing_key_is_priced_by_the_version_that_places` (routing between two
//!   versions, its canary is the Rust `orders-next`; no order logic of its own).
//!
//! Without a Python toolchain the build leaves the component out and these tests print
//! `SKIPPED` and pass; with `CI=true` they fail (see `weir_plugin_artifacts_python::require`).
//! Every server here loads the component from one shared compiled-artifact cache
//! (`support::python`), so only the first one of a test run compiles it, if any.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use weir_core::domain::{
    CatalogProduct, LineRequest, Money, OrderEvent, OrderRequest, OrderSnapshot, OrderStatus,
};
use weir_core::ports::catalog::{Catalog, CatalogError};
use weir_host::runtime::{InvokeError, PluginVersion, Runtime, RuntimeConfig};
use weir_plugin_artifacts as artifacts;

use crate::support::{Backend, python};

#[tokio::test]
async fn api_on_sqlite() {
    let Some(orders) = python().await else { return };
    crate::api::api_suite(Backend::Sqlite, orders).await;
}

#[tokio::test]
async fn api_on_postgres() {
    let Some(orders) = python().await else { return };
    crate::api::api_suite(Backend::Postgres, orders).await;
}

#[tokio::test]
async fn concurrent_requests_with_one_key_make_one_order_sqlite() {
    let Some(orders) = python().await else { return };
    crate::api::concurrent_same_key(Backend::Sqlite, orders).await;
}

#[tokio::test]
async fn concurrent_requests_with_one_key_make_one_order_postgres() {
    let Some(orders) = python().await else { return };
    crate::api::concurrent_same_key(Backend::Postgres, orders).await;
}

#[tokio::test]
async fn a_key_held_in_flight_answers_409_to_every_concurrent_retry_sqlite() {
    let Some(orders) = python().await else { return };
    crate::api::same_key_while_the_first_is_held(Backend::Sqlite, orders).await;
}

#[tokio::test]
async fn a_key_held_in_flight_answers_409_to_every_concurrent_retry_postgres() {
    let Some(orders) = python().await else { return };
    crate::api::same_key_while_the_first_is_held(Backend::Postgres, orders).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_code_is_produced_and_well_formed() {
    let Some(orders) = python().await else { return };
    crate::api::every_error_code(orders).await;
}

#[tokio::test]
async fn products_are_written_listed_priced_and_validated() {
    let Some(orders) = python().await else { return };
    crate::api::products_are_written(orders).await;
}

#[tokio::test]
async fn idempotency_keys_expire_after_the_configured_retention() {
    let Some(orders) = python().await else { return };
    crate::api::idempotency_keys_expire(orders).await;
}

#[tokio::test]
async fn quotes_on_sqlite() {
    let Some(orders) = python().await else { return };
    crate::quotes::quotes_suite(Backend::Sqlite, orders).await;
}

#[tokio::test]
async fn quotes_on_postgres() {
    let Some(orders) = python().await else { return };
    crate::quotes::quotes_suite(Backend::Postgres, orders).await;
}

#[tokio::test]
async fn quoting_needs_the_orders_write_scope() {
    let Some(orders) = python().await else { return };
    crate::quotes::quoting_needs_the_write_scope(orders).await;
}

// ---- the same decisions as the Rust plugin ----

/// A catalog with the products of the corpus, and three skus whose lookup fails.
struct CorpusCatalog(BTreeMap<String, CatalogProduct>);

#[async_trait::async_trait]
impl Catalog for CorpusCatalog {
    async fn get(&self, sku: &str) -> Result<Option<CatalogProduct>, CatalogError> {
        match sku {
            "fails-timeout" => Err(CatalogError::Timeout),
            "fails-unavailable" => Err(CatalogError::Unavailable("down".into())),
            "fails-internal" => Err(CatalogError::Internal("bug".into())),
            _ => Ok(self.0.get(sku).cloned()),
        }
    }
}

/// The largest amount the host accepts (`weir_sdk::MAX_AMOUNT`).
const MAX_AMOUNT: i64 = (1 << 53) - 1;

fn corpus_catalog() -> CorpusCatalog {
    let products = [
        ("apple", 150, "USD", 10),
        ("pear", 225, "USD", 5),
        ("many", 1, "USD", 5000),
        ("a335", 335, "USD", 10),
        ("a250", 250, "USD", 10),
        ("b10", 10, "USD", 10),
        ("chf", 100, "CHF", 10),
        ("eu", 100, "EUR", 10),
        ("big", MAX_AMOUNT, "USD", 2),
        ("huge", i64::MAX / 2, "USD", 1000),
        ("half-a", i64::MAX / 2 + 1, "USD", 10),
        ("half-b", i64::MAX / 2 + 1, "USD", 10),
        ("negative", -5, "USD", 10),
        ("sold-out", 100, "USD", 0),
    ];
    CorpusCatalog(
        products
            .into_iter()
            .map(|(sku, unit_price, currency, stock)| {
                let product = CatalogProduct {
                    sku: sku.into(),
                    name: format!("Product {sku}"),
                    unit_price,
                    currency: currency.into(),
                    stock,
                };
                (sku.to_owned(), product)
            })
            .collect(),
    )
}

fn req(lines: &[(&str, u32)]) -> OrderRequest {
    OrderRequest {
        customer_id: "cus_abc123".into(),
        currency: "USD".into(),
        lines: lines
            .iter()
            .map(|(sku, quantity)| LineRequest {
                sku: (*sku).into(),
                quantity: *quantity,
            })
            .collect(),
        metadata: BTreeMap::from([("channel".to_owned(), "web".to_owned())]),
    }
}

fn with(mut r: OrderRequest, change: impl FnOnce(&mut OrderRequest)) -> OrderRequest {
    change(&mut r);
    r
}

/// Requests priced under every pricing configuration.
fn pricing_requests() -> Vec<OrderRequest> {
    vec![
        req(&[("apple", 1)]),
        req(&[("apple", 2), ("pear", 3)]),
        req(&[("pear", 5), ("apple", 10)]),
        req(&[("a335", 3)]),
        req(&[("a250", 4)]),
        req(&[("b10", 1)]),
        req(&[("many", 1000), ("b10", 7), ("a335", 9)]),
        req(&[("big", 1)]),
        req(&[("huge", 1)]),
    ]
}

/// Requests about validation and the catalog's answers, under the default configuration.
fn edge_requests() -> Vec<OrderRequest> {
    let skus: Vec<String> = (0..101).map(|i| format!("sku-{i}")).collect();
    let lines: Vec<(&str, u32)> = skus.iter().map(|s| (s.as_str(), 1)).collect();
    let long_ok = "a".repeat(64);
    let too_long = "a".repeat(65);
    let mut out = vec![
        req(&[]),
        req(&lines),
        req(&lines[..100]),
        req(&[("apple", 1), ("pear", 0), ("many", 1001)]),
        req(&[("many", 1000)]),
        req(&[
            ("", 1),
            (&too_long, 1),
            ("has space", 1),
            ("émoji", 1),
            ("ok_-AZ09", 1),
            (&long_ok, 1),
        ]),
        req(&[("apple", 1), ("pear", 1), ("apple", 2), ("apple", 3)]),
        req(&[("apple", 1), ("kiwi", 1)]),
        req(&[("pear", 6)]),
        req(&[("sold-out", 1)]),
        req(&[("eu", 1)]),
        req(&[("negative", 1)]),
        req(&[("apple", 1), ("fails-timeout", 1)]),
        req(&[("fails-unavailable", 1)]),
        req(&[("fails-internal", 1)]),
        req(&[("big", 2)]),
        req(&[("huge", 3)]),
        req(&[("half-a", 1), ("half-b", 1)]),
        req(&[("pear", 5)]),
    ];
    for id in [
        "cus_abc".to_owned(),
        format!("cus_{}", "x".repeat(40)),
        "cus_A-b_9".to_owned(),
        String::new(),
        "cus_".to_owned(),
        "cus_ab".to_owned(),
        format!("cus_{}", "x".repeat(41)),
        "cust_abc".to_owned(),
        "CUS_abc".to_owned(),
        "cus_ab c".to_owned(),
        "cus_abc!".to_owned(),
        "cus_é12".to_owned(),
    ] {
        out.push(with(req(&[("apple", 1)]), |r| r.customer_id = id));
    }
    for currency in [
        "EUR",
        "GBP",
        "usd",
        "XXX",
        "",
        "X\"\u{301}\n\\",
        "\u{0}\t€",
        "\u{7f}",
    ] {
        out.push(with(req(&[("apple", 1)]), |r| r.currency = currency.into()));
    }
    let metadata: [Vec<(String, String)>; 5] = [
        (0..20)
            .map(|i| match i {
                0 => ("k".repeat(64), "v".repeat(512)),
                i => (format!("k{i}"), "v".into()),
            })
            .collect(),
        (0..21).map(|i| (format!("k{i}"), "v".into())).collect(),
        vec![("k".repeat(65), "v".into()), ("ok".into(), "v".repeat(513))],
        vec![(String::new(), String::new())],
        vec![
            ("é".repeat(35), "v".into()),
            (format!("\"\\\n{}", "q".repeat(70)), "ü".repeat(300)),
        ],
    ];
    for m in metadata {
        out.push(with(req(&[("apple", 1)]), |r| {
            r.metadata = m.into_iter().collect()
        }));
    }
    out.push(OrderRequest {
        customer_id: "bob".into(),
        currency: "XXX".into(),
        lines: [("bad sku", 0), ("apple", 1), ("apple", 2000)]
            .map(|(sku, quantity)| LineRequest {
                sku: sku.into(),
                quantity,
            })
            .to_vec(),
        metadata: (0..21).map(|i| (i.to_string(), String::new())).collect(),
    });
    out
}

/// Configurations that price.
const PRICING_CONFIGS: &[&[(&str, &str)]] = &[
    &[],
    &[
        ("discount.percent_bps", "1000"),
        ("discount.min_subtotal", "1005"),
    ],
    &[
        ("discount.percent_bps", "1000"),
        ("discount.min_subtotal", "1006"),
    ],
    &[("discount.percent_bps", "500"), ("tax.rate_bps", "750")],
    &[("tax.rate_bps", "2500")],
    &[("tax.rate_bps", "10000")],
    &[("tax.rate_bps", "30000")],
    &[
        ("discount.percent_bps", "10000"),
        ("discount.min_subtotal", "18446744073709551615"),
    ],
    &[
        ("discount.percent_bps", "+0010"),
        ("tax.rate_bps", " 1900\u{2003}"),
    ],
    &[("tax.rate_bps", "4294967295")],
    &[("currencies", "CHF, JPY")],
    &[("currencies", "USD,,  EUR ,")],
];

/// Configurations that are operator errors (or not, where parsing is subtle).
const ODD_CONFIGS: &[&[(&str, &str)]] = &[
    &[("currencies", "")],
    &[("currencies", " , ")],
    &[("discount.percent_bps", "ten")],
    &[("discount.percent_bps", "10001")],
    &[("discount.percent_bps", "")],
    &[("discount.min_subtotal", "-1")],
    &[("discount.min_subtotal", "18446744073709551616")],
    &[("tax.rate_bps", "7.5")],
    &[("tax.rate_bps", "4294967296")],
    &[("tax.rate_bps", "++5")],
    &[("tax.rate_bps", "\u{1c}5")],
    &[("tax.rate_bps", "²")],
    &[("tax.rate_bps", "٣")],
    &[("tax.rate_bps", "\"quoted\"\n")],
];

/// The Rust plugin and the Python port, loaded with `config`.
async fn both(
    rt: &Runtime,
    python: &'static str,
    config: &[(&str, &str)],
) -> (Arc<PluginVersion>, Arc<PluginVersion>) {
    let config: BTreeMap<String, String> = config
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let load = |path: &'static str| {
        let config = config.clone();
        async move {
            rt.load_file(std::path::Path::new(path), |_| config)
                .await
                .unwrap_or_else(|e| panic!("load {path}: {e}"))
        }
    };
    (load(artifacts::ORDERS).await, load(python).await)
}

/// A decision as text: the priced order or the plugin's typed refusal. Anything else (a trap,
/// a budget, a broken contract) is shown as not a decision (its first line): the reference
/// logic never ends that way, so it always counts as a difference.
fn decision<T: std::fmt::Debug>(result: Result<T, InvokeError>) -> String {
    match result {
        Ok(v) => format!("{v:?}"),
        Err(InvokeError::Refused(e)) => format!("refused: {e:?}"),
        Err(other) => {
            let text = format!("{other:?}");
            format!(
                "NOT A DECISION: {}",
                text.lines().next().unwrap_or_default()
            )
        }
    }
}

/// Every request of the corpus, under every configuration, and every transition: the Python
/// port decides exactly as the Rust plugin (the priced order field by field, or the same error
/// case with the same violations and messages).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_port_decides_every_case_as_the_rust_plugin() {
    let Some(_) = python().await else { return };
    let python = weir_plugin_artifacts_python::ORDERS.unwrap();
    let mut config = RuntimeConfig::default();
    config.budget.timeout = Duration::from_secs(20);
    config.catalog_timeout = Duration::from_secs(10);
    config.budget.core_instances = 64;
    let cache = tempfile::tempdir().unwrap();
    crate::support::link_python_artifacts(cache.path());
    let rt = Runtime::with_artifacts(
        config,
        Arc::new(corpus_catalog()),
        Some(cache.path().to_owned()),
    )
    .expect("engine");

    let mut cases = 0;
    let mut differ = Vec::new();
    let mut compare = async |config: &[(&str, &str)], requests: &[OrderRequest]| {
        let (rust, py) = both(&rt, python, config).await;
        for request in requests {
            let what = format!("{config:?} {request:?}");
            let r = decision(rt.place_order(&rust, request, None).await);
            let p = decision(rt.place_order(&py, request, None).await);
            cases += 1;
            if r != p {
                differ.push(format!("{what}\n  rust:   {r}\n  python: {p}"));
            }
        }
    };
    for config in PRICING_CONFIGS {
        compare(config, &pricing_requests()).await;
    }
    for config in ODD_CONFIGS {
        compare(config, &[req(&[("apple", 1)]), req(&[("chf", 1)])]).await;
    }
    compare(&[], &edge_requests()).await;

    let (rust, py) = both(&rt, python, &[]).await;
    use OrderEvent as E;
    use OrderStatus as S;
    for status in [S::Placed, S::Paid, S::Shipped, S::Cancelled] {
        for event in [E::PaymentCaptured, E::Shipped, E::CancelRequested] {
            let order = OrderSnapshot {
                id: uuid::Uuid::now_v7(),
                customer_id: "cus_abc123".into(),
                status,
                total: Money::new(100, "USD"),
            };
            let what = format!("{status:?} + {event:?}");
            let r = decision(rt.transition(&rust, &order, event, None).await);
            let p = decision(rt.transition(&py, &order, event, None).await);
            cases += 1;
            if r != p {
                differ.push(format!("{what}\n  rust:   {r}\n  python: {p}"));
            }
        }
    }
    assert!(
        differ.is_empty(),
        "the Python port decides {} of {cases} cases differently:\n{}",
        differ.len(),
        differ.join("\n")
    );
    assert!(cases >= 190, "the corpus shrank: {cases} cases");
}
