//! Unexpected failures carry their context chain: one log line with the whole chain
//! (`context: cause: root cause`), one span error with the chain of the error where it was
//! detected, and an unchanged, generic problem body for the client.

use std::time::Duration;

use serde_json::Value;
use weir_tests::otlp::{Received, ReceivedSpan, Receiver};

use crate::support::{Weir, client, field, message, order_body, plugin_dir, serve};

/// The exception events (`exception.type`, `exception.message`) of a span.
fn exceptions(span: &ReceivedSpan) -> Vec<(String, String)> {
    span.span
        .events
        .iter()
        .filter(|e| e.name == "exception")
        .map(|e| {
            let a = weir_tests::otlp::attributes(&e.attributes);
            (
                a.get("exception.type").cloned().unwrap_or_default(),
                a.get("exception.message").cloned().unwrap_or_default(),
            )
        })
        .collect()
}

fn otlp(receiver: &Receiver, cmd: &mut tokio::process::Command) {
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100");
}

/// Log lines at WARN or ERROR.
fn loud(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| {
            matches!(
                l.get("level").and_then(Value::as_str),
                Some("WARN" | "ERROR")
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_cannot_be_opened_stops_start_up_with_the_chain() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1: the connection is refused.
    let mut cmd = serve(dir.path());
    cmd.env(
        "DATABASE_URL",
        "postgres://weir:start-secret@127.0.0.1:1/weir",
    )
    .env("WEIR__DATABASE__ACQUIRE_TIMEOUT_MS", "500");
    otlp(&receiver, &mut cmd);
    let out = tokio::time::timeout(crate::support::WAIT, cmd.output())
        .await
        .expect("weir exits when its database cannot be opened")
        .expect("run weir");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let chain = stderr
        .lines()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or_else(|| panic!("no error line on stderr: {stderr}"))
        .to_owned();
    assert!(
        chain.starts_with(
            "could not open the database at postgres://weir:[redacted]@127.0.0.1:1/weir: \
             cannot open the database: database unavailable: "
        ),
        "{chain}"
    );
    assert!(chain.to_lowercase().contains("refused"), "{chain}");
    assert!(!format!("{stdout}{stderr}").contains("start-secret"));

    let lines: Vec<String> = stdout.lines().map(str::to_owned).collect();
    let loud = loud(&lines);
    assert_eq!(loud.len(), 1, "one log line for the failure: {loud:#?}");
    assert_eq!(message(&loud[0]), "start-up failed");
    assert_eq!(
        field(&loud[0], "error").and_then(Value::as_str),
        Some(chain.as_str())
    );

    let start = receiver
        .wait_for(
            "the start-up span",
            Duration::from_secs(20),
            |r: &Received| r.spans.iter().find(|s| s.name() == "weir.start").cloned(),
        )
        .await;
    assert_eq!(start.span.status.as_ref().map(|s| s.code), Some(2), "ERROR");
    assert_eq!(
        exceptions(&start),
        vec![("STARTUP_FAILED".to_owned(), chain.clone())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_call_and_a_trapping_plugin_log_their_chain_once() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(dir.path(), &[weir_plugin_artifacts::HOSTILE_PANIC]);
    let data = dir.path().join("data");
    let mut cmd = serve(&data);
    cmd.env("WEIR__PLUGINS__DIR", &plugins)
        .env("WEIR__PLUGINS__ORDERS", "hostile-panic");
    otlp(&receiver, &mut cmd);
    let weir = Weir::spawn_in(cmd, Some(dir)).await;
    let c = client();

    // A trap: 500 PLUGIN_TRAPPED with the generic detail.
    let res = c
        .post(format!("{}/v1/orders", weir.api))
        .header("Idempotency-Key", "trap-1")
        .header("X-Request-Id", "req-trap")
        .json(&order_body("cus_chain", "KB-001"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "PLUGIN_TRAPPED");
    assert_eq!(
        problem["detail"],
        "The service failed to handle the request. Quote the request_id when reporting it."
    );
    let trap_trace = problem["trace_id"].as_str().unwrap().to_owned();

    // A store call failing: the products table disappears under the running service.
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", data.join("weir.db").display()))
        .await
        .unwrap();
    sqlx::query("DROP TABLE products")
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
    let res = c
        .get(format!("{}/v1/products", weir.api))
        .header("X-Request-Id", "req-store")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "INTERNAL_ERROR");
    assert_eq!(
        problem["detail"],
        "The service failed to handle the request. Quote the request_id when reporting it."
    );
    let store_trace = problem["trace_id"].as_str().unwrap().to_owned();

    let (status, stdout) = weir.terminate().await;
    assert!(status.success());
    let loud = loud(&stdout);
    let by_request = |id: &str| -> Vec<&Value> {
        loud.iter()
            .filter(|l| l.get("request_id").and_then(Value::as_str) == Some(id))
            .collect()
    };

    // Trap: one log line whose chain ends with the span's exception message.
    let lines = by_request("req-trap");
    assert_eq!(lines.len(), 1, "one log line for the trap: {lines:#?}");
    let logged = field(lines[0], "error").and_then(Value::as_str).unwrap();
    assert!(
        logged.starts_with("plugin trapped (unreachable): "),
        "{logged}"
    );
    assert!(logged.contains("wasm backtrace"), "{logged}");
    let received = receiver
        .wait_for("both traces", Duration::from_secs(20), |r: &Received| {
            let has = |t: &str, name: &str| r.trace(t).iter().any(|s| s.name() == name);
            (has(&trap_trace, "plugin.invoke") && has(&store_trace, "db.product.list"))
                .then(|| r.clone())
        })
        .await;
    let failed: Vec<(String, (String, String))> = received
        .trace(&trap_trace)
        .iter()
        .flat_map(|s| exceptions(s).into_iter().map(|e| (s.name().to_owned(), e)))
        .collect();
    assert_eq!(
        failed,
        vec![(
            "plugin.invoke".to_owned(),
            ("trap".to_owned(), logged.to_owned())
        )],
        "one span error, on the invocation, with the logged chain"
    );

    // Store: the log line is the request's context plus the chain the db span recorded.
    let lines = by_request("req-store");
    assert_eq!(
        lines.len(),
        1,
        "one log line for the store failure: {lines:#?}"
    );
    let logged = field(lines[0], "error").and_then(Value::as_str).unwrap();
    assert!(
        logged.starts_with("listing products: database error: "),
        "{logged}"
    );
    assert!(logged.contains("no such table: products"), "{logged}");
    let failed: Vec<(String, (String, String))> = received
        .trace(&store_trace)
        .iter()
        .flat_map(|s| exceptions(s).into_iter().map(|e| (s.name().to_owned(), e)))
        .collect();
    assert_eq!(failed.len(), 1, "{failed:#?}");
    let (span, (code, chain)) = &failed[0];
    assert_eq!(
        (span.as_str(), code.as_str()),
        ("db.product.list", "INTERNAL_ERROR")
    );
    assert_eq!(
        logged,
        format!("listing products: {chain}"),
        "the log line is the request's context over the span's chain"
    );
}
