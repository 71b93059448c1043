//! Property tests of request decoding at the HTTP edge: the JSON body of `POST /v1/orders`
//! ([`JsonBody`] / [`parse_json`] into [`PlaceOrderBody`]) and the `Idempotency-Key` header
//! ([`IdempotencyKey`]).
//!
//! Body properties are checked on [`parse_json`] directly and, for the content type and the
//! body limit, through the real edge stack ([`super::edge::stack`]) with a probe route, so the
//! limit wiring and the problem rendering are part of what is tested.

use std::collections::{BTreeMap, BTreeSet};

use axum::Router;
use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::routing::post;
use http::{HeaderValue, Request, StatusCode, header};
use http_body_util::BodyExt as _;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use tower::ServiceExt as _;
use weir_core::domain::{LineRequest, OrderRequest};

use super::HttpConfig;
use super::error::ApiError;
use super::extract::{IdempotencyKey, JsonBody, parse_json};
use super::orders::PlaceOrderBody;
use crate::policy::PolicyConfig;

/// The codes a body can be refused with before any business rule runs.
const BODY_CODES: [&str; 5] = [
    "MALFORMED_JSON",
    "UNSUPPORTED_MEDIA_TYPE",
    "UNKNOWN_FIELD",
    "REQUEST_SCHEMA_INVALID",
    "PAYLOAD_TOO_LARGE",
];

/// Field names of the body and of one line.
const ORDER_FIELDS: [&str; 4] = ["customer_id", "currency", "lines", "metadata"];
const LINE_FIELDS: [&str; 2] = ["sku", "quantity"];

fn decode(bytes: &[u8]) -> Result<(OrderRequest, Value), ApiError> {
    parse_json::<PlaceOrderBody>(bytes).map(|b| (b.value.into(), b.raw))
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[a-zA-Z0-9_-]{0,12}", 1 => any::<String>()]
}

