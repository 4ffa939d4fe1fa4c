//! Service-account keys: minting key files, and turning a Bearer credential into a caller.

use axum::extract::FromRequestParts;
use http::request::Parts;
use keyplane_auth::jwt;
use keyplane_core::iam::Policy;
use keyplane_core::{now, ServiceAccount, ServiceAccountKey};
use keyplane_store::StoreError;
use keyplane_wire::cloud::ServiceAccountKeyFile;
use keyplane_wire::ApiError;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::RsaPrivateKey;
use std::sync::Arc;
use time::Duration;

use crate::app::AppState;

/// The universe Keyplane's key files name. Because it is not `googleapis.com`, google-auth
/// never sends a Keyplane credential to a Google host (no token calls to Google's token URL,
/// no Regional Access Boundary lookups); it signs its own JWTs, which Keyplane verifies.
pub const UNIVERSE_DOMAIN: &str = "keyplane.internal";

/// A new RSA-2048 key for `sa`: the record to store (public half only) and Google's JSON
/// key file to hand out once.
pub async fn mint_key_file(
    sa: &ServiceAccount,
    base_url: &str,
) -> Result<(ServiceAccountKey, ServiceAccountKeyFile), ApiError> {
    let private = tokio::task::spawn_blocking(|| RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048))
        .await
        .map_err(ApiError::internal_from)?
        .map_err(ApiError::internal_from)?;
    let public_pem = private
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(ApiError::internal_from)?;
    let private_pem = private
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(ApiError::internal_from)?;
    let t = now();
    // User-managed keys do not expire (Google shows 9999-12-31).
    let valid_before = time::macros::datetime!(9999-12-31 23:59:59 UTC);
    // Only the public half is kept: as a self-signed certificate, which IAM's keys.get
    // serves (publicKeyType=TYPE_X509_PEM_FILE) as Google does.
    let certificate = crate::controlplane::iam::self_signed_certificate(
        &private,
        &sa.email,
        t,
        valid_before,
    )
    .unwrap_or_else(|e| {
        tracing::warn!(cause = ?e.cause, "could not make a key certificate; keeping the public key");
        public_pem
    });
    let record = ServiceAccountKey {
        key_id: keyplane_core::new_hex_id(20),
        service_account_email: sa.email.clone(),
        public_key_pem: certificate,
        disabled: false,
        valid_after: t,
        valid_before,
        create_time: t,
    };
    let file = ServiceAccountKeyFile::new(
        &sa.project_id,
        &record.key_id,
        private_pem.as_str(),
        &sa.email,
        &sa.unique_id,
        &format!("{base_url}/token"),
        UNIVERSE_DOMAIN,
    );
    Ok((record, file))
}

/// Who is calling the control plane.
#[derive(Debug, Clone)]
pub struct Caller {
    /// `serviceAccount:{email}` or `user:{email}`.
    pub principal: String,
}

fn missing_credentials() -> ApiError {
    ApiError::unauthenticated(
        "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
        "CREDENTIALS_MISSING",
    )
}

fn invalid_credentials(reason: &str) -> ApiError {
    ApiError::unauthenticated(
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
        reason,
    )
}

