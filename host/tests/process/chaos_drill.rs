//! The operators' chaos drill, `deploy/chaos/run.sh`, against real `weir` processes on
//! SQLite and on PostgreSQL: real SIGTERM and SIGKILL, restarts on the same data directory,
//! database and ports. The script must exit 0 with every invariant of its summary checked
//! (PASS), none failed or skipped.
//!
//! `WEIR_START_CMD` is a small script written for the test: it starts `weir serve` in the
//! background on the drill's ports and data and writes its pid to `weir.pid`, which
//! `WEIR_TERM_CMD` and `WEIR_KILL_CMD` signal. Those processes are not the test's children;
//! [`Drill`]'s drop kills the last one whatever happens.

use std::path::{Path, PathBuf};

use weir_host::storage::testing::PgTestDb;

use crate::support::{WAIT, tools_present};

/// The summary lines every run must report as PASS (the database ones need the database
/// invariants, which both runs check).
const INVARIANTS: &[&str] = &[
    "rotation: out -> readyz 503, livez 200; back -> readyz 200",
    "sigterm: zero 5xx among answered requests",
    "sigterm: every answer is 201",
    "sigterm: retries with the same key never create a second order",
    "kill -9 round 1: retries with the same key never create a second order",
    "kill -9 round 2: retries with the same key never create a second order",
    "every acknowledged key maps to exactly one order id",
    "every acknowledged order exists exactly once",
    "one completed idempotency record per key",
    "no order without its outbox event",
    "no completed 2xx key pointing at no order",
    "no order claimed by two keys",
    "stock books: reservations equal what open orders hold",
];

const TOKEN: &str = "chaos-drill-admin-token";

/// A port free now (bound and released): the drill restarts `weir` on the same ports.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The drill's directory: configuration, start script, data, pid file and log.
struct Drill {
    dir: tempfile::TempDir,
}

impl Drill {
    fn pid_file(&self) -> PathBuf {
        self.dir.path().join("weir.pid")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("weir.log")).unwrap_or_default()
    }
}

impl Drop for Drill {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.pid_file()) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", pid.trim()])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

async fn drill(pg: Option<&PgTestDb>) {
    let drill = Drill {
        dir: tempfile::tempdir().expect("tempdir"),
    };
    let dir = drill.dir.path();
    let (api, ops) = (free_port(), free_port());
    let data = dir.join("data");
    let config = dir.join("weir.toml");
    // Keys held by a killed process are free again after 10 s (the default, 30 s, would make
    // the retries wait longer); a generous request timeout (below the lock's, as the
    // configuration requires) and drain deadline, so a slow CI machine answers 504 or 503 to
    // none.
    std::fs::write(
        &config,
        "[http]\nrequest_timeout_ms = 8000\n\
         [idempotency]\nlock_ttl_ms = 10000\n\
         [shutdown]\ndrain_deadline_ms = 60000\n",
    )
    .expect("write config");
    let database = pg.map_or(String::new(), |db| {
        format!(" --database-url '{}'", db.url())
    });
    let start = dir.join("start.sh");
    std::fs::write(
        &start,
        format!(
            "#!/usr/bin/env bash\n\
             # Start weir in the background on the drill's ports and data; its pid in weir.pid.\n\
             set -euo pipefail\n\
             export WEIR_ADMIN_TOKEN={TOKEN}\n\
             {bin} serve --config {config} --data-dir {data} \
             --listen 127.0.0.1:{api} --ops-listen 127.0.0.1:{ops}{database} \
             >>{log} 2>&1 </dev/null &\n\
             echo $! >{pid}\n",
            bin = quote(Path::new(env!("CARGO_BIN_EXE_weir"))),
            config = quote(&config),
            data = quote(&data),
            log = quote(&dir.join("weir.log")),
            pid = quote(&drill.pid_file()),
        ),
    )
    .expect("write start.sh");
    let pid = quote(&drill.pid_file());

    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/chaos/run.sh"))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for (var, _) in std::env::vars() {
        if var.starts_with("WEIR") || var.starts_with("OTEL_") {
            cmd.env_remove(&var);
        }
    }
    for var in ["DATABASE_URL", "AMQP_URL", "REDIS_URL"] {
        cmd.env_remove(var);
    }
    cmd.env("WEIR_API", format!("http://127.0.0.1:{api}"))
        .env("WEIR_OPS", format!("http://127.0.0.1:{ops}"))
        .env("WEIR_TERM_CMD", format!("kill -TERM \"$(cat {pid})\""))
        .env("WEIR_KILL_CMD", format!("kill -KILL \"$(cat {pid})\""))
        .env("WEIR_START_CMD", format!("bash {}", quote(&start)))
        // The rotation checks (the instances have it from start.sh).
        .env("WEIR_ADMIN_TOKEN", TOKEN)
        .env("WEIR_ROUNDS", "2")
        .env("WEIR_CLIENTS", "2")
        .env("WEIR_LOAD", "10")
        .env("WEIR_READY_TIMEOUT", "60")
        .env("RUST_LOG", "info");
    match pg {
        Some(db) => cmd.env("DATABASE_URL", db.url()),
        None => cmd.env("WEIR_SQLITE_DB", data.join("weir.db")),
    };

    // The deployment runs before the drill starts.
    let started = std::process::Command::new("bash")
        .arg(&start)
        .status()
        .expect("run start.sh");
    assert!(started.success(), "start.sh: {started}");

    let out = tokio::time::timeout(2 * WAIT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("the drill did not finish within {:?}", 2 * WAIT))
        .expect("run deploy/chaos/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = || {
        format!(
            "--- stdout\n{stdout}--- stderr\n{stderr}--- weir.log (last 4000 bytes)\n{}",
            drill
                .log()
                .chars()
                .rev()
                .take(4000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<String>()
        )
    };
    let summary: Vec<&str> = stdout
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("PASS") || l.starts_with("FAIL") || l.starts_with("SKIP"))
        .collect();
    for line in &summary {
        assert!(
            line.starts_with("PASS"),
            "the drill reports `{line}`\n{}",
            report()
        );
    }
    for invariant in INVARIANTS {
        assert!(
            summary.iter().any(|l| l
                .strip_prefix("PASS")
                .map(str::trim_start)
                .is_some_and(|l| l.starts_with(&format!("{invariant}  (")))),
            "the drill's summary has no PASS for `{invariant}`\n{}",
            report()
        );
    }
    assert_eq!(
        summary.len(),
        INVARIANTS.len(),
        "one summary line per invariant\n{}",
        report()
    );
    assert!(
        out.status.success(),
        "the drill exits 0: {}\n{}",
        out.status,
        report()
    );
    eprintln!("{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_drill_script_passes_on_sqlite() {
    if !tools_present("the chaos drill", &["bash", "curl", "jq", "sqlite3"]) {
        return;
    }
    drill(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_drill_script_passes_on_postgresql() {
    if !tools_present("the chaos drill", &["bash", "curl", "jq", "psql"]) {
        return;
    }
    let db = PgTestDb::create()
        .await
        .expect("a PostgreSQL test database (is PostgreSQL on 127.0.0.1:5432?)");
    drill(Some(&db)).await;
    db.drop_db().await.expect("drop the test database");
}
