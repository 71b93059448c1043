//! Property tests of the idempotency request hash ([`request_hash`], [`canonical_json`]).
//!
//! - Two texts of one JSON document (any key order, any insignificant whitespace, any mix of
//!   escaped and literal characters in strings) hash equally under one route.
//! - Changing the document anywhere (a value, a key, an array's length or order) or the route
//!   changes the hash.

use proptest::prelude::*;
use serde_json::{Map, Value};

use super::idempotency::{canonical_json, request_hash};

/// Object keys: a few short ones so that nested objects share and nearly share keys, and
/// arbitrary Unicode.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[a-c]{0,2}", 1 => any::<String>()]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // `Value::from` turns the non-finite floats (not JSON) into null.
        any::<f64>().prop_map(Value::from),
        prop_oneof!["[a-c]{0,3}", any::<String>()].prop_map(Value::String),
    ]
}

/// Arbitrary JSON documents, a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A small deterministic generator driving the layout choices of [`render`].
struct Choices(u64);

impl Choices {
    fn next(&mut self, n: usize) -> usize {
        // xorshift64*; the seed is forced odd so the state is never zero.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// JSON text of `v` with the object keys in a shuffled order, random insignificant whitespace
/// and strings with randomly `\u`-escaped characters. Numbers keep serde_json's text.
fn render(v: &Value, c: &mut Choices, out: &mut String) {
    fn ws(c: &mut Choices, out: &mut String) {
        for _ in 0..c.next(3) {
            out.push([' ', '\n', '\t', '\r'][c.next(4)]);
        }
    }
    fn string(s: &str, c: &mut Choices, out: &mut String) {
        out.push('"');
        for ch in s.chars() {
            match ch {
                '"' if c.next(2) == 0 => out.push_str("\\\""),
                '\\' if c.next(2) == 0 => out.push_str("\\\\"),
                '\n' if c.next(2) == 0 => out.push_str("\\n"),
                '/' if c.next(2) == 0 => out.push_str("\\/"),
                ch if ch.is_control() || ch == '"' || ch == '\\' || c.next(4) == 0 => {
                    let mut units = [0u16; 2];
                    for unit in ch.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                ch => out.push(ch),
            }
        }
        out.push('"');
    }
    ws(c, out);
    match v {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            for i in (1..entries.len()).rev() {
                entries.swap(i, c.next(i + 1));
            }
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                ws(c, out);
                string(k, c, out);
                ws(c, out);
                out.push(':');
                render(v, c, out);
            }
            ws(c, out);
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                render(item, c, out);
            }
            ws(c, out);
            out.push(']');
        }
        Value::String(s) => string(s, c, out),
        other => out.push_str(&other.to_string()),
    }
    ws(c, out);
}

/// One local edit of a document.
#[derive(Debug, Clone)]
enum Edit {
    /// Replace the node with another value.
    Replace(Value),
    /// In an object: add (or overwrite) an entry; elsewhere: replace the node.
    Insert(String, Value),
    /// In an object: rename its first key; in an array: reverse it; elsewhere: wrap the node
    /// in an array.
    Reshape(String),
    /// In an object or array: remove the first entry; elsewhere: replace the node by null.
    Remove,
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        json().prop_map(Edit::Replace),
        (key(), json()).prop_map(|(k, v)| Edit::Insert(k, v)),
        key().prop_map(Edit::Reshape),
        Just(Edit::Remove),
    ]
}

fn count(v: &Value) -> usize {
    1 + match v {
        Value::Object(map) => map.values().map(count).sum(),
        Value::Array(items) => items.iter().map(count).sum(),
        _ => 0,
    }
}

/// Apply `edit` to the `target`-th node of `v` in pre-order.
fn apply(v: &mut Value, target: &mut usize, edit: &Edit) -> bool {
    if *target == 0 {
        match (edit, &mut *v) {
            (Edit::Replace(new), _) => *v = new.clone(),
            (Edit::Insert(k, new), Value::Object(map)) => {
                map.insert(k.clone(), new.clone());
            }
            (Edit::Insert(_, new), _) => *v = new.clone(),
            (Edit::Reshape(k), Value::Object(map)) => {
                if let Some(first) = map.keys().next().cloned() {
                    let value = map.remove(&first).unwrap_or_default();
                    map.insert(k.clone(), value);
                }
            }
            (Edit::Reshape(_), Value::Array(items)) => items.reverse(),
            (Edit::Reshape(_), _) => *v = Value::Array(vec![v.take()]),
            (Edit::Remove, Value::Object(map)) => {
                if let Some(first) = map.keys().next().cloned() {
                    map.remove(&first);
                }
            }
            (Edit::Remove, Value::Array(items)) => {
                if !items.is_empty() {
                    items.remove(0);
                }
            }
            (Edit::Remove, _) => *v = Value::Null,
        }
        return true;
    }
    *target -= 1;
    match v {
        Value::Object(map) => map.values_mut().any(|child| apply(child, target, edit)),
        Value::Array(items) => items.iter_mut().any(|child| apply(child, target, edit)),
        _ => false,
    }
}

proptest! {
    #[test]
    fn equal_documents_hash_equally_whatever_their_layout(
        doc in json(),
        seed in any::<u64>(),
        route in "[A-Z]{3,6} /[a-z/]{0,12}",
    ) {
        let plain: Value = serde_json::from_str(&doc.to_string()).unwrap();
        let mut text = String::new();
        render(&doc, &mut Choices(seed | 1), &mut text);
        let relaid: Value = serde_json::from_str(&text)
            .map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
        prop_assert_eq!(canonical_json(&plain), canonical_json(&relaid), "{}", text);
        prop_assert_eq!(request_hash(&route, &plain), request_hash(&route, &relaid));
        // The hash is lower-case hex SHA-256.
        let hash = request_hash(&route, &plain);
        prop_assert!(hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    }

    #[test]
    fn any_change_to_the_document_changes_the_hash(
        doc in json(),
        at in any::<prop::sample::Index>(),
        edit in edit(),
    ) {
        let mut changed = doc.clone();
        let mut target = at.index(count(&doc));
        prop_assert!(apply(&mut changed, &mut target, &edit));
        // Some edits are no-ops (replacing a value by an equal one, reversing a palindrome).
        prop_assume!(changed != doc);
        prop_assert_ne!(
            request_hash("POST /v1/orders", &doc),
            request_hash("POST /v1/orders", &changed),
            "{} vs {}", doc, changed
        );
    }

    #[test]
    fn the_route_is_part_of_the_hash(doc in json(), a in any::<String>(), b in any::<String>()) {
        prop_assume!(a != b);
        prop_assert_ne!(request_hash(&a, &doc), request_hash(&b, &doc));
    }
}
