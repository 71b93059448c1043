//! Client commands of the `weir` binary that talk to a running instance's operations API:
//! `weir plugin push|list|status|promote|rollback|history`.
//!
//! They read `WEIR_ADMIN_URL` (the operations listener, default `http://127.0.0.1:9090`) and
//! `WEIR_ADMIN_TOKEN`, print a human summary by default and the API's JSON with `--json`, and
//! exit non-zero with the problem's code, detail and stage when the API refuses. This module
//! sits above every layer: it is a client of the others' HTTP contract, nothing more.
//!
//! [`scaffold`] is `weir plugin new`: a new plugin project on disk, no instance involved.
//! [`cases`] is `weir plugin test`: recorded or conformance cases replayed offline; the
//! recording itself is started and exported through [`AdminClient`] (`weir plugin cases`).

pub mod cases;
pub mod scaffold;

use std::time::Duration;

use serde_json::{Value, json};

/// Where a pushed version goes once admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushTo {
    /// Nowhere yet: admitted only.
    Nowhere,
    /// The stable version (canary and shadow dropped).
    Stable,
    /// A canary at this percentage.
    Canary(u8),
    /// A shadow sampling this percentage of requests.
    Shadow(u8),
}

/// A refusal or a failure to talk to the API, ready to print.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API answered with a problem.
    #[error(
        "{status} {code}: {detail}{}{}",
        stage.as_ref().map(|s| format!(" (stage: {s})")).unwrap_or_default(),
        contract.as_deref().map(|c| format!("\n{}", crate::runtime::check::contract_text(c))).unwrap_or_default()
    )]
    Problem {
        /// HTTP status.
        status: u16,
        /// Problem code.
        code: String,
        /// Problem detail.
        detail: String,
        /// Admission stage, when one refused.
        stage: Option<String>,
        /// What differs from the contract, for a refusal at the `contract` (or `world`)
        /// stage: listed one per line, escaped (`runtime::check::contract_text`).
        contract: Option<Box<crate::world::contract::ContractReport>>,
    },
    /// No answer.
    #[error("cannot reach {url}: {source}")]
    Transport {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// A local problem (reading the file, a malformed answer).
    #[error("{0}")]
    Local(String),
}

