//! The Prometheus rules of `deploy/prometheus/`: every rules file passes `promtool check
//! rules`, every unit test file (`deploy/prometheus/tests/*.test.yml`) passes `promtool test
//! rules`, and every alert is covered: at least one test case expects it to fire and one
//! expects it to stay silent. Every alert also has a `severity` label (`page` or `ticket`) and
//! a `runbook` annotation `RUNBOOK.md#<anchor>` naming a heading of RUNBOOK.md.
//!
//! The rules against a real Prometheus scraping a real `weir`: `host/tests/process/prometheus.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

/// The files of `dir` whose names end with `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(suffix))
        })
        .collect();
    found.sort();
    found
}

#[derive(Debug, Deserialize)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, Deserialize)]
struct RuleGroup {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
struct Rule {
    alert: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct TestFile {
    tests: Vec<TestGroup>,
}

#[derive(Debug, Deserialize)]
struct TestGroup {
    #[serde(default)]
    alert_rule_test: Vec<AlertTest>,
}

#[derive(Debug, Deserialize)]
struct AlertTest {
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<serde_yaml_ng::Value>,
}

/// `promtool` is on the PATH; under `CI=true` its absence fails the test.
fn promtool_available() -> bool {
    match Command::new("promtool").arg("--version").output() {
        Ok(_) => true,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("promtool is required in CI (.ci/run installs the `prometheus` package): {e}")
        }
        Err(e) => {
            eprintln!("note: promtool not installed ({e}); skipping the rules checks outside CI");
            false
        }
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The GitHub anchor of a Markdown heading: lower case, spaces to `-`, other punctuation
/// dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Every alerting rule of the rules files, with where it is (file and group).
fn alerts(rule_files: &[PathBuf]) -> Vec<(String, Rule)> {
    let mut alerts = Vec::new();
    for file in rule_files {
        let text = std::fs::read_to_string(file).unwrap();
        let parsed: RuleFile = serde_yaml_ng::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not a rules file: {e}", file.display()));
        for group in parsed.groups {
            for rule in group.rules.into_iter().filter(|r| r.alert.is_some()) {
                alerts.push((format!("{} group {}", file.display(), group.name), rule));
            }
        }
    }
    alerts
}

#[test]
fn prometheus_rules_pass_promtool_and_every_alert_is_tested_and_has_a_runbook() {
    let dir = deploy_dir();
    let rule_files = files(&dir, ".rules.yml");
    let test_files = files(&dir.join("tests"), ".test.yml");
    assert!(
        !rule_files.is_empty(),
        "no *.rules.yml in {}",
        dir.display()
    );
    assert!(
        !test_files.is_empty(),
        "no tests/*.test.yml in {}",
        dir.display()
    );

    // Coverage: an alert needs a case where it fires and a case where it stays silent.
    let mut fires = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for file in &test_files {
        let text = std::fs::read_to_string(file).unwrap();
        let parsed: TestFile = serde_yaml_ng::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not a promtool test file: {e}", file.display()));
        for case in parsed.tests.iter().flat_map(|t| &t.alert_rule_test) {
            if case.exp_alerts.is_empty() {
                silent.insert(case.alertname.clone());
            } else {
                fires.insert(case.alertname.clone());
            }
        }
    }
    let runbook = std::fs::read_to_string(dir.join("../../RUNBOOK.md")).expect("RUNBOOK.md");
    let anchors: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect();

    let alerts = alerts(&rule_files);
    assert!(!alerts.is_empty(), "no alert in {rule_files:?}");
    let mut problems = Vec::new();
    for (place, rule) in &alerts {
        let name = rule.alert.as_deref().unwrap_or_default();
        if !fires.contains(name) {
            problems.push(format!(
                "{name} ({place}): no promtool test case expects it to fire (exp_alerts)"
            ));
        }
        if !silent.contains(name) {
            problems.push(format!(
                "{name} ({place}): no promtool test case expects it to stay silent (empty exp_alerts)"
            ));
        }
        match rule.labels.get("severity").map(String::as_str) {
            Some("page" | "ticket") => {}
            other => problems.push(format!(
                "{name} ({place}): severity label must be page or ticket, is {other:?}"
            )),
        }
        match rule.annotations.get("runbook") {
            Some(link) => match link.strip_prefix("RUNBOOK.md#") {
                Some(a) if anchors.contains(a) => {}
                _ => problems.push(format!(
                    "{name} ({place}): runbook annotation {link:?} names no heading of RUNBOOK.md"
                )),
            },
            None => problems.push(format!("{name} ({place}): no runbook annotation")),
        }
    }
    assert!(problems.is_empty(), "alert rules:\n{}", problems.join("\n"));

    if !promtool_available() {
        return;
    }
    run(Command::new("promtool")
        .args(["check", "rules"])
        .args(&rule_files));
    // One promtool per test file, all at once (the SLO files take seconds each).
    let runs: Vec<_> = test_files
        .iter()
        .map(|file| {
            let mut cmd = Command::new("promtool");
            cmd.args(["test", "rules"]).arg(file);
            std::thread::spawn(move || run(&mut cmd))
        })
        .collect();
    for (file, r) in test_files.iter().zip(runs) {
        if r.join().is_err() {
            panic!("promtool test rules {} failed (see above)", file.display());
        }
    }
}

#[test]
fn anchors_follow_github() {
    assert_eq!(anchor(" WeirOutboxLagHigh"), "weiroutboxlaghigh");
    assert_eq!(
        anchor("Deploy, drain and crash recovery"),
        "deploy-drain-and-crash-recovery"
    );
    assert_eq!(anchor("Events (RabbitMQ)"), "events-rabbitmq");
}
