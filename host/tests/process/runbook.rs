//! RUNBOOK.md, run: every operator command in it is in a fenced block, and the blocks run, in
//! document order, against real `weir` processes.
//!
//! - `runbook_is_well_formed`: every fenced block has a kind this runner knows (`sh`,
//!   `sh stops-instance`, `sh no-run`, `sh sql-runner`, `sql`, `toml`) and only known markers
//!   (`<!-- expect: -->`, `<!-- expect-contains: -->`, `<!-- no-run: -->`,
//!   `<!-- exercised-by: -->` right after it); no inline code in the prose is a command to
//!   type (those belong in blocks; [`NOT_COMMANDS`] is the short list of names that look like
//!   one); every variable a block uses is in the table of "Commands in this runbook", and that
//!   table is exactly what the runner sets ([`VARIABLES`]); every `no-run` block says why and
//!   names an existing file that contains each of its commands; every `toml` block is accepted
//!   by the service's own configuration loader.
//! - `runbook_commands_run_against_a_real_instance`: one `weir serve` on SQLite with an admin
//!   token and a RabbitMQ vhost of its own, a few orders placed and one payment applied, one
//!   payment for an unknown order dead-lettered; then every `sh` block with
//!   `bash -euo pipefail` (exit status 0, and its `expect` markers), every `sql` block through
//!   the runbook's own SQLite runner line; a `sh stops-instance` block must make the process
//!   exit 0, and the instance is started again on the same data directory.
//! - `runbook_sql_runs_on_postgresql`: every `sql` block through the runbook's PostgreSQL runner
//!   line against a `weir` on a throw-away PostgreSQL database with orders in it.
//!
//! Commands run in a scratch directory holding `deploy` (a link to the repository's) and the
//! component the runbook releases, `orders-0.2.0.wasm` (`plugins/orders-next`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag, TagEnd};
use regex::Regex;
use serde_json::{Value, json};
use weir_host::server::config::{Config, Overrides};
use weir_host::storage::testing::PgTestDb;

use crate::support::{POLL, WAIT, Weir, client, order_body, serve, tools_present};

/// The variables the blocks may use (the table of "Commands in this runbook"); the runner
/// sets them (`DATABASE_URL` in the PostgreSQL run, the others in the SQLite run).
const VARIABLES: &[&str] = &[
    "WEIR_API",
    "WEIR_OPS",
    "WEIR_ADMIN_URL",
    "WEIR_ADMIN_TOKEN",
    "WEIR_PID",
    "WEIR_DATA_DIR",
    "DATABASE_URL",
    "AMQP_URL",
    "RABBITMQ_VHOST",
];

/// Inline code in the prose that looks like a command but is a name: the service's own
/// command line, which the platform runs (a unit file, a container's command) and the prose
/// names next to the equivalent settings. Keep this list short: a command to type goes in a
/// block.
const NOT_COMMANDS: &[&str] = &["weir serve", "weir serve --strict"];

/// Longest a single block may run.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(120);

const TOKEN: &str = "runbook-doctest-admin-token";

/// The kinds of fenced blocks (the info string after the fence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// Run with `bash -euo pipefail` against the instance.
    Sh,
    /// Run; it stops the instance, which must exit 0; then the instance is started again.
    ShStopsInstance,
    /// Not run here; `no-run` says why, `exercised-by` names the file that runs it.
    ShNoRun,
    /// The commands that run `sql` blocks (`<query.sql`), one per database.
    ShSqlRunner,
    /// Queries run on both databases.
    Sql,
    /// A configuration snippet, loaded through [`Config::load`].
    Toml,
}

impl Kind {
    fn parse(info: &str) -> Option<Self> {
        match info.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["sh"] => Some(Self::Sh),
            ["sh", "stops-instance"] => Some(Self::ShStopsInstance),
            ["sh", "no-run"] => Some(Self::ShNoRun),
            ["sh", "sql-runner"] => Some(Self::ShSqlRunner),
            ["sql"] => Some(Self::Sql),
            ["toml"] => Some(Self::Toml),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Sh => "sh",
            Self::ShStopsInstance => "sh stops-instance",
            Self::ShNoRun => "sh no-run",
            Self::ShSqlRunner => "sh sql-runner",
            Self::Sql => "sql",
            Self::Toml => "toml",
        }
    }

    /// The markers a block of this kind may carry.
    fn markers(self) -> &'static [&'static str] {
        match self {
            Self::Sh | Self::Sql => &["expect", "expect-contains"],
            Self::ShNoRun => &["no-run", "exercised-by"],
            Self::ShStopsInstance | Self::ShSqlRunner | Self::Toml => &[],
        }
    }
}

