//! The layering check: every `crate::` path in the host's sources must point to a module of a
//! lower layer, or to a module listed earlier in the same layer (see the crate docs). The
//! order is total, so an import cycle between modules cannot pass either.
//!
//! Plain comments are skipped; doc comments count for their intra-doc links (rustdoc
//! resolves them); everything else counts, tests included, and so do paths in strings such as `#[serde(with = "crate::support::duration_ms")]`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The modules of the crate in layer order: a module may use only those before it.
const ORDER: &[(&str, u8)] = &[
    ("support", 1),
    ("telemetry", 1),
    ("lifecycle", 1),
    ("storage", 2),
    ("world", 2),
    ("capabilities", 2),
    ("policy", 2),
    ("runtime", 3),
    ("auth", 3),
    ("catalog", 3),
    ("events", 3),
    ("native", 3),
    ("http", 4),
    ("ops", 4),
    ("server", 5),
    ("cli", 6),
];

fn rank(module: &str) -> Option<usize> {
    ORDER.iter().position(|(m, _)| *m == module)
}

/// One `crate::` reference that breaks the order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Violation {
    file: String,
    line: usize,
    from: String,
    to: String,
}

/// The top-level module (`storage`) and the module path (`["storage", "sqlite"]`) of a file
/// relative to `src/`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs");
        if stem != "mod" && stem != "lib" {
            parts.push(stem.to_owned());
        }
    }
    parts
}

/// Top-level modules a line of code refers to, resolving `crate::` and `super::` chains.
fn referenced(line: &str, path: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < line.len() {
        let rest = &line[i..];
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if boundary && rest.starts_with("crate::") {
            out.extend(first_segments(&rest["crate::".len()..]));
            i += "crate::".len();
            continue;
        }
        if boundary && rest.starts_with("super::") {
            // Count the chain of `super::`.
            let mut ups = 0;
            let mut r = rest;
            while let Some(next) = r.strip_prefix("super::") {
                ups += 1;
                r = next;
            }
            // `super` of a file's module path: drop `ups` segments (a file's own module is
            // its path; `super` from `a::b` is `a`).
            if ups >= path.len() {
                out.extend(first_segments(r));
            } else if let Some(top) = path.first() {
                out.push(top.clone());
            }
            i += "super::".len() * ups;
            continue;
        }
        i += rest.chars().next().map_or(1, char::len_utf8);
    }
    out
}

