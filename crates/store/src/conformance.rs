//! The conformance suite: what every [`Store`] implementation must do, written once as
//! generic async functions so SQLite (in memory and on disk) and, later, PostgreSQL run
//! the very same checks.
//!
//! Each case takes an empty, migrated store and panics on the first broken promise.
//! [`conformance_tests!`](crate::conformance_tests) turns every case into its own
//! `#[tokio::test]` for a given store:
//!
//! ```ignore
//! async fn fixture() -> keyplane_store::conformance::Fixture<SqliteStore> {
//!     Fixture::new(SqliteStore::open_in_memory().await.unwrap())
//! }
//! keyplane_store::conformance_tests!(fixture().await);
//! ```
//!
//! Besides what the trait docs say, the suite pins down these choices, which callers may
//! rely on:
//! - records that name a missing parent (a key, service or service account in a project
//!   that does not exist; a service-account key of a missing account) are `NotFound`;
//! - updates never change identity or creation fields (project id, parent, creator,
//!   create time; a key's uid, hash, ciphertext, last4, create time);
//! - "before" is strict: a key deleted exactly at the purge cutoff, a token expiring
//!   exactly at `now`, or a usage row of exactly the purge minute, stays;
//! - services, service accounts and their keys are listed in a stable order (by name,
//!   by email, by create time then key id);
//! - a page token from another list (another kind of list, or the keys of another
//!   project) is `InvalidArgument`;
//! - concurrent writers all succeed (no "database is locked"), unique constraints hold
//!   under races (exactly one of several identical creates wins, the rest are
//!   `AlreadyExists`) and so do etags (exactly one of several updates expecting the same
//!   etag wins, the rest are `EtagMismatch`).
//!
//! Requires the `conformance` feature.

mod iam_policy_cases;
pub use iam_policy_cases::{concurrent_iam_policy_writes, iam_policies};
mod users_audit_cases;
pub use users_audit_cases::{audit_log, users};
mod ephemeral_cases;
pub use ephemeral_cases::{concurrent_ephemeral_uses, ephemeral_tokens};
mod usage_cases;
pub use usage_cases::{
    concurrent_usage_adds, usage_adds_up, usage_batches_are_atomic, usage_codes_are_separate,
    usage_large_batch, usage_order, usage_purge, usage_range, usage_totals,
};

use crate::{OrgPolicyRecord, PageRequest, SnapshotKey, Store, StoreError};
use keyplane_core::{
    AccessToken, AndroidApplication, AndroidKeyRestrictions, ApiKey, ApiTarget,
    BrowserKeyRestrictions, IosKeyRestrictions, Organization, Project, ProjectState, Restrictions,
    ServerKeyRestrictions, ServiceAccount, ServiceAccountKey, ServiceState, StoredOperation,
};
use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

/// A store under test and whatever must outlive it (a temporary directory, a scratch
/// database to drop).
pub struct Fixture<S> {
    pub store: Arc<S>,
    // Declared after `store`, so dropped after it.
    _guard: Box<dyn Any + Send>,
}

impl<S> Fixture<S> {
    pub fn new(store: S) -> Self {
        Self::with_guard(store, ())
    }

    pub fn with_guard(store: S, guard: impl Any + Send) -> Self {
        Fixture {
            store: Arc::new(store),
            _guard: Box::new(guard),
        }
    }
}

/// One `#[tokio::test]` per conformance case. `$fixture` is an expression (it may
/// `.await`) giving a fresh [`Fixture`] holding an empty store; it is evaluated once per
/// test. The calling crate needs `tokio` with the `macros` and `rt-multi-thread` features.
#[macro_export]
macro_rules! conformance_tests {
    ($fixture:expr) => {
        $crate::conformance_tests!(@cases $fixture;
            organization_and_meta,
            operations,
            projects,
            project_updates,
            project_pagination,
            default_page_size,
            services,
            keys,
            key_updates,
            key_soft_delete,
            key_purge,
            key_pagination,
            key_batches,
            snapshot_key_pages,
            restrictions_round_trip,
            service_accounts,
            service_account_keys,
            access_tokens,
            invalid_page_tokens,
            iam_policies,
            org_policies,
            users,
            audit_log,
            ephemeral_tokens,
            usage_adds_up,
            usage_codes_are_separate,
            usage_range,
            usage_order,
            usage_totals,
            usage_purge,
            usage_batches_are_atomic,
            usage_large_batch,
        );

        $crate::conformance_tests!(@concurrent $fixture;
            concurrent_inserts,
            concurrent_key_creation,
            concurrent_creates_race,
            concurrent_etag_updates,
            concurrent_iam_policy_writes,
            concurrent_ephemeral_uses,
            concurrent_usage_adds,
        );
    };
    (@cases $fixture:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let fixture = $fixture;
                $crate::conformance::$case(&*fixture.store).await;
            }
        )*
    };
    (@concurrent $fixture:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let fixture = $fixture;
                $crate::conformance::$case(fixture.store.clone()).await;
            }
        )*
    };
}

macro_rules! assert_err {
    ($result:expr, $pattern:pat) => {
        match $result {
            Err($pattern) => {}
            other => panic!(
                "{}: expected Err({}), got {:?}",
                stringify!($result),
                stringify!($pattern),
                other
            ),
        }
    };
}

// === test data ===

/// A fixed instant with microseconds, like every time a store keeps.
pub fn t0() -> OffsetDateTime {
    datetime!(2025-01-02 03:04:05.123456 UTC)
}

fn secs(n: i64) -> Duration {
    Duration::seconds(n)
}

/// Project `n`: number `100000000000 + n`, id `test-project-{n:04}`.
pub fn project(n: i64) -> Project {
    Project {
        number: 100_000_000_000 + n,
        project_id: format!("test-project-{n:04}"),
        display_name: format!("Project {n}"),
        parent: "organizations/123456789012".into(),
        state: ProjectState::Active,
        labels: BTreeMap::from([
            ("env".to_owned(), "test".to_owned()),
            ("n".to_owned(), n.to_string()),
        ]),
        tier: "free".into(),
        studio_visible: n % 2 == 0,
        created_by: "user:admin@example.com".into(),
        create_time: t0() + secs(n),
        update_time: t0() + secs(n),
        delete_time: None,
        etag: format!("W/\"p{n}\""),
    }
}

/// 32 random bytes, as an HMAC would be.
fn random_hash() -> Vec<u8> {
    let mut h = uuid::Uuid::new_v4().as_bytes().to_vec();
    h.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    h
}

/// Key `key-{n:04}` of a project, unrestricted, with a random lookup hash and uid.
pub fn api_key(project_number: i64, n: i64) -> ApiKey {
    // A ciphertext with the bytes a text column would mangle.
    let mut ciphertext = vec![0u8, 0xff, 0x00, b'\'', b'"', 0x80];
    ciphertext.extend_from_slice(&random_hash());
    ApiKey {
        project_number,
        key_id: format!("key-{n:04}"),
        uid: uuid::Uuid::new_v4().to_string(),
        display_name: format!("Key {n}"),
        lookup_hash: random_hash(),
        ciphertext,
        last4: "x_-9".into(),
        restrictions: Restrictions::default(),
        annotations: BTreeMap::new(),
        service_account_email: None,
        create_time: t0() + secs(n),
        update_time: t0() + secs(n),
        delete_time: None,
        etag: format!("W/\"k{n}\""),
    }
}

/// Every kind of restriction, with characters JSON must escape.
pub fn full_restrictions() -> Restrictions {
    Restrictions {
        browser_key_restrictions: Some(BrowserKeyRestrictions {
            allowed_referrers: vec!["https://*.example.com/*".into(), "localhost:8080".into()],
        }),
        server_key_restrictions: Some(ServerKeyRestrictions {
            allowed_ips: vec!["10.0.0.0/8".into(), "2001:db8::1".into()],
        }),
        android_key_restrictions: Some(AndroidKeyRestrictions {
            allowed_applications: vec![AndroidApplication {
                sha1_fingerprint: "DA:39:A3:EE:5E:6B:4B:0D:32:55:BF:EF:95:60:18:90:AF:D8:07:09"
                    .into(),
                package_name: "com.example.app".into(),
            }],
        }),
        ios_key_restrictions: Some(IosKeyRestrictions {
            allowed_bundle_ids: vec!["com.example.ios".into()],
        }),
        api_targets: vec![
            ApiTarget {
                service: "generativelanguage.googleapis.com".into(),
                methods: vec![
                    "google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent".into(),
                    "*Stream*".into(),
                ],
            },
            ApiTarget {
                service: "aiplatform.googleapis.com".into(),
                methods: vec![],
            },
        ],
    }
}