fn order_request() -> impl Strategy<Value = OrderRequest> {
    let line = (text(), any::<u32>()).prop_map(|(sku, quantity)| LineRequest { sku, quantity });
    (
        text(),
        prop_oneof!["[A-Z]{3}", any::<String>()],
        prop::collection::vec(line, 0..5),
        prop::collection::btree_map(text(), text(), 0..4),
    )
        .prop_map(|(customer_id, currency, lines, metadata)| OrderRequest {
            customer_id,
            currency,
            lines,
            metadata,
        })
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::String),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..5)
                .prop_map(|e| Value::Object(e.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Objects shaped like the body: each known field absent, well typed or of any JSON type,
/// lines shaped like lines, sometimes an extra field.
fn body_like() -> impl Strategy<Value = Value> {
    fn field(good: BoxedStrategy<Value>) -> impl Strategy<Value = Option<Value>> {
        prop_oneof![1 => Just(None), 4 => good.prop_map(Some), 1 => json().prop_map(Some)]
    }
    let line = (
        field(text().prop_map(Value::String).boxed()),
        field(any::<u32>().prop_map(Value::from).boxed()),
        prop::option::weighted(0.1, (text(), json())),
    )
        .prop_map(|(sku, quantity, extra)| {
            let mut m = Map::new();
            m.extend(sku.map(|v| ("sku".to_owned(), v)));
            m.extend(quantity.map(|v| ("quantity".to_owned(), v)));
            m.extend(extra);
            Value::Object(m)
        });
    (
        field(text().prop_map(Value::String).boxed()),
        field("[A-Z]{3}".prop_map(Value::String).boxed()),
        field(
            prop::collection::vec(line, 0..4)
                .prop_map(Value::Array)
                .boxed(),
        ),
        field(
            prop::collection::btree_map(text(), text().prop_map(Value::String), 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect()))
                .boxed(),
        ),
        prop::option::weighted(0.1, (text(), json())),
    )
        .prop_map(|(customer_id, currency, lines, metadata, extra)| {
            let mut m = Map::new();
            for (name, v) in ORDER_FIELDS
                .iter()
                .zip([customer_id, currency, lines, metadata])
            {
                m.extend(v.map(|v| ((*name).to_owned(), v)));
            }
            m.extend(extra);
            Value::Object(m)
        })
}

/// Where to add an unknown field: the body, or line `n` (modulo the number of lines).
#[derive(Debug, Clone)]
enum Spot {
    Body,
    Line(prop::sample::Index),
}

fn unknown_fields() -> impl Strategy<Value = Vec<(Spot, String, Value)>> {
    let spot = prop_oneof![
        Just(Spot::Body),
        any::<prop::sample::Index>().prop_map(Spot::Line)
    ];
    prop::collection::vec((spot, text(), json()), 1..4)
}

/// Check the refusal of a body-decoding error: one of the body codes, a 4xx status.
fn check_refusal(e: &ApiError) -> Result<(), TestCaseError> {
    let spec = e.spec();
    prop_assert!(BODY_CODES.contains(&spec.code), "unexpected refusal {e:?}");
    prop_assert!(spec.status.is_client_error());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Through the edge stack.

async fn probe(body: JsonBody<PlaceOrderBody>) -> axum::Json<OrderRequest> {
    axum::Json(body.value.into())
}

const LIMIT: usize = 1024;

fn edge() -> Router {
    let routes = Router::new().route("/v1/orders", post(probe));
    let http = HttpConfig {
        body_limit_bytes: LIMIT,
        ..HttpConfig::default()
    };
    let mut policy = PolicyConfig::default();
    // Hundreds of requests from one client within a second: not what is tested here.
    policy.rate_limit.enabled = false;
    let auth = crate::auth::AuthConfig::default();
    let authenticator = crate::auth::Authenticator::new(
        crate::auth::AuthMode::Open,
        std::sync::Arc::new(crate::auth::NoKeys),
        None,
        auth.cache_ttl,
    );
    super::edge::stack(
        routes,
        &http,
        &policy,
        super::auth::AuthLayerState::new(authenticator, &auth),
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// Send a `POST /v1/orders`; the status and the problem `code` (or the echoed request).
fn send(
    rt: &tokio::runtime::Runtime,
    app: &Router,
    content_type: Option<HeaderValue>,
    body: Vec<u8>,
    chunked: bool,
) -> (StatusCode, Value) {
    let mut req = Request::post("/v1/orders");
    if let Some(ct) = content_type {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    let req = if chunked {
        // No length known up front: the limit must stop the read, not the header.
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            body.chunks(100).map(|c| Ok(c.to_vec())).collect();
        req.body(Body::from_stream(futures::stream::iter(chunks)))
    } else {
        req.header(header::CONTENT_LENGTH, body.len())
            .body(Body::from(body))
    }
    .unwrap();
    rt.block_on(async {
        let res = app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    })
}

/// A valid body of exactly `len` bytes (at least `base.len()`): `base` padded with whitespace.
fn padded(base: &[u8], len: usize) -> Vec<u8> {
    let mut body = base.to_vec();
    body.resize(len.max(base.len()), b' ');
    body
}

#[derive(Debug, Clone)]
enum ContentType {
    /// A JSON media type (`application/json`, `application/*+json`), any case, with
    /// parameters and whitespace.
    Json(String),
    /// Any other media type.
    Other(String),
    /// Arbitrary header bytes.
    Arbitrary(Vec<u8>),
    /// No header.
    Missing,
}

fn content_type() -> impl Strategy<Value = ContentType> {
    fn random_case(s: &str, flips: &[bool]) -> String {
        s.chars()
            .zip(flips.iter().cycle())
            .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c })
            .collect()
    }
    let params = prop::collection::vec("[a-z]{1,8}=[a-zA-Z0-9-]{0,8}", 0..3)
        .prop_map(|p| p.iter().map(|p| format!(";{p}")).collect::<String>());
    let json_essence = prop_oneof![
        Just("application/json".to_owned()),
        "[a-z][a-z.-]{0,11}".prop_map(|s| format!("application/{s}+json")),
    ];
    let json = (
        json_essence,
        prop::collection::vec(any::<bool>(), 1..8),
        "[ \t]{0,2}",
        params.clone(),
    )
        .prop_map(|(e, flips, ws, p)| {
            ContentType::Json(format!("{ws}{}{ws}{p}", random_case(&e, &flips)))
        });
    let other = (
        prop_oneof![
            Just("text/plain".to_owned()),
            Just("application/x-www-form-urlencoded".to_owned()),
            Just("application/jsonx".to_owned()),
            Just("application/json-seq".to_owned()),
            Just("application/json+xml".to_owned()),
            Just("text/json".to_owned()),
            Just("json".to_owned()),
            Just("multipart/form-data".to_owned()),
            "[a-z]{1,8}/[a-z]{1,8}".prop_filter("not JSON", |s| !s.starts_with("application/")
                || !s.ends_with("json")),
        ],
        params,
    )
        .prop_map(|(e, p)| ContentType::Other(format!("{e}{p}")));
    prop_oneof![
        4 => json,
        3 => other,
        2 => prop::collection::vec(any::<u8>(), 0..40).prop_map(ContentType::Arbitrary),
        1 => Just(ContentType::Missing),
    ]
}

// ---------------------------------------------------------------------------------------------
// Idempotency-Key.

/// Bytes a header value may hold (`HeaderValue::from_bytes`): tab, space to `~`, 0x80-0xFF.
fn header_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        8 => 0x21u8..=0x7e,
        1 => Just(b' '),
        1 => Just(b'\t'),
        1 => 0x80u8..=0xff,
    ]
}

fn key_bytes() -> impl Strategy<Value = Vec<u8>> {
    let visible = prop::collection::vec(0x21u8..=0x7e, 0..=300);
    prop_oneof![
        // Around the length limit.
        prop::collection::vec(0x21u8..=0x7e, 250..=260),
        prop::collection::vec(0x21u8..=0x7e, 0..=2),
        visible.clone(),
        prop::collection::vec(header_byte(), 0..=300),
        // One byte outside visible ASCII in a valid key.
        (visible, header_byte(), any::<prop::sample::Index>()).prop_map(|(mut v, b, at)| {
            v.insert(at.index(v.len() + 1), b);
            v
        }),
    ]
}

fn key_from(value: Option<HeaderValue>) -> Result<String, ApiError> {
    let mut req = Request::post("/v1/orders");
    if let Some(value) = value {
        req = req.header("idempotency-key", value);
    }
    let (mut parts, ()) = req.body(()).unwrap().into_parts();
    futures::executor::block_on(IdempotencyKey::from_request_parts(&mut parts, &())).map(|k| k.0)
}

proptest! {
    // -----------------------------------------------------------------------------------------
    // The JSON body.

    #[test]
    fn arbitrary_bytes_decode_or_get_a_typed_refusal(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            any::<String>().prop_map(String::into_bytes),
        ],
    ) {
        if let Err(e) = decode(&bytes) {
            check_refusal(&e)?;
        }
    }

    #[test]
    fn arbitrary_json_is_never_called_malformed(v in prop_oneof![json(), body_like()]) {
        match decode(&serde_json::to_vec(&v).unwrap()) {
            Ok((_, raw)) => prop_assert_eq!(raw, v),
            Err(e) => {
                check_refusal(&e)?;
                prop_assert!(
                    matches!(e, ApiError::SchemaInvalid(_) | ApiError::UnknownFields(_)),
                    "{e:?} for {v}"
                );
            }
        }
    }

    #[test]
    fn damaged_valid_bodies_decode_or_get_a_typed_refusal(
        req in order_request(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
    ) {
        let mut bytes = serde_json::to_vec(&req).unwrap();
        for (at, byte, op) in edits {
            let i = at.index(bytes.len() + 1);
            match op {
                0 => bytes.insert(i, byte),
                1 if i < bytes.len() => { bytes.remove(i); }
                _ if i < bytes.len() => bytes[i] = byte,
                _ => bytes.push(byte),
            }
        }
        if let Err(e) = decode(&bytes) {
            check_refusal(&e)?;
        }
    }

    #[test]
    fn valid_requests_round_trip(req in order_request(), omit_empty_metadata in any::<bool>()) {
        let mut v = serde_json::to_value(&req).unwrap();
        if omit_empty_metadata && req.metadata.is_empty() {
            v.as_object_mut().unwrap().remove("metadata");
        }
        let (decoded, raw) = decode(&serde_json::to_vec(&v).unwrap())
            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert_eq!(decoded, req);
        prop_assert_eq!(raw, v);
    }

    #[test]
    fn any_unknown_field_anywhere_is_refused_as_unknown(
        req in order_request(),
        unknown in unknown_fields(),
    ) {
        let mut v = serde_json::to_value(&req).unwrap();
        let mut expected = BTreeSet::new();
        for (spot, name, value) in unknown {
            let lines = v["lines"].as_array().map_or(0, Vec::len);
            let (object, known, path) = match spot {
                Spot::Line(i) if lines > 0 => {
                    let i = i.index(lines);
                    (&mut v["lines"][i], &LINE_FIELDS[..], format!("lines.{i}.{name}"))
                }
                _ => (&mut v, &ORDER_FIELDS[..], name.clone()),
            };
            if known.contains(&name.as_str()) {
                continue;
            }
            object.as_object_mut().unwrap().insert(name, value);
            expected.insert(path);
        }
        prop_assume!(!expected.is_empty());
        match decode(&serde_json::to_vec(&v).unwrap()) {
            Err(ApiError::UnknownFields(violations)) => {
                prop_assert!(violations.iter().all(|f| f.code == "UNKNOWN_FIELD"));
                let fields: BTreeSet<String> = violations.into_iter().map(|f| f.field).collect();
                prop_assert_eq!(fields, expected);
            }
            other => prop_assert!(false, "expected UNKNOWN_FIELD for {}, got {:?}", v, other),
        }
    }

    #[test]
    fn a_wrongly_typed_field_is_a_schema_error_naming_it(
        req in order_request().prop_filter("one line at least", |r| !r.lines.is_empty()),
        which in 0usize..6,
        line in any::<prop::sample::Index>(),
        replacement in json(),
    ) {
        let mut v = serde_json::to_value(&req).unwrap();
        let i = line.index(req.lines.len());
        let (slot, path, fits) : (&mut Value, String, fn(&Value) -> bool) = match which {
            0 => (&mut v["customer_id"], "customer_id".into(), Value::is_string),
            1 => (&mut v["currency"], "currency".into(), Value::is_string),
            // Arrays of wrong lines are cases 4 and 5 (and objects in them may add unknown
            // fields, which take precedence).
            2 => (&mut v["lines"], "lines".into(), Value::is_array),
            3 => (&mut v["metadata"], "metadata".into(), |v| {
                v.as_object().is_some_and(|m| m.values().all(Value::is_string))
            }),
            4 => (&mut v["lines"][i]["sku"], format!("lines[{i}].sku"), Value::is_string),
            // A whole number in range fits, written as `3` or `3.0` (or `-0.0`): `json_integer`.
            _ => (&mut v["lines"][i]["quantity"], format!("lines[{i}].quantity"), |v| {
                v.as_u64().is_some_and(|n| u32::try_from(n).is_ok())
                    || v.as_f64().is_some_and(|f| {
                        f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&f)
                    })
            }),
        };
        prop_assume!(!fits(&replacement));
        *slot = replacement;
        match decode(&serde_json::to_vec(&v).unwrap()) {
            Err(ApiError::SchemaInvalid(m)) => {
                prop_assert!(m.starts_with(&format!("at `{path}")), "{} does not name {}", m, path);
            }
            other => prop_assert!(false, "expected REQUEST_SCHEMA_INVALID at {}, got {:?}", path, other),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    // -----------------------------------------------------------------------------------------
    // Through the edge: content type and body limit.

    #[test]
    fn only_json_content_types_are_read(
        ct in content_type(),
        req in order_request(),
    ) {
        let rt = runtime();
        let app = edge();
        let body = serde_json::to_vec(&req).unwrap();
        prop_assume!(body.len() <= LIMIT);
        let (header, expect_json) = match &ct {
            ContentType::Json(s) => (Some(HeaderValue::from_str(s).unwrap()), Some(true)),
            ContentType::Other(s) => (Some(HeaderValue::from_str(s).unwrap()), Some(false)),
            ContentType::Arbitrary(b) => match HeaderValue::from_bytes(b) {
                Ok(h) => (Some(h), None),
                Err(_) => (None, Some(false)),
            },
            ContentType::Missing => (None, Some(false)),
        };
        let (status, answer) = send(&rt, &app, header, body, false);
        match (expect_json, status) {
            (Some(true) | None, StatusCode::OK) => {
                let echoed: OrderRequest = serde_json::from_value(answer).unwrap();
                prop_assert_eq!(echoed, req);
            }
            (Some(false) | None, StatusCode::UNSUPPORTED_MEDIA_TYPE) => {
                prop_assert_eq!(&answer["code"], "UNSUPPORTED_MEDIA_TYPE");
            }
            _ => prop_assert!(false, "{:?}: {} {}", ct, status, answer),
        }
    }

    #[test]
    fn bodies_over_the_limit_are_refused_and_the_rest_read(
        len in prop_oneof![0..=3 * LIMIT, LIMIT - 2..=LIMIT + 2],
        chunked in any::<bool>(),
    ) {
        let rt = runtime();
        let app = edge();
        let base = br#"{"customer_id":"c","currency":"EUR","lines":[{"sku":"a","quantity":1}]}"#;
        let body = padded(base, len);
        let len = body.len();
        let (status, answer) = send(
            &rt,
            &app,
            Some(HeaderValue::from_static("application/json")),
            body,
            chunked,
        );
        if len > LIMIT {
            prop_assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{} bytes: {}", len, answer);
            prop_assert_eq!(&answer["code"], "PAYLOAD_TOO_LARGE");
        } else {
            prop_assert_eq!(status, StatusCode::OK, "{} bytes: {}", len, answer);
        }
    }

    #[test]
    fn arbitrary_requests_get_an_answer_or_a_typed_refusal(
        ct in content_type(),
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..2 * LIMIT),
            json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
            body_like().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        ],
        chunked in any::<bool>(),
    ) {
        let rt = runtime();
        let app = edge();
        let header = match ct {
            ContentType::Json(s) | ContentType::Other(s) => HeaderValue::from_str(&s).ok(),
            ContentType::Arbitrary(b) => HeaderValue::from_bytes(&b).ok(),
            ContentType::Missing => None,
        };
        let (status, answer) = send(&rt, &app, header, body, chunked);
        if status != StatusCode::OK {
            let code = answer["code"].as_str().unwrap_or_default();
            prop_assert!(BODY_CODES.contains(&code), "{} {}", status, answer);
            prop_assert!(status.is_client_error());
        }
    }
}

