//! `POST /token`: the OAuth 2.0 JWT-bearer grant (RFC 7523) exactly as google-auth sends
//! it for a service-account key file whose `token_uri` points here.
//!
//! Errors use the OAuth JSON form (`{"error": "invalid_grant", "error_description": …}`)
//! with the descriptions Google's token endpoint uses, because that is what google-auth
//! parses.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use keyplane_auth::jwt::JwtError;
use keyplane_auth::tokens::TOKEN_LIFETIME;
use keyplane_core::now;
use keyplane_wire::cloud::{OAuthError, TokenResponse};
use serde::Deserialize;

use crate::app::AppState;

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The audience google-auth puts in the assertion for Google's own endpoint.
const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const DEFAULT_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

pub fn router() -> Router<AppState> {
    Router::new().route("/token", post(token))
}

#[derive(Debug, Default, Deserialize)]
struct GrantForm {
    #[serde(default)]
    grant_type: Option<String>,
    #[serde(default)]
    assertion: Option<String>,
}

async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<TokenResponse>, OAuthError> {
    let form: GrantForm = if is_json(&headers) {
        serde_json::from_slice(&body)
            .map_err(|_| OAuthError::invalid_request("The request body is not valid JSON."))?
    } else {
        serde_urlencoded::from_bytes(&body)
            .map_err(|_| OAuthError::invalid_request("The request body is not a valid form."))?
    };
    match form.grant_type.as_deref() {
        Some(JWT_BEARER) => {}
        None | Some("") => {
            return Err(OAuthError::invalid_request(
                "Missing required parameter: grant_type",
            ))
        }
        Some(_) => return Err(OAuthError::unsupported_grant_type("Invalid grant_type: ")),
    }
    let assertion = form
        .assertion
        .filter(|a| !a.is_empty())
        .ok_or_else(|| OAuthError::invalid_request("Missing required parameter: assertion"))?;

    let (sa, claims) = state
        .verify_service_account_jwt(&assertion)
        .await
        .map_err(|e| match e {
            JwtError::Timeframe => OAuthError::invalid_grant(JwtError::Timeframe.to_string()),
            JwtError::Malformed | JwtError::NoKeyId | JwtError::Algorithm => {
                OAuthError::invalid_grant("Invalid JWT: the assertion is malformed.")
            }
            // Unknown key id, disabled key or account, wrong signature: one answer, so a
            // caller learns nothing about which.
            JwtError::Signature | JwtError::BadPublicKey => {
                OAuthError::invalid_grant("Invalid JWT Signature.")
            }
        })?;
    let own = format!("{}/token", state.base_url);
    match claims.aud.as_deref() {
        Some(aud) if aud == GOOGLE_TOKEN_URI || aud == own || aud.ends_with("/token") => {}
        _ => {
            return Err(OAuthError::invalid_grant(
                "Invalid JWT: the audience must be the token endpoint.",
            ))
        }
    }
    if let Some(sub) = claims.sub.as_deref() {
        if sub != sa.email {
            return Err(OAuthError::new(
                "unauthorized_client",
                "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.",
            ));
        }
    }
    let scope = claims
        .scope
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_SCOPE.to_owned());
    let (plain, record) = state.tokens.mint(
        &state.secret,
        &format!("serviceAccount:{}", sa.email),
        &scope,
        now(),
    );
    state.store.put_access_token(&record).await.map_err(|e| {
        tracing::error!(error = %e, "could not persist an access token");
        OAuthError::server_error()
    })?;
    Ok(Json(TokenResponse::bearer(
        plain.expose(),
        TOKEN_LIFETIME.whole_seconds(),
    )))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}
