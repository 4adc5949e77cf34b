//! The PostgreSQL store against a real PostgreSQL server (a throwaway cluster from
//! `test_support::postgres`, one per test binary, a fresh database per test): the same
//! behaviours as the SQLite store's unit tests, plus what only matters when several
//! gateways share one database (exact redemptions across stores, concurrent migrations,
//! concurrent first signing key) and the pool.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::links::{new_link_id, ConsoleType, Link, LinkPolicy, LinkRequest, Refusal};
use gateway::store::{
    admin_token_hash, AuditEvent, AuditKind, Grant, PgSettings, PgStore, RedeemError, Secret,
    Store, StoreError, Target, TargetAddress, TargetRequest, MAX_AUDIT_DETAIL,
};
use gateway::tokens::{TokenConfig, TokenKeys};
use test_support::postgres::{PgDatabase, PgServer};
use time::macros::datetime;
use time::OffsetDateTime;

const NOW: OffsetDateTime = datetime!(2030-01-01 12:00:00 UTC);

fn link_with(max_uses: Option<u32>, not_before: Option<OffsetDateTime>) -> Link {
    LinkRequest {
        vm: "web-01".into(),
        console: None,
        expires_at: None,
        ttl_seconds: Some(3600),
        not_before,
        password: Some("pw".into()),
        max_uses,
        max_viewers: Some(2),
        view_only: true,
        allow_power: false,
        note: Some("for Alice — ünïcode".into()),
    }
    .validate(NOW, &LinkPolicy::default())
    .unwrap()
    .into_link(
        new_link_id(),
        NOW,
        Some("$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA".into()),
    )
    .unwrap()
}

fn settings(db: &PgDatabase) -> PgSettings {
    PgSettings::parse(&db.url).unwrap()
}

/// A fresh database and a store on it.
async fn fresh() -> (PgDatabase, PgStore) {
    let db = PgServer::shared().database();
    let s = PgStore::open(&settings(&db)).await.unwrap();
    (db, s)
}

fn psql(db: &PgDatabase, sql: &str) -> String {
    PgServer::shared().psql(&db.name, sql)
}

#[tokio::test]
async fn link_crud_and_revoke() {
    let (_db, s) = fresh().await;
    let l = link_with(Some(3), None);
    s.create_link(&l).await.unwrap();
    assert!(matches!(
        s.create_link(&l).await,
        Err(StoreError::Duplicate(_))
    ));
    let got = s.get_link(&l.id).await.unwrap().unwrap();
    assert_eq!(got, l);
    assert_eq!(got.password_hash, l.password_hash);
    assert_eq!(s.get_link("nope").await.unwrap(), None);
    let l2 = link_with(None, None);
    s.create_link(&l2).await.unwrap();
    let all = s.list_links().await.unwrap();
    // newest first; same created_at: the later insert first (as SQLite's rowid)
    assert_eq!(
        all.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(),
        vec![l2.id.as_str(), l.id.as_str()]
    );

    let later = NOW + time::Duration::minutes(1);
    assert!(s.revoke_link(&l.id, later).await.unwrap());
    assert!(!s.revoke_link(&l.id, later).await.unwrap());
    assert!(!s.revoke_link("unknown", later).await.unwrap());
    let got = s.get_link(&l.id).await.unwrap().unwrap();
    assert!(got.revoked);
    assert_eq!(got.revoked_at, Some(later));
    assert!(matches!(
        s.redeem(&l.id, later).await,
        Err(RedeemError::Refused(Refusal::Revoked))
    ));
    // Bad input is refused before SQL.
    let mut bad = link_with(None, None);
    bad.vm = "a/b".into();
    assert!(matches!(
        s.create_link(&bad).await,
        Err(StoreError::Invalid(_))
    ));
    let mut bad = link_with(None, None);
    bad.has_password = false;
    assert!(matches!(
        s.create_link(&bad).await,
        Err(StoreError::Invalid(_))
    ));
    // PostgreSQL text cannot hold NUL: refused as invalid, not a database error.
    let mut bad = link_with(None, None);
    bad.note = Some("a\0b".into());
    assert!(matches!(
        s.create_link(&bad).await,
        Err(StoreError::Invalid(_))
    ));
}

