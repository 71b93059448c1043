//! The Grafana dashboards (`deploy/grafana/**/*.json`) and the Prometheus rules
//! (`deploy/prometheus/**/*.yml`) query only metrics, and labels, that a live Weir exposes.
//!
//! Every PromQL expression (panel targets, annotations, template variable queries, rule
//! `expr`s; promtool unit-test files under a `tests/` folder are not rules and are skipped) is
//! parsed with `promql-parser` (the parser GreptimeDB uses) after Grafana's variables are
//! substituted. Each selector's metric name must then be:
//! - a series in the live `/metrics` text of running servers (PostgreSQL, RabbitMQ and Redis
//!   configured, traffic driven so lazily created series exist: see [`drive`]), with every
//!   label the selector matches on or groups by (aggregations' `by`), except the target
//!   labels Prometheus adds at scrape time ([`TARGET_LABELS`]); or
//! - the name of a recording rule defined in `deploy/prometheus` (names with `:` must be); or
//! - a series Prometheus makes itself ([`SCRAPE_SERIES`]); or
//! - in [`ALLOWLIST`], which must stay needed: an allowlisted name that appears live, or that
//!   nothing references any more, fails the test as stale.
//!
//! The servers share the test process's meter provider (one registry per process), so the
//! `/metrics` text includes what other tests of this binary recorded; [`drive`] causes every
//! series itself so the outcome does not depend on them, and nothing here can cause what the
//! allowlist names.
//!
//! The dashboards are also checked as Grafana dashboard models: a `uid` unique across files,
//! unique panel ids, the `DS_PROMETHEUS` datasource variable used by every query panel, the
//! `job` and `instance` variables, titles and descriptions on every panel.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use promql_parser::label::MatchOp;
use promql_parser::parser::{self, Expr, LabelModifier};
use promql_parser::util::{ExprVisitor, walk_expr};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use weir_host::events::{BackpressureConfig, EventsConfig};
use weir_host::server::config::{DatabaseUrl, Secret};
use weir_plugin_artifacts as artifacts;

use crate::support::{Backend, TestServer, check, eventually, metric, order_body};

/// Series named in dashboards or rules that a test cannot make a server expose, each with why.
/// Each entry must still be referenced and still be absent from the live text.
const ALLOWLIST: &[(&str, &str)] = &[(
    "weir_http_accept_errors_total",
    "counted only when accept() itself fails (the process is out of file descriptors); \
     causing that would starve every other test sharing this process",
)];

/// Series Prometheus adds to every scrape target itself: never in `/metrics`.
const SCRAPE_SERIES: &[&str] = &["up"];