/// Service account `n` of a project.
pub fn service_account(project: &Project, n: i64) -> ServiceAccount {
    ServiceAccount {
        email: format!(
            "account-{n:03}@{}.iam.gserviceaccount.com",
            project.project_id
        ),
        unique_id: format!("1{:011}{:09}", project.number % 100_000_000_000, n),
        project_number: project.number,
        project_id: project.project_id.clone(),
        display_name: format!("Account {n}"),
        description: "runs \"things\"; d'accord".into(),
        disabled: false,
        create_time: t0() + secs(n),
        etag: format!("BwY{n}"),
    }
}

/// A key of a service account, created `n` seconds after [`t0`], with a random id.
pub fn service_account_key(email: &str, n: i64) -> ServiceAccountKey {
    ServiceAccountKey {
        key_id: format!("{}{:08x}", uuid::Uuid::new_v4().simple(), n),
        service_account_email: email.to_owned(),
        public_key_pem: "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n".into(),
        disabled: false,
        valid_after: t0() + secs(n),
        valid_before: t0() + Duration::days(3650),
        create_time: t0() + secs(n),
    }
}

pub fn access_token(expire_time: OffsetDateTime) -> AccessToken {
    AccessToken {
        token_hash: random_hash(),
        principal: "serviceAccount:a@b.iam.gserviceaccount.com".into(),
        scope: "https://www.googleapis.com/auth/cloud-platform".into(),
        expire_time,
    }
}

fn page(size: u32, token: Option<String>) -> PageRequest {
    PageRequest {
        page_size: size,
        page_token: token,
    }
}

/// Walks a list to its end, checking each page's size, and returns the pages.
async fn all_pages<T, F, Fut>(size: u32, mut list: F) -> Vec<Vec<T>>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: std::future::Future<Output = crate::Result<crate::Page<T>>>,
{
    let mut pages = Vec::new();
    let mut token = None;
    loop {
        let p = list(page(size, token)).await.unwrap();
        assert!(p.items.len() <= size as usize, "page larger than asked");
        let next = p.next_page_token.clone();
        if next.is_some() {
            assert_eq!(p.items.len(), size as usize, "short page before the last");
        }
        pages.push(p.items);
        match next {
            Some(t) => token = Some(t),
            None => return pages,
        }
        assert!(pages.len() < 1000, "pagination does not end");
    }
}

fn sizes<T>(pages: &[Vec<T>]) -> Vec<usize> {
    pages.iter().map(Vec::len).collect()
}

// === MetaStore ===

pub async fn organization_and_meta<S: Store>(s: &S) {
    assert_eq!(s.organization().await.unwrap(), None);
    let org = Organization {
        number: 123_456_789_012,
        display_name: "Example Org".into(),
        create_time: t0(),
    };
    s.create_organization(&org).await.unwrap();
    assert_eq!(s.organization().await.unwrap(), Some(org.clone()));

    // One per installation: neither the same nor another one can follow.
    assert_err!(
        s.create_organization(&org).await,
        StoreError::AlreadyExists(_)
    );
    let other = Organization {
        number: 999_999_999_999,
        ..org.clone()
    };
    assert_err!(
        s.create_organization(&other).await,
        StoreError::AlreadyExists(_)
    );
    assert_eq!(s.organization().await.unwrap(), Some(org));

    assert_eq!(s.get_meta("bootstrap.version").await.unwrap(), None);
    s.set_meta("bootstrap.version", "1").await.unwrap();
    s.set_meta("other", "it's \"quoted\" ✓").await.unwrap();
    assert_eq!(
        s.get_meta("bootstrap.version").await.unwrap().as_deref(),
        Some("1")
    );
    s.set_meta("bootstrap.version", "2").await.unwrap();
    assert_eq!(
        s.get_meta("bootstrap.version").await.unwrap().as_deref(),
        Some("2")
    );
    assert_eq!(
        s.get_meta("other").await.unwrap().as_deref(),
        Some("it's \"quoted\" ✓")
    );
}

pub async fn operations<S: Store>(s: &S) {
    assert_err!(
        s.get_operation("operations/nope").await,
        StoreError::NotFound
    );
    let op = StoredOperation {
        name: "operations/akmf.p7-1234-abcd".into(),
        body: r#"{"name":"operations/akmf.p7-1234-abcd","done":true}"#.into(),
        create_time: t0(),
    };
    s.put_operation(&op).await.unwrap();
    assert_eq!(s.get_operation(&op.name).await.unwrap(), op);

    // `put` replaces.
    let again = StoredOperation {
        body: r#"{"name":"operations/akmf.p7-1234-abcd","done":true,"response":{}}"#.into(),
        create_time: t0() + secs(1),
        ..op.clone()
    };
    s.put_operation(&again).await.unwrap();
    assert_eq!(s.get_operation(&op.name).await.unwrap(), again);
}

// === ProjectStore ===

pub async fn projects<S: Store>(s: &S) {
    let p1 = project(1);
    let mut p2 = project(2);
    p2.labels = BTreeMap::new();
    p2.delete_time = Some(t0() + secs(99));
    p2.state = ProjectState::DeleteRequested;
    s.create_project(&p1).await.unwrap();
    s.create_project(&p2).await.unwrap();

    assert_eq!(s.project_by_number(p1.number).await.unwrap(), p1);
    assert_eq!(s.project_by_id(&p1.project_id).await.unwrap(), p1);
    assert_eq!(s.project_by_number(p2.number).await.unwrap(), p2);
    assert_eq!(s.project_by_id(&p2.project_id).await.unwrap(), p2);
    assert_err!(s.project_by_number(42).await, StoreError::NotFound);
    assert_err!(
        s.project_by_id("no-such-project").await,
        StoreError::NotFound
    );

    // The projectId and the number are each unique, deleted projects included.
    let mut same_id = project(3);
    same_id.project_id = p1.project_id.clone();
    assert_err!(
        s.create_project(&same_id).await,
        StoreError::AlreadyExists(_)
    );
    let mut same_deleted_id = project(4);
    same_deleted_id.project_id = p2.project_id.clone();
    assert_err!(
        s.create_project(&same_deleted_id).await,
        StoreError::AlreadyExists(_)
    );
    let mut same_number = project(5);
    same_number.number = p1.number;
    assert_err!(
        s.create_project(&same_number).await,
        StoreError::AlreadyExists(_)
    );
    assert_err!(
        s.project_by_number(same_id.number).await,
        StoreError::NotFound
    );

    let all = s.list_projects(true, &page(0, None)).await.unwrap();
    assert_eq!(all.items, vec![p1.clone(), p2.clone()]);
    assert!(all.next_page_token.is_none());
    let live = s.list_projects(false, &page(0, None)).await.unwrap();
    assert_eq!(live.items, vec![p1]);
}

pub async fn project_updates<S: Store>(s: &S) {
    let before = project(1);
    s.create_project(&before).await.unwrap();

    let mut after = before.clone();
    after.display_name = "Renamed ✓".into();
    after.labels = BTreeMap::from([("team".to_owned(), "a b \"c\"".to_owned())]);
    after.state = ProjectState::DeleteRequested;
    after.delete_time = Some(t0() + secs(600));
    after.tier = "tier-1".into();
    after.studio_visible = !before.studio_visible;
    after.update_time = t0() + secs(600);
    after.etag = "W/\"p1-2\"".into();

    // A stale etag writes nothing.
    assert_err!(
        s.update_project(&after, "W/\"stale\"").await,
        StoreError::EtagMismatch
    );
    assert_eq!(s.project_by_number(before.number).await.unwrap(), before);

    s.update_project(&after, &before.etag).await.unwrap();
    assert_eq!(s.project_by_number(before.number).await.unwrap(), after);
    // The old etag is now stale.
    assert_err!(
        s.update_project(&after, &before.etag).await,
        StoreError::EtagMismatch
    );

    // Identity and creation fields are not the update's to change.
    let mut sneaky = after.clone();
    sneaky.project_id = "another-project".into();
    sneaky.parent = "organizations/1".into();
    sneaky.created_by = "user:mallory@example.com".into();
    sneaky.create_time = t0() - secs(1);
    sneaky.etag = "W/\"p1-3\"".into();
    s.update_project(&sneaky, &after.etag).await.unwrap();
    let stored = s.project_by_number(before.number).await.unwrap();
    assert_eq!(
        stored,
        Project {
            etag: sneaky.etag.clone(),
            ..after.clone()
        }
    );

    // Restore (undelete).
    let mut restored = stored.clone();
    restored.state = ProjectState::Active;
    restored.delete_time = None;
    restored.etag = "W/\"p1-4\"".into();
    s.update_project(&restored, &stored.etag).await.unwrap();
    assert_eq!(s.project_by_id(&before.project_id).await.unwrap(), restored);

    let mut missing = project(2);
    missing.etag = "x".into();
    assert_err!(s.update_project(&missing, "x").await, StoreError::NotFound);
}

