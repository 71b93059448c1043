//! The Python port of the reference order logic (`plugins/python/orders`) as a WebAssembly
//! component, built from source for the tests, and the tools that built it.
//!
//! The build script installs a pinned `componentize-py` ([`COMPONENTIZE_PY_VERSION`], PyPI)
//! into `target/venv-componentize-py` and builds the component against `wit/` (world
//! `plugin`). Nothing here is committed as a binary.
//!
//! This is a crate of its own, not part of `weir-plugin-artifacts`, because the host depends on
//! that one (it embeds the reference plugin): every build of the service would need Python.
//! Only tests and benchmarks depend on this one.
//!
//! Each constant is `Err(reason)` when the build could not get Python or `componentize-py`
//! (never with `CI=true`: the build fails instead); [`require`] turns that into a skip.
//!
//! ```
//! if let Ok(path) = weir_plugin_artifacts_python::ORDERS {
//!     let bytes = std::fs::read(path).unwrap();
//!     // A component: `\0asm`, version 0x0d, layer 1.
//!     assert_eq!(&bytes[..8], b"\0asm\x0d\x00\x01\x00");
//! }
//! ```

/// The `componentize-py` version the build pins.
pub const COMPONENTIZE_PY_VERSION: &str = env!("WEIR_COMPONENTIZE_PY_VERSION");

/// Why the component was not built; empty when it was.
const SKIPPED: &str = env!("WEIR_PYTHON_SKIPPED");

const fn built(path: &'static str) -> Result<&'static str, &'static str> {
    if SKIPPED.is_empty() {
        Ok(path)
    } else {
        Err(SKIPPED)
    }
}

/// Path of the Python order plugin (`plugins/python/orders`, `describe`: `orders`
/// `0.1.0-python`), or why it was not built.
pub const ORDERS: Result<&str, &str> = built(env!("WEIR_PYTHON_ORDERS"));

/// The `componentize-py` executable the build used (pinned version), or why there is none.
pub const COMPONENTIZE_PY: Result<&str, &str> = built(env!("WEIR_COMPONENTIZE_PY_EXE"));

/// The Python interpreter of that `componentize-py`'s virtualenv (3.11 or newer), for native
/// tests of Python plugins, or why there is none.
pub const PYTHON: Result<&str, &str> = built(env!("WEIR_VENV_PYTHON"));

/// `Some(value)` when it was built. Otherwise, with `CI=true`, a panic (CI runs every test);
/// elsewhere a `SKIPPED` line naming `what` and the reason on stderr, and `None`.
pub fn require(what: &str, built: Result<&'static str, &'static str>) -> Option<&'static str> {
    match built {
        Ok(value) => Some(value),
        Err(reason) => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(!ci, "CI=true but {what} was not built: {reason}");
            eprintln!("SKIPPED: {what} was not built: {reason}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_component_and_its_tools_are_there() {
        let Some(path) = require("the Python order plugin", ORDERS) else {
            return;
        };
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(&bytes[..8], b"\0asm\x0d\x00\x01\x00");
        let version = std::process::Command::new(COMPONENTIZE_PY.unwrap())
            .arg("--version")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&version.stdout).trim(),
            format!("componentize-py {COMPONENTIZE_PY_VERSION}")
        );
    }
}