#[tokio::test]
async fn redeem_checks_everything() {
    let (_db, s) = fresh().await;
    let opens = NOW + time::Duration::minutes(5);
    let l = link_with(Some(2), Some(opens));
    s.create_link(&l).await.unwrap();
    assert!(matches!(
        s.redeem("missing", NOW).await,
        Err(RedeemError::NotFound)
    ));
    assert!(matches!(
        s.redeem(&l.id, NOW).await,
        Err(RedeemError::Refused(Refusal::NotYetValid { opens_at })) if opens_at == opens
    ));
    assert_eq!(s.redeem(&l.id, opens).await.unwrap().uses, 1);
    assert_eq!(s.redeem(&l.id, opens).await.unwrap().uses, 2);
    assert!(matches!(
        s.redeem(&l.id, opens).await,
        Err(RedeemError::Refused(Refusal::Exhausted))
    ));
    assert!(matches!(
        s.redeem(&l.id, l.expires_at).await,
        Err(RedeemError::Refused(Refusal::Expired))
    ));
    // The last millisecond before expiry still redeems (unlimited link).
    let u = link_with(None, None);
    s.create_link(&u).await.unwrap();
    let edge = u.expires_at - time::Duration::milliseconds(1);
    assert_eq!(s.redeem(&u.id, edge).await.unwrap().uses, 1);
    assert!(matches!(
        s.redeem(&u.id, u.expires_at).await,
        Err(RedeemError::Refused(Refusal::Expired))
    ));
    // Refusals did not count.
    assert_eq!(s.get_link(&l.id).await.unwrap().unwrap().uses, 2);
}

