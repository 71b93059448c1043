//! Case recording through the admin API, in process: what a case holds (the request as the
//! plugin saw it, redacted; the catalog answers; the decision and its version), the bounds
//! (`max_cases`, the window, the sample), the admin API's refusals, and a replay of the
//! exported file that reproduces every recorded decision without a database.

use std::time::Duration;

use serde_json::{Value, json};
use weir_host::server::config::Secret;
use weir_plugin_artifacts as artifacts;

use crate::support::{Backend, TestServer, eventually, metric, order_body, patient};

const TOKEN: &str = "cases-tests-admin-token-000001";

async fn admin(
    s: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = s
        .client
        .request(method, format!("{}{path}", s.ops))
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("admin request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn start(s: &TestServer, spec: Value) -> Value {
    let (status, v) = admin(s, reqwest::Method::PUT, "/admin/recording", Some(spec)).await;
    assert_eq!(status, 200, "{v}");
    v["recording"].clone()
}

async fn status(s: &TestServer) -> Value {
    admin(s, reqwest::Method::GET, "/admin/recording", None)
        .await
        .1["recording"]
        .clone()
}

async fn cases(s: &TestServer) -> Value {
    let (status, v) = admin(s, reqwest::Method::GET, "/admin/recording/cases", None).await;
    assert_eq!(status, 200, "{v}");
    v
}

fn server_config(c: &mut weir_host::server::config::Config) {
    c.admin_token = Some(Secret::new(TOKEN));
    patient(c);
}

#[tokio::test]
async fn a_recorded_case_holds_what_the_plugin_saw_and_replays_to_the_same_decision() {
    let s = TestServer::start(Backend::Sqlite, |c, _| server_config(c)).await;
    assert_eq!(
        status(&s).await,
        Value::Null,
        "no recording before one is started"
    );
    let recording = start(&s, json!({"max_cases": 3})).await;
    assert_eq!(
        (
            &recording["active"],
            &recording["kept"],
            &recording["redact"]
        ),
        (&json!(true), &json!(0), &json!(true))
    );

    let mut placed = order_body("cus_secret_alice", &[("KB-001", 1), ("CB-004", 2)]);
    placed["metadata"] = json!({"gift_note": "happy birthday alice"});
    let (code, _, order) = s.post_order(Some("rec-1"), &placed).await;
    assert_eq!(code, 201, "{order}");
    let (code, _, refused) = s
        .post_order(
            Some("rec-2"),
            &order_body("cus_secret_alice", &[("NOPE-1", 1)]),
        )
        .await;
    assert_eq!(code, 422, "{refused}");
    let (code, cancelled) = s.cancel(order["id"].as_str().unwrap()).await;
    assert_eq!(code, 200, "{cancelled}");
    // The recording is full: a fourth call is dropped and counted.
    let (code, _, _) = s
        .post_order(
            Some("rec-3"),
            &order_body("cus_secret_alice", &[("CB-004", 1)]),
        )
        .await;
    assert_eq!(code, 201);

    let st = status(&s).await;
    assert_eq!(
        (&st["kept"], &st["dropped_full"], &st["active"]),
        (&json!(3), &json!(1), &json!(false)),
        "{st}"
    );
    let file = cases(&s).await;
    let text = file.to_string();
    for secret in ["cus_secret_alice", "happy birthday"] {
        assert!(!text.contains(secret), "{secret} redacted: {text}");
    }
    assert_eq!(file["format"], "weir.cases/1");
    let all = file["cases"].as_array().unwrap();
    assert_eq!(all.len(), 3, "{file:#}");

    // The priced order: the request as the plugin saw it (redacted), each catalog answer, the
    // decision the client got and the version that made it.
    let first = &all[0];
    let request = &first["call"]["place-order"]["request"];
    let customer = request["customer_id"].as_str().unwrap();
    assert!(
        customer.starts_with("cus_") && customer.len() == "cus_secret_alice".len(),
        "a pseudonym of the same shape: {request}"
    );
    assert_eq!(
        request["metadata"]["gift_note"].as_str().unwrap().len(),
        "happy birthday alice".len()
    );
    assert_eq!(
        request["lines"],
        json!([{"sku": "KB-001", "quantity": 1}, {"sku": "CB-004", "quantity": 2}])
    );
    let skus: Vec<&str> = first["catalog"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["sku"].as_str().unwrap())
        .collect();
    assert_eq!(skus, ["KB-001", "CB-004"]);
    let kb = &first["catalog"][0]["product"];
    assert_eq!(kb["unit_price"], json!({"amount": 8900, "currency": "EUR"}));
    assert!(
        first["config"].as_array().is_some_and(|c| !c.is_empty()),
        "config reads: {first}"
    );
    let priced = &first["decision"]["priced"];
    assert_eq!(priced["total"]["amount"], order["total"], "{first}");
    assert_eq!(
        first["decided_by"]["digest"],
        format!("sha256:{}", order["plugin"]["digest"].as_str().unwrap())
    );
    assert_eq!(
        all[1]["decision"]["refused"]["rejected"]["reason"],
        "UNKNOWN_SKU"
    );
    assert_eq!(
        all[1]["catalog"],
        json!([{"sku": "NOPE-1"}]),
        "a none answer is recorded as such"
    );
    let transition = &all[2]["call"]["transition"];
    assert_eq!(
        (&transition["order"]["status"], &transition["event"]),
        (&json!("placed"), &json!("cancel-requested"))
    );
    assert_eq!(all[2]["decision"], json!({"status": "cancelled"}));

    // Replayed offline (an engine with an empty catalog and no database): every decision is
    // the recorded one, so the catalog answers came from the cases.
    let path = s.dir.path().join("recorded.json");
    std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
    let report = weir_host::cli::cases::test(std::path::Path::new(artifacts::ORDERS), &path, None)
        .await
        .unwrap();
    assert!(report.passed(), "{report}");
    for (result, case) in report.results.iter().zip(all) {
        assert_eq!(
            serde_json::to_value(&result.run.decision).unwrap(),
            case["decision"],
            "{report}"
        );
        assert!(result.run.unscripted.is_empty(), "{report}");
    }
    let m = s.metrics().await;
    // At least: the meter is the process's, shared with the other tests of this binary.
    assert!(
        metric(
            &m,
            "weir_plugin_cases_recorded_total",
            &[("outcome", "kept")]
        ) >= 3.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "weir_plugin_cases_recorded_total",
            &[("outcome", "dropped_full")]
        ) >= 1.0
    );

    let (code, stopped) = admin(&s, reqwest::Method::DELETE, "/admin/recording", None).await;
    assert_eq!((code, &stopped["recording"]["kept"]), (200, &json!(3)));
    assert_eq!(status(&s).await, Value::Null);
    assert_eq!(cases(&s).await["cases"], json!([]));
    s.stop().await;
}

