//! The hostile suite: components written to attack the sandbox, each class ending in its
//! typed outcome with bounded output while the host keeps serving.
//!
//! - huge and malformed errors (`hostile-flood`): refused as `error_shape` contract
//!   violations, or stopped at the copy budget when they are bigger than it; the client, the
//!   log and the idempotency store never see the plugin's text;
//! - aliasing amplification (one buffer returned many times) and huge return values: stopped
//!   at the copy budget (`runtime.budget.copy_bytes`);
//! - import argument floods: a long sku is refused before the catalog is asked;
//! - undeclared capabilities: `CAPABILITY_DENIED`;
//! - WASI outside the allow-list (`hostile-sockets`): refused at admission, naming the import;
//! - describe abuse (huge, control characters, duplicate and millions of capabilities):
//!   refused at the `describe` stage with an escaped, cut quote;
//! - clocks at 1 ms resolution;
//! - newline floods: a bounded number of log records (a process test, it reads the real log:
//!   `host/tests/process/sandbox.rs`);
//! - CPU saturation: 128 calls spinning to their budget leave the database breaker closed
//!   and `/readyz` at 200, and are recorded against the plugin version; only the first few
//!   ever started inline on the server's worker;
//! - inline calls under load: while requests hold the server's workers, calls start on the
//!   plugin threads (the load rule as `weir serve` wires it).
//!
//! The RSS bound under 8 and 64 concurrent hostile calls is a process test
//! (`host/tests/process/sandbox.rs`): it measures the server process alone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use weir_core::domain::contract::ContractRule;
use weir_core::domain::{CatalogProduct, LineRequest, OrderError, OrderRequest};
use weir_core::ports::{Catalog, CatalogError};
use weir_host::policy::circuit_breaker::{BreakerConfig, BreakerState};
use weir_host::runtime::{BudgetKind, InvokeError, LoadError, Runtime, RuntimeConfig};
use weir_plugin_artifacts as artifacts;

use crate::support::{Backend, TestServer, eventually, metric, order_body, plugin_dir};

/// A catalog that counts its lookups.
#[derive(Default)]
struct CountingCatalog(AtomicUsize);

#[async_trait::async_trait]
impl Catalog for CountingCatalog {
    async fn get(&self, sku: &str) -> Result<Option<CatalogProduct>, CatalogError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok((sku == "KB-001").then(|| CatalogProduct {
            sku: sku.into(),
            name: "Keyboard".into(),
            unit_price: 8900,
            currency: "EUR".into(),
            stock: 10,
        }))
    }
}

fn runtime(catalog: Arc<CountingCatalog>) -> Runtime {
    let mut config = RuntimeConfig::default();
    config.budget.timeout = Duration::from_secs(5);
    config.budget.memory_bytes = 64 << 20;
    let rt = Runtime::new(config, catalog).expect("engine");
    // Every hostile call must run: the version's breaker must not short-circuit them.
    rt.plugin_breakers().configure(BreakerConfig {
        min_calls: 100_000,
        ..BreakerConfig::default()
    });
    rt
}

fn flood(mode: &str, size: usize) -> OrderRequest {
    OrderRequest {
        customer_id: "cus_1".into(),
        currency: "EUR".into(),
        lines: vec![LineRequest {
            sku: "KB-001".into(),
            quantity: 1,
        }],
        metadata: BTreeMap::from([
            ("flood".to_owned(), mode.to_owned()),
            ("size".to_owned(), size.to_string()),
        ]),
    }
}

fn honest() -> OrderRequest {
    let mut request = flood("", 0);
    request.metadata.clear();
    request
}

async fn load(
    rt: &Runtime,
    path: &str,
) -> Result<Arc<weir_host::runtime::PluginVersion>, LoadError> {
    rt.load_file(std::path::Path::new(path), |_| BTreeMap::new())
        .await
}

fn is_rule(e: &InvokeError, rule: ContractRule) -> bool {
    matches!(e, InvokeError::Contract(v) if v.rule == rule)
}