async fn hammer(stores: Vec<Arc<PgStore>>, id: String, n: usize) -> (usize, usize) {
    let mut tasks = Vec::new();
    for i in 0..n {
        let s = Arc::clone(&stores[i % stores.len()]);
        let id = id.clone();
        tasks.push(tokio::spawn(async move { s.redeem(&id, NOW).await }));
    }
    let (mut ok, mut exhausted) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(RedeemError::Refused(Refusal::Exhausted)) => exhausted += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    (ok, exhausted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_redemptions_across_two_gateways_are_exact() {
    // Two stores (two gateways' pools, 8 connections each) on one database.
    let db = PgServer::shared().database();
    let a = Arc::new(PgStore::open(&settings(&db)).await.unwrap());
    let b = Arc::new(PgStore::open(&settings(&db)).await.unwrap());
    for round in 0..3 {
        let l = link_with(Some(10), None);
        a.create_link(&l).await.unwrap();
        let t = Instant::now();
        let (ok, ex) = hammer(vec![a.clone(), b.clone()], l.id.clone(), 50).await;
        assert_eq!((ok, ex), (10, 40), "round {round}");
        eprintln!("round {round}: 50 redemptions in {:?}", t.elapsed());
        for s in [&a, &b] {
            assert_eq!(s.get_link(&l.id).await.unwrap().unwrap().uses, 10);
        }
    }
    // An unlimited link counts every one of them.
    let u = link_with(None, None);
    b.create_link(&u).await.unwrap();
    let (ok, ex) = hammer(vec![a.clone(), b.clone()], u.id.clone(), 50).await;
    assert_eq!((ok, ex), (50, 0));
    assert_eq!(a.get_link(&u.id).await.unwrap().unwrap().uses, 50);
}

#[tokio::test]
async fn grants_are_kept_pruned_and_dropped_on_revoke() {
    let (_db, s) = fresh().await;
    let l = link_with(None, None);
    let other = link_with(None, None);
    s.create_link(&l).await.unwrap();
    s.create_link(&other).await.unwrap();
    let g = Grant {
        link_id: l.id.clone(),
        expires_at: NOW + time::Duration::hours(1),
    };
    let short = Grant {
        link_id: other.id.clone(),
        expires_at: NOW - time::Duration::seconds(1),
    };
    s.put_grant("aa", &g).await.unwrap();
    s.put_grant("bb", &short).await.unwrap();
    s.put_grant("cc", &g).await.unwrap();
    assert!(
        s.put_grant("aa", &g).await.is_err(),
        "a cookie hash is one grant"
    );
    assert_eq!(s.get_grant("aa").await.unwrap(), Some(g.clone()));
    assert_eq!(s.get_grant("zz").await.unwrap(), None);
    assert_eq!(s.prune_grants(NOW).await.unwrap(), 1);
    assert_eq!(s.get_grant("bb").await.unwrap(), None);
    assert!(s.revoke_link(&l.id, NOW).await.unwrap());
    assert_eq!(s.get_grant("aa").await.unwrap(), None);
    assert_eq!(s.get_grant("cc").await.unwrap(), None);
}

#[tokio::test]
async fn admin_tokens() {
    let (db, s) = fresh().await;
    let (info, token) = s.create_admin_token("ci").await.unwrap();
    assert!(token.starts_with("vmgw_"));
    assert_eq!(info.name, "ci");
    assert!(!info.revoked);
    assert_eq!(
        s.check_admin_token(&token).await.unwrap(),
        Some(info.clone())
    );
    // Only the hash is stored.
    let stored = psql(&db, "SELECT token_sha256 FROM admin_tokens");
    assert_eq!(stored.trim(), admin_token_hash(&token));
    for bad in [
        "",
        "vmgw_",
        "vmgw_x",
        &token[..token.len() - 1],
        &format!("{token}x"),
        &token.to_uppercase(),
        &format!("Bearer {token}"),
    ] {
        assert_eq!(s.check_admin_token(bad).await.unwrap(), None, "{bad}");
    }
    // Duplicate live name, bad name.
    assert!(matches!(
        s.create_admin_token("ci").await,
        Err(StoreError::Duplicate(_))
    ));
    assert!(matches!(
        s.create_admin_token("bad name").await,
        Err(StoreError::Invalid(_))
    ));
    // Revoke by name, then the name can be reused; revoke by id.
    assert!(s.revoke_admin_token("ci").await.unwrap());
    assert!(!s.revoke_admin_token("ci").await.unwrap());
    assert_eq!(s.check_admin_token(&token).await.unwrap(), None);
    let (info2, token2) = s.create_admin_token("ci").await.unwrap();
    assert_ne!(token, token2);
    assert!(s.revoke_admin_token(&info2.id).await.unwrap());
    assert_eq!(s.check_admin_token(&token2).await.unwrap(), None);
    let all = s.list_admin_tokens().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].id, info.id, "oldest first");
    assert!(all.iter().all(|t| t.revoked && t.revoked_at.is_some()));
    assert!(!s.revoke_admin_token("nope").await.unwrap());
    assert!(!serde_json::to_string(&all).unwrap().contains(&token[5..]));
}

