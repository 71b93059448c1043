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
