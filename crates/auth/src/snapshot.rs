//! The in-memory view the data plane authorizes against: key lookup hash -> key entry,
//! and project -> enabled services. The control plane updates it after every write it
//! makes to the store, so a change is seen by the very next request.
//!
//! Made for the request path (crates/auth/benches/auth_decision.rs measures it): one read
//! lock per decision, a table hashed by the lookup hash's own first eight bytes (an
//! HMAC-SHA256 under the server secret is already uniform and cannot be aimed by a caller,
//! so SipHash would only add work), and restrictions shared between the keys that have the
//! same ones. The table holds one pointer per key (the entry carries its own lookup hash),
//! so a million keys cost about 200 bytes each: the table's 9-byte slots (at most half
//! full after growing), the shared entry and its key id.

use crate::restrictions::{CompiledRestrictions, KeyRestrictions};
use keyplane_core::{ApiKey, Restrictions, ServiceState};
use parking_lot::RwLock;
use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

/// What the data plane needs to know about one live key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    pub project_number: i64,
    pub key_id: String,
    /// Read as `Restrictions`; compiled for `restrictions::check`, and shared by every key
    /// of the snapshot with equal restrictions.
    pub restrictions: Arc<CompiledRestrictions>,
    pub service_account_email: Option<String>,
    /// What the snapshot's table finds the entry by (only the snapshot makes entries).
    lookup_hash: LookupHash,
}

/// A live key as [`Snapshot::load_keys`] takes it (the store's projection of an `ApiKey`).
#[derive(Debug, Clone)]
pub struct LiveKey {
    pub lookup_hash: Vec<u8>,
    pub project_number: i64,
    pub key_id: String,
    /// Keys given with the same `Arc` (or equal values) share one compiled copy.
    pub restrictions: Arc<Restrictions>,
    pub service_account_email: Option<String>,
}

/// Proof that a key passed the checks; the request path hands it on.
#[derive(Debug, Clone)]
pub struct KeyPermit {
    pub key: Arc<KeyEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyDenied {
    /// Unknown or deleted key.
    Invalid,
    /// The key's project has not enabled the called service (or is being deleted).
    ServiceDisabled { project_number: i64 },
}

#[derive(Default)]
pub struct Snapshot {
    tables: RwLock<Tables>,
}

#[derive(Default)]
struct Tables {
    /// Entries found by their own lookup hash (see [`Slot`]).
    keys: HashSet<Slot, BuildHasherDefault<WordHasher>>,
    /// Enabled services of every ACTIVE project (a handful each: a list beats a set).
    services: HashMap<i64, Vec<String>, BuildHasherDefault<WordHasher>>,
    restrictions: Interner,
}

impl Snapshot {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds, replaces or (for a soft-deleted key) removes a key.
    pub fn upsert_key(&self, key: &ApiKey) {
        let Ok(hash) = <[u8; 32]>::try_from(key.lookup_hash.as_slice()) else {
            return;
        };
        let hash = LookupHash(hash);
        if key.delete_time.is_some() {
            self.tables.write().keys.remove(&hash);
            return;
        }
        let fingerprint = fingerprint(&key.restrictions);
        let mut tables = self.tables.write();
        let restrictions = tables.restrictions.intern(fingerprint, &key.restrictions);
        tables.keys.replace(Slot(Arc::new(KeyEntry {
            project_number: key.project_number,
            key_id: key.key_id.clone(),
            restrictions,
            service_account_email: key.service_account_email.clone(),
            lookup_hash: hash,
        })));
    }

    /// Makes room for `additional` more keys at once (before [`Snapshot::load_keys`] with a
    /// known count: the table then never holds its old and its grown copy together).
    pub fn reserve_keys(&self, additional: usize) {
        self.tables.write().keys.reserve(additional);
    }

