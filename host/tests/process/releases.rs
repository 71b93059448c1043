//! Releases across real processes: replicas on one PostgreSQL database converge on a release
//! made through any of them (and one started later starts on it), the `weir plugin` client
//! drives it, and restarts read the compiled-artifact cache.

use std::time::{Duration, Instant};

use serde_json::Value;
use weir_host::storage::testing::PgTestDb;

use crate::support::{Weir, client, field, message, order_body, serve, weir_command};

const TOKEN: &str = "process-release-tests-token";

async fn replica(db: &PgTestDb, dir: &tempfile::TempDir, name: &str) -> Weir {
    let mut cmd = serve(&dir.path().join(name));
    cmd.env("DATABASE_URL", db.url())
        .env("WEIR_ADMIN_TOKEN", TOKEN);
    Weir::spawn(cmd).await
}

/// `weir plugin <args>` against `ops`: exit status, stdout, stderr.
async fn cli(ops: &str, args: &[&str]) -> (bool, String, String) {
    let out = weir_command()
        .arg("plugin")
        .args(args)
        .env("WEIR_ADMIN_URL", ops)
        .env("WEIR_ADMIN_TOKEN", TOKEN)
        .output()
        .await
        .expect("run weir plugin");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn stable_digest(weir: &Weir) -> String {
    stable(&weir.ops_json("/infoz").await)
}

/// The stable digest of the `orders` plugin in an `/infoz` document, without `sha256:`.
fn stable(info: &Value) -> String {
    info["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "orders")
        .and_then(|p| p["stable"]["digest"].as_str())
        .unwrap_or_default()
        .trim_start_matches("sha256:")
        .to_owned()
}

/// Poll (bounded) until `weir` serves `digest`; how long it took.
async fn converges(weir: &Weir, digest: &str) -> Duration {
    let started = Instant::now();
    weir.wait_infoz(&format!("the replica to serve {digest}"), |info| {
        stable(info) == digest
    })
    .await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_converge_on_a_release_and_a_late_one_starts_on_it() {
    let db = PgTestDb::create().await.expect("PostgreSQL test database");
    let dir = tempfile::tempdir().unwrap();
    let one = replica(&db, &dir, "one").await;
    let two = replica(&db, &dir, "two").await;
    let a = stable_digest(&one).await;
    assert_eq!(stable_digest(&two).await, a);

    // Push B through replica one with the CLI, activating it.
    let (ok, stdout, stderr) = cli(
        &one.ops,
        &[
            "push",
            weir_plugin_artifacts::ORDERS_NEXT,
            "--activate",
            "--reason",
            "release 0.2.0",
        ],
    )
    .await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("orders 0.2.0"), "{stdout}");
    assert!(stdout.contains("admitted"), "{stdout}");
    assert!(stdout.contains("released: generation 2"), "{stdout}");
    let b = stdout.split_whitespace().nth(2).unwrap().to_owned();
    assert_eq!(b.len(), 64, "{stdout}");
    assert_eq!(
        stable_digest(&one).await,
        b,
        "applied at once where it was made"
    );
    let took = converges(&two, &b).await;
    eprintln!("replica two served the release after {took:?}");

    // Replica two decides with B.
    let res = client()
        .post(format!("{}/v1/orders", two.api))
        .header("Idempotency-Key", "on-two")
        .json(&order_body("cus_replica", "CB-004"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let order: Value = res.json().await.unwrap();
    assert_eq!(order["plugin"]["digest"], b.as_str());

    // A replica started afterwards starts on the release, ready.
    let three = replica(&db, &dir, "three").await;
    assert_eq!(stable_digest(&three).await, b);
    let ready = three.ops_json("/readyz").await;
    assert_eq!(ready["ready"], true, "{ready}");

    // The status and history through the CLI.
    let (ok, status, _) = cli(&two.ops, &["status", "orders"]).await;
    assert!(ok);
    assert!(status.contains("stable    0.2.0"), "{status}");
    assert!(status.contains("previous  0.1.0"), "{status}");
    let (ok, history, _) = cli(&two.ops, &["history", "orders", "--json"]).await;
    assert!(ok);
    let history: Value = serde_json::from_str(&history).unwrap();
    let last = &history["history"][0];
    assert_eq!(
        (last["action"].as_str(), last["actor"].as_str()),
        (Some("set"), Some("admin"))
    );
    assert_eq!(last["reason"], "release 0.2.0");

    // Emergency rollback in one command, through replica three; everyone follows.
    let (ok, out, err) = cli(&three.ops, &["rollback", "orders", "--reason", "drill"]).await;
    assert!(ok, "{out}{err}");
    for weir in [&one, &two, &three] {
        converges(weir, &a).await;
    }
    // A stale or invalid request is refused with its code.
    let (ok, _, err) = cli(&one.ops, &["promote", "orders"]).await;
    assert!(!ok);
    assert!(err.contains("RELEASE_INVALID"), "{err}");

    for weir in [one, two, three] {
        let (status, _) = weir.terminate().await;
        assert!(status.success());
    }
    db.drop_db().await.unwrap();
}

fn artifact_line(lines: &[String]) -> Value {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| message(l).starts_with("plugin") && message(l).ends_with("at start-up"))
        .unwrap_or_else(|| panic!("no start-up plugin line: {lines:#?}"))
}

fn metric(text: &str, outcome: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("weir_plugin_artifact_lookups_total{"))
        .filter(|l| l.contains(&format!("outcome=\"{outcome}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_read_the_compiled_artifact_cache_and_recompile_a_truncated_entry() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let start = || Weir::spawn(serve(&data));
    let metrics = |weir: &Weir| {
        let url = format!("{}/metrics", weir.ops);
        async move {
            client()
                .get(url)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };

    let first = start().await;
    assert_eq!(metric(&metrics(&first).await, "miss"), 1.0);
    let (_, lines) = first.terminate().await;
    let line = artifact_line(&lines);
    assert_eq!(
        field(&line, "artifact").and_then(Value::as_str),
        Some("miss"),
        "{line}"
    );
    assert_eq!(message(&line), "plugin compiled at start-up");

    let second = start().await;
    let text = metrics(&second).await;
    assert_eq!(
        (metric(&text, "hit"), metric(&text, "miss")),
        (1.0, 0.0),
        "{text}"
    );
    let (_, lines) = second.terminate().await;
    let line = artifact_line(&lines);
    assert_eq!(
        field(&line, "artifact").and_then(Value::as_str),
        Some("hit")
    );
    assert_eq!(
        message(&line),
        "plugin loaded from the compiled-artifact cache at start-up"
    );

    // Cut the entry in half: detected, recompiled, rewritten.
    let entries: Vec<_> = std::fs::read_dir(data.join("artifacts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let bytes = std::fs::read(&entries[0]).unwrap();
    std::fs::write(&entries[0], &bytes[..bytes.len() / 2]).unwrap();
    let third = start().await;
    assert_eq!(metric(&metrics(&third).await, "corrupt"), 1.0);
    let res = client()
        .post(format!("{}/v1/orders", third.api))
        .header("Idempotency-Key", "after-corrupt-cache")
        .json(&order_body("cus_cache", "CB-004"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let (_, lines) = third.terminate().await;
    assert_eq!(
        field(&artifact_line(&lines), "artifact").and_then(Value::as_str),
        Some("corrupt")
    );
    assert_eq!(
        std::fs::read(&entries[0]).unwrap(),
        bytes,
        "rewritten whole"
    );
}