/// Every error case over its bound is refused as `error_shape`, anything bigger than the copy
/// budget never reaches the host's heap, and no error text of the plugin's is echoed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_errors_are_typed_and_never_echoed() {
    let catalog = Arc::new(CountingCatalog::default());
    let rt = runtime(catalog);
    let plugin = load(&rt, artifacts::HOSTILE_FLOOD).await.expect("admitted");

    // Within the bounds: the plugin's answer stands.
    let answer = rt
        .place_order(&plugin, &flood("violations", 256), None)
        .await;
    assert!(
        matches!(&answer, Err(InvokeError::Refused(OrderError::Invalid(v))) if v.len() == 256),
        "{answer:?}"
    );

    type Expected = fn(&InvokeError) -> bool;
    let cases: &[(&str, usize, Expected)] = &[
        ("violations", 257, |e| is_rule(e, ContractRule::ErrorShape)),
        ("violation-long", 4096, |e| {
            is_rule(e, ContractRule::ErrorShape)
        }),
        ("not-found", 4096, |e| is_rule(e, ContractRule::ErrorShape)),
        ("conflict", 4096, |e| is_rule(e, ContractRule::ErrorShape)),
        ("unavailable", 4096, |e| {
            is_rule(e, ContractRule::ErrorShape)
        }),
        ("internal", 4096, |e| is_rule(e, ContractRule::ErrorShape)),
        ("reason", 0, |e| is_rule(e, ContractRule::ErrorShape)),
        // Over the copy budget (1 MiB): stopped while being lifted.
        ("violations", 500_000, |e| {
            matches!(e, InvokeError::Budget(BudgetKind::Copy))
        }),
        ("not-found", 20 << 20, |e| {
            matches!(e, InvokeError::Budget(BudgetKind::Copy))
        }),
        ("internal", 20 << 20, |e| {
            matches!(e, InvokeError::Budget(BudgetKind::Copy))
        }),
        // One 1 MiB buffer returned 10 000 times: 10 GB if copied.
        ("alias", 10_000, |e| {
            matches!(e, InvokeError::Budget(BudgetKind::Copy))
        }),
        // 200 000 lines in a priced order.
        ("lines", 200_000, |e| {
            matches!(e, InvokeError::Budget(BudgetKind::Copy))
        }),
    ];
    for (mode, size, expected) in cases {
        let err = rt
            .place_order(&plugin, &flood(mode, *size), None)
            .await
            .expect_err(mode);
        let shown: String = format!("{err:?}").chars().take(300).collect();
        assert!(expected(&err), "{mode} x {size}: {shown}");
        let chain = weir_host::support::chain(&err);
        assert!(
            chain.len() < 300,
            "{mode}: the error echoes the plugin: {chain}"
        );
    }
    // Still serving, and the plugin still prices.
    let priced = rt
        .place_order(&plugin, &honest(), None)
        .await
        .expect("honest pricing");
    assert_eq!(priced.total.currency, "EUR");
}

/// A sku over its bound is refused before the catalog is asked; an undeclared capability is
/// denied; the clocks tick in milliseconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_are_bounded_and_only_declared_capabilities_answer() {
    let catalog = Arc::new(CountingCatalog::default());
    let rt = runtime(catalog.clone());
    let plugin = load(&rt, artifacts::HOSTILE_FLOOD).await.expect("admitted");
    assert_eq!(
        plugin.capabilities.len(),
        2,
        "hostile-flood declares log and catalog only"
    );

    let answer = rt.place_order(&plugin, &flood("sku", 128), None).await;
    assert!(
        matches!(&answer, Err(InvokeError::Refused(OrderError::Rejected(r))) if r.reason == "SKU_CALLED"),
        "{answer:?}"
    );
    assert_eq!(
        catalog.0.load(Ordering::SeqCst),
        1,
        "a sku at the bound is looked up"
    );

    let err = rt
        .place_order(&plugin, &flood("sku", 129), None)
        .await
        .unwrap_err();
    assert!(is_rule(&err, ContractRule::ImportArgument), "{err:?}");
    let err = rt
        .place_order(&plugin, &flood("sku", 30 << 20), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, InvokeError::Budget(BudgetKind::Copy)),
        "{err:?}"
    );
    assert_eq!(
        catalog.0.load(Ordering::SeqCst),
        1,
        "no lookup for a sku over the bound"
    );

    let err = rt
        .place_order(&plugin, &flood("config", 0), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            InvokeError::CapabilityDenied {
                capability: "config"
            }
        ),
        "{err:?}"
    );

    let answer = rt.place_order(&plugin, &flood("clock", 0), None).await;
    let Err(InvokeError::Refused(OrderError::Rejected(r))) = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(r.reason, "CLOCK");
    for reading in r.message.split(' ') {
        let ns: u128 = reading.parse().unwrap_or_else(|_| panic!("{}", r.message));
        assert_eq!(
            ns % 1_000_000,
            0,
            "clock readings are whole milliseconds: {}",
            r.message
        );
    }
}

