//! Idempotency keys: request hashing and the key state machine.
//!
//! A client sends an `Idempotency-Key` with a request. The first attempt claims the key
//! (`in_progress`, locked for a while); it ends by completing the key with its response (in
//! the same transaction as its effects) or by releasing it (no effects, a retry may run).
//! A later attempt with the same key and the same request gets the stored response again; with
//! a different request it is refused; while the first attempt runs it is told to retry later.
//! A holder that crashed is taken over once its lock expires. Keys are kept for a retention
//! period, after which the key can be used afresh.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

/// A response kept for idempotent replay: status, body and headers, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
    /// In order; a name may repeat.
    pub headers: Vec<(String, String)>,
}

/// What claiming a key decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// The caller now holds the key (until `now + lock_ttl`) and must complete or release it.
    Started,
    /// The key completed earlier with the same request: send this response again.
    Replay(StoredResponse),
    /// Another attempt with the same key holds it right now.
    InProgress {
        /// When its lock expires (at least one second).
        retry_after: Duration,
    },
    /// The key was used with a different request.
    Mismatch,
}

impl IdempotencyBegin {
    /// A bounded label for spans: `started`, `replay`, `mismatch`, `in_progress`.
    pub fn label(&self) -> &'static str {
        match self {
            IdempotencyBegin::Started => "started",
            IdempotencyBegin::Replay(_) => "replay",
            IdempotencyBegin::Mismatch => "mismatch",
            IdempotencyBegin::InProgress { .. } => "in_progress",
        }
    }
}

/// Deterministic JSON: object keys sorted at every level, so equal bodies hash equally
/// whatever key order the client used.
pub fn canonical_json(v: &serde_json::Value) -> String {
    fn write(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::String(k.clone()).to_string());
                    out.push(':');
                    write(&map[k], out);
                }
                out.push('}');
            }
            serde_json::Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// Hash identifying a request for idempotency: route plus canonical body, lower-case hex.
pub fn request_hash(route: &str, body: &serde_json::Value) -> String {
    let mut h = Sha256::new();
    h.update(route.as_bytes());
    h.update([0]);
    h.update(canonical_json(body).as_bytes());
    hex::encode(h.finalize())
}

/// `later - earlier` as a std duration, zero if negative.
pub fn elapsed(earlier: DateTime<Utc>, later: DateTime<Utc>) -> Duration {
    (later - earlier).to_std().unwrap_or(Duration::ZERO)
}

/// An existing key as a store read it.
#[derive(Debug, Clone)]
pub struct ExistingKey {
    /// Hash of the request that claimed it.
    pub request_hash: String,
    /// `Some` when the key is completed.
    pub response: Option<StoredResponse>,
    /// Until when the holder's lock runs.
    pub locked_until: DateTime<Utc>,
    /// When the key was first claimed.
    pub created_at: DateTime<Utc>,
}

/// What to do about an existing key.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyDecision {
    /// Past retention: overwrite it with a fresh `in_progress` row (conditional on the old
    /// `created_at`).
    Replace,
    /// In progress with an expired lock: extend the lock (conditional on the old
    /// `locked_until`).
    TakeOver,
    /// Answer without writing.
    Answer(IdempotencyBegin),
}

/// The idempotency state machine, shared by every store so they cannot drift apart.
pub fn decide_existing(
    existing: ExistingKey,
    request_hash: &str,
    now: DateTime<Utc>,
    retention: Duration,
) -> KeyDecision {
    if elapsed(existing.created_at, now) >= retention {
        return KeyDecision::Replace;
    }
    if existing.request_hash != request_hash {
        return KeyDecision::Answer(IdempotencyBegin::Mismatch);
    }
    if let Some(response) = existing.response {
        return KeyDecision::Answer(IdempotencyBegin::Replay(response));
    }
    if existing.locked_until > now {
        let retry_after = elapsed(now, existing.locked_until).max(Duration::from_secs(1));
        return KeyDecision::Answer(IdempotencyBegin::InProgress { retry_after });
    }
    KeyDecision::TakeOver
}

/// How many times a store re-reads a key that changed under it before giving up with
/// `InProgress` (only reachable under heavy contention on one key).
pub const BEGIN_ATTEMPTS: usize = 5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_hash_ignores_key_order_but_not_values() {
        let a = serde_json::json!({"a": 1, "b": {"x": [1, 2], "y": "z"}});
        let b = serde_json::json!({"b": {"y": "z", "x": [1, 2]}, "a": 1});
        let c = serde_json::json!({"b": {"y": "z", "x": [2, 1]}, "a": 1});
        assert_eq!(request_hash("r", &a), request_hash("r", &b));
        assert_ne!(request_hash("r", &a), request_hash("r", &c));
        assert_ne!(request_hash("r", &a), request_hash("s", &a));
    }

    #[test]
    fn the_state_machine_answers_each_case() {
        let now = Utc::now();
        let key = |hash: &str, done: bool, locked_for: i64, age: i64| ExistingKey {
            request_hash: hash.to_owned(),
            response: done.then(|| StoredResponse {
                status: 201,
                body: b"{}".to_vec(),
                headers: vec![],
            }),
            locked_until: now + chrono::Duration::seconds(locked_for),
            created_at: now - chrono::Duration::seconds(age),
        };
        let day = Duration::from_secs(86_400);
        assert_eq!(
            decide_existing(key("h", true, 0, 90_000), "x", now, day),
            KeyDecision::Replace
        );
        assert_eq!(
            decide_existing(key("h", true, 0, 1), "x", now, day),
            KeyDecision::Answer(IdempotencyBegin::Mismatch)
        );
        assert!(matches!(
            decide_existing(key("h", true, 0, 1), "h", now, day),
            KeyDecision::Answer(IdempotencyBegin::Replay(_))
        ));
        assert_eq!(
            decide_existing(key("h", false, 5, 1), "h", now, day),
            KeyDecision::Answer(IdempotencyBegin::InProgress {
                retry_after: Duration::from_secs(5)
            })
        );
        assert_eq!(
            decide_existing(key("h", false, -1, 1), "h", now, day),
            KeyDecision::TakeOver
        );
    }
}