/// A client of one instance's admin API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl AdminClient {
    /// A client of `base` (e.g. `http://127.0.0.1:9090`) with `token`.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| ClientError::Local(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http,
        })
    }

    /// From `WEIR_ADMIN_URL` and `WEIR_ADMIN_TOKEN`.
    pub fn from_env() -> Result<Self, ClientError> {
        let base =
            std::env::var("WEIR_ADMIN_URL").unwrap_or_else(|_| "http://127.0.0.1:9090".to_owned());
        Self::new(&base, std::env::var("WEIR_ADMIN_TOKEN").ok())
    }

    async fn send(&self, req: reqwest::RequestBuilder, url: &str) -> Result<Value, ClientError> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let res = req.send().await.map_err(|source| ClientError::Transport {
            url: url.to_owned(),
            source,
        })?;
        let status = res.status().as_u16();
        let text = res.text().await.map_err(|source| ClientError::Transport {
            url: url.to_owned(),
            source,
        })?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status >= 400 {
            let field = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
            return Err(ClientError::Problem {
                status,
                code: field("code").unwrap_or_else(|| "HTTP_ERROR".to_owned()),
                detail: field("detail").unwrap_or_else(|| body.to_string()),
                stage: field("stage"),
                contract: body
                    .get("contract")
                    .and_then(|c| serde_json::from_value(c.clone()).ok())
                    .map(Box::new),
            });
        }
        Ok(body)
    }

    async fn get(&self, path: &str) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        self.send(self.http.get(&url), &url).await
    }

    async fn post_json(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        self.send(self.http.post(&url).json(body), &url).await
    }

    async fn delete(&self, path: &str) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        self.send(self.http.delete(&url), &url).await
    }

    /// Create an API key (`POST /admin/v1/apikeys`); the answer holds the key text.
    pub async fn create_api_key(
        &self,
        tenant: &str,
        name: &str,
        scopes: &[String],
        expires_at: Option<&str>,
    ) -> Result<Value, ClientError> {
        let mut body = serde_json::json!({"tenant": tenant, "name": name, "scopes": scopes});
        if let Some(at) = expires_at {
            body["expires_at"] = Value::String(at.to_owned());
        }
        self.post_json("/admin/v1/apikeys", &body).await
    }

    /// List API keys (`GET /admin/v1/apikeys`), of one tenant when given.
    pub async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Value, ClientError> {
        let query = tenant
            .map(|t| {
                format!(
                    "?tenant={}",
                    form_urlencoded::byte_serialize(t.as_bytes()).collect::<String>()
                )
            })
            .unwrap_or_default();
        self.get(&format!("/admin/v1/apikeys{query}")).await
    }

    /// Revoke an API key (`DELETE /admin/v1/apikeys/{id}`).
    pub async fn revoke_api_key(&self, id: &str) -> Result<Value, ClientError> {
        let id: String = form_urlencoded::byte_serialize(id.as_bytes()).collect();
        self.delete(&format!("/admin/v1/apikeys/{id}")).await
    }

    /// Upload a component; then release it per `to`. Returns the admission answer and, when
    /// released, the new release.
    pub async fn push(
        &self,
        bytes: Vec<u8>,
        to: PushTo,
        reason: Option<&str>,
    ) -> Result<(Value, Option<Value>), ClientError> {
        let url = format!("{}/admin/v1/plugins", self.base);
        let admitted = self
            .send(
                self.http
                    .post(&url)
                    .header("content-type", "application/wasm")
                    .body(bytes),
                &url,
            )
            .await?;
        if to == PushTo::Nowhere {
            return Ok((admitted, None));
        }
        let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let name = field(&admitted, "name")
            .ok_or_else(|| ClientError::Local(format!("no plugin name in {admitted}")))?;
        let digest = field(&admitted, "digest")
            .ok_or_else(|| ClientError::Local(format!("no digest in {admitted}")))?;
        let plugin = self.get(&format!("/admin/v1/plugins/{name}")).await?;
        let release = plugin.get("release").filter(|r| !r.is_null());
        let generation = release
            .and_then(|r| r.get("generation"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let stable = release
            .and_then(|r| field(r, "stable"))
            .unwrap_or_else(|| digest.clone());
        let desired = match to {
            PushTo::Stable => json!({"generation": generation, "stable": digest}),
            PushTo::Canary(weight) => json!({
                "generation": generation, "stable": stable,
                "canary": {"digest": digest, "weight": weight},
            }),
            PushTo::Shadow(percent) => json!({
                "generation": generation, "stable": stable,
                "shadow": {"digest": digest, "sample": f64::from(percent) / 100.0},
            }),
            PushTo::Nowhere => return Ok((admitted, None)),
        };
        let mut desired = desired;
        if let Some(r) = reason {
            desired["reason"] = json!(r);
        }
        let url = format!("{}/admin/v1/plugins/{name}/release", self.base);
        let released = self.send(self.http.put(&url).json(&desired), &url).await?;
        Ok((admitted, Some(released)))
    }

    /// Every plugin.
    pub async fn list(&self) -> Result<Value, ClientError> {
        self.get("/admin/v1/plugins").await
    }

    /// One plugin.
    pub async fn status(&self, name: &str) -> Result<Value, ClientError> {
        self.get(&format!("/admin/v1/plugins/{name}")).await
    }

    /// Promote the canary.
    pub async fn promote(&self, name: &str, reason: Option<&str>) -> Result<Value, ClientError> {
        self.post_json(
            &format!("/admin/v1/plugins/{name}/promote"),
            &json!({ "reason": reason }),
        )
        .await
    }

    /// Back to the previous stable version.
    pub async fn rollback(&self, name: &str, reason: Option<&str>) -> Result<Value, ClientError> {
        self.post_json(
            &format!("/admin/v1/plugins/{name}/rollback"),
            &json!({ "reason": reason }),
        )
        .await
    }

    /// Start a case recording (`PUT /admin/recording`) with `spec`.
    pub async fn start_recording(&self, spec: &Value) -> Result<Value, ClientError> {
        let url = format!("{}/admin/recording", self.base);
        self.send(self.http.put(&url).json(spec), &url).await
    }

    /// The current recording's status (`GET /admin/recording`).
    pub async fn recording(&self) -> Result<Value, ClientError> {
        self.get("/admin/recording").await
    }

    /// The cases recorded so far, as a cases file (`GET /admin/recording/cases`).
    pub async fn recorded_cases(&self) -> Result<Value, ClientError> {
        self.get("/admin/recording/cases").await
    }

    /// Stop and discard the recording (`DELETE /admin/recording`).
    pub async fn stop_recording(&self) -> Result<Value, ClientError> {
        self.delete("/admin/recording").await
    }

    /// The audit trail.
    pub async fn history(&self, name: &str, limit: u32) -> Result<Value, ClientError> {
        self.get(&format!("/admin/v1/plugins/{name}/history?limit={limit}"))
            .await
    }
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("-")
}

fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

/// A release, one line.
pub fn release_line(r: &Value) -> String {
    let mut line = format!(
        "generation {}: stable {}",
        r.get("generation").and_then(Value::as_i64).unwrap_or(0),
        short(s(r, "stable"))
    );
    if let Some(c) = r.get("canary").filter(|c| !c.is_null()) {
        line.push_str(&format!(
            ", canary {} at {}%",
            short(s(c, "digest")),
            c.get("weight").and_then(Value::as_u64).unwrap_or(0)
        ));
    }
    if let Some(sh) = r.get("shadow").filter(|s| !s.is_null()) {
        line.push_str(&format!(
            ", shadow {} sampling {}",
            short(s(sh, "digest")),
            sh.get("sample").and_then(Value::as_f64).unwrap_or(0.0)
        ));
    }
    line.push_str(&format!(
        " (by {} at {})",
        s(r, "updated_by"),
        s(r, "updated_at")
    ));
    line
}

/// A recording's status (the `recording` of `GET /admin/recording`), one line.
pub fn recording_line(r: &Value) -> String {
    if r.is_null() {
        return "no recording".to_owned();
    }
    let n = |k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0);
    format!(
        "recording {}: {} of at most {} cases kept, {}% sampled, until {}{}; dropped: {} full, {} oversized, {} incomplete",
        if r.get("active").and_then(Value::as_bool) == Some(true) {
            "active"
        } else {
            "over"
        },
        n("kept"),
        n("max_cases"),
        n("sample_percent"),
        s(r, "ends_at"),
        if r.get("redact").and_then(Value::as_bool) == Some(false) {
            ", not redacted"
        } else {
            ", redacted"
        },
        n("dropped_full"),
        n("dropped_oversized"),
        n("dropped_incomplete"),
    )
}

