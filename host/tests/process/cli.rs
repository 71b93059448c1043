//! `weir` as an operator runs it: the real binary, real files, real exit codes.

use std::process::Command;

fn weir() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weir"))
}

#[test]
fn plugin_check_reports_the_reference_plugin() {
    let out = weir()
        .args(["plugin", "check", weir_plugin_artifacts::ORDERS])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("ok: orders 0.1.0 implements weir:orders/plugin@0.1.0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  digest:                sha256:"),
        "{stdout}"
    );
    // What `describe` declares against what the component imports: the same four here.
    assert!(
        stdout.contains("  declared capabilities: log, catalog, config, deadline\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  imported capabilities: log, catalog, config, deadline\n"),
        "{stdout}"
    );
    assert!(!stdout.contains("warning:"), "{stdout}");
    for export in ["describe", "place-order", "transition"] {
        assert!(
            stdout.lines().any(|l| l.trim() == export),
            "missing export {export}: {stdout}"
        );
    }
    assert!(stdout.contains("weir:orders/catalog@0.1.0"), "{stdout}");
    assert!(
        stdout.contains("  contract versions:     0.1.0 (accepted by this host)\n"),
        "{stdout}"
    );

    let json = weir()
        .args(["plugin", "check", "--json", weir_plugin_artifacts::ORDERS])
        .output()
        .unwrap();
    assert!(json.status.success());
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["name"], "orders");
    let caps = serde_json::json!(["log", "catalog", "config", "deadline"]);
    assert_eq!(report["capabilities"], caps);
    assert_eq!(report["imported_capabilities"], caps);
    assert_eq!(report["declared_not_imported"], serde_json::json!([]));
    assert_eq!(report["imported_not_declared"], serde_json::json!([]));
    assert_eq!(report["accepted_versions"], serde_json::json!(["0.1.0"]));
    assert_eq!(
        report["digest"].as_str().unwrap().len(),
        "sha256:".len() + 64
    );
}

#[test]
fn plugin_check_refuses_what_is_not_a_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.wasm");
    std::fs::write(&text, "this is not WebAssembly").unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let cases = [
        (
            text.to_str().unwrap().to_owned(),
            "not a WebAssembly component",
        ),
        (core.to_str().unwrap().to_owned(), "core WebAssembly module"),
        (
            weir_plugin_artifacts::WRONG_WORLD.to_owned(),
            "does not implement weir:orders/plugin@0.1.0",
        ),
        (
            dir.path().join("missing.wasm").to_str().unwrap().to_owned(),
            "cannot read",
        ),
    ];
    for (file, expected) in cases {
        let out = weir().args(["plugin", "check", &file]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{file}: {stderr}");
        assert!(stderr.starts_with("error: "), "{file}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{file}: expected {expected:?} in {stderr}"
        );
        assert!(out.stdout.is_empty(), "{file}: nothing on stdout");
    }
}

#[test]
fn plugin_check_names_what_differs_from_the_contract() {
    let out = weir()
        .args(["plugin", "check", weir_plugin_artifacts::CONTRACT_DRIFT])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout");
    assert!(
        stderr.contains(
            "refused at the contract stage: the component does not match the weir:orders \
             contract (this host accepts 0.1.0; compared with 0.1.0):\n"
        ),
        "{stderr}"
    );
    for line in [
        "  - type types.order-line: field `quantity` has type u64, expected u32\n",
        "  - type types.rejection: field `reason` is named `reason-code`\n",
        "  - type types.order-status: case `refunded` is not in the contract\n",
        "  - export `transition`: 3 parameters (order, event, reason), expected 2 (order, event)\n",
        "  - export `place-order`: parameter `request` differs: expected order-request, found record\n",
    ] {
        assert!(stderr.contains(line), "missing {line:?} in {stderr}");
    }

    let json = weir()
        .args([
            "plugin",
            "check",
            "--json",
            weir_plugin_artifacts::CONTRACT_NEXT,
        ])
        .output()
        .unwrap();
    assert_eq!(json.status.code(), Some(1));
    let body: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(body["stage"], "contract");
    assert_eq!(
        body["contract"]["mismatches"],
        serde_json::json!([{
            "kind": "unsupported_version",
            "direction": "import",
            "item": "weir:orders/types@0.2.0",
            "version": "0.2.0",
            "accepted": ["0.1.0"],
        }])
    );
}

