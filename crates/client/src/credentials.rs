//! Service-account credentials from Google's JSON key file, and the OAuth 2.0 JWT-bearer
//! grant exactly as google-auth sends it (spec/gcp-control-plane.md §6.1):
//!
//! - header `{"typ": "JWT", "alg": "RS256", "kid": private_key_id}`;
//! - claims `{"iat", "exp": iat + 3600, "iss": client_email,
//!   "aud": "https://oauth2.googleapis.com/token", "scope": cloud-platform}`, with `aud`
//!   fixed to Google's token URL even when `token_uri` points elsewhere;
//! - JSON written as Python's `json.dumps` does (`": "` and `", "`), base64url without
//!   padding, signed RSASSA-PKCS1-v1_5 with SHA-256;
//! - `POST token_uri` with the form `assertion=…&grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`.
//!
//! The access token is cached until four minutes before it expires.

use crate::error::{ClientError, Secret};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::RsaPrivateKey;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::fmt;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;

/// The `aud` google-auth puts in every grant assertion.
pub const GOOGLE_TOKEN_AUDIENCE: &str = "https://oauth2.googleapis.com/token";
/// The scope the CLI asks for.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// The grant type of the JWT-bearer flow (RFC 7523).
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

const ASSERTION_LIFETIME_SECS: u64 = 3600;
/// Refresh this long before the token expires (google-auth uses 3m45s).
const REFRESH_MARGIN: Duration = Duration::from_secs(240);

/// The fields of a service-account key file the client uses.
#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    project_id: Option<String>,
    private_key_id: String,
    private_key: String,
    client_email: String,
    token_uri: String,
}

/// A service account's identity and signing key, with a cached access token.
pub struct ServiceAccountCredentials {
    client_email: String,
    private_key_id: String,
    project_id: Option<String>,
    token_uri: String,
    scope: String,
    signing_key: SigningKey<Sha256>,
    http: reqwest::Client,
    cached: Mutex<Option<CachedToken>>,
}

struct CachedToken {
    token: Secret,
    /// `None` when the server gave no `expires_in` (google-auth then never refreshes).
    refresh_at: Option<Instant>,
}

impl fmt::Debug for ServiceAccountCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountCredentials")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

