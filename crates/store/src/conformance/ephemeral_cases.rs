//! Conformance cases for [`EphemeralTokenStore`](crate::EphemeralTokenStore).

use super::t0;
use crate::{Store, StoreError};
use keyplane_core::EphemeralToken;
use std::sync::Arc;
use time::Duration;

fn token(n: u8, uses: i64) -> EphemeralToken {
    EphemeralToken {
        token_hash: vec![n; 32],
        key_hash: vec![0xAB; 32],
        project_number: 100_000_000_001,
        uses_left: uses,
        expire_time: t0() + Duration::minutes(30),
        new_session_expire_time: t0() + Duration::minutes(1),
        setup: Some(r#"{"model":"models/m"}"#.into()),
        field_mask: None,
        create_time: t0(),
    }
}

/// Round trip, uniqueness, uses counted down to zero, expiry of both times, purge.
pub async fn ephemeral_tokens<S: Store>(s: &S) {
    let t = token(1, 2);
    s.create_ephemeral_token(&t).await.unwrap();
    assert_eq!(s.ephemeral_token(&t.token_hash).await.unwrap(), t);
    assert!(matches!(
        s.create_ephemeral_token(&t).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert!(matches!(
        s.ephemeral_token(&[9; 32]).await,
        Err(StoreError::NotFound)
    ));
    let now = t0() + Duration::seconds(1);
    assert!(s.use_ephemeral_token(&t.token_hash, now).await.unwrap());
    assert!(s.use_ephemeral_token(&t.token_hash, now).await.unwrap());
    assert!(!s.use_ephemeral_token(&t.token_hash, now).await.unwrap());
    assert_eq!(s.ephemeral_token(&t.token_hash).await.unwrap().uses_left, 0);
    assert!(!s.use_ephemeral_token(&[9; 32], now).await.unwrap());

    let late = token(2, 5);
    s.create_ephemeral_token(&late).await.unwrap();
    // Past newSessionExpireTime, and past expireTime: refused, nothing spent.
    assert!(!s
        .use_ephemeral_token(&late.token_hash, late.new_session_expire_time)
        .await
        .unwrap());
    assert!(!s
        .use_ephemeral_token(&late.token_hash, late.expire_time + Duration::seconds(1))
        .await
        .unwrap());
    assert_eq!(
        s.ephemeral_token(&late.token_hash).await.unwrap().uses_left,
        5
    );

    let purged = s
        .purge_expired_ephemeral_tokens(t0() + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(purged, 2);
    assert!(matches!(
        s.ephemeral_token(&t.token_hash).await,
        Err(StoreError::NotFound)
    ));
}

/// Many concurrent uses of a token with N uses: exactly N succeed.
pub async fn concurrent_ephemeral_uses<S: Store + 'static>(s: Arc<S>) {
    let t = token(3, 5);
    s.create_ephemeral_token(&t).await.unwrap();
    let now = t0() + Duration::seconds(1);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (s, hash) = (s.clone(), t.token_hash.clone());
            tokio::spawn(async move { s.use_ephemeral_token(&hash, now).await.unwrap() })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        ok += usize::from(task.await.unwrap());
    }
    assert_eq!(ok, 5);
    assert_eq!(s.ephemeral_token(&t.token_hash).await.unwrap().uses_left, 0);
}