    /// Adds (or replaces) live keys in bulk, under one write lock for the whole batch: for
    /// loading the snapshot at start-up, page by page. Keys whose lookup hash is not 32
    /// bytes are ignored, as by [`Snapshot::upsert_key`].
    pub fn load_keys(&self, keys: impl IntoIterator<Item = LiveKey>) {
        let mut tables = self.tables.write();
        // Runs of keys with the same restrictions skip the fingerprint and the interner.
        let mut last: Option<(Arc<Restrictions>, Arc<CompiledRestrictions>)> = None;
        for key in keys {
            let Ok(hash) = <[u8; 32]>::try_from(key.lookup_hash.as_slice()) else {
                continue;
            };
            let restrictions = match &last {
                Some((r, compiled))
                    if Arc::ptr_eq(r, &key.restrictions) || **r == *key.restrictions =>
                {
                    Arc::clone(compiled)
                }
                _ => {
                    let compiled = tables
                        .restrictions
                        .intern(fingerprint(&key.restrictions), &key.restrictions);
                    last = Some((Arc::clone(&key.restrictions), Arc::clone(&compiled)));
                    compiled
                }
            };
            tables.keys.replace(Slot(Arc::new(KeyEntry {
                project_number: key.project_number,
                key_id: key.key_id,
                restrictions,
                service_account_email: key.service_account_email,
                lookup_hash: LookupHash(hash),
            })));
        }
    }

    pub fn remove_key(&self, lookup_hash: &[u8]) {
        if let Ok(hash) = <[u8; 32]>::try_from(lookup_hash) {
            self.tables.write().keys.remove(&LookupHash(hash));
        }
    }

    /// Records a service state of an active project.
    pub fn set_service(&self, state: &ServiceState) {
        let mut tables = self.tables.write();
        let list = tables.services.entry(state.project_number).or_default();
        let at = list.iter().position(|s| *s == state.service);
        match (state.enabled, at) {
            (true, None) => list.push(state.service.clone()),
            (false, Some(i)) => {
                list.swap_remove(i);
            }
            _ => {}
        }
    }

    /// A project that is no longer active serves nothing.
    pub fn deactivate_project(&self, project_number: i64) {
        self.tables.write().services.remove(&project_number);
    }

    pub fn key_count(&self) -> usize {
        self.tables.read().keys.len()
    }

    /// The data-plane decision for a key (by lookup hash) calling `service`.
    pub fn check_key(&self, lookup_hash: &[u8; 32], service: &str) -> Result<KeyPermit, KeyDenied> {
        let tables = self.tables.read();
        let Slot(key) = tables
            .keys
            .get(&LookupHash(*lookup_hash))
            .ok_or(KeyDenied::Invalid)?;
        if !tables.service_enabled(key.project_number, service) {
            return Err(KeyDenied::ServiceDisabled {
                project_number: key.project_number,
            });
        }
        Ok(KeyPermit {
            key: Arc::clone(key),
        })
    }

    /// Whether `service` is enabled in an active project.
    pub fn service_enabled(&self, project_number: i64, service: &str) -> bool {
        self.tables.read().service_enabled(project_number, service)
    }
}

impl Tables {
    fn service_enabled(&self, project_number: i64, service: &str) -> bool {
        self.services
            .get(&project_number)
            .is_some_and(|list| list.iter().any(|s| s == service))
    }
}

// === impl LookupHash ===

/// An HMAC-SHA256 lookup hash as a table key; it hashes as its first eight bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
struct LookupHash([u8; 32]);

impl fmt::Debug for LookupHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LookupHash(..)")
    }
}

/// A table slot: one pointer to an entry, which carries its own lookup hash. It hashes and
/// compares as that hash, so the table is searched with a bare `LookupHash`.
struct Slot(Arc<KeyEntry>);

impl Hash for Slot {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.lookup_hash.hash(state);
    }
}

impl PartialEq for Slot {
    fn eq(&self, other: &Self) -> bool {
        self.0.lookup_hash == other.0.lookup_hash
    }
}

impl Eq for Slot {}

impl Borrow<LookupHash> for Slot {
    fn borrow(&self) -> &LookupHash {
        &self.0.lookup_hash
    }
}

impl Hash for LookupHash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(word));
    }
}

/// A hasher for keys that are one machine word: the lookup hash's first eight bytes, a
/// project number, or a hash already taken with a seed (the meter's bucket identities), all
/// chosen by the server, never by a caller. The word is mixed once (a multiply and a fold)
/// so the table's bucket and tag bits both vary.
#[derive(Default)]
pub struct WordHasher(u64);

impl Hasher for WordHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, word: u64) {
        let m = u128::from(self.0 ^ word) * 0x9E37_79B9_7F4A_7C15;
        self.0 = (m as u64) ^ ((m >> 64) as u64);
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }
}

