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
//! from the field values and adds a field recorded later by appending it to that object in
//! place. `tracing-subscriber`'s `JsonFields` collected them into a map and wrote the map
//! again on every `span.record()`; a request records about ten fields after its spans open.
//!
//! A line is written as text from the start: the event's fields go straight from their values
//! into the line, escaped as they are written ([`JsonPairs`]), with no map, no
//! `serde_json::Value` and no copy per field. Keys come in the order written (the line's own,
//! the event's, `request_id`, the trace ids, the spans), where a map sorted them. Writing
//! both a line and the span fields this way halved what the JSON layer costs a request:
//! `cargo bench -p weir-host --bench log_lines`, BENCHMARKS.md "Log lines".
//!
//! Every value is escaped (quotes, backslashes, control characters, line breaks): a plugin's
//! message and fields, a client's headers and paths all end up in these lines, and none of
//! them can end a line, add a key or break the object (a property test writes arbitrary
//! text through every kind of field).

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

/// Writes each visited field into `out` as a `"key":value` pair, comma-separated from the
/// pairs before it (the inside of a JSON object), straight from the field's value: numbers
/// and booleans as themselves, a non-finite float as `null`, bytes as an array of numbers,
/// anything else as a string, escaped as it is formatted (no intermediate `String` or
/// `serde_json::Value` per field). A raw identifier's `r#` is dropped. `skip` leaves out the
/// fields it names; `seen` is called with the name of every pair written. Events and span
/// fields are both written with it.
struct JsonPairs<'a, S: Fn(&str) -> bool, N: FnMut(&'static str)> {
    out: &'a mut String,
    skip: S,
    seen: N,
}

impl<S: Fn(&str) -> bool, N: FnMut(&'static str)> JsonPairs<'_, S, N> {
    /// Writes the key of `field` (and the comma before it); false when it is skipped.
    fn key(&mut self, field: &Field) -> bool {
        let name = field.name();
        let name = name.strip_prefix("r#").unwrap_or(name);
        if (self.skip)(name) {
            return false;
        }
        (self.seen)(name);
        comma(self.out);
        push_str_escaped(self.out, name);
        self.out.push(':');
        true
    }
}

impl<S: Fn(&str) -> bool, N: FnMut(&'static str)> Visit for JsonPairs<'_, S, N> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.key(field) {
            self.out.push('"');
            // Writing into a `String` cannot fail.
            let _ = write!(Escaping(self.out), "{value:?}");
            self.out.push('"');
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.key(field) {
            push_str_escaped(self.out, value);
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.key(field) {
            let _ = write!(self.out, "{value}");
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.key(field) {
            let _ = write!(self.out, "{value}");
        }
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.key(field) {
            // serde_json's own float text (shortest round trip); `null` when not finite.
            match serde_json::Number::from_f64(value) {
                Some(n) => {
                    let _ = write!(self.out, "{n}");
                }
                None => self.out.push_str("null"),
            }
        }
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.key(field) {
            self.out.push_str(if value { "true" } else { "false" });
        }
    }
    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        if self.key(field) {
            self.out.push('[');
            for (i, b) in value.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{b}");
            }
            self.out.push(']');
        }
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.key(field) {
            self.out.push('"');
            let _ = write!(Escaping(self.out), "{value}");
            self.out.push('"');
        }
    }
}

/// A comma before the next pair unless the object in `out` has just been opened.
fn comma(out: &mut String) {
    let before = out.trim_end();
    if !before.is_empty() && !before.ends_with('{') {
        out.push(',');
    }
}

/// `s` as a JSON string (quoted; `"`, `\` and control characters escaped).
fn push_str_escaped(out: &mut String, s: &str) {
    out.push('"');
    escape_into(out, s);
    out.push('"');
}

/// `s` escaped for the inside of a JSON string: `"` and `\` with a backslash, the control
/// characters below U+0020 as `\n`-style escapes where JSON has one and `\u00XX` otherwise.
fn escape_into(out: &mut String, s: &str) {
    let mut from = 0;
    for (i, b) in s.bytes().enumerate() {
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[from..i]);
        if escaped.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escaped);
        }
        from = i + 1;
    }
    out.push_str(&s[from..]);
}

