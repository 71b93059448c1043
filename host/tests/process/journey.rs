//! A plugin author's whole journey with the real binary, as `sdk/README.md` tells it: scaffold
//! a plugin, build it, serve it with the dev loop, record cases from one's own requests, edit
//! the pricing and rebuild (the version unchanged), see the swap, export the cases and get a
//! precise diff between the two builds from `--compare`; the scaffold's cases file (the SDK's
//! conformance kit) passes on both builds.
//!
//! Rust: the project builds with the scaffold test's nested cargo (shared `target/plugins`,
//! offline), two component builds of a few seconds once the SDK's wasm32 dependencies are
//! built. Python: `build.sh` with the pinned `componentize-py` of the test build (about 10 s a
//! build), and each admission or replay compiles the 18 MB component (about 12 s), so that
//! journey takes a minute or two.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::scaffold::{cargo, target_dir};
use crate::support::{Weir, client, serve, weir_plugin};

const TOKEN: &str = "process-journey-tests-token-01";

/// `weir plugin <args>` (against `ops` with this file's admin token, when given).
async fn plugin(ops: Option<&str>, args: &[&str]) -> (i32, String, String) {
    weir_plugin(ops.map(|o| (o, TOKEN)), args).await
}

/// A scaffolded project in one language: how it builds, where its component lands, and the
/// author's edit (a 10% tax on the subtotal), as a text replacement in its source.
struct Lang {
    lang: &'static str,
    name: &'static str,
    source: &'static str,
    before: &'static str,
    after: &'static str,
    componentize_py: Option<&'static str>,
}

impl Lang {
    fn component(&self, project: &Path) -> PathBuf {
        match self.lang {
            "rust" => target_dir().join(format!(
                "wasm32-wasip2/release/{}.wasm",
                self.name.replace('-', "_")
            )),
            _ => project.join(format!("{}.wasm", self.name)),
        }
    }

