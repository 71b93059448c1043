//! Shared helpers: servers on ephemeral ports with SQLite or a fresh PostgreSQL database.

use std::path::Path;
use std::time::Duration;

use tempfile::TempDir;
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

impl TestServer {
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
    pub async fn post_order(
        &self,
        key: Option<&str>,
        body: &serde_json::Value,
    ) -> (
        reqwest::StatusCode,
        reqwest::header::HeaderMap,
        serde_json::Value,
    ) {
        let mut req = self
            .client
            .post(format!("{}/v1/orders", self.base))
            .json(body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        let res = req.send().await.expect("POST /v1/orders");
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
pub async fn eventually<F, Fut>(what: &str, tries: u32, every: Duration, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..tries {
        if probe().await {
            return;
        }
        tokio::time::sleep(every).await;
    }
    panic!("{what}: not reached after {tries} tries {every:?} apart");
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
