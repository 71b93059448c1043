//! The JSON log line format.
//!
//! One object per line: `timestamp`, `level`, `target`, `message` and the event's fields at the
//! top level; `trace_id` and `span_id` of the active OpenTelemetry span (the same ids the
//! exported spans and log records carry, so a log line pivots to its trace); `request_id`
//! lifted from the enclosing request span; `span` (the innermost span's name and fields) and
//! `spans` (root to leaf), written last. `tracing-subscriber`'s own JSON format has no trace
//! ids, hence this.
//!
//! The spans' fields are copied into the line as [`SpanFields`] stored them, never parsed and
//! written again (only probed for a request id): every line used to parse each enclosing
//! span's fields into a map and serialise them twice (BENCHMARKS.md, "Host work around the
//! plugin call").
//!
//! Spans' fields are stored by [`SpanFields`], which writes them as a JSON object straight
//! from the field values and adds a field recorded later by appending it to that object.
//! `tracing-subscriber`'s `JsonFields` collected them into a map and wrote the map again on
//! every `span.record()`; a request records about ten fields after its spans open.

use std::fmt;
use std::fmt::Write as _;

use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The event formatter; pair it with [`SpanFields`] as the field formatter.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonLines;

/// Hands each visited field to `.0` as its name (a raw identifier's `r#` dropped) and its
/// JSON value: numbers and booleans as themselves, a non-finite float as `null`, bytes as an
/// array of numbers, anything else as a string. Events and span fields are both read with it.
struct JsonValues<F: FnMut(&'static str, Value)>(F);

impl<F: FnMut(&'static str, Value)> JsonValues<F> {
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        (self.0)(name.strip_prefix("r#").unwrap_or(name), value);
    }
}

impl<F: FnMut(&'static str, Value)> Visit for JsonValues<F> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.put(field, Value::from(value.to_vec()));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }
}

/// `fields` as `"key":value` pairs, comma-separated (the inside of a JSON object).
fn json_pairs(fields: &impl RecordFields) -> String {
    let mut out = String::new();
    fields.record(&mut JsonValues(|name, value| {
        if !out.is_empty() {
            out.push(',');
        }
        // Writing JSON into a `String` cannot fail.
        let _ = write!(out, "{}:{}", Value::String(name.to_owned()), value);
    }));
    out
}

impl<S> FormatEvent<S, SpanFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, SpanFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        );
        line.insert("level".into(), Value::String(meta.level().to_string()));
        line.insert("target".into(), Value::String(meta.target().to_owned()));
        event.record(&mut JsonValues(|name, value| {
            line.insert(name.to_owned(), value);
        }));

        // Each span's fields are kept by `SpanFields` as a JSON object; they go into the line
        // as they are, with the span's name added, not parsed and written again (a line
        // carries every span twice: `span` and `spans`). Only the request id is looked for.
        let mut spans: Vec<String> = Vec::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                let stored = ext
                    .get::<FormattedFields<SpanFields>>()
                    .map_or("", |f| f.fields.as_str());
                let (object, request_id) = span_object(stored, span.name());
                if let Some(id) = request_id {
                    line.entry("request_id").or_insert(id);
                }
                spans.push(object);
            }
        }
        opentelemetry::Context::map_current(|cx| {
            let sc = cx.span().span_context().clone();
            if sc.is_valid() {
                line.insert("trace_id".into(), Value::String(sc.trace_id().to_string()));
                line.insert("span_id".into(), Value::String(sc.span_id().to_string()));
            }
        });
        // The spans are written after the other fields; an event field of either name gives
        // way to them, as it always has.
        line.remove("span");
        line.remove("spans");
        let mut out = Value::Object(line).to_string();
        if let Some(current) = spans.last() {
            out.pop(); // the closing brace
            out.push_str(",\"span\":");
            out.push_str(current);
            out.push_str(",\"spans\":[");
            out.push_str(&spans.join(","));
            out.push_str("]}");
        }
        writeln!(writer, "{out}")
    }
}

/// The field formatter for spans: a span's fields as one JSON object. Values as
/// `tracing-subscriber`'s `JsonFields` writes them: numbers and booleans as JSON numbers and
/// booleans, a non-finite float as `null`, bytes as an array of numbers, anything else as a
/// string. Unlike `JsonFields`, a raw identifier's `r#` is dropped whatever the value's type
/// (`JsonFields` drops it only for `Debug` values).
///
/// A field recorded after the span opened is appended to the stored object, so keys stay in
/// the order they were recorded. Only when the object already has a field of a recorded
/// name (recorded twice) is it parsed and written again, so that the later value replaces
/// the earlier one and no key appears twice; that rewrite sorts the keys. The test for
/// "already has" looks for `"name":` in the stored text. Inside a JSON string every `"` is
/// escaped, so that text is found where it is a key, or inside a key that itself holds a
/// quote; a false find only costs the slow path, never a wrong line. The stored text is
/// always this formatter's own output, so the rewrite always parses.
#[derive(Debug, Default, Clone, Copy)]
pub struct SpanFields;