#[test]
fn plugin_check_flags_an_import_the_plugin_does_not_declare() {
    // `hostile-flood` declares `log` and `catalog` but calls `config` too.
    let out = weir()
        .args(["plugin", "check", weir_plugin_artifacts::HOSTILE_FLOOD])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("  declared capabilities: log, catalog\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  imported capabilities: log, catalog, config\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "  warning: imports weir:orders/config but does not declare `config`: its calls \
             will be denied (CAPABILITY_DENIED)\n"
        ),
        "{stdout}"
    );

    let json = weir()
        .args([
            "plugin",
            "check",
            "--json",
            weir_plugin_artifacts::HOSTILE_FLOOD,
        ])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        report["imported_not_declared"],
        serde_json::json!(["config"])
    );
    assert_eq!(report["declared_not_imported"], serde_json::json!([]));
}

#[test]
fn plugin_check_errors_are_escaped_for_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("evil\u{1b}[2J\n\u{9b}31m.wasm");
    std::fs::write(&file, "this is not WebAssembly").unwrap();
    let out = weir()
        .args(["plugin", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("evil\\u{1b}[2J\\n\\u{9b}31m.wasm: not a WebAssembly component"),
        "{stderr:?}"
    );
    assert!(
        !stderr.contains('\u{1b}') && !stderr.contains('\u{9b}'),
        "{stderr:?}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
}

#[test]
fn serve_rejects_bad_configuration_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("weir.toml");
    std::fs::write(&cfg, "[runtime.budget]\nmemory_bytes = 10\n").unwrap();
    let out = weir()
        .args(["serve", "--config", cfg.to_str().unwrap(), "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("runtime.budget.memory_bytes"), "{stderr}");
}

/// Defaults, then the file, then `WEIR__*` variables, then flags (and their variables): the
/// environment beats the file, a flag beats the environment.
#[tokio::test]
async fn configuration_precedence_is_flag_over_environment_over_file() {
    use crate::support::{Weir, client, serve};
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("weir.toml");
    std::fs::write(
        &cfg,
        "environment = \"from-file\"\nadmin_token = \"token-from-the-file-0001\"\n",
    )
    .unwrap();
    let mut cmd = serve(&dir.path().join("data"));
    cmd.arg("--config")
        .arg(&cfg)
        .args(["--admin-token", "token-from-the-flag-00001"])
        .env("WEIR__ENVIRONMENT", "from-env")
        .env("WEIR__ADMIN_TOKEN", "token-from-the-environment");
    let w = Weir::spawn(cmd).await;
    let info = w.ops_json("/infoz").await;
    assert_eq!(
        info["environment"], "from-env",
        "the environment beats the file: {info}"
    );
    for (token, status) in [
        ("token-from-the-flag-00001", 200),
        ("token-from-the-environment", 401),
        ("token-from-the-file-0001", 401),
    ] {
        let res = client()
            .get(format!("{}/admin/rotation", w.ops))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), status, "{token}: the flag wins");
    }
    w.terminate().await;
}

/// `server_threads` sizes the server's async runtime: `/infoz` reports the workers the
/// running runtime has (tokio's own count, not the setting read back), half the CPUs (at least
/// one) when unset. 3 is neither the default nor tokio's own default on a machine of at most
/// two CPUs, so a setting that is read but not applied fails.
#[tokio::test]
async fn server_threads_sizes_the_server_runtime() {
    use crate::support::{Weir, serve};
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    for (setting, expected) in [(None, (cpus / 2).max(1)), (Some("1"), 1), (Some("3"), 3)] {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = serve(dir.path());
        if let Some(n) = setting {
            cmd.env("WEIR__SERVER_THREADS", n);
        }
        let w = Weir::spawn(cmd).await;
        let info = w.ops_json("/infoz").await;
        assert_eq!(
            info["server"]["worker_threads"], expected,
            "server_threads {setting:?}: {}",
            info["server"]
        );
        w.terminate().await;
    }
}

