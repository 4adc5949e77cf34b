//! The PostgreSQL store against a real PostgreSQL server (a throwaway cluster from
//! `test_support::postgres`, one per test binary, a fresh database per test): what only
//! matters when several gateways share one database (exact redemptions across stores,
//! concurrent migrations, concurrent first signing key) and the pool. The behaviours
//! every store shares are in `store_contract.rs`; outages mid-exchange in
//! `postgres_outage.rs`.

#![allow(clippy::unwrap_used)]

mod store_fixtures;

use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::model::links::Refusal;
use gateway::store::{PgSettings, PgStore, RedeemError, Store, StoreError};
use store_fixtures::{link_with, NOW};
use test_support::postgres::{PgDatabase, PgServer};

fn settings(db: &PgDatabase) -> PgSettings {
    PgSettings::parse(&db.url).unwrap()
}

fn psql(db: &PgDatabase, sql: &str) -> String {
    PgServer::shared().psql(&db.name, sql)
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
    assert_eq!(versions(&db), vec![1, 2, 4]);
    drop(opened);
    // Reopening changes nothing.
    let s = PgStore::open(&settings(&db)).await.unwrap();
    s.health().await.unwrap();
    drop(s);
    assert_eq!(versions(&db), vec![1, 2, 4]);
    // A database written by a newer gateway is refused.
    psql(&db, "INSERT INTO schema_version VALUES (7, 0)");
    match PgStore::open(&settings(&db)).await {
        Err(StoreError::SchemaTooNew {
            found: 7,
            supported: 4,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_version_1_database_is_upgraded_and_its_links_keep_no_clipboard() {
    let db = PgServer::shared().database();
    // What the first release made: schema version 1 and a link without a clipboard policy.
    psql(
        &db,
        "CREATE TABLE schema_version (version BIGINT NOT NULL PRIMARY KEY, applied_at_ms BIGINT NOT NULL)",
    );
    psql(
        &db,
        include_str!("../src/store/migrations/pg/0001_init.sql"),
    );
    psql(&db, "INSERT INTO schema_version VALUES (1, 0)");
    psql(
        &db,
        "INSERT INTO links (id, vm, console, expires_at_ms, created_at_ms) \
         VALUES ('old-link', 'web', 'vnc', 4102444800000, 1893456000000)",
    );
    let s = PgStore::open(&settings(&db)).await.unwrap();
    assert_eq!(versions(&db), vec![1, 2, 4]);
    let l = s.get_link("old-link").await.unwrap().unwrap();
    assert_eq!(
        l.clipboard,
        gateway::model::clipboard::ClipboardPolicy::None,
        "links from before the policy keep what they had"
    );
    // New links store theirs.
    let n = link_with(None, None);
    s.create_link(&n).await.unwrap();
    assert_eq!(
        s.get_link(&n.id).await.unwrap().unwrap().clipboard,
        n.clipboard
    );
}