pub async fn project_pagination<S: Store>(s: &S) {
    // Inserted out of projectId order; 3 and 6 are deleted.
    let mut ids = BTreeSet::new();
    let mut deleted = BTreeSet::new();
    for n in [5, 2, 7, 1, 6, 3, 4] {
        let mut p = project(n);
        if n == 3 || n == 6 {
            p.state = ProjectState::DeleteRequested;
            p.delete_time = Some(t0());
            deleted.insert(p.project_id.clone());
        }
        ids.insert(p.project_id.clone());
        s.create_project(&p).await.unwrap();
    }
    let expect_all: Vec<String> = ids.iter().cloned().collect();
    let expect_live: Vec<String> = ids.difference(&deleted).cloned().collect();

    let pages = all_pages(3, |r| async move { s.list_projects(true, &r).await }).await;
    assert_eq!(sizes(&pages), vec![3, 3, 1]);
    let got: Vec<String> = pages.into_iter().flatten().map(|p| p.project_id).collect();
    assert_eq!(got, expect_all, "each project once, in projectId order");

    // A page size dividing the count: no empty last page, no dangling token.
    let pages = all_pages(2, |r| async move { s.list_projects(false, &r).await }).await;
    assert_eq!(sizes(&pages), vec![2, 2, 1]);
    let pages = all_pages(5, |r| async move { s.list_projects(false, &r).await }).await;
    assert_eq!(sizes(&pages), vec![5]);
    let got: Vec<String> = pages.into_iter().flatten().map(|p| p.project_id).collect();
    assert_eq!(got, expect_live);

    // A row inserted behind the cursor between pages is not repeated or skipped over.
    let first = s.list_projects(true, &page(3, None)).await.unwrap();
    let mut p0 = project(0);
    p0.project_id = "aaa-first-project".into();
    s.create_project(&p0).await.unwrap();
    let resume = first.next_page_token.clone();
    let rest = all_pages(3, |mut r| {
        if r.page_token.is_none() {
            r.page_token = resume.clone();
        }
        async move { s.list_projects(true, &r).await }
    })
    .await;
    let mut got: Vec<String> = first.items.into_iter().map(|p| p.project_id).collect();
    got.extend(rest.into_iter().flatten().map(|p| p.project_id));
    assert_eq!(got, expect_all);
}

pub async fn default_page_size<S: Store>(s: &S) {
    for n in 1..=crate::DEFAULT_PAGE_SIZE as i64 + 1 {
        s.create_project(&project(n)).await.unwrap();
    }
    let first = s.list_projects(false, &page(0, None)).await.unwrap();
    assert_eq!(first.items.len(), crate::DEFAULT_PAGE_SIZE as usize);
    let second = s
        .list_projects(false, &page(0, first.next_page_token.clone()))
        .await
        .unwrap();
    assert_eq!(second.items.len(), 1);
    assert!(second.next_page_token.is_none());
}

pub async fn services<S: Store>(s: &S) {
    let a = project(1);
    let b = project(2);
    s.create_project(&a).await.unwrap();
    s.create_project(&b).await.unwrap();
    let gl = "generativelanguage.googleapis.com";
    let ai = "aiplatform.googleapis.com";

    assert_err!(s.service(a.number, gl).await, StoreError::NotFound);
    assert!(s.list_services(a.number).await.unwrap().is_empty());

    let on = ServiceState {
        project_number: a.number,
        service: gl.into(),
        enabled: true,
        update_time: t0(),
    };
    s.set_service(&on).await.unwrap();
    assert_eq!(s.service(a.number, gl).await.unwrap(), on);
    assert_err!(s.service(b.number, gl).await, StoreError::NotFound);

    let other = ServiceState {
        service: ai.into(),
        ..on.clone()
    };
    s.set_service(&other).await.unwrap();
    let off = ServiceState {
        enabled: false,
        update_time: t0() + secs(5),
        ..on.clone()
    };
    s.set_service(&off).await.unwrap();
    assert_eq!(s.service(a.number, gl).await.unwrap(), off);
    // Ordered by service name.
    assert_eq!(
        s.list_services(a.number).await.unwrap(),
        vec![other, off.clone()]
    );
    assert!(s.list_services(b.number).await.unwrap().is_empty());

    let orphan = ServiceState {
        project_number: 42,
        ..off
    };
    assert_err!(s.set_service(&orphan).await, StoreError::NotFound);
}

// === KeyStore ===

pub async fn keys<S: Store>(s: &S) {
    let a = project(1);
    let b = project(2);
    s.create_project(&a).await.unwrap();
    s.create_project(&b).await.unwrap();
    let k1 = api_key(a.number, 1);
    let mut k2 = api_key(a.number, 2);
    k2.service_account_email = Some("sa@x.iam.gserviceaccount.com".into());
    k2.annotations = BTreeMap::from([("owner".to_owned(), "ci".to_owned())]);
    // The same keyId in another project is another key.
    let k3 = api_key(b.number, 1);
    for k in [&k1, &k2, &k3] {
        s.create_key(k).await.unwrap();
    }

    for k in [&k1, &k2, &k3] {
        assert_eq!(&s.key(k.project_number, &k.key_id).await.unwrap(), k);
        assert_eq!(&s.key_by_hash(&k.lookup_hash).await.unwrap(), k);
    }
    assert_err!(s.key(a.number, "key-9999").await, StoreError::NotFound);
    assert_err!(s.key(42, &k1.key_id).await, StoreError::NotFound);
    assert_err!(s.key_by_hash(&random_hash()).await, StoreError::NotFound);

    // Duplicate keyId in the project.
    let mut dup_id = api_key(a.number, 1);
    dup_id.display_name = "dup".into();
    assert_err!(s.create_key(&dup_id).await, StoreError::AlreadyExists(_));
    // Duplicate key string (lookup hash), anywhere; the error does not echo the hash.
    let mut dup_hash = api_key(b.number, 7);
    dup_hash.lookup_hash = k1.lookup_hash.clone();
    match s.create_key(&dup_hash).await {
        Err(StoreError::AlreadyExists(what)) => {
            let hex: String = k1.lookup_hash.iter().map(|b| format!("{b:02x}")).collect();
            assert!(!what.contains(&hex[..8]), "{what}");
        }
        other => panic!("duplicate lookup hash: {other:?}"),
    }
    // Duplicate uid.
    let mut dup_uid = api_key(b.number, 8);
    dup_uid.uid = k1.uid.clone();
    assert_err!(s.create_key(&dup_uid).await, StoreError::AlreadyExists(_));
    // A key in a project that does not exist.
    assert_err!(s.create_key(&api_key(42, 1)).await, StoreError::NotFound);

    // None of the failed writes left anything behind.
    assert_eq!(s.key(a.number, &k1.key_id).await.unwrap(), k1);
    assert_err!(
        s.key(b.number, &dup_hash.key_id).await,
        StoreError::NotFound
    );
    assert_err!(s.key(b.number, &dup_uid.key_id).await, StoreError::NotFound);
    let live = s.all_live_keys().await.unwrap();
    assert_eq!(live.len(), 3);
    for k in [&k1, &k2, &k3] {
        assert!(live.contains(k));
    }
    let listed = s.list_keys(a.number, false, &page(0, None)).await.unwrap();
    assert_eq!(listed.items, vec![k1, k2]);
    assert!(listed.next_page_token.is_none());
    assert!(s
        .list_keys(42, true, &page(0, None))
        .await
        .unwrap()
        .items
        .is_empty());
}

