//! A component of `plugins.dir` that admission refuses: without `plugins.strict` it is
//! logged (file, stage, chain), counted and shown in `/infoz`, and the rest start; with
//! `--strict` (or `WEIR__PLUGINS__STRICT`) the process exits 1 naming it; when it was the
//! orders plugin the instance starts unready.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{POLL, WAIT, Weir, client, field, order_body, plugin_dir, serve};

/// `<dir>/plugins` holding `hostile-describe-panic.wasm` (refused at the `describe` stage)
/// and, with `good`, `orders-next.wasm` (orders 0.2.0; the directory loads in file-name
/// order, so after the refused one); the directory and the refused file.
fn plugins_dir(dir: &Path, good: bool) -> (PathBuf, PathBuf) {
    let bad = weir_plugin_artifacts::HOSTILE_DESCRIBE_PANIC;
    let plugins = if good {
        plugin_dir(dir, &[bad, weir_plugin_artifacts::ORDERS_NEXT])
    } else {
        plugin_dir(dir, &[bad])
    };
    let bad = plugins.join(Path::new(bad).file_name().unwrap());
    (plugins, bad)
}

/// `weir serve` in `data` with `plugins` as `plugins.dir`.
fn serve_plugins(data: &Path, plugins: &Path) -> tokio::process::Command {
    let mut cmd = serve(data);
    cmd.env("WEIR__PLUGINS__DIR", plugins);
    cmd
}

