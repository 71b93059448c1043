//! Shared helpers: servers on ephemeral ports with SQLite or a fresh PostgreSQL database.

use std::path::Path;
use std::time::Duration;

use tempfile::TempDir;
use weir_host::runtime::CacheOutcome;
use weir_host::server::Server;
use weir_host::server::config::{Config, DatabaseUrl};
use weir_host::storage::testing::PgTestDb;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestServer {
    pub server: Option<Server>,
    pub base: String,
    pub ops: String,
    pub client: reqwest::Client,
    pub dir: TempDir,
    pg: Option<PgTestDb>,
}

/// The order plugin a suite's servers serve as `orders`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orders {
    /// The built-in reference plugin (`plugins/orders`, Rust).
    Rust,
    /// Its Python port (`plugins/python/orders`, `componentize-py`), from `plugins.dir`. Get it
    /// from [`python`], which warms the compiled-artifact cache its servers share.
    Python,
}

impl Orders {
    /// The version the plugin's `describe` reports.
    pub fn version(self) -> &'static str {
        match self {
            Orders::Rust => "0.1.0",
            Orders::Python => "0.1.0-python",
        }
    }

    /// Configure `c`, whose files live in `dir`, to serve this plugin as `orders`. The Python
    /// component is compiled once per test process (17 MB, about 12 s of Cranelift on two
    /// cores): its compiled artifact is linked into this server's artifact cache
    /// (`<data_dir>/artifacts`) from the shared one.
    pub fn serve(self, c: &mut Config, dir: &Path) {
        if self == Orders::Python {
            let path = weir_plugin_artifacts_python::ORDERS
                .expect("the Python plugin is built (get Orders::Python from support::python)");
            c.plugins.dir = Some(plugin_dir(dir, &[path]));
            c.plugins.orders = "orders".into();
            // Refused at admission, it must stop the server rather than leave the built-in
            // Rust plugin serving in its place.
            c.plugins.strict = true;
            // CPython as a component makes 38 core module instances (default limit 32).
            c.runtime.budget.core_instances = 64;
            link_all(&python_artifacts(), &c.data_dir.join("artifacts"));
        }
    }
}

/// The shared compiled-artifact cache of the Python plugin: one directory of the workspace's
/// `target/tmp`, kept between runs (an entry is keyed by the component's digest and the engine
/// settings, and checked by hash before use: see `weir_host::runtime::ArtifactCache`).
fn python_artifacts() -> std::path::PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-artifacts")
}

/// Link the shared compiled artifacts of the Python plugin into `to` (a runtime's artifact
/// cache directory); call [`python`] first.
pub fn link_python_artifacts(to: &Path) {
    link_all(&python_artifacts(), to);
}

/// Hard-link (or copy, across file systems) every file of `from` into `to`, through a
/// temporary name, so a reader never sees half a file.
fn link_all(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    let Ok(entries) = std::fs::read_dir(from) else {
        return;
    };
    for entry in entries {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        static LINKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = LINKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = to.join(format!(
            ".{}.link-{}-{n}",
            entry.file_name().to_string_lossy(),
            std::process::id()
        ));
        if std::fs::hard_link(entry.path(), &tmp).is_err() {
            std::fs::copy(entry.path(), &tmp).unwrap_or_else(|e| {
                panic!("copy {} to {}: {e}", entry.path().display(), tmp.display())
            });
        }
        std::fs::rename(&tmp, &target).unwrap();
    }
}

static PYTHON_WARM: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// The Python port, ready to serve; `None` (the test prints why and passes) when it was not
/// built, which `CI=true` turns into a failure. The first call of the test process starts one
/// server with it and, when that server had to compile the component, publishes the compiled
/// artifact to the shared cache (dropping those of older builds of the port).
pub async fn python() -> Option<Orders> {
    weir_plugin_artifacts_python::require(
        "the Python order plugin",
        weir_plugin_artifacts_python::ORDERS,
    )?;
    PYTHON_WARM
        .get_or_init(|| async {
            let shared = python_artifacts();
            let s = TestServer::start(Backend::Sqlite, |c, dir| Orders::Python.serve(c, dir)).await;
            let stable = s.state().registry.slot_of("orders").expect("orders").stable;
            assert_eq!(stable.meta.version, Orders::Python.version());
            if stable.artifact != CacheOutcome::Hit {
                let digest = &stable.meta.digest;
                let fresh = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
                for entry in std::fs::read_dir(s.dir.path().join("data/artifacts")).unwrap() {
                    let entry = entry.unwrap();
                    if entry
                        .file_name()
                        .to_string_lossy()
                        .starts_with(digest.as_str())
                    {
                        let to = fresh.path().join(entry.file_name());
                        std::fs::hard_link(entry.path(), &to)
                            .or_else(|_| std::fs::copy(entry.path(), &to).map(drop))
                            .unwrap();
                    }
                }
                std::fs::create_dir_all(&shared).unwrap();
                for old in std::fs::read_dir(&shared).unwrap() {
                    let old = old.unwrap();
                    if !old
                        .file_name()
                        .to_string_lossy()
                        .starts_with(digest.as_str())
                    {
                        std::fs::remove_file(old.path()).unwrap();
                    }
                }
                link_all(fresh.path(), &shared);
            }
            s.stop().await;
        })
        .await;
    Some(Orders::Python)
}