/// `create_keys`: every key or none.
pub async fn key_batches<S: Store>(s: &S) {
    let a = project(1);
    s.create_project(&a).await.unwrap();
    s.create_keys(&[]).await.unwrap();
    let batch: Vec<ApiKey> = (1..=50).map(|n| api_key(a.number, n)).collect();
    s.create_keys(&batch).await.unwrap();
    for k in &batch {
        assert_eq!(&s.key_by_hash(&k.lookup_hash).await.unwrap(), k);
    }

    // A batch whose last key clashes (same key string as a stored key) writes nothing.
    let mut clash: Vec<ApiKey> = (51..=60).map(|n| api_key(a.number, n)).collect();
    clash[9].lookup_hash = batch[0].lookup_hash.clone();
    assert_err!(s.create_keys(&clash).await, StoreError::AlreadyExists(_));
    // A batch with a key in a project that does not exist writes nothing either.
    let mut orphan: Vec<ApiKey> = (61..=62).map(|n| api_key(a.number, n)).collect();
    orphan[1].project_number = 42;
    assert_err!(s.create_keys(&orphan).await, StoreError::NotFound);
    for k in clash.iter().take(9).chain(orphan.iter().take(1)) {
        assert_err!(s.key(a.number, &k.key_id).await, StoreError::NotFound);
    }
    assert_eq!(s.all_live_keys().await.unwrap().len(), batch.len());

    // The store is still writable after a failed batch.
    s.create_keys(&clash[..9]).await.unwrap();
    assert_eq!(s.all_live_keys().await.unwrap().len(), batch.len() + 9);

    // Paging through live keys sees each live key once and skips soft-deleted ones.
    let mut gone = s.key(a.number, &batch[3].key_id).await.unwrap();
    let etag = gone.etag.clone();
    gone.delete_time = Some(t0() + secs(1000));
    gone.etag = "W/\"gone\"".into();
    s.update_key(&gone, &etag).await.unwrap();
    let mut seen: Vec<ApiKey> = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let (page, next) = s.live_keys_page(after.as_deref(), 7).await.unwrap();
        assert!(page.len() <= 7);
        seen.extend(page);
        match next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    let mut want = s.all_live_keys().await.unwrap();
    want.sort_by(|x, y| x.lookup_hash.cmp(&y.lookup_hash));
    seen.sort_by(|x, y| x.lookup_hash.cmp(&y.lookup_hash));
    assert_eq!(want.len(), batch.len() + 8);
    assert_eq!(seen, want);
    assert!(!seen.iter().any(|k| k.key_id == gone.key_id));
    assert_err!(
        s.live_keys_page(Some(b"nope"), 7).await,
        StoreError::InvalidArgument(_)
    );
}

/// `live_snapshot_keys_page` and `live_key_count`: the snapshot's projection of exactly the
/// keys `live_keys_page` returns, page for page, with interchangeable cursors.
pub async fn snapshot_key_pages<S: Store>(s: &S) {
    let a = project(1);
    let b = project(2);
    s.create_project(&a).await.unwrap();
    s.create_project(&b).await.unwrap();
    assert_eq!(s.live_key_count().await.unwrap(), 0);
    let (empty, next) = s.live_snapshot_keys_page(None, 5).await.unwrap();
    assert!(empty.is_empty() && next.is_none());
    let mut none = 0;
    s.live_snapshot_keys(5, &mut |_| none += 1).await.unwrap();
    assert_eq!(none, 0);

    let mut keys: Vec<ApiKey> = (1..=23)
        .map(|n| api_key(if n % 2 == 0 { a.number } else { b.number }, n))
        .collect();
    for (i, k) in keys.iter_mut().enumerate() {
        match i % 3 {
            0 => {}
            1 => k.restrictions = full_restrictions(),
            _ => {
                k.restrictions.api_targets = vec![ApiTarget {
                    service: format!("svc{}.example.com", i % 2),
                    methods: vec![],
                }];
                k.service_account_email = Some(format!("sa{i}@p.iam.gserviceaccount.com"));
            }
        }
    }
    s.create_keys(&keys).await.unwrap();
    let mut gone = keys[4].clone();
    gone.delete_time = Some(t0() + secs(1000));
    gone.etag = "W/\"gone\"".into();
    s.update_key(&gone, &keys[4].etag).await.unwrap();
    assert_eq!(s.live_key_count().await.unwrap(), 22);

    // Page for page what live_keys_page returns, projected.
    let mut after: Option<Vec<u8>> = None;
    let mut seen: Vec<SnapshotKey> = Vec::new();
    let mut pages = 0;
    loop {
        let (full, full_next) = s.live_keys_page(after.as_deref(), 5).await.unwrap();
        let (slim, next) = s
            .live_snapshot_keys_page(after.as_deref(), 5)
            .await
            .unwrap();
        assert_eq!(next, full_next);
        let projected: Vec<SnapshotKey> = full.into_iter().map(SnapshotKey::from).collect();
        assert_eq!(slim, projected);
        // Equal restrictions read in one page may share a value; unequal ones never do.
        for x in &slim {
            for y in &slim {
                if Arc::ptr_eq(&x.restrictions, &y.restrictions) {
                    assert_eq!(x.restrictions, y.restrictions);
                }
            }
        }
        seen.extend(slim);
        pages += 1;
        match next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    assert!(pages >= 5, "{pages} pages");
    let mut want: Vec<SnapshotKey> = keys
        .iter()
        .filter(|k| k.key_id != gone.key_id)
        .cloned()
        .map(SnapshotKey::from)
        .collect();
    want.sort_by(|x, y| x.lookup_hash.cmp(&y.lookup_hash));
    seen.sort_by(|x, y| x.lookup_hash.cmp(&y.lookup_hash));
    assert_eq!(seen, want);
    assert!(seen.iter().any(|k| *k.restrictions == full_restrictions()));
    assert!(seen.iter().any(|k| k.service_account_email.is_some()));

    // Read in one pass, the same keys in the same order, handed over in pages of at most
    // the size asked for; one page of 1,000 holds them all.
    for size in [5u32, 7, 22, 1000] {
        let mut pages: Vec<Vec<SnapshotKey>> = Vec::new();
        s.live_snapshot_keys(size, &mut |page| pages.push(page))
            .await
            .unwrap();
        assert!(pages
            .iter()
            .all(|p| !p.is_empty() && p.len() <= size as usize));
        assert_eq!(
            pages.len(),
            22usize.div_ceil(size as usize),
            "page size {size}"
        );
        let mut all: Vec<SnapshotKey> = pages.into_iter().flatten().collect();
        let mut walked = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let (page, next) = s
                .live_snapshot_keys_page(after.as_deref(), 3)
                .await
                .unwrap();
            walked.extend(page);
            match next {
                Some(c) => after = Some(c),
                None => break,
            }
        }
        assert_eq!(all, walked, "page size {size}");
        all.sort_by(|x, y| x.lookup_hash.cmp(&y.lookup_hash));
        assert_eq!(all, want);
    }

    // A cursor from one method continues the other.
    let (first, next) = s.live_snapshot_keys_page(None, 10).await.unwrap();
    let (rest, _) = s.live_keys_page(next.as_deref(), 100).await.unwrap();
    assert_eq!(first.len() + rest.len(), 22);
    assert!(!rest
        .iter()
        .any(|k| first.iter().any(|f| f.lookup_hash == k.lookup_hash)));
    assert_err!(
        s.live_snapshot_keys_page(Some(b"nope"), 7).await,
        StoreError::InvalidArgument(_)
    );
    s.purge_deleted_keys(t0() + secs(2000)).await.unwrap();
    assert_eq!(s.live_key_count().await.unwrap(), 22);
}

