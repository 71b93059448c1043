//! Property tests of the consumer's message decoding ([`message::parse_inbound`]) and the
//! AMQP header helpers it relies on.
//!
//! - Arbitrary bodies and arbitrary headers never panic: the result is a valid [`Inbound`]
//!   (checked against the documented rules) or a [`Malformed`] with a documented reason code.
//! - What the relay publishes ([`message::encode`]) decodes to the same event, wherever the
//!   order id sits; unknown CloudEvents extension attributes change nothing.
//! - Changing one attribute of a valid event is refused exactly when the new value breaks the
//!   documented rule of that attribute, with that rule's reason code.
//! - Oversized payloads are refused (`too_large`) before they are parsed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use uuid::Uuid;
use weir_core::domain::money::is_currency_code;
use weir_core::domain::{EventRecord, Money};

use super::message::{
    self, H_RETRIES, H_TRACEPARENT, H_TRACESTATE, Inbound, InboundKind, MAX_INBOUND_BYTES,
};

/// The dead-letter reasons a malformed message may get (RUNBOOK, Events).
const REASONS: [&str; 6] = [
    "too_large",
    "malformed_json",
    "not_cloudevent",
    "unsupported_type",
    "invalid_order_id",
    "invalid_payment",
];

/// The attributes `parse_inbound` reads; anything else is an extension attribute.
const KNOWN: [&str; 8] = [
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "traceparent",
    "tracestate",
    "data",
];

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[a-zA-Z0-9/._-]{0,12}", 1 => any::<String>()]
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

/// An AMQP short string (at most 255 bytes: lapin panics beyond).
fn short_string() -> impl Strategy<Value = ShortString> {
    prop_oneof![
        Just(H_TRACEPARENT.to_owned()),
        Just(H_TRACESTATE.to_owned()),
        Just(H_RETRIES.to_owned()),
        any::<String>(),
        "[a-z-]{250,300}",
    ]
    .prop_map(|s| message::short(&s))
}

fn amqp_value() -> impl Strategy<Value = AMQPValue> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(AMQPValue::Boolean),
        any::<i8>().prop_map(AMQPValue::ShortShortInt),
        any::<u8>().prop_map(AMQPValue::ShortShortUInt),
        any::<i16>().prop_map(AMQPValue::ShortInt),
        any::<u16>().prop_map(AMQPValue::ShortUInt),
        any::<i32>().prop_map(AMQPValue::LongInt),
        any::<u32>().prop_map(AMQPValue::LongUInt),
        any::<i64>().prop_map(AMQPValue::LongLongInt),
        any::<f64>().prop_map(AMQPValue::Double),
        any::<u64>().prop_map(AMQPValue::Timestamp),
        short_string().prop_map(AMQPValue::ShortString),
        // Any bytes, valid UTF-8 or not.
        prop::collection::vec(any::<u8>(), 0..80).prop_map(|b| AMQPValue::LongString(b.into())),
        text().prop_map(|s| AMQPValue::LongString(s.into())),
        prop::collection::vec(any::<u8>(), 0..16).prop_map(|b| AMQPValue::ByteArray(b.into())),
        Just(AMQPValue::Void),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3)
                .prop_map(|v| AMQPValue::FieldArray(v.into())),
            prop::collection::vec((short_string(), inner), 0..3).prop_map(|e| {
                AMQPValue::FieldTable(FieldTable::from(e.into_iter().collect::<BTreeMap<_, _>>()))
            }),
        ]
    })
}

/// Arbitrary message properties: no headers, or a table of arbitrary headers.
fn properties() -> impl Strategy<Value = BasicProperties> {
    prop::option::of(prop::collection::vec((short_string(), amqp_value()), 0..5)).prop_map(
        |headers| match headers {
            None => BasicProperties::default(),
            Some(h) => BasicProperties::default()
                .with_headers(FieldTable::from(h.into_iter().collect::<BTreeMap<_, _>>())),
        },
    )
}

/// Optional attribute: absent, well formed, or any JSON.
fn attr(good: BoxedStrategy<Value>) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![1 => Just(None), 4 => good.prop_map(Some), 1 => json().prop_map(Some)]
}

fn s(strategy: impl Strategy<Value = String> + 'static) -> BoxedStrategy<Value> {
    strategy.prop_map(Value::String).boxed()
}

