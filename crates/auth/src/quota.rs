//! The request path's quota counters: one [`Window`] per (project, model), in memory, and
//! each project's tier. A call is admitted or refused without touching the store; the
//! tiers are loaded at start and set again by the control plane when one changes.
//!
//! The counters are per process (the embedded default). Windows are kept in shards by
//! project, each a short list of the models that project has called, so a decision takes
//! one uncontended lock and no allocation once a (project, model) has been seen.

use keyplane_core::quota::{Exceeded, Limits, Tier, Window};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use crate::snapshot::WordHasher;

/// The limits each tier grants, with per-model exceptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaTable {
    tiers: [Limits; 4],
    models: HashMap<(Tier, String), Limits>,
}

impl Default for QuotaTable {
    /// Google's published figures ([`Limits::of_tier`]) for every model.
    fn default() -> Self {
        QuotaTable {
            tiers: Tier::ALL.map(Limits::of_tier),
            models: HashMap::new(),
        }
    }
}

impl QuotaTable {
    /// Replaces a tier's limits for every model without an exception.
    pub fn set_tier(&mut self, tier: Tier, limits: Limits) {
        self.tiers[tier as usize] = limits;
    }

    /// Sets the limits of one model in one tier.
    pub fn set_model(&mut self, tier: Tier, model: &str, limits: Limits) {
        self.models.insert((tier, model.to_owned()), limits);
    }

    pub fn limits(&self, tier: Tier, model: &str) -> Limits {
        if !self.models.is_empty() {
            if let Some(l) = self.models.get(&(tier, model.to_owned())) {
                return *l;
            }
        }
        self.tiers[tier as usize]
    }
}

/// Why a call was refused: the project's tier and the limit it reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaDenied {
    pub tier: Tier,
    pub exceeded: Exceeded,
}

/// What a project has used of one model's quota now, for the plan and quota pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelUsage {
    pub model: String,
    pub limits: Limits,
    pub minute_requests: u64,
    pub minute_tokens: u64,
    pub day_requests: u64,
}

const SHARDS: usize = 16;

type Shard = HashMap<i64, Vec<(Box<str>, Window)>, BuildHasherDefault<WordHasher>>;

/// Tiers and windows of every project.
pub struct Quotas {
    table: QuotaTable,
    tiers: RwLock<HashMap<i64, Tier, BuildHasherDefault<WordHasher>>>,
    shards: [Mutex<Shard>; SHARDS],
}

impl Quotas {
    pub fn new(table: QuotaTable) -> Quotas {
        Quotas {
            table,
            tiers: RwLock::default(),
            shards: std::array::from_fn(|_| Mutex::default()),
        }
    }

    pub fn table(&self) -> &QuotaTable {
        &self.table
    }

    /// Records a project's tier (a tier string that is not one counts as free).
    pub fn set_tier(&self, project_number: i64, tier: &str) {
        let tier = Tier::parse(tier).unwrap_or(Tier::Free);
        self.tiers.write().insert(project_number, tier);
    }

    pub fn tier(&self, project_number: i64) -> Tier {
        self.tiers
            .read()
            .get(&project_number)
            .copied()
            .unwrap_or(Tier::Free)
    }

    fn shard(&self, project_number: i64) -> &Mutex<Shard> {
        &self.shards[(project_number as u64 % SHARDS as u64) as usize]
    }

    /// Runs `f` on the window of (project, model), creating it when new.
    fn with_window<T>(
        &self,
        project_number: i64,
        model: &str,
        f: impl FnOnce(&mut Window) -> T,
    ) -> T {
        let mut shard = self.shard(project_number).lock();
        let models = shard.entry(project_number).or_default();
        let at = match models.iter().position(|(m, _)| &**m == model) {
            Some(at) => at,
            None => {
                models.push((model.into(), Window::default()));
                models.len() - 1
            }
        };
        f(&mut models[at].1)
    }

    /// Counts one call of `model` by the project at `now_ms`, or refuses it.
    pub fn admit(&self, project_number: i64, model: &str, now_ms: u64) -> Result<(), QuotaDenied> {
        let tier = self.tier(project_number);
        let limits = self.table.limits(tier, model);
        self.with_window(project_number, model, |w| w.admit(now_ms, &limits))
            .map_err(|exceeded| QuotaDenied { tier, exceeded })
    }

