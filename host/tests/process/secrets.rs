//! Secrets end to end: the real binary with a password in `DATABASE_URL`, `AMQP_URL` and
//! `REDIS_URL`, an admin token and an API key, and everything it produced scanned for each
//! secret (the value, its percent-encoded form, base64, and its random part alone): stdout
//! and stderr (error chains included), every OTLP export (spans and their events, log
//! records, metric data points, resources and scopes), `/infoz`, `/readyz`, `/metrics`, the
//! admin answers and every problem body.
//!
//! - Success: every dependency reached with its password: a PostgreSQL database of the test
//!   (trust authentication ignores the password, the URL still carries it), a RabbitMQ user
//!   and vhost of the test (`rabbitmqctl`), a private `redis-server --requirepass` of the
//!   test. Orders placed with an API key, admin endpoints called with the token, refusals
//!   provoked with credentials that contain the real ones (an echo would show them), the
//!   request log told to show the credential headers (they stay redacted).
//! - Failures, one process each, every secret configured: a database nothing listens on
//!   (start-up fails; the chain names the URL with the password redacted), a broker refusing
//!   the password (starts degraded; `/readyz` says why), Redis refusing the password (starts;
//!   the cache degrades to the database, counted and logged).
//!
//! Each scan is checked for being non-vacuous: the place holds what it should (the
//! redacted URL, the spans, the failure) before it is searched.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::process::Command;
use weir_host::storage::testing::PgTestDb;
use weir_tests::otlp::{Received, Receiver};

use crate::support::{POLL, WAIT, Weir, client, field, message, order_body, serve, tools_present};

/// Stdout at debug for the service's own code, so a secret in a debug line is found too.
const LOG_FILTER: &str = "info,weir=debug,weir_host=debug,sqlx=warn,hyper=warn,h2=warn,\
                          tower=warn,tonic=warn,reqwest=warn,opentelemetry=warn";

/// One secret of a run: what it is (for the failure message) and its value.
struct Secret {
    what: &'static str,
    value: String,
    /// The value's random part, also searched for alone.
    random: String,
}

impl Secret {
    /// A fresh value: `<kind>-S3cr!t-<32 hex>`; the `!` is percent-encoded in a URL.
    fn new(what: &'static str, kind: &str) -> Self {
        let random = uuid::Uuid::new_v4().simple().to_string();
        Self {
            what,
            value: format!("{kind}-S3cr!t-{random}"),
            random,
        }
    }

    /// The value as it is written in a URL's userinfo.
    fn in_url(&self) -> String {
        percent_encode(&self.value)
    }

    /// Every form a leak could take: the value, percent-encoded (upper and lower case hex),
    /// base64 (standard and URL-safe), and its random part alone (any other transformation
    /// of the readable prefix).
    fn forms(&self) -> Vec<String> {
        let mut forms = vec![
            self.value.clone(),
            percent_encode(&self.value),
            percent_encode(&self.value).to_lowercase(),
            base64::engine::general_purpose::STANDARD.encode(&self.value),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&self.value),
        ];
        forms.push(self.random.clone());
        let mut distinct: Vec<String> = Vec::new();
        for form in forms {
            if !distinct.contains(&form) {
                distinct.push(form);
            }
        }
        distinct
    }
}

/// `s` with every byte outside the URL-unreserved set as `%XX`.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Everything a run produced, by where it was seen.
#[derive(Default)]
struct Seen(Vec<(String, String)>);

impl Seen {
    fn add(&mut self, place: impl Into<String>, text: impl Into<String>) {
        self.0.push((place.into(), text.into()));
    }

    /// Record an HTTP answer (status line and body) under `place`; its status and body.
    async fn answer(&mut self, place: &str, res: reqwest::Response) -> (u16, String) {
        let status = res.status().as_u16();
        let headers = format!("{:?}", res.headers());
        let body = res.text().await.unwrap_or_default();
        self.add(place, format!("{status} {headers}\n{body}"));
        (status, body)
    }

    /// Record what the OTLP receiver got, after checking it holds something to scan.
    fn otlp(&mut self, received: &Received) {
        assert!(
            !received.exports.is_empty(),
            "the OTLP receiver got nothing: the scan would be vacuous"
        );
        for (i, export) in received.exports.iter().enumerate() {
            self.add(format!("OTLP export #{i}"), export.clone());
        }
    }