/// Objects shaped like the CloudEvents this consumer handles, each attribute absent, right,
/// nearly right or of any JSON type.
fn event_like() -> impl Strategy<Value = Value> {
    let data = (
        attr(s(prop_oneof![uuid().prop_map(|u| u.to_string()), text()])),
        attr(prop_oneof![(-5i64..100_000).prop_map(Value::from), json()].boxed()),
        attr(s(prop_oneof!["[A-Z]{3}", "[A-Za-z]{2,4}"])),
    )
        .prop_map(|(order_id, amount, currency)| {
            let mut m = Map::new();
            m.extend(order_id.map(|v| ("order_id".to_owned(), v)));
            m.extend(amount.map(|v| ("amount".to_owned(), v)));
            m.extend(currency.map(|v| ("currency".to_owned(), v)));
            Value::Object(m)
        });
    (
        attr(s(prop_oneof![
            Just("1.0".to_owned()),
            Just("0.3".to_owned()),
            text()
        ])),
        attr(s(prop_oneof!["[a-z0-9-]{1,20}", "[a-z]{199,201}", text()])),
        attr(s(prop_oneof!["/[a-z]{1,10}", "[a-z]{199,201}", text()])),
        attr(s(prop_oneof![
            Just("payment.captured".to_owned()),
            Just("shipment.dispatched".to_owned()),
            text(),
        ])),
        attr(s(prop_oneof![uuid().prop_map(|u| u.to_string()), text()])),
        attr(data.boxed()),
        attr(s(text())),
        attr(s(text())),
    )
        .prop_map(|values| {
            let (a, b, c, d, e, f, g, h) = values;
            let mut m = Map::new();
            for (name, v) in KNOWN.iter().zip([a, b, c, d, e, f, g, h]) {
                m.extend(v.map(|v| ((*name).to_owned(), v)));
            }
            Value::Object(m)
        })
}

/// A valid `source`: 1-200 bytes without whitespace or control characters.
fn source() -> impl Strategy<Value = String> {
    prop_oneof![
        "[!-~]{1,200}",
        prop::collection::vec(
            any::<char>().prop_filter("a source is one token", |c| {
                !c.is_whitespace() && !c.is_control()
            }),
            1..=50,
        )
        .prop_map(|c| c.into_iter().collect()),
    ]
}

/// The documented rules of a valid inbound message.
fn check_inbound(inbound: &Inbound) -> Result<(), TestCaseError> {
    prop_assert!((1..=200).contains(&inbound.id.len()), "id {:?}", inbound.id);
    prop_assert!((1..=200).contains(&inbound.source.len()));
    prop_assert!(
        !inbound
            .source
            .chars()
            .any(|c| c.is_whitespace() || c.is_control()),
        "source {:?}",
        inbound.source
    );
    match (inbound.kind, &inbound.paid) {
        (InboundKind::PaymentCaptured, Some(paid)) => {
            prop_assert!(
                paid.amount >= 0 && is_currency_code(&paid.currency),
                "{paid:?}"
            );
        }
        (InboundKind::ShipmentDispatched, None) => {}
        (kind, paid) => prop_assert!(false, "{kind:?} with {paid:?}"),
    }
    Ok(())
}

fn check(result: &Result<Inbound, message::Malformed>) -> Result<(), TestCaseError> {
    match result {
        Ok(inbound) => check_inbound(inbound),
        Err(m) => {
            prop_assert!(REASONS.contains(&m.code()), "{m:?}");
            Ok(())
        }
    }
}

type Summary = (
    String,
    String,
    InboundKind,
    Uuid,
    Option<Money>,
    Option<String>,
    Option<String>,
);

fn summary(i: Inbound) -> Summary {
    (
        i.id,
        i.source,
        i.kind,
        i.order_id,
        i.paid,
        i.traceparent,
        i.tracestate,
    )
}

/// Where a published event carries its order id.
#[derive(Debug, Clone)]
enum OrderIdAt {
    /// `data.order_id` (which wins over any `subject`).
    Data(String),
    /// `subject` only.
    Subject,
}

