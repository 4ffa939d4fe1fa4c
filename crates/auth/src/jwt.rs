//! RS256 JSON Web Tokens as Google's libraries send them: the JWT-bearer grant's assertion
//! and the self-signed access JWTs of GAPIC clients.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use rsa::RsaPublicKey;
use serde::Deserialize;
use sha2::Sha256;

/// The parts of a JWT header Keyplane reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Header {
    pub alg: String,
    #[serde(default)]
    pub kid: Option<String>,
}

/// Claims Google's libraries put in service-account JWTs.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    pub iss: String,
    #[serde(default)]
    pub sub: Option<String>,
    #[serde(default)]
    pub aud: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
    pub iat: i64,
    pub exp: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the JWT algorithm must be RS256")]
    Algorithm,
    #[error("the JWT has no key id")]
    NoKeyId,
    #[error("Invalid JWT Signature.")]
    Signature,
    #[error("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.")]
    Timeframe,
    #[error("the public key is unusable")]
    BadPublicKey,
}

/// A JWT split and decoded, not yet verified.
#[derive(Debug, Clone)]
pub struct Unverified<'a> {
    pub header: Header,
    pub claims: Claims,
    signed: &'a str,
    signature: Vec<u8>,
}

/// Splits and decodes a compact JWT without verifying it.
pub fn decode(token: &str) -> Result<Unverified<'_>, JwtError> {
    let mut parts = token.split('.');
    let (h, c, s) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(c), Some(s), None) => (h, c, s),
        _ => return Err(JwtError::Malformed),
    };
    let header: Header = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(h.trim_end_matches('='))
            .map_err(|_| JwtError::Malformed)?,
    )
    .map_err(|_| JwtError::Malformed)?;
    let claims: Claims = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(c.trim_end_matches('='))
            .map_err(|_| JwtError::Malformed)?,
    )
    .map_err(|_| JwtError::Malformed)?;
    let signature = URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| JwtError::Malformed)?;
    if header.alg != "RS256" {
        return Err(JwtError::Algorithm);
    }
    Ok(Unverified {
        header,
        claims,
        signed: &token[..h.len() + 1 + c.len()],
        signature,
    })
}

/// Parses a PEM public key (SPKI `PUBLIC KEY` or PKCS#1 `RSA PUBLIC KEY`).
pub fn parse_public_key(pem: &str) -> Result<RsaPublicKey, JwtError> {
    RsaPublicKey::from_public_key_pem(pem)
        .or_else(|_| RsaPublicKey::from_pkcs1_pem(pem))
        .map_err(|_| JwtError::BadPublicKey)
}

/// Longest lifetime accepted (Google: one hour), and clock skew tolerated.
pub const MAX_LIFETIME_SECS: i64 = 3600;
pub const SKEW_SECS: i64 = 300;

impl<'a> Unverified<'a> {
    /// Verifies the signature with `key` and the time window against `now` (unix seconds).
    pub fn verify(self, key: &RsaPublicKey, now: i64) -> Result<Claims, JwtError> {
        let vk = VerifyingKey::<Sha256>::new(key.clone());
        let sig =
            Signature::try_from(self.signature.as_slice()).map_err(|_| JwtError::Signature)?;
        vk.verify(self.signed.as_bytes(), &sig)
            .map_err(|_| JwtError::Signature)?;
        let c = self.claims;
        let lifetime = c.exp - c.iat;
        if lifetime <= 0
            || lifetime > MAX_LIFETIME_SECS + SKEW_SECS
            || c.iat > now + SKEW_SECS
            || c.exp < now - SKEW_SECS
        {
            return Err(JwtError::Timeframe);
        }
        Ok(c)
    }

    pub fn key_id(&self) -> Result<&str, JwtError> {
        self.header.kid.as_deref().ok_or(JwtError::NoKeyId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs1v15::SigningKey;
    use rsa::pkcs8::EncodePublicKey;
    use rsa::signature::{SignatureEncoding, Signer};
    use rsa::RsaPrivateKey;

    fn sign(key: &RsaPrivateKey, header: &str, claims: &str) -> String {
        let h = URL_SAFE_NO_PAD.encode(header);
        let c = URL_SAFE_NO_PAD.encode(claims);
        let msg = format!("{h}.{c}");
        let sig = SigningKey::<Sha256>::new(key.clone()).sign(msg.as_bytes());
        format!("{msg}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }

    #[test]
    fn verifies_signature_and_time() {
        let mut rng = rand::thread_rng();
        let key = RsaPrivateKey::new(&mut rng, 1024).unwrap();
        let other = RsaPrivateKey::new(&mut rng, 1024).unwrap();
        let pem = key
            .to_public_key()
            .to_public_key_pem(Default::default())
            .unwrap();
        let pubkey = parse_public_key(&pem).unwrap();
        let now = 1_700_000_000;
        let claims = format!(
            r#"{{"iss": "a@b.iam.gserviceaccount.com", "aud": "https://oauth2.googleapis.com/token", "scope": "", "iat": {now}, "exp": {}}}"#,
            now + 3600
        );
        let header = r#"{"typ": "JWT", "alg": "RS256", "kid": "abc"}"#;
        let good = sign(&key, header, &claims);
        let d = decode(&good).unwrap();
        assert_eq!(d.key_id().unwrap(), "abc");
        assert_eq!(
            d.verify(&pubkey, now).unwrap().iss,
            "a@b.iam.gserviceaccount.com"
        );
        // Expired.
        assert_eq!(
            decode(&good)
                .unwrap()
                .verify(&pubkey, now + 7200)
                .unwrap_err(),
            JwtError::Timeframe
        );
        // Signed by another key.
        let forged = sign(&other, header, &claims);
        assert_eq!(
            decode(&forged).unwrap().verify(&pubkey, now).unwrap_err(),
            JwtError::Signature
        );
        // Tampered claims.
        let mut parts: Vec<&str> = good.split('.').collect();
        let evil = URL_SAFE_NO_PAD.encode(claims.replace("a@b", "x@b"));
        parts[1] = &evil;
        assert_eq!(
            decode(&parts.join("."))
                .unwrap()
                .verify(&pubkey, now)
                .unwrap_err(),
            JwtError::Signature
        );
        // Lifetime too long.
        let long = sign(
            &key,
            header,
            &format!(r#"{{"iss": "a", "iat": {now}, "exp": {}}}"#, now + 86400),
        );
        assert_eq!(
            decode(&long).unwrap().verify(&pubkey, now).unwrap_err(),
            JwtError::Timeframe
        );
        assert_eq!(decode("a.b").unwrap_err(), JwtError::Malformed);
        let hs = sign(&key, r#"{"alg": "HS256"}"#, &claims);
        assert_eq!(decode(&hs).unwrap_err(), JwtError::Algorithm);
    }
}
