//! What Prometheus sees of a real `weir`, through the real `prometheus` binary, and the
//! metrics the lifecycle alerts read across restarts.
//!
//! - `a_real_prometheus_...`: `weir serve` on PostgreSQL and a real Prometheus (Debian's
//!   `prometheus`, flags of 2.42) on a free loopback port, scraping the operations listener's
//!   `/metrics` every second and evaluating the repository's `deploy/prometheus/*.rules.yml`
//!   every second. Traffic: orders placed (201), refused (422) and malformed (4xx); the target
//!   is up and the SLI recording rules have values (availability errors 0 while only 4xx
//!   failed). Then a real break: the test holds an `ACCESS EXCLUSIVE` lock on the catalog
//!   table (what a stuck migration does), catalog reads time out, the database breaker opens,
//!   orders fail with 503: the availability SLI shows errors (strictly between 0 and 1),
//!   `weir_ready` drops to 0, and `WeirDependencyBreakerOpen` and
//!   `WeirOrdersAvailabilityFastBurn` go `pending` (their `for` has not passed: not firing).
//! - `the_next_start_reports_...`: SIGTERM (clean drain), a drain cut by its deadline, and
//!   SIGKILL, each followed by a start in the same data directory that exports
//!   `weir_previous_shutdown_timestamp_seconds{outcome}` (the input of `WeirUncleanShutdown`).
//!
//! Every wait on Prometheus is a bounded poll (scrapes and rule evaluations are periodic) that
//! fails naming what it waited for and the last answer. Under `CI=true` a missing `prometheus`
//! fails; elsewhere the test is skipped with a note.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Connection as _;
use weir_host::storage::testing::PgTestDb;

use crate::support::{Weir, client, order_body, serve};

/// Bound of one eventual-consistency wait on Prometheus (scrape every 1 s, rules every 1 s).
const PATIENCE: Duration = Duration::from_secs(40);
/// Interval between polls of Prometheus' API.
const EVERY: Duration = Duration::from_millis(250);

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

/// Whether `prometheus` runs; under `CI=true` its absence fails the test.
fn prometheus_available() -> bool {
    match std::process::Command::new("prometheus")
        .arg("--version")
        .output()
    {
        Ok(_) => true,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("prometheus is required in CI (.ci/run installs the `prometheus` package): {e}")
        }
        Err(e) => {
            eprintln!("note: prometheus not installed ({e}); skipping the real-Prometheus test");
            false
        }
    }
}

