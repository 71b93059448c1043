//! Guest output and plugin logs reach the host's log stream inside the invocation span.
//!
//! A module of the process test binary whose other tests run `weir` as a child process and
//! install no subscriber: it installs a thread-local `tracing` subscriber, which must not race
//! with other tests registering callsites under other subscribers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use weir_core::domain::{CatalogProduct, LineRequest, OrderRequest};
use weir_host::capabilities::catalog::StaticCatalog;
use weir_host::runtime::{
    BudgetKind, InvokeError, PluginVersion, Runtime, RuntimeConfig, TrapKind,
};
use weir_host::support::captured_log::CapturedLog;
use weir_plugin_artifacts as artifacts;

fn runtime(timeout: Duration) -> Runtime {
    let mut config = RuntimeConfig::default();
    config.budget.timeout = timeout;
    runtime_with(config)
}

fn runtime_with(config: RuntimeConfig) -> Runtime {
    let catalog = StaticCatalog::new([CatalogProduct {
        sku: "KB-001".into(),
        name: "Keyboard".into(),
        unit_price: 8900,
        currency: "EUR".into(),
        stock: 10,
    }]);
    Runtime::new(config, Arc::new(catalog)).expect("engine")
}

fn request(customer: &str) -> OrderRequest {
    OrderRequest {
        customer_id: customer.into(),
        currency: "EUR".into(),
        lines: vec![LineRequest {
            sku: "KB-001".into(),
            quantity: 2,
        }],
        metadata: BTreeMap::new(),
    }
}

async fn load(rt: &Runtime, path: &str) -> Arc<PluginVersion> {
    rt.load_file(std::path::Path::new(path), |_| BTreeMap::new())
        .await
        .unwrap_or_else(|e| panic!("load {path}: {e}"))
}

/// JSON lines at info and above into a buffer, for this thread until the guard drops: each
/// line with its current span and span list, and a line when a span closes.
fn capture() -> (CapturedLog, tracing::subscriber::DefaultGuard) {
    let captured = CapturedLog::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::INFO)
        .with_current_span(true)
        .with_span_list(true)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

/// Guest stdout and plugin log calls land in the host's log stream inside the
/// `plugin.invoke` span (so they carry its context), and the invocation span records
/// name, version, digest, function and outcome.
#[tokio::test]
async fn guest_output_and_logs_are_captured_with_the_invocation_context() {
    let (captured, _guard) = capture();

    let rt = runtime(Duration::from_millis(200));
    let spin = load(&rt, artifacts::HOSTILE_SPIN).await;
    let err = rt
        .place_order(&spin, &request("cus_123"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, InvokeError::Budget(BudgetKind::Cpu)),
        "{err:?}"
    );
    // No epoch tick during the call (the only point where a guest yields): it starts inline
    // and finishes in its first slice, so its placement comes with its outcome.
    let rt = runtime_with(RuntimeConfig {
        epoch_tick: Duration::from_secs(3600),
        ..RuntimeConfig::default()
    });
    let orders = load(&rt, artifacts::ORDERS).await;
    rt.place_order(&orders, &request("cus_123"), None)
        .await
        .unwrap();

    let text = captured.text();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let stdout_line = lines
        .iter()
        .find(|l| l["fields"]["stream"] == "stdout")
        .unwrap_or_else(|| panic!("no guest stdout line in {text}"));
    assert_eq!(
        stdout_line["fields"]["message"],
        "hostile-spin: spinning forever"
    );
    assert_eq!(stdout_line["span"]["name"], "plugin.invoke");
    assert_eq!(stdout_line["span"]["plugin.name"], "hostile-spin");
    let plugin_log = lines
        .iter()
        .find(|l| l["target"] == "weir::plugin" && l["span"]["plugin.name"] == "orders")
        .unwrap_or_else(|| panic!("no plugin log line in {text}"));
    assert_eq!(plugin_log["span"]["plugin.function"], "place-order");
    // The catalog import's span is debug-level, off here: its lookup's outcome must not be
    // recorded on `plugin.invoke` (whose own outcome comes only at the end of the call).
    assert!(
        plugin_log["span"].get("outcome").is_none(),
        "a catalog lookup's outcome landed on plugin.invoke: {plugin_log}"
    );
    // Recorded before the guest runs (with one record), so the guest's own lines show them.
    for field in ["instance_wait_us", "instantiate_us"] {
        assert!(plugin_log["span"][field].is_u64(), "{field}: {plugin_log}");
    }
    let closed: Vec<_> = lines
        .iter()
        .filter(|l| l["span"]["name"] == "plugin.invoke" && l["fields"]["message"] == "close")
        .collect();
    // What a call records at its end (outcome, duration and an inline call's placement in one
    // record), and before the guest ran.
    let finished = closed
        .iter()
        .find(|l| {
            l["span"]["outcome"] == "ok"
                && l["span"]["plugin.name"] == "orders"
                && l["span"]["plugin.function"] == "place-order"
        })
        .unwrap_or_else(|| panic!("no closed call that ended ok in {text}"));
    for field in ["instance_wait_us", "instantiate_us", "duration_us"] {
        assert!(finished["span"][field].is_u64(), "{field}: {finished}");
    }
    assert_eq!(finished["span"]["placement"], "inline", "{finished}");
    assert!(
        closed.iter().any(|l| l["span"]["outcome"] == "timeout"),
        "{text}"
    );
    assert!(
        closed.iter().any(|l| l["span"]["outcome"] == "ok"
            && l["span"]["plugin.digest"] == orders.meta.digest.as_str()),
        "{text}"
    );
}

