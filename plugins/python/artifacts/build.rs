//! Builds `plugins/python/orders` into a WebAssembly component with a pinned `componentize-py`
//! (PyPI) against `wit/` (world `plugin`), into `OUT_DIR`.
//!
//! `componentize-py` is `$WEIR_COMPONENTIZE_PY` when set (it must be the pinned version), else
//! the one in a virtualenv this script keeps in `target/venv-componentize-py` (made with
//! `python3 -m venv`, or `$WEIR_PYTHON -m venv`, then `pip install componentize-py==VERSION`:
//! PyPI is the only network access). Concurrent builds (`cargo test` and `cargo clippy` at
//! once) take a file lock around the install.
//!
//! When the tools cannot be had (no Python, no `venv` module, pip cannot reach PyPI), the build
//! fails with `CI=true`; elsewhere it leaves the component out with a cargo warning, the
//! library's constants carry the reason, and the tests that need the component print it and
//! skip. A Python source that `componentize-py` refuses always fails the build.
//!
//! `--stub-wasi`: the component imports no WASI at all (CPython's WASI build would import
//! `wasi:sockets`, which the host refuses at admission).
//!
//! The sources are copied into `OUT_DIR` first: `componentize-py` writes `__pycache__` next to
//! the modules it compiles, and the source tree stays clean.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The pinned `componentize-py` (PyPI). Its generated bindings (`wit_world`,
/// `componentize_py_types`) are what `plugins/python/orders/app.py` imports.
const VERSION: &str = "0.25.1";

/// Environment variables the library reads with `env!`.
const OUTPUTS: &[&str] = &[
    "WEIR_PYTHON_ORDERS",
    "WEIR_COMPONENTIZE_PY_EXE",
    "WEIR_VENV_PYTHON",
];

struct Tools {
    componentize_py: PathBuf,
    python: PathBuf,
}

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir
        .ancestors()
        .nth(3)
        .expect("plugins/python/artifacts lives three levels below the workspace root")
        .to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let source = workspace.join("plugins").join("python").join("orders");
    let wit = workspace.join("wit");
    for path in [&source, &wit] {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    for var in ["CI", "WEIR_COMPONENTIZE_PY", "WEIR_PYTHON"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rustc-env=WEIR_COMPONENTIZE_PY_VERSION={VERSION}");

    let ci = env::var("CI").is_ok_and(|v| v == "true");
    let tools = match tools(&workspace) {
        Ok(tools) => tools,
        Err(reason) => {
            assert!(
                !ci,
                "CI=true but the Python plugin (plugins/python/orders) cannot be built: {reason}"
            );
            let reason = one_line(&reason);
            println!(
                "cargo:warning=the Python plugin (plugins/python/orders) is not built, its tests \
                 will skip: {reason}"
            );
            for var in OUTPUTS {
                println!("cargo:rustc-env={var}=");
            }
            println!("cargo:rustc-env=WEIR_PYTHON_SKIPPED={reason}");
            return;
        }
    };

    let wasm = out_dir.join("python-orders.wasm");
    componentize(
        &tools,
        &source,
        &wit,
        &out_dir.join("python-orders-src"),
        &wasm,
    );
    println!("cargo:rustc-env=WEIR_PYTHON_ORDERS={}", wasm.display());
    println!(
        "cargo:rustc-env=WEIR_COMPONENTIZE_PY_EXE={}",
        tools.componentize_py.display()
    );
    println!(
        "cargo:rustc-env=WEIR_VENV_PYTHON={}",
        tools.python.display()
    );
    println!("cargo:rustc-env=WEIR_PYTHON_SKIPPED=");
}

/// `componentize-py` and a Python interpreter, installing them when needed; `Err` says why
/// they cannot be had.
fn tools(workspace: &Path) -> Result<Tools, String> {
    if let Some(exe) = env::var_os("WEIR_COMPONENTIZE_PY").filter(|v| !v.is_empty()) {
        let componentize_py = PathBuf::from(exe);
        check_version(&componentize_py).map_err(|e| format!("WEIR_COMPONENTIZE_PY: {e}"))?;
        let python = env::var_os("WEIR_PYTHON")
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from("python3"), PathBuf::from);
        return Ok(Tools {
            componentize_py,
            python,
        });
    }

    let target = workspace.join("target");
    let venv = target.join("venv-componentize-py");
    let tools = Tools {
        componentize_py: venv.join("bin").join("componentize-py"),
        python: venv.join("bin").join("python"),
    };
    fs::create_dir_all(&target).map_err(|e| format!("cannot create {}: {e}", target.display()))?;
    let lock_path = target.join("venv-componentize-py.lock");
    let lock = fs::File::create(&lock_path)
        .map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    if check_version(&tools.componentize_py).is_ok() {
        return Ok(tools);
    }

    let base = env::var_os("WEIR_PYTHON")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("python3"), PathBuf::from);
    // --clear: a venv left by another checkout (a moved target/) has scripts pointing there.
    run(
        Command::new(&base)
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
        &format!("{} -m venv", base.display()),
    )
    .map_err(|e| {
        format!(
            "{e}; install Python 3.11 or newer with its venv module (Debian: apt-get install \
             python3-venv), or set WEIR_COMPONENTIZE_PY to a componentize-py {VERSION}"
        )
    })?;
    run(
        Command::new(venv.join("bin").join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("componentize-py=={VERSION}")),
        &format!("pip install componentize-py=={VERSION} (from PyPI)"),
    )?;
    check_version(&tools.componentize_py)?;
    drop(lock);
    Ok(tools)
}

