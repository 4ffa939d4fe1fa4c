//! Service accounts and IAM policies as the request path reads them: a read-through cache
//! in front of the store, emptied entry by entry whenever the control plane writes one, so
//! a disabled account, a deleted account or a revoked role is seen by the very next
//! request, while the common case (a bound key or a Bearer token of an unchanged account)
//! never waits on the database.
//!
//! A read that races with a write cannot put a stale value back: every write bumps a
//! generation, and a value read from the store is kept only if no write happened since the
//! read began ([`Directory::generation`] before the read, [`Directory::put_account`] /
//! [`Directory::put_policy`] with it after).

use keyplane_core::iam::Policy;
use keyplane_core::ServiceAccount;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A cached lookup: `Some(None)` means "known not to exist"; `None` means "not cached".
pub type Cached<T> = Option<Option<Arc<T>>>;

/// One cached table: name -> what the store said (`None`: known not to exist).
struct Table<T>(RwLock<HashMap<String, Option<Arc<T>>>>);

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table(RwLock::default())
    }
}

impl<T> Table<T> {
    fn get(&self, name: &str) -> Cached<T> {
        self.0.read().get(name).cloned()
    }

    /// Keeps `value` unless a write happened since `generation` (checked under the lock
    /// that writes take, so no write can slip in between).
    fn put(
        &self,
        gen: &AtomicU64,
        name: &str,
        value: Option<T>,
        generation: u64,
    ) -> Option<Arc<T>> {
        let value = value.map(Arc::new);
        let mut map = self.0.write();
        if gen.load(Ordering::Acquire) == generation {
            map.insert(name.to_owned(), value.clone());
        }
        value
    }

    fn forget(&self, gen: &AtomicU64, name: &str) {
        let mut map = self.0.write();
        gen.fetch_add(1, Ordering::AcqRel);
        map.remove(name);
    }
}

#[derive(Default)]
pub struct Directory {
    generation: AtomicU64,
    accounts: Table<ServiceAccount>,
    /// Resource name (`projects/123`, `organizations/1`) -> its own policy.
    policies: Table<Policy>,
}

impl Directory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Take before reading the store; hand to `put_*` after.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn account(&self, email: &str) -> Cached<ServiceAccount> {
        self.accounts.get(email)
    }

    /// Caches what the store said of `email`, unless a write happened since `generation`.
    pub fn put_account(
        &self,
        email: &str,
        account: Option<ServiceAccount>,
        generation: u64,
    ) -> Option<Arc<ServiceAccount>> {
        self.accounts
            .put(&self.generation, email, account, generation)
    }

    /// Drops the cached account (call after any write to it, including creation).
    pub fn forget_account(&self, email: &str) {
        self.accounts.forget(&self.generation, email)
    }

    pub fn policy(&self, resource: &str) -> Cached<Policy> {
        self.policies.get(resource)
    }

    pub fn put_policy(
        &self,
        resource: &str,
        policy: Option<Policy>,
        generation: u64,
    ) -> Option<Arc<Policy>> {
        self.policies
            .put(&self.generation, resource, policy, generation)
    }

    /// Drops the cached policy of `resource` (call after any write to it).
    pub fn forget_policy(&self, resource: &str) {
        self.policies.forget(&self.generation, resource)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyplane_core::now;

    fn account(email: &str, disabled: bool) -> ServiceAccount {
        ServiceAccount {
            email: email.into(),
            disabled,
            ..test_account()
        }
    }

    fn test_account() -> ServiceAccount {
        ServiceAccount {
            email: "a@p.iam.gserviceaccount.com".into(),
            unique_id: "1".into(),
            project_number: 1,
            project_id: "p".into(),
            display_name: String::new(),
            description: String::new(),
            disabled: false,
            create_time: now(),
            etag: "e".into(),
        }
    }

    #[test]
    fn a_write_empties_the_entry() {
        let d = Directory::new();
        let e = "a@p.iam.gserviceaccount.com";
        assert!(d.account(e).is_none());
        let g = d.generation();
        d.put_account(e, Some(account(e, false)), g);
        assert!(!d.account(e).unwrap().unwrap().disabled);
        d.forget_account(e);
        assert!(d.account(e).is_none());
        // Known absent is cached too, and forgotten on creation.
        let g = d.generation();
        d.put_account(e, None, g);
        assert!(d.account(e).unwrap().is_none());
        d.forget_account(e);
        assert!(d.account(e).is_none());
    }

    #[test]
    fn a_read_that_raced_a_write_is_not_kept() {
        let d = Directory::new();
        let e = "a@p.iam.gserviceaccount.com";
        let before = d.generation();
        // The store said "enabled", then the account was disabled before the read finished.
        d.forget_account(e);
        let got = d.put_account(e, Some(account(e, false)), before);
        assert!(got.is_some(), "the caller still gets what it read");
        assert!(d.account(e).is_none(), "but it is not cached");

        let before = d.generation();
        d.forget_policy("projects/1");
        d.put_policy("projects/1", Some(Policy::empty()), before);
        assert!(d.policy("projects/1").is_none());
        let now = d.generation();
        d.put_policy("projects/1", Some(Policy::empty()), now);
        assert!(d.policy("projects/1").unwrap().is_some());
    }
}
