//! Tenants: the unit of isolation of the public API.
//!
//! Every order, idempotency record, outbox event and inbox record belongs to exactly one
//! tenant. Reads, lists, cancels and the events feed only ever see the caller's tenant; the
//! same idempotency key from two tenants is two keys. Rows written before tenants existed
//! belong to [`DEFAULT_TENANT`], as do all requests of an instance running without
//! authentication.

/// The tenant of unauthenticated local use and of rows written before tenants existed.
pub const DEFAULT_TENANT: &str = "default";

/// The longest tenant name.
pub const MAX_TENANT_LEN: usize = 64;

/// Whether `name` is a valid tenant name: 1-64 bytes of `a-z`, `0-9`, `-`, `_` and `.`,
/// starting with a letter or digit. Tenant names come from API key records and token claims;
/// they appear in keys, logs and span attributes, so they are kept to a plain alphabet.
pub fn valid_tenant(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_TENANT_LEN
        && bytes[0].is_ascii_alphanumeric()
        && bytes.iter().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names_are_a_plain_alphabet() {
        for ok in [
            "default",
            "acme",
            "a",
            "tenant-1",
            "eu.acme_2",
            &"a".repeat(64),
        ] {
            assert!(valid_tenant(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "Acme",
            "a b",
            "a/b",
            "a\u{0}",
            "é",
            &"a".repeat(65),
        ] {
            assert!(!valid_tenant(bad), "{bad:?}");
        }
    }
}