/// A `prometheus` process with its own storage; killed (and reaped) on drop.
struct Prometheus {
    child: std::process::Child,
    base: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Start it scraping `target` (`host:port`) every second with every rules file of
    /// `deploy/prometheus/`, and wait (bounded) until it is ready.
    async fn start(target: &str) -> Self {
        let mut rules: Vec<String> = std::fs::read_dir(deploy_dir())
            .expect("deploy/prometheus")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.to_string_lossy().ends_with(".rules.yml"))
            .map(|p| p.canonicalize().expect("rules path").display().to_string())
            .collect();
        rules.sort();
        assert!(!rules.is_empty(), "no rules in deploy/prometheus");
        // YAML is a superset of JSON.
        let config = json!({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": rules,
            "scrape_configs": [{
                "job_name": "weir",
                "static_configs": [{"targets": [target]}],
            }],
        });
        // A free port can be taken between our probe and Prometheus' bind: retry (bounded).
        let mut last_log = String::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("tempdir");
            let config_path = dir.path().join("prometheus.yml");
            std::fs::write(&config_path, config.to_string()).expect("write prometheus.yml");
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let log = dir.path().join("prometheus.log");
            let child = std::process::Command::new("prometheus")
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("tsdb").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log file"))
                .spawn()
                .expect("spawn prometheus");
            let mut p = Prometheus {
                child,
                base: format!("http://127.0.0.1:{port}"),
                log,
                _dir: dir,
            };
            let deadline = tokio::time::Instant::now() + PATIENCE;
            loop {
                if let Ok(Some(status)) = p.child.try_wait() {
                    last_log = p.log_text();
                    eprintln!("prometheus exited ({status}) at start; retrying:\n{last_log}");
                    break;
                }
                if let Ok(r) = client().get(format!("{}/-/ready", p.base)).send().await
                    && r.status().is_success()
                {
                    return p;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "prometheus not ready within {PATIENCE:?}:\n{}",
                    p.log_text()
                );
                tokio::time::sleep(EVERY).await;
            }
        }
        panic!("prometheus did not start in 3 attempts:\n{last_log}");
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An instant query: each series' labels and value.
    async fn query(&self, promql: &str) -> Result<Vec<(Value, f64)>, String> {
        let mut url = reqwest::Url::parse(&format!("{}/api/v1/query", self.base))
            .map_err(|e| e.to_string())?;
        url.query_pairs_mut().append_pair("query", promql);
        let r = client().get(url).send().await.map_err(|e| e.to_string())?;
        let body: Value = r.json().await.map_err(|e| e.to_string())?;
        if body["status"] != "success" {
            return Err(format!("query {promql}: {body}"));
        }
        Ok(body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|s| {
                let v = s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN);
                (s["metric"].clone(), v)
            })
            .collect())
    }

    /// Poll `promql` (bounded) until its single series' value satisfies `want`; returns it.
    async fn value_until(&self, what: &str, promql: &str, want: impl Fn(f64) -> bool) -> f64 {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let answer = self.query(promql).await;
            if let Ok(series) = &answer
                && let [(_, v)] = series.as_slice()
                && want(*v)
            {
                return *v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: `{promql}` not as wanted within {PATIENCE:?}; last answer: {answer:?}\n\
                 prometheus log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(EVERY).await;
        }
    }

    /// Poll `/api/v1/alerts` (bounded) until the alert `name` whose labels include `labels`
    /// is in `state`; returns it.
    async fn alert_until(&self, name: &str, labels: &[(&str, &str)], state: &str) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let alerts: Value = match client()
                .get(format!("{}/api/v1/alerts", self.base))
                .send()
                .await
            {
                Ok(r) => r.json().await.unwrap_or(Value::Null),
                Err(e) => Value::String(e.to_string()),
            };
            let found = alerts["data"]["alerts"].as_array().and_then(|all| {
                all.iter()
                    .find(|a| {
                        a["labels"]["alertname"] == name
                            && labels.iter().all(|(k, v)| a["labels"][*k] == *v)
                    })
                    .cloned()
            });
            if let Some(a) = &found
                && a["state"] == state
            {
                return a.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "alert {name} {labels:?} not {state} within {PATIENCE:?}; active alerts: {alerts}"
            );
            tokio::time::sleep(EVERY).await;
        }
    }
}

/// `POST /v1/orders` with `body` under the key `key`: status and problem `code` (if any).
async fn post_order(weir: &Weir, key: &str, body: &Value) -> (u16, Option<String>) {
    let r = client()
        .post(format!("{}/v1/orders", weir.api))
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST /v1/orders {key}: {e}"));
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status, body["code"].as_str().map(str::to_owned))
}

/// One batch of good traffic: `n` orders placed (201), `n` refused by the plugin (422, an
/// unknown sku) and `n` malformed (no lines).
async fn healthy_batch(weir: &Weir, batch: &str, n: usize) {
    for i in 0..n {
        let (status, code) = post_order(
            weir,
            &format!("{batch}-ok-{i}"),
            &order_body("cus_prom", "KB-001"),
        )
        .await;
        assert_eq!(status, 201, "{code:?}");
        let (status, code) = post_order(
            weir,
            &format!("{batch}-unknown-{i}"),
            &order_body("cus_prom", "NO-SUCH-SKU"),
        )
        .await;
        assert_eq!((status, code.as_deref()), (422, Some("ORDER_REJECTED")));
        let (status, _) = post_order(
            weir,
            &format!("{batch}-empty-{i}"),
            &json!({"customer_id": "cus_prom", "currency": "EUR", "lines": []}),
        )
        .await;
        assert!(
            (400..500).contains(&status),
            "a malformed order is a 4xx: {status}"
        );
    }
}

async fn readyz(weir: &Weir) -> u16 {
    client()
        .get(format!("{}/readyz", weir.ops))
        .send()
        .await
        .expect("GET /readyz")
        .status()
        .as_u16()
}