/// Admission refuses components that abuse `describe` or import WASI outside the allow-list,
/// quoting what they said escaped and cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_refuses_describe_abuse_and_imports_outside_the_allow_list() {
    let rt = runtime(Arc::new(CountingCatalog::default()));
    let err = load(&rt, artifacts::HOSTILE_SOCKETS).await.unwrap_err();
    assert_eq!(err.stage(), "imports", "{err}");
    assert!(err.to_string().contains("wasi:sockets/"), "{err}");

    for (path, expected) in [
        (artifacts::HOSTILE_DESCRIBE_HUGE, "copy"),
        (artifacts::HOSTILE_DESCRIBE_CAPS, "copy"),
        (artifacts::HOSTILE_DESCRIBE_CTRL, "version"),
        (artifacts::HOSTILE_DESCRIBE_DUP, "more than once"),
        (artifacts::HOSTILE_DESCRIBE_LONG, "more bytes"),
    ] {
        let err = load(&rt, path).await.unwrap_err();
        assert_eq!(err.stage(), "describe", "{path}: {err}");
        let text = weir_host::support::chain(&err);
        assert!(text.contains(expected), "{path}: {text}");
        assert!(text.len() < 400, "{path}: not bounded: {text}");
        assert!(
            !text.chars().any(char::is_control),
            "{path}: control characters reach the operator: {text:?}"
        );
    }
}

/// Plugin code at its full CPU budget, 128 calls at once, does not starve the host: the
/// database breaker stays closed, `/readyz` answers 200 throughout, and the failures are the
/// plugin version's. The server runs on one worker, as `weir serve` does by default on a
/// two-core host (`server_threads`: half the CPUs), against two plugin threads; only the
/// first calls ever started inline on that worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn plugin_cpu_saturation_does_not_take_the_replica_out() {
    let s = Arc::new(
        TestServer::start(Backend::Sqlite, |c, dir| {
            c.plugins.dir = Some(plugin_dir(dir, &[artifacts::HOSTILE_SPIN]));
            c.plugins.orders = "hostile-spin".into();
            c.runtime.budget.timeout = Duration::from_millis(1000);
            c.runtime.threads = 2;
            c.runtime.max_instances = 160;
            c.policy.max_concurrency = 1024;
            c.policy.plugin_breaker.min_calls = 100_000;
        })
        .await,
    );
    // An honest plugin on the same runtime, whose catalog lookups reach the database.
    let reference = s
        .state()
        .runtime
        .load_file(std::path::Path::new(artifacts::ORDERS), |_| BTreeMap::new())
        .await
        .expect("reference plugin");

    let mut calls = Vec::new();
    for i in 0..128 {
        let s = s.clone();
        calls.push(tokio::spawn(async move {
            let (status, _, body) = s
                .post_order(
                    Some(&format!("spin-{i}")),
                    &order_body("c", &[("KB-001", 1)]),
                )
                .await;
            (
                status.as_u16(),
                body["code"].as_str().unwrap_or("").to_owned(),
            )
        }));
    }
    // How many plugin calls run at once, sampled every millisecond until every call has
    // been answered (an event, not an idle period that a slow machine could fake).
    let load_over = Arc::new(tokio::sync::Notify::new());
    let sampler = {
        let s = s.clone();
        let load_over = load_over.clone();
        tokio::spawn(async move {
            let mut most = 0;
            let over = load_over.notified();
            tokio::pin!(over);
            loop {
                most = most.max(s.state().runtime.in_flight());
                tokio::select! {
                    () = &mut over => return most,
                    () = tokio::time::sleep(Duration::from_millis(1)) => {}
                }
            }
        })
    };
    let mut probes = 0;
    while calls.iter().any(|c| !c.is_finished()) {
        let (status, body) = s.readyz().await;
        assert_eq!(
            status, 200,
            "readiness failed under plugin CPU load: {body}"
        );
        assert_eq!(
            s.state().deps.database.breaker.state(),
            BreakerState::Closed,
            "the database breaker blamed for plugin CPU"
        );
        let _ = s
            .state()
            .runtime
            .place_order(&reference, &honest(), None)
            .await;
        probes += 1;
    }
    load_over.notify_one();
    let most_in_flight = sampler.await.unwrap();
    assert!(
        most_in_flight >= 32,
        "the calls did not overlap (at most {most_in_flight} in flight)"
    );
    assert!(probes >= 2, "the load ended before it was probed");
    for call in calls {
        let (status, code) = call.await.unwrap();
        assert!(code == "PLUGIN_TIMEOUT", "{status} {code}");
    }
    assert_eq!(
        s.state().deps.database.breaker.state(),
        BreakerState::Closed
    );
    assert_eq!(s.readyz().await.0, 200);
    let text = s.metrics().await;
    let cpu = metric(
        &text,
        "weir_plugin_traps_total",
        &[("plugin_name", "hostile-spin"), ("trap_kind", "cpu")],
    );
    assert!(cpu >= 1.0, "the CPU budget is recorded against the version");
    // With more requests in flight than the server's one worker, calls start on the plugin
    // threads (`runtime.inline_calls`); the first, before the others arrived, may have
    // started inline, and a second overrun sends the version to the plugin threads for a
    // second. Of the 128 spinning calls only the first few ever held the server's worker.
    let spin = s
        .state()
        .registry
        .slot_of("hostile-spin")
        .expect("hostile-spin")
        .stable;
    let inline = s.state().runtime.inline_of(&spin);
    assert!(
        inline.started <= 8,
        "spinning calls held the server's worker: {inline:?} of 128 calls"
    );
    Arc::into_inner(s).expect("sole owner").stop().await;
}

