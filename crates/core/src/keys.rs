//! API key strings and how they are protected at rest.
//!
//! A key string is `AIza` followed by 35 characters of `[0-9A-Za-z_-]` from the OS CSPRNG.
//! The store never holds it in plain text: it keeps HMAC-SHA256(secret, key) for lookup,
//! AES-256-GCM(secret, key) for `getKeyString`, and the last four characters for display.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;

const KEY_PREFIX: &str = "AIza";
const KEY_BODY_LEN: usize = 35;
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A plain-text API key. Exists only while a key is being created, shown or checked;
/// its `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainKey(String);

impl PlainKey {
    /// A fresh random key string.
    pub fn generate() -> Self {
        let mut s = String::with_capacity(KEY_PREFIX.len() + KEY_BODY_LEN);
        s.push_str(KEY_PREFIX);
        let mut buf = [0u8; KEY_BODY_LEN];
        OsRng.fill_bytes(&mut buf);
        // 64 symbols: taking the low 6 bits of each byte is uniform.
        s.extend(buf.iter().map(|b| ALPHABET[(b & 63) as usize] as char));
        PlainKey(s)
    }

    /// Wraps a key string received from a caller (surrounding whitespace removed).
    pub fn from_caller(s: &str) -> Self {
        PlainKey(s.trim().to_owned())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The last four characters, the only part shown in lists.
    pub fn last4(&self) -> String {
        let n = self.0.chars().count();
        self.0.chars().skip(n.saturating_sub(4)).collect()
    }

    /// Whether the string has the shape of a key this server mints.
    pub fn is_well_formed(&self) -> bool {
        // A byte-class test, not `ALPHABET.contains`: this runs on every data-plane request.
        self.0.len() == KEY_PREFIX.len() + KEY_BODY_LEN
            && self.0.starts_with(KEY_PREFIX)
            && self.0.bytes().skip(KEY_PREFIX.len()).all(is_key_char)
    }
}

/// Whether `b` is one of [`ALPHABET`]'s symbols.
fn is_key_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

impl fmt::Debug for PlainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlainKey(<redacted>)")
    }
}

/// The server secret: 32 random bytes kept outside the database. Two subkeys are derived
/// from it, one for HMAC lookups and one for AES-256-GCM encryption.
#[derive(Clone)]
pub struct ServerSecret {
    /// HMAC-SHA256 already keyed with the lookup subkey: each MAC clones it instead of
    /// hashing the key pads again (two SHA-256 blocks saved per request).
    mac: Hmac<Sha256>,
    enc_key: [u8; 32],
}

impl fmt::Debug for ServerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerSecret(<redacted>)")
    }
}

/// Key material of the wrong size.
#[derive(Debug, thiserror::Error)]
#[error("the server secret must be 32 bytes")]
pub struct BadSecret;

/// Ciphertext that does not decrypt under this server's secret.
#[derive(Debug, thiserror::Error)]
#[error("stored key material does not decrypt under this server's secret")]
pub struct DecryptError;

impl ServerSecret {
    pub fn generate() -> [u8; 32] {
        let mut raw = [0u8; 32];
        OsRng.fill_bytes(&mut raw);
        raw
    }

    pub fn from_bytes(raw: &[u8]) -> Result<Self, BadSecret> {
        if raw.len() != 32 {
            return Err(BadSecret);
        }
        let derive = |label: &[u8]| -> [u8; 32] {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(raw).expect("any key size");
            mac.update(label);
            mac.finalize().into_bytes().into()
        };
        let mac_key = derive(b"keyplane/api-key-lookup/v1");
        Ok(ServerSecret {
            mac: <Hmac<Sha256> as Mac>::new_from_slice(&mac_key).expect("32 bytes"),
            enc_key: derive(b"keyplane/api-key-encryption/v1"),
        })
    }

    /// HMAC-SHA256 of a key string: what the store indexes keys by.
    pub fn lookup_hash(&self, key: &PlainKey) -> [u8; 32] {
        self.mac(key.expose().as_bytes())
    }