/// `/readyz`: status and body.
async fn readyz(weir: &Weir) -> (u16, Value) {
    let res = client()
        .get(format!("{}/readyz", weir.ops))
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

/// Poll `/readyz` (bounded) until the `plugin` check has applied the releases (its detail
/// no longer says they are pending); the last answer.
async fn settled_readyz(weir: &Weir) -> (u16, Value) {
    let started = tokio::time::Instant::now();
    loop {
        let (status, body) = readyz(weir).await;
        let plugin = body["checks"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == "plugin"))
            .cloned()
            .unwrap_or_default();
        let pending = plugin["detail"]
            .as_str()
            .is_some_and(|d| d.contains("releases not applied yet"));
        if !pending || started.elapsed() > WAIT {
            return (status, body);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `weir serve` that must fail: exit code and stderr (bounded).
async fn failed_start(mut cmd: tokio::process::Command) -> (Option<i32>, String, String) {
    let out = tokio::time::timeout(WAIT, cmd.output())
        .await
        .expect("weir exits")
        .expect("run weir");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_component_is_left_out_and_the_rest_start() {
    let dir = tempfile::tempdir().unwrap();
    let (plugins, bad) = plugins_dir(dir.path(), true);
    let data = dir.path().join("data");
    // Before the fix, start-up failed here (`weir listening` never logged).
    let weir = Weir::spawn(serve_plugins(&data, &plugins)).await;

    // One error line naming the file, the stage and the chain.
    let line = weir.log_line("plugin component refused at start-up");
    assert_eq!(line["level"], "ERROR", "{line}");
    let bad_file = bad.display().to_string();
    assert_eq!(
        field(&line, "file").and_then(Value::as_str),
        Some(bad_file.as_str()),
        "{line}"
    );
    assert_eq!(
        field(&line, "stage").and_then(Value::as_str),
        Some("describe"),
        "{line}"
    );
    let error = field(&line, "error")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.starts_with(&format!(
            "could not admit plugin {bad_file}: describe self-test failed"
        )),
        "{error}"
    );
    // The start-up line reaches the log buffer just after `spawn` saw it.
    weir.wait_log("weir listening").await;
    let listening = weir.log_line("weir listening");
    assert_eq!(field(&listening, "plugins_refused"), Some(&Value::from(1)));

    // The good component of the same directory serves the orders API, and the instance is
    // ready: a refused component that is not the orders plugin does not affect readiness.
    let (status, ready) = settled_readyz(&weir).await;
    assert_eq!(
        (status, &ready["ready"]),
        (200, &Value::Bool(true)),
        "{ready}"
    );
    let res = client()
        .post(format!("{}/v1/orders", weir.api))
        .header("Idempotency-Key", "plugins-dir-1")
        .json(&order_body("cus_plugins_dir", "KB-001"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let order: Value = res.json().await.unwrap();
    assert_eq!(order["plugin"]["version"], "0.2.0", "{order}");

    // `/infoz` lists the refusal; `/metrics` counts it by stage.
    let info = weir.ops_json("/infoz").await;
    let refused = info["refused_plugins"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(refused.len(), 1, "{info}");
    assert_eq!(refused[0]["file"], bad_file.as_str());
    assert_eq!(refused[0]["stage"], "describe");
    assert_eq!(refused[0]["error"], error.as_str());
    let metrics = client()
        .get(format!("{}/metrics", weir.ops))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counted = metrics.lines().find(|l| {
        l.starts_with("weir_plugin_admission_refusals_total{") && l.contains("stage=\"describe\"")
    });
    assert!(
        counted.is_some_and(|l| l.ends_with(" 1")),
        "{counted:?} in\n{metrics}"
    );

    let (status, _) = weir.terminate().await;
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_start_up_fails_naming_the_refused_component() {
    let dir = tempfile::tempdir().unwrap();
    let (plugins, bad) = plugins_dir(dir.path(), true);
    let bad_file = bad.display().to_string();

    let mut flag = serve_plugins(&dir.path().join("flag"), &plugins);
    flag.arg("--strict");
    let mut env = serve_plugins(&dir.path().join("env"), &plugins);
    env.env("WEIR__PLUGINS__STRICT", "true");
    for (how, cmd) in [("--strict", flag), ("WEIR__PLUGINS__STRICT", env)] {
        let (code, stdout, stderr) = failed_start(cmd).await;
        assert_eq!(code, Some(1), "{how}: {stderr}");
        let chain = stderr
            .lines()
            .find_map(|l| l.strip_prefix("error: "))
            .unwrap_or_else(|| panic!("{how}: no error line on stderr: {stderr}"));
        assert!(
            chain.starts_with(&format!(
                "plugins.strict: {bad_file} was refused at the describe stage: could not admit \
                 plugin {bad_file}: describe self-test failed"
            )),
            "{how}: {chain}"
        );
        assert!(
            stdout.contains("plugin component refused at start-up"),
            "{how}: {stdout}"
        );
        assert!(!stdout.contains("weir listening"), "{how}: {stdout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_orders_plugin_starts_unready() {
    let dir = tempfile::tempdir().unwrap();
    let (plugins, _) = plugins_dir(dir.path(), false);
    let mut cmd = serve_plugins(&dir.path().join("data"), &plugins);
    cmd.env("WEIR__PLUGINS__ORDERS", "describe-panic");
    let weir = Weir::spawn(cmd).await;
    weir.log_line("plugin component refused at start-up");

    // Live, but not ready: the plugin check names the missing plugin and the refusal.
    let live = client()
        .get(format!("{}/livez", weir.ops))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let (status, ready) = settled_readyz(&weir).await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["ready"], false);
    let plugin = ready["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "plugin")
        .cloned()
        .unwrap();
    assert_eq!(plugin["ok"], false, "{ready}");
    let detail = plugin["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("no active version of describe-panic")
            && detail.contains("1 component(s) of plugins.dir refused"),
        "{detail}"
    );
    // Orders are refused as unavailable, not failed.
    let res = client()
        .post(format!("{}/v1/orders", weir.api))
        .header("Idempotency-Key", "plugins-dir-2")
        .json(&order_body("cus_plugins_dir", "KB-001"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "PLUGIN_UNAVAILABLE", "{problem}");
    let (status, _) = weir.terminate().await;
    assert!(status.success());

    // Nothing refused and no such plugin: a configuration error, start-up still fails.
    let empty = plugin_dir(&dir.path().join("empty"), &[]);
    let mut cmd = serve_plugins(&dir.path().join("data2"), &empty);
    cmd.env("WEIR__PLUGINS__ORDERS", "no-such-plugin");
    let (code, _, stderr) = failed_start(cmd).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("plugins.orders is \"no-such-plugin\" but no loaded plugin has that name"),
        "{stderr}"
    );
}
