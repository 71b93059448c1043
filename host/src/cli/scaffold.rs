//! `weir plugin new NAME [--lang rust|python]`: a new plugin project in its own directory.
//!
//! Rust (templates in `scaffold/`): a crate depending on `weir-sdk` by path (the SDK is not
//! published), with a minimal order plugin (catalog pricing, the status graph), native unit
//! tests against the SDK's fake host, a README and a `.gitignore`. It builds with
//! `cargo build --release --target wasm32-wasip2`, or without WASI imports (a cheaper fresh
//! instance) with `--target wasm32-unknown-unknown`, for which `.cargo/config.toml` names the
//! toolchain's component linker.
//!
//! Python (templates in `scaffold/python/`): `app.py` with the same minimal logic, a native
//! `unittest` with a fake host in place of the generated import modules, `wit/orders.wit` (the
//! newest contract version this binary accepts), `wit/world.wit` (the contract's world with only
//! the imports the plugin uses), `build.sh` (`componentize-py`, PyPI), a README and a
//! `.gitignore`. It needs no SDK.
//!
//! Both get `cases.json`, the SDK's conformance kit (`sdk/conformance/cases.json`), to run
//! with `weir plugin test FILE.wasm --cases cases.json` and to extend with the author's own
//! recorded cases. Both pass their own tests, `weir plugin check` and the kit as generated
//! (`host/tests/process/scaffold.rs` proves it).

use std::fs;
use std::path::{Path, PathBuf};

/// The languages `weir plugin new --lang` accepts.
pub const LANGUAGES: &[&str] = &["rust", "python"];

/// The `componentize-py` version the Python template is written for (its generated bindings
/// are what `app.py` imports); the tests build with the same pinned version.
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";

/// The longest plugin name, as the host's `describe` check allows.
pub const NAME_MAX: usize = 64;

const CARGO_TOML: &str = include_str!("scaffold/Cargo.toml.tmpl");
const LIB_RS: &str = include_str!("scaffold/lib.rs.tmpl");
const TESTS_RS: &str = include_str!("scaffold/tests.rs.tmpl");
const README_MD: &str = include_str!("scaffold/README.md.tmpl");
const GITIGNORE: &str = include_str!("scaffold/gitignore.tmpl");
const CARGO_CONFIG: &str = include_str!("scaffold/cargo-config.toml.tmpl");
/// The SDK's conformance kit, written as the project's `cases.json`.
const CASES_JSON: &str = include_str!("../../../sdk/conformance/cases.json");
const PY_APP: &str = include_str!("scaffold/python/app.py.tmpl");
const PY_TEST: &str = include_str!("scaffold/python/test_app.py.tmpl");
const PY_BUILD: &str = include_str!("scaffold/python/build.sh.tmpl");
const PY_README: &str = include_str!("scaffold/python/README.md.tmpl");
const PY_GITIGNORE: &str = include_str!("scaffold/python/gitignore.tmpl");
const PY_WEIR_DEV: &str = include_str!("scaffold/python/weir-dev.toml.tmpl");
const PY_WORLD: &str = include_str!("scaffold/python/world.wit.tmpl");

/// Names Cargo refuses for a package or its library, or that shadow a standard crate.
const RESERVED: &[&str] = &[
    "alloc",
    "as",
    "async",
    "await",
    "break",
    "const",
    "continue",
    "core",
    "crate",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "fn",
    "for",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "match",
    "mod",
    "move",
    "mut",
    "proc-macro",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "std",
    "struct",
    "super",
    "test",
    "trait",
    "true",
    "type",
    "unsafe",
    "use",
    "where",
    "while",
];

