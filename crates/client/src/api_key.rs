//! Finding the Gemini API key the way Google's SDKs do (google-genai for Python and
//! JavaScript): an explicit key wins; else `GOOGLE_API_KEY`; else `GEMINI_API_KEY`.
//! When both variables are set `GOOGLE_API_KEY` is used and a warning is returned for the
//! caller to show. Values are trimmed and an empty value counts as unset.

use crate::error::{ClientError, Secret};
use std::fmt;

pub const GOOGLE_API_KEY: &str = "GOOGLE_API_KEY";
pub const GEMINI_API_KEY: &str = "GEMINI_API_KEY";

/// The warning both SDKs print when the two variables are set.
pub const BOTH_SET_WARNING: &str =
    "Both GOOGLE_API_KEY and GEMINI_API_KEY are set. Using GOOGLE_API_KEY.";

/// Where a resolved key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    Explicit,
    GoogleApiKey,
    GeminiApiKey,
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeySource::Explicit => "explicit",
            KeySource::GoogleApiKey => GOOGLE_API_KEY,
            KeySource::GeminiApiKey => GEMINI_API_KEY,
        })
    }
}

/// A key ready to send. Its `Debug` shows where it came from, never the key.
#[derive(Clone)]
pub struct ResolvedKey {
    key: Secret,
    pub source: KeySource,
    /// Set when both environment variables were present; show it on stderr.
    pub warning: Option<&'static str>,
}

impl ResolvedKey {
    pub fn expose(&self) -> &str {
        self.key.expose()
    }

    pub fn into_secret(self) -> Secret {
        self.key
    }
}

impl fmt::Debug for ResolvedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedKey")
            .field("key", &"<redacted>")
            .field("source", &self.source)
            .field("warning", &self.warning)
            .finish()
    }
}

/// Resolves the key from `explicit` and the process environment.
pub fn resolve_api_key(explicit: Option<&str>) -> Result<ResolvedKey, ClientError> {
    resolve_api_key_with(explicit, |name| std::env::var(name).ok())
}

/// Resolves the key from `explicit` and an environment given as a lookup function.
pub fn resolve_api_key_with(
    explicit: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<ResolvedKey, ClientError> {
    let clean = |v: Option<String>| {
        v.map(|s| s.trim().to_owned())
            .filter(|s: &String| !s.is_empty())
    };
    if let Some(key) = clean(explicit.map(str::to_owned)) {
        return Ok(ResolvedKey {
            key: Secret::new(key),
            source: KeySource::Explicit,
            warning: None,
        });
    }
    let google = clean(env(GOOGLE_API_KEY));
    let gemini = clean(env(GEMINI_API_KEY));
    match (google, gemini) {
        (Some(key), other) => Ok(ResolvedKey {
            key: Secret::new(key),
            source: KeySource::GoogleApiKey,
            warning: other.map(|_| BOTH_SET_WARNING),
        }),
        (None, Some(key)) => Ok(ResolvedKey {
            key: Secret::new(key),
            source: KeySource::GeminiApiKey,
            warning: None,
        }),
        (None, None) => Err(ClientError::NoApiKey),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn explicit_wins_over_both_variables() {
        let k = resolve_api_key_with(
            Some(" explicit "),
            env(&[(GOOGLE_API_KEY, "g"), (GEMINI_API_KEY, "m")]),
        )
        .unwrap();
        assert_eq!(k.expose(), "explicit");
        assert_eq!(k.source, KeySource::Explicit);
        assert_eq!(k.warning, None);
    }

    #[test]
    fn google_wins_with_a_warning_when_both_are_set() {
        let k = resolve_api_key_with(None, env(&[(GOOGLE_API_KEY, "g"), (GEMINI_API_KEY, "m")]))
            .unwrap();
        assert_eq!(k.expose(), "g");
        assert_eq!(k.source, KeySource::GoogleApiKey);
        assert_eq!(k.warning, Some(BOTH_SET_WARNING));
    }

    #[test]
    fn each_variable_alone() {
        let k = resolve_api_key_with(None, env(&[(GOOGLE_API_KEY, "g")])).unwrap();
        assert_eq!(
            (k.expose(), k.source, k.warning),
            ("g", KeySource::GoogleApiKey, None)
        );
        let k = resolve_api_key_with(None, env(&[(GEMINI_API_KEY, "\tm\n")])).unwrap();
        assert_eq!(
            (k.expose(), k.source, k.warning),
            ("m", KeySource::GeminiApiKey, None)
        );
    }

    #[test]
    fn empty_values_count_as_unset() {
        let k = resolve_api_key_with(
            Some("  "),
            env(&[(GOOGLE_API_KEY, " "), (GEMINI_API_KEY, "m")]),
        )
        .unwrap();
        assert_eq!(k.expose(), "m");
        assert_eq!(k.source, KeySource::GeminiApiKey);
        assert_eq!(k.warning, None, "an empty GOOGLE_API_KEY is not 'set'");
        assert!(matches!(
            resolve_api_key_with(Some(""), env(&[(GOOGLE_API_KEY, "")])),
            Err(ClientError::NoApiKey)
        ));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let k = resolve_api_key_with(Some("AIzaSecretSecret"), env(&[])).unwrap();
        let shown = format!("{k:?}");
        assert!(!shown.contains("AIzaSecretSecret"), "{shown}");
        assert!(shown.contains("Explicit"));
    }
}
