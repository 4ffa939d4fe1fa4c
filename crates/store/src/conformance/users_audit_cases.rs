//! Conformance cases for [`UserStore`](crate::UserStore) and
//! [`AuditStore`](crate::AuditStore).

use super::{access_token, t0};
use crate::{AuditFilter, PageRequest, Store, StoreError};
use keyplane_core::{AuditEntry, User};
use time::Duration;

fn user(email: &str) -> User {
    User {
        email: email.to_owned(),
        display_name: format!("User {email}"),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        disabled: false,
        create_time: t0(),
        update_time: t0(),
    }
}

/// Create, get, list in email order, update, unique emails, and token revocation.
pub async fn users<S: Store>(s: &S) {
    assert!(matches!(
        s.user("a@example.com").await,
        Err(StoreError::NotFound)
    ));
    s.create_user(&user("b@example.com")).await.unwrap();
    s.create_user(&user("a@example.com")).await.unwrap();
    assert!(matches!(
        s.create_user(&user("a@example.com")).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(
        s.user("a@example.com").await.unwrap(),
        user("a@example.com")
    );
    let all: Vec<String> = s
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.email)
        .collect();
    assert_eq!(all, ["a@example.com", "b@example.com"]);

    let mut a = user("a@example.com");
    a.disabled = true;
    a.display_name = "Alice".into();
    a.update_time = t0() + Duration::seconds(5);
    s.update_user(&a).await.unwrap();
    assert_eq!(s.user("a@example.com").await.unwrap(), a);
    assert!(matches!(
        s.update_user(&user("nobody@example.com")).await,
        Err(StoreError::NotFound)
    ));

    let mut t = access_token(t0() + Duration::hours(1));
    t.principal = "user:a@example.com".into();
    s.put_access_token(&t).await.unwrap();
    let other = access_token(t0() + Duration::hours(1));
    s.put_access_token(&other).await.unwrap();
    assert_eq!(
        s.delete_access_tokens_of("user:a@example.com")
            .await
            .unwrap(),
        1
    );
    assert!(matches!(
        s.access_token(&t.token_hash).await,
        Err(StoreError::NotFound)
    ));
    assert!(s.access_token(&other.token_hash).await.is_ok());
}

fn entry(n: i64, project: Option<&str>) -> AuditEntry {
    AuditEntry {
        time: t0() + Duration::seconds(n),
        principal: format!("user:u{n}@example.com"),
        method: "POST".into(),
        resource: format!("/v2/projects/{}/keys", project.unwrap_or("-")),
        project: project.map(str::to_owned),
        result: if n % 2 == 0 { "allowed" } else { "denied" }.into(),
        status: if n % 2 == 0 { 200 } else { 403 },
    }
}

/// Arrival order, filters by project and time, keyset pagination, foreign tokens refused.
pub async fn audit_log<S: Store>(s: &S) {
    let all = s
        .list_audit(&AuditFilter::default(), &PageRequest::default())
        .await
        .unwrap();
    assert!(all.items.is_empty() && all.next_page_token.is_none());
    let mut written = Vec::new();
    for n in 0..7 {
        let project = match n % 3 {
            0 => Some("p-one"),
            1 => Some("111"),
            _ => None,
        };
        let e = entry(n, project);
        s.append_audit(&e).await.unwrap();
        written.push(e);
    }
    // Three pages of three, in arrival order.
    let mut got = Vec::new();
    let mut token = None;
    for _ in 0..10 {
        let page = s
            .list_audit(
                &AuditFilter::default(),
                &PageRequest {
                    page_size: 3,
                    page_token: token.clone(),
                },
            )
            .await
            .unwrap();
        assert!(page.items.len() <= 3);
        got.extend(page.items);
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(got, written);

    let filter = AuditFilter {
        projects: vec!["p-one".into(), "111".into()],
        since: None,
    };
    let page = s
        .list_audit(&filter, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(page.items.len(), 5);
    assert!(page.items.iter().all(|e| e.project.is_some()));

    let filter = AuditFilter {
        projects: vec!["p-one".into()],
        since: Some(t0() + Duration::seconds(3)),
    };
    let page = s
        .list_audit(&filter, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(page.items, vec![written[3].clone(), written[6].clone()]);

    let bad = PageRequest {
        page_size: 0,
        page_token: Some("nonsense".into()),
    };
    assert!(matches!(
        s.list_audit(&AuditFilter::default(), &bad).await,
        Err(StoreError::InvalidArgument(_))
    ));
}