#[tokio::test]
async fn signing_keys_rotate_and_remove() {
    let (_db, s) = fresh().await;
    let k1 = s.signing_keys().await.unwrap();
    assert_eq!(k1.len(), 1);
    assert!(!k1[0].retired);
    assert_eq!(k1[0].secret.len(), 32);
    assert_eq!(s.signing_keys().await.unwrap(), k1);

    let tk1 = TokenKeys::new(&k1, TokenConfig::default()).unwrap();
    let l = link_with(None, None);
    let t_old = tk1.sign(&tk1.claims_for(&l, NOW)).unwrap();

    let new = s.rotate_signing_key().await.unwrap();
    let k2 = s.signing_keys().await.unwrap();
    assert_eq!(k2.len(), 2);
    assert!(k2[0].retired && !k2[1].retired);
    assert_eq!(k2[1], new);
    let tk2 = TokenKeys::new(&k2, TokenConfig::default()).unwrap();
    assert_eq!(tk2.signing_kid(), Some(new.kid.as_str()));
    assert!(tk2.verify(&t_old, NOW).is_ok());

    assert!(s.remove_signing_key(&k1[0].kid).await.unwrap());
    assert!(!s.remove_signing_key(&k1[0].kid).await.unwrap());
    let tk3 = TokenKeys::new(&s.signing_keys().await.unwrap(), TokenConfig::default()).unwrap();
    assert!(tk3.verify(&t_old, NOW).is_err());

    // Removing the active key: a new one is made on next use.
    assert!(s.remove_signing_key(&new.kid).await.unwrap());
    let k4 = s.signing_keys().await.unwrap();
    assert_eq!(k4.len(), 1);
    assert_ne!(k4[0].kid, new.kid);
    assert!(!k4[0].retired);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_starting_at_once_make_one_signing_key() {
    let db = PgServer::shared().database();
    let stores: Vec<Arc<PgStore>> = futures::future::join_all(
        (0..4).map(|_| async { Arc::new(PgStore::open(&settings(&db)).await.unwrap()) }),
    )
    .await;
    let keys = futures::future::join_all(stores.iter().map(|s| {
        let s = Arc::clone(s);
        async move { s.signing_keys().await.unwrap() }
    }))
    .await;
    assert_eq!(keys[0].len(), 1, "{keys:?}");
    assert!(keys.iter().all(|k| *k == keys[0]));
    // Rotations from two gateways at once: each retires all others, one stays active.
    let (r1, r2) = tokio::join!(
        stores[0].rotate_signing_key(),
        stores[1].rotate_signing_key()
    );
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    assert_ne!(r1.created_at, r2.created_at, "newest stays unambiguous");
    let all = stores[2].signing_keys().await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all.iter().filter(|k| !k.retired).count(), 1);
}