/// A plugin's state, several lines.
pub fn plugin_text(p: &Value) -> String {
    let mut out = format!("{}\n", s(p, "name"));
    match p.get("release").filter(|r| !r.is_null()) {
        Some(r) => out.push_str(&format!("  release {}\n", release_line(r))),
        None => out.push_str("  no release\n"),
    }
    out.push_str("  versions:\n");
    for v in p
        .get("versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let stats = v.get("stats").cloned().unwrap_or_default();
        let count = |k: &str| {
            stats
                .get("shadow")
                .and_then(|c| c.get(k))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        // A shadow's comparisons with the serving version (what the RUNBOOK reads first).
        let shadow = if s(v, "state") == "shadow" {
            format!(
                ", {} matches, {} mismatches, {} failed",
                count("matches"),
                count("mismatches"),
                count("failed")
            )
        } else {
            String::new()
        };
        out.push_str(&format!(
            "    {:<9} {:<14} {}  {} calls, {:.1}% unexpected{}{shadow}\n",
            s(v, "state"),
            s(v, "version"),
            short(s(v, "digest")),
            stats.get("calls").and_then(Value::as_u64).unwrap_or(0),
            100.0
                * stats
                    .get("unexpected_rate")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0),
            stats
                .get("latency")
                .and_then(|l| l.get("p99_ms"))
                .and_then(Value::as_f64)
                .map(|p| format!(", p99 {p:.2} ms"))
                .unwrap_or_default(),
        ));
    }
    out
}

