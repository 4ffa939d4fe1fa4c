//! People (`user:{email}`), Keyplane-specific: the admin API under `/v1/keyplane/users`
//! and sign-in at `POST /v1/keyplane/auth:signIn`.
//!
//! - `GET /v1/keyplane/users`: every user (needs `resourcemanager.organizations.getIamPolicy`
//!   on the organization).
//! - `POST /v1/keyplane/users` `{email, password, displayName}`,
//!   `POST /v1/keyplane/users/{email}:disable` and `:enable` (need
//!   `resourcemanager.organizations.setIamPolicy`: whoever can grant roles can make people).
//! - `POST /v1/keyplane/auth:signIn` `{email, password}` answers an access token as `/token`
//!   does. A wrong password, a disabled user and an unknown user get the same 401, after
//!   the same amount of work (unknown users are verified against a dummy hash).
//!
//! Passwords are hashed with Argon2id (the `argon2` crate's defaults) and never logged.
//! Disabling a user forgets its tokens (cache and store); `caller_from_bearer` also
//! refuses the tokens of disabled users.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use keyplane_auth::tokens::TOKEN_LIFETIME;
use keyplane_core::{now, rfc3339, User};
use keyplane_store::StoreError;
use keyplane_wire::cloud::TokenResponse;
use keyplane_wire::{parse_json_body, ApiError};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

use super::{split_verb, store_error};
use crate::app::AppState;
use crate::authz::{self, Resource};
use crate::identity::Caller;

pub const MANAGE_PERMISSION: &str = "resourcemanager.organizations.setIamPolicy";
pub const LIST_PERMISSION: &str = "resourcemanager.organizations.getIamPolicy";
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longer passwords are refused (hashing cost is bounded).
pub const MAX_PASSWORD_LEN: usize = 1024;
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/keyplane/users", get(list).post(create))
        .route("/v1/keyplane/users/{name}", post(verb))
        .route("/v1/keyplane/auth:signIn", post(sign_in))
}

/// A normalized (lowercased, trimmed) email, or a field violation.
pub fn normalize_email(email: &str) -> Result<String, ApiError> {
    let e = email.trim().to_lowercase();
    let ok = e.len() <= 254
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
        })
        && e.matches('@').count() == 1
        && !e
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | ':' | '?' | '#'));
    if ok {
        Ok(e)
    } else {
        Err(ApiError::bad_request_fields(vec![(
            "email",
            format!("Invalid value \"{}\": not an email address.", email.trim()),
        )]))
    }
}

fn check_password(password: &str) -> Result<(), ApiError> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_LEN || password.len() > MAX_PASSWORD_LEN {
        return Err(ApiError::bad_request_fields(vec![(
            "password",
            format!("A password must be {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters long."),
        )]));
    }
    Ok(())
}

/// An Argon2id PHC string for `password`, computed off the async threads.
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| ApiError::internal_from(format!("hashing a password: {e}")))
    })
    .await
    .map_err(ApiError::internal_from)?
}

/// Whether `password` matches the PHC string `hash` (false for unreadable hashes).
pub async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