pub async fn key_updates<S: Store>(s: &S) {
    let p = project(1);
    s.create_project(&p).await.unwrap();
    let before = api_key(p.number, 1);
    s.create_key(&before).await.unwrap();

    let mut after = before.clone();
    after.display_name = "Renamed".into();
    after.restrictions = full_restrictions();
    after.annotations = BTreeMap::from([("a".to_owned(), "1".to_owned())]);
    after.service_account_email = Some("sa@p.iam.gserviceaccount.com".into());
    after.update_time = t0() + secs(100);
    after.etag = "W/\"k1-2\"".into();

    assert_err!(
        s.update_key(&after, "W/\"stale\"").await,
        StoreError::EtagMismatch
    );
    assert_eq!(s.key(p.number, &before.key_id).await.unwrap(), before);

    s.update_key(&after, &before.etag).await.unwrap();
    assert_eq!(s.key(p.number, &before.key_id).await.unwrap(), after);
    assert_eq!(s.key_by_hash(&before.lookup_hash).await.unwrap(), after);
    assert_err!(
        s.update_key(&after, &before.etag).await,
        StoreError::EtagMismatch
    );

    // Back to unrestricted and unbound.
    let mut plain = after.clone();
    plain.restrictions = Restrictions::default();
    plain.annotations = BTreeMap::new();
    plain.service_account_email = None;
    plain.etag = "W/\"k1-3\"".into();
    s.update_key(&plain, &after.etag).await.unwrap();
    assert_eq!(s.key(p.number, &before.key_id).await.unwrap(), plain);

    // Identity, secret and creation fields are not the update's to change.
    let mut sneaky = plain.clone();
    sneaky.uid = "00000000-0000-0000-0000-000000000000".into();
    sneaky.lookup_hash = random_hash();
    sneaky.ciphertext = vec![1, 2, 3];
    sneaky.last4 = "AAAA".into();
    sneaky.create_time = t0() - secs(1);
    sneaky.etag = "W/\"k1-4\"".into();
    s.update_key(&sneaky, &plain.etag).await.unwrap();
    assert_eq!(
        s.key(p.number, &before.key_id).await.unwrap(),
        ApiKey {
            etag: sneaky.etag.clone(),
            ..plain.clone()
        }
    );
    assert_err!(
        s.key_by_hash(&sneaky.lookup_hash).await,
        StoreError::NotFound
    );

    let missing = api_key(p.number, 2);
    assert_err!(
        s.update_key(&missing, &missing.etag).await,
        StoreError::NotFound
    );
}

pub async fn key_soft_delete<S: Store>(s: &S) {
    let p = project(1);
    s.create_project(&p).await.unwrap();
    let keys: Vec<ApiKey> = (1..=3).map(|n| api_key(p.number, n)).collect();
    for k in &keys {
        s.create_key(k).await.unwrap();
    }
    let mut gone = keys[1].clone();
    gone.delete_time = Some(t0() + secs(60));
    gone.update_time = t0() + secs(60);
    gone.etag = "W/\"deleted\"".into();
    s.update_key(&gone, &keys[1].etag).await.unwrap();

    let live = s.list_keys(p.number, false, &page(0, None)).await.unwrap();
    assert_eq!(live.items, vec![keys[0].clone(), keys[2].clone()]);
    let all = s.list_keys(p.number, true, &page(0, None)).await.unwrap();
    assert_eq!(
        all.items,
        vec![keys[0].clone(), gone.clone(), keys[2].clone()]
    );
    // Still readable directly, and by hash (so callers can answer "deleted").
    assert_eq!(s.key(p.number, &gone.key_id).await.unwrap(), gone);
    assert_eq!(s.key_by_hash(&gone.lookup_hash).await.unwrap(), gone);
    let snapshot = s.all_live_keys().await.unwrap();
    assert_eq!(snapshot.len(), 2);
    assert!(!snapshot.iter().any(|k| k.key_id == gone.key_id));
    // Its keyId stays taken while it can be undeleted.
    assert_err!(
        s.create_key(&api_key(p.number, 2)).await,
        StoreError::AlreadyExists(_)
    );

    // Undelete.
    let mut back = gone.clone();
    back.delete_time = None;
    back.etag = "W/\"undeleted\"".into();
    s.update_key(&back, &gone.etag).await.unwrap();
    assert_eq!(s.all_live_keys().await.unwrap().len(), 3);
    assert_eq!(
        s.list_keys(p.number, false, &page(0, None))
            .await
            .unwrap()
            .items[1],
        back
    );
}

pub async fn key_purge<S: Store>(s: &S) {
    let p = project(1);
    s.create_project(&p).await.unwrap();
    let now = t0() + Duration::days(100);
    let cutoff = now - Duration::days(30);
    let deleted_at = [
        Some(now - Duration::days(40)), // purged
        Some(now - Duration::days(31)), // purged
        Some(cutoff),                   // exactly at the cutoff: kept
        Some(now - Duration::days(10)), // kept
        None,                           // live
    ];
    let mut keys = Vec::new();
    for (n, when) in deleted_at.iter().enumerate() {
        let mut k = api_key(p.number, n as i64);
        k.delete_time = *when;
        s.create_key(&k).await.unwrap();
        keys.push(k);
    }
    assert_eq!(s.purge_deleted_keys(cutoff).await.unwrap(), 2);
    for k in &keys[..2] {
        assert_err!(s.key(p.number, &k.key_id).await, StoreError::NotFound);
        assert_err!(s.key_by_hash(&k.lookup_hash).await, StoreError::NotFound);
    }
    for k in &keys[2..] {
        assert_eq!(&s.key(p.number, &k.key_id).await.unwrap(), k);
    }
    assert_eq!(s.purge_deleted_keys(cutoff).await.unwrap(), 0);
    // A purged keyId can be used again.
    s.create_key(&api_key(p.number, 0)).await.unwrap();
}

pub async fn key_pagination<S: Store>(s: &S) {
    let p = project(1);
    let other = project(2);
    s.create_project(&p).await.unwrap();
    s.create_project(&other).await.unwrap();
    // Eight keys, several created in the same microsecond (ordered by keyId then),
    // inserted out of order; two soft-deleted.
    let mut keys = Vec::new();
    for (n, at) in [
        (8, 3),
        (1, 1),
        (5, 2),
        (2, 1),
        (7, 3),
        (3, 1),
        (6, 2),
        (4, 2),
    ] {
        let mut k = api_key(p.number, n);
        k.create_time = t0() + secs(at);
        if n == 2 || n == 7 {
            k.delete_time = Some(t0() + secs(10));
        }
        s.create_key(&k).await.unwrap();
        keys.push(k);
    }
    s.create_key(&api_key(other.number, 1)).await.unwrap();
    keys.sort_by(|a, b| (a.create_time, &a.key_id).cmp(&(b.create_time, &b.key_id)));
    let pn = p.number;
    let ids = |ks: &[ApiKey]| ks.iter().map(|k| k.key_id.clone()).collect::<Vec<_>>();

    let pages = all_pages(3, |r| async move { s.list_keys(pn, true, &r).await }).await;
    assert_eq!(sizes(&pages), vec![3, 3, 2]);
    let got: Vec<ApiKey> = pages.into_iter().flatten().collect();
    assert_eq!(
        ids(&got),
        ids(&keys),
        "each key once, by create time then keyId"
    );
    assert_eq!(got, keys);

    let live: Vec<ApiKey> = keys
        .iter()
        .filter(|k| k.delete_time.is_none())
        .cloned()
        .collect();
    let pages = all_pages(3, |r| async move { s.list_keys(pn, false, &r).await }).await;
    assert_eq!(sizes(&pages), vec![3, 3]);
    assert_eq!(pages.concat(), live);
    let pages = all_pages(4, |r| async move { s.list_keys(pn, false, &r).await }).await;
    assert_eq!(sizes(&pages), vec![4, 2]);
    assert_eq!(pages.concat(), live);
}

