//! The optional TOML configuration file: model aliases, local-backend settings and the
//! Gemini upstream.

use keyplane_auth::restrictions::IpNet;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The local model's id as the data plane lists it.
pub const LOCAL_MODEL_ID: &str = "smollm2-135m-instruct";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Alias -> model id (`gemini-2.5-flash = "smollm2-135m-instruct"`).
    pub aliases: BTreeMap<String, String>,
    pub local: LocalSettings,
    /// Peers whose `X-Forwarded-For` is believed (addresses or CIDR ranges), for server IP
    /// restrictions behind a reverse proxy. Empty: the socket's peer is the caller. The
    /// environment variable `KEYPLANE_TRUSTED_PROXIES` (comma-separated) replaces it.
    pub trusted_proxies: Vec<IpNet>,
    /// `[upstream]`: models answered by a Gemini-wire upstream with a server-held key.
    pub upstream: Option<UpstreamSettings>,
}

/// The environment variable that holds the upstream key unless `api_key_env` says otherwise.
pub const DEFAULT_UPSTREAM_KEY_ENV: &str = "KEYPLANE_UPSTREAM_API_KEY";

/// `[upstream]`: where the Gemini API is, which environment variable holds its key, and
/// which model ids it answers (they win over an alias of the same name).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSettings {
    /// The Gemini API root, without a version (`https://generativelanguage.googleapis.com`).
    pub base_url: String,
    /// The name of the environment variable holding the upstream key (never the key).
    pub api_key_env: String,
    /// Model ids served by the upstream, e.g. `["gemini-2.5-flash"]`.
    pub models: Vec<String>,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            base_url: keyplane_backends::upstream::DEFAULT_BASE_URL.to_owned(),
            api_key_env: DEFAULT_UPSTREAM_KEY_ENV.to_owned(),
            models: Vec::new(),
        }
    }
}

impl UpstreamSettings {
    /// The upstream key from `api_key_env`; its absence is a start-up error that names the
    /// variable (and never shows a value).
    pub fn api_key(&self) -> anyhow::Result<String> {
        match std::env::var(&self.api_key_env) {
            Ok(k) if !k.trim().is_empty() => Ok(k),
            Ok(_) => anyhow::bail!(
                "[upstream] needs the upstream Gemini API key in the environment variable {}, which is empty",
                self.api_key_env
            ),
            Err(std::env::VarError::NotPresent) => anyhow::bail!(
                "[upstream] needs the upstream Gemini API key in the environment variable {}, which is not set",
                self.api_key_env
            ),
            Err(std::env::VarError::NotUnicode(_)) => anyhow::bail!(
                "the environment variable {} does not hold a valid API key (not UTF-8)",
                self.api_key_env
            ),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalSettings {
    /// Requests generated at once.
    pub parallel: usize,
    /// Requests waiting beyond `parallel` before new ones get 503.
    pub queue: usize,
    /// Context length of each sequence, in tokens.
    pub context: u32,
}

impl Default for LocalSettings {
    fn default() -> Self {
        LocalSettings {
            parallel: 4,
            queue: 64,
            context: 2048,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        let aliases = [
            "gemini-2.5-flash",
            "gemini-2.5-pro",
            "gemini-2.0-flash",
            "gemini-flash-latest",
        ]
        .into_iter()
        .map(|a| (a.to_owned(), LOCAL_MODEL_ID.to_owned()))
        .collect();
        Settings {
            aliases,
            local: LocalSettings::default(),
            trusted_proxies: Vec::new(),
            upstream: None,
        }
    }
}

impl Settings {
    pub fn load(path: Option<&Path>) -> anyhow::Result<Settings> {
        let mut settings = Self::load_file(path)?;
        if let Some(list) = std::env::var_os("KEYPLANE_TRUSTED_PROXIES") {
            let list = list.to_string_lossy();
            settings.trusted_proxies = list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| s.parse::<IpNet>())
                .collect::<Result<_, _>>()
                .map_err(|e| anyhow::anyhow!("KEYPLANE_TRUSTED_PROXIES: {e}"))?;
        }
        Ok(settings)
    }

    fn load_file(path: Option<&Path>) -> anyhow::Result<Settings> {
        let Some(path) = path else {
            return Ok(Settings::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
        let mut settings: Settings = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("invalid config file {}: {e}", path.display()))?;
        if settings.aliases.is_empty() {
            settings.aliases = Settings::default().aliases;
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_table() {
        let s: Settings = toml::from_str(
            r#"
            [upstream]
            base_url = "http://127.0.0.1:18081"
            api_key_env = "MY_UPSTREAM_KEY"
            models = ["gemini-2.5-flash"]
            "#,
        )
        .unwrap();
        let u = s.upstream.unwrap();
        assert_eq!(u.base_url, "http://127.0.0.1:18081");
        assert_eq!(u.api_key_env, "MY_UPSTREAM_KEY");
        assert_eq!(u.models, ["gemini-2.5-flash"]);

        let s: Settings = toml::from_str("[upstream]\nmodels = [\"m\"]\n").unwrap();
        let u = s.upstream.unwrap();
        assert_eq!(u.base_url, "https://generativelanguage.googleapis.com");
        assert_eq!(u.api_key_env, DEFAULT_UPSTREAM_KEY_ENV);

        assert!(toml::from_str::<Settings>("").unwrap().upstream.is_none());
        assert!(toml::from_str::<Settings>("[upstream]\napi_key = \"AIza\"\n").is_err());
    }

    #[test]
    fn a_missing_key_names_its_variable() {
        let u = UpstreamSettings {
            api_key_env: "KEYPLANE_TEST_SURELY_UNSET_UPSTREAM_KEY".into(),
            ..UpstreamSettings::default()
        };
        let e = u.api_key().unwrap_err().to_string();
        assert!(e.contains("KEYPLANE_TEST_SURELY_UNSET_UPSTREAM_KEY"), "{e}");
    }
}