/// The audit trail, one line per change.
pub fn history_text(h: &Value) -> String {
    let mut out = String::new();
    for e in h
        .get("history")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.push_str(&format!(
            "{} {:<13} by {:<12} -> {}{}\n",
            s(e, "at"),
            s(e, "action"),
            s(e, "actor"),
            e.get("to").map(release_line).unwrap_or_default(),
            e.get("reason")
                .and_then(Value::as_str)
                .map(|r| format!(" -- {r}"))
                .unwrap_or_default()
        ));
    }
    out
}

/// One line per API key for `weir apikey list`.
pub fn api_key_line(k: &Value) -> String {
    let scopes = k
        .get("scopes")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let state = if !k.get("revoked_at").is_none_or(Value::is_null) {
        "revoked"
    } else {
        "active"
    };
    format!(
        "{}  weir_{}_…  tenant={}  name={}  scopes={}  {}\n",
        s(k, "id"),
        s(k, "prefix"),
        s(k, "tenant"),
        crate::runtime::check::escape_terminal(s(k, "name"), 64),
        scopes,
        state
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::plugin_text;

    #[test]
    fn a_contract_refusal_lists_each_mismatch_escaped() {
        use crate::world::contract::{ContractReport, Mismatch, TypeChange};
        let report = ContractReport {
            accepted_versions: vec!["0.1.0".to_owned()],
            compared_with: "0.1.0".to_owned(),
            mismatches: vec![
                Mismatch::Type {
                    interface: "types".to_owned(),
                    name: "order-line".to_owned(),
                    change: TypeChange::FieldType {
                        field: "quantity".to_owned(),
                        expected: "u32".to_owned(),
                        found: "u64".to_owned(),
                    },
                },
                Mismatch::UnknownItem {
                    interface: "weir:orders/log@0.1.0".to_owned(),
                    item: "emit\u{1b}[2J".to_owned(),
                },
            ],
            omitted: 0,
            other_world: false,
        };
        // As the problem body carries it, read back the way the client reads it.
        let body = json!({"code": "PLUGIN_REJECTED", "contract": report});
        let contract: ContractReport = serde_json::from_value(body["contract"].clone()).unwrap();
        assert_eq!(contract, report);
        let e = super::ClientError::Problem {
            status: 422,
            code: "PLUGIN_REJECTED".to_owned(),
            detail: "component does not match the weir:orders contract".to_owned(),
            stage: Some("contract".to_owned()),
            contract: Some(Box::new(contract)),
        };
        let text = e.to_string();
        assert!(
            text.starts_with(
                "422 PLUGIN_REJECTED: component does not match the weir:orders contract \
                 (stage: contract)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "  - type types.order-line: field `quantity` has type u64, expected u32\n"
            ),
            "{text}"
        );
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(text.contains("`emit\\u{1b}[2J`"), "{text}");
    }

    #[test]
    fn status_shows_a_shadows_comparisons() {
        let stats = |shadow: serde_json::Value| json!({"calls": 10, "unexpected_rate": 0.0, "shadow": shadow});
        let text = plugin_text(&json!({
            "name": "orders",
            "release": null,
            "versions": [
                {"state": "stable", "version": "0.1.0", "digest": "a".repeat(64),
                 "stats": stats(json!({"matches": 0, "mismatches": 0, "failed": 0}))},
                {"state": "shadow", "version": "0.2.0", "digest": "b".repeat(64),
                 "stats": stats(json!({"matches": 7, "mismatches": 2, "failed": 1}))},
            ],
        }));
        let shadow = text.lines().find(|l| l.contains("0.2.0")).unwrap();
        assert!(
            shadow.ends_with("7 matches, 2 mismatches, 1 failed"),
            "{text}"
        );
        let stable = text.lines().find(|l| l.contains("0.1.0")).unwrap();
        assert!(!stable.contains("matches"), "{text}");
    }
}