/// One fenced block.
#[derive(Debug, Clone)]
struct Block {
    /// Line of the opening fence (1-based).
    line: usize,
    kind: Kind,
    code: String,
    /// `<!-- key: value -->` comments right after the closing fence.
    markers: BTreeMap<String, String>,
}

impl Block {
    fn marker(&self, key: &str) -> Option<&str> {
        self.markers.get(key).map(String::as_str)
    }

    fn describe(&self) -> String {
        format!(
            "RUNBOOK.md line {} (```{}):\n{}",
            self.line,
            self.kind.name(),
            self.code
        )
    }
}

/// RUNBOOK.md, parsed.
struct Runbook {
    text: String,
    blocks: Vec<Block>,
    /// Blocks of unknown kinds, bad markers: what is wrong, with the line.
    problems: Vec<String>,
    /// Inline code in the prose that is a command to type: (line, code).
    inline_commands: Vec<(usize, String)>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset].matches('\n').count() + 1
}

/// The `<!-- key: value -->` comments on the lines right after `end` (the end of a block).
fn markers_after(text: &str, end: usize) -> Result<BTreeMap<String, String>, String> {
    let mut rest = &text[end..];
    // The block's range may end before the newline of its closing fence.
    if !text[..end].ends_with('\n') {
        rest = rest.split_once('\n').map_or("", |(_, r)| r);
    }
    let mut markers = BTreeMap::new();
    loop {
        let trimmed = rest.trim_start_matches([' ', '\t']);
        let Some(comment) = trimmed.strip_prefix("<!--") else {
            return Ok(markers);
        };
        let Some((body, after)) = comment.split_once("-->") else {
            return Err("an HTML comment that does not end".to_owned());
        };
        let (key, value) = body
            .split_once(':')
            .ok_or_else(|| format!("a comment without `key:` after the block: {body:?}"))?;
        let value = value
            .lines()
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("\n")
            .trim()
            .to_owned();
        if markers.insert(key.trim().to_owned(), value).is_some() {
            return Err(format!("marker `{}` given twice", key.trim()));
        }
        rest = after.split_once('\n').map_or("", |(_, r)| r);
    }
}

/// Whether inline code `code` (whitespace collapsed) is a command an operator would type.
fn is_command(code: &str) -> bool {
    static COMMAND: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(concat!(
            // leading `VAR=value` assignments, then the command
            r"^(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*(?:",
            r"weir\s+(?:serve|migrate|plugin|apikey|dlq|help)\b",
            r"|(?:curl|psql|sqlite3|kill|kubectl|systemctl|rabbitmqctl|rabbitmqadmin|promtool|jq|bash|sudo|docker|helm|cargo|export|ulimit|redis-cli)\s+\S",
            r"|(?:SELECT|INSERT\s+INTO|UPDATE\s+\S+\s+SET|DELETE\s+FROM|WITH)\s",
            r")"
        ))
        .expect("command pattern")
    });
    COMMAND.is_match(code)
}