const AVAILABILITY_ERRORS: &str = r#"weir:slo_errors:ratio_rate5m{slo="orders-availability"}"#;
const LATENCY_ERRORS: &str = r#"weir:slo_errors:ratio_rate5m{slo="orders-latency"}"#;
/// The labels of `POST /v1/orders` on the HTTP server metrics.
const ORDERS: &str = r#"job="weir",http_route="/v1/orders",http_request_method="POST""#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_weir_records_the_slis_and_a_locked_catalog_makes_the_breaker_alert_pending()
 {
    if !prometheus_available() {
        return;
    }
    let started = std::time::Instant::now();
    let pg = PgTestDb::create()
        .await
        .expect("create a PostgreSQL test database (is PostgreSQL on 127.0.0.1:5432?)");
    let dir = tempfile::tempdir().expect("tempdir");
    // Every catalog read reaches the database (no cache); the breaker judges after 3 calls and
    // stays open a minute (no half-open probe during the test).
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        "[policy.cache]\nttl_ms = 0\n\
         [policy.database]\ntimeout_ms = 100\n\
         [policy.database.breaker]\nmin_calls = 3\nopen_ms = 60000\n",
    )
    .expect("write config");
    let mut cmd = serve(&dir.path().join("data"));
    cmd.arg("--config")
        .arg(&config)
        .arg("--database-url")
        .arg(pg.url());
    let weir = Weir::spawn(cmd).await;
    let prometheus = Prometheus::start(weir.ops.trim_start_matches("http://")).await;

    // The target is up: Prometheus reads the real /metrics text.
    prometheus
        .value_until("the weir target up", r#"up{job="weir"}"#, |v| v == 1.0)
        .await;

    // Healthy traffic, once before Prometheus has seen the series and once after (rate()
    // needs an increase between two scrapes).
    assert_eq!(readyz(&weir).await, 200);
    healthy_batch(&weir, "a", 2).await;
    prometheus
        .value_until(
            "the first orders scraped",
            &format!("sum(http_server_request_duration_seconds_count{{{ORDERS}}})"),
            |v| v >= 6.0,
        )
        .await;
    healthy_batch(&weir, "b", 3).await;
    // Only 4xx failed: they are good answers, so no availability errors at all.
    prometheus
        .value_until(
            "availability errors recorded as 0 (4xx are not errors)",
            AVAILABILITY_ERRORS,
            |v| v == 0.0,
        )
        .await;
    prometheus
        .value_until("the latency SLI recorded", LATENCY_ERRORS, |v| {
            (0.0..=1.0).contains(&v)
        })
        .await;
    prometheus
        .value_until("weir_ready scraped", r#"weir_ready{job="weir"}"#, |v| {
            v == 1.0
        })
        .await;

    // The break: a transaction holds an ACCESS EXCLUSIVE lock on the catalog, as a stuck
    // migration would. Catalog reads wait for it, time out, and open the database breaker.
    let mut locker = sqlx::PgConnection::connect(pg.url())
        .await
        .expect("connect to the test database");
    let mut tx = locker.begin().await.expect("begin");
    sqlx::query("LOCK TABLE products IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .expect("lock the catalog");
    let mut failed = 0;
    for i in 0..30 {
        let (status, code) =
            post_order(&weir, &format!("c-{i}"), &order_body("cus_prom", "KB-001")).await;
        assert_eq!(
            (status, code.as_deref()),
            (503, Some("DEPENDENCY_UNAVAILABLE")),
            "an order while the catalog is locked"
        );
        failed += 1;
        if readyz(&weir).await == 503 {
            break;
        }
    }
    assert_eq!(readyz(&weir).await, 503, "the breaker opened: unready");
    prometheus
        .value_until(
            "the first 5xx scraped",
            &format!(
                r#"sum(http_server_request_duration_seconds_count{{{ORDERS},http_response_status_class="5xx"}})"#
            ),
            |v| v >= f64::from(failed),
        )
        .await;
    // More failures after that scrape (fast now: the breaker refuses at once).
    for i in 0..5 {
        let (status, code) =
            post_order(&weir, &format!("d-{i}"), &order_body("cus_prom", "KB-001")).await;
        assert_eq!(
            (status, code.as_deref()),
            (503, Some("DEPENDENCY_UNAVAILABLE"))
        );
    }
    let errors = prometheus
        .value_until(
            "availability errors recorded strictly between 0 and 1",
            AVAILABILITY_ERRORS,
            |v| v > 0.0 && v < 1.0,
        )
        .await;
    eprintln!("availability error ratio over 5m with the catalog locked: {errors}");
    prometheus
        .value_until(
            "weir_ready 0 after the failing probe",
            r#"weir_ready{job="weir"}"#,
            |v| v == 0.0,
        )
        .await;
    prometheus
        .value_until(
            "the readiness change counted",
            r#"sum(weir_readiness_transitions_total{job="weir",to="unready"})"#,
            |v| v >= 1.0,
        )
        .await;

    let breaker = prometheus
        .alert_until(
            "WeirDependencyBreakerOpen",
            &[("dependency", "database")],
            "pending",
        )
        .await;
    assert_eq!(breaker["labels"]["severity"], "page", "{breaker}");
    assert_eq!(
        breaker["annotations"]["runbook"], "RUNBOOK.md#weirdependencybreakeropen",
        "{breaker}"
    );
    let burn = prometheus
        .alert_until(
            "WeirOrdersAvailabilityFastBurn",
            &[("slo", "orders-availability")],
            "pending",
        )
        .await;
    assert_eq!(burn["labels"]["severity"], "page", "{burn}");

    tx.rollback().await.expect("release the catalog lock");
    locker.close().await.ok();
    let (status, _) = weir.terminate().await;
    assert!(status.success(), "weir exits 0 after SIGTERM: {status}");
    drop(prometheus);
    pg.drop_db().await.expect("drop the test database");
    eprintln!("real-Prometheus test took {:?}", started.elapsed());
}