/// Labels Prometheus attaches to every series at scrape time.
const TARGET_LABELS: &[&str] = &["job", "instance"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every file under `dir` whose name ends with one of `exts`, sorted.
fn files(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if exts
                .iter()
                .any(|x| p.file_name().unwrap().to_string_lossy().ends_with(x))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn shown(p: &Path) -> String {
    p.strip_prefix(repo()).unwrap_or(p).display().to_string()
}

/// One PromQL expression and where it is written.
#[derive(Debug, Clone)]
struct Query {
    at: String,
    expr: String,
    /// For `label_values(selector, label)`: the label it reads.
    reads_label: Option<String>,
}

/// What `deploy/` asks of `/metrics`.
#[derive(Debug, Default)]
struct Deployed {
    queries: Vec<Query>,
    /// Names defined by recording rules.
    recorded: BTreeSet<String>,
    /// Problems with the files themselves.
    problems: Vec<String>,
    dashboards: Vec<(String, usize)>,
}

fn collect() -> Deployed {
    let mut d = Deployed::default();
    let grafana = repo().join("deploy/grafana");
    let dashboards = files(&grafana, &[".json"]);
    assert!(
        !dashboards.is_empty(),
        "no dashboards under {}",
        grafana.display()
    );
    let mut uids = BTreeMap::new();
    for path in &dashboards {
        let text = std::fs::read_to_string(path).unwrap();
        match serde_json::from_str::<Value>(&text) {
            Ok(dash) => check_dashboard(&shown(path), &dash, &mut uids, &mut d),
            Err(e) => d.problems.push(format!("{}: not JSON: {e}", shown(path))),
        }
    }
    check_provisioning(&grafana.join("provisioning/dashboards.yaml"), &mut d);
    for path in files(&repo().join("deploy/prometheus"), &[".yml", ".yaml"]) {
        if path
            .strip_prefix(repo().join("deploy/prometheus"))
            .unwrap()
            .components()
            .any(|c| c.as_os_str() == "tests")
        {
            continue; // promtool unit tests, not rules
        }
        collect_rules(&path, &mut d);
    }
    d
}

/// A Grafana dashboard model (schema ~39) whose queries go to the `DS_PROMETHEUS` variable.
fn check_dashboard(
    file: &str,
    dash: &Value,
    uids: &mut BTreeMap<String, String>,
    d: &mut Deployed,
) {
    let mut problem = |p: String| d.problems.push(format!("{file}: {p}"));
    match dash["uid"].as_str() {
        Some(uid) if !uid.is_empty() && uid.len() <= 40 => {
            if let Some(other) = uids.insert(uid.to_owned(), file.to_owned()) {
                problem(format!("uid {uid} is also the uid of {other}"));
            }
        }
        _ => problem("no uid (1-40 characters)".into()),
    }
    if dash["title"].as_str().is_none_or(str::is_empty) {
        problem("no title".into());
    }
    if !dash["schemaVersion"]
        .as_u64()
        .is_some_and(|v| (36..=41).contains(&v))
    {
        problem(format!(
            "schemaVersion {} (want 36..=41)",
            dash["schemaVersion"]
        ));
    }
    let vars = dash["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let var = |name: &str| vars.iter().find(|v| v["name"] == name).cloned();
    match var("DS_PROMETHEUS") {
        Some(v) if v["type"] == "datasource" && v["query"] == "prometheus" => {}
        _ => problem("no datasource variable DS_PROMETHEUS (type datasource, prometheus)".into()),
    }
    for name in ["job", "instance"] {
        if var(name).is_none_or(|v| v["type"] != "query") {
            problem(format!("no `{name}` query variable"));
        }
    }
    let mut queries = Vec::new();
    for v in &vars {
        if v["type"] == "query" {
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .or(v["definition"].as_str())
                .unwrap_or_default();
            queries.push((format!("variable {}", v["name"]), q.to_owned()));
        }
    }
    let mut ids = BTreeSet::new();
    let mut count = 0;
    let mut panels: Vec<Value> = dash["panels"].as_array().cloned().unwrap_or_default();
    while let Some(p) = panels.pop() {
        if let Some(nested) = p["panels"].as_array() {
            panels.extend(nested.iter().cloned());
        }
        let title = p["title"].as_str().unwrap_or_default().to_owned();
        match p["id"].as_u64() {
            Some(id) if ids.insert(id) => {}
            Some(id) => problem(format!("panel id {id} is not unique (panel {title:?})")),
            None => problem(format!("panel {title:?} has no id")),
        }
        if p["gridPos"]["w"].as_u64().is_none() || p["gridPos"]["h"].as_u64().is_none() {
            problem(format!("panel {title:?} has no gridPos"));
        }
        if title.is_empty() {
            problem(format!("panel {} has no title", p["id"]));
        }
        let kind = p["type"].as_str().unwrap_or_default();
        if kind == "row" {
            continue;
        }
        count += 1;
        if p["description"].as_str().is_none_or(str::is_empty) {
            problem(format!("panel {title:?} has no description"));
        }
        if kind == "text" {
            continue;
        }
        if p["datasource"]["uid"] != "${DS_PROMETHEUS}" {
            problem(format!("panel {title:?} does not query ${{DS_PROMETHEUS}}"));
        }
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problem(format!("panel {title:?} has no query"));
        }
        for t in &targets {
            match t["expr"].as_str() {
                Some(e) if !e.trim().is_empty() => {}
                _ => problem(format!("panel {title:?} has a target without expr")),
            }
            if t["datasource"]["uid"]
                .as_str()
                .is_some_and(|u| u != "${DS_PROMETHEUS}")
            {
                problem(format!(
                    "a target of panel {title:?} queries another datasource"
                ));
            }
        }
    }
    // Every `expr` anywhere (targets, annotations): nothing is left unchecked.
    exprs_in(dash, "", &mut queries);
    for (at, q) in queries {
        let (expr, reads_label) = label_values(&q);
        d.queries.push(Query {
            at: format!("{file}: {at}"),
            expr,
            reads_label,
        });
    }
    d.dashboards.push((file.to_owned(), count));
}

/// Every string under an `expr` key, with a readable path (panel titles where known).
fn exprs_in(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            let here = match m.get("title").and_then(Value::as_str) {
                Some(t) if m.contains_key("targets") => format!("panel {t:?}"),
                _ => match m.get("name").and_then(Value::as_str) {
                    Some(n) if m.contains_key("expr") => format!("annotation {n:?}"),
                    _ => at.to_owned(),
                },
            };
            for (k, child) in m {
                match (k.as_str(), child) {
                    ("expr", Value::String(e)) => out.push((here.clone(), e.clone())),
                    _ => exprs_in(child, &here, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|c| exprs_in(c, at, out)),
        _ => {}
    }
}

/// `label_values(selector, label)` as (selector, Some(label)); any other query as it is.
fn label_values(q: &str) -> (String, Option<String>) {
    let t = q.trim();
    if let Some(inner) = t
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
        && let Some((selector, label)) = inner.rsplit_once(',')
    {
        return (selector.trim().to_owned(), Some(label.trim().to_owned()));
    }
    (t.to_owned(), None)
}

fn check_provisioning(path: &Path, d: &mut Deployed) {
    let Ok(text) = std::fs::read_to_string(path) else {
        d.problems.push(format!("{} is missing", shown(path)));
        return;
    };
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).unwrap_or_default();
    let providers = docs.first().and_then(|y| y["providers"].as_vec().cloned());
    let ok = providers.is_some_and(|ps| {
        !ps.is_empty()
            && ps.iter().all(|p| {
                p["type"].as_str() == Some("file") && p["options"]["path"].as_str().is_some()
            })
    });
    if !ok || docs.first().and_then(|y| y["apiVersion"].as_i64()) != Some(1) {
        d.problems.push(format!(
            "{}: not a dashboard provisioning file (apiVersion 1, file providers with options.path)",
            shown(path)
        ));
    }
}

fn collect_rules(path: &Path, d: &mut Deployed) {
    let file = shown(path);
    let text = std::fs::read_to_string(path).unwrap();
    let docs = match yaml_rust2::YamlLoader::load_from_str(&text) {
        Ok(docs) => docs,
        Err(e) => {
            d.problems.push(format!("{file}: not YAML: {e}"));
            return;
        }
    };
    for doc in docs {
        // Other Prometheus files (a scrape configuration) have no rule groups.
        let Some(groups) = doc["groups"].as_vec() else {
            continue;
        };
        for g in groups {
            for r in g["rules"].as_vec().into_iter().flatten() {
                let name = r["alert"].as_str().or(r["record"].as_str()).unwrap_or("?");
                if let Some(record) = r["record"].as_str() {
                    d.recorded.insert(record.to_owned());
                }
                match r["expr"].as_str() {
                    Some(e) => d.queries.push(Query {
                        at: format!("{file}: rule {name}"),
                        expr: e.to_owned(),
                        reads_label: None,
                    }),
                    None => d.problems.push(format!("{file}: rule {name} has no expr")),
                }
            }
        }
    }
}

/// Grafana's variables replaced so the text is PromQL: interval variables by `5m`, every other
/// `$var` / `${var}` / `${var:format}` (they stand in label values) by `x`.
fn substitute(expr: &str) -> String {
    let mut s = expr.to_owned();
    for v in [
        "$__rate_interval",
        "$__interval",
        "$__range",
        "${__rate_interval}",
        "${__interval}",
        "${__range}",
    ] {
        s = s.replace(v, "5m");
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'{') {
            for c in chars.by_ref() {
                if c == '}' {
                    break;
                }
            }
        } else {
            while chars
                .peek()
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
            {
                chars.next();
            }
        }
        out.push('x');
    }
    out
}

/// One use of a metric in an expression: its name and the labels the expression needs on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Use {
    name: String,
    labels: BTreeSet<String>,
}