/// A `fmt::Write` that escapes what is written through it into a JSON string's inside.
struct Escaping<'a>(&'a mut String);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape_into(self.0, s);
        Ok(())
    }
}

/// `fields` as `"key":value` pairs appended to `out`, comma-separated from what is there
/// unless `out` is empty or ends with `{`. False when a name came twice (the same name
/// given twice, or `r#name` beside `name`): the pairs then hold that key twice, and the
/// caller keeps its last value ([`last_wins`]).
fn push_pairs(out: &mut String, fields: &impl RecordFields) -> bool {
    let mut names: Vec<&'static str> = Vec::with_capacity(16);
    let mut unique = true;
    fields.record(&mut JsonPairs {
        out,
        skip: |_| false,
        seen: |name| {
            unique &= !names.contains(&name);
            names.push(name);
        },
    });
    unique
}

/// `pairs` (the inside of a JSON object) with every key once, holding the last value given
/// for it, as a map keeps them: the rare path for a name given twice. The keys come out
/// sorted.
fn last_wins(pairs: &str) -> String {
    let map: Map<String, Value> = serde_json::from_str(&format!("{{{pairs}}}")).unwrap_or_default();
    let object = Value::Object(map).to_string();
    object[1..object.len() - 1].to_owned()
}

/// Keys the line itself writes; an event field of one of these names replaces (the first
/// three) or gives way to (the others) the line's own.
const TIMESTAMP: &str = "timestamp";
const LEVEL: &str = "level";
const TARGET: &str = "target";

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
        // The OpenTelemetry ids replace event fields of the same names.
        let ids = opentelemetry::Context::map_current(|cx| {
            let sc = cx.span().span_context().clone();
            sc.is_valid().then(|| (sc.trace_id(), sc.span_id()))
        });
        // The event's fields first, into their own buffer: which of the line's keys they
        // replace is known only once they are read. `span` and `spans` always give way to the
        // spans written last.
        let mut fields = String::with_capacity(256);
        let mut names: Vec<&'static str> = Vec::with_capacity(16);
        event.record(&mut JsonPairs {
            out: &mut fields,
            skip: |name: &str| {
                name == "span"
                    || name == "spans"
                    || (ids.is_some() && (name == "trace_id" || name == "span_id"))
            },
            seen: |name| names.push(name),
        });
        if names
            .iter()
            .enumerate()
            .any(|(i, n)| names[..i].contains(n))
        {
            fields = last_wins(&fields);
        }
        let has = |key: &str| names.contains(&key);

        let mut line = String::with_capacity(fields.len() + 1024);
        line.push('{');
        if !has(TIMESTAMP) {
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            let _ = write!(line, "\"{TIMESTAMP}\":\"{now}\"");
        }
        if !has(LEVEL) {
            comma(&mut line);
            let _ = write!(line, "\"{LEVEL}\":\"{}\"", meta.level());
        }
        if !has(TARGET) {
            comma(&mut line);
            let _ = write!(line, "\"{TARGET}\":");
            push_str_escaped(&mut line, meta.target());
        }
        if !fields.is_empty() {
            comma(&mut line);
            line.push_str(&fields);
        }

        // Each span's fields are kept by `SpanFields` as a JSON object; they go into the line
        // as they are, with the span's name added, not parsed and written again (a line
        // carries every span twice: `span` and `spans`). Only the request id is looked for:
        // the outermost span's, unless the event has its own.
        let mut spans = String::new();
        let mut current = 0..0;
        let mut request_id = has("request_id");
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                let stored = ext
                    .get::<FormattedFields<SpanFields>>()
                    .map_or("", |f| f.fields.as_str());
                let (object, id) = span_object(stored, span.name());
                if let (false, Some(id)) = (request_id, id) {
                    comma(&mut line);
                    let _ = write!(line, "\"request_id\":{id}");
                    request_id = true;
                }
                if !spans.is_empty() {
                    spans.push(',');
                }
                current = spans.len()..spans.len() + object.len();
                spans.push_str(&object);
            }
        }
        if let Some((trace_id, span_id)) = ids {
            comma(&mut line);
            let _ = write!(
                line,
                "\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\""
            );
        }
        if !spans.is_empty() {
            comma(&mut line);
            line.push_str("\"span\":");
            line.push_str(&spans[current]);
            line.push_str(",\"spans\":[");
            line.push_str(&spans);
            line.push(']');
        }
        line.push('}');
        writeln!(writer, "{line}")
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

