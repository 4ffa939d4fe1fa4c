//! Response handling shared by the clients: only 200 is success (as google-genai holds),
//! anything else is a `google.rpc.Status`.

use crate::error::ClientError;
use serde::de::DeserializeOwned;

/// The user agent both clients send.
pub(crate) const USER_AGENT: &str = concat!("keyplane-client/", env!("CARGO_PKG_VERSION"));

/// Reads a response: 200 → the body as `T`, otherwise the `google.rpc.Status` as an error.
/// `what` names the call in decode errors (a method and a path, never a query string).
pub(crate) async fn read_json<T: DeserializeOwned>(
    resp: reqwest::Response,
    what: &str,
) -> Result<T, ClientError> {
    let code = resp.status().as_u16();
    let body = resp.bytes().await?;
    if code != 200 {
        return Err(ClientError::from_error_body(code, &body));
    }
    serde_json::from_slice(&body).map_err(|e| ClientError::decode(what, &e))
}

/// A base URL without its trailing slashes.
pub(crate) fn trim_base(base: &str) -> String {
    base.trim_end_matches('/').to_owned()
}