#[tokio::test]
async fn targets() {
    let (_db, s) = fresh().await;
    let t: Target = serde_json::from_str::<TargetRequest>(
        r#"{"name":"ext-1","kind":"spice","address":{"tcp":"[::1]:5930"},"vnc_password":"pw"}"#,
    )
    .unwrap()
    .validate(NOW)
    .unwrap();
    s.put_target(&t).await.unwrap();
    assert!(matches!(
        s.put_target(&t).await,
        Err(StoreError::Duplicate(_))
    ));
    let u = Target {
        name: "a-unix".into(),
        kind: ConsoleType::Vnc,
        address: TargetAddress::Unix("/run/vmgw/a.sock".into()),
        vnc_password: None,
        created_at: NOW,
    };
    s.put_target(&u).await.unwrap();
    // Upper case sorts before lower case in byte order (as in SQLite).
    let z = Target {
        name: "Z-raw".into(),
        kind: ConsoleType::Raw,
        address: TargetAddress::Tcp("127.0.0.1:4000".into()),
        vnc_password: Some("vncpw".into()),
        created_at: NOW,
    };
    s.put_target(&z).await.unwrap();
    let mut bad = u.clone();
    bad.name = "b".into();
    bad.address = TargetAddress::Unix("rel.sock".into());
    assert!(matches!(
        s.put_target(&bad).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(s.get_target("ext-1").await.unwrap(), Some(t.clone()));
    assert_eq!(s.get_target("nope").await.unwrap(), None);
    assert_eq!(
        s.list_targets().await.unwrap(),
        vec![z.clone(), u.clone(), t.clone()]
    );
    assert!(s.delete_target("ext-1").await.unwrap());
    assert!(!s.delete_target("ext-1").await.unwrap());
    assert_eq!(s.list_targets().await.unwrap(), vec![z, u]);
}

#[tokio::test]
async fn audit_log() {
    let (_db, s) = fresh().await;
    for i in 0..5 {
        let mut e = AuditEvent::new(AuditKind::PasswordFailure, NOW + time::Duration::seconds(i))
            .client("192.0.2.7")
            .detail(format!("attempt {i}"));
        if i % 2 == 0 {
            e = e.link("L1");
        }
        s.audit(e).await.unwrap();
    }
    s.audit(
        AuditEvent::new(AuditKind::SessionStarted, NOW)
            .link("L2")
            .session("S1")
            .detail("x".repeat(5000)),
    )
    .await
    .unwrap();
    let all = s.list_audit(None, 100).await.unwrap();
    assert_eq!(all.len(), 6);
    assert_eq!(all[0].kind, AuditKind::SessionStarted);
    assert_eq!(all[0].session_id.as_deref(), Some("S1"));
    assert_eq!(
        all[0].detail.as_ref().map(|d| d.len()),
        Some(MAX_AUDIT_DETAIL)
    );
    assert_eq!(all[1].detail.as_deref(), Some("attempt 4"));
    assert_eq!(all[1].client.as_deref(), Some("192.0.2.7"));
    let l1 = s.list_audit(Some("L1"), 100).await.unwrap();
    assert_eq!(l1.len(), 3);
    assert!(l1.iter().all(|e| e.link_id.as_deref() == Some("L1")));
    assert_eq!(s.list_audit(None, 2).await.unwrap().len(), 2);
    assert_eq!(s.list_audit(None, 0).await.unwrap().len(), 0);
    // A huge limit is capped, not an error.
    assert_eq!(s.list_audit(None, usize::MAX).await.unwrap().len(), 6);
    // A NUL in free text does not lose the event.
    s.audit(AuditEvent::new(AuditKind::VmAction, NOW).detail("a\0b"))
        .await
        .unwrap();
    assert_eq!(
        s.list_audit(None, 1).await.unwrap()[0].detail.as_deref(),
        Some("a\u{FFFD}b")
    );
    let n = s
        .prune_audit(NOW + time::Duration::seconds(2))
        .await
        .unwrap();
    assert_eq!(n, 4); // the session and VM events at NOW and failures 0 and 1
    assert_eq!(s.list_audit(None, 100).await.unwrap().len(), 3);
}

#[tokio::test]
async fn reopen_keeps_everything() {
    let db = PgServer::shared().database();
    let l = link_with(Some(5), None);
    let (kid, token, tinfo) = {
        let s = PgStore::open(&settings(&db)).await.unwrap();
        s.create_link(&l).await.unwrap();
        s.redeem(&l.id, NOW).await.unwrap();
        s.redeem(&l.id, NOW).await.unwrap();
        s.audit(AuditEvent::new(AuditKind::LinkRedeemed, NOW).link(&l.id))
            .await
            .unwrap();
        let (info, token) = s.create_admin_token("ops").await.unwrap();
        let kid = s.signing_keys().await.unwrap()[0].kid.clone();
        s.put_target(&Target {
            name: "t1".into(),
            kind: ConsoleType::Raw,
            address: TargetAddress::Tcp("127.0.0.1:4000".into()),
            vnc_password: Some("vncpw".into()),
            created_at: NOW,
        })
        .await
        .unwrap();
        (kid, token, info)
    };
    // The key-value connection string reaches the same database.
    let s = PgStore::open(&PgSettings::parse(&db.key_value).unwrap())
        .await
        .unwrap();
    let got = s.get_link(&l.id).await.unwrap().unwrap();
    assert_eq!(got.uses, 2);
    assert_eq!(got, {
        let mut l = l.clone();
        l.uses = 2;
        l
    });
    let audit = s.list_audit(Some(&l.id), 10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].kind, AuditKind::LinkRedeemed);
    assert_eq!(s.check_admin_token(&token).await.unwrap(), Some(tinfo));
    let keys = s.signing_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].kid, kid);
    let t = s.get_target("t1").await.unwrap().unwrap();
    assert_eq!(t.vnc_password.as_ref().map(Secret::expose), Some("vncpw"));
}