/// Whether the stored object `stored` has a key of one of `names` (see [`SpanFields`]), in
/// one pass over its text per four names: at each `":` (every key ends so, and inside a string a quote is
/// escaped) the text before it is compared with each name and its opening quote. One
/// `memchr` scan of the colons, not a substring search per name: a span's record of three
/// fields probed its object three times, and each search built its searcher anew.
fn has_any_key(stored: &str, names: &[&str]) -> bool {
    const AT_ONCE: usize = 4;
    if names.len() > AT_ONCE {
        return names.chunks(AT_ONCE).any(|some| has_any_key(stored, some));
    }
    let mut plain = [""; AT_ONCE];
    let mut count = 0;
    for name in names {
        let name = name.strip_prefix("r#").unwrap_or(name);
        if name.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
            // A name that needs escaping (never one of ours): compare with its escaped text.
            let mut key = String::new();
            push_str_escaped(&mut key, name);
            key.push(':');
            if stored.contains(key.as_str()) {
                return true;
            }
        } else {
            plain[count] = name;
            count += 1;
        }
    }
    let plain = &plain[..count];
    if plain.is_empty() {
        return false;
    }
    let text = stored.as_bytes();
    memchr::memchr_iter(b':', text).any(|colon| {
        // `"name":` ends at this colon: a quote before it, the name, and a quote before that.
        let Some(end) = colon.checked_sub(1).filter(|&end| text[end] == b'"') else {
            return false;
        };
        plain.iter().any(|name| {
            end > name.len()
                && text[end - name.len() - 1] == b'"'
                && &text[end - name.len()..end] == name.as_bytes()
        })
    })
}