pub async fn restrictions_round_trip<S: Store>(s: &S) {
    let p = project(1);
    s.create_project(&p).await.unwrap();
    let mut k = api_key(p.number, 1);
    k.restrictions = full_restrictions();
    k.annotations = BTreeMap::from([
        ("unicode".to_owned(), "ключ 钥匙 ✓".to_owned()),
        ("json".to_owned(), r#"{"a":[1,"\n"]}"#.to_owned()),
        (String::new(), String::new()),
    ]);
    s.create_key(&k).await.unwrap();
    assert_eq!(s.key(p.number, &k.key_id).await.unwrap(), k);
    assert_eq!(s.key_by_hash(&k.lookup_hash).await.unwrap(), k);
    assert_eq!(s.all_live_keys().await.unwrap(), vec![k.clone()]);
    assert_eq!(
        s.list_keys(p.number, false, &page(0, None))
            .await
            .unwrap()
            .items,
        vec![k.clone()]
    );

    // Partly filled restrictions come back as they went in (no defaults added).
    let mut partial = api_key(p.number, 2);
    partial.restrictions = Restrictions {
        server_key_restrictions: Some(ServerKeyRestrictions {
            allowed_ips: vec![],
        }),
        api_targets: vec![ApiTarget {
            service: "generativelanguage.googleapis.com".into(),
            methods: vec![],
        }],
        ..Restrictions::default()
    };
    s.create_key(&partial).await.unwrap();
    assert_eq!(s.key(p.number, &partial.key_id).await.unwrap(), partial);
}

// === IdentityStore ===

pub async fn service_accounts<S: Store>(s: &S) {
    let a = project(1);
    let b = project(2);
    s.create_project(&a).await.unwrap();
    s.create_project(&b).await.unwrap();
    let sa2 = service_account(&a, 2);
    let sa1 = service_account(&a, 1);
    let sb = service_account(&b, 1);
    for sa in [&sa2, &sa1, &sb] {
        s.create_service_account(sa).await.unwrap();
    }
    for sa in [&sa1, &sa2, &sb] {
        assert_eq!(&s.service_account(&sa.email).await.unwrap(), sa);
        assert_eq!(
            &s.service_account_by_unique_id(&sa.unique_id).await.unwrap(),
            sa
        );
    }
    assert_err!(
        s.service_account("nobody@x.iam.gserviceaccount.com").await,
        StoreError::NotFound
    );
    assert_err!(
        s.service_account_by_unique_id("1").await,
        StoreError::NotFound
    );
    // Ordered by email.
    assert_eq!(
        s.list_service_accounts(a.number).await.unwrap(),
        vec![sa1.clone(), sa2.clone()]
    );
    assert!(s.list_service_accounts(42).await.unwrap().is_empty());

    let mut dup_email = service_account(&a, 3);
    dup_email.email = sa1.email.clone();
    assert_err!(
        s.create_service_account(&dup_email).await,
        StoreError::AlreadyExists(_)
    );
    let mut dup_uid = service_account(&a, 4);
    dup_uid.unique_id = sa1.unique_id.clone();
    assert_err!(
        s.create_service_account(&dup_uid).await,
        StoreError::AlreadyExists(_)
    );
    let mut orphan = service_account(&a, 5);
    orphan.project_number = 42;
    assert_err!(
        s.create_service_account(&orphan).await,
        StoreError::NotFound
    );
    assert_eq!(s.list_service_accounts(a.number).await.unwrap().len(), 2);

    let mut changed = sa1.clone();
    changed.display_name = "Renamed".into();
    changed.description = String::new();
    changed.disabled = true;
    changed.etag = "BwY1-2".into();
    s.update_service_account(&changed).await.unwrap();
    assert_eq!(s.service_account(&sa1.email).await.unwrap(), changed);
    let mut ghost = service_account(&a, 9);
    ghost.display_name = "x".into();
    assert_err!(s.update_service_account(&ghost).await, StoreError::NotFound);

    s.delete_service_account(&sa2.email).await.unwrap();
    assert_err!(s.service_account(&sa2.email).await, StoreError::NotFound);
    assert_err!(
        s.service_account_by_unique_id(&sa2.unique_id).await,
        StoreError::NotFound
    );
    assert_err!(
        s.delete_service_account(&sa2.email).await,
        StoreError::NotFound
    );
    assert_eq!(
        s.list_service_accounts(a.number).await.unwrap(),
        vec![changed]
    );
}

pub async fn service_account_keys<S: Store>(s: &S) {
    let p = project(1);
    s.create_project(&p).await.unwrap();
    let sa1 = service_account(&p, 1);
    let sa2 = service_account(&p, 2);
    s.create_service_account(&sa1).await.unwrap();
    s.create_service_account(&sa2).await.unwrap();
    let k2 = service_account_key(&sa1.email, 2);
    let k1 = service_account_key(&sa1.email, 1);
    let other = service_account_key(&sa2.email, 1);
    for k in [&k2, &k1, &other] {
        s.add_service_account_key(k).await.unwrap();
    }
    for k in [&k1, &k2, &other] {
        assert_eq!(&s.service_account_key(&k.key_id).await.unwrap(), k);
    }
    assert_err!(
        s.service_account_key(&"0".repeat(40)).await,
        StoreError::NotFound
    );
    // Ordered by create time.
    assert_eq!(
        s.list_service_account_keys(&sa1.email).await.unwrap(),
        vec![k1.clone(), k2.clone()]
    );
    assert!(s
        .list_service_account_keys("nobody@x.iam.gserviceaccount.com")
        .await
        .unwrap()
        .is_empty());

    let mut dup = service_account_key(&sa2.email, 3);
    dup.key_id = k1.key_id.clone();
    assert_err!(
        s.add_service_account_key(&dup).await,
        StoreError::AlreadyExists(_)
    );
    let orphan = service_account_key("nobody@x.iam.gserviceaccount.com", 1);
    assert_err!(
        s.add_service_account_key(&orphan).await,
        StoreError::NotFound
    );

    let mut disabled = k1.clone();
    disabled.disabled = true;
    disabled.valid_before = t0() + secs(3600);
    s.update_service_account_key(&disabled).await.unwrap();
    assert_eq!(s.service_account_key(&k1.key_id).await.unwrap(), disabled);
    assert_err!(
        s.update_service_account_key(&orphan).await,
        StoreError::NotFound
    );

    s.delete_service_account_key(&k2.key_id).await.unwrap();
    assert_err!(
        s.service_account_key(&k2.key_id).await,
        StoreError::NotFound
    );
    assert_err!(
        s.delete_service_account_key(&k2.key_id).await,
        StoreError::NotFound
    );
    assert_eq!(
        s.list_service_account_keys(&sa1.email).await.unwrap(),
        vec![disabled.clone()]
    );

    // Deleting an account deletes its keys, and only its keys.
    s.delete_service_account(&sa1.email).await.unwrap();
    assert_err!(
        s.service_account_key(&k1.key_id).await,
        StoreError::NotFound
    );
    assert!(s
        .list_service_account_keys(&sa1.email)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(s.service_account_key(&other.key_id).await.unwrap(), other);
}

pub async fn access_tokens<S: Store>(s: &S) {
    let now = t0() + Duration::days(1);
    let expired = access_token(now - secs(1));
    let boundary = access_token(now);
    let fresh = access_token(now + Duration::hours(1));
    for t in [&expired, &boundary, &fresh] {
        s.put_access_token(t).await.unwrap();
    }
    for t in [&expired, &boundary, &fresh] {
        assert_eq!(&s.access_token(&t.token_hash).await.unwrap(), t);
    }
    assert_err!(s.access_token(&random_hash()).await, StoreError::NotFound);
    let mut dup = access_token(now);
    dup.token_hash = fresh.token_hash.clone();
    assert_err!(s.put_access_token(&dup).await, StoreError::AlreadyExists(_));
    assert_eq!(s.access_token(&fresh.token_hash).await.unwrap(), fresh);

    assert_eq!(s.purge_expired_tokens(now).await.unwrap(), 1);
    assert_err!(
        s.access_token(&expired.token_hash).await,
        StoreError::NotFound
    );
    assert_eq!(
        s.access_token(&boundary.token_hash).await.unwrap(),
        boundary
    );
    assert_eq!(s.purge_expired_tokens(now).await.unwrap(), 0);
    assert_eq!(
        s.purge_expired_tokens(now + Duration::days(1))
            .await
            .unwrap(),
        2
    );
}

/// A policy on `resource` for `constraint`, updated `n` seconds after [`t0`].
pub fn org_policy(resource: &str, constraint: &str, n: i64) -> OrgPolicyRecord {
    OrgPolicyRecord {
        resource: resource.to_owned(),
        constraint: constraint.to_owned(),
        spec: format!(r#"{{"rules":[{{"enforce":{}}}]}}"#, n % 2 == 0),
        dry_run_spec: None,
        etag: format!("CL{n}"),
        update_time: t0() + secs(n),
    }
}

pub async fn org_policies<S: Store>(s: &S) {
    const C1: &str = "iam.managed.disableServiceAccountApiKeyCreation";
    const C2: &str = "iam.managed.disableServiceAccountKeyCreation";
    let org = "organizations/1234";
    let proj = "projects/5678";
    assert_err!(s.org_policy(org, C1).await, StoreError::NotFound);
    assert!(s.list_org_policies(org).await.unwrap().is_empty());

    let a = org_policy(org, C1, 1);
    let mut b = org_policy(org, C2, 2);
    b.dry_run_spec = Some(r#"{"rules":[{"enforce":true}]}"#.into());
    let c = org_policy(proj, C1, 3);
    for p in [&b, &a, &c] {
        s.create_org_policy(p).await.unwrap();
    }
    assert_eq!(s.org_policy(org, C1).await.unwrap(), a);
    assert_eq!(s.org_policy(org, C2).await.unwrap(), b);
    assert_eq!(s.org_policy(proj, C1).await.unwrap(), c);
    // Ordered by constraint, and only the resource's own.
    assert_eq!(
        s.list_org_policies(org).await.unwrap(),
        vec![a.clone(), b.clone()]
    );
    assert_eq!(s.list_org_policies(proj).await.unwrap(), vec![c.clone()]);
    assert_err!(
        s.create_org_policy(&org_policy(org, C1, 9)).await,
        StoreError::AlreadyExists(_)
    );
    assert_eq!(s.org_policy(org, C1).await.unwrap(), a);

    // Compare-and-swap updates.
    let mut a2 = org_policy(org, C1, 4);
    a2.dry_run_spec = Some("null".into());
    assert_err!(
        s.update_org_policy(&a2, "stale").await,
        StoreError::EtagMismatch
    );
    assert_eq!(s.org_policy(org, C1).await.unwrap(), a);
    s.update_org_policy(&a2, &a.etag).await.unwrap();
    assert_eq!(s.org_policy(org, C1).await.unwrap(), a2);
    assert_err!(
        s.update_org_policy(&org_policy(proj, C2, 5), "CL5").await,
        StoreError::NotFound
    );
    // Clearing the dry-run spec.
    let mut b2 = b.clone();
    b2.dry_run_spec = None;
    b2.etag = "CL6".into();
    s.update_org_policy(&b2, &b.etag).await.unwrap();
    assert_eq!(s.org_policy(org, C2).await.unwrap(), b2);

    // Deletes: etag-checked when asked, NotFound when absent.
    assert_err!(
        s.delete_org_policy(org, C1, Some("stale")).await,
        StoreError::EtagMismatch
    );
    assert_eq!(s.org_policy(org, C1).await.unwrap(), a2);
    s.delete_org_policy(org, C1, Some(&a2.etag)).await.unwrap();
    assert_err!(s.org_policy(org, C1).await, StoreError::NotFound);
    assert_err!(
        s.delete_org_policy(org, C1, None).await,
        StoreError::NotFound
    );
    s.delete_org_policy(org, C2, None).await.unwrap();
    assert!(s.list_org_policies(org).await.unwrap().is_empty());
    // The project's policy is untouched, and a deleted policy can be set again.
    assert_eq!(s.org_policy(proj, C1).await.unwrap(), c);
    s.create_org_policy(&a).await.unwrap();
    assert_eq!(s.org_policy(org, C1).await.unwrap(), a);
}

pub async fn invalid_page_tokens<S: Store>(s: &S) {
    let p = project(1);
    s.create_project(&p).await.unwrap();
    s.create_project(&project(2)).await.unwrap();
    for n in 1..=3 {
        s.create_key(&api_key(p.number, n)).await.unwrap();
    }
    let project_token = s
        .list_projects(false, &page(1, None))
        .await
        .unwrap()
        .next_page_token
        .expect("a second page");
    let key_token = s
        .list_keys(p.number, false, &page(1, None))
        .await
        .unwrap()
        .next_page_token
        .expect("a second page");

    for bad in ["not a token", "%%%", "AAAA", key_token.as_str()] {
        assert_err!(
            s.list_projects(false, &page(1, Some(bad.to_owned()))).await,
            StoreError::InvalidArgument(_)
        );
    }
    for bad in ["not a token", "%%%", "AAAA", project_token.as_str()] {
        assert_err!(
            s.list_keys(p.number, false, &page(1, Some(bad.to_owned())))
                .await,
            StoreError::InvalidArgument(_)
        );
    }
    // A key token belongs to its project's list.
    assert_err!(
        s.list_keys(project(2).number, false, &page(1, Some(key_token.clone())))
            .await,
        StoreError::InvalidArgument(_)
    );
    // ... and works with or without deleted keys shown.
    let rest = s
        .list_keys(p.number, true, &page(5, Some(key_token)))
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 2);
    assert!(rest.next_page_token.is_none());
}

/// Twenty tasks insert at once (projects, keys, service accounts, tokens), reading
/// their own writes back; every write succeeds and nothing is lost.
pub async fn concurrent_inserts<S: Store + 'static>(s: Arc<S>) {
    const TASKS: i64 = 20;
    let shared = project(0);
    s.create_project(&shared).await.unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    for n in 1..=TASKS {
        let s = s.clone();
        let shared = shared.number;
        tasks.spawn(async move {
            let p = project(n);
            s.create_project(&p).await?;
            let own = api_key(p.number, 1);
            s.create_key(&own).await?;
            let in_shared = api_key(shared, n);
            s.create_key(&in_shared).await?;
            s.create_service_account(&service_account(&p, 1)).await?;
            s.put_access_token(&access_token(t0())).await?;
            let back = s.key_by_hash(&in_shared.lookup_hash).await?;
            assert_eq!(back, in_shared);
            s.project_by_id(&p.project_id).await?;
            Ok::<_, StoreError>(n)
        });
    }
    let mut done = BTreeSet::new();
    while let Some(joined) = tasks.join_next().await {
        let n = joined
            .expect("task panicked")
            .expect("concurrent write failed");
        done.insert(n);
    }
    assert_eq!(done.len(), TASKS as usize);

    let projects = all_pages(7, |r| {
        let s = s.clone();
        async move { s.list_projects(false, &r).await }
    })
    .await
    .concat();
    assert_eq!(projects.len(), TASKS as usize + 1);
    let in_shared = s
        .list_keys(shared.number, false, &page(0, None))
        .await
        .unwrap();
    assert_eq!(in_shared.items.len(), TASKS as usize);
    assert_eq!(s.all_live_keys().await.unwrap().len(), 2 * TASKS as usize);
    assert_eq!(
        s.purge_expired_tokens(t0() + secs(1)).await.unwrap(),
        TASKS as u64
    );
}

/// A hundred tasks create keys in one project at once while others list them: every
/// create succeeds, and every key is there afterwards, once.
pub async fn concurrent_key_creation<S: Store + 'static>(s: Arc<S>) {
    const TASKS: i64 = 100;
    let p = project(1);
    s.create_project(&p).await.unwrap();
    let pn = p.number;

    let mut tasks = tokio::task::JoinSet::new();
    for n in 1..=TASKS {
        let s = s.clone();
        tasks.spawn(async move {
            let k = api_key(pn, n);
            s.create_key(&k).await?;
            // Read-your-writes, through whatever connection serves the read.
            assert_eq!(s.key_by_hash(&k.lookup_hash).await?, k);
            assert_eq!(s.key(k.project_number, &k.key_id).await?, k);
            if n % 10 == 0 {
                let listed = s
                    .list_keys(pn, false, &page(crate::MAX_PAGE_SIZE, None))
                    .await?;
                assert!(listed.items.iter().any(|l| l.key_id == k.key_id));
                s.all_live_keys().await?;
            }
            Ok::<_, StoreError>(k)
        });
    }
    let mut created = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        created.push(
            joined
                .expect("task panicked")
                .expect("concurrent create failed"),
        );
    }
    created.sort_by(|a, b| (a.create_time, &a.key_id).cmp(&(b.create_time, &b.key_id)));
    assert_eq!(created.len(), TASKS as usize);

    let listed = all_pages(7, |r| {
        let s = s.clone();
        async move { s.list_keys(pn, false, &r).await }
    })
    .await
    .concat();
    assert_eq!(listed, created);
    assert_eq!(s.all_live_keys().await.unwrap().len(), TASKS as usize);
}