impl TestServer {
    /// [`TestServer::start`] serving `orders` as the orders plugin (applied before `tweak`). A
    /// server of the Python port is checked to serve it, loaded from the shared artifact cache
    /// rather than compiled again.
    pub async fn start_with(
        backend: Backend,
        orders: Orders,
        tweak: impl FnOnce(&mut Config, &Path),
    ) -> Self {
        let s = Self::start(backend, |c, dir| {
            orders.serve(c, dir);
            tweak(c, dir);
        })
        .await;
        if orders == Orders::Python {
            let stable = s.state().registry.slot_of("orders").expect("orders").stable;
            assert_eq!(stable.meta.version, Orders::Python.version());
            assert_eq!(
                stable.artifact,
                CacheOutcome::Hit,
                "the Python plugin was compiled again: the shared artifact was not linked \
                 into this server's cache, or its engine settings differ from the warm-up's \
                 (support::python)"
            );
        }
        s
    }

    pub async fn start(backend: Backend, tweak: impl FnOnce(&mut Config, &Path)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            ops_listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let db = PgTestDb::create()
                    .await
                    .expect("create a PostgreSQL test database (is PostgreSQL on 127.0.0.1:5432?)");
                config.database_url = Some(DatabaseUrl::new(db.url()));
                Some(db)
            }
        };
        tweak(&mut config, dir.path());
        config.validate().expect("test config is valid");
        let server = Server::start(config).await.expect("server starts");
        let base = format!("http://{}", server.api_addr);
        let ops = format!("http://{}", server.ops_addr);
        Self {
            server: Some(server),
            base,
            ops,
            client: reqwest::Client::new(),
            dir,
            pg,
        }
    }

    pub fn state(&self) -> &weir_host::server::AppState {
        &self.server.as_ref().expect("running").state
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown(Duration::from_secs(5)).await;
        }
        if let Some(db) = self.pg.take() {
            db.drop_db().await.expect("drop test database");
        }
    }
}

/// Copy built test plugins into `<dir>/plugins` and return that directory.
/// Deadlines far beyond what any answer needs, for tests that prove something other than a
/// timeout (bounds, deduplication, ordering): on a loaded 2-core runner a catalog read or a
/// plugin call can exceed the production defaults (150 ms database, 200 ms catalog, 500 ms
/// budget), and the answer would be a 503 the test is not about. Tests of the timeouts
/// themselves set their own values instead.
pub fn patient(c: &mut Config) {
    c.policy.database.timeout = Duration::from_secs(10);
    c.runtime.catalog_timeout = Duration::from_secs(15);
    c.runtime.budget.timeout = Duration::from_secs(15);
    c.http.request_timeout = Duration::from_secs(20);
}

pub fn plugin_dir(dir: &Path, plugins: &[&str]) -> std::path::PathBuf {
    let out = dir.join("plugins");
    std::fs::create_dir_all(&out).unwrap();
    for p in plugins {
        let src = Path::new(p);
        std::fs::copy(src, out.join(src.file_name().unwrap())).unwrap();
    }
    out
}

pub fn order_body(customer: &str, lines: &[(&str, u32)]) -> serde_json::Value {
    serde_json::json!({
        "customer_id": customer,
        "currency": "EUR",
        "lines": lines.iter().map(|(sku, q)| serde_json::json!({"sku": sku, "quantity": q})).collect::<Vec<_>>(),
    })
}

/// Status and body of a response; the body as JSON, or `Value::String` of its text.
/// Status, headers and JSON body of a response (`Null` when the body is not JSON).
pub type JsonResponse = (
    reqwest::StatusCode,
    reqwest::header::HeaderMap,
    serde_json::Value,
);