/// Why a project was not created. [`ScaffoldError::is_usage`] tells usage errors (exit code 2)
/// from failures to write (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// NAME is not a usable plugin and crate name.
    #[error("invalid plugin name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// The broken rule.
        reason: String,
    },
    /// `--lang` names a language without templates.
    #[error(
        "language {lang:?} is not yet supported by `weir plugin new` (supported: {})",
        LANGUAGES.join(", ")
    )]
    UnsupportedLanguage {
        /// The language given.
        lang: String,
    },
    /// The project directory exists and holds something.
    #[error("{} already exists and is not an empty directory; choose another name or --dir", path.display())]
    TargetNotEmpty {
        /// The directory.
        path: PathBuf,
    },
    /// `--sdk-path` (or the default) is not a `weir-sdk` crate.
    #[error(
        "no weir-sdk crate at {}: {reason}; pass --sdk-path with the sdk/ directory of a Weir checkout",
        path.display()
    )]
    SdkNotFound {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Creating a directory or writing a file failed.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl ScaffoldError {
    /// Whether the command line was at fault (exit code 2, like other usage errors).
    pub fn is_usage(&self) -> bool {
        !matches!(self, Self::Io { .. })
    }
}

/// What to create.
#[derive(Debug, Clone)]
pub struct NewPlugin {
    /// The plugin's name: the Cargo package (Rust) and the name `describe` reports.
    pub name: String,
    /// The template language (one of [`LANGUAGES`]).
    pub lang: String,
    /// The project directory (created; must be absent or empty).
    pub dir: PathBuf,
    /// The `weir-sdk` crate directory a Rust project depends on (unused for Python).
    pub sdk_path: PathBuf,
}

impl NewPlugin {
    /// The commands that test, build and check the new project, one a line, for the author.
    pub fn next_steps(&self) -> String {
        let dir = self.dir.display();
        if self.lang == "python" {
            format!(
                "  cd {dir}\n  ./build.sh   # componentize-py {COMPONENTIZE_PY_VERSION} (set COMPONENTIZE_PY)\n  \
                 python3 -m unittest\n  weir plugin check {}.wasm",
                self.name
            )
        } else {
            format!(
                "  cd {dir}\n  cargo test\n  cargo build --release --target wasm32-wasip2\n  \
                 weir plugin check target/wasm32-wasip2/release/{}.wasm",
                self.name.replace('-', "_")
            )
        }
    }
}

/// The `sdk/` directory of the checkout this binary was built from (it may not exist where
/// the binary runs: [`create`] checks).
pub fn default_sdk_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("sdk")
}