/// The load rule as `weir serve` wires it (connections on a server thread or waiting for
/// one): four requests in flight whose plugin calls sleep on the plugin threads hold none
/// of the server's one worker, so a call made meanwhile starts inline. (Counting the
/// requests in flight, as the rule did until 6 December, sent it to the plugin threads.)
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn requests_waiting_on_the_plugin_threads_do_not_hold_the_server() {
    let s = Arc::new(
        TestServer::start(Backend::Sqlite, |c, dir| {
            c.plugins.dir = Some(plugin_dir(dir, &[artifacts::HOSTILE_SLEEP]));
            c.plugins.orders = "hostile-sleep".into();
            c.runtime.budget.timeout = Duration::from_millis(2000);
            c.policy.plugin_breaker.min_calls = 100_000;
        })
        .await,
    );
    let rt = s.state().runtime.clone();
    let reference = rt
        .load_file(std::path::Path::new(artifacts::ORDERS), |_| BTreeMap::new())
        .await
        .expect("reference plugin");
    let sleeping: Vec<_> = (0..4)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                s.post_order(
                    Some(&format!("sleep-{i}")),
                    &order_body("c", &[("KB-001", 1)]),
                )
                .await
                .0
                .as_u16()
            })
        })
        .collect();
    // The four sleeping calls in flight, their connections' polls over: bounded (they
    // sleep for two seconds).
    eventually(
        "four sleeping calls in flight, no connection on the worker or waiting for it",
        1500,
        Duration::from_millis(1),
        || std::future::ready(rt.in_flight() == 4 && rt.server_load() == Some(0)),
    )
    .await;
    let _ = rt.place_order(&reference, &honest(), None).await;
    assert_eq!(
        rt.inline_of(&reference).started,
        1,
        "four requests waiting on the plugin threads kept a call off the idle worker"
    );
    for request in sleeping {
        assert_eq!(request.await.unwrap(), 503, "the sleeping plugin times out");
    }
    Arc::into_inner(s).expect("sole owner").stop().await;
}

