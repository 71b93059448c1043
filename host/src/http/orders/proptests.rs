//! Property tests of `GET /v1/orders` request decoding: the pagination cursor
//! ([`encode_cursor`] / [`decode_cursor`], private to `orders`, hence this child module) and
//! the query string ([`QueryParams`] of [`ListQuery`]).

use axum::extract::FromRequestParts;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use http::Request;
use proptest::prelude::*;
use uuid::Uuid;

use super::{CURSOR_PREFIX, LEGACY_CURSOR_PREFIX, ListQuery, decode_cursor, encode_cursor};
use crate::http::error::ApiError;
use crate::http::extract::QueryParams;

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

/// Cursor-like strings: arbitrary text, the prefix and hex-like text, base64 of arbitrary
/// bytes or of the legacy prefix and arbitrary text, other base64 alphabets and paddings,
/// valid cursors with one character changed, inserted or removed.
fn cursor_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[A-Za-z0-9_=+/-]{0,80}",
        "o1\\.[0-9a-fA-F-]{30,36}",
        prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| URL_SAFE_NO_PAD.encode(b)),
        any::<String>().prop_map(|s| URL_SAFE_NO_PAD.encode(format!("{LEGACY_CURSOR_PREFIX}{s}"))),
        uuid().prop_map(|id| STANDARD.encode(format!("{LEGACY_CURSOR_PREFIX}{id}"))),
        uuid().prop_map(|id| URL_SAFE.encode(format!("{LEGACY_CURSOR_PREFIX}{id}"))),
        (uuid(), any::<prop::sample::Index>(), any::<char>(), 0u8..3).prop_map(
            |(id, at, c, op)| {
                let mut s: Vec<char> = encode_cursor(id).chars().collect();
                let i = at.index(s.len());
                match op {
                    0 => s[i] = c,
                    1 => s.insert(i, c),
                    _ => {
                        s.remove(i);
                    }
                }
                s.into_iter().collect()
            }
        ),
    ]
}

fn list_query(query: &str) -> Result<ListQuery, ApiError> {
    let uri = format!("/v1/orders?{query}");
    let (mut parts, ()) = Request::get(uri).body(()).unwrap().into_parts();
    futures::executor::block_on(QueryParams::<ListQuery>::from_request_parts(
        &mut parts,
        &(),
    ))
    .map(|q| q.0)
}

proptest! {
    #[test]
    fn cursors_round_trip(id in uuid()) {
        let cursor = encode_cursor(id);
        // Safe in a query string as it is, and the form the schema states.
        prop_assert!(cursor.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.'));
        prop_assert_eq!(cursor.len(), 35);
        prop_assert!(cursor.starts_with(CURSOR_PREFIX));
        prop_assert_eq!(decode_cursor(&cursor).ok(), Some(id));
    }

    #[test]
    fn arbitrary_cursors_decode_or_are_invalid(s in cursor_like()) {
        match decode_cursor(&s) {
            // Whatever decodes is a cursor of this API for that id: the one it issues, or
            // the legacy base64 form.
            Ok(id) if s.starts_with(CURSOR_PREFIX) => prop_assert_eq!(&s, &encode_cursor(id)),
            Ok(id) => {
                let text = String::from_utf8(URL_SAFE_NO_PAD.decode(&s).unwrap()).unwrap();
                let rest = text.strip_prefix(LEGACY_CURSOR_PREFIX);
                prop_assert_eq!(rest.and_then(|r| Uuid::parse_str(r).ok()), Some(id));
            }
            Err(ApiError::InvalidCursor) => {}
            Err(e) => prop_assert!(false, "{e:?}"),
        }
    }

    #[test]
    fn cursors_of_another_kind_are_invalid(id in uuid(), prefix in "[a-z0-9]{0,3}:?") {
        prop_assume!(prefix != LEGACY_CURSOR_PREFIX);
        let foreign = URL_SAFE_NO_PAD.encode(format!("{prefix}{id}"));
        prop_assert!(matches!(decode_cursor(&foreign), Err(ApiError::InvalidCursor)));
    }

    /// What `list_orders` does with a query before touching the store: parse it, then the
    /// cursor. Arbitrary queries give a filter or `INVALID_QUERY_PARAMETER` /
    /// `INVALID_CURSOR`.
    #[test]
    fn arbitrary_list_queries_decode_or_get_a_typed_refusal(
        pairs in prop::collection::vec(
            (
                prop_oneof![
                    Just("customer_id".to_owned()),
                    Just("status".to_owned()),
                    Just("limit".to_owned()),
                    Just("cursor".to_owned()),
                    any::<String>(),
                ],
                prop_oneof![any::<String>(), "[0-9]{1,12}", uuid().prop_map(encode_cursor)],
            ),
            0..5,
        ),
    ) {
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&pairs)
            .finish();
        match list_query(&query) {
            Ok(q) => {
                if let Some(cursor) = &q.cursor {
                    // The only cursor given, unchanged by the query decoding.
                    let given: Vec<_> = pairs.iter().filter(|(k, _)| k == "cursor").collect();
                    prop_assert_eq!(given.len(), 1);
                    prop_assert_eq!(&given[0].1, cursor);
                    match decode_cursor(cursor) {
                        Ok(_) | Err(ApiError::InvalidCursor) => {}
                        Err(e) => prop_assert!(false, "{e:?}"),
                    }
                }
            }
            Err(ApiError::InvalidQuery(_)) => {}
            Err(e) => prop_assert!(false, "{e:?}"),
        }
    }
}