    /// Panic naming the secret, the form, the place and the text around it, for the first
    /// form of any of `secrets` found anywhere.
    fn assert_no_secret(&self, secrets: &[&Secret]) {
        assert!(!self.0.is_empty(), "nothing was recorded to scan");
        for secret in secrets {
            for form in secret.forms() {
                for (place, text) in &self.0 {
                    if let Some(at) = text.find(&form) {
                        let from = text.floor_char_boundary(at.saturating_sub(160));
                        let to = text.ceil_char_boundary((at + form.len() + 160).min(text.len()));
                        panic!(
                            "the {} leaked (as {form:?}) in {place}: …{}…",
                            secret.what,
                            &text[from..to]
                        );
                    }
                }
            }
        }
    }

    /// The text recorded under `place` (for non-vacuity checks).
    fn text(&self, place: &str) -> &str {
        self.0
            .iter()
            .find(|(p, _)| p == place)
            .map(|(_, t)| t.as_str())
            .unwrap_or_else(|| panic!("nothing recorded as {place}"))
    }
}

/// `weir serve` in `data`, exporting to `receiver` (spans every 100 ms, the rest at the
/// shutdown flush), with the debug log filter.
fn command(data: &Path, receiver: &Receiver) -> Command {
    let mut cmd = serve(data);
    cmd.env("RUST_LOG", LOG_FILTER)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "600000");
    cmd
}

/// SIGTERM, then record stdout, stderr and every OTLP export (after the receiver holds at
/// least one span, one log record and one metric).
async fn stop_and_record(weir: Weir, receiver: &Receiver, seen: &mut Seen) {
    let stderr_so_far = weir.stderr();
    let (status, stdout) = weir.terminate().await;
    assert!(status.success(), "weir exited with {status}");
    seen.add("stdout", stdout.join("\n"));
    seen.add("stderr", stderr_so_far);
    let received = receiver
        .wait_for(
            "spans, log records and metrics of the run",
            Duration::from_secs(20),
            |r| {
                (!r.spans.is_empty() && !r.logs.is_empty() && !r.metrics.is_empty())
                    .then(|| r.clone())
            },
        )
        .await;
    seen.otlp(&received);
}

/// Record `/infoz`, `/readyz` and `/metrics` of `weir`; `/infoz` and `/readyz` parsed.
async fn record_ops(weir: &Weir, seen: &mut Seen) -> (Value, Value) {
    let mut parsed = Vec::new();
    for path in ["/infoz", "/readyz", "/metrics"] {
        let res = client()
            .get(format!("{}{path}", weir.ops))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let (_, body) = seen.answer(path, res).await;
        if path == "/metrics" {
            assert!(body.contains("weir_"), "/metrics has the service's series");
        } else {
            parsed.push(
                serde_json::from_str::<Value>(&body)
                    .unwrap_or_else(|e| panic!("{path}: {e}: {body}")),
            );
        }
    }
    let readyz = parsed.pop().unwrap();
    (parsed.pop().unwrap(), readyz)
}

/// The `/readyz` check named `name`.
fn check<'a>(readyz: &'a Value, name: &str) -> &'a Value {
    readyz["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {name} check in {readyz}"))
}

fn rabbitmqctl(args: &[&str]) {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("run rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl {}: {}{}",
        args[0],
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A RabbitMQ user with its own password and vhost, both deleted on drop (the broker's own
/// configuration is otherwise untouched).
struct RabbitUser {
    user: String,
    vhost: String,
    password: String,
}

impl RabbitUser {
    fn create(password: &Secret) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let this = Self {
            user: format!("weir-secrets-{id}"),
            vhost: format!("weir-secrets-{id}"),
            password: password.value.clone(),
        };
        rabbitmqctl(&["add_vhost", &this.vhost]);
        rabbitmqctl(&["add_user", &this.user, &this.password]);
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            &this.vhost,
            &this.user,
            ".*",
            ".*",
            ".*",
        ]);
        this
    }

    fn url(&self) -> String {
        format!(
            "amqp://{}:{}@127.0.0.1:5672/{}",
            self.user,
            percent_encode(&self.password),
            self.vhost
        )
    }
}

