//! Extractors whose rejections are [`ApiError`]s, so every malformed request gets a problem
//! response with its own code instead of axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequestParts, Request};
use http::header;
use http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::{ApiError, FieldViolation};

/// A JSON body: checks the content type, parses, rejects unknown fields (found structurally
/// with `serde_ignored`, never by reading error text) and reports the path of type errors.
#[derive(Debug)]
pub struct JsonBody<T> {
    /// The parsed value.
    pub value: T,
    /// The body as a generic JSON value, for hashing.
    pub raw: serde_json::Value,
}

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<mime_type::Essence>().ok())
            .is_some_and(|m| m.is_json());
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(usize::MAX, |l| l.0);
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| match rejection {
                BytesRejection::FailedToBufferBody(_) => ApiError::PayloadTooLarge { limit },
                other => ApiError::MalformedJson(other.body_text()),
            })?;
        parse_json(&bytes)
    }
}

/// Parse `bytes` as `T` with the rules of [`JsonBody`].
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<JsonBody<T>, ApiError> {
    let raw: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let value: Result<T, _> =
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(&raw, &mut record));
    if !unknown.is_empty() {
        return Err(ApiError::UnknownFields(
            unknown
                .into_iter()
                .map(|field| FieldViolation {
                    message: format!("unknown field `{field}`"),
                    field,
                    code: "UNKNOWN_FIELD".to_owned(),
                })
                .collect(),
        ));
    }
    match value {
        Ok(value) => Ok(JsonBody { value, raw }),
        Err(e) => Err(ApiError::SchemaInvalid(format!(
            "at `{}`: {}",
            e.path(),
            e.inner()
        ))),
    }
}

/// `deserialize_with` for integer fields of request bodies. In JSON Schema 2020-12 (the
/// dialect of OpenAPI 3.1) `3` and `3.0` are the same integer, so a field the schema types
/// `integer` accepts both; a fraction, or a value outside `T`'s range, is a type error at
/// the field's path (`REQUEST_SCHEMA_INVALID`). A number written with a fraction part or an
/// exponent is read as a double (exactly: serde_json's `float_roundtrip`), which holds every
/// integer only below 2^53 in magnitude: from there on such a number is refused rather than
/// rounded (`9007199254740993.0` is not silently `...992`); written as a plain integer it
/// is read exactly.
pub fn json_integer<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64>,
{
    use serde::de::{Error, Unexpected};
    let n = <serde_json::Number as serde::Deserialize>::deserialize(de)?;
    let whole = match (n.as_i64(), n.as_f64()) {
        (Some(i), _) => Some(i),
        // 2^53 itself may be 2^53 + 1 rounded: hence `<`.
        (None, Some(f)) if f.fract() == 0.0 && f.abs() < EXACT_DOUBLE => Some(f as i64),
        _ => None,
    };
    let unexpected = || match n.as_f64() {
        Some(f) => Unexpected::Float(f),
        None => Unexpected::Other("a number"),
    };
    let whole = whole.ok_or_else(|| D::Error::invalid_type(unexpected(), &"an integer"))?;
    T::try_from(whole)
        .map_err(|_| D::Error::invalid_value(Unexpected::Signed(whole), &"an integer in range"))
}

/// 2^53: every integer below it in magnitude is a double and read exactly; from it on, a
/// double may be a neighbouring integer rounded.
const EXACT_DOUBLE: f64 = 9_007_199_254_740_992.0;

/// The configured body limit, placed in request extensions by the router so the extractor
/// can name it in its error.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// The `Idempotency-Key` header: required as `IdempotencyKey`, optional as
/// `Option<IdempotencyKey>` (absent is `None`; present, it must be well-formed either way).
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub String);

impl IdempotencyKey {
    /// The header's key, `None` when absent; 1-255 visible ASCII characters.
    fn read(parts: &Parts) -> Result<Option<Self>, ApiError> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(None);
        };
        let key = value
            .to_str()
            .map_err(|_| ApiError::IdempotencyKeyInvalid)?;
        if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiError::IdempotencyKeyInvalid);
        }
        Ok(Some(Self(key.to_owned())))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Self::read(parts)?.ok_or(ApiError::IdempotencyKeyMissing)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Self::read(parts)
    }
}

