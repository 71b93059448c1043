//! OpenTelemetry traces verified against a real OTLP/gRPC receiver (`weir_tests::otlp`).
//!
//! The tests of this module share one pipeline, installed as this test binary's global
//! subscriber the first time one of them runs, exporting to one receiver; both live on a
//! runtime of their own so they outlive any single test. (Per-test thread-local subscribers
//! are not reliable with parallel tests: `tracing` caches callsite interest globally.) Each
//! test starts its own server and finds its own spans by request id or trace id, so the tests
//! stay independent while running in parallel with each other and with the rest of the suite
//! (whose spans are exported too, and ignored). Process-wide behaviour (the real `weir`
//! binary, `OTEL_*` variables, metrics and logs, the admin ratio change, SIGTERM flush) is
//! tested in `host/tests/process/otel.rs`.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};
use tracing_subscriber::layer::SubscriberExt;
use weir_host::telemetry::{Export, SamplingConfig, Telemetry, TelemetryOptions, TrustIncoming};
use weir_tests::otlp::{Received, ReceivedSpan, Receiver};

use crate::support::{Backend, TestServer, order_body, plugin_dir};

const WAIT: Duration = Duration::from_secs(20);

/// Root sampling of the shared pipeline: everything, except roots of `/v1/products` (whose
/// callers are trusted: their sampled flag wins) and of `/v1/events` (untrusted: the ratio
/// decides whatever the caller says). Every other route is untrusted at ratio 1.
const DROPPED_ROUTE: &str = "/v1/products";
const UNTRUSTED_DROPPED_ROUTE: &str = "/v1/events";

struct Pipeline {
    receiver: Receiver,
    telemetry: Telemetry,
    _runtime: tokio::runtime::Runtime,
}

fn pipeline() -> &'static Pipeline {
    static PIPELINE: OnceLock<Pipeline> = OnceLock::new();
    PIPELINE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("telemetry test runtime");
        // Built inside the runtime: the receiver and the gRPC exporter's channel run on it.
        let (receiver, telemetry) = std::thread::scope(|s| {
            s.spawn(|| {
                runtime.block_on(async {
                    let receiver = Receiver::start().await;
                    let telemetry = Telemetry::build(&TelemetryOptions {
                        service_name: "weir-telemetry-test".to_owned(),
                        service_version: "9.9.9-test".to_owned(),
                        instance_id: uuid::Uuid::new_v4().to_string(),
                        environment: "ci".to_owned(),
                        region: Some("eu-test-1".to_owned()),
                        sampling: SamplingConfig {
                            ratio: 1.0,
                            routes: BTreeMap::from([
                                (DROPPED_ROUTE.to_owned(), 0.0),
                                (UNTRUSTED_DROPPED_ROUTE.to_owned(), 0.0),
                            ]),
                            trust_incoming: TrustIncoming::Routes(
                                [DROPPED_ROUTE.to_owned()].into(),
                            ),
                        },
                        export: Export::Grpc(receiver.endpoint()),
                        meter_provider: false,
                    })
                    .expect("telemetry pipeline");
                    (receiver, telemetry)
                })
            })
            .join()
            .expect("pipeline set-up")
        });
        tracing::subscriber::set_global_default(
            tracing_subscriber::registry().with(telemetry.layer()),
        )
        .expect("no other global subscriber in this test binary");
        Pipeline {
            receiver,
            telemetry,
            _runtime: runtime,
        }
    })
}

struct Traced {
    receiver: &'static Receiver,
    telemetry: &'static Telemetry,
    server: TestServer,
}

impl Traced {
    async fn start() -> Self {
        Self::start_with(|_, _| {}).await
    }

    async fn start_with(
        tweak: impl FnOnce(&mut weir_host::server::config::Config, &std::path::Path),
    ) -> Self {
        let p = pipeline();
        let server = TestServer::start(Backend::Sqlite, tweak).await;
        Self {
            receiver: &p.receiver,
            telemetry: &p.telemetry,
            server,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base)
    }