/// `place-order` of `plugin` on `order` ends in the trap a panic makes.
async fn panics(rt: &Runtime, plugin: &PluginVersion, order: &OrderRequest) {
    let err = rt.place_order(plugin, order, None).await.unwrap_err();
    assert!(
        matches!(
            err,
            InvokeError::Trap {
                kind: TrapKind::Unreachable,
                ..
            }
        ),
        "{err:?}"
    );
}

/// A plugin built for `wasm32-unknown-unknown` has no stderr: the SDK's panic hook sends the
/// panic's message through `weir:orders/log`, so it still reaches the host's log as an error
/// record inside the invocation span, and the call still fails as the trap it is.
#[tokio::test]
async fn a_panic_without_wasi_reaches_the_log_through_the_sdk() {
    let (captured, _guard) = capture();

    let rt = runtime(Duration::from_secs(2));
    let panic = load(&rt, artifacts::HOSTILE_PANIC_NO_WASI).await;
    assert!(
        !panic.imports.is_empty() && panic.imports.iter().all(|i| i.starts_with("weir:orders/")),
        "the no-WASI build imports WASI: {:?}",
        panic.imports
    );
    panics(&rt, &panic, &request("cus_panic")).await;

    let text = captured.text();
    let record = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["target"] == "weir::plugin" && l["fields"]["message"] == "plugin panicked")
        .unwrap_or_else(|| panic!("no `plugin panicked` record in {text}"));
    assert_eq!(record["level"], "ERROR");
    assert_eq!(record["span"]["name"], "plugin.invoke");
    assert_eq!(record["span"]["plugin.name"], "hostile-panic");
    let fields: serde_json::Value =
        serde_json::from_str(record["fields"]["fields"].as_str().unwrap()).unwrap();
    let message = fields["panic"].as_str().unwrap_or_default();
    assert!(
        message.contains("hostile plugin panicked on purpose") && message.contains("src/lib.rs"),
        "the panic's message and location: {message:?}"
    );
}

/// The SDK's panic hook logs only for a plugin that declared `log`: `hostile-churn` declares
/// nothing, so its panic stays the trap it is (an undeclared log import would turn it into a
/// capability refusal) and leaves no `plugin panicked` record.
#[tokio::test]
async fn a_panic_without_the_log_capability_stays_a_trap() {
    let (captured, _guard) = capture();
    let rt = runtime(Duration::from_secs(2));
    let churn = load(&rt, artifacts::HOSTILE_CHURN).await;
    assert!(churn.capabilities.is_empty(), "{:?}", churn.capabilities);
    let mut order = request("cus_panic");
    order.metadata.insert("panic".into(), "1".into());
    panics(&rt, &churn, &order).await;
    let text = captured.text();
    assert!(!text.contains("plugin panicked"), "{text}");
}