    /// Adds an admitted call's input tokens.
    pub fn add_tokens(&self, project_number: i64, model: &str, now_ms: u64, tokens: u64) {
        if tokens == 0 {
            return;
        }
        self.with_window(project_number, model, |w| w.add_tokens(now_ms, tokens));
    }

    /// Gives back a call admitted at `admitted_ms` that was not answered.
    pub fn refund(&self, project_number: i64, model: &str, now_ms: u64, admitted_ms: u64) {
        self.with_window(project_number, model, |w| w.refund(now_ms, admitted_ms));
    }

    /// Sets today's request count of (project, model), from the stored usage at start.
    pub fn seed_day(&self, project_number: i64, model: &str, now_ms: u64, requests: u64) {
        self.with_window(project_number, model, |w| w.seed_day(now_ms, requests));
    }

    /// The models a project has called since start, with their limits and counts now.
    pub fn usage(&self, project_number: i64, now_ms: u64) -> Vec<ModelUsage> {
        let tier = self.tier(project_number);
        let shard = self.shard(project_number).lock();
        let mut out: Vec<ModelUsage> = shard
            .get(&project_number)
            .map(|models| {
                models
                    .iter()
                    .map(|(model, w)| {
                        let (minute_requests, minute_tokens, day_requests) = w.counts(now_ms);
                        ModelUsage {
                            model: model.to_string(),
                            limits: self.table.limits(tier, model),
                            minute_requests,
                            minute_tokens,
                            day_requests,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| a.model.cmp(&b.model));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyplane_core::quota::{Metric, MINUTE_MS};

    const NOW: u64 = 1_764_000_000_000;

    fn table(rpm: u64) -> QuotaTable {
        let mut t = QuotaTable::default();
        t.set_tier(
            Tier::Free,
            Limits {
                rpm: Some(rpm),
                tpm: Some(100),
                rpd: None,
            },
        );
        t
    }

    #[test]
    fn projects_and_models_have_their_own_windows() {
        let q = Quotas::new(table(2));
        for _ in 0..2 {
            q.admit(1, "a", NOW).unwrap();
            q.admit(1, "b", NOW).unwrap();
            q.admit(2, "a", NOW).unwrap();
            q.admit(1 + SHARDS as i64, "a", NOW).unwrap();
        }
        let e = q.admit(1, "a", NOW).unwrap_err();
        assert_eq!(e.tier, Tier::Free);
        assert_eq!(e.exceeded.metric, Metric::RequestsPerMinute);
        q.admit(1, "a", NOW + MINUTE_MS).unwrap();
    }

    #[test]
    fn a_tier_change_applies_to_the_next_call() {
        let q = Quotas::new(table(1));
        q.admit(7, "m", NOW).unwrap();
        assert!(q.admit(7, "m", NOW).is_err());
        q.set_tier(7, "tier-1");
        assert_eq!(q.tier(7), Tier::Tier1);
        q.admit(7, "m", NOW).unwrap();
        let u = q.usage(7, NOW);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].minute_requests, 2);
        assert_eq!(u[0].limits, Limits::of_tier(Tier::Tier1));
    }

    #[test]
    fn tokens_count_against_the_minute() {
        let q = Quotas::new(table(100));
        q.admit(3, "m", NOW).unwrap();
        q.add_tokens(3, "m", NOW, 100);
        let e = q.admit(3, "m", NOW).unwrap_err();
        assert_eq!(e.exceeded.metric, Metric::InputTokensPerMinute);
        assert_eq!(e.exceeded.limit, 100);
    }

    #[test]
    fn model_exceptions_win_over_the_tier() {
        let mut t = table(1);
        t.set_model(Tier::Free, "big", Limits::default());
        let q = Quotas::new(t);
        for _ in 0..50 {
            q.admit(1, "big", NOW).unwrap();
        }
        q.admit(1, "small", NOW).unwrap();
        assert!(q.admit(1, "small", NOW).is_err());
    }
}
