//! `weir plugin check FILE.wasm`: validate a component the way admission does, offline.
//!
//! Runs the same steps as loading into a running host (component? implements the world?
//! `describe` self-test passes?) with the default budget and an empty catalog, then prints
//! what an operator needs to know before uploading it.
//!
//! Everything the report shows comes from the component (its name, version, import and export
//! names, and the errors that echo what it did), so the text form ([`CheckReport`]'s
//! `Display`) passes every such string through [`escape_terminal`]: control characters, ANSI
//! escape sequences, newlines and bidirectional overrides are shown escaped, and long values
//! are cut with a marker saying how much was cut. The JSON form (`--json`) is exact JSON.
//!
//! The report compares the capabilities the plugin declares in `describe` with the
//! `weir:orders` interfaces it imports: a declared capability it does not import is unused,
//! and an imported one it does not declare is denied when called (`CAPABILITY_DENIED`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use super::{LoadError, Runtime, RuntimeConfig};
use crate::capabilities::catalog::StaticCatalog;
use crate::world::bindings::Capability;
use crate::world::contract::ContractReport;
use crate::world::conversions::capability_name;
use crate::world::{ACCEPTED_VERSIONS, WORLD};

/// Longest plugin-supplied value [`CheckReport`]'s text form shows, in characters of its
/// escaped form; the rest is replaced by a marker.
pub const SHOWN_MAX_CHARS: usize = 256;

/// Every capability of the world, in the order the report lists them.
const CAPABILITIES: [Capability; 4] = [
    Capability::Log,
    Capability::Catalog,
    Capability::Config,
    Capability::Deadline,
];

/// What `weir plugin check` reports for a valid component.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    /// Name from `describe`.
    pub name: String,
    /// Version from `describe`.
    pub version: String,
    /// `sha256:<hex>` of the file.
    pub digest: String,
    /// File size in bytes.
    pub size: usize,
    /// The `weir:orders` contract versions the host accepts.
    pub accepted_versions: Vec<String>,
    /// Capabilities the plugin declares in `describe` (the declared capabilities).
    pub capabilities: Vec<String>,
    /// Capabilities whose `weir:orders` interface the component imports.
    pub imported_capabilities: Vec<String>,
    /// Declared but not imported: the declaration is unused.
    pub declared_not_imported: Vec<String>,
    /// Imported but not declared: calls to them are denied (`CAPABILITY_DENIED`).
    pub imported_not_declared: Vec<String>,
    /// Component imports.
    pub imports: Vec<String>,
    /// Component exports.
    pub exports: Vec<String>,
}

/// Check the component at `path`.
pub async fn check(path: &Path) -> Result<CheckReport, LoadError> {
    // The largest core-instance limit a host may set: the check reports on the component, the
    // host's `runtime.budget.core_instances` decides whether it is served (a componentize-py
    // component needs 38, above the default 32).
    let mut config = RuntimeConfig {
        max_instances: 4,
        ..RuntimeConfig::default()
    };
    config.budget.core_instances = 1024;
    let runtime = Runtime::new(config, Arc::new(StaticCatalog::default()))
        .map_err(|e| LoadError::Invalid(e.to_string()))?;
    let version = runtime.load_file(path, |_| BTreeMap::new()).await?;
    let declared: Vec<String> = version
        .capabilities
        .iter()
        .map(|c| capability_name(*c).to_owned())
        .collect();
    let imported = imported_capabilities(&version.imports);
    Ok(CheckReport {
        name: version.meta.name.clone(),
        version: version.meta.version.clone(),
        digest: format!("sha256:{}", version.meta.digest),
        size: version.size,
        accepted_versions: ACCEPTED_VERSIONS.iter().map(|v| (*v).to_owned()).collect(),
        declared_not_imported: declared
            .iter()
            .filter(|c| !imported.contains(c))
            .cloned()
            .collect(),
        imported_not_declared: imported
            .iter()
            .filter(|c| !declared.contains(c))
            .cloned()
            .collect(),
        capabilities: declared,
        imported_capabilities: imported,
        imports: version.imports.clone(),
        exports: version.exports.clone(),
    })
}

/// The text `weir plugin check` prints for a contract refusal: one line per mismatch, each
/// plugin-supplied name escaped and cut as in [`CheckReport`], then how many were left out.
pub fn contract_text(report: &ContractReport) -> String {
    let what = if report.other_world {
        format!(
            "does not implement {WORLD} (it uses nothing of {})",
            package()
        )
    } else {
        format!("does not match the {} contract", package())
    };
    let mut out = format!(
        "the component {what} (this host accepts {}; compared with {}):\n",
        report.accepted_versions.join(", "),
        report.compared_with
    );
    for m in &report.mismatches {
        let _ = writeln!(
            out,
            "  - {}",
            escape_terminal_message(&m.to_string(), 2 * SHOWN_MAX_CHARS)
        );
    }
    if report.omitted > 0 {
        let _ = writeln!(out, "  ... and {} more", report.omitted);
    }
    out
}

