//! `weir serve --plugin FILE --watch`, the plugin author's dev loop, against the real binary:
//! real file writes (a copy, garbage, a contract drift, a write in two halves), the readable
//! lines on stderr awaited as they are written, orders placed to see which version decides,
//! SIGTERM while watching; and the start-up refusal of a bad `--plugin` file.

use std::io::Write as _;
use std::path::Path;

use serde_json::Value;
use sha2::Digest as _;

use crate::support::{Weir, client, field, message, order_body, serve};

/// Place an order (idempotency key `key`) and return the version of the plugin that
/// decided it.
async fn decided_by(weir: &Weir, key: &str) -> String {
    decided_by_version_and_digest(weir, key).await.0
}

/// Place an order (idempotency key `key`): the version and digest of the plugin that decided.
async fn decided_by_version_and_digest(weir: &Weir, key: &str) -> (String, String) {
    let res = client()
        .post(format!("{}/v1/orders", weir.api))
        .header("Idempotency-Key", key)
        .json(&order_body("cus_watch", "KB-001"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "order {key}");
    let order: Value = res.json().await.unwrap();
    let field = |k: &str| {
        order["plugin"][k]
            .as_str()
            .unwrap_or_else(|| panic!("no plugin {k} in {order}"))
            .to_owned()
    };
    (field("version"), field("digest"))
}

/// `component` rebuilt without a change of version: the same component with a custom section
/// appended (other bytes, another digest, the same `describe`), as an edited build is.
fn rebuilt(component: &str, note: &str) -> Vec<u8> {
    let mut bytes = std::fs::read(component).unwrap();
    let name = b"weir-test-rebuild";
    let mut payload = vec![u8::try_from(name.len()).unwrap()];
    payload.extend_from_slice(name);
    payload.extend_from_slice(note.as_bytes());
    bytes.push(0); // custom section
    bytes.push(u8::try_from(payload.len()).expect("a short note"));
    bytes.extend_from_slice(&payload);
    bytes
}

const TOKEN: &str = "process-watch-tests-token";

/// `weir serve --plugin <file> --watch` in `<dir>/data`, with an admin token.
fn serve_watching(dir: &Path, file: &Path) -> tokio::process::Command {
    let mut cmd = serve(&dir.join("data"));
    cmd.arg("--plugin")
        .arg(file)
        .arg("--watch")
        .env("WEIR_ADMIN_TOKEN", TOKEN);
    cmd
}

/// The newest entry of the release history of `orders`.
async fn last_release(weir: &Weir) -> Value {
    let res = client()
        .get(format!(
            "{}/admin/v1/plugins/orders/history?limit=1",
            weir.ops
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["history"][0].clone()
}

/// The sha256 of the file at `path`, in hex.
fn digest_of(path: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_builds_are_swapped_in_and_broken_ones_leave_the_last_good_one_serving() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("my-plugin.wasm");
    std::fs::copy(weir_plugin_artifacts::ORDERS, &file).unwrap();
    let weir = Weir::spawn(serve_watching(dir.path(), &file)).await;
    let text = weir
        .wait_stderr(0, "the watcher's first line", |t| {
            t.contains("; watching it")
        })
        .await;
    assert!(
        text.contains(&format!(
            "weir: serving orders 0.1.0 (sha256:{}…) from {}; watching it for changes\n",
            &digest_of(weir_plugin_artifacts::ORDERS)[..12],
            file.display()
        )),
        "{text}"
    );
    assert_eq!(
        decided_by(&weir, "watch-1").await,
        "0.1.0",
        "the file served at start-up"
    );

    // 1. A new build: admitted, said so in one line, and deciding the next order.
    let mark = weir.stderr().len();
    std::fs::copy(weir_plugin_artifacts::ORDERS_NEXT, &file).unwrap();
    let text = weir
        .wait_stderr(mark, "the admitted line of orders 0.2.0", |t| {
            t.contains("weir: admitted orders 0.2.0")
        })
        .await;
    let line = text
        .lines()
        .find(|l| l.starts_with("weir: admitted orders 0.2.0"))
        .unwrap();
    assert!(
        line.starts_with("weir: admitted orders 0.2.0 (sha256:") && line.ends_with(", now serving"),
        "{line}"
    );
    assert_eq!(
        decided_by(&weir, "watch-2").await,
        "0.2.0",
        "the admitted build decides the next order"
    );
    // Through the operators' release path: audited, by the actor `watch`.
    let release = last_release(&weir).await;
    assert_eq!(
        (
            &release["actor"],
            &release["action"],
            &release["to"]["stable"]
        ),
        (
            &Value::from("watch"),
            &Value::from("set"),
            &Value::from(digest_of(weir_plugin_artifacts::ORDERS_NEXT))
        ),
        "{release}"
    );

    // The same bytes written again: not admitted again.
    let mark = weir.stderr().len();
    std::fs::write(
        &file,
        std::fs::read(weir_plugin_artifacts::ORDERS_NEXT).unwrap(),
    )
    .unwrap();
    let text = weir
        .wait_stderr(mark, "the unchanged line", |t| {
            t.contains(" unchanged (") || t.contains("weir: admitted")
        })
        .await;
    assert!(
        !text.contains("weir: admitted"),
        "the same digest was admitted again: {text}"
    );
    assert!(
        text.contains(&format!("weir: {} unchanged (sha256:", file.display()))
            && text.contains("orders 0.2.0 keeps serving"),
        "{text}"
    );

    // An edited build under the same version (other bytes): admitted and serving, since the
    // dev loop may reuse a version (an upload may not); told apart by its digest.
    let rebuild = rebuilt(weir_plugin_artifacts::ORDERS_NEXT, "edit 1");
    let rebuild_digest = hex::encode(sha2::Sha256::digest(&rebuild));
    let mark = weir.stderr().len();
    std::fs::write(&file, &rebuild).unwrap();
    let text = weir
        .wait_stderr(mark, "the admitted line of the rebuild", |t| {
            t.contains("weir: admitted") || t.contains("weir: refused")
        })
        .await;
    assert!(
        text.contains(&format!(
            "weir: admitted orders 0.2.0 (sha256:{}",
            &rebuild_digest[..12]
        )),
        "a rebuild under the same version is admitted: {text}"
    );
    assert_eq!(
        decided_by_version_and_digest(&weir, "watch-rebuild").await,
        ("0.2.0".to_owned(), rebuild_digest.clone())
    );

    // 2. Garbage, then a component of a drifted contract: refused, the last good one serves.
    let mark = weir.stderr().len();
    std::fs::write(&file, b"this is not a component\n".repeat(64)).unwrap();
    let text = weir
        .wait_stderr(mark, "the refusal of garbage", |t| {
            t.contains("weir: refused")
        })
        .await;
    assert!(
        text.starts_with(&format!(
            "weir: refused {} (orders 0.2.0 keeps serving): decode: not a WebAssembly component",
            file.display()
        )),
        "{text}"
    );
    assert_eq!(
        decided_by(&weir, "watch-3").await,
        "0.2.0",
        "the last good version keeps deciding"
    );

    let mark = weir.stderr().len();
    std::fs::copy(weir_plugin_artifacts::CONTRACT_DRIFT, &file).unwrap();
    let text = weir
        .wait_stderr(mark, "the contract refusal with its mismatches", |t| {
            // A contract refusal is complete with its last mismatch; another one at once.
            t.contains("weir: refused")
                && (t.contains("  - export `transition`") || !t.contains(": contract: "))
        })
        .await;
    assert!(
        text.starts_with(&format!(
            "weir: refused {} (orders 0.2.0 keeps serving): contract: the component does not \
             match the weir:orders contract",
            file.display()
        )),
        "expected a contract refusal listing its mismatches: {text}"
    );
    assert!(
        text.contains("\n  - type types.order-line: field `quantity` has type u64, expected u32\n"),
        "the mismatches one per line: {text}"
    );
    assert_eq!(
        decided_by(&weir, "watch-4").await,
        "0.2.0",
        "the last good version keeps deciding"
    );

    // 3. A write in two halves: the half file never serves; the whole one is admitted.
    let whole = std::fs::read(weir_plugin_artifacts::ORDERS).unwrap();
    let (first, rest) = whole.split_at(whole.len() / 2);
    let mark = weir.stderr().len();
    let mut out = std::fs::File::create(&file).unwrap();
    out.write_all(first).unwrap();
    out.flush().unwrap();
    // Held half-written until the watcher has judged it (it settles: nothing else writes).
    let text = weir
        .wait_stderr(mark, "the refusal of the half file", |t| {
            t.contains("weir: refused")
        })
        .await;
    assert!(
        text.contains("(orders 0.2.0 keeps serving): ") && !text.contains("weir: admitted"),
        "{text}"
    );
    assert_eq!(
        decided_by(&weir, "watch-5").await,
        "0.2.0",
        "the last good version keeps deciding"
    );
    let mark = weir.stderr().len();
    out.write_all(rest).unwrap();
    out.flush().unwrap();
    drop(out);
    let text = weir
        .wait_stderr(mark, "the admitted line of the whole file", |t| {
            t.contains("weir: admitted")
        })
        .await;
    assert!(
        text.contains("weir: admitted orders 0.1.0 (sha256:")
            && text.contains("(admitted before), now serving"),
        "{text}"
    );
    assert_eq!(
        decided_by(&weir, "watch-6").await,
        "0.1.0",
        "the whole file decides once admitted"
    );

    // Counted by outcome; one log line per outcome.
    let metrics = client()
        .get(format!("{}/metrics", weir.ops))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (outcome, n) in [("admitted", 3), ("refused", 3), ("unchanged", 1)] {
        let label = format!("outcome=\"{outcome}\"");
        let line = metrics
            .lines()
            .find(|l| l.starts_with("weir_plugin_watch_reloads_total{") && l.contains(&label))
            .unwrap_or_else(|| {
                panic!("no weir_plugin_watch_reloads_total{{{label}}} in\n{metrics}")
            });
        assert!(line.ends_with(&format!(" {n}")), "{line}");
    }

    // A build writing in two steps without a pause: the debounce waits for the whole file
    // (at most a refusal of the half one, never serving it).
    let whole = std::fs::read(weir_plugin_artifacts::ORDERS_NEXT).unwrap();
    let (first, rest) = whole.split_at(whole.len() / 2);
    let mark = weir.stderr().len();
    let mut out = std::fs::File::create(&file).unwrap();
    out.write_all(first).unwrap();
    out.flush().unwrap();
    out.write_all(rest).unwrap();
    out.flush().unwrap();
    drop(out);
    let text = weir
        .wait_stderr(mark, "the admitted line of the whole file", |t| {
            t.contains("weir: admitted")
        })
        .await;
    assert!(
        text.contains("weir: admitted orders 0.2.0") && text.matches("weir: refused").count() <= 1,
        "{text}"
    );
    assert_eq!(decided_by(&weir, "watch-7").await, "0.2.0");

    // 4. SIGTERM while watching: the watcher stops with the other workers, a clean drain.
    let (status, stdout) = weir.terminate().await;
    assert!(status.success(), "{status:?}");
    let log: Vec<Value> = stdout
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let drained = log
        .iter()
        .find(|l| message(l).starts_with("shutdown: drain complete"))
        .expect("the drain's last line");
    assert_eq!(
        field(drained, "clean"),
        Some(&Value::Bool(true)),
        "{drained}"
    );
    let outcomes: Vec<&str> = log
        .iter()
        .filter(|l| message(l).starts_with("plugin file "))
        .filter_map(|l| field(l, "outcome").and_then(Value::as_str))
        .collect();
    assert_eq!(
        outcomes[..7],
        [
            "admitted",
            "unchanged",
            "admitted",
            "refused",
            "refused",
            "refused",
            "admitted"
        ],
        "one log line per outcome"
    );
    assert_eq!(outcomes.last(), Some(&"admitted"), "{outcomes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_plugin_file_stops_start_up_with_the_readable_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("drift.wasm");
    std::fs::copy(weir_plugin_artifacts::CONTRACT_DRIFT, &file).unwrap();
    let out = tokio::time::timeout(
        crate::support::WAIT,
        serve_watching(dir.path(), &file).output(),
    )
    .await
    .expect("weir exits")
    .expect("run weir");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "could not admit plugin {} (--plugin)",
            file.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr
            .contains("\n  - type types.order-line: field `quantity` has type u64, expected u32\n"),
        "the mismatches one per line: {stderr}"
    );

    // --watch needs --plugin.
    let out = crate::support::weir_command()
        .args(["serve", "--watch"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