#[tokio::test]
async fn a_recording_ends_with_its_window_samples_and_refuses_bad_specs() {
    let s = TestServer::start(Backend::Sqlite, |c, _| server_config(c)).await;

    // Every call is either kept or sampled out; nothing else happens to it.
    start(&s, json!({"sample_percent": 30, "max_cases": 100})).await;
    for i in 0..20 {
        let (code, _, b) = s
            .post_order(
                Some(&format!("sample-{i}")),
                &order_body("cus_sample", &[("CB-004", 1)]),
            )
            .await;
        assert_eq!(code, 201, "{b}");
    }
    let st = status(&s).await;
    let (kept, out) = (
        st["kept"].as_u64().unwrap(),
        st["sampled_out"].as_u64().unwrap(),
    );
    assert_eq!(kept + out, 20, "{st}");
    assert!(
        kept < 20,
        "30% sampling kept all 20 calls (probability 0.3^20): {st}"
    );

    // A one-second window: once it is over, calls are no longer recorded.
    start(&s, json!({"window_seconds": 1, "redact": false})).await;
    eventually(
        "the one-second recording window to end",
        100,
        Duration::from_millis(50),
        || async { status(&s).await["active"] == json!(false) },
    )
    .await;
    let (code, _, _) = s
        .post_order(Some("late"), &order_body("cus_late", &[("CB-004", 1)]))
        .await;
    assert_eq!(code, 201);
    assert_eq!(status(&s).await["kept"], 0);

    // Refusals: out of range, unknown field, malformed, no token.
    for (body, field) in [
        (json!({"sample_percent": 0}), "sample_percent"),
        (json!({"max_cases": 10_001}), "max_cases"),
        (json!({"window_seconds": 86_401}), "window_seconds"),
    ] {
        let (code, problem) = admin(&s, reqwest::Method::PUT, "/admin/recording", Some(body)).await;
        assert_eq!(
            (code, &problem["code"]),
            (422, &json!("REQUEST_SCHEMA_INVALID")),
            "{problem}"
        );
        assert!(
            problem["detail"].as_str().unwrap().contains(field),
            "{problem}"
        );
    }
    let (code, problem) = admin(
        &s,
        reqwest::Method::PUT,
        "/admin/recording",
        Some(json!({"sample": 5})),
    )
    .await;
    assert!((400..500).contains(&code), "{problem}");
    let res = s
        .client
        .put(format!("{}/admin/recording", s.ops))
        .body("{")
        .header("content-type", "application/json")
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = s
        .client
        .get(format!("{}/admin/recording/cases", s.ops))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    s.stop().await;
}