async fn status_and_body(res: reqwest::Response) -> (u16, serde_json::Value) {
    let status = res.status().as_u16();
    let text = res.text().await.expect("response body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

impl TestServer {
    /// `GET` `path` on the API listener.
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let res = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        status_and_body(res).await
    }

    /// `GET` `path` on the operations listener.
    pub async fn ops_get(&self, path: &str) -> (u16, serde_json::Value) {
        let res = self
            .client
            .get(format!("{}{path}", self.ops))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        status_and_body(res).await
    }

    /// `POST /v1/orders` with `body`, and `key` as the `Idempotency-Key` when given: status,
    /// headers and the JSON body (`Null` when it is not JSON).
    pub async fn post_order(&self, key: Option<&str>, body: &serde_json::Value) -> JsonResponse {
        self.post_json("/v1/orders", key, body).await
    }

    /// `POST /v1/quotes`, as [`Self::post_order`].
    pub async fn post_quote(&self, key: Option<&str>, body: &serde_json::Value) -> JsonResponse {
        self.post_json("/v1/quotes", key, body).await
    }

    /// `POST path` with `body` as JSON and `key` as the `Idempotency-Key` when given.
    async fn post_json(
        &self,
        path: &str,
        key: Option<&str>,
        body: &serde_json::Value,
    ) -> JsonResponse {
        let mut req = self.client.post(format!("{}{path}", self.base)).json(body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        let res = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.json().await.unwrap_or(serde_json::Value::Null);
        (status, headers, body)
    }

    /// `POST /v1/orders/{id}/cancel`: status and JSON body (`Null` when it is not JSON).
    pub async fn cancel(&self, id: &str) -> (u16, serde_json::Value) {
        let res = self
            .client
            .post(format!("{}/v1/orders/{id}/cancel", self.base))
            .send()
            .await
            .expect("POST /v1/orders/{id}/cancel");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// The catalog entry of `sku` from `GET /v1/products` (panics when there is none).
    pub async fn product(&self, sku: &str) -> serde_json::Value {
        let (_, products) = self.get("/v1/products").await;
        products["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|p| p["sku"] == sku)
            .cloned()
            .unwrap_or_else(|| panic!("no product {sku} in {products}"))
    }

    /// `/readyz`: status and body.
    pub async fn readyz(&self) -> (u16, serde_json::Value) {
        self.ops_get("/readyz").await
    }

    /// The Prometheus text of `/metrics`, checked for its content type.
    pub async fn metrics(&self) -> String {
        let res = self
            .client
            .get(format!("{}/metrics", self.ops))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4")
        );
        res.text().await.unwrap()
    }
}

/// The readiness check `name` of a `/readyz` body.
pub fn check<'a>(body: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    body["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {body}"))
}

/// Poll `probe` until it returns true: at most `tries` times, `every` apart (for state that
/// settles over time, e.g. a breaker's open period; never to wait for an event).
pub async fn eventually<F, Fut>(what: &str, tries: u32, every: Duration, probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let reached = settle(tries, every, probe, |done| *done).await;
    assert!(
        reached,
        "{what}: not reached after {tries} tries {every:?} apart"
    );
}

/// Read `probe` until `done` holds for its value, at most `tries` times, `every` apart, and
/// return the last value read: for a test that asserts on what it saw (with a message
/// naming it) rather than only that the wait ended, as [`eventually`] does.
pub async fn settle<T, F, Fut>(
    tries: u32,
    every: Duration,
    mut probe: F,
    done: impl Fn(&T) -> bool,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut seen = probe().await;
    for _ in 1..tries {
        if done(&seen) {
            break;
        }
        tokio::time::sleep(every).await;
        seen = probe().await;
    }
    seen
}

/// The sum of the samples of `name` in Prometheus text whose labels include `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

impl TestServer {
    /// A new API key of `tenant` with every scope, created through the admin API (the server
    /// must have `admin_token` set to `admin_token`).
    pub async fn api_key(&self, admin_token: &str, tenant: &str) -> String {
        let scopes = [
            "orders:write",
            "orders:read",
            "products:write",
            "events:read",
        ]
        .map(str::to_owned);
        let created = weir_host::cli::AdminClient::new(&self.ops, Some(admin_token.to_owned()))
            .unwrap()
            .create_api_key(tenant, "test", &scopes, None)
            .await
            .expect("create an API key");
        created["key"].as_str().expect("key text").to_owned()
    }
}