/// An outbox row of a type the consumer handles, and the inbound event it must decode to.
fn published() -> impl Strategy<Value = (EventRecord, Summary)> {
    let kind = prop_oneof![
        Just(InboundKind::PaymentCaptured),
        Just(InboundKind::ShipmentDispatched)
    ];
    let at = prop_oneof![text().prop_map(OrderIdAt::Data), Just(OrderIdAt::Subject)];
    let extra = prop::collection::btree_map(text(), json(), 0..3);
    (
        (uuid(), kind, source(), uuid(), at),
        (0..=i64::MAX, "[A-Z]{3}", extra),
        (any::<i64>(), 0i64..4_000_000_000),
        (prop::option::of(text()), prop::option::of(text())),
    )
        .prop_map(
            |(
                (id, kind, source, order, at),
                (amount, currency, extra),
                (seq, secs),
                (traceparent, tracestate),
            )| {
                let mut data: Map<String, Value> = extra
                    .into_iter()
                    .filter(|(k, _)| !["order_id", "amount", "currency"].contains(&k.as_str()))
                    .collect();
                let subject = match at {
                    OrderIdAt::Data(subject) => {
                        data.insert("order_id".to_owned(), json!(order));
                        subject
                    }
                    OrderIdAt::Subject => order.to_string(),
                };
                if kind == InboundKind::PaymentCaptured {
                    data.insert("amount".to_owned(), json!(amount));
                    data.insert("currency".to_owned(), json!(currency));
                }
                let record = EventRecord {
                    seq,
                    id,
                    event_type: kind.as_str().to_owned(),
                    source: source.clone(),
                    subject,
                    tenant: "default".to_owned(),
                    occurred_at: DateTime::<Utc>::from_timestamp(secs, 0).unwrap_or_default(),
                    data: Value::Object(data),
                    traceparent: traceparent.clone(),
                    tracestate: tracestate.clone(),
                    published_at: None,
                };
                let paid =
                    (kind == InboundKind::PaymentCaptured).then(|| Money::new(amount, &currency));
                let expected = (
                    id.to_string(),
                    source,
                    kind,
                    order,
                    paid,
                    traceparent,
                    tracestate,
                );
                (record, expected)
            },
        )
}

/// One attribute of a valid event set to another value.
#[derive(Debug, Clone)]
enum Change {
    Id(Value),
    Source(Value),
    Amount(Value),
    Currency(Value),
}