    /// HMAC-SHA256 of any secret token (access tokens are stored this way too).
    pub fn mac(&self, data: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// AES-256-GCM: 12-byte random nonce followed by ciphertext and tag.
    pub fn encrypt(&self, key: &PlainKey) -> Vec<u8> {
        let cipher = Aes256Gcm::new_from_slice(&self.enc_key).expect("32 bytes");
        let mut nonce = [0u8; 12];
        OsRng.fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(Nonce::from_slice(&nonce), key.expose().as_bytes())
            .expect("AES-GCM encryption of a short string cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        out
    }

    pub fn decrypt(&self, blob: &[u8]) -> Result<PlainKey, DecryptError> {
        if blob.len() < 12 + 16 {
            return Err(DecryptError);
        }
        let cipher = Aes256Gcm::new_from_slice(&self.enc_key).expect("32 bytes");
        let pt = cipher
            .decrypt(Nonce::from_slice(&blob[..12]), &blob[12..])
            .map_err(|_| DecryptError)?;
        String::from_utf8(pt)
            .map(PlainKey)
            .map_err(|_| DecryptError)
    }
}

/// SHA-256 of bytes, hex encoded: used for etags.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed_and_distinct() {
        let a = PlainKey::generate();
        let b = PlainKey::generate();
        assert!(a.is_well_formed(), "{}", a.expose());
        assert_eq!(a.expose().len(), 39);
        assert_ne!(a, b);
        assert_eq!(a.last4(), &a.expose()[35..]);
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    #[test]
    fn hmac_and_encryption_round_trip() {
        let s = ServerSecret::from_bytes(&ServerSecret::generate()).unwrap();
        let k = PlainKey::generate();
        assert_eq!(s.lookup_hash(&k), s.lookup_hash(&k));
        let blob = s.encrypt(&k);
        assert!(!blob.windows(39).any(|w| w == k.expose().as_bytes()));
        assert_eq!(s.decrypt(&blob).unwrap(), k);
        let other = ServerSecret::from_bytes(&ServerSecret::generate()).unwrap();
        assert!(other.decrypt(&blob).is_err());
        assert_ne!(other.lookup_hash(&k), s.lookup_hash(&k));
        assert!(ServerSecret::from_bytes(&[0u8; 31]).is_err());
    }

    #[test]
    fn well_formedness_is_the_minted_shape() {
        let good = PlainKey::generate();
        let body = &good.expose()[4..];
        assert!(PlainKey::from_caller(&format!("AIza{body}")).is_well_formed());
        for bad in [
            format!("AIzb{body}"),
            format!("AIza{}", &body[1..]),
            format!("AIza{body}A"),
            format!("AIza{}!", &body[1..]),
            format!("AIza{}.", &body[1..]),
            format!("AIza{}=", &body[1..]),
            format!("AIza{}é", &body[2..]),
            String::new(),
        ] {
            assert!(!PlainKey::from_caller(&bad).is_well_formed(), "{bad:?}");
        }
        // Every alphabet symbol is accepted, and only those.
        for b in 0u8..=127 {
            let key = format!("AIza{}{}", &body[1..], b as char);
            let want = ALPHABET.contains(&b);
            assert_eq!(PlainKey::from_caller(&key).is_well_formed(), want, "{b}");
        }
    }

    #[test]
    fn mac_matches_a_freshly_keyed_hmac() {
        // The pre-keyed state gives the same MAC as keying HMAC per call, every time.
        let raw = [9u8; 32];
        let s = ServerSecret::from_bytes(&raw).unwrap();
        let mut derive = <Hmac<Sha256> as Mac>::new_from_slice(&raw).unwrap();
        derive.update(b"keyplane/api-key-lookup/v1");
        let mac_key = derive.finalize().into_bytes();
        for data in [&b""[..], b"a", b"AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe"] {
            let mut fresh = <Hmac<Sha256> as Mac>::new_from_slice(&mac_key).unwrap();
            fresh.update(data);
            let want: [u8; 32] = fresh.finalize().into_bytes().into();
            assert_eq!(s.mac(data), want);
            assert_eq!(s.mac(data), want);
        }
    }

    #[test]
    fn caller_keys_are_trimmed() {
        assert_eq!(PlainKey::from_caller("  AIzaX \n").expose(), "AIzaX");
    }
}
