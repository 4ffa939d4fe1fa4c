//! The in-memory view the data plane authorizes against: key lookup hash -> key entry,
//! and project -> enabled services. The control plane updates it after every write it
//! makes to the store, so a change is seen by the very next request.

use keyplane_core::{ApiKey, Restrictions, ServiceState};
use parking_lot::RwLock;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// What the data plane needs to know about one live key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    pub project_number: i64,
    pub key_id: String,
    pub restrictions: Restrictions,
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
    keys: RwLock<HashMap<[u8; 32], Arc<KeyEntry>>>,
    /// Enabled services of every ACTIVE project.
    services: RwLock<HashMap<i64, HashSet<String>>>,
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
        let mut keys = self.keys.write();
        if key.delete_time.is_some() {
            keys.remove(&hash);
        } else {
            keys.insert(
                hash,
                Arc::new(KeyEntry {
                    project_number: key.project_number,
                    key_id: key.key_id.clone(),
                    restrictions: key.restrictions.clone(),
                    service_account_email: key.service_account_email.clone(),
                }),
            );
        }
    }

    pub fn remove_key(&self, lookup_hash: &[u8]) {
        if let Ok(hash) = <[u8; 32]>::try_from(lookup_hash) {
            self.keys.write().remove(&hash);
        }
    }

    /// Records a service state of an active project.
    pub fn set_service(&self, state: &ServiceState) {
        let mut services = self.services.write();
        let set = services.entry(state.project_number).or_default();
        if state.enabled {
            set.insert(state.service.clone());
        } else {
            set.remove(&state.service);
        }
    }

    /// A project that is no longer active serves nothing.
    pub fn deactivate_project(&self, project_number: i64) {
        self.services.write().remove(&project_number);
    }

    pub fn key_count(&self) -> usize {
        self.keys.read().len()
    }

    /// The data-plane decision for a key (by lookup hash) calling `service`.
    pub fn check_key(&self, lookup_hash: &[u8; 32], service: &str) -> Result<KeyPermit, KeyDenied> {
        let key = self
            .keys
            .read()
            .get(lookup_hash)
            .cloned()
            .ok_or(KeyDenied::Invalid)?;
        let enabled = self
            .services
            .read()
            .get(&key.project_number)
            .is_some_and(|s| s.contains(service));
        if !enabled {
            return Err(KeyDenied::ServiceDisabled {
                project_number: key.project_number,
            });
        }
        Ok(KeyPermit { key })
    }

    /// Whether `service` is enabled in an active project.
    pub fn service_enabled(&self, project_number: i64, service: &str) -> bool {
        self.services
            .read()
            .get(&project_number)
            .is_some_and(|s| s.contains(service))
    }
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
}
