//! CloudEvents over AMQP, structured mode: the body is the whole event as JSON
//! (`application/cloudevents+json`), `message_id` is the event id, `type` the event type,
//! and the W3C trace context rides in the `traceparent` / `tracestate` headers.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use weir_core::domain::money::is_currency_code;
use weir_core::domain::{EventRecord, Money};

/// Content type of structured-mode CloudEvents.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";
/// Header carrying how many times the consumer already retried a message.
pub const H_RETRIES: &str = "x-weir-retries";
/// Dead-letter headers: the reason code, a human detail, and when.
pub const H_REASON: &str = "x-weir-dead-letter-reason";
/// Human-readable detail of the dead-letter reason (bounded length, no secrets).
pub const H_DETAIL: &str = "x-weir-dead-letter-detail";
/// RFC 3339 time the message was dead-lettered.
pub const H_DEAD_AT: &str = "x-weir-dead-lettered-at";
/// Where the message was first published (exchange and routing key), kept for replay.
pub const H_ORIG_EXCHANGE: &str = "x-weir-original-exchange";
/// See [`H_ORIG_EXCHANGE`].
pub const H_ORIG_ROUTING_KEY: &str = "x-weir-original-routing-key";
/// W3C trace context headers.
pub const H_TRACEPARENT: &str = "traceparent";
/// See [`H_TRACEPARENT`].
pub const H_TRACESTATE: &str = "tracestate";

/// AMQP short strings are at most 255 bytes; lapin panics beyond. Truncate on a char boundary.
pub fn short(s: &str) -> ShortString {
    let mut end = s.len().min(255);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    ShortString::from(&s[..end])
}

/// [`CloudEvent`](weir_core::domain::CloudEvent) borrowed from an outbox row: the same JSON
/// (the same members in the same order), without copying the row's `data`.
#[derive(Serialize)]
struct CloudEventView<'a> {
    specversion: &'static str,
    id: String,
    source: &'a str,
    #[serde(rename = "type")]
    type_: &'a str,
    subject: &'a str,
    time: String,
    datacontenttype: &'static str,
    sequence: String,
    tenant: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<&'a str>,
    data: &'a serde_json::Value,
}

/// Body and properties of the message for one outbox row, with the row's trace context.
pub fn encode(record: &EventRecord) -> (Vec<u8>, BasicProperties) {
    encode_traced(
        record,
        record.traceparent.as_deref(),
        record.tracestate.as_deref(),
    )
}

/// [`encode`] with the trace context `traceparent` / `tracestate` (e.g. that of the span
/// publishing the row) in the headers and the event instead of the row's.
pub fn encode_traced(
    record: &EventRecord,
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) -> (Vec<u8>, BasicProperties) {
    let mut headers = FieldTable::default();
    if let Some(tp) = traceparent {
        headers.insert(H_TRACEPARENT.into(), AMQPValue::LongString(tp.into()));
    }
    if let Some(ts) = tracestate {
        headers.insert(H_TRACESTATE.into(), AMQPValue::LongString(ts.into()));
    }
    let event = CloudEventView {
        specversion: "1.0",
        id: record.id.to_string(),
        source: &record.source,
        type_: &record.event_type,
        subject: &record.subject,
        time: record.occurred_at.to_rfc3339(),
        datacontenttype: "application/json",
        sequence: record.seq.to_string(),
        tenant: &record.tenant,
        traceparent,
        data: &record.data,
    };
    let body = serde_json::to_vec(&event).unwrap_or_default();
    let props = BasicProperties::default()
        .with_content_type(CONTENT_TYPE.into())
        .with_delivery_mode(2)
        .with_message_id(short(&record.id.to_string()))
        .with_type(short(&record.event_type))
        .with_app_id("weir".into())
        .with_timestamp(u64::try_from(record.occurred_at.timestamp()).unwrap_or_default())
        .with_headers(headers);
    (body, props)
}