    /// Build the project's component (blocking, off the async workers).
    async fn build(&self, project: &Path) {
        let project = project.to_owned();
        let componentize_py = self.componentize_py;
        tokio::task::spawn_blocking(move || match componentize_py {
            None => {
                cargo(
                    &project,
                    &["build", "--release", "--target", "wasm32-wasip2"],
                );
            }
            Some(componentize_py) => {
                let out = std::process::Command::new(project.join("build.sh"))
                    .env("COMPONENTIZE_PY", componentize_py)
                    .current_dir(&project)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "build.sh: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        })
        .await
        .unwrap();
    }
}

/// Place an order: status and body.
async fn order(weir: &Weir, lines: &[(&str, u32)]) -> (u16, Value) {
    let res = client()
        .post(format!("{}/v1/orders", weir.api))
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(&json!({
            "customer_id": "cus_author_journey",
            "currency": "EUR",
            "lines": lines.iter().map(|(s, q)| json!({"sku": s, "quantity": q})).collect::<Vec<_>>(),
        }))
        .send()
        .await
        .expect("POST /v1/orders");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_scaffold_serve_watch_record_edit_swap_and_compare() {
    journey(Lang {
        lang: "rust",
        name: "journey-plugin",
        source: "src/lib.rs",
        before: "            tax: Money::new(0, currency),\n            total: Money::new(subtotal, currency),",
        after: "            tax: Money::new(subtotal / 10, currency),\n            total: Money::new(subtotal + subtotal / 10, currency),",
        componentize_py: None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_scaffold_serve_watch_record_edit_swap_and_compare() {
    use weir_plugin_artifacts_python as py;
    let Some(componentize_py) = py::require("componentize-py", py::COMPONENTIZE_PY) else {
        return;
    };
    journey(Lang {
        lang: "python",
        name: "journey-py",
        source: "app.py",
        before: "        return types.PricedOrder(lines, types.Money(subtotal, currency), zero, zero,\n                                 types.Money(subtotal, currency))",
        after: "        return types.PricedOrder(lines, types.Money(subtotal, currency), zero,\n                                 types.Money(subtotal // 10, currency),\n                                 types.Money(subtotal + subtotal // 10, currency))",
        componentize_py: Some(componentize_py),
    })
    .await;
}

async fn journey(lang: Lang) {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join(lang.name);
    let (code, out, err) = plugin(
        None,
        &[
            "new",
            lang.name,
            "--lang",
            lang.lang,
            "--dir",
            project.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        project.join("cases.json").is_file(),
        "the scaffold writes a cases file: {out}"
    );
    lang.build(&project).await;
    let wasm = lang.component(&project);
    let first_build = tmp.path().join("first-build.wasm");
    std::fs::copy(&wasm, &first_build).unwrap();

    // The dev loop serves the build; the author records their own requests.
    let mut cmd = serve(&tmp.path().join("data"));
    if lang.lang == "python" {
        // As the scaffold's README says: the settings a componentize-py component needs.
        cmd.arg("--config").arg(project.join("weir-dev.toml"));
    }
    cmd.arg("--plugin")
        .arg(&wasm)
        .arg("--watch")
        .env("WEIR_ADMIN_TOKEN", TOKEN);
    let weir = Weir::spawn(cmd).await;
    let serving = format!("weir: serving {} 0.1.0 (sha256:", lang.name);
    weir.wait_stderr(0, "the watcher's first line", |t| {
        t.contains(&serving) && t.contains("watching it for changes")
    })
    .await;
    let ops = Some(weir.ops.as_str());
    let (code, _, err) = plugin(ops, &["cases", "start"]).await;
    assert_eq!(code, 0, "{err}");
    let (status, placed) = order(&weir, &[("KB-001", 1), ("CB-004", 2)]).await;
    assert_eq!(status, 201, "{placed}");
    assert_eq!(
        (&placed["plugin"]["name"], &placed["tax"]),
        (&json!(lang.name), &json!(0)),
        "{placed}"
    );
    let (status, refused) = order(&weir, &[("NOPE-1", 1)]).await;
    assert_eq!(
        (status, &refused["code"]),
        (422, &json!("ORDER_REJECTED")),
        "{refused}"
    );

    // The author edits the pricing (a 10% tax) and rebuilds, without touching the version.
    let source_file = project.join(lang.source);
    let source = std::fs::read_to_string(&source_file).unwrap();
    let edited = source.replace(lang.before, lang.after);
    assert_ne!(
        edited, source,
        "the scaffold's pricing has the lines this test edits"
    );
    std::fs::write(&source_file, edited).unwrap();
    let mark = weir.stderr().len();
    lang.build(&project).await;
    let text = weir
        .wait_stderr(mark, "the swap to the edited build", |t| {
            t.contains("weir: admitted") || t.contains("weir: refused")
        })
        .await;
    assert!(
        text.contains(&format!("weir: admitted {} 0.1.0 (sha256:", lang.name))
            && text.contains("now serving"),
        "{text}"
    );
    let (status, taxed) = order(&weir, &[("KB-001", 1), ("CB-004", 2)]).await;
    assert_eq!(status, 201, "{taxed}");
    assert_eq!(
        taxed["tax"],
        json!(1070),
        "the edited build decides: {taxed}"
    );
    assert_ne!(taxed["plugin"]["digest"], placed["plugin"]["digest"]);

    // Export the recorded cases and compare the edited build with the first one.
    let recorded = tmp.path().join("recorded.json");
    let (code, _, err) = plugin(
        ops,
        &["cases", "export", "--out", recorded.to_str().unwrap()],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("wrote 3 cases"), "{err}");
    let (code, out, err) = plugin(
        None,
        &[
            "test",
            wasm.to_str().unwrap(),
            "--cases",
            recorded.to_str().unwrap(),
            "--compare",
            first_build.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, 1, "any difference fails the gate: {out}{err}");
    for line in [
        "2 of 3 cases decided differently, 0 failed",
        "    - priced 11770 EUR (2 lines)",
        "    + priced 10700 EUR (2 lines)",
        "    priced.tax.amount: 1070 -> 0",
        "    priced.total.amount: 11770 -> 10700",
    ] {
        assert!(out.contains(line), "{line:?} in\n{out}");
    }
    assert!(
        !out.contains("UNKNOWN_SKU"),
        "the rejection is decided alike: {out}"
    );

    // The scaffold's cases file is the conformance kit: the edited build still passes it.
    let kit = project.join("cases.json");
    let (code, out, err) = plugin(
        None,
        &[
            "test",
            wasm.to_str().unwrap(),
            "--cases",
            kit.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("22 cases: 22 passed, 0 failed"), "{out}");
    let (status, _) = weir.terminate().await;
    assert!(status.success());
}