/// The labels an aggregation groups by, and the metrics inside it (one must have each label).
type Grouping = (BTreeSet<String>, Vec<String>);

/// The metrics an expression reads: each selector's name (`__name__` equality included) with
/// its matchers' labels, and the labels each aggregation groups by (`by`), charged to every
/// selector inside that aggregation (at least one of them must have the label).
fn uses(expr: &Expr) -> Result<(Vec<Use>, Vec<Grouping>), String> {
    #[derive(Default)]
    struct V {
        uses: Vec<Use>,
        groups: Vec<Grouping>,
        problems: Vec<String>,
    }
    impl ExprVisitor for V {
        type Error = ();
        fn pre_visit(&mut self, e: &Expr) -> Result<bool, ()> {
            let vs = match e {
                Expr::VectorSelector(vs) => Some(vs),
                Expr::MatrixSelector(ms) => Some(&ms.vs),
                Expr::Aggregate(a) => {
                    if let Some(LabelModifier::Include(by)) = &a.modifier {
                        let mut inner = V::default();
                        let _ = walk_expr(&mut inner, &a.expr);
                        self.groups.push((
                            by.labels.iter().cloned().collect(),
                            inner.uses.into_iter().map(|u| u.name).collect(),
                        ));
                    }
                    None
                }
                _ => None,
            };
            if let Some(vs) = vs {
                let mut name = vs.name.clone();
                let mut labels = BTreeSet::new();
                let all = vs
                    .matchers
                    .matchers
                    .iter()
                    .chain(vs.matchers.or_matchers.iter().flatten());
                for m in all {
                    if m.name == "__name__" {
                        match m.op {
                            MatchOp::Equal => name = Some(m.value.clone()),
                            _ => self
                                .problems
                                .push(format!("a __name__ regex ({}) cannot be checked", m.value)),
                        }
                    } else {
                        labels.insert(m.name.clone());
                    }
                }
                match name {
                    Some(name) => self.uses.push(Use { name, labels }),
                    None => self
                        .problems
                        .push("a selector without a metric name".into()),
                }
            }
            Ok(true)
        }
    }
    let mut v = V::default();
    let _ = walk_expr(&mut v, expr);
    if v.problems.is_empty() {
        Ok((v.uses, v.groups))
    } else {
        Err(v.problems.join("; "))
    }
}

/// The live exposition: each series name with the label names seen on it, and the family
/// (the `# TYPE` name) each series belongs to.
#[derive(Debug, Default)]
struct Live {
    series: BTreeMap<String, BTreeSet<String>>,
    family: BTreeMap<String, String>,
}

fn parse_exposition(text: &str) -> Live {
    let mut live = Live::default();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, kind)) = rest.split_once(' ') {
                types.insert(name.to_owned(), kind.to_owned());
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = line[..end].to_owned();
        let labels = live.series.entry(name).or_default();
        if line[end..].starts_with('{') {
            labels.extend(label_names(&line[end + 1..]));
        }
    }
    for name in live.series.keys() {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|s| name.strip_suffix(s))
            .find(|base| types.get(*base).is_some_and(|k| k == "histogram"))
            .unwrap_or(name);
        live.family.insert(name.clone(), family.to_owned());
    }
    live
}

/// The label names of `a="1",b="x\"}"} 3` (values may hold `,`, `}` and escaped quotes).
fn label_names(s: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut chars = s.chars();
    loop {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let name = name.trim().trim_start_matches(',').trim();
        if name.is_empty() || name.starts_with('}') {
            return names;
        }
        names.push(name.to_owned());
        if chars.next() != Some('"') {
            return names;
        }
        let mut escaped = false;
        for c in chars.by_ref() {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => break,
                _ => escaped = false,
            }
        }
    }
}

