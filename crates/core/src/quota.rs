//! Quota arithmetic and usage records: per project and model, by the project's billing
//! tier, requests per minute (RPM), input tokens per minute (TPM) and requests per day
//! (RPD), counted in fixed windows (the UTC minute, the UTC day) as Google's quota
//! errors describe them ("Please retry in 41s": the time left in the window).
//!
//! Plain data and plain functions: the server keeps one [`Window`] per (project, model) in
//! memory and asks it to [`Window::admit`] each call; tokens are added when the call has
//! counted them ([`Window::add_tokens`]). A call is admitted while the window's counts are
//! under every limit, so the tokens of the one call that crosses the TPM limit are still
//! served (Google does the same: the token count is known after the call).

use std::fmt;

/// Milliseconds in a minute and in a day.
pub const MINUTE_MS: u64 = 60_000;
pub const DAY_MS: u64 = 86_400_000;

/// A project's billing tier (`Project::tier`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    Free,
    Tier1,
    Tier2,
    Tier3,
}

impl Tier {
    pub const ALL: [Tier; 4] = [Tier::Free, Tier::Tier1, Tier::Tier2, Tier::Tier3];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Tier1 => "tier-1",
            Tier::Tier2 => "tier-2",
            Tier::Tier3 => "tier-3",
        }
    }

    /// `free`, `tier-1`, `tier-2`, `tier-3` (also `tier1`, `1`, upper case).
    pub fn parse(s: &str) -> Option<Tier> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "free" | "free-tier" | "0" => Some(Tier::Free),
            "tier-1" | "tier1" | "1" => Some(Tier::Tier1),
            "tier-2" | "tier2" | "2" => Some(Tier::Tier2),
            "tier-3" | "tier3" | "3" => Some(Tier::Tier3),
            _ => None,
        }
    }

    /// The suffix Google's quota ids carry (`…-FreeTier`), empty for paid tiers.
    fn quota_id_suffix(self) -> &'static str {
        match self {
            Tier::Free => "-FreeTier",
            _ => "",
        }
    }

    /// The part of Google's metric names that says free or paid.
    fn metric_tier(self) -> &'static str {
        match self {
            Tier::Free => "free_tier",
            _ => "paid_tier",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The limits of one tier (or one model in a tier). `None`: no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub rpd: Option<u64>,
}

impl Limits {
    /// The built-in limits of a tier, Google's published figures for Gemini 2.5 Flash.
    pub fn of_tier(tier: Tier) -> Limits {
        match tier {
            Tier::Free => Limits {
                rpm: Some(10),
                tpm: Some(250_000),
                rpd: Some(250),
            },
            Tier::Tier1 => Limits {
                rpm: Some(1_000),
                tpm: Some(1_000_000),
                rpd: Some(10_000),
            },
            Tier::Tier2 => Limits {
                rpm: Some(2_000),
                tpm: Some(3_000_000),
                rpd: Some(100_000),
            },
            Tier::Tier3 => Limits {
                rpm: Some(10_000),
                tpm: Some(8_000_000),
                rpd: None,
            },
        }
    }
}

/// What a quota limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    RequestsPerMinute,
    InputTokensPerMinute,
    RequestsPerDay,
}

impl Metric {
    /// `generativelanguage.googleapis.com/generate_content_free_tier_requests`, …
    pub fn quota_metric(self, tier: Tier) -> String {
        let what = match self {
            Metric::RequestsPerMinute | Metric::RequestsPerDay => "requests",
            Metric::InputTokensPerMinute => "input_token_count",
        };
        format!(
            "generativelanguage.googleapis.com/generate_content_{}_{what}",
            tier.metric_tier()
        )
    }

    /// `GenerateRequestsPerMinutePerProjectPerModel-FreeTier`, …
    pub fn quota_id(self, tier: Tier) -> String {
        let base = match self {
            Metric::RequestsPerMinute => "GenerateRequestsPerMinutePerProjectPerModel",
            Metric::RequestsPerDay => "GenerateRequestsPerDayPerProjectPerModel",
            Metric::InputTokensPerMinute => "GenerateContentInputTokensPerModelPerMinute",
        };
        format!("{base}{}", tier.quota_id_suffix())
    }
}

/// A call refused by a limit: which one, its value, and when the window reopens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    pub metric: Metric,
    pub limit: u64,
    /// Milliseconds until the window that refused the call ends.
    pub retry_after_ms: u64,
}

/// The counts of one (project, model) in the current minute and day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    minute: u64,
    day: u64,
    minute_requests: u64,
    minute_tokens: u64,
    day_requests: u64,
}

impl Window {
    /// Moves the window to `now_ms` (milliseconds since the Unix epoch), forgetting the
    /// counts of a minute or day that has ended.
    fn roll(&mut self, now_ms: u64) {
        let (minute, day) = (now_ms / MINUTE_MS, now_ms / DAY_MS);
        if minute != self.minute {
            self.minute = minute;
            self.minute_requests = 0;
            self.minute_tokens = 0;
        }
        if day != self.day {
            self.day = day;
            self.day_requests = 0;
        }
    }

