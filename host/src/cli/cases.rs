//! `weir plugin test FILE.wasm --cases CASES [--compare OTHER.wasm]`: replay a cases file
//! (recorded with `weir plugin cases export`, or the SDK's conformance kit) on a component,
//! offline, and report each decision and the budget it used; with `--compare`, replay it on
//! both components and report only the cases they decide differently, with a diff.
//!
//! Both components are admitted the way a running host admits them (compile, contract,
//! `describe` self-test) into one engine with the default budget; each case runs on a fresh
//! instance with the catalog and configuration answered from the case
//! ([`crate::runtime::cases`]). The circuit breaker is off for a replay: a version that traps
//! on every case is reported case by case, not cut short.
//!
//! Exit status (what a plugin repository's CI gate reads): non-zero when an `expect` of a case
//! is not met, when a case fails (trap, exhausted budget, broken contract) and, with
//! `--compare`, when any case is decided differently.
//!
//! The diff is structural: every JSON path where the two decisions differ, with both values
//! (`priced.total.amount: 17800 -> 17622`). It is a few lines over `serde_json::Value`; the
//! JSON-patch crates produce RFC 6902 operations, which name the new value but not the old.
//! Every string that came from a plugin or a cases file is escaped for the terminal.

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::capabilities::catalog::StaticCatalog;
use crate::policy::circuit_breaker::BreakerConfig;
use weir_core::domain::OrderError;

use crate::runtime::cases::{CasesFile, Decision, MAX_FILE_BYTES, Replayed};
use crate::runtime::check::{SHOWN_MAX_CHARS, escape_terminal, escape_terminal_message};
use crate::runtime::{LoadError, PluginVersion, Runtime, RuntimeConfig};

/// Most differing paths shown per case (the rest are counted).
pub const MAX_DIFF_LINES: usize = 20;

/// Why a replay could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    /// The cases file cannot be read or is not a cases file.
    #[error("{path}: {message}")]
    Cases {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// A component was refused.
    #[error("{path}: refused at the {} stage: {source}", source.stage())]
    Component {
        /// The file.
        path: String,
        /// The refusal.
        #[source]
        source: LoadError,
    },
    /// The engine could not be built.
    #[error("cannot start the plugin engine: {0}")]
    Engine(String),
}

/// A component the cases ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Component {
    /// Its file.
    pub file: String,
    /// Name from `describe`.
    pub name: String,
    /// Version from `describe`.
    pub version: String,
    /// `sha256:<hex>`.
    pub digest: String,
}

impl Component {
    fn of(file: &Path, v: &PluginVersion) -> Self {
        Self {
            file: file.display().to_string(),
            name: v.meta.name.clone(),
            version: v.meta.version.clone(),
            digest: format!("sha256:{}", v.meta.digest),
        }
    }
}

/// The budget one replayed call used.
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    /// Wall time of the call, microseconds.
    pub duration_us: u64,
    /// Linear memory of its instance at the end, bytes.
    pub memory_bytes: usize,
    /// Import calls made.
    pub host_calls: u32,
}

impl From<&Replayed> for Usage {
    fn from(r: &Replayed) -> Self {
        Self {
            duration_us: u64::try_from(r.duration.as_micros()).unwrap_or(u64::MAX),
            memory_bytes: r.memory_bytes,
            host_calls: r.host_calls,
        }
    }
}

/// One component's run of one case.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// What it decided.
    pub decision: Decision,
    /// What it used.
    pub usage: Usage,
    /// What it asked for that the case does not hold (answered as missing).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unscripted: Vec<String>,
    /// The case's expectation it did not meet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expectation_failed: Option<String>,
}

impl Run {
    fn failed(&self) -> bool {
        matches!(self.decision, Decision::Failed(_)) || self.expectation_failed.is_some()
    }
}