impl Drop for RabbitUser {
    fn drop(&mut self) {
        for args in [["delete_user", &self.user], ["delete_vhost", &self.vhost]] {
            let _ = std::process::Command::new("rabbitmqctl")
                .args(args)
                .output();
        }
    }
}

/// A `redis-server` of this test on its own port, requiring `password`; killed on drop.
struct PrivateRedis {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl PrivateRedis {
    async fn start(password: &Secret) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--requirepass", &password.value])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start redis-server");
        let this = Self {
            child,
            port,
            _dir: dir,
        };
        let started = tokio::time::Instant::now();
        while this.dbsize(password).await.is_none() {
            assert!(
                started.elapsed() < WAIT,
                "the private redis-server on port {port} did not answer within {WAIT:?}"
            );
            tokio::time::sleep(POLL).await;
        }
        this
    }

    fn url(&self, password: &Secret) -> String {
        format!("redis://:{}@127.0.0.1:{}/0", password.in_url(), self.port)
    }

    /// `DBSIZE`, or `None` while the server does not answer.
    async fn dbsize(&self, password: &Secret) -> Option<i64> {
        let client = redis::Client::open(self.url(password)).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("DBSIZE").query_async(&mut conn).await.ok()
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The five secrets of a run.
struct Secrets {
    database: Secret,
    broker: Secret,
    redis: Secret,
    admin: Secret,
}

impl Secrets {
    fn new() -> Self {
        Self {
            database: Secret::new("database password", "dbpw"),
            broker: Secret::new("broker password", "amqppw"),
            redis: Secret::new("redis password", "redispw"),
            admin: Secret::new("admin token", "admintoken"),
        }
    }

    fn all(&self) -> Vec<&Secret> {
        vec![&self.database, &self.broker, &self.redis, &self.admin]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_with_every_secret_shows_none_of_them() {
    let test = "serving_with_every_secret_shows_none_of_them";
    if !tools_present(test, &["rabbitmqctl", "redis-server"]) {
        return;
    }
    let secrets = Secrets::new();
    let pg = PgTestDb::create()
        .await
        .expect("create a PostgreSQL test database (is PostgreSQL on 127.0.0.1:5432?)");
    // Trust authentication: the password is carried, never checked.
    let database_url = format!(
        "postgres://postgres:{}@127.0.0.1:5432/{}",
        secrets.database.in_url(),
        pg.name()
    );
    let rabbit = RabbitUser::create(&secrets.broker);
    let redis = PrivateRedis::start(&secrets.redis).await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    // An operator who allow-listed the credential headers in the request log.
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        "[policy.request_log]\nallow_headers = [\"user-agent\", \"authorization\", \"x-api-key\"]\n",
    )
    .unwrap();
    let mut cmd = command(&dir.path().join("data"), &receiver);
    cmd.arg("--config")
        .arg(&config)
        .env("DATABASE_URL", &database_url)
        .env("AMQP_URL", rabbit.url())
        .env("REDIS_URL", redis.url(&secrets.redis))
        .env("WEIR_ADMIN_TOKEN", &secrets.admin.value)
        .env("WEIR__AUTH__MODE", "api_keys");
    let weir = Weir::spawn_in(cmd, Some(dir)).await;
    weir.wait_infoz("both broker links up with the test user's password", |v| {
        v["events"]["links"]["connected"] == true
    })
    .await;
    let c = client();
    let mut seen = Seen::default();
    let admin = |path: &str| format!("{}{path}", weir.ops);

    // An API key: its text is shown once, in this answer (the one place it may appear).
    let res = c
        .post(admin("/admin/v1/apikeys"))
        .bearer_auth(&secrets.admin.value)
        .json(&json!({"tenant": "acme", "name": "secrets", "scopes": ["orders:write", "orders:read"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    let key_text = created["key"].as_str().expect("the key text").to_owned();
    // `weir_<lookup prefix>_<secret>`: the secret is URL-safe base64, which may itself hold
    // `-` and `_`, so it is taken after the second `_`, never split on `-` (a one-letter
    // tail after a `-` in it once "leaked" as "I").
    let api_key = Secret {
        what: "API key",
        value: key_text.clone(),
        random: key_text
            .splitn(3, '_')
            .nth(2)
            .expect("an API key is weir_<prefix>_<secret>")
            .to_owned(),
    };

    // Orders with the key: the catalog read goes through the Redis cache, the event over
    // the broker, the rows into PostgreSQL.
    let mut order_id = String::new();
    for i in 0..2 {
        let res = c
            .post(format!("{}/v1/orders", weir.api))
            .bearer_auth(&key_text)
            .header("Idempotency-Key", format!("secrets-{i}"))
            .json(&order_body("cus_secrets", "KB-001"))
            .send()
            .await
            .unwrap();
        let (status, body) = seen.answer(&format!("POST /v1/orders #{i}"), res).await;
        assert_eq!(status, 201, "{body}");
        order_id = serde_json::from_str::<Value>(&body).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
    }
    let res = c
        .get(format!("{}/v1/orders/{order_id}", weir.api))
        .header("X-Api-Key", &key_text)
        .send()
        .await
        .unwrap();
    assert_eq!(seen.answer("GET /v1/orders/{id}", res).await.0, 200);
    // The cache write happens after the read: the private Redis got it with the password.
    let started = tokio::time::Instant::now();
    while redis.dbsize(&secrets.redis).await.unwrap_or(0) == 0 {
        assert!(
            started.elapsed() < WAIT,
            "no catalog entry reached the private Redis: the cache did not use REDIS_URL"
        );
        tokio::time::sleep(POLL).await;
    }

    // Admin endpoints with the token.
    let info = weir.ops_json("/infoz").await;
    let plugin = info["orders_plugin"].as_str().unwrap().to_owned();
    for path in [
        "/admin/v1/apikeys?tenant=acme".to_owned(),
        "/admin/rotation".to_owned(),
        "/admin/telemetry/sampling".to_owned(),
        format!("/admin/v1/plugins/{plugin}"),
    ] {
        let res = c
            .get(admin(&path))
            .bearer_auth(&secrets.admin.value)
            .send()
            .await
            .unwrap();
        let (status, body) = seen.answer(&format!("GET {path}"), res).await;
        assert_eq!(status, 200, "GET {path}: {body}");
    }

    // Refusals, some with credentials that contain the real ones.
    let wrong_admin = format!("{}-wrong", secrets.admin.value);
    let wrong_key = format!("{key_text}x");
    let refusals = [
        (
            "admin, no token",
            c.get(admin("/admin/rotation")),
            401,
            "ADMIN_UNAUTHORIZED",
        ),
        (
            "admin, a token extending the real one",
            c.get(admin("/admin/rotation")).bearer_auth(&wrong_admin),
            401,
            "ADMIN_UNAUTHORIZED",
        ),
        (
            "API, a key extending the real one",
            c.post(format!("{}/v1/orders", weir.api))
                .bearer_auth(&wrong_key)
                .header("Idempotency-Key", "secrets-wrong-key")
                .json(&order_body("cus_secrets", "KB-001")),
            401,
            "UNAUTHENTICATED",
        ),
        (
            "API, the admin token as an API key",
            c.get(format!("{}/v1/orders/{order_id}", weir.api))
                .header("X-Api-Key", &secrets.admin.value),
            401,
            "UNAUTHENTICATED",
        ),
        (
            "API, bad JSON",
            c.post(format!("{}/v1/orders", weir.api))
                .bearer_auth(&key_text)
                .header("Idempotency-Key", "secrets-bad-json")
                .header("Content-Type", "application/json")
                .body("{\"customer_id\": "),
            400,
            "MALFORMED_JSON",
        ),
        (
            "API, an unknown product",
            c.post(format!("{}/v1/orders", weir.api))
                .bearer_auth(&key_text)
                .header("Idempotency-Key", "secrets-unknown")
                .json(&order_body("cus_secrets", "NOPE-1")),
            422,
            "ORDER_REJECTED",
        ),
    ];
    for (what, req, expect, code) in refusals {
        let res = req.send().await.unwrap();
        let (status, body) = seen.answer(&format!("problem: {what}"), res).await;
        assert_eq!(status, expect, "{what}: {body}");
        assert!(body.contains(code), "{what}: {body}");
    }

    let (infoz, readyz) = record_ops(&weir, &mut seen).await;
    stop_and_record(weir, &receiver, &mut seen).await;
    let mut all = secrets.all();
    all.push(&api_key);
    seen.assert_no_secret(&all);

    // The URLs are shown, redacted.
    assert_eq!(
        infoz["events"]["broker"],
        format!(
            "amqp://{}:[redacted]@127.0.0.1:5672/{}",
            rabbit.user, rabbit.vhost
        ),
        "{infoz}"
    );
    assert_eq!(infoz["database"], "postgres", "{infoz}");
    assert_eq!(infoz["features"]["redis_cache"], true, "{infoz}");
    assert_eq!(readyz["ready"], true, "{readyz}");

    // The request log showed the allow-listed credential headers, redacted.
    let stdout = seen.text("stdout");
    let logged_headers: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|l| field(&l, "headers")?.as_str().map(str::to_owned))
        .filter_map(|h| serde_json::from_str(&h).ok())
        .collect();
    for header in ["authorization", "x-api-key"] {
        assert!(
            logged_headers.iter().any(|h| h[header] == "[redacted]"),
            "the request log shows the allow-listed {header} header as [redacted]: \
             {logged_headers:?}"
        );
    }
    assert!(stdout.contains("weir listening"), "the start-up line");
    let otlp: String = seen
        .0
        .iter()
        .filter(|(p, _)| p.starts_with("OTLP"))
        .map(|(_, t)| t.as_str())
        .collect();
    for expected in ["http.server", "UNAUTHENTICATED", "weir.dependency.calls"] {
        assert!(otlp.contains(expected), "the OTLP exports hold {expected}");
    }
    drop(redis);
    drop(rabbit);
    pg.drop_db().await.expect("drop the test database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_fails_start_up_naming_it_without_the_password() {
    let secrets = Secrets::new();
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1: the connection is refused.
    let mut cmd = command(dir.path(), &receiver);
    cmd.env(
        "DATABASE_URL",
        format!(
            "postgres://weir_user:{}@127.0.0.1:1/weir_secrets",
            secrets.database.in_url()
        ),
    )
    .env("WEIR__DATABASE__ACQUIRE_TIMEOUT_MS", "500")
    .env(
        "AMQP_URL",
        format!(
            "amqp://guest:{}@127.0.0.1:5672/%2f",
            secrets.broker.in_url()
        ),
    )
    .env(
        "REDIS_URL",
        format!("redis://:{}@127.0.0.1:6379/0", secrets.redis.in_url()),
    )
    .env("WEIR_ADMIN_TOKEN", &secrets.admin.value);
    let out = tokio::time::timeout(WAIT, cmd.output())
        .await
        .expect("weir exits when its database cannot be opened")
        .expect("run weir");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut seen = Seen::default();
    seen.add("stdout", stdout.clone());
    seen.add("stderr", stderr.clone());
    let received = receiver
        .wait_for(
            "the failed start-up span",
            Duration::from_secs(20),
            |r: &Received| {
                r.spans
                    .iter()
                    .any(|s| s.name() == "weir.start")
                    .then(|| r.clone())
            },
        )
        .await;
    seen.otlp(&received);
    seen.assert_no_secret(&secrets.all());
    assert!(
        seen.0.iter().any(|(p, t)| p.starts_with("OTLP")
            && t.contains("could not open the database at postgres://weir_user:[redacted]@")),
        "the exported start-up span carries the redacted chain"
    );
    let chain = stderr
        .lines()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or_else(|| panic!("no error line on stderr: {stderr}"));
    assert!(
        chain.starts_with(
            "could not open the database at postgres://weir_user:[redacted]@127.0.0.1:1/weir_secrets: "
        ),
        "the chain names the database and its host, password redacted: {chain}"
    );
    assert!(
        stdout.contains("start-up failed"),
        "the failure is logged: {stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_refusing_the_password_is_reported_without_it() {
    let secrets = Secrets::new();
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(&dir.path().join("data"), &receiver);
    // `guest` exists; this password is not its password.
    cmd.env(
        "AMQP_URL",
        format!(
            "amqp://guest:{}@127.0.0.1:5672/%2f",
            secrets.broker.in_url()
        ),
    )
    .env("WEIR_ADMIN_TOKEN", &secrets.admin.value)
    .env("WEIR__EVENTS__RECONNECT_MIN_MS", "50")
    .env("WEIR__EVENTS__RECONNECT_MAX_MS", "200");
    let weir = Weir::spawn_in(cmd, Some(dir)).await;
    weir.wait_infoz("a broker link refused with its error", |v| {
        v["events"]["links"]["relay"]["last_error"].is_string()
            && v["events"]["links"]["consumer"]["last_error"].is_string()
    })
    .await;
    let mut seen = Seen::default();
    // Orders are still taken; their events wait in the outbox.
    let res = client()
        .post(format!("{}/v1/orders", weir.api))
        .header("Idempotency-Key", "secrets-broker")
        .json(&order_body("cus_secrets", "KB-001"))
        .send()
        .await
        .unwrap();
    assert_eq!(seen.answer("POST /v1/orders", res).await.0, 201);
    let (infoz, readyz) = record_ops(&weir, &mut seen).await;
    let broker = check(&readyz, "broker");
    let detail = broker["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("degraded:") && detail.contains("ACCESS_REFUSED"),
        "/readyz says the broker refused the login: {readyz}"
    );
    weir.wait_log("outbox relay: broker unavailable").await;
    stop_and_record(weir, &receiver, &mut seen).await;
    seen.assert_no_secret(&secrets.all());
    assert_eq!(
        infoz["events"]["broker"], "amqp://guest:[redacted]@127.0.0.1:5672/%2f",
        "/infoz names the broker and its host, password redacted: {infoz}"
    );
    let down = seen
        .text("stdout")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| message(l).starts_with("outbox relay: broker unavailable"))
        .expect("the relay's broker-unavailable line");
    assert!(
        down.to_string().contains("ACCESS_REFUSED"),
        "the relay's line carries the refusal: {down}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_refusing_the_password_degrades_the_cache_without_showing_it() {
    let secrets = Secrets::new();
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(&dir.path().join("data"), &receiver);
    // The shared Redis has no password: AUTH with one is refused. The cache's bound (25 ms)
    // and the plugin's catalog deadline (200 ms) are raised so the refusal, not a bound,
    // ends the attempt on a loaded test machine: its error is what is scanned.
    cmd.env(
        "REDIS_URL",
        format!("redis://:{}@127.0.0.1:6379/0", secrets.redis.in_url()),
    )
    .env("WEIR__POLICY__CACHE__DEPENDENCY__TIMEOUT_MS", "2000")
    .env("WEIR__RUNTIME__CATALOG_TIMEOUT_MS", "4000")
    .env("WEIR_ADMIN_TOKEN", &secrets.admin.value);
    let weir = Weir::spawn_in(cmd, Some(dir)).await;
    let mut seen = Seen::default();
    let res = client()
        .post(format!("{}/v1/orders", weir.api))
        .header("Idempotency-Key", "secrets-redis")
        .json(&order_body("cus_secrets", "KB-001"))
        .send()
        .await
        .unwrap();
    let (status, body) = seen.answer("POST /v1/orders", res).await;
    assert_eq!(status, 201, "the cache degrades to the database: {body}");
    let (infoz, readyz) = record_ops(&weir, &mut seen).await;
    assert_eq!(infoz["features"]["redis_cache"], true, "{infoz}");
    assert_eq!(readyz["ready"], true, "the cache is optional: {readyz}");
    let metrics = seen.text("/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("weir_dependency_calls_total")
                && l.contains("dependency=\"cache\"")
                && !l.contains("outcome=\"ok\"")),
        "failed cache calls are counted: {}",
        metrics
            .lines()
            .filter(|l| l.contains("dependency"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    stop_and_record(weir, &receiver, &mut seen).await;
    seen.assert_no_secret(&secrets.all());
    // Not vacuous: the refusal itself was seen, typed, and scanned.
    assert!(
        seen.text("stdout")
            .lines()
            .any(|l| l.contains("catalog cache unavailable")
                && l.contains("redis: AuthenticationFailed")),
        "the cache's refusal is logged with its kind: {:?}",
        seen.text("stdout")
            .lines()
            .filter(|l| l.contains("cache"))
            .collect::<Vec<_>>()
    );
}