proptest! {
    // -----------------------------------------------------------------------------------------
    // Idempotency-Key: 1-255 visible ASCII characters (RUNBOOK `IDEMPOTENCY_KEY_INVALID`,
    // OpenAPI parameter of `POST /v1/orders`).

    #[test]
    fn keys_are_accepted_exactly_when_1_to_255_visible_ascii(bytes in key_bytes()) {
        let value = HeaderValue::from_bytes(&bytes).unwrap();
        let allowed = (1..=255).contains(&bytes.len()) && bytes.iter().all(|b| (0x21..=0x7e).contains(b));
        match key_from(Some(value)) {
            Ok(key) => {
                prop_assert!(allowed, "accepted {:?}", key);
                prop_assert_eq!(key.as_bytes(), &bytes[..]);
            }
            Err(e) => {
                prop_assert!(!allowed, "refused {:?}: {:?}", String::from_utf8_lossy(&bytes), e);
                prop_assert!(matches!(e, ApiError::IdempotencyKeyInvalid), "{e:?}");
            }
        }
    }

    #[test]
    fn arbitrary_header_values_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        // Bytes no header can carry are refused by `http` before the extractor sees them.
        let value = HeaderValue::from_bytes(&bytes).ok();
        let present = value.is_some();
        match key_from(value) {
            Ok(key) => prop_assert_eq!(key.as_bytes(), &bytes[..]),
            Err(ApiError::IdempotencyKeyInvalid) => prop_assert!(present),
            Err(ApiError::IdempotencyKeyMissing) => prop_assert!(!present),
            Err(e) => prop_assert!(false, "{e:?}"),
        }
    }
}

#[test]
fn a_missing_key_is_missing_not_invalid() {
    assert!(matches!(
        key_from(None),
        Err(ApiError::IdempotencyKeyMissing)
    ));
}

#[test]
fn metadata_keys_are_data_not_unknown_fields() {
    // Metadata is a free-form map: its keys are data, never unknown fields.
    let body = json!({"customer_id":"c","currency":"EUR","lines":[],"metadata":{"anything":"x"}});
    let (req, _) = decode(body.to_string().as_bytes()).unwrap();
    assert_eq!(
        req.metadata,
        BTreeMap::from([("anything".to_owned(), "x".to_owned())])
    );
}