/// Strings around the documented bounds (in bytes: `é` is two), with whitespace and control
/// characters, arbitrary strings and other JSON.
fn string_attr(good: &'static str) -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => good.prop_map(Value::String),
        1 => "[a-z]{198,202}".prop_map(Value::String),
        1 => "é{98,102}".prop_map(Value::String),
        1 => r"[a-z]{0,3}[ \t\n\r\x0B\x0C\x00-\x1F\x7F-\x{9F}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{3000}][a-z]{0,3}"
            .prop_map(Value::String),
        1 => any::<String>().prop_map(Value::String),
        1 => json(),
    ]
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        string_attr("[!-~]{1,8}").prop_map(Change::Id),
        string_attr("/[!-~]{0,8}").prop_map(Change::Source),
        prop_oneof![
            (-3i64..3).prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            json(),
        ]
        .prop_map(Change::Amount),
        prop_oneof!["[A-Z]{3}", "[A-Za-z]{2,4}", "[A-Z]{2}[^A-Z]"]
            .prop_map(Value::String)
            .prop_map(Change::Currency),
        json().prop_map(Change::Currency),
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_and_headers_decode_or_are_malformed(
        props in properties(),
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            any::<String>().prop_map(String::into_bytes),
        ],
    ) {
        check(&message::parse_inbound(&props, &body))?;
    }

    #[test]
    fn arbitrary_json_events_decode_or_are_malformed_but_never_called_not_json(
        props in properties(),
        event in prop_oneof![json(), event_like()],
    ) {
        let result = message::parse_inbound(&props, event.to_string().as_bytes());
        check(&result)?;
        prop_assert!(!matches!(result, Err(message::Malformed::NotJson(_))));
    }

    #[test]
    fn published_events_decode_to_the_same_event((record, expected) in published()) {
        let (body, props) = message::encode(&record);
        let inbound = message::parse_inbound(&props, &body)
            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        check_inbound(&inbound)?;
        prop_assert_eq!(summary(inbound), expected);
    }

    /// The documented rules, exactly: `id` 1-200 bytes; `source` 1-200 bytes without
    /// whitespace or control characters; a payment's `data.amount` an integer 0 or more
    /// (at most `i64::MAX`, minor units) and `data.currency` three upper-case ASCII letters;
    /// shipments ignore both.
    #[test]
    fn valid_events_are_refused_exactly_when_an_attribute_breaks_its_rule(
        (record, expected) in published(),
        change in change(),
    ) {
        let (body, props) = message::encode(&record);
        let mut event: Value = serde_json::from_slice(&body).unwrap();
        let payment = expected.2 == InboundKind::PaymentCaptured;
        let token = |s: &str| !s.chars().any(|c| c.is_whitespace() || c.is_control());
        let bounded = |v: &Value| v.as_str().is_some_and(|s| (1..=200).contains(&s.len()));
        let mut expected = expected;
        let refusal = match &change {
            Change::Id(v) => {
                event["id"] = v.clone();
                if bounded(v) {
                    expected.0 = v.as_str().unwrap().to_owned();
                }
                (!bounded(v)).then_some("not_cloudevent")
            }
            Change::Source(v) => {
                event["source"] = v.clone();
                let ok = bounded(v) && v.as_str().is_some_and(token);
                if ok {
                    expected.1 = v.as_str().unwrap().to_owned();
                }
                (!ok).then_some("not_cloudevent")
            }
            Change::Amount(v) => {
                event["data"]["amount"] = v.clone();
                let ok = !payment || v.as_i64().is_some_and(|n| n >= 0);
                if let (true, Some(paid)) = (ok, expected.4.as_mut()) {
                    paid.amount = v.as_i64().unwrap();
                }
                (!ok).then_some("invalid_payment")
            }
            Change::Currency(v) => {
                event["data"]["currency"] = v.clone();
                let iso = |s: &str| s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase());
                let ok = !payment || v.as_str().is_some_and(iso);
                if let (true, Some(paid)) = (ok, expected.4.as_mut()) {
                    paid.currency = v.as_str().unwrap().to_owned();
                }
                (!ok).then_some("invalid_payment")
            }
        };
        let result = message::parse_inbound(&props, event.to_string().as_bytes());
        match refusal {
            None => prop_assert_eq!(result.map(summary), Ok(expected), "{:?}", change),
            Some(code) => prop_assert_eq!(result.map_err(|m| m.code()).err(), Some(code), "{:?}", change),
        }
    }

    #[test]
    fn extension_attributes_change_nothing(
        (record, _) in published(),
        extensions in prop::collection::btree_map(text(), json(), 1..4),
    ) {
        let (body, props) = message::encode(&record);
        let mut event: Value = serde_json::from_slice(&body).unwrap();
        for (k, v) in extensions {
            if !KNOWN.contains(&k.as_str()) {
                event[k] = v;
            }
        }
        let plain = message::parse_inbound(&props, &body).map(summary);
        let extended = message::parse_inbound(&props, event.to_string().as_bytes()).map(summary);
        prop_assert_eq!(plain, extended);
    }

    #[test]
    fn header_helpers_never_panic_and_counts_are_clamped(
        props in properties(),
        key in short_string(),
        n in any::<i64>(),
    ) {
        let _ = message::header_str(&props, key.as_str());
        let _ = message::header_count(&props, key.as_str());
        let mut headers = props.headers().clone().unwrap_or_default();
        headers.insert(key.clone(), AMQPValue::LongLongInt(n));
        let props = props.with_headers(headers);
        prop_assert_eq!(
            message::header_count(&props, key.as_str()),
            u32::try_from(n.max(0)).unwrap_or(u32::MAX)
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn oversized_payloads_are_refused(
        (record, _) in published(),
        len in MAX_INBOUND_BYTES + 1..4 * MAX_INBOUND_BYTES,
    ) {
        let (mut body, props) = message::encode(&record);
        body.resize(len.max(body.len()), b' ');
        let refused = message::parse_inbound(&props, &body);
        prop_assert!(
            matches!(refused, Err(message::Malformed::TooLarge(n)) if n == body.len()),
            "{} bytes: {:?}", body.len(), refused.map(|_| ())
        );
    }
}