/// The load rule counts the connections that want the server's thread: those on it and
/// those woken and waiting for it. A quote is held in its catalog read (the database
/// dependency's fault hook), so its connection wants no thread (load 0). A task on the
/// server's one worker, counted as a connection the way the server counts its own
/// (`AppState::connections`), releases the read, which wakes the quote's connection: one
/// connection on the worker and one waiting for it, so a call started there goes to the
/// plugin threads. Once the quote is answered, the same call from such a task starts
/// inline. (Counting neither the running nor the waiting connection, the first call would
/// also have started inline.)
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_connection_waiting_for_the_worker_sends_calls_to_the_plugin_threads() {
    let s = TestServer::start(Backend::Sqlite, |c, dir| {
        // Prices without looking at the catalog: the quote's own availability read is the
        // one that reaches the database.
        c.plugins.dir = Some(plugin_dir(dir, &[artifacts::HOSTILE_LIAR]));
        c.plugins.orders = "hostile-liar".into();
        c.policy.database.timeout = Duration::from_secs(60);
        // No cache: the quote's connection awaits its read itself, so releasing the read
        // wakes the connection (with a cache on, the read is a task of its own, which wakes
        // the connection only once it has run).
        c.policy.cache.ttl = Duration::ZERO;
    })
    .await;
    let rt = s.state().runtime.clone();
    let connections = s.state().connections.clone();
    let reference = rt
        .load_file(std::path::Path::new(artifacts::ORDERS), |_| BTreeMap::new())
        .await
        .expect("reference plugin");
    let fault = s.state().deps.database.fault.clone();
    fault.hold();
    let held = {
        let request = s
            .client
            .post(format!("{}/v1/quotes", s.base))
            .json(&order_body("cus_waiting", &[("KB-001", 1)]));
        tokio::spawn(async move { request.send().await.expect("quote").status().as_u16() })
    };
    // Held, and its connection's poll over (it woke itself while starting the request).
    eventually(
        "the quote settled in its catalog read (server load 0)",
        3000,
        Duration::from_millis(1),
        || std::future::ready(fault.waiting() > 0 && rt.server_load() == Some(0)),
    )
    .await;
    // On the server's one worker (the test's own body runs on another thread), as a
    // connection: release the read, which wakes the quote's connection, then start a call
    // before yielding.
    let on_the_worker = {
        let (rt, reference) = (rt.clone(), reference.clone());
        tokio::spawn(connections.track(async move {
            let held_load = rt.server_load();
            fault.release();
            let released_load = rt.server_load();
            let _ = rt.place_order(&reference, &honest(), None).await;
            (held_load, released_load)
        }))
    };
    let loads = on_the_worker.await.expect("the task on the worker");
    assert_eq!(
        loads,
        (Some(1), Some(2)),
        "(held: this connection on the worker; released: the quote's connection also waits \
         for it)"
    );
    assert_eq!(
        rt.inline_of(&reference).started,
        0,
        "a call started inline while a woken connection waited for the server's one worker"
    );
    assert_eq!(held.await.unwrap(), 200, "the released quote is made");
    // Answered: no connection wants the worker, once it has polled what the response woke.
    eventually(
        "the server's load back to 0",
        1500,
        Duration::from_millis(1),
        || std::future::ready(rt.server_load() == Some(0)),
    )
    .await;
    let alone = {
        let (rt, reference) = (rt.clone(), reference.clone());
        tokio::spawn(connections.track(async move {
            let load = rt.server_load();
            let _ = rt.place_order(&reference, &honest(), None).await;
            load
        }))
    };
    assert_eq!(
        alone.await.unwrap(),
        Some(1),
        "only this connection on the worker"
    );
    assert_eq!(
        rt.inline_of(&reference).started,
        1,
        "a call with nothing else wanting the worker did not start inline"
    );
    s.stop().await;
}