/// The first path segment after `crate::`, or every one of a `crate::{a, b::c}` group.
fn first_segments(s: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    if let Some(group) = s.strip_prefix('{') {
        let mut depth = 0;
        let mut items = Vec::new();
        let mut start = 0;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    items.push(&group[start..i]);
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&group[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        items
            .into_iter()
            .map(|i| ident(i.trim()))
            .filter(|i| !i.is_empty())
            .collect()
    } else {
        vec![ident(s)]
            .into_iter()
            .filter(|i| !i.is_empty())
            .collect()
    }
}

/// Check one file's text; `rel` is its path below `src/`.
fn check_file(rel: &Path, text: &str) -> Vec<Violation> {
    let path = module_path(rel);
    let Some(from) = path.first().cloned() else {
        return Vec::new(); // lib.rs: the crate root declares the modules.
    };
    let Some(from_rank) = rank(&from) else {
        return vec![Violation {
            file: rel.display().to_string(),
            line: 0,
            from: from.clone(),
            to: format!("{from} (a module missing from the layer order)"),
        }];
    };
    let mut out = Vec::new();
    // Inline modules (`mod tests {`) deepen the path `super::` is resolved against: the brace
    // depth at which each one opened.
    let mut inline: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    // Join `use crate::{` groups spanning several lines, keeping the first line's number.
    let mut pending: Option<(usize, String)> = None;
    for (n, raw) in text.lines().enumerate() {
        let code = raw.trim_start();
        if code.starts_with("//") {
            // Doc comments' intra-doc links (`[`crate::http::auth`]`) are references that
            // rustdoc resolves: they count. Plain comments do not.
            if code.starts_with("///") || code.starts_with("//!") {
                for to in referenced(code, &path) {
                    if to != from && rank(&to).is_none_or(|r| r >= from_rank) {
                        out.push(Violation {
                            file: rel.display().to_string(),
                            line: n + 1,
                            from: from.clone(),
                            to,
                        });
                    }
                }
            }
            continue;
        }
        let code = match code.find("//") {
            Some(i) if !code[..i].contains('"') => &code[..i],
            _ => code,
        };
        let (line_no, joined) = match pending.take() {
            Some((start, mut acc)) => {
                acc.push(' ');
                acc.push_str(code);
                (start, acc)
            }
            None => (n + 1, code.to_owned()),
        };
        let opens = joined.matches('{').count();
        let closes = joined.matches('}').count();
        if joined.contains("crate::{") && opens > closes {
            pending = Some((line_no, joined));
            continue;
        }
        let words: Vec<&str> = joined.split_whitespace().collect();
        let opens_module = words.iter().position(|w| *w == "mod").is_some_and(|i| {
            words.get(i + 2) == Some(&"{") && (i == 0 || words[i - 1].starts_with("pub"))
        });
        let mut scoped = path.clone();
        scoped.extend(inline.iter().map(|_| "inline".to_owned()));
        for to in referenced(&joined, &scoped) {
            if to == from {
                continue;
            }
            let ok = rank(&to).is_some_and(|r| r < from_rank);
            if !ok {
                out.push(Violation {
                    file: rel.display().to_string(),
                    line: line_no,
                    from: from.clone(),
                    to,
                });
            }
        }
        if opens_module {
            inline.push(depth);
        }
        depth = (depth + opens).saturating_sub(closes);
        while inline.last().is_some_and(|d| depth <= *d) {
            inline.pop();
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_crate_path_points_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut violations = Vec::new();
    let mut modules = BTreeMap::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("below src");
        if rel == Path::new("main.rs") || rel == Path::new("layering.rs") {
            continue; // the binary (a client of the library) and this check itself
        }
        if let Some(top) = module_path(rel).first() {
            *modules.entry(top.clone()).or_insert(0) += 1;
        }
        let text = std::fs::read_to_string(file).expect("read source");
        violations.extend(check_file(rel, &text));
    }
    assert!(
        modules.keys().all(|m| rank(m).is_some()),
        "every module must have a place in the layer order: {modules:?}"
    );
    assert!(
        violations.is_empty(),
        "imports that do not point down the layers (from -> to, file:line):\n{}",
        violations
            .iter()
            .map(|v| format!("  {} -> {}  {}:{}", v.from, v.to, v.file, v.line))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_checker_catches_upward_sideways_and_grouped_imports() {
    let upward = "use crate::http::error::ApiError;\n";
    assert_eq!(
        check_file(Path::new("storage/sqlite.rs"), upward),
        vec![Violation {
            file: "storage/sqlite.rs".into(),
            line: 1,
            from: "storage".into(),
            to: "http".into(),
        }]
    );
    // Same layer, listed later: refused (no sideways cycles).
    assert_eq!(
        check_file(Path::new("world/mod.rs"), "fn f() { crate::policy::x(); }").len(),
        1
    );
    // A group spanning lines, with one bad member.
    let grouped = "use crate::{\n    support::chain,\n    server::AppState,\n};\n";
    let found = check_file(Path::new("events/consumer.rs"), grouped);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].to.as_str(), found[0].line), ("server", 1));
    // `super::` from a top-level module's mod.rs is the crate root.
    assert_eq!(
        check_file(Path::new("runtime/mod.rs"), "use super::ops::OpsState;").len(),
        1
    );
    // `super::` inside an inline module of a mod.rs stays in the module.
    let nested = "pub mod testing {\n    use super::classify;\n}\nuse super::ops::X;\n";
    let found = check_file(Path::new("storage/mod.rs"), nested);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].to.as_str(), found[0].line), ("ops", 4));
    // Within a module, and downward, is fine; plain comments do not count.
    let fine = "use super::limits::Budget;\nuse crate::support::chain;\n// crate::server\n";
    assert!(check_file(Path::new("runtime/invoke.rs"), fine).is_empty());
    // An intra-doc link is a reference: upward in a doc comment is refused.
    let doc =
        "//! Checked at the edge ([`crate::http::auth`]).\n/// See [`crate::support::chain`].\n";
    let found = check_file(Path::new("auth/mod.rs"), doc);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].to.as_str(), found[0].line), ("http", 1));
}