/// What is wrong with `deployed` against `live`, and which families were used.
fn verify(deployed: &Deployed, live: &Live) -> (Vec<String>, BTreeSet<String>) {
    let mut problems = deployed.problems.clone();
    let mut used = BTreeSet::new();
    let mut allowlisted_used = BTreeSet::new();
    for q in &deployed.queries {
        let promql = substitute(&q.expr);
        let parsed = match parser::parse(&promql) {
            Ok(e) => e,
            Err(e) => {
                problems.push(format!("{}: not PromQL ({e}): {}", q.at, q.expr));
                continue;
            }
        };
        let (mut found, groups) = match uses(&parsed) {
            Ok(u) => u,
            Err(e) => {
                problems.push(format!("{}: {e}: {}", q.at, q.expr));
                continue;
            }
        };
        if let (Some(label), Some(first)) = (&q.reads_label, found.first_mut()) {
            first.labels.insert(label.clone());
        }
        // A recording rule may state a constant (an SLO's objective: `vector(0.999)`).
        let constant = promql.trim().starts_with("vector(") && !promql.contains('{');
        if found.is_empty() && !constant {
            problems.push(format!("{}: reads no metric: {}", q.at, q.expr));
        }
        for u in &found {
            if deployed.recorded.contains(&u.name) {
                continue;
            }
            if u.name.contains(':') {
                problems.push(format!(
                    "{}: {} looks like a recording rule but no rule in deploy/prometheus records it",
                    q.at, u.name
                ));
                continue;
            }
            if SCRAPE_SERIES.contains(&u.name.as_str()) {
                continue;
            }
            if ALLOWLIST.iter().any(|(n, _)| *n == u.name) {
                allowlisted_used.insert(u.name.clone());
                continue;
            }
            let Some(have) = live.series.get(&u.name) else {
                problems.push(format!(
                    "{}: metric {} does not exist in /metrics (expr: {})",
                    q.at, u.name, q.expr
                ));
                continue;
            };
            used.insert(live.family[&u.name].clone());
            for l in &u.labels {
                if !have.contains(l) && !TARGET_LABELS.contains(&l.as_str()) {
                    problems.push(format!(
                        "{}: {} has no label {l} in /metrics (it has {have:?})",
                        q.at, u.name
                    ));
                }
            }
        }
        for (labels, names) in &groups {
            let known: Vec<&BTreeSet<String>> =
                names.iter().filter_map(|n| live.series.get(n)).collect();
            if known.is_empty() {
                continue; // only rule-defined, allowlisted or scrape series inside
            }
            for l in labels {
                if !TARGET_LABELS.contains(&l.as_str()) && !known.iter().any(|h| h.contains(l)) {
                    problems.push(format!(
                        "{}: groups by {l}, which none of {names:?} has in /metrics",
                        q.at
                    ));
                }
            }
        }
    }
    for (name, why) in ALLOWLIST {
        if live.series.contains_key(*name) {
            problems.push(format!(
                "allowlist entry {name} is stale: it is in /metrics now, remove it ({why})"
            ));
        }
        if !allowlisted_used.contains(*name) {
            problems.push(format!(
                "allowlist entry {name} is stale: no dashboard or rule uses it any more"
            ));
        }
    }
    (problems, used)
}

/// The dashboards are valid Grafana models and every query parses (no server needed).
#[test]
fn dashboards_are_valid_grafana_models_with_parsable_queries() {
    let d = collect();
    let mut problems = d.problems.clone();
    for q in &d.queries {
        if let Err(e) = parser::parse(&substitute(&q.expr)) {
            problems.push(format!("{}: not PromQL ({e}): {}", q.at, q.expr));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let names: Vec<&str> = d.dashboards.iter().map(|(f, _)| f.as_str()).collect();
    for want in ["overview", "dependencies", "plugins", "events", "shutdown"] {
        assert!(
            names.iter().any(|n| n.contains(want)),
            "no {want} dashboard in {names:?}"
        );
    }
}

/// The extraction itself: names from every selector form (instant, range, subquery,
/// `__name__`), labels from matchers and `by`, histogram series mapped to their family.
#[test]
fn extraction_finds_every_selector_and_label() {
    let e = parser::parse(&substitute(
        r#"histogram_quantile(0.9, sum by (le, http_route) (rate(a_bucket{job=~"$job", x="${v}"}[$__rate_interval])))
           / on() group_left max_over_time(b[1h:5m]) + {__name__="c", y!="1"} or rec:rule:ratio"#,
    ))
    .unwrap();
    let (found, groups) = uses(&e).unwrap();
    let names: Vec<&str> = found.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["a_bucket", "b", "c", "rec:rule:ratio"]);
    assert_eq!(
        found[0].labels,
        BTreeSet::from(["job".to_owned(), "x".to_owned()])
    );
    assert_eq!(found[2].labels, BTreeSet::from(["y".to_owned()]));
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].1, ["a_bucket"]);
    let live = parse_exposition(
        "# TYPE a histogram\na_bucket{le=\"1\",http_route=\"/v1/orders/{id}\",q=\"a,b\\\"}\"} 1\n\
         a_sum 1\na_count{http_route=\"x\"} 1\n# TYPE c_total counter\nc_total{y=\"2\"} 3\n",
    );
    assert_eq!(live.family["a_bucket"], "a");
    assert_eq!(live.family["a_count"], "a");
    assert_eq!(live.family["c_total"], "c_total");
    assert_eq!(
        live.series["a_bucket"],
        BTreeSet::from(["le".to_owned(), "http_route".to_owned(), "q".to_owned()])
    );
    // A missing metric and a missing label are both reported.
    let deployed = Deployed {
        queries: vec![Query {
            at: "t".into(),
            expr: r#"sum by (nope) (rate(a_count{http_route="x", z="1"}[5m])) + c_total + gone"#
                .into(),
            reads_label: None,
        }],
        ..Deployed::default()
    };
    let (problems, _) = verify(&deployed, &live);
    let text = problems.join("\n");
    assert!(text.contains("metric gone does not exist"), "{text}");
    assert!(text.contains("a_count has no label z"), "{text}");
    assert!(text.contains("groups by nope"), "{text}");
}

