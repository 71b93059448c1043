//! The real `weir` binary exporting OpenTelemetry to a real OTLP/gRPC receiver, configured
//! only through the standard `OTEL_*` variables, as an operator would run it.
//!
//! The batch span processor and the metric reader are given long intervals
//! (`OTEL_BSP_SCHEDULE_DELAY`, `OTEL_METRIC_EXPORT_INTERVAL`), so whatever arrives got there
//! through the shutdown flush that SIGTERM triggers.
//!
//! A collector that is down (connection refused) or hung (accepts connections, never
//! answers: [`Blackhole`]) delays the exit only by the flush bound
//! (`telemetry.shutdown_timeout_ms` plus its margin), the process still exits 0, and the hung
//! one is named in the log (`TELEMETRY_FLUSH_TIMEOUT`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use weir_tests::otlp::{Attributes, Blackhole, Receiver};

use crate::support::{Weir, weir_command};

const ADMIN_TOKEN: &str = "otel-process-test-admin-token";

/// Start `weir serve` on ephemeral ports in a fresh data directory with `env`. The addresses
/// and the data directory come from `WEIR_LISTEN`, `WEIR_OPS_LISTEN` and `WEIR_DATA_DIR` (the
/// other process tests pass flags), so the environment path of those settings is covered.
async fn start(env: &[(&str, String)]) -> Weir {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = weir_command();
    cmd.arg("serve")
        .env("WEIR_LISTEN", "127.0.0.1:0")
        .env("WEIR_OPS_LISTEN", "127.0.0.1:0")
        .env("WEIR_DATA_DIR", dir.path().join("data"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    Weir::spawn_in(cmd, Some(dir)).await
}

fn otlp_env(receiver: &Receiver) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "600000".to_owned()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "600000".to_owned()),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "team=orders-otel-test".to_owned(),
        ),
        ("WEIR__ENVIRONMENT", "proc-test".to_owned()),
        ("WEIR__REGION", "eu-proc-1".to_owned()),
        ("WEIR_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
    ]
}