impl<'writer> FormatFields<'writer> for SpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut object = String::with_capacity(256);
        object.push('{');
        if !push_pairs(&mut object, &fields) {
            let pairs = last_wins(&object[1..]);
            object.truncate(1);
            object.push_str(&pairs);
        }
        object.push('}');
        writer.write_str(&object)
    }

    fn add_fields(&self, current: &mut FormattedFields<Self>, fields: &Record<'_>) -> fmt::Result {
        let stored = current.fields.trim_end();
        // The recorded names, probed for four at a time (a record has one to three fields).
        let mut names = [""; 4];
        let mut count = 0;
        let mut repeated = false;
        fields.record(&mut |field: &Field, _: &dyn fmt::Debug| {
            if count == names.len() {
                repeated |= has_any_key(stored, &names);
                count = 0;
            }
            names[count] = field.name();
            count += 1;
        });
        repeated = repeated || has_any_key(stored, &names[..count]);
        if !repeated && stored.starts_with('{') && stored.ends_with('}') {
            // Appended in place: the closing brace comes off, the pairs and a new one go on.
            let end = stored.len() - 1;
            current.fields.truncate(end);
            let unique = push_pairs(&mut current.fields, fields);
            current
                .fields
                .truncate(if unique { current.fields.len() } else { end });
            current.fields.push('}');
            if unique {
                return Ok(());
            }
        }
        // A field recorded again (or a stored text that is not an object): merge.
        let stored = current.fields.trim();
        let mut map: Map<String, Value> = serde_json::from_str(stored).unwrap_or_default();
        let mut pairs = String::from("{");
        push_pairs(&mut pairs, fields);
        pairs.push('}');
        let added: Map<String, Value> = serde_json::from_str(&pairs).unwrap_or_default();
        map.extend(added);
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
    if !has_any_key(stored, &["request_id", "name"]) {
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
    /// The probe for one name, as the tests ask it.
    fn has_key(stored: &str, name: &str) -> bool {
        super::has_any_key(stored, &[name])
    }

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

    /// A value the line holds, as the test wrote it: an error whose text is given.
    #[derive(Debug)]
    struct Failure(String);

    impl fmt::Display for Failure {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::error::Error for Failure {}

    proptest::proptest! {
        /// Whatever text a plugin or a client puts in a message or a field (quotes,
        /// backslashes, newlines, control characters, any Unicode), the line stays one line
        /// of one JSON object and every value reads back as it was written: no text can end
        /// a line early, add a key, or break the object.
        #[test]
        fn any_text_stays_inside_its_value(
            message in "\\PC*|[\"\\\\\n\r\t\u{0}-\u{1f}{}:,]{0,12}",
            text in proptest::prelude::any::<String>(),
            spanned in "[\"\\\\\n\u{0}-\u{1f}a-z:{}]{0,16}",
        ) {
            let failure = Failure(text.clone());
            let raw = raw(|| {
                let span = tracing::info_span!("job", field = %spanned, later = tracing::field::Empty);
                let _entered = span.enter();
                span.record("later", text.as_str());
                tracing::info!(
                    text = text.as_str(),
                    debugged = ?text,
                    error = &failure as &(dyn std::error::Error + 'static),
                    bytes = &text.as_bytes()[..text.len().min(4)],
                    "{message}"
                );
            });
            proptest::prop_assert_eq!(raw.matches('\n').count(), 1, "one line: {:?}", raw);
            let line: Value = serde_json::from_str(raw.trim_end())
                .map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e}: {raw:?}")))?;
            proptest::prop_assert_eq!(&line["message"], &json!(message));
            proptest::prop_assert_eq!(&line["text"], &json!(text));
            proptest::prop_assert_eq!(&line["debugged"], &json!(format!("{text:?}")));
            proptest::prop_assert_eq!(&line["error"], &json!(text));
            proptest::prop_assert_eq!(
                &line["bytes"],
                &json!(text.as_bytes()[..text.len().min(4)].to_vec())
            );
            proptest::prop_assert_eq!(
                &line["span"],
                &json!({"name": "job", "field": spanned, "later": text})
            );
        }
    }

    proptest::proptest! {
        /// The key probe never misses a key: wherever the parsed object has `name`,
        /// `has_key` says so (a miss would let a recorded field be appended a second time).
        /// A name like the fields' (letters and digits) it may find where it is not a key
        /// only inside a key that itself holds a quote.
        #[test]
        fn the_key_probe_finds_every_key(
            pairs in proptest::collection::vec(("[a-c\"\\\\:]{0,3}", "[a-c\"\\\\:]{0,4}"), 0..6),
            name in "[a-c\"\\\\:]{0,3}",
        ) {
            let object: Map<String, Value> = pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            let stored = Value::Object(object.clone()).to_string();
            let found = has_key(&stored, &name);
            if object.contains_key(&name) {
                proptest::prop_assert!(found, "{:?} missed in {}", name, stored);
            } else if found && name.bytes().all(|b| b.is_ascii_alphanumeric()) {
                proptest::prop_assert!(
                    object.keys().any(|k| k.contains('"')),
                    "{:?} found in {} without a key holding a quote", name, stored
                );
            }
        }

        /// Probing for several names at once (one scan per four names) finds exactly what
        /// looking for each name's `"name":` text does.
        #[test]
        fn the_key_probe_of_several_names_is_the_probe_of_each(
            pairs in proptest::collection::vec(("[a-c\"\\\\:]{0,3}", "[a-c\"\\\\:]{0,4}"), 0..6),
            names in proptest::collection::vec("[a-c\"\\\\:]{0,3}", 0..7),
        ) {
            let object: Map<String, Value> = pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            let stored = Value::Object(object).to_string();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let each = names.iter().any(|name| {
                stored.contains(&format!("{}:", Value::String((*name).to_owned())))
            });
            proptest::prop_assert_eq!(has_any_key(&stored, &names), each, "{:?} in {}", names, stored);
        }
    }

    #[test]
    fn an_event_field_replaces_the_lines_own_keys_and_no_key_appears_twice() {
        let text = raw(|| {
            let span = tracing::info_span!("job", n = -3_i64, ratio = 1.0_f64, inf = f64::INFINITY);
            let _entered = span.enter();
            tracing::info!(
                timestamp = "from the event",
                level = "custom",
                target = "elsewhere",
                span = "an event field",
                spans = 2,
                trace_id = "kept: no OpenTelemetry span here",
                r#type = "raw identifier",
                neg = -0.0_f64,
                big = u64::MAX,
                small = i64::MIN,
                "done"
            );
        });
        let line: Value =
            serde_json::from_str(text.trim_end()).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(line["timestamp"], "from the event", "{text}");
        assert_eq!(line["level"], "custom", "{text}");
        assert_eq!(line["target"], "elsewhere", "{text}");
        assert_eq!(
            line["trace_id"], "kept: no OpenTelemetry span here",
            "{text}"
        );
        assert_eq!(line["type"], "raw identifier", "{text}");
        assert!(text.contains(r#""neg":-0.0,"#), "{text}");
        assert_eq!(line["big"], json!(u64::MAX), "{text}");
        assert_eq!(line["small"], json!(i64::MIN), "{text}");
        assert_eq!(
            line["span"],
            json!({"name": "job", "n": -3, "ratio": 1.0, "inf": null}),
            "{text}"
        );
        for key in [
            "timestamp",
            "level",
            "target",
            "span",
            "spans",
            "trace_id",
            "message",
        ] {
            let n = text.matches(&format!("\"{key}\":")).count();
            assert_eq!(n, 1, "{key} written {n} times: {text}");
        }
    }

    #[test]
    fn a_key_is_found_only_where_it_is_a_key() {
        let stored = r#"{"a":"x\"b\":","ab":1,"c\"d":2}"#;
        assert!(has_key(stored, "ab"));
        assert!(has_key(stored, "a"));
        assert!(
            !has_key(stored, "b"),
            "inside a value, after an escaped quote"
        );
        assert!(has_key(stored, "c\"d"), "a name that needs escaping");
        assert!(!has_key(stored, "c"));
        assert!(
            has_key(stored, "r#ab"),
            "a raw identifier's prefix is dropped"
        );
        // The name seen first inside a value, then as a key.
        assert!(has_key(r#"{"x":"a","a":1}"#, "a"));
        assert!(has_key(r#"{"x":"\"a\":1","a":2}"#, "a"));
        assert!(!has_key(r#"{"x":"\"a\":1"}"#, "a"));
    }

    #[test]
    fn a_name_given_twice_is_written_once_with_its_last_value() {
        let text = raw(|| {
            let span = tracing::info_span!("job", a = 1, a = 2, later = tracing::field::Empty);
            let _entered = span.enter();
            span.record("later", 3);
            tracing::info!(b = "first", b = "second", "done");
        });
        let line: Value =
            serde_json::from_str(text.trim_end()).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(line["b"], "second", "{text}");
        assert_eq!(text.matches(r#""b":"#).count(), 1, "{text}");
        assert_eq!(
            line["span"],
            json!({"name": "job", "a": 2, "later": 3}),
            "{text}"
        );
        // `span` and `spans` each hold the span once.
        assert_eq!(text.matches(r#""a":"#).count(), 2, "{text}");
    }
}
