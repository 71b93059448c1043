//! The native decider decides as the reference component does: the same requests through
//! both, over the same catalog, give the same answers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;
use weir_core::domain::{
    CatalogProduct, LineRequest, Money, OrderEvent, OrderRequest, OrderSnapshot, OrderStatus,
};
use weir_core::ports::{Catalog, CatalogError, DecideError, DecisionContext, OrderDecider};

use super::NativeDecider;
use crate::capabilities::catalog::StaticCatalog;
use crate::runtime::{Registry, Runtime, RuntimeConfig, Slot};
use crate::support::captured_log::CapturedLog;

/// The static catalog, except that `DOWN-1` is unavailable.
struct Flaky(StaticCatalog);

#[async_trait::async_trait]
impl Catalog for Flaky {
    async fn get(&self, sku: &str) -> Result<Option<CatalogProduct>, CatalogError> {
        if sku == "DOWN-1" {
            return Err(CatalogError::Unavailable("replica lost".into()));
        }
        self.0.get(sku).await
    }
}

fn product(sku: &str, price: i64, currency: &str, stock: i64) -> CatalogProduct {
    CatalogProduct {
        sku: sku.into(),
        name: sku.into(),
        unit_price: price,
        currency: currency.into(),
        stock,
    }
}

fn request(currency: &str, lines: &[(&str, u32)]) -> OrderRequest {
    OrderRequest {
        customer_id: "cus_native".into(),
        currency: currency.into(),
        lines: lines
            .iter()
            .map(|(sku, quantity)| LineRequest {
                sku: (*sku).into(),
                quantity: *quantity,
            })
            .collect(),
        metadata: BTreeMap::new(),
    }
}

/// What a decision comes to, for comparison: the value, or the refusal's case.
fn answer<T: std::fmt::Debug>(result: Result<T, DecideError>) -> String {
    match result {
        Ok(value) => format!("ok {value:?}"),
        Err(DecideError::Refused(e)) => format!("refused {e:?}"),
        Err(e) => format!("failed {}", e.outcome()),
    }
}

#[tokio::test]
async fn decides_as_the_component_does() {
    let catalog: Arc<dyn Catalog> = Arc::new(Flaky(StaticCatalog::new([
        product("KB-001", 8900, "EUR", 3),
        product("CB-004", 900, "EUR", 1_000),
        product("US-001", 500, "USD", 10),
    ])));
    let config = RuntimeConfig::default();
    let runtime = Runtime::new(config.clone(), catalog.clone()).expect("engine");
    // A discount and a tax, so that the configuration is read and applied on both sides.
    let plugin_config = BTreeMap::from([
        ("discount.percent_bps".to_owned(), "1000".to_owned()),
        ("discount.min_subtotal".to_owned(), "10000".to_owned()),
        ("tax.rate_bps".to_owned(), "2000".to_owned()),
    ]);
    let plugin = runtime
        .load(weir_plugin_artifacts::ORDERS_WASM.to_vec(), |_| {
            plugin_config.clone()
        })
        .await
        .expect("the reference plugin loads");
    let registry = Arc::new(Registry::new());
    let plugin = registry.insert(plugin);
    assert!(registry.set_slot("orders", Slot::stable(plugin.clone())));
    let native = NativeDecider::new(
        registry,
        "orders",
        catalog,
        config.budget.timeout,
        config.catalog_timeout,
    );
    let cx = || DecisionContext {
        deadline: Instant::now() + Duration::from_secs(5),
        routing_key: weir_core::ports::RoutingKey::new("key-1"),
    };

    let requests = [
        ("ok", request("EUR", &[("KB-001", 2), ("CB-004", 3)])),
        (
            "duplicate sku",
            request("EUR", &[("CB-004", 1), ("CB-004", 2)]),
        ),
        (
            "unknown sku",
            request("EUR", &[("CB-004", 1), ("NOPE-1", 1)]),
        ),
        ("insufficient stock", request("EUR", &[("KB-001", 4)])),
        ("currency mismatch", request("EUR", &[("US-001", 1)])),
        ("catalog unavailable", request("EUR", &[("DOWN-1", 1)])),
        ("invalid", request("XXX", &[])),
    ];
    for (case, request) in &requests {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let component = runtime.place_order(&plugin, request, Some(deadline)).await;
        let decided = native.place(request, cx()).await;
        if let Ok(decided) = &decided {
            assert_eq!(decided.by.digest, plugin.meta.digest, "{case}: decided by");
        }
        let native = answer(decided.map(|d| d.value));
        assert_eq!(native, answer(component), "{case}");
        eprintln!("{case}: {native}");
    }
    assert!(
        answer(native.place(&requests[0].1, cx()).await.map(|d| d.value))
            .contains("total: Money { amount: 22140"),
        "the configuration applies: (2 * 8900 + 3 * 900) * 0.9 * 1.2 = 22140"
    );

    let order = |status| OrderSnapshot {
        id: Uuid::nil(),
        customer_id: "cus_native".into(),
        status,
        total: Money {
            amount: 100,
            currency: "EUR".into(),
        },
    };
    for (status, event) in [
        (OrderStatus::Placed, OrderEvent::PaymentCaptured),
        (OrderStatus::Paid, OrderEvent::Shipped),
        (OrderStatus::Shipped, OrderEvent::CancelRequested),
        (OrderStatus::Cancelled, OrderEvent::PaymentCaptured),
    ] {
        let component = runtime
            .transition(&plugin, &order(status), event, None)
            .await;
        let native = native.transition(&order(status), event, cx()).await;
        assert_eq!(
            answer(native.map(|d| d.value)),
            answer(component),
            "{status:?} + {event:?}"
        );
    }

    // The guest's log records leave through the host's log path, as a component's do: the
    // reference plugin's `order priced` at info, with its fields, as one `weir::plugin` line.
    let lines = CapturedLog::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::INFO)
        .with_writer(lines.clone())
        .finish();
    {
        let _guard = tracing::subscriber::set_default(subscriber);
        native
            .place(&requests[0].1, cx())
            .await
            .expect("the ok request is priced");
    }
    let text = lines.text();
    let priced: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .filter(|l: &serde_json::Value| l["fields"]["message"] == "order priced")
        .collect();
    assert_eq!(priced.len(), 1, "one `order priced` record: {text}");
    assert_eq!(priced[0]["target"], "weir::plugin");
    assert_eq!(priced[0]["level"], "INFO");
    assert_eq!(priced[0]["fields"]["plugin"], "orders");
    let fields: serde_json::Value =
        serde_json::from_str(priced[0]["fields"]["fields"].as_str().unwrap()).unwrap();
    assert_eq!(
        fields,
        serde_json::json!({"currency": "EUR", "lines": "2", "total": "22140"})
    );
}