/// `Ok` when `exe --version` names the pinned version.
fn check_version(exe: &Path) -> Result<(), String> {
    let out = run(
        Command::new(exe).arg("--version"),
        &exe.display().to_string(),
    )?;
    let found = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if found == format!("componentize-py {VERSION}") {
        Ok(())
    } else {
        Err(format!(
            "{} is {found:?}, not componentize-py {VERSION}",
            exe.display()
        ))
    }
}

/// Run `command`; `Err` names `what` with its status and the end of its stderr.
fn run(command: &mut Command, what: &str) -> Result<Output, String> {
    let out = command
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if out.status.success() {
        return Ok(out);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(format!(
        "{what} failed ({}): {}",
        out.status,
        tail.join("\n")
    ))
}

/// Copy the module sources of `source` into `copy`, then build them with `componentize-py`.
fn componentize(tools: &Tools, source: &Path, wit: &Path, copy: &Path, wasm: &Path) {
    if copy.exists() {
        fs::remove_dir_all(copy).unwrap_or_else(|e| panic!("cannot clear {}: {e}", copy.display()));
    }
    fs::create_dir_all(copy).unwrap_or_else(|e| panic!("cannot create {}: {e}", copy.display()));
    let entries =
        fs::read_dir(source).unwrap_or_else(|e| panic!("cannot read {}: {e}", source.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", source.display()))
            .path();
        if path.is_file() && path.extension().is_some_and(|e| e == "py") {
            let to = copy.join(path.file_name().expect("a file name"));
            fs::copy(&path, &to).unwrap_or_else(|e| {
                panic!("cannot copy {} to {}: {e}", path.display(), to.display())
            });
        }
    }

    let out = Command::new(&tools.componentize_py)
        .arg("--wit-path")
        .arg(wit)
        // CPython's WASI build imports `wasi:sockets`, which admission refuses (the host links
        // no sockets); stubbed, every WASI import traps if called, and the port calls none.
        .args([
            "--world",
            "plugin",
            "--quiet",
            "componentize",
            "--stub-wasi",
        ])
        .arg("--python-path")
        .arg(copy)
        .arg("app")
        .arg("--output")
        .arg(wasm)
        // Only the copied sources (and componentize-py's own standard library) go in.
        .env_remove("VIRTUAL_ENV")
        .env_remove("PYTHONPATH")
        .current_dir(copy)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", tools.componentize_py.display()));
    assert!(
        out.status.success(),
        "componentize-py could not build plugins/python/orders ({}):\n{}\n{}\nhint: reproduce \
         with `{} -d wit -w plugin componentize -p plugins/python/orders app -o /tmp/orders.wasm`",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        tools.componentize_py.display()
    );
    let bytes = fs::read(wasm).unwrap_or_else(|e| panic!("cannot read {}: {e}", wasm.display()));
    assert!(
        bytes.starts_with(b"\0asm\x0d\x00\x01\x00"),
        "{} is not a WebAssembly component (header {:02x?})",
        wasm.display(),
        &bytes[..bytes.len().min(8)]
    );
}

/// `s` on one line, at most 1000 characters (a `rustc-env` value and a cargo warning).
fn one_line(s: &str) -> String {
    let line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(1000) {
        Some((end, _)) => format!("{}...", &line[..end]),
        None => line,
    }
}
