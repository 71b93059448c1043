//! Recorded cases with the real binary: an author records real requests on a running `weir`
//! (`weir plugin cases start|status|export`), replays them on a component offline
//! (`weir plugin test --cases`) and compares two versions (`--compare`, the CI gate); the
//! SDK's conformance kit passes on the reference plugin and fails, case by case, on plugins
//! that do not conform; bad input (a malformed cases file, a refused component) is a clear
//! error with its own exit status.

use std::path::Path;

use serde_json::{Value, json};
use weir_plugin_artifacts as artifacts;

use crate::support::{Weir, client, serve, weir_plugin};

const TOKEN: &str = "process-cases-tests-token-0001";

/// The SDK's conformance kit.
fn conformance() -> String {
    format!(
        "{}/../sdk/conformance/cases.json",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// `weir plugin <args>` (against `ops` with this file's admin token, when given).
async fn plugin(ops: Option<&str>, args: &[&str]) -> (i32, String, String) {
    weir_plugin(ops.map(|o| (o, TOKEN)), args).await
}

async fn post(weir: &Weir, path: &str, body: &Value) -> (u16, Value) {
    let res = client()
        .post(format!("{}{path}", weir.api))
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(body)
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_author_records_real_requests_replays_them_and_compares_two_versions() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = serve(&dir.path().join("data"));
    cmd.env("WEIR_ADMIN_TOKEN", TOKEN);
    let weir = Weir::spawn(cmd).await;
    let ops = Some(weir.ops.as_str());

    let (code, out, err) = plugin(ops, &["cases", "status"]).await;
    assert_eq!((code, out.trim()), (0, "no recording"), "{err}");
    let (code, out, err) = plugin(ops, &["cases", "start", "--max-cases", "50"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("recording active: 0 of at most 50 cases kept, 100% sampled"),
        "{out}"
    );

    // Real requests: two priced orders, a rejection, an invalid request, a cancellation.
    let body = |customer: &str, lines: &[(&str, u32)]| {
        json!({"customer_id": customer, "currency": "EUR",
               "lines": lines.iter().map(|(s, q)| json!({"sku": s, "quantity": q})).collect::<Vec<_>>()})
    };
    let (status, order) = post(
        &weir,
        "/v1/orders",
        &body("cus_author", &[("KB-001", 1), ("CB-004", 2)]),
    )
    .await;
    assert_eq!(status, 201, "{order}");
    let (status, second) = post(&weir, "/v1/orders", &body("cus_author", &[("CB-004", 1)])).await;
    assert_eq!(status, 201, "{second}");
    let (status, rejected) = post(&weir, "/v1/orders", &body("cus_author", &[("NOPE-1", 1)])).await;
    assert_eq!(status, 422, "{rejected}");
    let mut unsupported = body("cus_author", &[("KB-001", 1)]);
    unsupported["currency"] = json!("JPY");
    let (status, invalid) = post(&weir, "/v1/orders", &unsupported).await;
    assert_eq!(
        (status, &invalid["code"]),
        (422, &json!("ORDER_INVALID")),
        "{invalid}"
    );
    let id = order["id"].as_str().unwrap();
    let res = client()
        .post(format!("{}/v1/orders/{id}/cancel", weir.api))
        .send()
        .await
        .expect("cancel");
    assert_eq!(res.status(), 200);

    let (code, out, err) = plugin(ops, &["cases", "status"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(": 5 of at most 50 cases kept"), "{out}");
    let file = dir.path().join("recorded.json");
    let (code, _, err) = plugin(ops, &["cases", "export", "--out", file.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("wrote 5 cases to"), "{err}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        !text.contains("cus_author"),
        "customer ids are redacted by default:\n{text}"
    );

    // Replayed on the version that decided them: every decision is the recorded one, with
    // the catalog answered from the cases (the replay has no database).
    let (code, out, err) = plugin(
        None,
        &["test", artifacts::ORDERS, "--cases", file.to_str().unwrap()],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("5 cases: 5 passed, 0 failed"), "{out}");
    assert!(
        out.contains("place-order: priced ") && out.contains(" EUR (2 lines)"),
        "{out}"
    );
    assert!(
        out.contains("place-order: invalid: currency UNSUPPORTED"),
        "{out}"
    );
    assert!(out.contains("rejected UNKNOWN_SKU"), "{out}");
    assert!(out.contains("transition: status cancelled"), "{out}");
    let (code, json_out, err) = plugin(
        None,
        &[
            "test",
            artifacts::ORDERS,
            "--cases",
            file.to_str().unwrap(),
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&json_out).unwrap();
    let recorded: Value = serde_json::from_str(&text).unwrap();
    for (result, case) in report["results"]
        .as_array()
        .unwrap()
        .iter()
        .zip(recorded["cases"].as_array().unwrap())
    {
        assert_eq!(
            result["run"]["decision"], case["decision"],
            "replayed = recorded for {}",
            case["id"]
        );
        assert!(
            result["run"]["usage"]["memory_bytes"].as_u64().unwrap() > 0,
            "{result}"
        );
    }
    let first = &report["results"][0]["run"]["usage"];
    assert!(
        first["host_calls"].as_u64().unwrap() >= 2,
        "config, catalog, deadline, log calls: {first}"
    );

    // Compared with the next version (a 1% discount): the two priced orders differ, with a
    // diff naming the amounts; refusals and the transition are the same; exit status 1.
    let (code, out, err) = plugin(
        None,
        &[
            "test",
            artifacts::ORDERS,
            "--cases",
            file.to_str().unwrap(),
            "--compare",
            artifacts::ORDERS_NEXT,
        ],
    )
    .await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("2 of 5 cases decided differently, 0 failed"),
        "{out}"
    );
    assert!(out.contains("priced.discount.amount: 0 -> "), "{out}");
    assert!(out.contains("priced.total.amount: "), "{out}");
    assert!(
        !out.contains("UNKNOWN_SKU"),
        "only differing cases are printed: {out}"
    );
    // A version compared with itself: nothing differs, exit 0.
    let (code, out, err) = plugin(
        None,
        &[
            "test",
            artifacts::ORDERS,
            "--cases",
            file.to_str().unwrap(),
            "--compare",
            artifacts::ORDERS,
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("0 of 5 cases decided differently, 0 failed"),
        "{out}"
    );

    let (code, out, err) = plugin(ops, &["cases", "stop"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("stopped: recording"), "{out}");
    let (code, out, _) = plugin(ops, &["cases", "status"]).await;
    assert_eq!((code, out.trim()), (0, "no recording"));
    weir.terminate().await;
}

#[tokio::test]
async fn the_conformance_kit_passes_on_the_reference_plugin_and_names_each_failure_elsewhere() {
    let kit = conformance();
    let (code, out, err) = plugin(None, &["test", artifacts::ORDERS, "--cases", &kit]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("22 cases: 22 passed, 0 failed"), "{out}");
    assert!(
        !out.contains("note: not in the case"),
        "the kit answers everything the reference asks: {out}"
    );

    // The errors test plugin ignores the catalog and always moves an order to paid (which
    // the host's contract refuses for most pairs): each miss is named, the run goes on.
    let (code, out, _) = plugin(None, &["test", artifacts::ERRORS, "--cases", &kit]).await;
    assert_eq!(code, 1, "{out}");
    for line in [
        "  rejected-unknown-sku place-order: priced 100 EUR (1 line)",
        "    FAIL: expected rejected, got ok",
        "  transition-placed-shipped transition: failed contract_violation (status_graph)",
        "    FAIL: expected conflict, got contract_violation",
        "  transition-placed-payment-captured transition: status paid",
    ] {
        assert!(out.contains(line), "{line:?} in {out}");
    }
    assert!(out.contains("22 cases: 4 passed, 18 failed"), "{out}");

    // A plugin that traps: each case fails with the trap, and the run goes on to the end.
    let (code, out, _) = plugin(
        None,
        &["test", artifacts::HOSTILE_ORDERS_TRAP, "--cases", &kit],
    )
    .await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("failed trap"), "{out}");
    assert!(out.contains("22 cases: "), "{out}");
}

#[tokio::test]
async fn bad_cases_files_and_refused_components_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let kit = std::fs::read_to_string(conformance()).unwrap();
    let cases: &[(&str, String, &str)] = &[
        (
            "truncated.json",
            kit[..kit.len() / 2].to_owned(),
            "not a weir.cases/1 cases file",
        ),
        (
            "typo.json",
            kit.replacen("\"expect\"", "\"expectt\"", 1),
            "cases[0].expectt: unknown field `expectt`",
        ),
        (
            "other.json",
            kit.replacen("weir.cases/1", "weir.cases/9", 1),
            "format \"weir.cases/9\" is not",
        ),
        (
            "twice.json",
            kit.replace("\"place-two-lines\"", "\"place-one-line\""),
            "two cases have the id \"place-one-line\"",
        ),
    ];
    for (name, text, want) in cases {
        let path = write(name, text);
        let (code, out, err) = plugin(None, &["test", artifacts::ORDERS, "--cases", &path]).await;
        assert_eq!(code, 2, "{name}: {out}{err}");
        assert!(err.contains(want) && err.contains(name), "{name}: {err}");
    }
    let (code, _, err) = plugin(
        None,
        &[
            "test",
            artifacts::ORDERS,
            "--cases",
            "/nonexistent/cases.json",
        ],
    )
    .await;
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/cases.json"), "{err}");

    // A component the host refuses is refused here the same way, before any case runs.
    let kit_path = conformance();
    let (code, out, err) = plugin(
        None,
        &["test", artifacts::WRONG_WORLD, "--cases", &kit_path],
    )
    .await;
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("wrong-world.wasm") && err.contains("refused at the"),
        "{err}"
    );
    let (code, _, err) = plugin(
        None,
        &[
            "test",
            artifacts::ORDERS,
            "--cases",
            &kit_path,
            "--compare",
            artifacts::CONTRACT_DRIFT,
        ],
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("refused at the contract stage"), "{err}");
    assert!(Path::new(&kit_path).exists());
}
