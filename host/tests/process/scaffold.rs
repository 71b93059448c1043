//! `weir plugin new` as a plugin author runs it: the real binary scaffolds a project in a
//! directory outside the repository; the project builds for `wasm32-wasip2` (and without WASI
//! for `wasm32-unknown-unknown`), passes its own native tests and `weir plugin check`
//! unchanged. The same for `--lang python`, built with the
//! pinned `componentize-py` the test build installs (`weir-plugin-artifacts-python`). And its
//! refusals (exit code 2).
//!
//! The nested cargo shares `target/plugins` with the plugins' own build
//! (`plugins/artifacts/build.rs`) and uses the workspace's release profile settings, so the
//! SDK's wasm32 dependencies built there are reused: the component build compiles only the SDK
//! and the project (about 2 s; 45 s without the sharing). The native `cargo test` builds its
//! dependencies once, then only the project: the whole test takes about 32 s cold (2 shared
//! cores) and 2-3 s warm. It runs `--offline`: everything the SDK needs is in the local
//! registry cache once the workspace has been built.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn weir() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weir"))
}

pub(crate) fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ lives in the workspace root")
        .to_path_buf()
}

/// The directory the nested builds use (shared with the plugins' build).
pub(crate) fn target_dir() -> PathBuf {
    workspace().join("target").join("plugins")
}