/// The value of `name{outcome="<outcome>"}` in Prometheus text, if the series is there.
fn previous_shutdown(metrics: &str, outcome: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with("weir_previous_shutdown_timestamp_seconds{"))
        .find(|l| l.contains(&format!("outcome=\"{outcome}\"")))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn metrics(weir: &Weir) -> String {
    client()
        .get(format!("{}/metrics", weir.ops))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// Start `weir` in `data` with `config` (if any), check how it says the previous run ended
/// (metric and `/infoz`), and return it.
async fn start_expecting(data: &Path, config: Option<&Path>, previous: Option<&str>) -> Weir {
    let mut cmd = serve(data);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let weir = Weir::spawn(cmd).await;
    let text = metrics(&weir).await;
    let infoz = weir.ops_json("/infoz").await;
    let outcomes: Vec<&str> = ["clean", "deadline", "forced", "killed"]
        .into_iter()
        .filter(|o| previous_shutdown(&text, o).is_some())
        .collect();
    match previous {
        None => {
            assert!(
                outcomes.is_empty(),
                "a first start reports nothing: {outcomes:?}"
            );
            assert_eq!(infoz["shutdown"]["previous"], Value::Null, "{infoz}");
        }
        Some(outcome) => {
            assert_eq!(outcomes, [outcome], "the previous run's outcome only");
            let at = previous_shutdown(&text, outcome).unwrap();
            let now = chrono::Utc::now().timestamp() as f64;
            assert!(
                at > now - 600.0 && at <= now + 1.0,
                "ended a moment ago (Unix seconds): {at} vs now {now}"
            );
            assert_eq!(infoz["shutdown"]["previous"]["outcome"], outcome, "{infoz}");
        }
    }
    weir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_start_reports_how_the_previous_run_ended() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");

    // First start: nothing to report. SIGTERM drains cleanly.
    let weir = start_expecting(&data, None, None).await;
    let (status, _) = weir.terminate().await;
    assert!(status.success());

    // Reported clean. Then SIGKILL: no drain at all.
    let weir = start_expecting(&data, None, Some("clean")).await;
    weir.kill9().await;

    // Reported killed. Then a drain whose deadline cuts a plugin call off.
    let plugins = crate::support::plugin_dir(dir.path(), &[weir_plugin_artifacts::HOSTILE_SLEEP]);
    let slow = dir.path().join("slow.toml");
    std::fs::write(
        &slow,
        format!(
            "[plugins]\ndir = {:?}\norders = \"hostile-sleep\"\n\
             [runtime.budget]\ntimeout_ms = 600000\n\
             [http]\nrequest_timeout_ms = 600000\n\
             [idempotency]\nlock_ttl_ms = 1200000\n\
             [shutdown]\ndrain_deadline_ms = 300\ninterrupt_grace_ms = 2000\n",
            plugins.display().to_string()
        ),
    )
    .expect("write config");
    let weir = start_expecting(&data, Some(&slow), Some("killed")).await;
    let api = weir.api.clone();
    let held = tokio::spawn(async move {
        client()
            .post(format!("{api}/v1/orders"))
            .header("Idempotency-Key", "held")
            .json(&order_body("cus_prom", "KB-001"))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    weir.wait_infoz("the plugin call in flight", |v| {
        v["runtime"]["in_flight"].as_u64() == Some(1)
    })
    .await;
    let (status, _) = weir.terminate().await;
    assert!(status.success());
    let answer = held.await.expect("client task");
    assert_eq!(
        answer.ok(),
        Some(503),
        "the cut-off call was answered SHUTTING_DOWN"
    );

    // Reported deadline.
    let weir = start_expecting(&data, None, Some("deadline")).await;
    let (status, _) = weir.terminate().await;
    assert!(status.success());
}