/// One case's result.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// The case id.
    pub id: String,
    /// `place-order` or `transition`.
    pub function: &'static str,
    /// On the component under test.
    pub run: Run,
    /// On the `--compare` component.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other: Option<Run>,
    /// Where the two decisions differ (`--compare`), `path: this -> other`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub diff: Vec<String>,
    /// Differing paths beyond [`MAX_DIFF_LINES`].
    #[serde(skip_serializing_if = "is_zero")]
    pub diff_omitted: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// What `weir plugin test` reports.
#[derive(Debug, Clone, Serialize)]
pub struct TestReport {
    /// The cases file.
    pub cases_file: String,
    /// The component under test.
    pub component: Component,
    /// The `--compare` component.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compared_with: Option<Component>,
    /// Every case, in file order.
    pub results: Vec<CaseResult>,
    /// Cases whose run failed or missed its expectation (either component).
    pub failed: usize,
    /// Cases decided differently (`--compare`).
    pub differing: usize,
}

impl TestReport {
    /// Whether the exit status is success (see the module doc).
    pub fn passed(&self) -> bool {
        self.failed == 0 && self.differing == 0
    }
}

/// Replay the cases file at `cases` on `component` (and on `compare`).
pub async fn test(
    component: &Path,
    cases: &Path,
    compare: Option<&Path>,
) -> Result<TestReport, TestError> {
    let file = read_cases(cases).await?;
    // As `weir plugin check`: the largest core-instance limit a host may set (a
    // componentize-py component needs 38, over the default 32); the host that serves it
    // decides with its own `runtime.budget.core_instances`.
    let mut config = RuntimeConfig {
        max_instances: 4,
        ..RuntimeConfig::default()
    };
    config.budget.core_instances = 1024;
    let runtime = Runtime::new(config, Arc::new(StaticCatalog::default()))
        .map_err(|e| TestError::Engine(e.to_string()))?;
    runtime.plugin_breakers().configure(BreakerConfig {
        min_calls: u32::MAX,
        ..BreakerConfig::default()
    });
    let load = |path: PathBuf| {
        let runtime = runtime.clone();
        async move {
            runtime
                .load_file(&path, |_| Default::default())
                .await
                .map_err(|source| TestError::Component {
                    path: path.display().to_string(),
                    source,
                })
        }
    };
    let this = load(component.to_owned()).await?;
    let other = match compare {
        Some(path) => Some(load(path.to_owned()).await?),
        None => None,
    };

    let mut results = Vec::with_capacity(file.cases.len());
    for case in &file.cases {
        let run = |v: &Arc<PluginVersion>| {
            let runtime = runtime.clone();
            let v = Arc::clone(v);
            async move {
                let replayed = runtime.replay(&v, case).await;
                Run {
                    expectation_failed: case
                        .expect
                        .as_ref()
                        .and_then(|e| e.check(&replayed.decision).err()),
                    usage: Usage::from(&replayed),
                    unscripted: replayed.unscripted,
                    decision: replayed.decision,
                }
            }
        };
        let mine = run(&this).await;
        let theirs = match &other {
            Some(v) => Some(run(v).await),
            None => None,
        };
        let mut diff = Vec::new();
        if let Some(theirs) = &theirs {
            let a = serde_json::to_value(&mine.decision).unwrap_or_default();
            let b = serde_json::to_value(&theirs.decision).unwrap_or_default();
            json_diff("", &a, &b, &mut diff);
        }
        let diff_omitted = diff.len().saturating_sub(MAX_DIFF_LINES);
        diff.truncate(MAX_DIFF_LINES);
        results.push(CaseResult {
            id: case.id.clone(),
            function: case.call.function(),
            run: mine,
            other: theirs,
            diff,
            diff_omitted,
        });
    }
    let failed = results
        .iter()
        .filter(|r| r.run.failed() || r.other.as_ref().is_some_and(Run::failed))
        .count();
    let differing = results.iter().filter(|r| !r.diff.is_empty()).count();
    Ok(TestReport {
        cases_file: cases.display().to_string(),
        component: Component::of(component, &this),
        compared_with: other
            .as_ref()
            .zip(compare)
            .map(|(v, path)| Component::of(path, v)),
        results,
        failed,
        differing,
    })
}