/// `cargo ARGS` in `dir` as an author would run it, without the outer `cargo test`'s
/// per-package environment, with the toolchain that built this test (the project lies outside
/// the repository, so `rust-toolchain.toml` does not reach it).
pub(crate) fn cargo(dir: &Path, args: &[&str]) -> Output {
    let cargo = Path::new(env!("CARGO"));
    let mut cmd = Command::new(cargo);
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let outer = (name.starts_with("CARGO_") && name != "CARGO_HOME")
            || name.starts_with("RUSTC")
            || name.starts_with("RUSTDOC")
            || name == "RUSTFLAGS"
            || name.starts_with("__CARGO");
        if outer {
            cmd.env_remove(name);
        }
    }
    let rustc = cargo.with_file_name("rustc");
    if rustc.exists() {
        cmd.env("RUSTC", rustc);
    }
    cmd.args(args)
        .arg("--offline")
        .env("CARGO_TARGET_DIR", target_dir())
        // One-shot builds of a new path each run: no incremental state to pile up.
        .env("CARGO_INCREMENTAL", "0")
        // The workspace's `[profile.release]` (Cargo.toml), which the project does not have:
        // with the same settings the plugins' compiled dependencies are reused.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "line-tables-only")
        .current_dir(dir);
    let out = cmd.output().expect("run cargo");
    assert!(
        out.status.success(),
        "cargo {args:?} in {} failed ({}):\n{}\n{}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn a_new_plugin_builds_tests_and_passes_check_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let out = weir()
        .args(["plugin", "new", "demo-plugin"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let project = tmp.path().join("demo-plugin");
    for file in [
        "Cargo.toml",
        "src/lib.rs",
        "src/tests.rs",
        "cases.json",
        "README.md",
        ".gitignore",
        ".cargo/config.toml",
    ] {
        assert!(project.join(file).is_file(), "{file} missing: {stdout}");
        assert!(stdout.contains(&format!("  {file}\n")), "{stdout}");
    }
    // The SDK by absolute path: the project builds wherever it is.
    let manifest = std::fs::read_to_string(project.join("Cargo.toml")).unwrap();
    let sdk = std::fs::canonicalize(workspace().join("sdk")).unwrap();
    assert!(
        manifest.contains(&format!("weir-sdk = {{ path = \"{}\" }}", sdk.display())),
        "{manifest}"
    );

    cargo(
        &project,
        &["build", "--release", "--target", "wasm32-wasip2"],
    );
    let tests = cargo(&project, &["test"]);
    let tests = String::from_utf8_lossy(&tests.stdout);
    assert!(tests.contains("test result: ok. 3 passed"), "{tests}");

    let wasm = target_dir().join("wasm32-wasip2/release/demo_plugin.wasm");
    let report = plugin_check(&wasm);
    assert!(
        report.contains("ok: demo-plugin 0.1.0 implements weir:orders/plugin@0.1.0"),
        "{report}"
    );
    passes_its_cases(&project, &wasm);
    assert!(
        report.contains("  declared capabilities: log, catalog\n"),
        "{report}"
    );
    assert!(!report.contains("warning:"), "{report}");

    // The same project without WASI: `.cargo/config.toml` names the linker, the component
    // imports `weir:orders` only, and it passes the same checks and cases.
    cargo(
        &project,
        &["build", "--release", "--target", "wasm32-unknown-unknown"],
    );
    let wasm = target_dir().join("wasm32-unknown-unknown/release/demo_plugin.wasm");
    let report = plugin_check(&wasm);
    assert!(
        report.contains("    weir:orders/catalog@0.1.0\n"),
        "{report}"
    );
    assert!(!report.contains("wasi:"), "{report}");
    passes_its_cases(&project, &wasm);
}

/// `weir plugin check WASM`, which must succeed; its report.
fn plugin_check(wasm: impl AsRef<Path>) -> String {
    let check = weir()
        .args(["plugin", "check"])
        .arg(wasm.as_ref())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(
        check.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    report
}

/// The project's `cases.json` is the SDK's conformance kit, and the component passes it.
fn passes_its_cases(project: &Path, wasm: &Path) {
    let cases = project.join("cases.json");
    assert_eq!(
        std::fs::read_to_string(&cases).unwrap(),
        std::fs::read_to_string(workspace().join("sdk/conformance/cases.json")).unwrap()
    );
    let out = weir()
        .args(["plugin", "test"])
        .arg(wasm)
        .arg("--cases")
        .arg(&cases)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("22 cases: 22 passed, 0 failed"), "{report}");
}

/// `weir plugin new ARGS` in `dir`: must exit 2 with `expected` on stderr and write nothing.
fn refused(dir: &Path, args: &[&str], expected: &str) {
    let before = std::fs::read_dir(dir).unwrap().count();
    let out = weir()
        .args(["plugin", "new"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains(expected), "{args:?}: {stderr}");
    assert_eq!(std::fs::read_dir(dir).unwrap().count(), before, "{args:?}");
}

#[test]
fn plugin_new_refuses_bad_names_languages_directories_and_sdk_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for name in [
        "Demo",
        "demo_plugin",
        "9lives",
        "demo-",
        "test",
        &"a".repeat(65),
    ] {
        refused(dir, &[name], "invalid plugin name");
    }
    refused(
        dir,
        &["demo", "--lang", "cobol"],
        "language \"cobol\" is not yet supported by `weir plugin new` (supported: rust, python)",
    );
    refused(
        dir,
        &["demo", "--sdk-path", "/nonexistent/sdk"],
        "no weir-sdk crate at /nonexistent/sdk",
    );
    let not_sdk = workspace().join("core");
    refused(
        dir,
        &["demo", "--sdk-path", not_sdk.to_str().unwrap()],
        "its Cargo.toml is not the weir-sdk package",
    );

    // An existing non-empty directory is left alone; an empty one is used.
    std::fs::create_dir(dir.join("taken")).unwrap();
    std::fs::write(dir.join("taken/notes.txt"), "mine").unwrap();
    refused(
        dir,
        &["taken"],
        "already exists and is not an empty directory",
    );
    assert_eq!(std::fs::read_dir(dir.join("taken")).unwrap().count(), 1);
    assert_eq!(
        std::fs::read_to_string(dir.join("taken/notes.txt")).unwrap(),
        "mine"
    );
    std::fs::write(dir.join("file"), "x").unwrap();
    refused(
        dir,
        &["file"],
        "already exists and is not an empty directory",
    );
    std::fs::create_dir(dir.join("empty")).unwrap();
    let out = weir()
        .args(["plugin", "new", "demo", "--dir", "empty"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.join("empty/src/lib.rs").is_file());
}

/// `program ARGS` in `dir` with `env`: its output, asserted successful.
fn run_ok(dir: &Path, program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} in {} failed ({}):\n{}\n{}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The Python template: its native tests need the generated bindings (and say so), `build.sh`
/// builds a component with the pinned `componentize-py`, the tests then pass, and
/// `weir plugin check` accepts the component. About 25 s: `componentize-py` (10 s) and the
/// check's Cranelift compile of the 18 MB component (12 s).
#[test]
fn a_new_python_plugin_tests_builds_and_passes_check_unchanged() {
    use weir_plugin_artifacts_python as py;
    assert_eq!(
        weir_host::cli::scaffold::COMPONENTIZE_PY_VERSION,
        py::COMPONENTIZE_PY_VERSION,
        "the Python template and the test build must pin the same componentize-py"
    );
    let Some(componentize_py) = py::require("componentize-py", py::COMPONENTIZE_PY) else {
        return;
    };
    let python = py::PYTHON.expect("built with componentize-py");
    let tmp = tempfile::tempdir().unwrap();
    let out = weir()
        .args(["plugin", "new", "demo-py", "--lang", "python"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let project = tmp.path().join("demo-py");
    for file in [
        "app.py",
        "test_app.py",
        "build.sh",
        "wit/orders.wit",
        "wit/world.wit",
        "cases.json",
        "weir-dev.toml",
        "README.md",
        ".gitignore",
    ] {
        assert!(project.join(file).is_file(), "{file} missing: {stdout}");
        assert!(stdout.contains(&format!("  {file}\n")), "{stdout}");
    }
    assert!(stdout.contains("./build.sh"), "{stdout}");
    // The contract exactly as this repository has it.
    assert_eq!(
        std::fs::read_to_string(project.join("wit/orders.wit")).unwrap(),
        std::fs::read_to_string(workspace().join("wit/orders.wit")).unwrap()
    );

    // Without bindings the tests refuse to run, naming the command that makes them.
    let early = Command::new(python)
        .args(["-m", "unittest"])
        .current_dir(&project)
        .output()
        .unwrap();
    assert!(!early.status.success());
    assert!(
        String::from_utf8_lossy(&early.stderr).contains("no bindings: run ./build.sh"),
        "{}",
        String::from_utf8_lossy(&early.stderr)
    );

    let project_str = project.to_str().unwrap();
    run_ok(
        &project,
        &format!("{project_str}/build.sh"),
        &[],
        &[("COMPONENTIZE_PY", componentize_py)],
    );
    let tests = run_ok(&project, python, &["-m", "unittest", "-v"], &[]);
    let tests = String::from_utf8_lossy(&tests.stderr);
    assert!(tests.contains("Ran 4 tests"), "{tests}");
    assert!(tests.trim_end().ends_with("OK"), "{tests}");

    let report = plugin_check(project.join("demo-py.wasm"));
    assert!(
        report.contains("ok: demo-py 0.1.0 implements weir:orders/plugin@0.1.0"),
        "{report}"
    );
    passes_its_cases(&project, &project.join("demo-py.wasm"));
    assert!(
        report.contains("  declared capabilities: log, catalog\n"),
        "{report}"
    );
    assert!(
        report.contains("  imported capabilities: log, catalog\n"),
        "{report}"
    );
    assert!(!report.contains("warning:"), "{report}");
}