/// A header as text (long or short string), if present.
pub fn header_str(props: &BasicProperties, key: &str) -> Option<String> {
    let value = props.headers().as_ref()?.inner().get(key)?;
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// A header as an unsigned count, if present and numeric.
pub fn header_count(props: &BasicProperties, key: &str) -> u32 {
    let Some(value) = props.headers().as_ref().and_then(|h| h.inner().get(key)) else {
        return 0;
    };
    let n: i128 = match value {
        AMQPValue::ShortShortUInt(v) => (*v).into(),
        AMQPValue::ShortUInt(v) => (*v).into(),
        AMQPValue::LongUInt(v) => (*v).into(),
        AMQPValue::ShortShortInt(v) => (*v).into(),
        AMQPValue::ShortInt(v) => (*v).into(),
        AMQPValue::LongInt(v) => (*v).into(),
        AMQPValue::LongLongInt(v) => (*v).into(),
        _ => 0,
    };
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

/// `props` with `key` set to a string value.
pub fn with_header(props: BasicProperties, key: &str, value: &str) -> BasicProperties {
    let mut headers = props.headers().clone().unwrap_or_default();
    headers.insert(
        short(key),
        AMQPValue::LongString(LongString::from(value.as_bytes().to_vec())),
    );
    props.with_headers(headers)
}

/// `props` with `key` set to a number.
pub fn with_count(props: BasicProperties, key: &str, value: u32) -> BasicProperties {
    let mut headers = props.headers().clone().unwrap_or_default();
    headers.insert(short(key), AMQPValue::LongLongInt(i64::from(value)));
    props.with_headers(headers)
}

/// `props` without the given headers.
pub fn without_headers(props: BasicProperties, keys: &[&str]) -> BasicProperties {
    let Some(headers) = props.headers().clone() else {
        return props;
    };
    let kept: std::collections::BTreeMap<ShortString, AMQPValue> = headers
        .inner()
        .iter()
        .filter(|(k, _)| !keys.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    props.with_headers(FieldTable::from(kept))
}

/// What a consumed message asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundKind {
    /// `payment.captured`: the order is paid.
    PaymentCaptured,
    /// `shipment.dispatched`: the order shipped.
    ShipmentDispatched,
}

impl InboundKind {
    /// The CloudEvents type.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PaymentCaptured => "payment.captured",
            Self::ShipmentDispatched => "shipment.dispatched",
        }
    }
}

/// A valid inbound message.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// CloudEvents id: with `source`, the dedupe key.
    pub id: String,
    /// CloudEvents source: who says this happened (checked against the accepted sources of
    /// the type); 1-200 characters without whitespace or control characters.
    pub source: String,
    /// What happened.
    pub kind: InboundKind,
    /// The order it is about.
    pub order_id: Uuid,
    /// For `payment.captured`: the amount captured (`data.amount` minor units of
    /// `data.currency`).
    pub paid: Option<Money>,
    /// W3C trace context of the producer.
    pub traceparent: Option<String>,
    /// W3C trace state of the producer.
    pub tracestate: Option<String>,
}

/// The largest event body the consumer parses: a payment or shipment event is a few hundred
/// bytes; anything this large is refused unread (dead letter `too_large`).
pub const MAX_INBOUND_BYTES: usize = 64 << 10;

/// Why a message can never be processed (it goes to the DLQ at once). `code` is the stable
/// reason written to the `x-weir-dead-letter-reason` header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// The body is not JSON.
    #[error("body is not JSON: {0}")]
    NotJson(String),
    /// JSON, but not a CloudEvents 1.0 event.
    #[error("not a CloudEvents 1.0 event: {0}")]
    NotCloudEvent(String),
    /// A CloudEvent of a type this consumer does not handle.
    #[error("unsupported event type {0:?}")]
    UnsupportedType(String),
    /// No usable order id in `data.order_id` or `subject`.
    #[error("no valid order id in data.order_id or subject")]
    InvalidOrderId,
    /// A `payment.captured` without a usable amount and currency.
    #[error(
        "payment.captured needs data.amount (integer minor units, 0 or more) and data.currency (ISO 4217)"
    )]
    InvalidPayment,
    /// The body is larger than [`MAX_INBOUND_BYTES`]; it is not parsed.
    #[error("the body is {0} bytes, over the {MAX_INBOUND_BYTES} bytes an event may have")]
    TooLarge(usize),
}

impl Malformed {
    /// Stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotJson(_) => "malformed_json",
            Self::NotCloudEvent(_) => "not_cloudevent",
            Self::UnsupportedType(_) => "unsupported_type",
            Self::InvalidOrderId => "invalid_order_id",
            Self::InvalidPayment => "invalid_payment",
            Self::TooLarge(_) => "too_large",
        }
    }
}

#[derive(Debug, Deserialize)]
struct RawEvent {
    specversion: Option<String>,
    id: Option<String>,
    source: Option<String>,
    #[serde(rename = "type")]
    type_: Option<String>,
    subject: Option<String>,
    traceparent: Option<String>,
    tracestate: Option<String>,
    #[serde(default)]
    data: serde_json::Value,
}