/// Whether the stored object `stored` has a key `name` (see [`SpanFields`]).
fn has_key(stored: &str, name: &str) -> bool {
    let name = name.strip_prefix("r#").unwrap_or(name);
    let key = format!("{}:", Value::String(name.to_owned()));
    stored.contains(&key)
}

impl<'writer> FormatFields<'writer> for SpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        write!(writer, "{{{}}}", json_pairs(&fields))
    }

    fn add_fields(&self, current: &mut FormattedFields<Self>, fields: &Record<'_>) -> fmt::Result {
        let stored = current.fields.trim();
        let mut repeated = false;
        fields.record(&mut |field: &Field, _: &dyn fmt::Debug| {
            repeated |= has_key(stored, field.name());
        });
        if !repeated && stored.starts_with('{') && stored.ends_with('}') {
            let pairs = json_pairs(fields);
            if pairs.is_empty() {
                return Ok(());
            }
            let inner = stored[1..stored.len() - 1].trim();
            let separator = if inner.is_empty() { "" } else { "," };
            current.fields = format!("{{{inner}{separator}{pairs}}}");
            return Ok(());
        }
        // A field recorded again (or a stored text that is not an object): merge.
        let mut map: Map<String, Value> = serde_json::from_str(stored).unwrap_or_default();
        fields.record(&mut JsonValues(|name, value| {
            map.insert(name.to_owned(), value);
        }));
        current.fields = Value::Object(map).to_string();
        Ok(())
    }
}

/// What [`span_object`] reads of a span's stored fields.
#[derive(serde::Deserialize)]
struct Probe {
    #[serde(default)]
    request_id: Option<Value>,
    #[serde(default)]
    name: Option<serde::de::IgnoredAny>,
}