/// Several tasks create the very same records at once: one create of each wins, the
/// others are `AlreadyExists`, and the stored record is the winner's.
pub async fn concurrent_creates_race<S: Store + 'static>(s: Arc<S>) {
    const RACERS: usize = 12;
    let p = project(1);
    s.create_project(&p).await.unwrap();
    let pn = p.number;
    let hash = random_hash();

    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..RACERS {
        let s = s.clone();
        let hash = hash.clone();
        tasks.spawn(async move {
            // The same keyId, each with its own key string.
            let mut same_id = api_key(pn, 1);
            same_id.display_name = format!("racer {n}");
            let id_won = s.create_key(&same_id).await.map(|()| same_id);
            // The same key string, each under its own keyId.
            let mut same_hash = api_key(pn, 100 + n as i64);
            same_hash.lookup_hash = hash;
            let hash_won = s.create_key(&same_hash).await.map(|()| same_hash);
            // The same projectId, each with its own number.
            let mut same_project = project(50 + n as i64);
            same_project.project_id = "contested-project".into();
            let project_won = s.create_project(&same_project).await.map(|()| same_project);
            (id_won, hash_won, project_won)
        });
    }
    let (mut id_winners, mut hash_winners, mut project_winners) = (vec![], vec![], vec![]);
    while let Some(joined) = tasks.join_next().await {
        let (id_won, hash_won, project_won) = joined.expect("task panicked");
        match id_won {
            Ok(k) => id_winners.push(k),
            Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => panic!("same keyId: {e:?}"),
        }
        match hash_won {
            Ok(k) => hash_winners.push(k),
            Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => panic!("same lookup hash: {e:?}"),
        }
        match project_won {
            Ok(p) => project_winners.push(p),
            Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => panic!("same projectId: {e:?}"),
        }
    }
    assert_eq!(id_winners.len(), 1, "exactly one create of keyId key-0001");
    assert_eq!(
        hash_winners.len(),
        1,
        "exactly one create of the key string"
    );
    assert_eq!(
        project_winners.len(),
        1,
        "exactly one create of the projectId"
    );
    let winner = &id_winners[0];
    assert_eq!(&s.key(pn, &winner.key_id).await.unwrap(), winner);
    assert_eq!(&s.key_by_hash(&hash).await.unwrap(), &hash_winners[0]);
    assert_eq!(
        &s.project_by_id("contested-project").await.unwrap(),
        &project_winners[0]
    );
    // The losers left nothing behind.
    assert_eq!(s.all_live_keys().await.unwrap().len(), 2);
    assert_eq!(
        s.list_projects(true, &page(0, None))
            .await
            .unwrap()
            .items
            .len(),
        2
    );
}