/// Over HTTP: a huge error becomes a small problem, nothing of the plugin's text is shown,
/// nothing is stored; a bounded refusal is stored and replayed at its bounded size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_errors_over_http_are_bounded_in_the_body_and_the_store() {
    let s = TestServer::start(Backend::Sqlite, |c, dir| {
        c.plugins.dir = Some(plugin_dir(dir, &[artifacts::HOSTILE_FLOOD]));
        c.plugins.orders = "hostile-flood".into();
        // About sizes, not time: building a 500 kB answer must not meet the time budget.
        crate::support::patient(c);
    })
    .await;
    let body = |mode: &str, size: usize| {
        let mut b = order_body("c", &[("KB-001", 1)]);
        b["metadata"] = json!({"flood": mode, "size": size.to_string()});
        b
    };
    for (i, (mode, size, code)) in [
        ("violations", 500_000, "PLUGIN_BUDGET_EXCEEDED"),
        ("not-found", 20 << 20, "PLUGIN_BUDGET_EXCEEDED"),
        ("internal", 4096, "PLUGIN_CONTRACT_VIOLATION"),
        ("violations", 300, "PLUGIN_CONTRACT_VIOLATION"),
        ("config", 0, "CAPABILITY_DENIED"),
    ]
    .into_iter()
    .enumerate()
    {
        let raw = s
            .client
            .post(format!("{}/v1/orders", s.base))
            .header("Idempotency-Key", format!("k{i}"))
            .json(&body(mode, size))
            .send()
            .await
            .unwrap();
        assert_eq!(raw.status(), 500, "{mode}");
        let text = raw.text().await.unwrap();
        assert!(text.len() < 2048, "{mode}: {} byte body", text.len());
        let problem: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(problem["code"], code, "{mode}: {problem}");
    }
    let counts = s.state().store.count_rows().await.unwrap();
    assert_eq!(
        (counts.orders, counts.idempotency_completed),
        (0, 0),
        "nothing stored"
    );

    // The largest refusal the contract allows is stored and replayed as it is.
    let first = s.post_order(Some("max"), &body("violations", 256)).await;
    assert_eq!(first.0, 422);
    assert_eq!(first.2["violations"].as_array().unwrap().len(), 256);
    let replay = s.post_order(Some("max"), &body("violations", 256)).await;
    assert_eq!(replay.1["idempotent-replayed"], "true");
    assert_eq!(replay.2, first.2);
    assert!(
        serde_json::to_vec(&replay.2).unwrap().len() < 512 << 10,
        "the stored response is bounded"
    );
    s.stop().await;
}

/// Nothing one call leaves in its instance reaches the next call in the same pool slot,
/// whether torn-down memory is handed back to the kernel or reset in place
/// (`runtime.keep_resident_bytes`, with or without `PAGEMAP_SCAN`). `hostile-snoop` reports
/// how many calls its instance served before and how many bytes of a fresh heap block it
/// finds dirty, then dirties them; the control call on one reused instance shows that it sees
/// what an earlier call left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_a_call_leaves_in_its_instance_reaches_the_next_call() {
    use weir_host::runtime::parts::CallParts;

    let clean = "earlier calls 0, dirty bytes 0";
    for keep_resident in [0, 1 << 20, 8 << 20] {
        // One slot, so every call reuses the memory of the one before.
        let config = RuntimeConfig {
            max_instances: 1,
            keep_resident_bytes: keep_resident,
            ..RuntimeConfig::default()
        };
        let rt = Runtime::new(config, Arc::new(CountingCatalog::default())).expect("engine");
        let snoop = load(&rt, artifacts::HOSTILE_SNOOP).await.expect("admitted");
        for call in 0..3 {
            match rt.place_order(&snoop, &honest(), None).await {
                Err(InvokeError::Refused(OrderError::Internal(seen))) => assert_eq!(
                    seen, clean,
                    "keep_resident_bytes {keep_resident}, call {call}: state survived"
                ),
                other => panic!("keep_resident_bytes {keep_resident}: {other:?}"),
            }
        }

        // The control: a second call on the same instance sees the first one's marks.
        let parts = CallParts::new(&rt, &snoop);
        let mut store = parts.store();
        let instance = parts.instantiate(&mut store).await;
        let wire = CallParts::wire(&honest());
        let mut seen = Vec::new();
        for _ in 0..2 {
            let answer = instance
                .call_place_order(&mut store, &wire)
                .await
                .expect("returns");
            seen.push(format!("{answer:?}"));
        }
        assert!(seen[0].contains(clean), "{seen:?}");
        assert!(
            seen[1].contains("earlier calls 1, dirty bytes 3145728"),
            "a reused instance must show the earlier call's marks, or the probe proves nothing: {seen:?}"
        );
    }
}