/// Query string parsed into `T`, with [`ApiError::InvalidQuery`] as rejection.
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(QueryParams)
            .map_err(|e| ApiError::InvalidQuery(format!("`{}`: {}", e.path(), e.inner())))
    }
}

/// Minimal media-type parsing: the essence (`type/subtype`) without parameters.
mod mime_type {
    /// `type/subtype` in lower case.
    pub struct Essence(String);

    impl std::str::FromStr for Essence {
        type Err = ();

        fn from_str(s: &str) -> Result<Self, ()> {
            let essence = s.split(';').next().unwrap_or_default().trim();
            if essence.is_empty() || !essence.contains('/') {
                return Err(());
            }
            Ok(Self(essence.to_ascii_lowercase()))
        }
    }

    impl Essence {
        /// `application/json` or any `application/*+json`.
        pub fn is_json(&self) -> bool {
            self.0 == "application/json"
                || (self.0.starts_with("application/") && self.0.ends_with("+json"))
        }
    }
}

/// A page of a keyset-paginated list fetched with `limit + 1` rows: at most `limit` items,
/// and the cursor of the last one (`cursor_of`) when more followed.
pub(crate) fn page<T>(
    mut items: Vec<T>,
    limit: u32,
    cursor_of: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    if items.len() <= limit as usize {
        return (items, None);
    }
    items.truncate(limit as usize);
    let next = items.last().map(cursor_of);
    (items, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Line {
        sku: String,
        quantity: u32,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        lines: Vec<Line>,
    }

    #[test]
    fn unknown_fields_are_listed_with_their_paths() {
        let err = parse_json::<Body>(
            br#"{"name":"a","extra":1,"lines":[{"sku":"x","quantity":1,"colour":"red"}]}"#,
        )
        .unwrap_err();
        let ApiError::UnknownFields(v) = err else {
            panic!("expected unknown fields, got {err:?}")
        };
        let fields: Vec<_> = v.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["extra", "lines.0.colour"]);
    }

    #[derive(Debug, serde::Deserialize)]
    struct Counts {
        #[serde(deserialize_with = "json_integer")]
        small: u32,
        #[serde(deserialize_with = "json_integer")]
        big: i64,
    }

    #[test]
    fn integers_may_be_written_with_a_zero_fraction() {
        let ok = parse_json::<Counts>(br#"{"small":3.0,"big":-2e3}"#)
            .unwrap()
            .value;
        assert_eq!((ok.small, ok.big), (3, -2000));
        // Read exactly (without `float_roundtrip` this one was 1832596765749016.8, a
        // fraction: a valid body refused, found by Schemathesis).
        for (text, big) in [
            (
                r#"{"small":0,"big":1832596765749017.0}"#,
                1_832_596_765_749_017,
            ),
            (r#"{"small":0,"big":9007199254740991.0}"#, (1 << 53) - 1),
            (r#"{"small":0,"big":9223372036854775807}"#, i64::MAX),
        ] {
            let read = parse_json::<Counts>(text.as_bytes()).unwrap().value;
            assert_eq!(read.big, big, "{text}");
        }
        for bad in [
            r#"{"small":1.5,"big":1}"#,
            r#"{"small":-1,"big":1}"#,
            r#"{"small":4294967296,"big":1}"#,
            r#"{"small":1,"big":9223372036854775808}"#,
            r#"{"small":1,"big":1e300}"#,
            // Beyond 2^53 a double is not every integer: refused, not rounded to ...992.
            r#"{"small":1,"big":9007199254740993.0}"#,
            r#"{"small":1,"big":-9007199254740992.0}"#,
            r#"{"small":1,"big":1e16}"#,
            r#"{"small":"1","big":1}"#,
        ] {
            match parse_json::<Counts>(bad.as_bytes()) {
                Err(ApiError::SchemaInvalid(_)) => {}
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn type_errors_name_the_path() {
        let err =
            parse_json::<Body>(br#"{"name":"a","lines":[{"sku":"x","quantity":-1}]}"#).unwrap_err();
        match err {
            ApiError::SchemaInvalid(m) => assert!(m.contains("lines[0].quantity"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_json::<Body>(b"{not json").unwrap_err(),
            ApiError::MalformedJson(_)
        ));
    }
}