/// A bad `WEIR__*` override stops start-up (exit 2) with an error naming the key.
#[test]
fn a_bad_environment_override_names_its_key() {
    for (var, value, named) in [
        (
            "WEIR__RUNTIME__BUDGET__TIMEOUT_MS",
            "abc",
            "runtime.budget.timeout_ms",
        ),
        ("WEIR__AUTH__MODE", "sometimes", "auth.mode"),
        ("WEIR__SERVER_THREADS", "1000", "server_threads"),
        ("WEIR__NO_SUCH_KEY", "1", "unknown field `no_such_key`"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = weir()
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--ops-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(dir.path())
            .env(var, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(named), "{var}={value}: {stderr}");
    }
}

/// `weir migrate`, the command of the Kubernetes migration Job (deploy/k8s/migrate-job.yaml):
/// on a fresh PostgreSQL database it applies every migration and exits 0; run again it
/// changes nothing and exits 0; without a reachable database it exits 1 naming the database
/// with its password redacted.
#[tokio::test]
async fn migrate_applies_every_migration_alone_and_fails_naming_the_database() {
    use sqlx::Connection as _;
    use weir_host::storage::testing::PgTestDb;

    let migrate = |url: &str| {
        crate::support::weir_command()
            .arg("migrate")
            .env("DATABASE_URL", url)
            .output()
    };
    let db = PgTestDb::create()
        .await
        .expect("a PostgreSQL test database (is PostgreSQL on 127.0.0.1:5432?)");
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
        })
        .count();
    for run in ["first", "second"] {
        let out = migrate(db.url()).await.expect("run weir migrate");
        assert!(
            out.status.success(),
            "{run} run: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("migrations applied to postgres://"),
            "{run} run: {stdout}"
        );
        let mut conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
        let (applied,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{run} run: no migrations recorded: {e}"));
        conn.close().await.ok();
        assert_eq!(
            applied as usize, files,
            "{run} run: every file of migrations/postgres applied once"
        );
    }
    db.drop_db().await.expect("drop the test database");

    let out = migrate("postgres://weir:hunter2@127.0.0.1:1/weir")
        .await
        .expect("run weir migrate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("could not open the database at postgres://weir:")
            && !stderr.contains("hunter2"),
        "{stderr}"
    );
}

/// `cargo tree` of `weir-host`'s own features in the given dependency kinds (the workspace's
/// lock file, no network).
fn host_features(edges: &str) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    let out = Command::new(cargo)
        .current_dir(workspace)
        .args([
            "tree",
            "--locked",
            "--offline",
            "-p",
            "weir-host",
            "-e",
            edges,
        ])
        .args(["-i", "weir-host", "--depth", "1"])
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -e {edges}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("cargo tree output is UTF-8")
}

/// The test-only hooks (`fault-injection`: in-process dependency faults, crash failpoints)
/// are in test builds only: the features a release build of `weir-host` gets do not include
/// it. The control: the same query with dev-dependencies (what `cargo test` builds) shows it,
/// so the check can fail.
#[test]
fn release_build_has_no_fault_injection() {
    let release = host_features("normal,build,features");
    assert!(
        release.contains("weir-host feature \"default\""),
        "the query lists weir-host's features: {release}"
    );
    assert!(
        !release.contains("fault-injection"),
        "a release build of weir-host enables fault-injection:\n{release}"
    );
    let test = host_features("normal,build,dev,features");
    assert!(
        test.contains("weir-host feature \"fault-injection\""),
        "test builds get the hooks (control): {test}"
    );
}