/// The Bearer token of a request, if any.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl AppState {
    /// A service account through the directory cache (`None`: there is no such account).
    pub async fn account(&self, email: &str) -> Result<Option<Arc<ServiceAccount>>, ApiError> {
        if let Some(cached) = self.directory.account(email) {
            return Ok(cached);
        }
        let generation = self.directory.generation();
        let found = match self.store.service_account(email).await {
            Ok(sa) => Some(sa),
            Err(StoreError::NotFound) => None,
            Err(e) => return Err(ApiError::internal_from(e)),
        };
        Ok(self.directory.put_account(email, found, generation))
    }

    /// The IAM policy set on `resource` itself, through the directory cache.
    pub async fn own_policy(&self, resource: &str) -> Result<Option<Arc<Policy>>, ApiError> {
        if let Some(cached) = self.directory.policy(resource) {
            return Ok(cached);
        }
        let generation = self.directory.generation();
        let found = self
            .store
            .iam_policy(resource)
            .await
            .map_err(ApiError::internal_from)?;
        Ok(self.directory.put_policy(resource, found, generation))
    }

    /// The enabled service account behind a verified credential, or 401.
    async fn enabled_account(&self, email: &str) -> Result<Arc<ServiceAccount>, ApiError> {
        match self.account(email).await? {
            Some(sa) if !sa.disabled => Ok(sa),
            _ => Err(invalid_credentials("ACCOUNT_STATE_INVALID")),
        }
    }

    /// Verifies an RS256 JWT signed with a service-account key this server issued.
    pub async fn verify_service_account_jwt(
        &self,
        token: &str,
    ) -> Result<(Arc<ServiceAccount>, jwt::Claims), jwt::JwtError> {
        let unverified = jwt::decode(token)?;
        let kid = unverified.key_id()?.to_owned();
        let key = match self.store.service_account_key(&kid).await {
            Ok(k) => k,
            Err(_) => return Err(jwt::JwtError::Signature),
        };
        let t = now();
        if key.disabled || t < key.valid_after || t > key.valid_before {
            return Err(jwt::JwtError::Signature);
        }
        let public = crate::controlplane::iam::stored_public_key(&key.public_key_pem)
            .ok_or(jwt::JwtError::BadPublicKey)?;
        let claims = unverified.verify(&public, t.unix_timestamp())?;
        if claims.iss != key.service_account_email {
            return Err(jwt::JwtError::Signature);
        }
        match self.account(&key.service_account_email).await {
            Ok(Some(sa)) if !sa.disabled => Ok((sa, claims)),
            _ => Err(jwt::JwtError::Signature),
        }
    }

    /// Resolves a Bearer credential: an access token minted at `/token`, or a self-signed
    /// JWT as Google's client libraries send (audience a Google API host, or a scope).
    pub async fn caller_from_bearer(&self, token: &str) -> Result<Caller, ApiError> {
        if token.matches('.').count() == 2 && !token.starts_with("ya29.") {
            let (sa, claims) =
                self.verify_service_account_jwt(token)
                    .await
                    .map_err(|e| match e {
                        jwt::JwtError::Timeframe => invalid_credentials("ACCESS_TOKEN_EXPIRED"),
                        _ => invalid_credentials("ACCESS_TOKEN_TYPE_UNSUPPORTED"),
                    })?;
            let audience_ok = match claims.aud.as_deref() {
                Some(aud) => {
                    aud.starts_with("https://")
                        && aud.trim_end_matches('/').ends_with(".googleapis.com")
                        || aud.starts_with(&self.base_url)
                }
                None => claims.scope.as_deref().is_some_and(|s| !s.is_empty()),
            };
            if !audience_ok {
                return Err(invalid_credentials("ACCESS_TOKEN_TYPE_UNSUPPORTED"));
            }
            return Ok(Caller {
                principal: format!("serviceAccount:{}", sa.email),
            });
        }
        let hash = self.secret.mac(token.as_bytes());
        let t = now();
        let record = match self.tokens.get(&hash, t) {
            Some(r) => r,
            None => match self.store.access_token(&hash).await {
                Ok(r) if r.expire_time > t => {
                    self.tokens.insert(r.clone());
                    r
                }
                Ok(_) => return Err(invalid_credentials("ACCESS_TOKEN_EXPIRED")),
                Err(StoreError::NotFound) => {
                    return Err(invalid_credentials("ACCESS_TOKEN_TYPE_UNSUPPORTED"))
                }
                Err(e) => return Err(ApiError::internal_from(e)),
            },
        };
        if let Some(email) = record.principal.strip_prefix("serviceAccount:") {
            let sa = self.enabled_account(email).await?;
            // A token minted for an earlier (deleted) account of the same email.
            if record.expire_time - keyplane_auth::tokens::TOKEN_LIFETIME < sa.create_time {
                return Err(invalid_credentials("ACCOUNT_STATE_INVALID"));
            }
        }
        if let Some(email) = record.principal.strip_prefix("user:") {
            // Tokens of disabled (or removed) users are refused.
            match self.store.user(email).await {
                Ok(u) if !u.disabled => {}
                Ok(_) | Err(StoreError::NotFound) => {
                    self.tokens.revoke_principal(&record.principal);
                    return Err(invalid_credentials("ACCOUNT_STATE_INVALID"));
                }
                Err(e) => return Err(ApiError::internal_from(e)),
            }
        }
        Ok(Caller {
            principal: record.principal,
        })
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or_else(missing_credentials)?.to_owned();
        let caller = state.caller_from_bearer(&token).await?;
        // The audit log records who made a mutation (see crate::audit).
        if let Some(slot) = parts.extensions.get::<crate::audit::PrincipalSlot>() {
            slot.set(&caller.principal);
        }
        Ok(caller)
    }
}

/// How long after expiry a stored token is purged.
pub const TOKEN_PURGE_GRACE: Duration = Duration::hours(1);
