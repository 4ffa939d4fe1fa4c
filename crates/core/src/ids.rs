//! Identifier rules, as Google states them.

use rand::Rng;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("{0}")]
pub struct InvalidId(pub String);

/// Resource Manager project ids: 6 to 30 characters, lowercase ASCII letters, digits and
/// hyphens, starting with a letter and not ending with a hyphen.
pub fn validate_project_id(id: &str) -> Result<(), InvalidId> {
    let bad = |why: &str| Err(InvalidId(format!("Project id \"{id}\" is invalid: {why}")));
    if id.len() < 6 || id.len() > 30 {
        return bad("it must be 6 to 30 characters long");
    }
    if !id.starts_with(|c: char| c.is_ascii_lowercase()) {
        return bad("it must start with a lowercase letter");
    }
    if id.ends_with('-') {
        return bad("it must not end with a hyphen");
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return bad("it may contain only lowercase letters, digits and hyphens");
    }
    for word in ["google", "null", "undefined", "ssl"] {
        if id.contains(word) {
            return bad(&format!(
                "it must not contain the restricted string \"{word}\""
            ));
        }
    }
    Ok(())
}

/// API Keys v2 `keyId`: RFC-1034 label, lowercase, at most 63 characters, and not shaped
/// like a UUID (those are reserved for server-generated ids).
pub fn validate_key_id(id: &str) -> Result<(), InvalidId> {
    let bad = || {
        Err(InvalidId(format!(
            "Invalid key id \"{id}\": it must match [a-z]([a-z0-9-]{{0,61}}[a-z0-9])? and not be a UUID."
        )))
    };
    if id.is_empty() || id.len() > 63 || uuid::Uuid::parse_str(id).is_ok() {
        return bad();
    }
    let b = id.as_bytes();
    if !b[0].is_ascii_lowercase() || b[b.len() - 1] == b'-' {
        return bad();
    }
    if !b
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    {
        return bad();
    }
    Ok(())
}

/// Service account ids (`accountId`): 6 to 30 characters, `[a-z]([-a-z0-9]*[a-z0-9])`.
pub fn validate_account_id(id: &str) -> Result<(), InvalidId> {
    let ok = (6..=30).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && !id.ends_with('-')
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(InvalidId(format!(
            "Invalid account id \"{id}\": it must be 6 to 30 characters and match [a-z]([-a-z0-9]*[a-z0-9])."
        )))
    }
}

/// A new 12-digit project number (never starting with 0).
pub fn new_project_number() -> i64 {
    rand::thread_rng().gen_range(100_000_000_000..1_000_000_000_000)
}

/// A new 21-digit service-account unique id, as Google shows them.
pub fn new_unique_id() -> String {
    let mut rng = rand::thread_rng();
    let mut s = String::with_capacity(21);
    s.push(char::from(b'1' + rng.gen_range(0..9)));
    for _ in 0..20 {
        s.push(char::from(b'0' + rng.gen_range(0..10)));
    }
    s
}

/// A new random hex id of `bytes` bytes (service-account key ids use 20 bytes).
pub fn new_hex_id(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill(&mut buf[..]);
    hex::encode(buf)
}

/// The email of a service account `account_id` in project `project_id`.
pub fn service_account_email(account_id: &str, project_id: &str) -> String {
    format!("{account_id}@{project_id}.iam.gserviceaccount.com")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_ids() {
        assert!(validate_project_id("my-project-1").is_ok());
        assert!(validate_project_id("abcdef").is_ok());
        for bad in [
            "short",
            "1abcdef",
            "abcdef-",
            "Abcdefg",
            "abc_def",
            "my-google-proj",
            "a234567890123456789012345678901",
        ] {
            assert!(validate_project_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_ids() {
        assert!(validate_key_id("my-key-1").is_ok());
        assert!(validate_key_id("a").is_ok());
        for bad in [
            "",
            "1key",
            "key-",
            "Key",
            "k_y",
            "0b1c2d3e-1234-4abc-8def-0123456789ab",
        ] {
            assert!(validate_key_id(bad).is_err(), "{bad}");
        }
        assert!(validate_key_id(&"a".repeat(64)).is_err());
    }

    #[test]
    fn numbers_have_the_right_shape() {
        for _ in 0..100 {
            let n = new_project_number();
            assert_eq!(n.to_string().len(), 12);
            assert_eq!(new_unique_id().len(), 21);
        }
        assert_eq!(new_hex_id(20).len(), 40);
    }
}