/// A span's stored fields (`stored`, a JSON object written by [`SpanFields`]) as the object a
/// line shows, with `name` set to the span's name, and the span's `request_id` field if it
/// has one. Fields that do not parse are left out, as before.
fn span_object(stored: &str, name: &str) -> (String, Option<Value>) {
    let quoted_name = Value::String(name.to_owned()).to_string();
    let stored = stored.trim();
    let with_name = |stored: &str| {
        let inner = stored[1..stored.len() - 1].trim();
        if inner.is_empty() {
            format!("{{\"name\":{quoted_name}}}")
        } else {
            format!("{{\"name\":{quoted_name},{inner}}}")
        }
    };
    if !(stored.starts_with('{') && stored.ends_with('}')) {
        return (format!("{{\"name\":{quoted_name}}}"), None);
    }
    // Most spans have neither field: their stored text is used as it is, unparsed.
    if !has_key(stored, "request_id") && !has_key(stored, "name") {
        return (with_name(stored), None);
    }
    let Ok(probe) = serde_json::from_str::<Probe>(stored) else {
        return (format!("{{\"name\":{quoted_name}}}"), None);
    };
    if probe.name.is_some() {
        // A field called `name`: the span's name replaces it (rare; parse and write).
        let mut fields: Map<String, Value> = serde_json::from_str(stored).unwrap_or_default();
        fields.insert("name".into(), Value::String(name.to_owned()));
        return (Value::Object(fields).to_string(), probe.request_id);
    }
    (with_name(stored), probe.request_id)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::support::captured_log::CapturedLog;

    /// The lines `f` logs, each parsed (a line that is not one JSON object fails the test).
    fn lines(f: impl FnOnce()) -> Vec<Value> {
        raw(f)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn a_line_carries_its_spans_root_to_leaf_with_names_and_the_request_id() {
        let got = lines(|| {
            let root = tracing::info_span!(
                "http.server",
                request_id = "r-1",
                url.path = "/v1/\"quoted\"",
                status = tracing::field::Empty
            );
            let _root = root.enter();
            root.record("status", 201);
            let invoke = tracing::info_span!("plugin.invoke", plugin.name = "orders");
            let _invoke = invoke.enter();
            let bare = tracing::info_span!("bare");
            let _bare = bare.enter();
            tracing::info!(lines = 2, "order priced");
        });
        let [line] = &got[..] else {
            panic!("one line: {got:?}")
        };
        let spans = json!([
            {"name": "http.server", "request_id": "r-1", "url.path": "/v1/\"quoted\"", "status": 201},
            {"name": "plugin.invoke", "plugin.name": "orders"},
            {"name": "bare"},
        ]);
        assert_eq!(line["spans"], spans, "{line}");
        assert_eq!(line["span"], json!({"name": "bare"}), "{line}");
        assert_eq!(line["request_id"], "r-1");
        assert_eq!(line["message"], "order priced");
        assert_eq!(line["lines"], 2);
        assert_eq!(line["level"], "INFO");
        assert!(line.get("trace_id").is_none(), "no OpenTelemetry span here");
    }

    #[test]
    fn the_span_name_replaces_a_field_called_name_and_the_event_request_id_wins() {
        let got = lines(|| {
            let root = tracing::info_span!("http.server", request_id = "from-span");
            let _root = root.enter();
            let named = tracing::info_span!("job", name = "not the span name", n = 3);
            let _named = named.enter();
            tracing::warn!(request_id = "from-event", span = "an event field", "done");
        });
        let [line] = &got[..] else {
            panic!("one line: {got:?}")
        };
        assert_eq!(line["request_id"], "from-event");
        assert_eq!(line["span"], json!({"name": "job", "n": 3}), "{line}");
        assert_eq!(
            line["spans"][0],
            json!({"name": "http.server", "request_id": "from-span"})
        );
    }

    /// The raw text of the lines `f` logs.
    fn raw(f: impl FnOnce()) -> String {
        let buf = CapturedLog::default();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .fmt_fields(SpanFields)
                .event_format(JsonLines)
                .with_writer(buf.clone()),
        );
        tracing::subscriber::with_default(subscriber, f);
        buf.text()
    }

    #[test]
    fn fields_recorded_later_are_appended_and_a_field_recorded_again_keeps_one_key() {
        let f = || {
            let span = tracing::info_span!(
                "http.server",
                r#type = "quote",
                note = "a \"status\": inside a value",
                status = tracing::field::Empty,
                outcome = tracing::field::Empty,
                ratio = tracing::field::Empty,
            );
            let _entered = span.enter();
            span.record("status", 200);
            span.record("outcome", "ok");
            span.record("ratio", f64::NAN);
            tracing::info!("first");
            span.record("status", 503);
            span.record("outcome", tracing::field::display("shed"));
            tracing::info!("second");
        };
        let text = raw(f);
        let got: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let [first, second] = &got[..] else {
            panic!("two lines: {text}")
        };
        assert_eq!(
            first["span"],
            json!({"name": "http.server", "type": "quote", "note": "a \"status\": inside a value",
                   "status": 200, "outcome": "ok", "ratio": null}),
            "{text}"
        );
        assert_eq!(second["span"]["status"], 503, "{text}");
        assert_eq!(second["span"]["outcome"], "shed", "{text}");
        assert_eq!(second["span"]["type"], "quote", "{text}");
        let second_raw = text.lines().nth(1).unwrap_or_default();
        // `span` and `spans` each carry the object once: two keys, not four.
        assert_eq!(second_raw.matches("\"status\":").count(), 2, "{second_raw}");
        assert_eq!(
            second_raw.matches("\"outcome\":").count(),
            2,
            "{second_raw}"
        );
    }

    #[test]
    fn one_record_of_a_new_and_a_repeated_field_merges_and_later_fields_append_after_it() {
        let text = raw(|| {
            let span = tracing::info_span!(
                "job",
                zeta = 1,
                alpha = tracing::field::Empty,
                beta = tracing::field::Empty,
                gamma = tracing::field::Empty,
            );
            let _entered = span.enter();
            span.record("beta", "b");
            tracing::info!("appended");
            // One record of two fields, one of them already there: the merge path.
            span.record_all(&span.metadata().expect("enabled").fields().value_set(&[
                (
                    &span.field("beta").expect("beta"),
                    Some(&"b2" as &dyn tracing::Value),
                ),
                (
                    &span.field("alpha").expect("alpha"),
                    Some(&7 as &dyn tracing::Value),
                ),
            ]));
            span.record("gamma", &b"\x01\x02"[..]);
            tracing::info!("merged");
        });
        let lines: Vec<&str> = text.lines().collect();
        let [appended, merged] = lines[..] else {
            panic!("two lines: {text}")
        };
        // Appended fields keep the recorded order.
        assert!(
            appended.contains(r#""span":{"name":"job","zeta":1,"beta":"b"}"#),
            "{appended}"
        );
        let line: Value = serde_json::from_str(merged).unwrap_or_else(|e| panic!("{e}: {merged}"));
        assert_eq!(
            line["span"],
            json!({"name": "job", "zeta": 1, "alpha": 7, "beta": "b2", "gamma": [1, 2]}),
            "{merged}"
        );
        assert_eq!(merged.matches(r#""beta":"#).count(), 2, "{merged}");
    }

    #[test]
    fn a_span_without_fields_gains_the_ones_recorded_later() {
        let got = lines(|| {
            let span = tracing::info_span!("bare", later = tracing::field::Empty);
            let _entered = span.enter();
            span.record("later", true);
            tracing::info!("done");
        });
        let [line] = &got[..] else {
            panic!("one line: {got:?}")
        };
        assert_eq!(
            line["span"],
            json!({"name": "bare", "later": true}),
            "{line}"
        );
    }

    #[test]
    fn a_line_outside_any_span_has_no_span_keys() {
        let got = lines(|| tracing::info!(answer = 42, "alone"));
        let [line] = &got[..] else {
            panic!("one line: {got:?}")
        };
        assert_eq!(line["answer"], 42);
        assert!(
            line.get("span").is_none() && line.get("spans").is_none(),
            "{line}"
        );
        assert!(line.get("request_id").is_none(), "{line}");
    }
}