    /// Counts one request when every limit has room, else says which refuses it (the
    /// day's limit first: waiting a minute would not help). A refused call counts nothing.
    pub fn admit(&mut self, now_ms: u64, limits: &Limits) -> Result<(), Exceeded> {
        self.roll(now_ms);
        let to_minute_end = MINUTE_MS - now_ms % MINUTE_MS;
        let checks = [
            (
                Metric::RequestsPerDay,
                limits.rpd,
                self.day_requests,
                DAY_MS - now_ms % DAY_MS,
            ),
            (
                Metric::RequestsPerMinute,
                limits.rpm,
                self.minute_requests,
                to_minute_end,
            ),
            (
                Metric::InputTokensPerMinute,
                limits.tpm,
                self.minute_tokens,
                to_minute_end,
            ),
        ];
        for (metric, limit, used, retry_after_ms) in checks {
            if let Some(limit) = limit {
                if used >= limit {
                    return Err(Exceeded {
                        metric,
                        limit,
                        retry_after_ms,
                    });
                }
            }
        }
        self.minute_requests += 1;
        self.day_requests += 1;
        Ok(())
    }

    /// Adds the input tokens of an admitted call to the minute it ends in.
    pub fn add_tokens(&mut self, now_ms: u64, tokens: u64) {
        self.roll(now_ms);
        self.minute_tokens = self.minute_tokens.saturating_add(tokens);
    }

    /// Gives back the request of a call admitted at `admitted_ms` that was not answered (a
    /// body refused as invalid, a backend that failed): it no longer counts in the minute or
    /// day it was admitted in, when that window is still the current one.
    pub fn refund(&mut self, now_ms: u64, admitted_ms: u64) {
        self.roll(now_ms);
        if admitted_ms / MINUTE_MS == self.minute {
            self.minute_requests = self.minute_requests.saturating_sub(1);
        }
        if admitted_ms / DAY_MS == self.day {
            self.day_requests = self.day_requests.saturating_sub(1);
        }
    }

    /// Sets the day's request count (a restart seeds it from the stored usage buckets).
    pub fn seed_day(&mut self, now_ms: u64, day_requests: u64) {
        self.roll(now_ms);
        self.day_requests = day_requests;
    }

    /// (requests this minute, input tokens this minute, requests today) at `now_ms`.
    pub fn counts(&self, now_ms: u64) -> (u64, u64, u64) {
        let mut w = *self;
        w.roll(now_ms);
        (w.minute_requests, w.minute_tokens, w.day_requests)
    }
}

/// One usage bucket row: what one key (or credential without a key) did with one model and
/// method in one UTC minute, ending with one HTTP status. Rows with the same identity add up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub project_number: i64,
    /// The key's uid; empty for a service-account or ephemeral-token caller.
    pub key_id: String,
    /// The model id as called (an alias stays an alias).
    pub model: String,
    /// `generateContent`, `streamGenerateContent`, `countTokens`, …
    pub method: String,
    /// Minutes since the Unix epoch (UTC).
    pub minute: i64,
    /// The HTTP status answered (200, 400, 429, …).
    pub code: i32,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub candidates_tokens: i64,
    /// Sum of the calls' latencies, in milliseconds.
    pub latency_ms: i64,
}

/// `Please retry in 41.065029449s.`'s figure, as RetryInfo's `retryDelay` wants it (`"41s"`,
/// whole seconds, at least one).
pub fn retry_delay(retry_after_ms: u64) -> String {
    format!("{}s", retry_after_secs(retry_after_ms))
}