fn parse(text: &str) -> Runbook {
    let mut blocks = Vec::new();
    let mut problems = Vec::new();
    let mut inline_commands = Vec::new();
    let mut open: Option<(usize, String, String)> = None;
    for (event, range) in Parser::new_ext(text, Options::ENABLE_TABLES).into_offset_iter() {
        match event {
            Event::Start(Tag::CodeBlock(kind)) => {
                let info = match kind {
                    CodeBlockKind::Fenced(info) => info.to_string(),
                    CodeBlockKind::Indented => "(indented)".to_owned(),
                };
                open = Some((range.start, info, String::new()));
            }
            Event::Text(t) => {
                if let Some((_, _, code)) = open.as_mut() {
                    code.push_str(&t);
                }
            }
            Event::End(TagEnd::CodeBlock) => {
                let (start, info, code) = open.take().expect("a code block ends after it starts");
                let line = line_of(text, start);
                let Some(kind) = Kind::parse(&info) else {
                    problems.push(format!(
                        "line {line}: a code block of kind {info:?}; the runner knows `sh`, \
                         `sh stops-instance`, `sh no-run`, `sh sql-runner`, `sql` and `toml` \
                         (see \"Commands in this runbook\")"
                    ));
                    continue;
                };
                let markers = match markers_after(text, range.end) {
                    Ok(m) => m,
                    Err(e) => {
                        problems.push(format!("line {line}: {e}"));
                        continue;
                    }
                };
                for key in markers.keys() {
                    if !kind.markers().contains(&key.as_str()) {
                        problems.push(format!(
                            "line {line}: marker `{key}` on a `{}` block (allowed: {:?})",
                            kind.name(),
                            kind.markers()
                        ));
                    }
                }
                if code.trim().is_empty() {
                    problems.push(format!("line {line}: an empty block"));
                }
                blocks.push(Block {
                    line,
                    kind,
                    code,
                    markers,
                });
            }
            Event::Code(code) => {
                let code = code.split_whitespace().collect::<Vec<_>>().join(" ");
                if is_command(&code) && !NOT_COMMANDS.contains(&code.as_str()) {
                    inline_commands.push((line_of(text, range.start), code));
                }
            }
            _ => {}
        }
    }
    Runbook {
        text: text.to_owned(),
        blocks,
        problems,
        inline_commands,
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the host crate is inside the repository")
        .to_path_buf()
}

fn runbook() -> Runbook {
    let path = repo().join("RUNBOOK.md");
    parse(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

impl Runbook {
    fn of(&self, kind: Kind) -> impl Iterator<Item = &Block> {
        self.blocks.iter().filter(move |b| b.kind == kind)
    }

    /// The variables of the table in "Commands in this runbook".
    fn documented_variables(&self) -> BTreeSet<String> {
        let section = self
            .text
            .split_once("## Commands in this runbook")
            .map(|(_, rest)| rest.split("\n## ").next().unwrap_or_default())
            .expect("RUNBOOK.md has a section \"Commands in this runbook\"");
        let row = Regex::new(r"(?m)^\| `([A-Z_][A-Z0-9_]*)` \|").expect("row pattern");
        row.captures_iter(section)
            .map(|c| c[1].to_owned())
            .collect()
    }

    /// The line of the `sh sql-runner` block that uses `$var`.
    fn sql_runner(&self, var: &str) -> String {
        let runners: Vec<_> = self.of(Kind::ShSqlRunner).collect();
        assert_eq!(runners.len(), 1, "exactly one `sh sql-runner` block");
        let lines: Vec<_> = runners[0]
            .code
            .lines()
            .filter(|l| l.contains(&format!("\"${var}")))
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "one line of the sql-runner block uses ${var}:\n{}",
            runners[0].code
        );
        assert!(
            lines[0].contains("<query.sql"),
            "the sql-runner line reads <query.sql: {}",
            lines[0]
        );
        lines[0].to_owned()
    }

    /// Counts per kind, for the test log.
    fn census(&self) -> String {
        let mut counts: BTreeMap<Kind, usize> = BTreeMap::new();
        for b in &self.blocks {
            *counts.entry(b.kind).or_default() += 1;
        }
        counts
            .iter()
            .map(|(k, n)| format!("{} {n}", k.name()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The commands of a block: continuation lines joined, comments and blank lines dropped.
fn commands(code: &str) -> Vec<String> {
    let joined = code.replace("\\\n", " ");
    let comment = Regex::new(r"\s+#\s.*$").expect("comment pattern");
    joined
        .lines()
        .map(|l| comment.replace(l, "").trim().to_owned())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

#[test]
fn runbook_is_well_formed() {
    let rb = runbook();
    assert!(
        rb.problems.is_empty(),
        "RUNBOOK.md blocks:\n{}",
        rb.problems.join("\n")
    );
    assert!(
        rb.inline_commands.is_empty(),
        "RUNBOOK.md has commands in inline code; put each in a fenced block (see \"Commands in \
         this runbook\") or, if it only names the service's command line, in NOT_COMMANDS:\n{}",
        rb.inline_commands
            .iter()
            .map(|(line, c)| format!("  line {line}: `{c}`"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Every fence parsed: as many blocks as opening fences in the text.
    let fences = rb
        .text
        .lines()
        .filter(|l| l.trim_start().starts_with("```"))
        .count();
    assert_eq!(
        fences,
        2 * (rb.blocks.len()),
        "every fenced block is recognised (fence lines vs blocks parsed)"
    );
    // Every marker belongs to a block: one that does not follow a block right away is lost.
    let comments = Regex::new(r"(?m)^[ \t]*<!--").expect("comment pattern");
    let markers: usize = rb.blocks.iter().map(|b| b.markers.len()).sum();
    assert_eq!(
        comments.find_iter(&rb.text).count(),
        markers,
        "every HTML comment at the start of a line is a marker right after a block (no blank \
         line in between)"
    );
    eprintln!("RUNBOOK.md: {} blocks: {}", rb.blocks.len(), rb.census());

    // Variables: documented = what the runner sets; every one a block uses is documented.
    let documented = rb.documented_variables();
    let provided: BTreeSet<String> = VARIABLES.iter().map(|v| (*v).to_owned()).collect();
    assert_eq!(
        documented, provided,
        "the variables table of \"Commands in this runbook\" and what the runner sets"
    );
    let used = Regex::new(r"\$\{?([A-Z_][A-Z0-9_]*)").expect("variable pattern");
    let assigned =
        Regex::new(r"(?m)(?:^|[\s;&|(])(?:export\s+|local\s+)?([A-Z_][A-Z0-9_]*)=").expect("re");
    for b in rb
        .blocks
        .iter()
        .filter(|b| matches!(b.kind, Kind::Sh | Kind::ShStopsInstance | Kind::ShSqlRunner))
    {
        let own: BTreeSet<_> = assigned
            .captures_iter(&b.code)
            .map(|c| c[1].to_owned())
            .collect();
        for c in used.captures_iter(&b.code) {
            let var = &c[1];
            assert!(
                own.contains(var) || documented.contains(var),
                "${var} is not in the variables table of \"Commands in this runbook\": {}",
                b.describe()
            );
        }
    }

    // no-run blocks: why, and a file that runs each of their commands.
    let assignments = Regex::new(r#"^(?:[A-Za-z_][A-Za-z0-9_]*=(?:'[^']*'|"[^"]*"|\S+)\s+)*"#)
        .expect("assignment pattern");
    for b in rb.of(Kind::ShNoRun) {
        let why = b.marker("no-run").unwrap_or_default();
        assert!(
            !why.is_empty(),
            "a `sh no-run` block needs <!-- no-run: why -->: {}",
            b.describe()
        );
        let path = b.marker("exercised-by").unwrap_or_else(|| {
            panic!(
                "a `sh no-run` block needs <!-- exercised-by: PATH -->: {}",
                b.describe()
            )
        });
        let file = repo().join(path);
        let content = std::fs::read_to_string(&file).unwrap_or_else(|e| {
            panic!(
                "exercised-by {path}: {e} (a path relative to the repository): {}",
                b.describe()
            )
        });
        let content = content.split_whitespace().collect::<Vec<_>>().join(" ");
        for command in commands(&b.code) {
            let command = assignments.replace(&command, "");
            let command = command.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(
                content.contains(&command),
                "exercised-by {path} does not contain the command `{command}`: {}",
                b.describe()
            );
        }
    }

    // toml blocks: accepted by the service's own loader.
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, b) in rb.of(Kind::Toml).enumerate() {
        let path = dir.path().join(format!("snippet-{i}.toml"));
        std::fs::write(&path, &b.code).expect("write snippet");
        if let Err(e) = Config::load(&Overrides {
            config_file: Some(path),
            ..Overrides::default()
        }) {
            panic!(
                "the configuration loader refuses this snippet: {e}\n{}",
                b.describe()
            );
        }
    }
}

/// Where blocks run: the scratch directory, and the variables of one database.
struct Shell {
    cwd: PathBuf,
    vars: BTreeMap<&'static str, String>,
}

impl Shell {
    /// A scratch directory with `deploy` (the repository's) and `orders-0.2.0.wasm`.
    fn new(root: &Path) -> Self {
        let cwd = root.join("work");
        std::fs::create_dir_all(&cwd).expect("create the scratch directory");
        std::os::unix::fs::symlink(repo().join("deploy"), cwd.join("deploy"))
            .expect("link deploy/");
        std::fs::copy(
            weir_plugin_artifacts::ORDERS_NEXT,
            cwd.join("orders-0.2.0.wasm"),
        )
        .expect("copy orders-next");
        Self {
            cwd,
            vars: BTreeMap::new(),
        }
    }

    /// Run `script` with `bash -euo pipefail` in the scratch directory, with only the
    /// runner's variables of the service (none of the environment's), `weir` on the `PATH`.
    async fn bash(&self, script: &str) -> std::process::Output {
        let mut cmd = tokio::process::Command::new("bash");
        cmd.args(["-euo", "pipefail", "-c", script])
            .current_dir(&self.cwd)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        for (var, _) in std::env::vars() {
            if var.starts_with("WEIR")
                || var.starts_with("OTEL_")
                || VARIABLES.contains(&var.as_str())
                || ["REDIS_URL", "RUST_LOG"].contains(&var.as_str())
            {
                cmd.env_remove(&var);
            }
        }
        let bin = Path::new(env!("CARGO_BIN_EXE_weir"))
            .parent()
            .expect("the binary is in a directory")
            .to_path_buf();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![bin];
        paths.extend(std::env::split_paths(&path));
        cmd.env("PATH", std::env::join_paths(paths).expect("PATH"));
        for (var, value) in &self.vars {
            cmd.env(var, value);
        }
        tokio::time::timeout(BLOCK_TIMEOUT, cmd.output())
            .await
            .unwrap_or_else(|_| panic!("did not finish within {BLOCK_TIMEOUT:?}:\n{script}"))
            .expect("run bash")
    }

    /// Run `script` for `block`: exit status 0 and the block's expectations.
    async fn run(&self, block: &Block, script: &str) {
        let out = self.bash(script).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let failure = |what: String| {
            panic!(
                "{what}\n{}\n--- ran\n{script}\n--- stdout\n{stdout}--- stderr\n{stderr}",
                block.describe()
            )
        };
        // Shown with --nocapture (and in a failing test's output).
        eprintln!(
            "RUNBOOK.md line {} ({}): {} ({} lines of output)",
            block.line,
            block.kind.name(),
            out.status,
            stdout.lines().count()
        );
        if !out.status.success() {
            failure(out.status.to_string());
        }
        let lines: Vec<&str> = stdout.lines().map(str::trim).collect();
        if let Some(expected) = block.marker("expect")
            && lines.join("\n").trim() != expected
        {
            failure(format!("the output is not the expected one:\n{expected}"));
        }
        if let Some(expected) = block.marker("expect-contains") {
            for want in expected.lines() {
                if !stdout.contains(want) {
                    failure(format!("the output does not contain {want:?}"));
                }
            }
        }
    }

    /// Run a `sql` block through `runner` (a line of the `sh sql-runner` block).
    async fn sql(&self, block: &Block, runner: &str) {
        std::fs::write(self.cwd.join("query.sql"), &block.code).expect("write query.sql");
        self.run(block, runner).await;
    }
}

/// Poll `/readyz` (bounded) until it answers 200.
async fn wait_ready(weir: &Weir) {
    let http = client();
    let started = tokio::time::Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{}/readyz", weir.ops)).send().await
            && r.status() == 200
        {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "weir not ready within {WAIT:?}; stderr:\n{}",
            weir.stderr()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Place `n` orders (keys `runbook-<i>`); their API JSON.
async fn place_orders(weir: &Weir, n: usize) -> Vec<Value> {
    let http = client();
    let mut orders = Vec::new();
    for i in 0..n {
        let r = http
            .post(format!("{}/v1/orders", weir.api))
            .header("Idempotency-Key", format!("runbook-{i}"))
            .json(&order_body("cus_runbook", "CB-004"))
            .send()
            .await
            .expect("place an order");
        assert_eq!(r.status(), 201, "order placed");
        orders.push(r.json().await.expect("order JSON"));
    }
    orders
}

/// A RabbitMQ vhost of this test (`rabbitmqctl`), deleted on drop.
struct Vhost {
    name: String,
}

fn rabbitmqctl(args: &[&str]) {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("run rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Vhost {
    fn create() -> Self {
        let name = format!("weir-runbook-{}", uuid::Uuid::new_v4().simple());
        rabbitmqctl(&["add_vhost", &name]);
        let vhost = Self { name };
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            &vhost.name,
            "guest",
            ".*",
            ".*",
            ".*",
        ]);
        vhost
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self.name)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.name])
            .output();
    }
}

/// The broker side of the fixtures: a payment for `order` (applied) and one for an order
/// that does not exist (dead-lettered `unknown_order`, message id `runbook-unknown-order`).
async fn payments(weir: &Weir, amqp: &str, order: &Value) {
    let conn = lapin::Connection::connect(amqp, lapin::ConnectionProperties::default())
        .await
        .expect("connect to the test vhost");
    // The consumer declares its queue (and the inbound exchange) once connected.
    let passive = |queue: &'static str| {
        let conn = &conn;
        async move {
            let channel = conn.create_channel().await.ok()?;
            let q = channel
                .queue_declare(
                    queue.into(),
                    lapin::options::QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    lapin::types::FieldTable::default(),
                )
                .await
                .ok()?;
            let _ = channel.close(200, "done".into()).await;
            Some(q.message_count())
        }
    };
    // Declared and bound: a mandatory publish before the binding would come back NO_ROUTE.
    weir.consumer_connected().await;
    let channel = conn.create_channel().await.expect("channel");
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .expect("confirm_select");
    let unknown = uuid::Uuid::new_v4().to_string();
    for (message_id, order_id, amount) in [
        (
            "runbook-payment",
            order["id"].as_str().unwrap(),
            &order["total"],
        ),
        ("runbook-unknown-order", unknown.as_str(), &json!(900)),
    ] {
        let body = json!({
            "specversion": "1.0",
            "id": message_id,
            "source": "/payments",
            "type": "payment.captured",
            "subject": order_id,
            "datacontenttype": "application/json",
            "data": { "order_id": order_id, "amount": amount, "currency": "EUR" },
        })
        .to_string();
        let confirm = channel
            .basic_publish(
                "weir.payments".into(),
                "payment.captured".into(),
                lapin::options::BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                body.as_bytes(),
                lapin::BasicProperties::default()
                    .with_content_type("application/cloudevents+json".into())
                    .with_message_id(message_id.into())
                    .with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("publisher confirm");
        assert_eq!(confirm, lapin::Confirmation::Ack(None), "payment routed");
    }
    // Applied, and dead-lettered.
    let http = client();
    let started = tokio::time::Instant::now();
    loop {
        let status = http
            .get(format!(
                "{}/v1/orders/{}",
                weir.api,
                order["id"].as_str().unwrap()
            ))
            .send()
            .await
            .expect("get order")
            .json::<Value>()
            .await
            .expect("order JSON")["status"]
            .clone();
        if status == "paid" && passive("weir.payments.dlq").await == Some(1) {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "the payment was not applied (status {status}) or the unknown order's not \
             dead-lettered"
        );
        tokio::time::sleep(POLL).await;
    }
    let _ = conn.close(200, "done".into()).await;
}

/// The SQLite instance of the run, with its admin token and broker.
fn serve_sqlite(data: &Path, config: &Path, amqp: &str) -> tokio::process::Command {
    let mut cmd = serve(data);
    cmd.arg("--config")
        .arg(config)
        .env("WEIR_ADMIN_TOKEN", TOKEN)
        .env("AMQP_URL", amqp);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbook_commands_run_against_a_real_instance() {
    let rb = runbook();
    assert!(
        rb.problems.is_empty(),
        "{:?} (see runbook_is_well_formed)",
        rb.problems
    );
    if !tools_present(
        "the runbook test",
        &[
            "bash",
            "curl",
            "jq",
            "sqlite3",
            "promtool",
            "rabbitmqctl",
            "timeout",
            "xargs",
            "sha256sum",
        ],
    ) {
        return;
    }
    let vhost = Vhost::create();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = dir.path().join("weir.toml");
    // A sampling ratio below 1, so that raising it is a change.
    std::fs::write(&config, "[telemetry.sampling]\nratio = 0.25\n").expect("write config");
    let mut weir = Weir::spawn(serve_sqlite(&data, &config, &vhost.url())).await;
    wait_ready(&weir).await;
    let orders = place_orders(&weir, 3).await;
    payments(&weir, &vhost.url(), &orders[0]).await;

    let mut shell = Shell::new(dir.path());
    let runner = rb.sql_runner("WEIR_DATA_DIR");
    let set = |shell: &mut Shell, weir: &Weir| {
        shell.vars = BTreeMap::from([
            ("WEIR_API", weir.api.clone()),
            ("WEIR_OPS", weir.ops.clone()),
            ("WEIR_ADMIN_URL", weir.ops.clone()),
            ("WEIR_ADMIN_TOKEN", TOKEN.to_owned()),
            ("WEIR_PID", weir.pid().to_string()),
            ("WEIR_DATA_DIR", data.display().to_string()),
            ("AMQP_URL", vhost.url()),
            ("RABBITMQ_VHOST", vhost.name.clone()),
        ]);
    };
    set(&mut shell, &weir);
    let mut ran: BTreeMap<Kind, usize> = BTreeMap::new();
    for block in &rb.blocks {
        match block.kind {
            Kind::Sh => shell.run(block, &block.code).await,
            Kind::ShStopsInstance => {
                shell.run(block, &block.code).await;
                let code = weir.exit_code().await;
                assert_eq!(
                    code,
                    Some(0),
                    "the instance exits 0 after {}\nstderr:\n{}",
                    block.describe(),
                    weir.stderr()
                );
                weir.wait_log("shutdown complete").await;
                // The platform starts the new version on the same data.
                weir = Weir::spawn(serve_sqlite(&data, &config, &vhost.url())).await;
                set(&mut shell, &weir);
            }
            Kind::Sql => shell.sql(block, &runner).await,
            // Checked by runbook_is_well_formed; the runner line runs with every sql block.
            Kind::ShNoRun | Kind::ShSqlRunner | Kind::Toml => continue,
        }
        *ran.entry(block.kind).or_default() += 1;
    }
    eprintln!(
        "RUNBOOK.md: {} blocks ({}); run on SQLite: {}",
        rb.blocks.len(),
        rb.census(),
        ran.iter()
            .map(|(k, n)| format!("{} {n}", k.name()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let (status, _) = weir.terminate().await;
    assert!(status.success(), "weir exits 0 at the end: {status}");
    drop(vhost);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbook_sql_runs_on_postgresql() {
    let rb = runbook();
    assert!(
        rb.problems.is_empty(),
        "{:?} (see runbook_is_well_formed)",
        rb.problems
    );
    if !tools_present("the runbook test", &["bash", "psql"]) {
        return;
    }
    let db = PgTestDb::create()
        .await
        .expect("a PostgreSQL test database (is PostgreSQL on 127.0.0.1:5432?)");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = serve(&dir.path().join("data"));
    cmd.env("DATABASE_URL", db.url());
    let weir = Weir::spawn(cmd).await;
    wait_ready(&weir).await;
    place_orders(&weir, 3).await;

    let mut shell = Shell::new(dir.path());
    shell.vars.insert("DATABASE_URL", db.url().to_owned());
    let runner = rb.sql_runner("DATABASE_URL");
    let mut n = 0;
    for block in rb.of(Kind::Sql) {
        shell.sql(block, &runner).await;
        n += 1;
    }
    eprintln!("RUNBOOK.md: {n} sql blocks run on PostgreSQL");
    let (status, _) = weir.terminate().await;
    assert!(status.success(), "weir exits 0: {status}");
    db.drop_db().await.expect("drop the test database");
}
