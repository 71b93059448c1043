//! Builds every plugin in `plugins/` (release) with nested cargo invocations and copies the
//! components into `OUT_DIR`: the test plugins for `wasm32-wasip2`, and the reference plugin
//! (plus a WASI-free copy of `hostile-panic` and `hostile-churn`) for
//! `wasm32-unknown-unknown`, linked into a component by the toolchain's own
//! `wasm-component-ld` (the linker `wasm32-wasip2` uses; the workspace's `.cargo/config.toml`
//! names it for that target, as `weir plugin new` does for a new project). A component built
//! that way imports `weir:orders` only, not the thirteen WASI interfaces Rust's standard
//! library brings on `wasm32-wasip2`, and a fresh instance of it is cheaper to make
//! (BENCHMARKS.md, "A plugin without WASI imports").
//!
//! The nested cargo uses its own target directory (`target/plugins`) so it never waits on the
//! lock of the outer build, and runs with the outer build's per-package environment removed
//! (under `cargo clippy`, for example, `RUSTC_WORKSPACE_WRAPPER` is clippy-driver). The
//! jobserver (`CARGO_MAKEFLAGS`) is kept so both builds share the same job slots.

use std::env;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The target of plugins that use WASI (the test plugins) or may (the WASI build of the
/// reference plugin, kept to measure against).
const WASI: &str = "wasm32-wasip2";

/// The target of plugins with no WASI import.
const NO_WASI: &str = "wasm32-unknown-unknown";

/// (cargo package, library file stem, file name in `OUT_DIR`): built for [`NO_WASI`].
const NO_WASI_PLUGINS: &[(&str, &str, &str)] = &[
    ("weir-plugin-orders", "weir_plugin_orders", "orders.wasm"),
    (
        "weir-hostile-panic",
        "weir_hostile_panic",
        "hostile-panic-no-wasi.wasm",
    ),
    (
        "weir-hostile-churn",
        "weir_hostile_churn",
        "hostile-churn.wasm",
    ),
];

/// (cargo package, library file stem, file name in `OUT_DIR`): built for [`WASI`].
const PLUGINS: &[(&str, &str, &str)] = &[
    (
        "weir-plugin-orders",
        "weir_plugin_orders",
        "orders-wasip2.wasm",
    ),
    ("weir-plugin-errors", "weir_plugin_errors", "errors.wasm"),
    (
        "weir-plugin-wrong-world",
        "weir_plugin_wrong_world",
        "wrong-world.wasm",
    ),
    (
        "weir-hostile-spin",
        "weir_hostile_spin",
        "hostile-spin.wasm",
    ),
    (
        "weir-hostile-alloc",
        "weir_hostile_alloc",
        "hostile-alloc.wasm",
    ),
    (
        "weir-hostile-stack",
        "weir_hostile_stack",
        "hostile-stack.wasm",
    ),
    (
        "weir-hostile-panic",
        "weir_hostile_panic",
        "hostile-panic.wasm",
    ),
    (
        "weir-hostile-sleep",
        "weir_hostile_sleep",
        "hostile-sleep.wasm",
    ),
    (
        "weir-hostile-logflood",
        "weir_hostile_logflood",
        "hostile-logflood.wasm",
    ),
    (
        "weir-plugin-orders-next",
        "weir_plugin_orders_next",
        "orders-next.wasm",
    ),
    (
        "weir-hostile-describe-panic",
        "weir_hostile_describe_panic",
        "hostile-describe-panic.wasm",
    ),
    (
        "weir-hostile-describe-spin",
        "weir_hostile_describe_spin",
        "hostile-describe-spin.wasm",
    ),
    (
        "weir-hostile-orders-trap",
        "weir_hostile_orders_trap",
        "hostile-orders-trap.wasm",
    ),
    (
        "weir-hostile-liar",
        "weir_hostile_liar",
        "hostile-liar.wasm",
    ),
    (
        "weir-hostile-orders-liar",
        "weir_hostile_orders_liar",
        "hostile-orders-liar.wasm",
    ),
    (
        "weir-hostile-flood",
        "weir_hostile_flood",
        "hostile-flood.wasm",
    ),
    (
        "weir-hostile-describe-huge",
        "weir_hostile_describe_huge",
        "hostile-describe-huge.wasm",
    ),
    (
        "weir-hostile-describe-ctrl",
        "weir_hostile_describe_ctrl",
        "hostile-describe-ctrl.wasm",
    ),
    (
        "weir-hostile-describe-caps",
        "weir_hostile_describe_caps",
        "hostile-describe-caps.wasm",
    ),
    (
        "weir-hostile-describe-dup",
        "weir_hostile_describe_dup",
        "hostile-describe-dup.wasm",
    ),
    (
        "weir-hostile-describe-long",
        "weir_hostile_describe_long",
        "hostile-describe-long.wasm",
    ),
    (
        "weir-plugin-contract-drift",
        "weir_plugin_contract_drift",
        "contract-drift.wasm",
    ),
    (
        "weir-plugin-contract-next",
        "weir_plugin_contract_next",
        "contract-next.wasm",
    ),
    (
        "weir-hostile-sockets",
        "weir_hostile_sockets",
        "hostile-sockets.wasm",
    ),
    (
        "weir-hostile-slow",
        "weir_hostile_slow",
        "hostile-slow.wasm",
    ),
    (
        "weir-hostile-snoop",
        "weir_hostile_snoop",
        "hostile-snoop.wasm",
    ),
];

/// Directories (relative to the workspace root) whose changes require a rebuild.
const WATCHED: &[&str] = &[
    "wit",
    "sdk",
    "plugins/orders",
    "plugins/orders-next",
    "plugins/errors",
    "plugins/wrong-world",
    "plugins/contract-drift",
    "plugins/contract-next",
    "plugins/hostile",
    "Cargo.toml",
    "Cargo.lock",
];

/// Variables cargo sets for the outer build (or a wrapper around it) that must not reach the
/// nested cargo.
const REMOVED: &[&str] = &[
    "RUSTC",
    "RUSTDOC",
    "RUSTC_LINKER",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_BUILD_RUSTC",
    "CARGO_BUILD_RUSTC_WRAPPER",
    "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "CARGO_CRATE_NAME",
    "CARGO_TARGET_TMPDIR",
    "CLIPPY_ARGS",
    "CLIPPY_CONF_DIR",
    "OUT_DIR",
    "TARGET",
    "HOST",
    "NUM_JOBS",
    "OPT_LEVEL",
    "DEBUG",
    "PROFILE",
];

/// Prefixes of further per-package variables of the outer build.
const REMOVED_PREFIXES: &[&str] = &[
    "CARGO_PKG_",
    "CARGO_CFG_",
    "CARGO_FEATURE_",
    "CARGO_PROFILE_",
    "DEP_",
    "__CARGO",
];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir
        .parent()
        .and_then(Path::parent)
        .expect("plugins/artifacts lives two levels below the workspace root")
        .to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = workspace.join("target").join("plugins");

    for path in WATCHED {
        println!("cargo:rerun-if-changed={}", workspace.join(path).display());
    }

    for (target, plugins) in [(WASI, PLUGINS), (NO_WASI, NO_WASI_PLUGINS)] {
        build(&cargo, &workspace, &target_dir, target, plugins);
        copy(&target_dir.join(target).join("release"), &out_dir, plugins);
    }
}