/// Parse and validate a consumed message (structured-mode CloudEvent).
pub fn parse_inbound(props: &BasicProperties, body: &[u8]) -> Result<Inbound, Malformed> {
    if body.len() > MAX_INBOUND_BYTES {
        return Err(Malformed::TooLarge(body.len()));
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| Malformed::NotJson(e.to_string()))?;
    let raw: RawEvent =
        serde_json::from_value(value).map_err(|e| Malformed::NotCloudEvent(e.to_string()))?;
    if raw.specversion.as_deref() != Some("1.0") {
        return Err(Malformed::NotCloudEvent(
            "specversion must be \"1.0\"".to_owned(),
        ));
    }
    let id = raw
        .id
        .filter(|id| !id.is_empty() && id.len() <= 200)
        .ok_or_else(|| Malformed::NotCloudEvent("id must be 1-200 characters".to_owned()))?;
    let source = raw
        .source
        .filter(|s| {
            !s.is_empty()
                && s.len() <= 200
                && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        })
        .ok_or_else(|| {
            Malformed::NotCloudEvent(
                "source must be 1-200 characters without whitespace".to_owned(),
            )
        })?;
    let kind = match raw.type_.as_deref() {
        Some("payment.captured") => InboundKind::PaymentCaptured,
        Some("shipment.dispatched") => InboundKind::ShipmentDispatched,
        Some(other) => {
            return Err(Malformed::UnsupportedType(
                other.chars().take(100).collect(),
            ));
        }
        None => return Err(Malformed::NotCloudEvent("type is required".to_owned())),
    };
    let order_id = raw
        .data
        .get("order_id")
        .and_then(serde_json::Value::as_str)
        .or(raw.subject.as_deref())
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or(Malformed::InvalidOrderId)?;
    let paid = match kind {
        InboundKind::PaymentCaptured => {
            let amount = raw.data.get("amount").and_then(serde_json::Value::as_i64);
            let currency = raw.data.get("currency").and_then(serde_json::Value::as_str);
            match (amount, currency) {
                (Some(amount), Some(currency)) if amount >= 0 && is_currency_code(currency) => {
                    Some(Money::new(amount, currency))
                }
                _ => return Err(Malformed::InvalidPayment),
            }
        }
        InboundKind::ShipmentDispatched => None,
    };
    // Trace context: the AMQP headers win over the CloudEvents distributed-tracing extension.
    let traceparent = header_str(props, H_TRACEPARENT).or(raw.traceparent);
    let tracestate = header_str(props, H_TRACESTATE).or(raw.tracestate);
    Ok(Inbound {
        id,
        source,
        kind,
        order_id,
        paid,
        traceparent,
        tracestate,
    })
}