/// Every metric a dashboard or rule queries exists in the live `/metrics` of servers that ran
/// with PostgreSQL, RabbitMQ and Redis and saw the traffic of [`drive`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_and_rule_queries_metrics_a_live_server_exposes() {
    let started = Instant::now();
    let deployed = collect();
    let text = drive().await;
    let live = parse_exposition(&text);
    // The error-code label is bounded by the catalog.
    let catalog: BTreeSet<&str> = weir_host::http::error::codes::CATALOG
        .iter()
        .map(|s| s.code)
        .collect();
    for line in text
        .lines()
        .filter(|l| l.starts_with("weir_http_server_errors_total{"))
    {
        let code = line
            .split("code=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_default();
        assert!(
            catalog.contains(code),
            "code {code:?} is not in the catalog: {line}"
        );
    }
    let (problems, used) = verify(&deployed, &live);
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
    eprintln!(
        "checked {} queries of {:?} against {} live series in {:?}; families used: {used:?}",
        deployed.queries.len(),
        deployed.dashboards,
        live.series.len(),
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// Driving traffic
// ---------------------------------------------------------------------------------------

const BROKER: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const REDIS: &str = "redis://127.0.0.1:6379/0";
const POSTGRES: &str = "127.0.0.1:5432";
const TOKEN: &str = "dashboards-test-admin-token-0123";
/// Upper bound of any wait on the broker or a background worker.
const PATIENCE: Duration = Duration::from_secs(60);

/// Run the servers and the traffic that make every deployed series exist; the `/metrics`
/// text at the end (one registry per process: every server's series are in it).
async fn drive() -> String {
    let main = drive_main().await;
    exhaust_an_instance_pool().await;
    refuse_a_connection().await;
    adaptive_concurrency_limit().await;
    database_outage().await;
    restart_after_a_clean_drain().await;
    let text = main.0.metrics().await;
    main.0.stop().await;
    main.1.cleanup().await;
    text
}

/// A plugin runtime of one instance held by a sleeping call, then a call that waits for it
/// and is refused: the instance-pool series (in use, waiting, wait, exhausted).
async fn exhaust_an_instance_pool() {
    use weir_host::runtime::{InvokeError, Runtime, RuntimeConfig};
    let mut config = RuntimeConfig {
        max_instances: 1,
        ..RuntimeConfig::default()
    };
    config.budget.timeout = PATIENCE;
    let rt = Runtime::new(
        config,
        Arc::new(weir_host::capabilities::catalog::StaticCatalog::default()),
    )
    .expect("engine");
    let sleeper = rt
        .load_file(Path::new(artifacts::HOSTILE_SLEEP), |_| BTreeMap::new())
        .await
        .expect("load the sleep plugin");
    let request = weir_core::domain::OrderRequest {
        customer_id: "cus_pool".into(),
        currency: "EUR".into(),
        lines: vec![weir_core::domain::LineRequest {
            sku: "KB-001".into(),
            quantity: 1,
        }],
        metadata: BTreeMap::new(),
    };
    let holder = {
        let (rt, sleeper, request) = (rt.clone(), sleeper.clone(), request.clone());
        tokio::spawn(async move {
            let _ = rt.place_order(&sleeper, &request, None).await;
        })
    };
    let until = Instant::now() + PATIENCE;
    while rt.instances_in_use() < 1 {
        assert!(
            Instant::now() < until,
            "the sleeping call never held the instance"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(20);
    let refused = rt.place_order(&sleeper, &request, Some(deadline)).await;
    assert!(
        matches!(refused, Err(InvokeError::PoolExhausted { .. })),
        "{refused:?}"
    );
    holder.abort();
}

/// Poll the metrics of `s` (bounded) until `what` holds.
async fn metrics_until(s: &TestServer, what: &str, want: impl Fn(&str) -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let text = s.metrics().await;
        if want(&text) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not seen in /metrics within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The test's own broker connection (confirms on).
struct Broker {
    conn: Connection,
    channel: lapin::Channel,
    names: EventsConfig,
    refuse: String,
}

impl Broker {
    async fn connect(names: &EventsConfig) -> Self {
        let conn = Connection::connect(BROKER, ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ on 127.0.0.1:5672 (is it running?)");
        let channel = conn.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        // The relay's exchange, declared as the relay declares it, with no queue yet.
        channel
            .exchange_declare(
                names.exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        Self {
            conn,
            channel,
            refuse: format!("{}.refuse", names.queue),
            names: names.clone(),
        }
    }

    /// Bind `queue` (declared with `args`) to every order event.
    async fn bind(&self, queue: &str, args: FieldTable) {
        self.channel
            .queue_declare(queue.into(), QueueDeclareOptions::default(), args)
            .await
            .unwrap();
        self.channel
            .queue_bind(
                queue.into(),
                self.names.exchange.as_str().into(),
                "order.#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
    }

    async fn publish_inbound(&self, routing_key: &str, body: &[u8]) {
        let confirm = self
            .channel
            .basic_publish(
                self.names.inbound_exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                body,
                BasicProperties::default()
                    .with_content_type("application/cloudevents+json".into())
                    .with_message_id("dashboards-poison".into()),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(confirm, lapin::Confirmation::Ack(None), "inbound publish");
    }

    async fn cleanup(self) {
        let n = &self.names;
        for q in [
            n.queue.clone(),
            n.retry_queue(),
            n.dead_letter_queue(),
            self.refuse.clone(),
            format!("{}.tap", n.queue),
        ] {
            let _ = self
                .channel
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for x in [
            n.exchange.clone(),
            n.inbound_exchange.clone(),
            n.dead_letter_exchange(),
        ] {
            let _ = self
                .channel
                .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
        let _ = self.conn.close(200, "test done".into()).await;
    }
}

/// The admin API of `s`.
async fn admin(
    s: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    bytes: Option<Vec<u8>>,
) -> (StatusCode, Value) {
    let mut req = s
        .client
        .request(method, format!("{}/admin/v1/plugins{path}", s.ops))
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    if let Some(b) = bytes {
        req = req.body(b);
    }
    let res = req.send().await.expect("admin request");
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn upload(s: &TestServer, path: &str) -> String {
    let (status, body) = admin(
        s,
        reqwest::Method::POST,
        "",
        None,
        Some(std::fs::read(path).unwrap()),
    )
    .await;
    assert!(status.is_success(), "upload {path}: {status} {body}");
    body["digest"].as_str().unwrap().to_owned()
}

async fn set_release(s: &TestServer, mut desired: Value) {
    let (_, plugin) = admin(s, reqwest::Method::GET, "/orders", None, None).await;
    desired["generation"] = json!(plugin["release"]["generation"].as_i64().unwrap_or(0));
    let (status, body) = admin(
        s,
        reqwest::Method::PUT,
        "/orders/release",
        Some(desired),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

async fn place(s: &TestServer, key: &str) -> (StatusCode, Value) {
    let (status, _, body) = s
        .post_order(Some(key), &order_body("cus_dashboards", &[("KB-001", 1)]))
        .await;
    (status, body)
}

/// Place orders until the canary is rolled back automatically (bounded).
async fn until_rolled_back(s: &TestServer, prefix: &str) {
    for i in 0..500 {
        let (_, plugin) = admin(s, reqwest::Method::GET, "/orders", None, None).await;
        if plugin["release"]["canary"].is_null() {
            return;
        }
        let (status, body) = place(s, &format!("{prefix}-{i}")).await;
        assert!(
            [201, 500, 503].contains(&status.as_u16()),
            "{status}: {body}"
        );
    }
    panic!("the {prefix} canary was never rolled back");
}

/// The main server: PostgreSQL, RabbitMQ, Redis, the admin API and a refused component in
/// `plugins.dir`; orders, errors, edge refusals, authentication failures, event flows in
/// every relay outcome, a poison inbound message, two canaries rolled back and a shadow.
async fn drive_main() -> (TestServer, Broker) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let names = EventsConfig {
        exchange: format!("test.{id}.orders"),
        inbound_exchange: format!("test.{id}.inbound"),
        queue: format!("test.{id}.payments"),
        relay_poll: Duration::from_millis(50),
        relay_retry: Duration::from_millis(100),
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(500),
        retry_delay: Duration::from_millis(50),
        retry_max_delay: Duration::from_millis(200),
        max_retries: 1,
        backpressure: BackpressureConfig {
            check_interval: Duration::from_millis(100),
            ..Default::default()
        },
        ..EventsConfig::default()
    };
    let broker = Broker::connect(&names).await;
    let events = names.clone();
    let prefix = format!("weir:test:{id}:");
    let s = TestServer::start(Backend::Postgres, move |c, dir| {
        c.admin_token = Some(Secret::new(TOKEN));
        c.amqp_url = Some(weir_host::events::AmqpUrl::new(BROKER));
        c.events = events;
        c.policy.cache.redis_url = Some(REDIS.into());
        c.policy.cache.key_prefix = prefix;
        c.plugins.releases.rollback.min_calls = 5;
        c.plugins.releases.rollback.margin = 0.2;
        // A component admission refuses at start-up (counted by stage, left out).
        let plugins = dir.join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        std::fs::write(plugins.join("not-a-component.wasm"), b"not wasm").unwrap();
        c.plugins.dir = Some(plugins);
    })
    .await;
    eventually(
        "the broker connected",
        600,
        Duration::from_millis(100),
        || async {
            let (_, body) = s.readyz().await;
            check(&body, "broker")["detail"] == "connected"
        },
    )
    .await;

    // Relay outcomes, in order: no queue bound (returned), a queue that refuses every
    // message (nacked: publish failed), then a queue that takes it (confirmed).
    let (status, body) = place(&s, "events-1").await;
    assert_eq!(status, 201, "{body}");
    metrics_until(&s, "a returned event", |t| {
        metric(t, "weir_events_returned_total", &[]) >= 1.0
    })
    .await;
    let mut refuse = FieldTable::default();
    refuse.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
    refuse.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    broker.bind(&broker.refuse, refuse).await;
    metrics_until(&s, "a nacked publish", |t| {
        metric(t, "weir_events_publish_failed_total", &[]) >= 1.0
    })
    .await;
    broker
        .channel
        .queue_delete(broker.refuse.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    broker
        .bind(&format!("{}.tap", names.queue), FieldTable::default())
        .await;
    metrics_until(&s, "a confirmed event", |t| {
        metric(t, "weir_events_confirmed_total", &[]) >= 1.0
    })
    .await;
    // A poison inbound message: consumed and dead-lettered.
    broker
        .publish_inbound("payment.captured", b"{not json")
        .await;
    metrics_until(&s, "a dead-lettered message", |t| {
        metric(t, "weir_events_dead_lettered_total", &[]) >= 1.0
    })
    .await;

    // Errors and refusals of the API.
    let (status, _) = s.get(&format!("/v1/orders/{}", uuid::Uuid::now_v7())).await;
    assert_eq!(status, 404);
    let (status, _, _) = s
        .post_order(None, &order_body("cus_dashboards", &[("KB-001", 1)]))
        .await;
    assert_eq!(status, 400);
    let res = s
        .client
        .get(format!("{}/v1/orders", s.base))
        .header("x-api-key", "wk_not_a_key_0000000000000000")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "a made-up API key is refused");
    let res = s
        .client
        .post(format!("{}/v1/orders", s.base))
        .header("Idempotency-Key", "too-large")
        .header("content-type", "application/json")
        // Just over the 64 KiB limit: small enough to sit in the socket buffers, so the
        // server's early 413 (on Content-Length) never races the client's write.
        .body(vec![b' '; 70_000])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    for path in [
        "/v1/products",
        "/v1/orders",
        "/v1/events",
        "/v1/nothing/here",
    ] {
        s.get(path).await;
    }

    // Plugins: a trapping canary and a lying one, both rolled back; a shadow compared.
    let stable = s.state().orders_plugin().unwrap().meta.digest.clone();
    for (file, prefix) in [
        (artifacts::HOSTILE_ORDERS_TRAP, "trap"),
        (artifacts::HOSTILE_ORDERS_LIAR, "liar"),
    ] {
        let canary = upload(&s, file).await;
        set_release(
            &s,
            json!({"stable": stable, "canary": {"digest": canary, "weight": 50}}),
        )
        .await;
        until_rolled_back(&s, prefix).await;
    }
    // The liar (rolled back as a canary) as the shadow: a component no other test of this
    // process shadows, so their shadow-comparison counts stay their own (one metric registry).
    let next = upload(&s, artifacts::HOSTILE_ORDERS_LIAR).await;
    set_release(
        &s,
        json!({"stable": stable, "shadow": {"digest": next, "sample": 1.0}}),
    )
    .await;
    for i in 0..3 {
        assert_eq!(place(&s, &format!("shadowed-{i}")).await.0, 201);
    }
    metrics_until(&s, "shadow comparisons", |t| {
        metric(t, "weir_plugin_shadow_comparisons_total", &[]) >= 3.0
    })
    .await;
    // A background worker that fails once is restarted by the server's supervisor (no
    // production worker fails on a fault the test can inject without a broker outage).
    let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    s.state()
        .shutdown
        .supervisor()
        .spawn("test.dashboards", move |_| {
            let first = !failed.swap(true, std::sync::atomic::Ordering::SeqCst);
            async move {
                if first {
                    Err(weir_host::lifecycle::WorkerError::new("failing once"))
                } else {
                    Ok(())
                }
            }
        });
    metrics_until(&s, "a worker restart", |t| {
        metric(
            t,
            "weir_worker_restarts_total",
            &[("worker_name", "test.dashboards")],
        ) >= 1.0
    })
    .await;
    let (status, body) = s.readyz().await;
    assert_eq!(status, 200, "{body}");
    (s, broker)
}

/// A server whose API listener takes one connection: a second is refused.
/// A server stopped cleanly and started again on the same data: the second start reports how
/// the first run ended (`weir_previous_shutdown_timestamp_seconds`).
async fn restart_after_a_clean_drain() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("data");
    let first = {
        let dir = dir.clone();
        TestServer::start(Backend::Sqlite, move |c, _| c.data_dir = dir).await
    };
    first.stop().await;
    let second = TestServer::start(Backend::Sqlite, move |c, _| c.data_dir = dir).await;
    let (_, infoz) = second.ops_get("/infoz").await;
    assert_eq!(infoz["shutdown"]["previous"]["outcome"], "clean", "{infoz}");
    second.stop().await;
}

async fn refuse_a_connection() {
    use tokio::io::AsyncReadExt;
    let s = TestServer::start(Backend::Sqlite, |c, _| c.http.api.max_connections = 1).await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    // Accepted first (the accept queue is in order): it holds the only slot.
    let _held = TcpStream::connect(&addr).await.unwrap();
    let mut refused = TcpStream::connect(&addr).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(PATIENCE, refused.read(&mut buf))
        .await
        .expect("the refused connection is closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    metrics_until(&s, "a refused connection", |t| {
        metric(
            t,
            "weir_http_connections_refused_total",
            &[("listener", "api")],
        ) >= 1.0
    })
    .await;
    drop(_held);
    s.stop().await;
}

/// A server with the adaptive concurrency limit: its limit and the unloaded latency it
/// measured from one answered request (`min_rtt_samples = 1`).
async fn adaptive_concurrency_limit() {
    let s = TestServer::start(Backend::Sqlite, |c, _| {
        c.policy.adaptive_concurrency.enabled = true;
        c.policy.adaptive_concurrency.min_rtt_samples = 1;
    })
    .await;
    let (status, _) = s.get("/v1/products").await;
    assert_eq!(status, 200, "admitted under the adaptive limit's floor");
    metrics_until(&s, "the adaptive limit's gauges", |t| {
        metric(t, "weir_http_server_concurrency_limit", &[]) >= 1.0
            && metric(t, "weir_http_server_min_rtt_seconds", &[]) > 0.0
    })
    .await;
    s.stop().await;
}

/// A TCP proxy to PostgreSQL that the test can cut: open connections close, new ones are
/// refused.
struct Proxy {
    port: u16,
    accept: JoinHandle<()>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns = Arc::new(Mutex::new(Vec::new()));
        let c = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut out) = TcpStream::connect(POSTGRES).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                c.lock().unwrap().push(conn);
            }
        });
        Self {
            port,
            accept,
            conns,
        }
    }

    async fn cut(self) {
        self.accept.abort();
        let _ = self.accept.await;
        let conns: Vec<_> = self.conns.lock().unwrap().drain(..).collect();
        for c in conns {
            c.abort();
            let _ = c.await;
        }
    }
}

/// The database goes away under a catalog read: the read fails as unavailable and is
/// retried, the breaker opens, readiness fails.
async fn database_outage() {
    let proxy = Proxy::start().await;
    let port = proxy.port;
    let s = TestServer::start(Backend::Postgres, move |c, _| {
        let url = c.database_url.as_ref().unwrap().expose().to_owned();
        c.database_url = Some(DatabaseUrl::new(
            url.replace(POSTGRES, &format!("127.0.0.1:{port}")),
        ));
        c.database.acquire_timeout = Duration::from_millis(300);
        c.policy.cache.ttl = Duration::ZERO;
        let db = &mut c.policy.database;
        db.timeout = Duration::from_secs(10);
        db.breaker.min_calls = 2;
        db.breaker.failure_rate = 0.5;
        db.breaker.open_for = Duration::from_secs(60);
        c.runtime.catalog_timeout = Duration::from_secs(30);
        c.runtime.budget.timeout = Duration::from_secs(30);
        c.http.request_timeout = Duration::from_secs(30);
        c.idempotency.lock_ttl = Duration::from_secs(60);
    })
    .await;
    assert_eq!(place(&s, "before-outage").await.0, 201);
    let fault = s.state().deps.database.fault.clone();
    fault.hold();
    let order = {
        let (client, base) = (s.client.clone(), s.base.clone());
        tokio::spawn(async move {
            client
                .post(format!("{base}/v1/orders"))
                .header("Idempotency-Key", "during-outage")
                .json(&order_body("cus_dashboards", &[("KB-001", 1)]))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    eventually(
        "the catalog read is held",
        1200,
        Duration::from_millis(25),
        || {
            let n = fault.waiting();
            async move { n == 1 }
        },
    )
    .await;
    proxy.cut().await;
    fault.release();
    let status = order.await.unwrap();
    assert!(status.is_server_error(), "{status}");
    metrics_until(&s, "a retried catalog read and an opened breaker", |t| {
        metric(
            t,
            "weir_dependency_retries_total",
            &[("dependency", "database")],
        ) >= 1.0
            && metric(
                t,
                "weir_breaker_transitions_total",
                &[("dependency", "database"), ("to", "open")],
            ) >= 1.0
    })
    .await;
    let (status, _) = s.readyz().await;
    assert_eq!(status, 503, "the database is gone");
    s.stop().await;
}

/// Every alert's section in RUNBOOK.md ("Alerts and SLOs") names the dashboard panels to open,
/// and each named dashboard (by uid) and panel (by title) exists.
#[test]
fn every_alert_section_links_panels_that_exist() {
    let mut panels: BTreeSet<(String, String)> = BTreeSet::new();
    for path in files(&repo().join("deploy/grafana/dashboards"), &["json"]) {
        let model: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let uid = model["uid"].as_str().unwrap().to_owned();
        for p in model["panels"].as_array().unwrap() {
            if let Some(title) = p["title"].as_str() {
                panels.insert((uid.clone(), title.to_owned()));
            }
        }
    }
    let runbook = std::fs::read_to_string(repo().join("RUNBOOK.md")).unwrap();
    let alerts = &runbook[runbook
        .find("## Alerts and SLOs")
        .expect("an Alerts section")..];
    let alerts = &alerts[..alerts[3..].find("\n## ").map_or(alerts.len(), |i| i + 3)];
    let mut problems = Vec::new();
    let mut sections = 0;
    for section in alerts.split("\n### ").skip(1) {
        let name = section.lines().next().unwrap_or_default();
        if !name.starts_with("Weir") {
            continue;
        }
        sections += 1;
        let Some(line) = section.lines().find(|l| l.starts_with("Dashboard: ")) else {
            problems.push(format!("{name}: no `Dashboard:` line"));
            continue;
        };
        let uid = line.split('`').nth(1).unwrap_or_default();
        let titles: Vec<&str> = line
            .split_once("panels ")
            .map(|(_, rest)| rest.split('"').skip(1).step_by(2).collect())
            .unwrap_or_default();
        if titles.is_empty() {
            problems.push(format!("{name}: no panel named in {line:?}"));
        }
        for t in titles {
            if !panels.contains(&(uid.to_owned(), t.to_owned())) {
                problems.push(format!("{name}: no panel {t:?} in dashboard {uid:?}"));
            }
        }
    }
    assert!(sections >= 20, "only {sections} alert sections found");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