// === impl Interner ===

/// One shared copy of each distinct `Restrictions` value in use, found by fingerprint and
/// confirmed by equality. Copies no key holds any more are dropped as the table grows.
#[derive(Default)]
struct Interner {
    by_fingerprint: HashMap<u64, Vec<Arc<CompiledRestrictions>>, BuildHasherDefault<WordHasher>>,
    len: usize,
    /// The size at which unused copies are swept next.
    sweep_at: usize,
}

impl Interner {
    fn intern(&mut self, fingerprint: u64, r: &Restrictions) -> Arc<CompiledRestrictions> {
        if let Some(found) = self
            .by_fingerprint
            .get(&fingerprint)
            .and_then(|list| list.iter().find(|x| x.restrictions() == r))
        {
            return Arc::clone(found);
        }
        if self.len >= self.sweep_at {
            self.sweep();
        }
        let shared = Arc::new(CompiledRestrictions::new(r.clone()));
        self.by_fingerprint
            .entry(fingerprint)
            .or_default()
            .push(Arc::clone(&shared));
        self.len += 1;
        shared
    }

    /// Drops the copies only the interner holds.
    fn sweep(&mut self) {
        self.by_fingerprint.retain(|_, list| {
            list.retain(|r| Arc::strong_count(r) > 1);
            !list.is_empty()
        });
        self.len = self.by_fingerprint.values().map(Vec::len).sum();
        self.sweep_at = (2 * self.len).max(64);
    }
}