/// The capabilities whose interface is among `imports` (component import names such as
/// `weir:orders/catalog@0.1.0`), in the world's order, each once. Interfaces of the package
/// that are not capabilities (`types`) and other packages (WASI) are not capabilities.
pub fn imported_capabilities(imports: &[String]) -> Vec<String> {
    let package = package();
    let interfaces: Vec<&str> = imports
        .iter()
        .filter_map(|i| {
            let rest = i.strip_prefix(package)?.strip_prefix('/')?;
            Some(rest.split('@').next().unwrap_or(rest))
        })
        .collect();
    CAPABILITIES
        .iter()
        .map(|c| capability_name(*c))
        .filter(|name| interfaces.contains(name))
        .map(str::to_owned)
        .collect()
}

/// `s` made safe to print on a terminal: backslash, newline, carriage return and tab as
/// `\\`, `\n`, `\r`, `\t`; every other control character (C0, DEL, C1 such as the 8-bit CSI,
/// so no ANSI escape sequence survives), line and paragraph separators, bidirectional
/// overrides and isolates, and zero-width characters as `\u{..}`. When the escaped form is
/// longer than `max_chars` characters it is cut there (never inside one escape) and
/// `... (N bytes cut)` follows, N counting the bytes of `s` not shown.
pub fn escape_terminal(s: &str, max_chars: usize) -> String {
    escape(s, max_chars, true)
}

/// [`escape_terminal`] for an error message, which may quote values already escaped by the
/// host (`"1.0\u{1b}"`): a backslash is kept as it is, so they are not escaped twice; every
/// character a terminal would interpret is still escaped.
pub fn escape_terminal_message(s: &str, max_chars: usize) -> String {
    escape(s, max_chars, false)
}

fn escape(s: &str, max_chars: usize, backslash: bool) -> String {
    let mut out = String::with_capacity(s.len().min(max_chars) + 16);
    let mut shown = 0;
    let mut piece = String::new();
    for (at, c) in s.char_indices() {
        piece.clear();
        match c {
            '\\' if backslash => piece.push_str("\\\\"),
            '\n' => piece.push_str("\\n"),
            '\r' => piece.push_str("\\r"),
            '\t' => piece.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(piece, "\\u{{{:x}}}", u32::from(c));
            }
            c => piece.push(c),
        }
        let width = piece.chars().count();
        if shown + width > max_chars {
            let _ = write!(out, "... ({} bytes cut)", s.len() - at);
            return out;
        }
        shown += width;
        out.push_str(&piece);
    }
    out
}

/// Characters a terminal interprets rather than shows, or that hide or reorder the text
/// around them.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            // Arabic letter mark, zero-width space/joiners, left-to-right and right-to-left
            // marks, line and paragraph separators, embeddings and overrides, word joiner
            // and invisible operators, isolates, byte order mark.
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{feff}'
        )
}

/// The world's package, `weir:orders`.
fn package() -> &'static str {
    WORLD.split('/').next().unwrap_or(WORLD)
}

/// One plugin-supplied value, escaped and bounded.
fn shown(s: &str) -> String {
    escape_terminal(s, SHOWN_MAX_CHARS)
}

/// A list of plugin-supplied values, escaped, or `none`.
fn shown_list(values: &[String]) -> String {
    if values.is_empty() {
        return "none".to_owned();
    }
    values
        .iter()
        .map(|v| shown(v))
        .collect::<Vec<_>>()
        .join(", ")
}