impl ServiceAccountCredentials {
    /// Reads a Google service-account JSON key file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let path = path.as_ref();
        let bad = |reason: String| ClientError::Credentials {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            bad(match e.kind() {
                io::ErrorKind::NotFound => "no such file".to_owned(),
                _ => e.to_string(),
            })
        })?;
        Self::from_json(&text).map_err(|reason| bad(reason.to_owned()))
    }

    /// Parses the JSON text of a key file. The error says which part is wrong, never
    /// quoting the file.
    pub fn from_json(text: &str) -> Result<Self, &'static str> {
        let file: KeyFile = serde_json::from_str(text)
            .map_err(|_| "not a service-account JSON key file (type, private_key_id, private_key, client_email and token_uri are required)")?;
        if file.kind != "service_account" {
            return Err("the key file's type is not \"service_account\"");
        }
        let key = RsaPrivateKey::from_pkcs8_pem(&file.private_key)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(&file.private_key))
            .map_err(|_| "private_key is not an RSA private key in PEM (PKCS#8 or PKCS#1)")?;
        if reqwest::Url::parse(&file.token_uri).is_err() {
            return Err("token_uri is not a URL");
        }
        Ok(ServiceAccountCredentials {
            client_email: file.client_email,
            private_key_id: file.private_key_id,
            project_id: file.project_id,
            token_uri: file.token_uri,
            scope: CLOUD_PLATFORM_SCOPE.to_owned(),
            signing_key: SigningKey::<Sha256>::new(key),
            http: reqwest::Client::new(),
            cached: Mutex::new(None),
        })
    }

    /// Uses this HTTP client for the token request (shares its connection pool).
    pub fn with_http_client(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    /// Asks for these space-separated scopes instead of cloud-platform.
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = scope.into();
        self
    }

    pub fn client_email(&self) -> &str {
        &self.client_email
    }

    pub fn private_key_id(&self) -> &str {
        &self.private_key_id
    }

    pub fn project_id(&self) -> Option<&str> {
        self.project_id.as_deref()
    }

    pub fn token_uri(&self) -> &str {
        &self.token_uri
    }

    /// The server a Keyplane-issued key file belongs to: `token_uri` without its trailing
    /// `/token`. `None` for Google's own token endpoint or a URI of another shape.
    pub fn server_base_url(&self) -> Option<String> {
        server_base_from_token_uri(&self.token_uri)
    }

    /// A signed grant assertion for `now` (seconds since the Unix epoch).
    pub fn grant_assertion(&self, now: u64) -> String {
        #[derive(Serialize)]
        struct Header<'a> {
            typ: &'a str,
            alg: &'a str,
            kid: &'a str,
        }
        #[derive(Serialize)]
        struct Claims<'a> {
            iat: u64,
            exp: u64,
            iss: &'a str,
            aud: &'a str,
            scope: &'a str,
        }
        let header = python_json(&Header {
            typ: "JWT",
            alg: "RS256",
            kid: &self.private_key_id,
        });
        let claims = python_json(&Claims {
            iat: now,
            exp: now + ASSERTION_LIFETIME_SECS,
            iss: &self.client_email,
            aud: GOOGLE_TOKEN_AUDIENCE,
            scope: &self.scope,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let signature = self.signing_key.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        )
    }

    /// An access token, from the cache or from a fresh grant.
    pub async fn access_token(&self) -> Result<Secret, ClientError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            if c.refresh_at.is_none_or(|at| Instant::now() < at) {
                return Ok(c.token.clone());
            }
        }
        let fresh = self.fetch_token().await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    /// Forgets the cached token (after the server answered 401 to it).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn fetch_token(&self) -> Result<CachedToken, ClientError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let assertion = self.grant_assertion(now);
        let started = Instant::now();
        let resp = self
            .http
            .post(&self.token_uri)
            .form(&[
                ("assertion", assertion.as_str()),
                ("grant_type", JWT_BEARER_GRANT),
            ])
            .send()
            .await?;
        let http_status = resp.status().as_u16();
        let body = resp.bytes().await?;
        if http_status != 200 {
            #[derive(Deserialize, Default)]
            struct OAuthError {
                #[serde(default)]
                error: String,
                #[serde(default)]
                error_description: String,
            }
            let e: OAuthError = serde_json::from_slice(&body).unwrap_or_default();
            // A google.rpc.Status body is also possible from a proxy or an older server.
            if e.error.is_empty() {
                return Err(ClientError::from_error_body(http_status, &body));
            }
            return Err(ClientError::Token {
                http_status,
                error: e.error,
                description: e.error_description,
            });
        }
        parse_token_response(&body, started)
    }
}

/// `{"access_token", "expires_in" (int or numeric string), "token_type"}`.
fn parse_token_response(body: &[u8], started: Instant) -> Result<CachedToken, ClientError> {
    #[derive(Deserialize)]
    struct TokenResponse {
        #[serde(default)]
        access_token: Option<String>,
        #[serde(default)]
        expires_in: Option<serde_json::Value>,
    }
    let t: TokenResponse =
        serde_json::from_slice(body).map_err(|e| ClientError::decode("the token endpoint", &e))?;
    let token = t
        .access_token
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ClientError::Decode {
            what: "the token endpoint".to_owned(),
            detail: "No access token in response.".to_owned(),
        })?;
    let expires_in = t.expires_in.and_then(|v| match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    });
    Ok(CachedToken {
        token: Secret::new(token),
        refresh_at: expires_in
            .map(|secs| started + Duration::from_secs(secs).saturating_sub(REFRESH_MARGIN)),
    })
}

/// `http://host:port/token` → `http://host:port` (a path prefix before `/token` is kept).
pub fn server_base_from_token_uri(token_uri: &str) -> Option<String> {
    let url = reqwest::Url::parse(token_uri).ok()?;
    let host = url.host_str()?;
    if host == "googleapis.com" || host.ends_with(".googleapis.com") {
        return None;
    }
    let base = url.as_str().split(['?', '#']).next()?;
    let base = base.strip_suffix("/token")?;
    Some(base.to_owned())
}