fn versions(db: &PgDatabase) -> Vec<i64> {
    psql(db, "SELECT version FROM schema_version ORDER BY version")
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrations_are_idempotent_concurrent_and_guarded() {
    let db = PgServer::shared().database();
    // Four gateways starting at once on an empty database: one migrates, all open.
    let st = settings(&db);
    let opened = futures::future::join_all((0..4).map(|_| PgStore::open(&st))).await;
    for s in &opened {
        assert!(s.is_ok(), "{s:?}");
    }
    assert_eq!(versions(&db), vec![1]);
    drop(opened);
    // Reopening changes nothing.
    let s = PgStore::open(&settings(&db)).await.unwrap();
    s.health().await.unwrap();
    drop(s);
    assert_eq!(versions(&db), vec![1]);
    // A database written by a newer gateway is refused.
    psql(&db, "INSERT INTO schema_version VALUES (7, 0)");
    match PgStore::open(&settings(&db)).await {
        Err(StoreError::SchemaTooNew {
            found: 7,
            supported: 1,
        }) => {}
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pool_is_bounded_and_replaces_dead_connections() {
    let db = PgServer::shared().database();
    let mut st = settings(&db);
    st.pool_size = 2;
    let s = Arc::new(PgStore::open(&st).await.unwrap());
    let l = link_with(None, None);
    s.create_link(&l).await.unwrap();
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let s = Arc::clone(&s);
            let id = l.id.clone();
            tokio::spawn(async move { s.redeem(&id, NOW).await.map(|_| ()) })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let count_sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
        db.name
    );
    let conns: i64 = psql(&db, &count_sql).trim().parse().unwrap();
    assert!((1..=2).contains(&conns), "{conns} connections");
    assert_eq!(s.get_link(&l.id).await.unwrap().unwrap().uses, 40);

    // The server ends every connection (a restart, a failover): the store reconnects.
    psql(
        &db,
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{}' AND pid <> pg_backend_pid()",
            db.name
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // A call may still pick a connection that is being torn down; the next one
        // connects afresh.
        match s.health().await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("while reconnecting: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the store did not reconnect: {e}"),
        }
    }
    assert_eq!(s.get_link(&l.id).await.unwrap().unwrap().uses, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_database_makes_callers_wait_a_bounded_time() {
    let db = PgServer::shared().database();
    let mut st = settings(&db);
    st.pool_size = 1;
    st.connect_timeout = Duration::from_secs(1);
    let s = Arc::new(PgStore::open(&st).await.unwrap());
    let l = link_with(None, None);
    s.create_link(&l).await.unwrap();
    // Another client holds the link's row for 3 s: a redemption waits on it, holding
    // the pool's only connection.
    let name = db.name.clone();
    let id = l.id.clone();
    let locker = std::thread::spawn(move || {
        PgServer::shared().psql(
            &name,
            &format!(
                "BEGIN; SELECT 1 FROM links WHERE id = '{id}' FOR UPDATE; \
                 SELECT pg_sleep(3); COMMIT;"
            ),
        )
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s2, id) = (Arc::clone(&s), l.id.clone());
    let redeem = tokio::spawn(async move { s2.redeem(&id, NOW).await.map(|l| l.uses) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    let err = s.health().await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(err.to_string().contains("busy"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // the stall ends: the redemption completes and the pool serves again
    locker.join().unwrap();
    assert_eq!(redeem.await.unwrap().unwrap(), 1);
    s.health().await.unwrap();
}

#[tokio::test]
async fn connection_errors_name_the_target_but_never_the_password() {
    let mut st = PgSettings::parse(
        "postgresql:///nodb?host=/nonexistent/vmgw-pg&user=someone&password=s3cr3tpw",
    )
    .unwrap();
    st.connect_timeout = Duration::from_secs(1);
    let e = PgStore::open(&st).await.unwrap_err();
    let mut chain = format!("{e} / {e:?}");
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        chain.push_str(&format!(" / {s}"));
        src = s.source();
    }
    assert!(chain.contains("someone@/nonexistent/vmgw-pg"), "{chain}");
    assert!(!chain.contains("s3cr3tpw"), "{chain}");
    assert!(!format!("{st:?}").contains("s3cr3tpw"));
}

#[tokio::test]
async fn health_and_debug() {
    let (db, s) = fresh().await;
    s.health().await.unwrap();
    let d = format!("{s:?}");
    assert!(d.contains("PgStore") && d.contains(&db.name), "{d}");
    let dyn_store: Arc<dyn Store> = Arc::new(s);
    dyn_store.health().await.unwrap();
}
