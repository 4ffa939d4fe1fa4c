//! Where the CLI finds its credentials and its server.
//!
//! Credentials: `--credentials`, else `GOOGLE_APPLICATION_CREDENTIALS`, else
//! `$KEYPLANE_DATA_DIR/owner-credentials.json`, else `./keyplane-data/owner-credentials.json`.
//! Server: `--server`, else the server named by the credentials' `token_uri`; for the
//! Gemini API (which needs no credentials) `http://127.0.0.1:8080` when neither is there.

use crate::args::{Cli, Format};
use anyhow::{anyhow, Result};
use keyplane_client::credentials::server_base_from_token_uri;
use keyplane_client::{ClientError, ControlPlane, ServiceAccountCredentials};
use std::path::PathBuf;

pub const ENV_APPLICATION_CREDENTIALS: &str = "GOOGLE_APPLICATION_CREDENTIALS";
pub const ENV_DATA_DIR: &str = "KEYPLANE_DATA_DIR";
pub const DEFAULT_DATA_DIR: &str = "./keyplane-data";
pub const OWNER_CREDENTIALS_FILE: &str = "owner-credentials.json";
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// The global options every command sees.
pub struct Ctx {
    pub format: Format,
    credentials: Option<PathBuf>,
    server: Option<String>,
}

impl Ctx {
    pub fn new(cli: &Cli) -> Self {
        Ctx {
            format: cli.format,
            credentials: cli.credentials.clone(),
            server: cli.server.clone().filter(|s| !s.trim().is_empty()),
        }
    }

    pub fn json(&self) -> bool {
        self.format == Format::Json
    }

    /// The credentials file to use.
    pub fn credentials_path(&self) -> PathBuf {
        credentials_path(self.credentials.clone(), |name| std::env::var(name).ok())
    }

    /// A control-plane client, authenticated with the credentials file.
    pub fn control(&self) -> Result<ControlPlane> {
        let path = self.credentials_path();
        let creds = ServiceAccountCredentials::from_file(&path).map_err(|e| match e {
            ClientError::Credentials { ref reason, .. } if reason == "no such file" => anyhow!(
                "credentials file {} not found: the server writes owner-credentials.json into its data directory on its first start; pass --credentials FILE or set KEYPLANE_DATA_DIR",
                path.display()
            ),
            other => other.into(),
        })?;
        match &self.server {
            Some(url) => Ok(ControlPlane::new(url, creds)),
            None => ControlPlane::from_credentials(creds).map_err(|e| match e {
                ClientError::InvalidArgument(m) => anyhow!("{m} with --server URL"),
                other => other.into(),
            }),
        }
    }

    /// The Gemini API's base URL.
    pub fn data_plane_base(&self) -> String {
        if let Some(url) = &self.server {
            return url.clone();
        }
        // The credentials are optional here: only their token_uri is read.
        std::fs::read_to_string(self.credentials_path())
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|v| {
                v.get("token_uri")
                    .and_then(|t| t.as_str())
                    .and_then(server_base_from_token_uri)
            })
            .unwrap_or_else(|| DEFAULT_SERVER.to_owned())
    }
}

fn credentials_path(flag: Option<PathBuf>, env: impl Fn(&str) -> Option<String>) -> PathBuf {
    let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    if let Some(p) = flag {
        return p;
    }
    if let Some(p) = set(ENV_APPLICATION_CREDENTIALS) {
        return PathBuf::from(p);
    }
    let dir = set(ENV_DATA_DIR).unwrap_or_else(|| DEFAULT_DATA_DIR.to_owned());
    PathBuf::from(dir).join(OWNER_CREDENTIALS_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn credentials_precedence() {
        let all = [
            (ENV_APPLICATION_CREDENTIALS, "/gac.json"),
            (ENV_DATA_DIR, "/data"),
        ];
        assert_eq!(
            credentials_path(Some("/flag.json".into()), env(&all)),
            PathBuf::from("/flag.json")
        );
        assert_eq!(
            credentials_path(None, env(&all)),
            PathBuf::from("/gac.json")
        );
        assert_eq!(
            credentials_path(None, env(&[(ENV_DATA_DIR, "/data")])),
            PathBuf::from("/data/owner-credentials.json")
        );
        assert_eq!(
            credentials_path(None, env(&[(ENV_APPLICATION_CREDENTIALS, "")])),
            PathBuf::from("./keyplane-data/owner-credentials.json")
        );
    }
}