    /// Flush, then wait for a trace holding spans with all of `names`.
    async fn trace_with(&self, what: &str, trace_id: &str, names: &[&str]) -> Vec<ReceivedSpan> {
        self.telemetry.flush().await;
        self.receiver
            .wait_for(what, WAIT, |r: &Received| {
                let spans = r.trace(trace_id);
                names
                    .iter()
                    .all(|n| spans.iter().any(|s| s.name() == *n))
                    .then_some(spans)
            })
            .await
    }

    /// Flush, then wait for the `http.server` span of the request with `request_id`.
    async fn root_of(&self, request_id: &str) -> ReceivedSpan {
        self.telemetry.flush().await;
        self.receiver
            .wait_for(&format!("the root span of {request_id}"), WAIT, |r| {
                r.spans
                    .iter()
                    .find(|s| {
                        s.name() == "http.server"
                            && s.attr("request_id").as_deref() == Some(request_id)
                    })
                    .cloned()
            })
            .await
    }
}

fn one<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found: Vec<_> = spans.iter().filter(|s| s.name() == name).collect();
    assert_eq!(found.len(), 1, "exactly one {name} span: {spans:#?}");
    found[0]
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn one_order_is_one_trace_with_the_span_tree_and_the_resource() {
    let t = Traced::start().await;
    let request_id = unique("req");
    let res = t
        .server
        .client
        .post(t.url("/v1/orders"))
        .header("Idempotency-Key", unique("key"))
        .header("X-Request-Id", &request_id)
        .json(&order_body("cus_trace", &[("KB-001", 1), ("MS-002", 2)]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);

    let root = t.root_of(&request_id).await;
    let trace_id = root.trace_id();
    let spans = t
        .trace_with(
            "the whole POST /v1/orders trace",
            &trace_id,
            &[
                "http.server",
                "idempotency.lookup",
                "plugin.invoke",
                "plugin.import.catalog.get",
                "db.product.get",
                "db.transaction.create_order",
            ],
        )
        .await;

    // Root: a server span without a parent, carrying route template, method, status, id.
    let root = one(&spans, "http.server");
    assert_eq!(root.parent_id(), "", "the root has no parent");
    assert_eq!(root.span.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(root.attr("http.route").as_deref(), Some("/v1/orders"));
    assert_eq!(root.attr("http.request.method").as_deref(), Some("POST"));
    assert_eq!(
        root.int_attr("http.response.status_code"),
        Some(201),
        "the status code an integer attribute, as the semantic conventions type it: {:?}",
        root.attr("http.response.status_code")
    );
    assert_eq!(
        root.attr("request_id").as_deref(),
        Some(request_id.as_str())
    );

    // Children of the root: the idempotency lookup, the plugin call, the transaction.
    let lookup = one(&spans, "idempotency.lookup");
    assert_eq!(lookup.parent_id(), root.span_id());
    assert_eq!(
        lookup.attr("idempotency.outcome").as_deref(),
        Some("started")
    );
    assert_eq!(lookup.attr("db.system.name").as_deref(), Some("sqlite"));
    let invoke = one(&spans, "plugin.invoke");
    assert_eq!(invoke.parent_id(), root.span_id());
    assert_eq!(invoke.attr("plugin.name").as_deref(), Some("orders"));
    assert_eq!(invoke.attr("outcome").as_deref(), Some("ok"));
    for key in ["plugin.version", "plugin.digest", "plugin.function"] {
        assert!(invoke.attr(key).is_some(), "plugin.invoke lacks {key}");
    }
    // The call's times are integer attributes (a backend can sum and compare them), not text.
    for key in ["instance_wait_us", "instantiate_us", "duration_us"] {
        assert!(
            invoke.int_attr(key).is_some_and(|us| us >= 0),
            "plugin.invoke {key} not an integer: {:?}",
            invoke.attr(key)
        );
    }
    let tx = one(&spans, "db.transaction.create_order");
    assert_eq!(tx.parent_id(), root.span_id());
    assert_eq!(tx.span.kind, 3, "SPAN_KIND_CLIENT");
    assert!(
        lookup.span.end_time_unix_nano <= invoke.span.start_time_unix_nano
            && invoke.span.end_time_unix_nano <= tx.span.start_time_unix_nano,
        "lookup, then plugin, then transaction"
    );

    // Every host import is a child of the invocation; the catalog reads reach the database.
    let imports: Vec<_> = spans
        .iter()
        .filter(|s| s.name().starts_with("plugin.import."))
        .collect();
    let catalog_gets = imports
        .iter()
        .filter(|s| s.name() == "plugin.import.catalog.get")
        .count();
    assert_eq!(catalog_gets, 2, "one catalog.get per line: {imports:#?}");
    for import in &imports {
        assert_eq!(import.parent_id(), invoke.span_id(), "{}", import.name());
    }
    let by_id: BTreeMap<String, &ReceivedSpan> = spans.iter().map(|s| (s.span_id(), s)).collect();
    for db in spans.iter().filter(|s| s.name() == "db.product.get") {
        let mut cur = db.parent_id();
        let mut chain = Vec::new();
        while let Some(p) = by_id.get(&cur) {
            chain.push(p.name().to_owned());
            cur = p.parent_id();
        }
        assert!(
            chain.first().is_some_and(|n| n != "http.server")
                && chain.iter().any(|n| n == "plugin.import.catalog.get")
                && chain.last().map(String::as_str) == Some("http.server"),
            "db.product.get must descend from plugin.import.catalog.get: {chain:?}"
        );
    }

    // Every span of the trace: one trace id, the same resource.
    for s in &spans {
        assert_eq!(s.trace_id(), trace_id);
        assert_eq!(s.scope, "weir");
        let r = &s.resource;
        assert_eq!(
            r.get("service.name").map(String::as_str),
            Some("weir-telemetry-test")
        );
        assert_eq!(
            r.get("service.version").map(String::as_str),
            Some("9.9.9-test")
        );
        assert_eq!(
            r.get("deployment.environment.name").map(String::as_str),
            Some("ci")
        );
        assert_eq!(r.get("cloud.region").map(String::as_str), Some("eu-test-1"));
        assert!(r.contains_key("service.instance.id"), "{r:?}");
    }

    // The outbox row carries the W3C context of this trace for the relay to continue it.
    let events: Value = t
        .server
        .client
        .get(t.url("/v1/events"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tp = events["items"]
        .as_array()
        .and_then(|items| items.iter().find_map(|e| e["traceparent"].as_str()))
        .unwrap_or_else(|| panic!("an outbox event with a traceparent: {events}"));
    assert_eq!(&tp[3..35], trace_id, "outbox traceparent {tp}");
    assert!(tp.ends_with("-01"), "sampled: {tp}");
}

#[tokio::test]
async fn the_problem_trace_id_is_the_exported_trace() {
    let t = Traced::start().await;
    let res = t
        .server
        .client
        .post(t.url("/v1/orders"))
        .header("Idempotency-Key", unique("key"))
        .json(&order_body("cus_trace", &[("NOPE-1", 1)]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "ORDER_REJECTED");
    let trace_id = problem["trace_id"].as_str().unwrap().to_owned();

    let spans = t
        .trace_with(
            "the trace named by the problem body",
            &trace_id,
            &["http.server", "plugin.invoke"],
        )
        .await;
    let root = one(&spans, "http.server");
    assert_eq!(root.attr("error.type").as_deref(), Some("ORDER_REJECTED"));
    assert_eq!(
        root.attr("http.response.status_code").as_deref(),
        Some("422")
    );
    // An expected (4xx) outcome is not a server error.
    assert_ne!(root.span.status.as_ref().map(|s| s.code), Some(2));
    let invoke = one(&spans, "plugin.invoke");
    assert_eq!(invoke.attr("outcome").as_deref(), Some("rejected"));

    // An error detected at the edge (no plugin call): its code is on the root span.
    let res = t
        .server
        .client
        .post(t.url("/v1/orders"))
        .header("Idempotency-Key", unique("key"))
        .json(&json!({"customer_id": "c"}))
        .send()
        .await
        .unwrap();
    let problem: Value = res.json().await.unwrap();
    let trace_id = problem["trace_id"].as_str().unwrap().to_owned();
    let spans = t
        .trace_with("the schema error trace", &trace_id, &["http.server"])
        .await;
    let root = one(&spans, "http.server");
    assert_eq!(
        root.attr("error.type").as_deref(),
        problem["code"].as_str(),
        "{problem}"
    );
}

#[tokio::test]
async fn a_callers_sampled_flag_wins_only_on_trusted_routes() {
    let t = Traced::start().await;
    let c = &t.server.client;
    let traceparent =
        |trace_id: &str, flags: &str| format!("00-{trace_id}-00f067aa0ba902b7-{flags}");

    // Untrusted route at ratio 0: `-01` on every request exports nothing, and each request
    // keeps the caller's trace id (the problem names it).
    let mut forced = Vec::new();
    for _ in 0..20 {
        let trace_id = uuid::Uuid::new_v4().simple().to_string();
        let res = c
            .get(t.url("/v1/events?limit=0"))
            .header("traceparent", traceparent(&trace_id, "01"))
            .send()
            .await
            .unwrap();
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["trace_id"], trace_id.as_str(), "{problem}");
        forced.push(trace_id);
    }

    // Untrusted route at ratio 1: `-00` does not hide the request; still the caller's trace,
    // with the caller's span as parent.
    let hidden = "4bf92f3577b34da6a3ce929d0e0e4736";
    let res = c
        .get(t.url("/v1/orders/not-a-uuid"))
        .header("traceparent", traceparent(hidden, "00"))
        .send()
        .await
        .unwrap();
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["trace_id"], hidden, "{problem}");

    // A root on the trusted route (ratio 0): not exported.
    let products_id = unique("products");
    let res = c
        .get(t.url("/v1/products"))
        .header("X-Request-Id", &products_id)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // Trusted route: `-01` is continued, with the caller's span as parent, despite ratio 0.
    let sampled = "0af7651916cd43dd8448eb211c80319c";
    let res = c
        .get(t.url("/v1/products"))
        .header("traceparent", format!("00-{sampled}-b7ad6b7169203331-01"))
        .header("tracestate", "vendor=abc")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let spans = t
        .trace_with("the continued trace", sampled, &["http.server"])
        .await;
    let root = one(&spans, "http.server");
    assert_eq!(root.parent_id(), "b7ad6b7169203331");
    assert_eq!(root.span.trace_state, "vendor=abc");

    // Everything sent before the last flush has arrived by now.
    let received = t.receiver.received();
    for trace_id in &forced {
        assert!(
            received.trace(trace_id).is_empty(),
            "an untrusted `-01` at ratio 0 must not be exported: {:#?}",
            received.trace(trace_id)
        );
    }
    let spans = t
        .trace_with(
            "the request that asked not to be sampled",
            hidden,
            &["http.server"],
        )
        .await;
    assert_eq!(one(&spans, "http.server").parent_id(), "00f067aa0ba902b7");
    assert!(
        !received
            .spans
            .iter()
            .any(|s| s.attr("request_id").as_deref() == Some(products_id.as_str())),
        "the 0-ratio route override must drop root traces"
    );
}

#[tokio::test]
async fn a_malformed_request_id_is_replaced_and_only_its_hash_is_recorded() {
    let t = Traced::start().await;
    let c = &t.server.client;
    let sent = format!("{}-{}", "x".repeat(64), uuid::Uuid::new_v4().simple());
    let res = c
        .get(t.url("/v1/products"))
        .header("X-Request-Id", &sent)
        .header(
            "traceparent",
            format!("00-{}-00f067aa0ba902b7-01", uuid::Uuid::new_v4().simple()),
        )
        .send()
        .await
        .unwrap();
    let replaced = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(replaced, sent);
    assert!(
        weir_host::http::context::valid_request_id(replaced.as_bytes()),
        "{replaced}"
    );
    // On the trusted route the caller's `-01` exports the span.
    let root = t.root_of(&replaced).await;
    assert_eq!(
        root.attr("http.request.original_id_hash").as_deref(),
        Some(weir_host::http::context::original_id_hash(sent.as_bytes()).as_str())
    );
    assert!(
        !format!("{:?}", root.span).contains(&sent),
        "the refused id itself must not be recorded"
    );

    // A well-formed id is kept, with no hash.
    let kept = unique("ok");
    let res = c
        .get(t.url("/v1/orders"))
        .header("X-Request-Id", &kept)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], kept.as_str());
    let root = t.root_of(&kept).await;
    assert_eq!(root.attr("http.request.original_id_hash"), None);
}

#[tokio::test]
async fn a_plugin_trap_is_recorded_once_on_the_span_that_saw_it() {
    let t = Traced::start_with(|c, dir| {
        c.plugins.dir = Some(plugin_dir(dir, &[weir_plugin_artifacts::HOSTILE_PANIC]));
        c.plugins.orders = "hostile-panic".into();
    })
    .await;
    let res = t
        .server
        .client
        .post(t.url("/v1/orders"))
        .header("Idempotency-Key", unique("key"))
        .json(&order_body("cus_trap", &[("KB-001", 1)]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "PLUGIN_TRAPPED");
    let trace_id = problem["trace_id"].as_str().unwrap().to_owned();
    let spans = t
        .trace_with(
            "the trapped request's trace",
            &trace_id,
            &["http.server", "plugin.invoke"],
        )
        .await;
    let exceptions = |s: &ReceivedSpan| -> Vec<BTreeMap<String, String>> {
        s.span
            .events
            .iter()
            .filter(|e| e.name == "exception")
            .map(|e| weir_tests::otlp::attributes(&e.attributes))
            .collect()
    };
    // The invocation detected it: ERROR status and one exception event with the kind.
    let invoke = one(&spans, "plugin.invoke");
    assert_eq!(
        invoke.span.status.as_ref().map(|s| s.code),
        Some(2),
        "ERROR"
    );
    let ex = exceptions(invoke);
    assert_eq!(ex.len(), 1, "{ex:?}");
    assert_eq!(
        ex[0].get("exception.type").map(String::as_str),
        Some("trap")
    );
    assert!(ex[0].contains_key("exception.message"), "{ex:?}");
    // The root reports the failed request (status, code) without repeating the exception.
    let root = one(&spans, "http.server");
    assert_eq!(root.span.status.as_ref().map(|s| s.code), Some(2), "ERROR");
    assert_eq!(root.attr("error.type").as_deref(), Some("PLUGIN_TRAPPED"));
    assert!(exceptions(root).is_empty(), "{:?}", exceptions(root));
}

#[tokio::test]
async fn the_tenant_and_the_kind_of_credential_are_on_the_root_span() {
    const ADMIN: &str = "admin-token-for-telemetry-test";
    let t = Traced::start_with(|c, _| {
        c.admin_token = Some(weir_host::server::config::Secret::new(ADMIN));
        c.auth.mode = Some(weir_host::auth::AuthMode::ApiKeys);
    })
    .await;
    let key = t.server.api_key(ADMIN, "acme").await;
    let request_id = unique("tenant");
    let res = t
        .server
        .client
        .get(t.url("/v1/orders"))
        .bearer_auth(&key)
        .header("X-Request-Id", &request_id)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let root = t.root_of(&request_id).await;
    assert_eq!(root.attr("weir.tenant").as_deref(), Some("acme"));
    assert_eq!(root.attr("weir.auth").as_deref(), Some("api_key"));
    assert!(
        !format!("{:?}", root.span).contains(&key[22..]),
        "the key is not recorded"
    );
}
