//! OAuth access tokens minted at `/token`. The plain token exists only in the response;
//! the store and the in-memory cache hold its HMAC.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use keyplane_core::{AccessToken, ServerSecret};
use parking_lot::RwLock;
use rand::rngs::OsRng;
use rand::RngCore;
use std::collections::HashMap;
use std::fmt;
use time::{Duration, OffsetDateTime};

/// How long a minted token lives (Google: one hour, answered as `expires_in: 3599`).
pub const TOKEN_LIFETIME: Duration = Duration::seconds(3599);

/// A plain access token; `Debug` never shows it.
pub struct PlainToken(String);

impl PlainToken {
    pub fn generate() -> Self {
        let mut buf = [0u8; 48];
        OsRng.fill_bytes(&mut buf);
        PlainToken(format!("ya29.kp.{}", URL_SAFE_NO_PAD.encode(buf)))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PlainToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlainToken(<redacted>)")
    }
}

/// In-memory cache of live access tokens, in front of the store.
#[derive(Default)]
pub struct TokenCache {
    by_hash: RwLock<HashMap<[u8; 32], AccessToken>>,
}

impl TokenCache {
    /// Mints a token for `principal`; returns the plain token and the record to persist.
    pub fn mint(
        &self,
        secret: &ServerSecret,
        principal: &str,
        scope: &str,
        now: OffsetDateTime,
    ) -> (PlainToken, AccessToken) {
        let plain = PlainToken::generate();
        let hash = secret.mac(plain.expose().as_bytes());
        let record = AccessToken {
            token_hash: hash.to_vec(),
            principal: principal.to_owned(),
            scope: scope.to_owned(),
            expire_time: now + TOKEN_LIFETIME,
        };
        self.insert(record.clone());
        (plain, record)
    }

    pub fn insert(&self, token: AccessToken) {
        if let Ok(hash) = <[u8; 32]>::try_from(token.token_hash.as_slice()) {
            self.by_hash.write().insert(hash, token);
        }
    }

    /// A live token from the cache; expired ones are dropped.
    pub fn get(&self, hash: &[u8; 32], now: OffsetDateTime) -> Option<AccessToken> {
        let found = self.by_hash.read().get(hash).cloned()?;
        if found.expire_time <= now {
            self.by_hash.write().remove(hash);
            return None;
        }
        Some(found)
    }

    /// Forgets every token of a principal (a disabled or deleted account).
    pub fn revoke_principal(&self, principal: &str) {
        self.by_hash.write().retain(|_, t| t.principal != principal);
    }

    pub fn purge_expired(&self, now: OffsetDateTime) {
        self.by_hash.write().retain(|_, t| t.expire_time > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_are_found_until_they_expire() {
        let secret = ServerSecret::from_bytes(&ServerSecret::generate()).unwrap();
        let cache = TokenCache::default();
        let now = OffsetDateTime::now_utc();
        let (plain, rec) = cache.mint(&secret, "serviceAccount:a@b", "", now);
        assert!(!format!("{plain:?}").contains(plain.expose()));
        let hash = secret.mac(plain.expose().as_bytes());
        assert_eq!(hash.to_vec(), rec.token_hash);
        assert!(cache.get(&hash, now).is_some());
        assert!(cache.get(&hash, now + Duration::hours(2)).is_none());
        assert!(
            cache.get(&hash, now).is_none(),
            "expired tokens are dropped"
        );
        let (p2, _) = cache.mint(&secret, "serviceAccount:a@b", "", now);
        cache.revoke_principal("serviceAccount:a@b");
        assert!(cache
            .get(&secret.mac(p2.expose().as_bytes()), now)
            .is_none());
    }
}
