//! The process RSS bound of SECURITY.md under concurrent hostile calls: a `weir serve` with
//! `runtime.max_instances = 8` and a 16 MiB memory budget, hit by 8 and then 64 concurrent
//! calls that each try to make the host allocate far more than their budget (one buffer
//! returned 10 000 times, 200 000 lines, a 12 MB sku, 500 000 violations). The peak RSS of
//! the process (`VmHWM`) must stay within
//! `baseline + max_instances x (memory_bytes + copy_bytes + stdio + log) + allowance`.

use serde_json::json;

use crate::support::{Weir, client, plugin_dir, serve};

const MAX_INSTANCES: u64 = 8;
const MEMORY: u64 = 16 << 20;
const COPY: u64 = 1 << 20;
const STDIO: u64 = 2 * (16 << 10);
const LOG: u64 = 64 << 10;
/// Request handling, allocator slack and the per-call stores outside linear memory.
const ALLOWANCE: u64 = 64 << 20;

/// `weir serve` in `dir` with `hostile-flood` as the orders plugin.
fn flood_server(dir: &tempfile::TempDir) -> tokio::process::Command {
    let plugins = plugin_dir(dir.path(), &[weir_plugin_artifacts::HOSTILE_FLOOD]);
    let mut cmd = serve(&dir.path().join("data"));
    cmd.env("WEIR__PLUGINS__DIR", &plugins)
        .env("WEIR__PLUGINS__ORDERS", "hostile-flood");
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_calls_stay_within_the_stated_rss_bound() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = flood_server(&dir);
    cmd.env("WEIR__RUNTIME__MAX_INSTANCES", MAX_INSTANCES.to_string())
        .env("WEIR__RUNTIME__BUDGET__MEMORY_BYTES", MEMORY.to_string())
        .env("WEIR__RUNTIME__BUDGET__TIMEOUT_MS", "5000")
        .env("WEIR__POLICY__MAX_CONCURRENCY", "512")
        // Every hostile call must run: the version's breaker must not short-circuit them.
        .env("WEIR__POLICY__PLUGIN_BREAKER__MIN_CALLS", "100000");
    let weir = Weir::spawn_in(cmd, Some(dir)).await;
    let c = client();
    let order = |key: String, flood: Option<(&str, usize)>| {
        let mut body = json!({
            "customer_id": "c",
            "currency": "EUR",
            "lines": [{"sku": "KB-001", "quantity": 1}],
        });
        if let Some((mode, size)) = flood {
            body["metadata"] = json!({"flood": mode, "size": size.to_string()});
        }
        c.post(format!("{}/v1/orders", weir.api))
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    for i in 0..3 {
        let res = order(format!("warm-{i}"), None).await.unwrap();
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    }
    let baseline = weir.status_kib("VmRSS") << 10;
    let bound = baseline + MAX_INSTANCES * (MEMORY + COPY + STDIO + LOG) + ALLOWANCE;

    let attacks = [
        ("alias", 10_000),
        ("lines", 200_000),
        ("sku", 12 << 20),
        ("violations", 500_000),
    ];
    for wave in [8, 64] {
        let calls = (0..wave).map(|i| {
            let (mode, size) = attacks[i % attacks.len()];
            let res = order(format!("w{wave}-{i}"), Some((mode, size)));
            async move {
                let res = res.await.expect("answered");
                let status = res.status().as_u16();
                let body: serde_json::Value = res.json().await.unwrap_or_default();
                (mode, status, body["code"].as_str().unwrap_or("").to_owned())
            }
        });
        for (mode, status, code) in futures::future::join_all(calls).await {
            assert!(
                matches!(
                    code.as_str(),
                    "PLUGIN_BUDGET_EXCEEDED"
                        | "PLUGIN_CONTRACT_VIOLATION"
                        | "PLUGIN_UNAVAILABLE"
                        | "PLUGIN_BUSY"
                ),
                "{mode}: {status} {code}"
            );
        }
        let peak = weir.status_kib("VmHWM") << 10;
        println!(
            "{wave} concurrent hostile calls: peak RSS {} MiB, baseline {} MiB, bound {} MiB",
            peak >> 20,
            baseline >> 20,
            bound >> 20
        );
        assert!(
            peak <= bound,
            "peak RSS {} MiB over the bound {} MiB after {wave} hostile calls",
            peak >> 20,
            bound >> 20
        );
        // Still serving.
        let res = order(format!("after-{wave}"), None).await.unwrap();
        assert_eq!(res.status(), 201);
    }
    weir.terminate().await;
}

/// A plugin's `internal` message is logged once (bounded by the contract to 1 KiB) and never
/// reaches the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_plugin_message_is_logged_once_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let cmd = flood_server(&dir);
    let weir = Weir::spawn_in(cmd, Some(dir)).await;
    let res = client()
        .post(format!("{}/v1/orders", weir.api))
        .header("Idempotency-Key", "internal-1")
        .json(&json!({
            "customer_id": "c",
            "currency": "EUR",
            "lines": [{"sku": "KB-001", "quantity": 1}],
            "metadata": {"flood": "internal", "size": "1000"},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
    let body = res.text().await.unwrap();
    let marker = "i".repeat(64);
    assert!(!body.contains(&marker), "shown to the client: {body}");
    let (_, lines) = weir.terminate().await;
    let logged = lines.iter().filter(|l| l.contains(&marker)).count();
    assert_eq!(logged, 1, "the internal message is logged exactly once");
}

/// 64 KiB of newlines on stdout, then on stderr, from one call each: the log of the process
/// gets at most `runtime.budget.stdio_lines` (256) plugin records per stream plus one
/// truncation warning, and the order's answer is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newline_flood_becomes_a_bounded_number_of_log_records() {
    let dir = tempfile::tempdir().unwrap();
    let weir = Weir::spawn_in(flood_server(&dir), Some(dir)).await;
    for (i, mode) in ["newlines", "stderr-newlines"].into_iter().enumerate() {
        let res = client()
            .post(format!("{}/v1/orders", weir.api))
            .header("Idempotency-Key", format!("flood-{i}"))
            .json(&json!({
                "customer_id": "c",
                "currency": "EUR",
                "lines": [{"sku": "KB-001", "quantity": 1}],
                "metadata": {"flood": mode, "size": (64 << 10).to_string()},
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 422, "{mode}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["reason"], "NEWLINES", "{mode}: {body}");
    }
    let (_, lines) = weir.terminate().await;
    for stream in ["stdout", "stderr"] {
        let records = lines
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| {
                l.get("target").and_then(|t| t.as_str()) == Some("weir::plugin")
                    && crate::support::field(l, "stream").and_then(|s| s.as_str()) == Some(stream)
            })
            .count();
        assert!(records > 1, "{stream}: the output was not logged at all");
        assert!(
            records <= 256 + 1,
            "{stream}: {records} log records for one call (budget 256 lines + 1 warning)"
        );
    }
}
