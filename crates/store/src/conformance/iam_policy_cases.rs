//! Conformance cases for [`PolicyStore`](crate::PolicyStore): IAM allow policies.

use crate::{Store, StoreError};
use keyplane_core::iam::{Binding, Policy};
use std::sync::Arc;

fn policy(etag: &str, members: &[&str]) -> Policy {
    Policy {
        version: 1,
        bindings: vec![Binding {
            role: "roles/owner".into(),
            members: members.iter().map(|m| (*m).to_owned()).collect(),
        }],
        etag: etag.to_owned(),
    }
}

/// Insert-if-absent, compare-and-set on the etag, one policy per resource, and exact
/// round trips (binding order, member order, the etag bytes).
pub async fn iam_policies<S: Store>(s: &S) {
    let org = "organizations/1234";
    let proj = "projects/5678";
    assert_eq!(s.iam_policy(org).await.unwrap(), None);

    let a = policy("BwYk3n6TqPo=", &["user:a@example.com"]);
    s.put_iam_policy(org, &a, None).await.unwrap();
    assert_eq!(s.iam_policy(org).await.unwrap(), Some(a.clone()));
    assert_eq!(s.iam_policy(proj).await.unwrap(), None);

    // A second insert-if-absent loses.
    let b = policy("OGhehV8k9nU=", &["user:b@example.com"]);
    assert!(matches!(
        s.put_iam_policy(org, &b, None).await,
        Err(StoreError::EtagMismatch)
    ));
    // A stale etag loses, and nothing changes.
    assert!(matches!(
        s.put_iam_policy(org, &b, Some("stale")).await,
        Err(StoreError::EtagMismatch)
    ));
    assert_eq!(s.iam_policy(org).await.unwrap(), Some(a.clone()));
    // Expecting an etag on a resource without a policy loses too.
    assert!(matches!(
        s.put_iam_policy(proj, &b, Some(&a.etag)).await,
        Err(StoreError::EtagMismatch)
    ));
    assert_eq!(s.iam_policy(proj).await.unwrap(), None);

    // The right etag wins.
    let c = Policy {
        version: 1,
        bindings: vec![
            Binding {
                role: "roles/viewer".into(),
                members: vec!["user:z@example.com".into(), "allAuthenticatedUsers".into()],
            },
            Binding {
                role: "roles/editor".into(),
                members: vec!["serviceAccount:sa@p.iam.gserviceaccount.com".into()],
            },
        ],
        etag: "AAAAAAAAAAA=".into(),
    };
    s.put_iam_policy(org, &c, Some(&a.etag)).await.unwrap();
    assert_eq!(s.iam_policy(org).await.unwrap(), Some(c.clone()));
    // An empty policy (no bindings) is a policy too.
    let empty = Policy {
        version: 1,
        bindings: vec![],
        etag: "BBBBBBBBBBB=".into(),
    };
    s.put_iam_policy(org, &empty, Some(&c.etag)).await.unwrap();
    assert_eq!(s.iam_policy(org).await.unwrap(), Some(empty));

    s.put_iam_policy(proj, &b, None).await.unwrap();
    assert_eq!(s.iam_policy(proj).await.unwrap(), Some(b));

    // A policy without an etag is refused.
    assert!(matches!(
        s.put_iam_policy("projects/1", &policy("", &["user:a@example.com"]), None)
            .await,
        Err(StoreError::InvalidArgument(_))
    ));
}

/// Of several writers expecting the same etag (or all inserting), exactly one wins.
pub async fn concurrent_iam_policy_writes<S: Store + 'static>(s: Arc<S>) {
    const RACERS: usize = 12;
    for round in 0..2 {
        let resource = "projects/42";
        let expected = if round == 0 {
            None
        } else {
            s.iam_policy(resource).await.unwrap().map(|p| p.etag)
        };
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..RACERS {
            let s = s.clone();
            let expected = expected.clone();
            tasks.spawn(async move {
                let p = policy(
                    &format!("r{round}n{n}"),
                    &[&format!("user:u{n}@example.com")],
                );
                s.put_iam_policy(resource, &p, expected.as_deref())
                    .await
                    .map(|()| p)
            });
        }
        let mut winners = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined.expect("task panicked") {
                Ok(p) => winners.push(p),
                Err(StoreError::EtagMismatch) => {}
                Err(e) => panic!("put_iam_policy: {e:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one writer wins");
        assert_eq!(
            s.iam_policy(resource).await.unwrap(),
            Some(winners[0].clone())
        );
    }
}