fn order(customer: &str, sku: &str) -> Value {
    crate::support::order_body(customer, sku)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_all_signals_with_one_resource_and_the_ratio_changes_at_runtime() {
    let receiver = Receiver::start().await;
    let weir = start(&otlp_env(&receiver)).await;
    let c = reqwest::Client::new();
    let sampling = format!("{}/admin/telemetry/sampling", weir.ops);

    // /infoz shows the live ratio and what is exported.
    let info = weir.ops_json("/infoz").await;
    assert_eq!(info["telemetry"]["sampling"]["ratio"], 1.0, "{info}");
    assert_eq!(
        info["telemetry"]["export"],
        json!({"traces": true, "metrics": true, "logs": true})
    );

    // The admin endpoint needs the bearer token.
    let res = c.get(&sampling).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let res = c
        .put(&sampling)
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"ratio": 1.5}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422, "an out-of-range ratio is refused");

    // Ratio 0 at runtime: a root request is not sampled.
    let res = c
        .put(&sampling)
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"ratio": 0.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let answer: Value = res.json().await.unwrap();
    assert_eq!(answer["previous_ratio"], 1.0, "{answer}");
    assert_eq!(answer["ratio"], 0.0, "{answer}");
    let info = weir.ops_json("/infoz").await;
    assert_eq!(info["telemetry"]["sampling"]["ratio"], 0.0, "{info}");
    let dropped = format!("dropped-{}", uuid::Uuid::new_v4().simple());
    let res = c
        .post(format!("{}/v1/orders", weir.api))
        .header("Idempotency-Key", &dropped)
        .header("X-Request-Id", &dropped)
        .json(&order("cus_otel", "KB-001"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);

    // Back to 1: sampled again. The last request is a rejection whose problem names its trace.
    c.put(&sampling)
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"ratio": 1.0}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let kept = format!("kept-{}", uuid::Uuid::new_v4().simple());
    let res = c
        .post(format!("{}/v1/orders", weir.api))
        .header("Idempotency-Key", &kept)
        .header("X-Request-Id", &kept)
        .json(&order("cus_otel", "KB-001"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = c
        .post(format!("{}/v1/orders", weir.api))
        .header("Idempotency-Key", "rejected")
        .json(&order("cus_otel", "NOPE-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let problem: Value = res.json().await.unwrap();
    let trace_id = problem["trace_id"].as_str().unwrap().to_owned();

    // Nothing was due for export yet (long intervals): SIGTERM must flush it all.
    let (status, stdout) = weir.terminate().await;
    assert!(status.success(), "weir exited with {status}");

    let wait = Duration::from_secs(10);
    let received = receiver
        .wait_for("spans, metrics and logs of the run", wait, |r| {
            let root = |id: &str| {
                r.spans.iter().any(|s| {
                    s.name() == "http.server" && s.attr("request_id").as_deref() == Some(id)
                })
            };
            (root(&kept)
                && r.trace(&trace_id).iter().any(|s| s.name() == "http.server")
                && r.metrics
                    .iter()
                    .any(|m| m.name == "weir.plugin.invocations")
                && r.logs.iter().any(|l| l.trace_id() == trace_id))
            .then(|| r.clone())
        })
        .await;

    // The runtime ratio change took effect both ways.
    assert!(
        !received
            .spans
            .iter()
            .any(|s| s.attr("request_id").as_deref() == Some(dropped.as_str())),
        "a root request at ratio 0 must not be exported"
    );

    // One resource for all three signals.
    let span_resource = received.spans[0].resource.clone();
    let expect = BTreeMap::from([
        ("service.name", "weir"),
        ("deployment.environment.name", "proc-test"),
        ("deployment.environment", "proc-test"),
        ("cloud.region", "eu-proc-1"),
        ("team", "orders-otel-test"),
    ]);
    for (k, v) in expect {
        assert_eq!(span_resource.get(k).map(String::as_str), Some(v), "{k}");
    }
    for k in ["service.version", "service.instance.id"] {
        assert!(span_resource.contains_key(k), "{k}: {span_resource:?}");
    }
    let same = |what: &str, r: &Attributes| {
        assert_eq!(r, &span_resource, "{what} resource differs from the spans'");
    };
    for s in &received.spans {
        same("span", &s.resource);
    }
    for m in &received.metrics {
        same("metric", &m.resource);
    }
    for l in &received.logs {
        same("log record", &l.resource);
    }

    // The plugin's own log call is a log record inside its import span of the same trace.
    let kept_trace = received
        .spans
        .iter()
        .find(|s| s.name() == "http.server" && s.attr("request_id").as_deref() == Some(&kept))
        .map(|s| s.trace_id())
        .unwrap();
    let plugin_log = received
        .logs
        .iter()
        .find(|l| l.body() == "order priced" && l.trace_id() == kept_trace)
        .expect("the plugin's `order priced` log record, correlated with the request's trace");
    let emit = received
        .trace(&kept_trace)
        .into_iter()
        .find(|s| s.span_id() == plugin_log.span_id())
        .expect("the log record's span is in the trace");
    assert_eq!(emit.name(), "plugin.import.log.emit");

    // The problem's trace id is the exported trace's, on the log record and the stdout line.
    let record = received
        .logs
        .iter()
        .find(|l| l.trace_id() == trace_id && l.body().contains("request failed"))
        .expect("an OTLP log record of the failed request correlated with its trace");
    assert_eq!(record.span_id().len(), 16);
    let line = stdout
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "request failed" && l["code"] == "ORDER_REJECTED")
        .unwrap_or_else(|| panic!("a stdout line for the rejection: {stdout:#?}"));
    assert_eq!(line["trace_id"], trace_id.as_str(), "{line}");
    assert_eq!(line["span_id"].as_str().map(str::len), Some(16), "{line}");
    assert!(line["request_id"].is_string(), "{line}");
    assert!(
        stdout.iter().any(|l| l.contains("telemetry flushed")),
        "the shutdown logs the flush: {stdout:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_exported_and_nothing_complains() {
    let weir = start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", String::new()),
        ("WEIR_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
    ])
    .await;
    let c = reqwest::Client::new();
    let info = weir.ops_json("/infoz").await;
    assert_eq!(
        info["telemetry"]["export"],
        json!({"traces": false, "metrics": false, "logs": false}),
        "{info}"
    );
    let res = c
        .post(format!("{}/v1/orders", weir.api))
        .header("Idempotency-Key", "k")
        .json(&order("cus_quiet", "NOPE-1"))
        .send()
        .await
        .unwrap();
    let problem: Value = res.json().await.unwrap();
    let trace_id = problem["trace_id"].as_str().unwrap().to_owned();

    let (status, stdout) = weir.terminate().await;
    assert!(status.success(), "weir exited with {status}");
    // Logs still carry the (real, unexported) trace id.
    assert!(
        stdout
            .iter()
            .any(|l| l.contains("request failed") && l.contains(&trace_id)),
        "{stdout:#?}"
    );
    let noisy: Vec<_> = stdout
        .iter()
        .filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\""))
        // The loopback default's one deliberate warning (authentication is off).
        .filter(|l| !l.contains("authentication is off"))
        .collect();
    assert!(
        noisy.is_empty(),
        "no warnings without an endpoint: {noisy:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_is_the_default_protocol_and_exports_while_running() {
    let receiver = Receiver::start().await;
    let weir = start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.http_endpoint()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", String::new()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ])
    .await;
    let id = format!("http-{}", uuid::Uuid::new_v4().simple());
    let res = reqwest::Client::new()
        .post(format!("{}/v1/orders", weir.api))
        .header("Idempotency-Key", &id)
        .header("X-Request-Id", &id)
        .json(&order("cus_http", "KB-001"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    // Exported by the batch processor while running, not only at shutdown.
    let trace_id = receiver
        .wait_for(
            "the request's root span over OTLP/HTTP",
            Duration::from_secs(20),
            |r| {
                r.spans
                    .iter()
                    .find(|s| {
                        s.name() == "http.server" && s.attr("request_id").as_deref() == Some(&id)
                    })
                    .map(|s| s.trace_id())
            },
        )
        .await;
    let (status, _) = weir.terminate().await;
    assert!(status.success(), "weir exited with {status}");
    receiver
        .wait_for(
            "metrics and logs over OTLP/HTTP",
            Duration::from_secs(10),
            |r| {
                (r.trace(&trace_id)
                    .iter()
                    .any(|s| s.name() == "plugin.invoke")
                    && !r.metrics.is_empty()
                    && !r.logs.is_empty())
                .then_some(())
            },
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_delays_shutdown_only_by_the_flush_bound() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let weir = start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{closed}")),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_owned()),
        ("WEIR__TELEMETRY__SHUTDOWN_TIMEOUT_MS", "1000".to_owned()),
    ])
    .await;
    let res = reqwest::Client::new()
        .post(format!("{}/v1/orders", weir.api))
        .header("Idempotency-Key", "down")
        .json(&order("cus_down", "KB-001"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        201,
        "serving does not depend on the collector"
    );
    let started = std::time::Instant::now();
    let (status, stdout) = weir.terminate().await;
    assert!(status.success(), "weir exited with {status}");
    // Drain (nothing in flight) + a 1 s flush bound (+0.5 s margin); generous for slow CI.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert!(
        stdout.iter().any(|l| l.contains("shutdown complete")),
        "{stdout:#?}"
    );
}

/// `telemetry.shutdown_timeout_ms` of the hung-collector tests.
const FLUSH_TIMEOUT_MS: u64 = 1000;
/// The flush bound of `weir serve` for that timeout: the timeout plus the flush thread's
/// margin (`weir_host::telemetry::FLUSH_THREAD_MARGIN`, 500 ms).
const FLUSH_BOUND: Duration = Duration::from_millis(FLUSH_TIMEOUT_MS + 500);
/// Hang guard beyond the flush bound, from the `shutdown: drain complete` line to the exit.
const FLUSH_GUARD: Duration = Duration::from_secs(3);

/// A collector that accepts the exporter's connections and never answers, with an exporter
/// request timeout (`OTEL_EXPORTER_OTLP_TIMEOUT`) of ten minutes, so only the host's own
/// bound can end the flush: after SIGTERM the process exits 0 within the flush bound (plus a
/// hang guard) of the end of the drain, and logs the timeout with its code.
async fn a_hung_collector_delays_shutdown_only_by_the_flush_bound(protocol: &str) {
    let collector = Blackhole::start();
    let mut weir = start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_owned()),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "600000".to_owned()),
        // Nothing is exported while running: the spans wait for the exit's flush.
        ("OTEL_BSP_SCHEDULE_DELAY", "600000".to_owned()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "600000".to_owned()),
        (
            "WEIR__TELEMETRY__SHUTDOWN_TIMEOUT_MS",
            FLUSH_TIMEOUT_MS.to_string(),
        ),
    ])
    .await;
    let c = reqwest::Client::new();
    for i in 0..3 {
        let res = c
            .post(format!("{}/v1/orders", weir.api))
            .header("Idempotency-Key", format!("hung-{i}"))
            .json(&order("cus_hung", "KB-001"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            201,
            "serving does not depend on the collector"
        );
    }
    weir.signal("TERM");
    weir.wait_log("shutdown: drain complete").await;
    let drained = std::time::Instant::now();
    let code = weir
        .exit_code_within(
            FLUSH_BOUND + FLUSH_GUARD,
            "the telemetry flush bound plus a hang guard, from the end of the drain",
        )
        .await;
    let flushing = drained.elapsed();
    assert_eq!(code, Some(0), "clean exit despite the hung collector");
    assert!(
        collector.accepted() >= 1,
        "the exporter connected to the hung collector (else this tested a refused one)"
    );
    // Written before the exit; the reader may still be catching up with the pipe.
    weir.wait_log("shutdown complete").await;
    let timed_out = weir.log_line("telemetry flush did not finish in time");
    assert_eq!(
        timed_out["code"],
        weir_host::telemetry::FLUSH_TIMEOUT_CODE,
        "{timed_out}"
    );
    assert_eq!(timed_out["level"], "WARN", "{timed_out}");
    assert_eq!(
        timed_out["timeout_ms"].as_u64(),
        Some(FLUSH_TIMEOUT_MS),
        "{timed_out}"
    );
    eprintln!("{protocol}: exited {flushing:?} after the drain; {timed_out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_grpc_collector_delays_shutdown_only_by_the_flush_bound() {
    a_hung_collector_delays_shutdown_only_by_the_flush_bound("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_http_collector_delays_shutdown_only_by_the_flush_bound() {
    a_hung_collector_delays_shutdown_only_by_the_flush_bound("http/protobuf").await;
}