/// Whole seconds to wait (rounded up, at least one), as RetryInfo and the message say.
pub fn retry_after_secs(retry_after_ms: u64) -> u64 {
    retry_after_ms.div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: u64 = 1_764_000_000_000 - 1_764_000_000_000 % DAY_MS + 12 * 3_600_000;

    fn limits(rpm: u64, tpm: u64, rpd: u64) -> Limits {
        Limits {
            rpm: Some(rpm),
            tpm: Some(tpm),
            rpd: Some(rpd),
        }
    }

    #[test]
    fn tiers_parse_and_print() {
        for t in Tier::ALL {
            assert_eq!(Tier::parse(t.as_str()), Some(t));
        }
        assert_eq!(Tier::parse(" Tier-1 "), Some(Tier::Tier1));
        assert_eq!(Tier::parse("tier-4"), None);
        assert_eq!(Tier::parse(""), None);
    }

    #[test]
    fn metric_names_are_googles() {
        assert_eq!(
            Metric::RequestsPerMinute.quota_metric(Tier::Free),
            "generativelanguage.googleapis.com/generate_content_free_tier_requests"
        );
        assert_eq!(
            Metric::InputTokensPerMinute.quota_id(Tier::Free),
            "GenerateContentInputTokensPerModelPerMinute-FreeTier"
        );
        assert_eq!(
            Metric::RequestsPerDay.quota_id(Tier::Tier2),
            "GenerateRequestsPerDayPerProjectPerModel"
        );
    }

    #[test]
    fn the_minute_limit_refuses_until_the_minute_ends() {
        let l = limits(3, 1_000_000, 1_000);
        let mut w = Window::default();
        let now = T0 + 19_000; // 19 s into a minute
        for _ in 0..3 {
            w.admit(now, &l).unwrap();
        }
        let e = w.admit(now + 500, &l).unwrap_err();
        assert_eq!(e.metric, Metric::RequestsPerMinute);
        assert_eq!(e.limit, 3);
        assert_eq!(e.retry_after_ms, 40_500);
        assert_eq!(retry_delay(e.retry_after_ms), "41s");
        // A refused call counts nothing; the next minute starts empty.
        assert_eq!(w.counts(now).0, 3);
        w.admit(T0 + MINUTE_MS, &l).unwrap();
        assert_eq!(w.counts(T0 + MINUTE_MS), (1, 0, 4));
    }

    #[test]
    fn tokens_refuse_the_call_after_the_one_that_crossed() {
        let l = limits(100, 50, 1_000);
        let mut w = Window::default();
        w.admit(T0, &l).unwrap();
        w.add_tokens(T0, 49);
        w.admit(T0, &l).unwrap();
        w.add_tokens(T0, 30);
        let e = w.admit(T0, &l).unwrap_err();
        assert_eq!(e.metric, Metric::InputTokensPerMinute);
        w.admit(T0 + MINUTE_MS, &l).unwrap();
    }

    #[test]
    fn the_day_limit_wins_and_lasts_until_midnight_utc() {
        let l = limits(1, 1, 2);
        let mut w = Window::default();
        w.admit(T0, &l).unwrap();
        w.admit(T0 + MINUTE_MS, &l).unwrap();
        let e = w.admit(T0 + 2 * MINUTE_MS, &l).unwrap_err();
        assert_eq!(e.metric, Metric::RequestsPerDay);
        assert_eq!(e.retry_after_ms, DAY_MS / 2 - 2 * MINUTE_MS);
        w.admit(T0 + DAY_MS / 2, &l).unwrap();
    }

    #[test]
    fn a_refund_frees_its_own_window_only() {
        let l = limits(1, 1_000, 2);
        let mut w = Window::default();
        w.admit(T0, &l).unwrap();
        w.refund(T0 + 10, T0);
        w.admit(T0 + 20, &l).unwrap();
        assert!(w.admit(T0 + 30, &l).is_err());
        // Admitted in the previous minute: the new minute is not touched, the day is.
        w.refund(T0 + MINUTE_MS, T0 + 20);
        assert_eq!(w.counts(T0 + MINUTE_MS), (0, 0, 0));
        w.admit(T0 + MINUTE_MS, &l).unwrap();
        w.refund(T0 + DAY_MS, T0 + MINUTE_MS);
        assert_eq!(w.counts(T0 + DAY_MS), (0, 0, 0));
    }

    #[test]
    fn no_limit_means_no_refusal() {
        let mut w = Window::default();
        for i in 0..10_000 {
            w.admit(T0 + i, &Limits::default()).unwrap();
            w.add_tokens(T0 + i, u64::MAX);
        }
        w.seed_day(T0, 7);
        assert_eq!(w.counts(T0).2, 7);
    }

    proptest! {
        /// Over any sequence of calls, each minute admits at most `rpm` and each day at
        /// most `rpd`; every refusal names a window that is really full and reopens when
        /// it says.
        #[test]
        fn windows_never_admit_more_than_the_limits(
            rpm in 1u64..6, rpd in 1u64..20,
            steps in proptest::collection::vec(0u64..40_000, 1..200),
        ) {
            let l = Limits { rpm: Some(rpm), tpm: None, rpd: Some(rpd) };
            let mut w = Window::default();
            let mut now = T0;
            let mut per_minute = std::collections::HashMap::<u64, u64>::new();
            let mut per_day = std::collections::HashMap::<u64, u64>::new();
            for step in steps {
                now += step;
                match w.admit(now, &l) {
                    Ok(()) => {
                        *per_minute.entry(now / MINUTE_MS).or_default() += 1;
                        *per_day.entry(now / DAY_MS).or_default() += 1;
                    }
                    Err(e) => {
                        let (full, window) = match e.metric {
                            Metric::RequestsPerMinute => (per_minute.get(&(now / MINUTE_MS)).copied().unwrap_or(0), MINUTE_MS),
                            Metric::RequestsPerDay => (per_day.get(&(now / DAY_MS)).copied().unwrap_or(0), DAY_MS),
                            Metric::InputTokensPerMinute => unreachable!(),
                        };
                        prop_assert_eq!(full, e.limit);
                        prop_assert_eq!((now + e.retry_after_ms) % window, 0);
                    }
                }
            }
            prop_assert!(per_minute.values().all(|n| *n <= rpm));
            prop_assert!(per_day.values().all(|n| *n <= rpd));
        }
    }
}