async fn read_cases(path: &Path) -> Result<CasesFile, TestError> {
    let err = |message: String| TestError::Cases {
        path: path.display().to_string(),
        message,
    };
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| err(e.to_string()))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(err(format!(
            "{} bytes, at most {MAX_FILE_BYTES} are read",
            meta.len()
        )));
    }
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| err(e.to_string()))?;
    CasesFile::parse(&bytes).map_err(|e| err(e.to_string()))
}

/// Every path where `a` and `b` differ, as `path: a -> b` (values as compact JSON).
fn json_diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => json_diff(&p, va, vb, out),
                    (va, vb) => out.push(format!("{p}: {} -> {}", shown(va), shown(vb))),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                json_diff(&format!("{path}[{i}]"), va, vb, out);
            }
        }
        _ if a == b => {}
        _ => out.push(format!(
            "{}: {} -> {}",
            if path.is_empty() { "." } else { path },
            shown(Some(a)),
            shown(Some(b))
        )),
    }
}

fn shown(v: Option<&Value>) -> String {
    v.map_or_else(|| "(absent)".to_owned(), Value::to_string)
}

/// One decision, one line: `priced 17800 EUR (3 lines)`, `status paid`,
/// `rejected INSUFFICIENT_STOCK: ...`, `failed trap (unreachable)`.
pub fn decision_line(d: &Decision) -> String {
    let esc = |s: &str| escape_terminal(s, SHOWN_MAX_CHARS);
    match d {
        Decision::Priced(p) => format!(
            "priced {} {} ({} line{})",
            p.total.amount,
            esc(&p.total.currency),
            p.lines.len(),
            if p.lines.len() == 1 { "" } else { "s" }
        ),
        Decision::Status(s) => format!("status {}", s.as_str()),
        Decision::Refused(r) => match r {
            OrderError::Invalid(v) => format!(
                "invalid: {}",
                v.iter()
                    .map(|v| format!("{} {}", esc(&v.field), esc(&v.code)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            OrderError::Rejected(r) => {
                format!("rejected {}: {}", esc(&r.reason), esc(&r.message))
            }
            OrderError::NotFound(m)
            | OrderError::Conflict(m)
            | OrderError::Unavailable(m)
            | OrderError::Internal(m) => format!("{} {}", r.tag(), esc(m)),
        },
        Decision::Failed(f) => match &f.kind {
            Some(kind) => format!("failed {} ({})", f.outcome, esc(kind)),
            None => format!("failed {}", f.outcome),
        },
    }
}

fn usage_text(u: &Usage) -> String {
    format!(
        "{} us, {:.1} MiB, {} host call{}",
        u.duration_us,
        u.memory_bytes as f64 / (1024.0 * 1024.0),
        u.host_calls,
        if u.host_calls == 1 { "" } else { "s" }
    )
}

fn component_text(c: &Component) -> String {
    format!(
        "{} {} ({})",
        escape_terminal(&c.name, SHOWN_MAX_CHARS),
        escape_terminal(&c.version, SHOWN_MAX_CHARS),
        c.digest.get(..19).unwrap_or(&c.digest)
    )
}

fn run_notes(out: &mut String, label: &str, run: &Run) {
    if !run.unscripted.is_empty() {
        let asked: Vec<String> = run
            .unscripted
            .iter()
            .map(|u| escape_terminal_message(u, SHOWN_MAX_CHARS))
            .collect();
        let _ = writeln!(
            out,
            "    {label}note: not in the case, answered as missing: {}",
            asked.join(", ")
        );
    }
    if let Some(why) = &run.expectation_failed {
        let _ = writeln!(
            out,
            "    {label}FAIL: {}",
            escape_terminal_message(why, 2 * SHOWN_MAX_CHARS)
        );
    } else if let Decision::Failed(f) = &run.decision {
        let _ = writeln!(
            out,
            "    {label}FAIL: {}",
            escape_terminal_message(&f.message, 2 * SHOWN_MAX_CHARS)
        );
    }
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        let file = escape_terminal(&self.cases_file, SHOWN_MAX_CHARS);
        match &self.compared_with {
            None => {
                let _ = writeln!(
                    out,
                    "{} on {} case{} of {file}",
                    component_text(&self.component),
                    self.results.len(),
                    if self.results.len() == 1 { "" } else { "s" }
                );
                for r in &self.results {
                    let _ = writeln!(
                        out,
                        "  {} {}: {} [{}]",
                        escape_terminal(&r.id, SHOWN_MAX_CHARS),
                        r.function,
                        decision_line(&r.run.decision),
                        usage_text(&r.run.usage)
                    );
                    run_notes(&mut out, "", &r.run);
                }
                let _ = writeln!(
                    out,
                    "{} case{}: {} passed, {} failed",
                    self.results.len(),
                    if self.results.len() == 1 { "" } else { "s" },
                    self.results.len() - self.failed,
                    self.failed
                );
            }
            Some(other) => {
                let _ = writeln!(
                    out,
                    "{} vs {} on {} case{} of {file}",
                    component_text(&self.component),
                    component_text(other),
                    self.results.len(),
                    if self.results.len() == 1 { "" } else { "s" }
                );
                for r in &self.results {
                    let Some(theirs) = &r.other else { continue };
                    let failed = r.run.failed() || theirs.failed();
                    if r.diff.is_empty() && !failed {
                        continue;
                    }
                    let _ = writeln!(
                        out,
                        "  {} {}: {}",
                        escape_terminal(&r.id, SHOWN_MAX_CHARS),
                        r.function,
                        if r.diff.is_empty() {
                            "same decision"
                        } else {
                            "decided differently"
                        }
                    );
                    let _ = writeln!(out, "    - {}", decision_line(&r.run.decision));
                    let _ = writeln!(out, "    + {}", decision_line(&theirs.decision));
                    for line in &r.diff {
                        let _ = writeln!(
                            out,
                            "    {}",
                            escape_terminal_message(line, 2 * SHOWN_MAX_CHARS)
                        );
                    }
                    if r.diff_omitted > 0 {
                        let _ = writeln!(out, "    ... and {} more", r.diff_omitted);
                    }
                    run_notes(&mut out, "- ", &r.run);
                    run_notes(&mut out, "+ ", theirs);
                }
                let _ = writeln!(
                    out,
                    "{} of {} case{} decided differently, {} failed",
                    self.differing,
                    self.results.len(),
                    if self.results.len() == 1 { "" } else { "s" },
                    self.failed
                );
            }
        }
        f.write_str(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_diff_names_each_path_with_both_values() {
        let a = serde_json::json!({"priced": {"total": {"amount": 17800, "currency": "EUR"},
            "lines": [{"sku": "a"}, {"sku": "b"}]}});
        let b = serde_json::json!({"priced": {"total": {"amount": 17622, "currency": "EUR"},
            "lines": [{"sku": "a"}, {"sku": "c"}]}});
        let mut out = Vec::new();
        json_diff("", &a, &b, &mut out);
        assert_eq!(
            out,
            [
                "priced.lines[1].sku: \"b\" -> \"c\"",
                "priced.total.amount: 17800 -> 17622"
            ]
        );

        let mut out = Vec::new();
        json_diff(
            "",
            &serde_json::json!({"status": "paid"}),
            &serde_json::json!({"refused": {"conflict": "no"}}),
            &mut out,
        );
        assert_eq!(
            out,
            [
                "refused: (absent) -> {\"conflict\":\"no\"}",
                "status: \"paid\" -> (absent)"
            ]
        );
        let mut out = Vec::new();
        json_diff("", &a, &a, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn a_decision_line_escapes_what_the_plugin_wrote() {
        let d = Decision::Refused(OrderError::Rejected(weir_core::domain::Rejection {
            reason: "X".into(),
            message: "line\u{1b}[31mred\n".into(),
        }));
        let line = decision_line(&d);
        assert!(!line.contains('\u{1b}') && !line.contains('\n'), "{line}");
    }
}