/// Several tasks update the same key (and the same project) expecting the same etag:
/// exactly one wins; the others are `EtagMismatch` and wrote nothing.
pub async fn concurrent_etag_updates<S: Store + 'static>(s: Arc<S>) {
    const RACERS: usize = 12;
    let p = project(1);
    s.create_project(&p).await.unwrap();
    let k = api_key(p.number, 1);
    s.create_key(&k).await.unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..RACERS {
        let s = s.clone();
        let (mut key, mut proj) = (k.clone(), p.clone());
        tasks.spawn(async move {
            key.display_name = format!("racer {n}");
            let key_etag = std::mem::replace(&mut key.etag, format!("W/\"k-{n}\""));
            let key_won = s.update_key(&key, &key_etag).await.map(|()| key);
            proj.display_name = format!("racer {n}");
            let project_etag = std::mem::replace(&mut proj.etag, format!("W/\"p-{n}\""));
            let project_won = s.update_project(&proj, &project_etag).await.map(|()| proj);
            (key_won, project_won)
        });
    }
    let (mut key_winners, mut project_winners) = (vec![], vec![]);
    while let Some(joined) = tasks.join_next().await {
        let (key_won, project_won) = joined.expect("task panicked");
        match key_won {
            Ok(k) => key_winners.push(k),
            Err(StoreError::EtagMismatch) => {}
            Err(e) => panic!("update_key: {e:?}"),
        }
        match project_won {
            Ok(p) => project_winners.push(p),
            Err(StoreError::EtagMismatch) => {}
            Err(e) => panic!("update_project: {e:?}"),
        }
    }
    assert_eq!(key_winners.len(), 1, "exactly one key update wins");
    assert_eq!(project_winners.len(), 1, "exactly one project update wins");
    assert_eq!(s.key(p.number, &k.key_id).await.unwrap(), key_winners[0]);
    assert_eq!(
        s.project_by_number(p.number).await.unwrap(),
        project_winners[0]
    );
}

// === durability ===

/// One of every record, as written by [`populate`].
#[derive(Debug, Clone)]
pub struct Population {
    pub organization: Organization,
    pub project: Project,
    pub service: ServiceState,
    pub key: ApiKey,
    pub deleted_key: ApiKey,
    pub service_account: ServiceAccount,
    pub service_account_key: ServiceAccountKey,
    pub token: AccessToken,
    pub operation: StoredOperation,
}

/// Writes one of every record (and one update) into an empty store.
pub async fn populate<S: Store>(s: &S) -> Population {
    let organization = Organization {
        number: 123_456_789_012,
        display_name: "Durable Org".into(),
        create_time: t0(),
    };
    s.create_organization(&organization).await.unwrap();
    s.set_meta("bootstrap.version", "1").await.unwrap();
    let mut project = project(1);
    s.create_project(&project).await.unwrap();
    let old_etag = std::mem::replace(&mut project.etag, "W/\"p1-2\"".into());
    project.display_name = "Renamed".into();
    s.update_project(&project, &old_etag).await.unwrap();
    let service = ServiceState {
        project_number: project.number,
        service: "generativelanguage.googleapis.com".into(),
        enabled: true,
        update_time: t0(),
    };
    s.set_service(&service).await.unwrap();
    let mut key = api_key(project.number, 1);
    key.restrictions = full_restrictions();
    s.create_key(&key).await.unwrap();
    let mut deleted_key = api_key(project.number, 2);
    deleted_key.delete_time = Some(t0());
    s.create_key(&deleted_key).await.unwrap();
    let service_account = service_account(&project, 1);
    s.create_service_account(&service_account).await.unwrap();
    let service_account_key = service_account_key(&service_account.email, 1);
    s.add_service_account_key(&service_account_key)
        .await
        .unwrap();
    let token = access_token(t0() + Duration::hours(1));
    s.put_access_token(&token).await.unwrap();
    let operation = StoredOperation {
        name: "operations/durable".into(),
        body: "{}".into(),
        create_time: t0(),
    };
    s.put_operation(&operation).await.unwrap();
    Population {
        organization,
        project,
        service,
        key,
        deleted_key,
        service_account,
        service_account_key,
        token,
        operation,
    }
}

/// Finds everything [`populate`] wrote, e.g. after reopening the database.
pub async fn check_population<S: Store>(s: &S, p: &Population) {
    assert_eq!(
        s.organization().await.unwrap().as_ref(),
        Some(&p.organization)
    );
    assert_eq!(
        s.get_meta("bootstrap.version").await.unwrap().as_deref(),
        Some("1")
    );
    assert_eq!(
        s.project_by_id(&p.project.project_id).await.unwrap(),
        p.project
    );
    assert_eq!(
        s.service(p.service.project_number, &p.service.service)
            .await
            .unwrap(),
        p.service
    );
    assert_eq!(s.key_by_hash(&p.key.lookup_hash).await.unwrap(), p.key);
    assert_eq!(
        s.key(p.deleted_key.project_number, &p.deleted_key.key_id)
            .await
            .unwrap(),
        p.deleted_key
    );
    assert_eq!(s.all_live_keys().await.unwrap(), vec![p.key.clone()]);
    assert_eq!(
        s.service_account(&p.service_account.email).await.unwrap(),
        p.service_account
    );
    assert_eq!(
        s.service_account_key(&p.service_account_key.key_id)
            .await
            .unwrap(),
        p.service_account_key
    );
    assert_eq!(s.access_token(&p.token.token_hash).await.unwrap(), p.token);
    assert_eq!(
        s.get_operation(&p.operation.name).await.unwrap(),
        p.operation
    );
}