/// JSON as Python's `json.dumps` writes it by default: `", "` between items and `": "`
/// after keys.
fn python_json<T: Serialize>(value: &T) -> Vec<u8> {
    struct PythonFormatter;
    impl serde_json::ser::Formatter for PythonFormatter {
        fn begin_array_value<W: ?Sized + io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> io::Result<()> {
            if first {
                Ok(())
            } else {
                w.write_all(b", ")
            }
        }
        fn begin_object_key<W: ?Sized + io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> io::Result<()> {
            if first {
                Ok(())
            } else {
                w.write_all(b", ")
            }
        }
        fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
            w.write_all(b": ")
        }
    }
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    value
        .serialize(&mut ser)
        .expect("serializing plain structs to memory cannot fail");
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rsa::pkcs1v15::{Signature, VerifyingKey};
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    use rsa::signature::Verifier;
    use rsa::RsaPublicKey;
    use std::sync::OnceLock;

    /// One RSA key for all tests (generation is the slow part).
    pub(crate) fn test_key() -> &'static RsaPrivateKey {
        static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
        KEY.get_or_init(|| RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap())
    }

    pub(crate) fn key_file_json(token_uri: &str) -> String {
        let pem = test_key().to_pkcs8_pem(LineEnding::LF).unwrap();
        serde_json::json!({
            "type": "service_account",
            "project_id": "keyplane-admin",
            "private_key_id": "0123456789abcdef0123456789abcdef01234567",
            "private_key": pem.as_str(),
            "client_email": "owner@keyplane-admin.iam.gserviceaccount.com",
            "client_id": "123456789012345678901",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": "",
            "universe_domain": "googleapis.com"
        })
        .to_string()
    }

    fn b64json(part: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn grant_assertion_has_google_auth_shape_and_verifies() {
        let creds =
            ServiceAccountCredentials::from_json(&key_file_json("http://127.0.0.1:8080/token"))
                .unwrap();
        let jwt = creds.grant_assertion(1_700_000_000);
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert!(!jwt.contains('='), "base64url without padding");

        // Exactly Python's json.dumps output, keys in google-auth's order.
        let header = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(
            header,
            r#"{"typ": "JWT", "alg": "RS256", "kid": "0123456789abcdef0123456789abcdef01234567"}"#
        );
        let claims = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims,
            r#"{"iat": 1700000000, "exp": 1700003600, "iss": "owner@keyplane-admin.iam.gserviceaccount.com", "aud": "https://oauth2.googleapis.com/token", "scope": "https://www.googleapis.com/auth/cloud-platform"}"#
        );
        let c = b64json(parts[1]);
        assert_eq!(
            c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(),
            3600
        );

        let public = RsaPublicKey::from(test_key());
        let verifier = VerifyingKey::<Sha256>::new(public);
        let sig =
            Signature::try_from(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().as_slice()).unwrap();
        verifier
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .expect("signature verifies with the public key");
        assert!(verifier
            .verify(format!("{}.{}x", parts[0], parts[1]).as_bytes(), &sig)
            .is_err());
    }

    #[test]
    fn key_file_errors_do_not_quote_the_file() {
        let mut v: serde_json::Value =
            serde_json::from_str(&key_file_json("http://h/token")).unwrap();
        v["private_key"] =
            "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n".into();
        let err = ServiceAccountCredentials::from_json(&v.to_string()).unwrap_err();
        assert!(err.contains("private_key"));
        v["type"] = "authorized_user".into();
        assert!(ServiceAccountCredentials::from_json(&v.to_string()).is_err());
        assert!(ServiceAccountCredentials::from_json("{}").is_err());
    }

    #[test]
    fn debug_hides_the_private_key() {
        let creds = ServiceAccountCredentials::from_json(&key_file_json("http://h/token")).unwrap();
        let shown = format!("{creds:?}");
        assert!(shown.contains("owner@keyplane-admin"));
        assert!(!shown.contains("PRIVATE"));
    }

    #[test]
    fn server_base_comes_from_token_uri() {
        assert_eq!(
            server_base_from_token_uri("http://127.0.0.1:8080/token").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            server_base_from_token_uri("https://kp.example.com/prefix/token").as_deref(),
            Some("https://kp.example.com/prefix")
        );
        assert_eq!(
            server_base_from_token_uri("https://oauth2.googleapis.com/token"),
            None
        );
        assert_eq!(server_base_from_token_uri("http://h/oauth"), None);
    }

    #[test]
    fn token_responses() {
        let t = parse_token_response(
            br#"{"access_token":"ya29.x","expires_in":"3599","token_type":"Bearer"}"#,
            Instant::now(),
        )
        .unwrap();
        assert_eq!(t.token.expose(), "ya29.x");
        let left = t.refresh_at.unwrap() - Instant::now();
        assert!(left > Duration::from_secs(3300) && left <= Duration::from_secs(3359));
        let t = parse_token_response(br#"{"access_token":"a"}"#, Instant::now()).unwrap();
        assert!(t.refresh_at.is_none());
        assert!(parse_token_response(br#"{"expires_in":3599}"#, Instant::now()).is_err());
    }
}
