//! The optional TOML configuration file: model aliases, local-backend settings, the
//! Gemini upstream, quota limits per tier and model, and how usage is kept.

use keyplane_auth::quota::QuotaTable;
use keyplane_auth::restrictions::IpNet;
use keyplane_core::quota::{Limits, Tier};
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
    /// `[quota.{tier}]`: the limits of a tier (`free`, `tier-1`, `tier-2`, `tier-3`) in place
    /// of Google's published ones, and `[quota.{tier}.models."{model}"]` for one model.
    pub quota: BTreeMap<String, TierQuotaSettings>,
    /// `[usage]`: how often usage buckets are written, and how long they are kept.
    pub usage: UsageSettings,
}

/// A limit as the configuration file writes it: a count, or `"unlimited"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "LimitText")]
pub struct LimitValue(pub Option<u64>);

#[derive(Deserialize)]
#[serde(untagged)]
enum LimitText {
    Count(u64),
    Word(String),
}

impl TryFrom<LimitText> for LimitValue {
    type Error = String;
    fn try_from(t: LimitText) -> Result<Self, String> {
        match t {
            LimitText::Count(n) => Ok(LimitValue(Some(n))),
            LimitText::Word(w) if w == "unlimited" => Ok(LimitValue(None)),
            LimitText::Word(w) => Err(format!(
                "a quota limit is a non-negative integer or \"unlimited\", not {w:?}"
            )),
        }
    }
}

/// Limits that replace some of another set's (unset ones are inherited).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Requests per minute.
    pub rpm: Option<LimitValue>,
    /// Input tokens per minute.
    pub tpm: Option<LimitValue>,
    /// Requests per day (UTC).
    pub rpd: Option<LimitValue>,
}

impl LimitSettings {
    fn over(&self, base: Limits) -> Limits {
        Limits {
            rpm: self.rpm.map_or(base.rpm, |v| v.0),
            tpm: self.tpm.map_or(base.tpm, |v| v.0),
            rpd: self.rpd.map_or(base.rpd, |v| v.0),
        }
    }
}

/// `[quota.{tier}]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TierQuotaSettings {
    pub rpm: Option<LimitValue>,
    pub tpm: Option<LimitValue>,
    pub rpd: Option<LimitValue>,
    /// Model id (as callers name it) -> its limits in this tier.
    pub models: BTreeMap<String, LimitSettings>,
}

/// `[usage]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageSettings {
    /// Seconds between two writes of the usage buckets to the store.
    pub flush_seconds: u64,
    /// Days usage buckets are kept.
    pub retention_days: u64,
}

impl Default for UsageSettings {
    fn default() -> Self {
        UsageSettings {
            flush_seconds: 10,
            retention_days: 90,
        }
    }
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
            quota: BTreeMap::new(),
            usage: UsageSettings::default(),
        }
    }
}

impl Settings {
    /// The quota table: Google's tier limits with this file's replacements.
    pub fn quota_table(&self) -> anyhow::Result<QuotaTable> {
        let mut table = QuotaTable::default();
        for (name, q) in &self.quota {
            let tier = Tier::parse(name)
                .filter(|t| t.as_str() == name)
                .ok_or_else(|| {
                    anyhow::anyhow!("[quota.{name}]: not a tier (free, tier-1, tier-2, tier-3)")
                })?;
            let own = LimitSettings {
                rpm: q.rpm,
                tpm: q.tpm,
                rpd: q.rpd,
            };
            let limits = own.over(Limits::of_tier(tier));
            table.set_tier(tier, limits);
            for (model, m) in &q.models {
                table.set_model(tier, model, m.over(limits));
            }
        }
        Ok(table)
    }

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
        settings
            .quota_table()
            .map_err(|e| anyhow::anyhow!("invalid config file {}: {e}", path.display()))?;
        anyhow::ensure!(
            settings.usage.flush_seconds > 0,
            "invalid config file {}: [usage] flush_seconds must be at least 1",
            path.display()
        );
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
    fn quota_tables_replace_googles_limits() {
        let s: Settings = toml::from_str(
            r#"
            [quota.free]
            rpm = 2
            rpd = "unlimited"
            [quota.free.models."gemini-2.5-pro"]
            tpm = 100
            [quota.tier-1]
            rpm = 0
            "#,
        )
        .unwrap();
        let t = s.quota_table().unwrap();
        let free = Limits::of_tier(Tier::Free);
        assert_eq!(
            t.limits(Tier::Free, "gemini-2.5-flash"),
            Limits {
                rpm: Some(2),
                tpm: free.tpm,
                rpd: None
            }
        );
        assert_eq!(
            t.limits(Tier::Free, "gemini-2.5-pro"),
            Limits {
                rpm: Some(2),
                tpm: Some(100),
                rpd: None
            }
        );
        assert_eq!(t.limits(Tier::Tier1, "x").rpm, Some(0));
        assert_eq!(t.limits(Tier::Tier2, "x"), Limits::of_tier(Tier::Tier2));

        for bad in [
            "[quota.gold]\nrpm = 1\n",
            "[quota.free]\nrpm = -1\n",
            "[quota.free]\nrpm = \"lots\"\n",
            "[quota.free]\nrps = 1\n",
        ] {
            let parsed = toml::from_str::<Settings>(bad);
            assert!(
                parsed.is_err() || parsed.unwrap().quota_table().is_err(),
                "{bad}"
            );
        }
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