/// Check NAME: 1-64 characters of `a-z`, `0-9` and `-` (what the host accepts from
/// `describe`), starting with a letter and not ending with `-` (what Cargo accepts for a
/// package), and not a Rust keyword or standard crate.
pub fn validate_name(name: &str) -> Result<(), ScaffoldError> {
    let refuse = |reason: &str| {
        Err(ScaffoldError::InvalidName {
            name: name.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if name.is_empty() || name.len() > NAME_MAX {
        return refuse(&format!("must be 1-{NAME_MAX} characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return refuse("must be lowercase letters a-z, digits and '-'");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) || name.ends_with('-') {
        return refuse("must start with a letter and not end with '-'");
    }
    if RESERVED.contains(&name) {
        return refuse("is a Rust keyword or a standard crate name");
    }
    Ok(())
}

/// Create the project; returns the files written, relative to `plugin.dir`.
pub fn create(plugin: &NewPlugin) -> Result<Vec<&'static str>, ScaffoldError> {
    validate_name(&plugin.name)?;
    if !LANGUAGES.contains(&plugin.lang.as_str()) {
        return Err(ScaffoldError::UnsupportedLanguage {
            lang: plugin.lang.clone(),
        });
    }
    let python = plugin.lang == "python";
    // Before touching the disk: a Rust project without its SDK would not build.
    let sdk = if python {
        None
    } else {
        Some(sdk_dir(&plugin.sdk_path)?)
    };
    let dir = &plugin.dir;
    let occupied = match fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_some(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        // A file (or something else that is not a directory) by that name.
        Err(_) if dir.exists() => true,
        Err(source) => {
            return Err(ScaffoldError::Io {
                path: dir.clone(),
                source,
            });
        }
    };
    if occupied {
        return Err(ScaffoldError::TargetNotEmpty { path: dir.clone() });
    }

    let sdk_str = match &sdk {
        Some(sdk) => sdk.to_str().ok_or_else(|| ScaffoldError::SdkNotFound {
            path: sdk.clone(),
            reason: "the path is not UTF-8 (Cargo.toml cannot name it)".to_owned(),
        })?,
        None => "",
    };
    let crate_name = plugin.name.replace('-', "_");
    let render = |template: &str| {
        template
            .replace("{{name}}", &plugin.name)
            .replace("{{crate_name}}", &crate_name)
            .replace("{{sdk_path}}", &toml_string(sdk_str))
            .replace("{{componentize_py_version}}", COMPONENTIZE_PY_VERSION)
    };
    let (_, wit) = crate::world::contract::newest_source();
    let files: Vec<(&'static str, &str)> = if python {
        vec![
            ("app.py", PY_APP),
            ("test_app.py", PY_TEST),
            ("build.sh", PY_BUILD),
            ("wit/orders.wit", wit),
            ("wit/world.wit", PY_WORLD),
            ("cases.json", CASES_JSON),
            ("weir-dev.toml", PY_WEIR_DEV),
            ("README.md", PY_README),
            (".gitignore", PY_GITIGNORE),
        ]
    } else {
        vec![
            ("Cargo.toml", CARGO_TOML),
            ("src/lib.rs", LIB_RS),
            ("src/tests.rs", TESTS_RS),
            ("cases.json", CASES_JSON),
            ("README.md", README_MD),
            (".gitignore", GITIGNORE),
            (".cargo/config.toml", CARGO_CONFIG),
        ]
    };
    let io = |path: PathBuf| move |source| ScaffoldError::Io { path, source };
    for (name, template) in &files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io(parent.to_path_buf()))?;
        }
        // The contract and the kit are written as they are; templates get the project's names.
        let text = if *name == "wit/orders.wit" || *name == "cases.json" {
            (*template).to_owned()
        } else {
            render(template)
        };
        fs::write(&path, text).map_err(io(path.clone()))?;
    }
    if python {
        make_executable(&dir.join("build.sh")).map_err(io(dir.join("build.sh")))?;
    }
    Ok(files.iter().map(|(name, _)| *name).collect())
}

/// `chmod +x` (owner, group and others may run what they may read).
#[cfg(unix)]
fn make_executable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut permissions = fs::metadata(path)?.permissions();
    let mode = permissions.mode();
    permissions.set_mode(mode | ((mode & 0o444) >> 2));
    fs::set_permissions(path, permissions)
}

#[cfg(not(unix))]
fn make_executable(_: &Path) -> std::io::Result<()> {
    Ok(())
}

/// The absolute `weir-sdk` directory at `path`, or why it is not one.
fn sdk_dir(path: &Path) -> Result<PathBuf, ScaffoldError> {
    let refuse = |reason: String| ScaffoldError::SdkNotFound {
        path: path.to_path_buf(),
        reason,
    };
    let dir = fs::canonicalize(path).map_err(|e| refuse(e.to_string()))?;
    let manifest = fs::read_to_string(dir.join("Cargo.toml"))
        .map_err(|e| refuse(format!("Cargo.toml: {e}")))?;
    if !manifest
        .lines()
        .any(|l| l.replace(' ', "") == "name=\"weir-sdk\"")
    {
        return Err(refuse(
            "its Cargo.toml is not the weir-sdk package".to_owned(),
        ));
    }
    Ok(dir)
}

/// `s` as a TOML basic string, quotes included.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::{toml_string, validate_name};

    #[test]
    fn names() {
        for ok in ["demo", "demo-plugin", "a", "orders2", &"a".repeat(64)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Demo",
            "demo_plugin",
            "2demo",
            "-demo",
            "demo-",
            "de mo",
            "dé",
            "test",
            &"a".repeat(65),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn toml_strings_escape() {
        assert_eq!(toml_string(r#"/a "b"\c"#), r#""/a \"b\"\\c""#);
        assert_eq!(toml_string("a\nb"), r#""a\u000Ab""#);
    }
}