/// One nested `cargo build` of `plugins` for `target`.
fn build(
    cargo: &OsStr,
    workspace: &Path,
    target_dir: &Path,
    target: &str,
    plugins: &[(&str, &str, &str)],
) {
    let mut command = Command::new(cargo);
    command
        .arg("build")
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .args(["--target", target, "--release"])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(workspace);
    for (package, _, _) in plugins {
        command.args(["-p", package]);
    }
    for (name, _) in env::vars_os() {
        if should_remove(&name) {
            command.env_remove(&name);
        }
    }

    let output = command
        .output()
        .unwrap_or_else(|e| panic!("failed to run {}: {e}", Path::new(cargo).display()));
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        panic!(
            "building the plugins for {target} failed ({}):\n{stderr}\n{}",
            output.status,
            hint(target, &stderr)
        );
    }
}

/// Copies each built component of `plugins` from `built` into `out_dir`, checking it is one.
fn copy(built: &Path, out_dir: &Path, plugins: &[(&str, &str, &str)]) {
    for (package, stem, file) in plugins {
        let from = built.join(format!("{stem}.wasm"));
        let to = out_dir.join(file);
        let bytes = fs::read(&from)
            .unwrap_or_else(|e| panic!("{package}: cannot read {}: {e}", from.display()));
        assert!(
            is_component(&bytes),
            "{package}: {} is not a WebAssembly component (header {:02x?}; a core module \
             means it was not linked by `wasm-component-ld`: see .cargo/config.toml)",
            from.display(),
            &bytes[..bytes.len().min(8)]
        );
        fs::write(&to, &bytes)
            .unwrap_or_else(|e| panic!("{package}: cannot write {}: {e}", to.display()));
    }
}

fn should_remove(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    REMOVED.contains(&name) || REMOVED_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// `\0asm`, then version 0x0d and layer 1 (component; core modules have layer 0).
fn is_component(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\0asm\x0d\x00\x01\x00")
}

fn hint(target: &str, stderr: &str) -> String {
    if stderr.contains("wasm-component-ld") && stderr.contains("not found") {
        "hint: the linker `wasm-component-ld` was not found: it ships with rustup's toolchains \
         (next to rustc, in lib/rustlib/<host>/bin); a rustc from elsewhere may lack it"
            .to_owned()
    } else if stderr.contains("target may not be installed")
        || stderr.contains("can't find crate for `std`")
        || stderr.contains("can't find crate for `core`")
    {
        format!("hint: the {target} target is missing: run `rustup target add {WASI} {NO_WASI}`")
    } else {
        format!(
            "hint: the error is in one of the plugin crates; reproduce it with \
             `cargo build --target {target} --release -p <plugin>`"
        )
    }
}
