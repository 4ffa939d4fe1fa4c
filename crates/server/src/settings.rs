//! The optional TOML configuration file: model aliases and local-backend settings.

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