impl std::fmt::Display for CheckReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let package = package();
        writeln!(
            f,
            "ok: {} {} implements {WORLD}",
            shown(&self.name),
            shown(&self.version)
        )?;
        writeln!(f, "  digest:                {}", self.digest)?;
        writeln!(f, "  size:                  {} bytes", self.size)?;
        writeln!(
            f,
            "  contract versions:     {} (accepted by this host)",
            self.accepted_versions.join(", ")
        )?;
        writeln!(
            f,
            "  declared capabilities: {}",
            shown_list(&self.capabilities)
        )?;
        writeln!(
            f,
            "  imported capabilities: {}",
            shown_list(&self.imported_capabilities)
        )?;
        for c in &self.declared_not_imported {
            writeln!(
                f,
                "  warning: declares `{c}` but does not import {package}/{c}: the declaration is unused",
                c = shown(c)
            )?;
        }
        for c in &self.imported_not_declared {
            writeln!(
                f,
                "  warning: imports {package}/{c} but does not declare `{c}`: its calls will be denied (CAPABILITY_DENIED)",
                c = shown(c)
            )?;
        }
        writeln!(f, "  imports:")?;
        for i in &self.imports {
            writeln!(f, "    {}", shown(i))?;
        }
        writeln!(f, "  exports:")?;
        for e in &self.exports {
            writeln!(f, "    {}", shown(e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::contract::{Direction, Mismatch, TypeChange};

    async fn refusal(path: &str) -> ContractReport {
        match check(Path::new(path)).await {
            Err(LoadError::Contract(report)) => *report,
            other => panic!("{path}: expected a contract refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_reference_plugin_matches_the_contract() {
        let report = check(Path::new(weir_plugin_artifacts::ORDERS))
            .await
            .expect("admitted");
        assert_eq!(report.accepted_versions, ACCEPTED_VERSIONS);
    }

    #[tokio::test]
    async fn a_drifted_copy_of_the_contract_is_refused_naming_the_field_and_the_function() {
        let report = refusal(weir_plugin_artifacts::CONTRACT_DRIFT).await;
        let err = LoadError::Contract(Box::new(report.clone()));
        assert_eq!(err.stage(), "contract");
        assert_eq!(report.compared_with, "0.1.0");
        assert!(!report.other_world);
        assert_eq!(
            report.mismatches[0],
            Mismatch::Type {
                interface: "types".to_owned(),
                name: "order-line".to_owned(),
                change: TypeChange::FieldType {
                    field: "quantity".to_owned(),
                    expected: "u32".to_owned(),
                    found: "u64".to_owned(),
                },
            },
            "{report:#?}"
        );
        assert!(
            report.mismatches.contains(&Mismatch::ParamCount {
                interface: None,
                function: "transition".to_owned(),
                expected: vec!["order".to_owned(), "event".to_owned()],
                found: vec!["order".to_owned(), "event".to_owned(), "reason".to_owned()],
            }),
            "{report:#?}"
        );
        assert!(
            report.mismatches.iter().any(|m| matches!(
                m,
                Mismatch::ParamType { function, param, .. }
                    if function == "place-order" && param == "request"
            )),
            "the function whose parameter carries the changed type is named: {report:#?}"
        );
        for (name, change) in [
            (
                "rejection",
                TypeChange::FieldRenamed {
                    expected: "reason".to_owned(),
                    found: "reason-code".to_owned(),
                },
            ),
            (
                "order-status",
                TypeChange::CaseAdded {
                    case: "refunded".to_owned(),
                },
            ),
        ] {
            let m = Mismatch::Type {
                interface: "types".to_owned(),
                name: name.to_owned(),
                change,
            };
            assert!(report.mismatches.contains(&m), "{m:?} in {report:#?}");
        }
        assert!(
            !report
                .mismatches
                .iter()
                .any(|m| matches!(m, Mismatch::Type { name, .. } if name == "order-request")),
            "a type that differs only by a changed type inside it is not listed again: \
             {report:#?}"
        );
        let text = contract_text(&report);
        assert!(
            text.contains(
                "  - type types.order-line: field `quantity` has type u64, expected u32\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "  - export `transition`: 3 parameters (order, event, reason), expected 2 (order, event)\n"
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_future_contract_version_is_refused_naming_the_version_and_the_accepted_ones() {
        let report = refusal(weir_plugin_artifacts::CONTRACT_NEXT).await;
        assert_eq!(
            report.mismatches,
            [Mismatch::UnsupportedVersion {
                direction: Direction::Import,
                item: "weir:orders/types@0.2.0".to_owned(),
                version: "0.2.0".to_owned(),
                accepted: vec!["0.1.0".to_owned()],
            }]
        );
        assert!(
            contract_text(&report).contains(
                "import weir:orders/types@0.2.0: weir:orders version 0.2.0 is not accepted (accepted: 0.1.0)"
            )
        );
    }

    #[test]
    fn the_contract_text_escapes_plugin_names_and_says_how_many_were_left_out() {
        let report = ContractReport {
            accepted_versions: vec!["0.1.0".to_owned()],
            compared_with: "0.1.0".to_owned(),
            mismatches: vec![Mismatch::UnknownItem {
                interface: "weir:orders/catalog@0.1.0".to_owned(),
                item: "get\u{1b}[2J\nok: fine".to_owned(),
            }],
            omitted: 7,
            other_world: false,
        };
        let text = contract_text(&report);
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(text.contains("`get\\u{1b}[2J\\nok: fine`"), "{text}");
        assert!(text.ends_with("  ... and 7 more\n"), "{text}");
        assert_eq!(text.lines().count(), 3, "{text}");
    }

    #[test]
    fn plain_text_is_unchanged() {
        for s in [
            "",
            "orders",
            "0.1.0-rc.1+build",
            "weir:orders/catalog@0.1.0",
            "café 🦀 注文",
        ] {
            assert_eq!(escape_terminal(s, SHOWN_MAX_CHARS), s);
        }
    }

    #[test]
    fn control_characters_and_escape_sequences_are_shown_escaped() {
        assert_eq!(
            escape_terminal("a\nb\rc\td\\e", 100),
            "a\\nb\\rc\\td\\\\e",
            "newlines and tabs, and the backslash so an escape cannot be forged"
        );
        assert_eq!(
            escape_terminal("\u{1b}[2J\u{1b}]0;pwned\u{7}red", 100),
            "\\u{1b}[2J\\u{1b}]0;pwned\\u{7}red",
            "ANSI CSI and OSC sequences lose their ESC and BEL"
        );
        assert_eq!(
            escape_terminal("\u{9b}31m\u{0}\u{7f}", 100),
            "\\u{9b}31m\\u{0}\\u{7f}",
            "8-bit CSI, NUL, DEL"
        );
        assert_eq!(
            escape_terminal("evil\u{202e}txt.exe\u{2066}\u{200b}\u{feff}\u{2028}", 100),
            "evil\\u{202e}txt.exe\\u{2066}\\u{200b}\\u{feff}\\u{2028}",
            "bidi overrides, isolates, zero-width characters and separators"
        );
        assert_eq!(
            escape_terminal_message("version \"1.0\\u{1b}\" is bad:\n\u{1b}[2J", 100),
            "version \"1.0\\u{1b}\" is bad:\\n\\u{1b}[2J",
            "messages keep the escapes already in them and still lose what a terminal reads"
        );
        let escaped = escape_terminal("\u{1b}\n\u{9b}\u{202e}", 100);
        assert!(
            escaped.chars().all(|c| c.is_ascii_graphic()),
            "nothing left a terminal interprets: {escaped}"
        );
    }

    #[test]
    fn long_values_are_cut_with_the_bytes_cut() {
        let long = "x".repeat(300);
        let cut = escape_terminal(&long, 256);
        assert_eq!(cut, format!("{}... (44 bytes cut)", "x".repeat(256)));
        assert_eq!(escape_terminal(&"x".repeat(256), 256), "x".repeat(256));

        // The bound is on what is shown: escapes count with their width and are never split.
        let cut = escape_terminal(&"\u{1b}".repeat(100), 20);
        assert_eq!(cut, format!("{}... (97 bytes cut)", "\\u{1b}".repeat(3)));

        // Multi-byte characters are cut on a character boundary and counted in bytes.
        let cut = escape_terminal(&"é".repeat(10), 4);
        assert_eq!(cut, "éééé... (12 bytes cut)");
    }

    #[test]
    fn imported_capabilities_come_from_the_weir_orders_imports() {
        let imports = [
            "wasi:cli/environment@0.2.6",
            "weir:orders/types@0.1.0",
            "weir:orders/deadline@0.1.0",
            "weir:orders/catalog@0.1.0",
            "weir:orders-extra/config@0.1.0",
            "other:pkg/log@1.0.0",
        ]
        .map(str::to_owned);
        assert_eq!(imported_capabilities(&imports), ["catalog", "deadline"]);
        assert!(imported_capabilities(&[]).is_empty());
    }

    #[test]
    fn the_text_report_escapes_plugin_strings_and_flags_capability_mismatches() {
        let report = CheckReport {
            name: "evil\u{1b}[31m\nok: orders".to_owned(),
            version: "1.0.0".to_owned(),
            digest: "sha256:00".to_owned(),
            size: 10,
            accepted_versions: vec!["0.1.0".to_owned()],
            capabilities: vec!["log".to_owned(), "config".to_owned()],
            imported_capabilities: vec!["log".to_owned(), "catalog".to_owned()],
            declared_not_imported: vec!["config".to_owned()],
            imported_not_declared: vec!["catalog".to_owned()],
            imports: vec![format!("weir:orders/log@0.1.0{}", "\u{7}".repeat(400))],
            exports: vec!["describe".to_owned()],
        };
        let text = report.to_string();
        assert!(
            text.starts_with("ok: evil\\u{1b}[31m\\nok: orders 1.0.0 implements "),
            "{text}"
        );
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text}"
        );
        assert!(
            text.contains("  declared capabilities: log, config\n"),
            "{text}"
        );
        assert!(
            text.contains("  imported capabilities: log, catalog\n"),
            "{text}"
        );
        assert!(
            text.contains("warning: declares `config` but does not import weir:orders/config"),
            "{text}"
        );
        assert!(
            text.contains(
                "warning: imports weir:orders/catalog but does not declare `catalog`: its calls \
                 will be denied (CAPABILITY_DENIED)"
            ),
            "{text}"
        );
        assert!(text.contains("bytes cut)\n"), "{text}");
        assert!(
            text.contains("  contract versions:     0.1.0 (accepted by this host)\n"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 12, "{text}");
    }
}