/// A hash of every field of `Restrictions` (equal values, equal fingerprints).
fn fingerprint(r: &Restrictions) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    if let Some(b) = &r.browser_key_restrictions {
        (1u8, &b.allowed_referrers).hash(&mut h);
    }
    if let Some(s) = &r.server_key_restrictions {
        (2u8, &s.allowed_ips).hash(&mut h);
    }
    if let Some(a) = &r.android_key_restrictions {
        3u8.hash(&mut h);
        for app in &a.allowed_applications {
            (&app.package_name, &app.sha1_fingerprint).hash(&mut h);
        }
        a.allowed_applications.len().hash(&mut h);
    }
    if let Some(i) = &r.ios_key_restrictions {
        (4u8, &i.allowed_bundle_ids).hash(&mut h);
    }
    5u8.hash(&mut h);
    for t in &r.api_targets {
        (&t.service, &t.methods).hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyplane_core::{now, PlainKey, ServerSecret};

    fn key(secret: &ServerSecret, plain: &PlainKey, project: i64) -> ApiKey {
        let t = now();
        ApiKey {
            project_number: project,
            key_id: "k1".into(),
            uid: "u".into(),
            display_name: String::new(),
            lookup_hash: secret.lookup_hash(plain).to_vec(),
            ciphertext: secret.encrypt(plain),
            last4: plain.last4(),
            restrictions: Default::default(),
            annotations: Default::default(),
            service_account_email: None,
            create_time: t,
            update_time: t,
            delete_time: None,
            etag: "e".into(),
        }
    }

    #[test]
    fn decisions_follow_changes_at_once() {
        let secret = ServerSecret::from_bytes(&ServerSecret::generate()).unwrap();
        let plain = PlainKey::generate();
        let hash = secret.lookup_hash(&plain);
        let snap = Snapshot::new();
        let svc = "generativelanguage.googleapis.com";
        assert_eq!(snap.check_key(&hash, svc).unwrap_err(), KeyDenied::Invalid);
        let mut k = key(&secret, &plain, 123);
        snap.upsert_key(&k);
        assert_eq!(
            snap.check_key(&hash, svc).unwrap_err(),
            KeyDenied::ServiceDisabled {
                project_number: 123
            }
        );
        let mut state = ServiceState {
            project_number: 123,
            service: svc.into(),
            enabled: true,
            update_time: now(),
        };
        snap.set_service(&state);
        assert_eq!(snap.check_key(&hash, svc).unwrap().key.project_number, 123);
        state.enabled = false;
        snap.set_service(&state);
        assert!(snap.check_key(&hash, svc).is_err());
        state.enabled = true;
        snap.set_service(&state);
        k.delete_time = Some(now());
        snap.upsert_key(&k);
        assert_eq!(snap.check_key(&hash, svc).unwrap_err(), KeyDenied::Invalid);
        k.delete_time = None;
        snap.upsert_key(&k);
        assert!(snap.check_key(&hash, svc).is_ok());
        snap.deactivate_project(123);
        assert!(snap.check_key(&hash, svc).is_err());
    }

    #[test]
    fn equal_restrictions_are_shared_and_unused_ones_dropped() {
        use keyplane_core::ServerKeyRestrictions;
        let secret = ServerSecret::from_bytes(&[1u8; 32]).unwrap();
        let snap = Snapshot::new();
        let limited = |ips: &[&str]| Restrictions {
            server_key_restrictions: Some(ServerKeyRestrictions {
                allowed_ips: ips.iter().map(|s| (*s).to_owned()).collect(),
            }),
            ..Restrictions::default()
        };
        let plains: Vec<PlainKey> = (0..200).map(|_| PlainKey::generate()).collect();
        for (i, plain) in plains.iter().enumerate() {
            let mut k = key(&secret, plain, 7);
            k.restrictions = match i % 3 {
                0 => Restrictions::default(),
                1 => limited(&["10.0.0.0/8"]),
                _ => limited(&["10.0.0.0/8", "192.0.2.1"]),
            };
            snap.upsert_key(&k);
        }
        snap.set_service(&ServiceState {
            project_number: 7,
            service: "s".into(),
            enabled: true,
            update_time: now(),
        });
        let entry = |i: usize| {
            snap.check_key(&secret.lookup_hash(&plains[i]), "s")
                .unwrap()
                .key
        };
        assert!(Arc::ptr_eq(&entry(1).restrictions, &entry(4).restrictions));
        assert!(Arc::ptr_eq(&entry(2).restrictions, &entry(5).restrictions));
        assert!(Arc::ptr_eq(&entry(0).restrictions, &entry(3).restrictions));
        assert!(!Arc::ptr_eq(&entry(1).restrictions, &entry(2).restrictions));
        assert_eq!(
            **entry(2).restrictions,
            limited(&["10.0.0.0/8", "192.0.2.1"])
        );
        assert_eq!(snap.tables.read().restrictions.len, 3);

        // Distinct restrictions that no key keeps any more do not pile up.
        let plain = PlainKey::generate();
        for n in 0..1000 {
            let mut k = key(&secret, &plain, 7);
            k.restrictions = limited(&[&format!("10.0.{}.{}/32", n / 256, n % 256)]);
            snap.upsert_key(&k);
        }
        let k = snap
            .check_key(&secret.lookup_hash(&plain), "s")
            .unwrap()
            .key;
        assert_eq!(**k.restrictions, limited(&["10.0.3.231/32"]));
        let held = snap.tables.read().restrictions.len;
        assert!(held < 200, "{held} copies held");
        assert_eq!(snap.key_count(), 201);
    }

    #[test]
    fn bulk_loaded_keys_decide_like_upserted_ones() {
        use keyplane_core::ApiTarget;
        let secret = ServerSecret::from_bytes(&[3u8; 32]).unwrap();
        let targeted = Arc::new(Restrictions {
            api_targets: vec![ApiTarget {
                service: "s".into(),
                methods: vec![],
            }],
            ..Restrictions::default()
        });
        let plains: Vec<PlainKey> = (0..300).map(|_| PlainKey::generate()).collect();
        let keys: Vec<ApiKey> = plains
            .iter()
            .enumerate()
            .map(|(i, plain)| {
                let mut k = key(&secret, plain, 1 + (i as i64 % 3));
                k.key_id = format!("k{i}");
                if i % 4 != 0 {
                    k.restrictions = (*targeted).clone();
                }
                if i % 7 == 0 {
                    k.service_account_email = Some(format!("sa{i}@p.iam.gserviceaccount.com"));
                }
                k
            })
            .collect();
        let one_by_one = Snapshot::new();
        for k in &keys {
            one_by_one.upsert_key(k);
        }
        let bulk = Snapshot::new();
        bulk.reserve_keys(keys.len());
        let live = |k: &ApiKey, shared: bool| LiveKey {
            lookup_hash: k.lookup_hash.clone(),
            project_number: k.project_number,
            key_id: k.key_id.clone(),
            // Half of them with the shared value, half with copies of equal values.
            restrictions: if shared && !k.restrictions.api_targets.is_empty() {
                Arc::clone(&targeted)
            } else {
                Arc::new(k.restrictions.clone())
            },
            service_account_email: k.service_account_email.clone(),
        };
        bulk.load_keys(keys[..150].iter().map(|k| live(k, true)));
        bulk.load_keys(keys[150..].iter().map(|k| live(k, false)));
        // A hash of the wrong length is ignored; loading a key again replaces it.
        let mut odd = live(&keys[0], true);
        odd.lookup_hash.truncate(31);
        let mut again = live(&keys[1], true);
        again.project_number = 2;
        bulk.load_keys([odd, again]);
        for snap in [&one_by_one, &bulk] {
            for p in 1..=3 {
                snap.set_service(&ServiceState {
                    project_number: p,
                    service: "s".into(),
                    enabled: p != 3,
                    update_time: now(),
                });
            }
        }
        assert_eq!(bulk.key_count(), 300);
        for (i, plain) in plains.iter().enumerate() {
            let hash = secret.lookup_hash(plain);
            let want = one_by_one.check_key(&hash, "s").map(|p| p.key);
            let got = bulk.check_key(&hash, "s").map(|p| p.key);
            if i == 1 {
                assert_eq!(got.unwrap().project_number, 2);
                continue;
            }
            match (want, got) {
                (Ok(w), Ok(g)) => assert_eq!(*w, *g),
                (w, g) => assert_eq!(w.map(|_| ()), g.map(|_| ())),
            }
        }
        // Equal restrictions share one compiled copy, however they were given.
        let entry = |i: usize| {
            bulk.check_key(&secret.lookup_hash(&plains[i]), "s")
                .unwrap()
                .key
        };
        assert!(Arc::ptr_eq(
            &entry(6).restrictions,
            &entry(297).restrictions
        ));
        assert!(Arc::ptr_eq(
            &entry(4).restrictions,
            &entry(292).restrictions
        ));
        assert!(!Arc::ptr_eq(&entry(4).restrictions, &entry(6).restrictions));
        assert_eq!(bulk.tables.read().restrictions.len, 2);
        bulk.remove_key(&secret.lookup_hash(&plains[4]));
        assert_eq!(bulk.key_count(), 299);
    }

    #[test]
    fn many_keys_each_found_under_its_own_hash() {
        let secret = ServerSecret::from_bytes(&[2u8; 32]).unwrap();
        let snap = Snapshot::new();
        let plains: Vec<PlainKey> = (0..2000).map(|_| PlainKey::generate()).collect();
        for (i, plain) in plains.iter().enumerate() {
            let mut k = key(&secret, plain, 1 + (i as i64 % 5));
            k.key_id = format!("k{i}");
            snap.upsert_key(&k);
        }
        for p in 1..=5 {
            snap.set_service(&ServiceState {
                project_number: p,
                service: "s".into(),
                enabled: p != 3,
                update_time: now(),
            });
        }
        assert_eq!(snap.key_count(), 2000);
        for (i, plain) in plains.iter().enumerate() {
            let got = snap.check_key(&secret.lookup_hash(plain), "s");
            let project = 1 + (i as i64 % 5);
            if project == 3 {
                assert_eq!(
                    got.unwrap_err(),
                    KeyDenied::ServiceDisabled { project_number: 3 }
                );
            } else {
                let k = got.unwrap().key;
                assert_eq!(
                    (k.key_id.as_str(), k.project_number),
                    (&*format!("k{i}"), project)
                );
            }
        }
        // A hash that differs from a stored one only after the first eight bytes is unknown.
        let mut near = secret.lookup_hash(&plains[0]);
        near[31] ^= 1;
        assert_eq!(snap.check_key(&near, "s").unwrap_err(), KeyDenied::Invalid);
        snap.remove_key(&secret.lookup_hash(&plains[0]));
        assert_eq!(snap.key_count(), 1999);
        assert!(!snap.service_enabled(3, "s"));
        assert!(snap.service_enabled(4, "s"));
        assert!(!snap.service_enabled(4, "t"));
    }
}
