//! API keys: `weir_<prefix>_<secret>`.
//!
//! - `prefix`: 16 lowercase hex characters (64 random bits), public, unique, the lookup key;
//! - `secret`: 43 base64url characters (256 random bits from the OS CSPRNG).
//!
//! The database keeps the SHA-256 of the whole key text, never the key; a presented key is
//! found by its prefix and accepted only if its hash matches in constant time (`subtle`), it
//! is not revoked and it has not expired. A plain SHA-256 (not a password hash) is right here:
//! the secret has 256 bits of entropy, so there is nothing to brute-force.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::{AuthError, Scopes};
use crate::storage::ApiKeyRecord;

/// Every API key starts with this.
pub const KEY_PREFIX: &str = "weir_";

/// The header that may carry an API key (besides `Authorization: Bearer`).
pub const API_KEY_HEADER: &str = "x-api-key";

const PREFIX_HEX: usize = 16;
const SECRET_B64: usize = 43;

/// A key's parts, borrowed from its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedKey<'a> {
    /// The lookup prefix.
    pub prefix: &'a str,
}

/// The parts of `text` if it has the shape of an API key.
pub fn parse(text: &str) -> Option<ParsedKey<'_>> {
    let rest = text.strip_prefix(KEY_PREFIX)?;
    let (prefix, secret) = rest.split_once('_')?;
    let hex_ok = prefix.len() == PREFIX_HEX
        && prefix
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let secret_ok = secret.len() == SECRET_B64
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (hex_ok && secret_ok).then_some(ParsedKey { prefix })
}

/// Lowercase hex SHA-256 of a key's text: what is stored.
pub fn hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Whether the key `text` matches `record` and may be used at `now`.
pub fn check(text: &str, record: &ApiKeyRecord, now: DateTime<Utc>) -> Result<(), AuthError> {
    let presented = hash(text);
    if !bool::from(presented.as_bytes().ct_eq(record.secret_hash.as_bytes())) {
        return Err(AuthError::Invalid("unknown API key".into()));
    }
    if record.revoked_at.is_some() {
        return Err(AuthError::Invalid("the API key was revoked".into()));
    }
    if record.expires_at.is_some_and(|at| at <= now) {
        return Err(AuthError::Invalid("the API key has expired".into()));
    }
    Ok(())
}

/// A freshly created key: the text to show once, and the record to store.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// The whole key; shown to the operator once, never stored.
    pub text: String,
    /// What the database keeps.
    pub record: ApiKeyRecord,
}

/// What a new key is for.
#[derive(Debug, Clone)]
pub struct KeyRequest {
    /// Tenant it acts for (already validated).
    pub tenant: String,
    /// Operator's label.
    pub name: String,
    /// Granted scopes.
    pub scopes: Scopes,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// Who asks (the admin token's name).
    pub created_by: String,
}

/// Generates a key from the OS CSPRNG.
pub fn generate(req: KeyRequest, now: DateTime<Utc>) -> Result<NewKey, getrandom::Error> {
    let mut prefix = [0u8; PREFIX_HEX / 2];
    let mut secret = [0u8; 32];
    getrandom::fill(&mut prefix)?;
    getrandom::fill(&mut secret)?;
    let text = format!(
        "{KEY_PREFIX}{}_{}",
        hex::encode(prefix),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let record = ApiKeyRecord {
        id: Uuid::now_v7(),
        prefix: hex::encode(prefix),
        secret_hash: hash(&text),
        tenant: req.tenant,
        name: req.name,
        scopes: req.scopes.to_string(),
        created_at: now,
        created_by: req.created_by,
        expires_at: req.expires_at,
        revoked_at: None,
    };
    Ok(NewKey { text, record })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_key() -> NewKey {
        generate(
            KeyRequest {
                tenant: "acme".into(),
                name: "ci".into(),
                scopes: Scopes::all(),
                expires_at: None,
                created_by: "admin".into(),
            },
            Utc::now(),
        )
        .unwrap()
    }

    #[test]
    fn generated_keys_parse_and_check() {
        let k = new_key();
        assert_eq!(parse(&k.text).unwrap().prefix, k.record.prefix);
        assert!(!k.record.secret_hash.contains(&k.text[KEY_PREFIX.len()..]));
        check(&k.text, &k.record, Utc::now()).unwrap();
        // Two keys never share a prefix or a secret.
        let other = new_key();
        assert_ne!(other.record.prefix, k.record.prefix);
        assert_ne!(other.text, k.text);
    }

    #[test]
    fn a_changed_revoked_or_expired_key_is_refused() {
        let k = new_key();
        let mut forged = k.text.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        assert!(parse(&forged).is_some());
        assert!(check(&forged, &k.record, Utc::now()).is_err());
        let revoked = ApiKeyRecord {
            revoked_at: Some(Utc::now()),
            ..k.record.clone()
        };
        assert!(check(&k.text, &revoked, Utc::now()).is_err());
        let expired = ApiKeyRecord {
            expires_at: Some(Utc::now() - chrono::Duration::seconds(1)),
            ..k.record.clone()
        };
        assert!(check(&k.text, &expired, Utc::now()).is_err());
    }

    #[test]
    fn only_well_formed_keys_parse() {
        for bad in [
            "",
            "weir_",
            "weir_0123456789abcdef",
            "weir_0123456789abcdeF_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "weir_0123456789abcde_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "weir_0123456789abcdef_AAAA",
            "weir_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            "key_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}