pub use crate::telemetry::parse_traceparent;

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;
    use weir_core::domain::CloudEvent;

    use super::*;

    #[test]
    fn outbox_rows_become_structured_cloudevents_with_trace_headers() {
        let record = EventRecord {
            seq: 7,
            id: Uuid::now_v7(),
            event_type: "order.placed".into(),
            source: "/weir/orders".into(),
            subject: Uuid::now_v7().to_string(),
            tenant: "acme".into(),
            occurred_at: Utc::now(),
            data: json!({"total": 1}),
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            tracestate: Some("vendor=1".into()),
            published_at: None,
        };
        let (body, props) = encode(&record);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["id"], record.id.to_string());
        assert_eq!(v["type"], "order.placed");
        assert_eq!(
            props.content_type().as_ref().unwrap().as_str(),
            CONTENT_TYPE
        );
        assert_eq!(props.delivery_mode(), &Some(2));
        assert_eq!(
            props.message_id().as_ref().unwrap().as_str(),
            record.id.to_string()
        );
        assert_eq!(
            header_str(&props, H_TRACEPARENT).as_deref(),
            record.traceparent.as_deref()
        );
        assert_eq!(
            header_str(&props, H_TRACESTATE).as_deref(),
            Some("vendor=1")
        );
    }

    /// The borrowed view is byte for byte the [`CloudEvent`] of the row (the events feed's
    /// form), with the trace context given, with or without one.
    #[test]
    fn the_body_is_the_cloudevent_of_the_row() {
        let record = EventRecord {
            seq: 42,
            id: Uuid::now_v7(),
            event_type: "order.paid".into(),
            source: "/weir/orders".into(),
            subject: Uuid::now_v7().to_string(),
            tenant: "acme".into(),
            occurred_at: Utc::now(),
            data: json!({"id": "o", "total": {"amount": 1950, "currency": "EUR"}, "lines": [1, 2]}),
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            tracestate: Some("vendor=1".into()),
            published_at: None,
        };
        let (body, _) = encode(&record);
        assert_eq!(
            body,
            serde_json::to_vec(&CloudEvent::from(record.clone())).unwrap()
        );

        // Another trace context (the relay's publish span): in the body and the headers.
        let publish = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let (body, props) = encode_traced(&record, Some(publish), None);
        let relayed = EventRecord {
            traceparent: Some(publish.into()),
            tracestate: None,
            ..record.clone()
        };
        assert_eq!(
            body,
            serde_json::to_vec(&CloudEvent::from(relayed)).unwrap()
        );
        assert_eq!(header_str(&props, H_TRACEPARENT).as_deref(), Some(publish));
        assert_eq!(header_str(&props, H_TRACESTATE), None);

        // No trace context: no `traceparent` member, no headers.
        let untraced = EventRecord {
            traceparent: None,
            tracestate: None,
            ..record
        };
        let (body, props) = encode(&untraced);
        assert_eq!(
            body,
            serde_json::to_vec(&CloudEvent::from(untraced.clone())).unwrap()
        );
        assert!(!String::from_utf8(body).unwrap().contains("traceparent"));
        assert_eq!(header_str(&props, H_TRACEPARENT), None);
    }

    #[test]
    fn inbound_validation_names_the_reason() {
        let props = BasicProperties::default();
        let order = Uuid::now_v7();
        let ok = json!({"specversion":"1.0","id":"m1","source":"/pay","type":"payment.captured","data":{"order_id":order,"amount":1950,"currency":"EUR"}});
        let parsed = parse_inbound(&props, ok.to_string().as_bytes()).unwrap();
        assert_eq!(
            (parsed.kind, parsed.order_id, parsed.source.as_str()),
            (InboundKind::PaymentCaptured, order, "/pay")
        );
        assert_eq!(parsed.paid, Some(Money::new(1950, "EUR")));
        let code = |body: &str| parse_inbound(&props, body.as_bytes()).unwrap_err().code();
        assert_eq!(code("{nope"), "malformed_json");
        assert_eq!(code("[1,2]"), "not_cloudevent");
        assert_eq!(
            code(r#"{"id":"m","source":"s","type":"payment.captured"}"#),
            "not_cloudevent"
        );
        assert_eq!(
            code(r#"{"specversion":"1.0","id":"m","source":"s","type":"refund.issued"}"#),
            "unsupported_type"
        );
        assert_eq!(
            code(
                r#"{"specversion":"1.0","id":"m","source":"s","type":"shipment.dispatched","subject":"x"}"#
            ),
            "invalid_order_id"
        );
        // A payment must say how much, in what.
        let pay = |data: serde_json::Value| {
            json!({"specversion":"1.0","id":"m","source":"/pay","type":"payment.captured","subject":order,"data":data}).to_string()
        };
        for data in [
            json!({}),
            json!({"amount": 100}),
            json!({"amount": "100", "currency": "EUR"}),
            json!({"amount": 1.5, "currency": "EUR"}),
            json!({"amount": -1, "currency": "EUR"}),
            json!({"amount": 100, "currency": "euro"}),
        ] {
            assert_eq!(code(&pay(data.clone())), "invalid_payment", "{data}");
        }
        // A source is one token: "<source> <id>" is the inbox key.
        for source in ["", "/pay ments", "/pay\n", &"s".repeat(201)] {
            let body = json!({"specversion":"1.0","id":"m","source":source,"type":"shipment.dispatched","subject":order}).to_string();
            assert_eq!(code(&body), "not_cloudevent", "{source:?}");
        }
    }

    #[test]
    fn traceparent_parsing_and_header_limits() {
        assert_eq!(
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some(("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"))
        );
        assert!(
            parse_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none()
        );
        assert!(parse_traceparent("garbage").is_none());
        assert_eq!(short(&"é".repeat(200)).as_str().len(), 254);
        let p = with_count(BasicProperties::default(), H_RETRIES, 3);
        assert_eq!(header_count(&p, H_RETRIES), 3);
        let p = without_headers(with_header(p, H_REASON, "x"), &[H_RETRIES]);
        assert_eq!(header_count(&p, H_RETRIES), 0);
        assert_eq!(header_str(&p, H_REASON).as_deref(), Some("x"));
    }
}