/// A hash of a random password: what unknown users are verified against, so that they
/// take as long as known ones.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        let random = keyplane_core::new_hex_id(32);
        Argon2::default()
            .hash_password(random.as_bytes(), &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserJson {
    name: String,
    email: String,
    display_name: String,
    disabled: bool,
    create_time: String,
    update_time: String,
}

impl From<&User> for UserJson {
    fn from(u: &User) -> Self {
        UserJson {
            name: format!("users/{}", u.email),
            email: u.email.clone(),
            display_name: u.display_name.clone(),
            disabled: u.disabled,
            create_time: rfc3339(u.create_time),
            update_time: rfc3339(u.update_time.max(u.create_time)),
        }
    }
}

#[derive(Debug, Serialize)]
struct ListUsersResponse {
    users: Vec<UserJson>,
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ListUsersResponse>, ApiError> {
    authz::require(&state, &caller, LIST_PERMISSION, &Resource::Organization).await?;
    let users = state.store.list_users().await.map_err(store_error)?;
    Ok(Json(ListUsersResponse {
        users: users.iter().map(UserJson::from).collect(),
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateUser {
    email: String,
    password: String,
    #[serde(default, alias = "display_name")]
    display_name: Option<String>,
}

// Never derive Debug on bodies holding a password.
impl std::fmt::Debug for CreateUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateUser")
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<UserJson>, ApiError> {
    authz::require(&state, &caller, MANAGE_PERMISSION, &Resource::Organization).await?;
    let req: CreateUser = parse_json_body(&body)?;
    let email = normalize_email(&req.email)?;
    check_password(&req.password)?;
    let display_name = req.display_name.unwrap_or_default();
    if display_name.chars().count() > 100 {
        return Err(ApiError::bad_request_fields(vec![(
            "display_name",
            "A display name is at most 100 characters long.",
        )]));
    }
    let password_hash = hash_password(req.password).await?;
    let t = now();
    let user = User {
        email,
        display_name,
        password_hash,
        disabled: false,
        create_time: t,
        update_time: t,
    };
    state.store.create_user(&user).await.map_err(store_error)?;
    tracing::info!(user = %user.email, by = %caller.principal, "created a user");
    Ok(Json(UserJson::from(&user)))
}

async fn verb(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<UserJson>, ApiError> {
    let (segments, verb) = split_verb(&name);
    let disable = match verb.as_deref() {
        Some("disable") => true,
        Some("enable") => false,
        _ => {
            return Err(ApiError::not_found(format!(
                "The requested URL /v1/keyplane/users/{name} was not found on this server."
            )))
        }
    };
    authz::require(&state, &caller, MANAGE_PERMISSION, &Resource::Organization).await?;
    let [email] = segments.as_slice() else {
        return Err(ApiError::not_found("Requested entity was not found."));
    };
    let email = normalize_email(email)?;
    let mut user = state.store.user(&email).await.map_err(store_error)?;
    if user.disabled != disable {
        user.disabled = disable;
        user.update_time = now();
        state.store.update_user(&user).await.map_err(store_error)?;
    }
    if disable {
        let principal = format!("user:{email}");
        state.tokens.revoke_principal(&principal);
        state
            .store
            .delete_access_tokens_of(&principal)
            .await
            .map_err(store_error)?;
    }
    Ok(Json(UserJson::from(&user)))
}

#[derive(Deserialize)]
struct SignIn {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

fn sign_in_refused() -> ApiError {
    ApiError::unauthenticated(
        "The email address or password is not correct, or the account is disabled.",
        "INVALID_CREDENTIALS",
    )
}

async fn sign_in(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<TokenResponse>, ApiError> {
    let req: SignIn = parse_json_body(&body)?;
    let email = req.email.trim().to_lowercase();
    let found = if email.is_empty() {
        Err(StoreError::NotFound)
    } else {
        state.store.user(&email).await
    };
    let user = match found {
        Ok(u) => Some(u),
        Err(StoreError::NotFound) => None,
        Err(e) => return Err(store_error(e)),
    };
    // Same work whether or not the user exists.
    let hash = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(|| dummy_hash().to_owned());
    let password = if req.password.len() > MAX_PASSWORD_LEN {
        String::new()
    } else {
        req.password
    };
    let matches = verify_password(password, hash).await;
    let Some(user) = user.filter(|u| matches && !u.disabled) else {
        return Err(sign_in_refused());
    };
    let (plain, record) =
        state
            .tokens
            .mint(&state.secret, &format!("user:{}", user.email), SCOPE, now());
    state.store.put_access_token(&record).await.map_err(|e| {
        tracing::error!(error = %e, "could not persist an access token");
        ApiError::internal_from(e)
    })?;
    Ok(Json(TokenResponse::bearer(
        plain.expose(),
        TOKEN_LIFETIME.whole_seconds(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(
            normalize_email(" Alice@Example.COM ").unwrap(),
            "alice@example.com"
        );
        for bad in [
            "",
            "alice",
            "@example.com",
            "a@b",
            "a b@example.com",
            "a@@x.com",
            "a/b@x.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_have_a_minimum_length() {
        assert!(check_password("1234567").is_err());
        assert!(check_password("12345678").is_ok());
    }

    #[tokio::test]
    async fn hashes_verify_only_their_password() {
        let h = hash_password("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse".into(), h.clone()).await);
        assert!(!verify_password("wrong horse".into(), h).await);
        assert!(!verify_password("x".into(), dummy_hash().to_owned()).await);
    }
}
