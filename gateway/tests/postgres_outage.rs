//! A visitor's use is never burnt by a PostgreSQL outage: the exchange (count the use,
//! store the grant) is one transaction, so whatever fails in between — the store's
//! backend is killed, the server stops — leaves neither the use nor the grant, the
//! caller gets `StoreError::Unavailable` (HTTP 503 with Retry-After), and the visitor's
//! retry succeeds once the database is back.
//!
//! The gap is widened the way an attacker (or a slow database) would: another
//! connection holds `LOCK TABLE grants IN ACCESS EXCLUSIVE MODE`, so the exchange blocks
//! after counting the use and before storing the grant.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestGateway;
use gateway::model::links::{new_link_id, Link, LinkPolicy, LinkRequest};
use gateway::store::{PgSettings, PgStore, RedeemError, Store};
use serde_json::json;
use test_support::postgres::{PgDatabase, PgServer};
use time::macros::datetime;
use time::OffsetDateTime;
use tokio_postgres::{Client, NoTls};

const NOW: OffsetDateTime = datetime!(2030-01-01 12:00:00 UTC);

fn one_use_link() -> Link {
    LinkRequest {
        vm: "web-01".into(),
        console: None,
        expires_at: None,
        ttl_seconds: Some(3600),
        not_before: None,
        password: None,
        max_uses: Some(1),
        max_viewers: None,
        view_only: false,
        allow_power: false,
        note: None,
        clipboard: None,
        record: None,
    }
    .validate(NOW, &LinkPolicy::default())
    .unwrap()
    .into_link(new_link_id(), NOW, None)
    .unwrap()
}

async fn client(db: &PgDatabase) -> Client {
    let (c, conn) = tokio_postgres::connect(&db.url, NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    c
}

/// Another session takes the grants table and keeps it until rolled back or killed.
async fn lock_grants(db: &PgDatabase) -> Client {
    let c = client(db).await;
    c.batch_execute("BEGIN; LOCK TABLE grants IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    c
}

/// Waits until a backend of `db` waits for a lock; returns its pid.
async fn blocked_backend(server: &PgServer, db: &PgDatabase) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let sql = format!(
        "SELECT pid FROM pg_stat_activity WHERE datname = '{}' AND wait_event_type = 'Lock'",
        db.name
    );
    loop {
        let out = server.psql(&db.name, &sql);
        if let Some(pid) = out.lines().find_map(|l| l.trim().parse().ok()) {
            return pid;
        }
        assert!(Instant::now() < deadline, "the exchange never blocked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// (uses of the link, number of grants), read with psql.
fn uses_and_grants(server: &PgServer, db: &PgDatabase, id: &str) -> (i64, i64) {
    let out = server.psql(
        &db.name,
        &format!(
            "SELECT (SELECT uses FROM links WHERE id = '{id}'), (SELECT count(*) FROM grants)"
        ),
    );
    let (u, g) = out.trim().split_once('|').unwrap();
    (u.parse().unwrap(), g.parse().unwrap())
}

/// The visitor retries until the store answers (a pooled connection may still be one
/// the outage killed); the retry must succeed.
async fn retry_exchange(s: &PgStore, id: &str, cookie: &str) -> Link {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match s.redeem_with_grant(id, NOW, cookie).await {
            Ok(l) => return l,
            Err(RedeemError::Store(e)) if e.is_unavailable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the retry failed: {e:?}"),
        }
    }
}

/// A database on a private server whose commits are durable across an immediate stop
/// (the test servers run with `synchronous_commit=off`, which could lose a wrongly
/// committed use in the crash and hide the bug).
fn durable_database(server: &PgServer) -> PgDatabase {
    let db = server.database();
    server.psql(
        &db.name,
        &format!("ALTER DATABASE {} SET synchronous_commit = on", db.name),
    );
    db
}

async fn exchange_while_grants_are_locked(
    server: &PgServer,
    db: &PgDatabase,
    s: &Arc<PgStore>,
    id: &str,
) -> (
    Client,
    tokio::task::JoinHandle<Result<Link, RedeemError>>,
    i32,
) {
    let locker = lock_grants(db).await;
    let (s2, id2) = (Arc::clone(s), id.to_owned());
    let exchange = tokio::spawn(async move { s2.redeem_with_grant(&id2, NOW, "k1").await });
    let pid = blocked_backend(server, db).await;
    (locker, exchange, pid)
}

fn assert_unavailable(r: Result<Link, RedeemError>) {
    match r {
        Err(RedeemError::Store(e)) => assert!(e.is_unavailable(), "not unavailable: {e:?}"),
        other => panic!("expected a store outage, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_exchange_backend_burns_no_use() {
    let server = PgServer::shared();
    let db = server.database();
    let s = Arc::new(
        PgStore::open(&PgSettings::parse(&db.url).unwrap())
            .await
            .unwrap(),
    );
    let l = one_use_link();
    s.create_link(&l).await.unwrap();
    let (locker, exchange, pid) = exchange_while_grants_are_locked(server, &db, &s, &l.id).await;
    server.psql(&db.name, &format!("SELECT pg_terminate_backend({pid})"));
    let r = exchange.await.unwrap();
    locker.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        uses_and_grants(server, &db, &l.id),
        (0, 0),
        "(uses, grants)"
    );
    assert_unavailable(r);
    // The visitor's retry gets the one use.
    assert_eq!(retry_exchange(&s, &l.id, "k2").await.uses, 1);
    assert_eq!(uses_and_grants(server, &db, &l.id), (1, 1));
    assert!(s.get_grant("k2").await.unwrap().is_some());
}

/// Child half of `kill_9_of_the_gateway_mid_exchange_burns_no_use`: only acts when
/// re-run by it, and blocks in the exchange until killed.
#[test]
fn exchange_child() {
    let (Some(url), Some(id)) = (
        std::env::var_os("VMGW_OUTAGE_CHILD_URL"),
        std::env::var_os("VMGW_OUTAGE_CHILD_LINK"),
    ) else {
        return;
    };
    let (url, id) = (url.into_string().unwrap(), id.into_string().unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = PgStore::open(&PgSettings::parse(&url).unwrap())
            .await
            .unwrap();
        let r = s.redeem_with_grant(&id, NOW, "k1").await;
        panic!("the exchange should have blocked until the kill, got {r:?}");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_gateway_mid_exchange_burns_no_use() {
    let server = PgServer::shared();
    let db = server.database();
    let s = PgStore::open(&PgSettings::parse(&db.url).unwrap())
        .await
        .unwrap();
    let l = one_use_link();
    s.create_link(&l).await.unwrap();
    let locker = lock_grants(&db).await;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "exchange_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("VMGW_OUTAGE_CHILD_URL", &db.url)
        .env("VMGW_OUTAGE_CHILD_LINK", &l.id)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    blocked_backend(server, &db).await;
    child.kill().unwrap(); // SIGKILL: no destructor, no ROLLBACK sent
    child.wait().unwrap();
    // The blocked backend goes on once the lock is released, then finds its client
    // gone before any COMMIT: the whole exchange rolls back.
    locker.batch_execute("ROLLBACK").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server
        .psql(
            &db.name,
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND state <> 'idle' \
                 AND pid <> pg_backend_pid()",
                db.name
            ),
        )
        .trim()
        .starts_with('0')
    {
        assert!(
            Instant::now() < deadline,
            "the killed gateway's backend lingers"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        uses_and_grants(server, &db, &l.id),
        (0, 0),
        "(uses, grants)"
    );
    assert_eq!(retry_exchange(&s, &l.id, "k2").await.uses, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopping_mid_exchange_burns_no_use() {
    let server = PgServer::start();
    let db = durable_database(&server);
    let s = Arc::new(
        PgStore::open(&PgSettings::parse(&db.url).unwrap())
            .await
            .unwrap(),
    );
    let l = one_use_link();
    s.create_link(&l).await.unwrap();
    let (_locker, exchange, _) = exchange_while_grants_are_locked(&server, &db, &s, &l.id).await;
    server.stop_immediate();
    let r = exchange.await.unwrap();
    // While the server is down every call is an outage, not an internal error.
    let down = s.health().await.unwrap_err();
    server.restart();
    assert_eq!(
        uses_and_grants(&server, &db, &l.id),
        (0, 0),
        "(uses, grants)"
    );
    assert_unavailable(r);
    assert!(down.is_unavailable(), "{down:?}");
    assert_eq!(retry_exchange(&s, &l.id, "k2").await.uses, 1);
    assert_eq!(uses_and_grants(&server, &db, &l.id), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_exchange_during_an_outage_is_503_and_the_retry_succeeds() {
    let server = PgServer::start();
    let db = durable_database(&server);
    let gw = Arc::new(
        TestGateway::start_with(&format!(
            "[store]\nurl = {:?}\npool_size = 4\nconnect_timeout_secs = 2\n",
            db.url
        ))
        .await,
    );
    let link = gw
        .raw_link("outage-raw", "127.0.0.1:9", json!({"max_uses": 1}))
        .await;
    let id = link["id"].as_str().unwrap().to_owned();
    let token = link["token"].as_str().unwrap().to_owned();

    let _locker = lock_grants(&db).await;
    let exchange = {
        let (gw, body) = (Arc::clone(&gw), json!({ "token": token }).to_string());
        tokio::spawn(async move {
            gw.public(
                "POST",
                "/s/session",
                "Content-Type: application/json\r\n",
                Some(body),
            )
            .await
        })
    };
    blocked_backend(&server, &db).await;
    server.stop_immediate();
    let (status, head, body) = exchange.await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["reason"], "store_unavailable", "{body}");
    assert!(
        head.to_ascii_lowercase().contains("\r\nretry-after:"),
        "{head}"
    );

    server.restart();
    // PostgreSQL is back: the visitor's (first) retry gets the use.
    let (status, cookie, body) = gw.exchange(&token, None).await;
    assert_eq!(status, 200, "the visitor's retry: {body}");
    assert!(cookie.is_some());
    let (s, v) = gw.admin("GET", &format!("/api/v1/links/{id}"), None).await;
    assert_eq!((s, v["uses"].as_u64()), (200, Some(1)), "{v}");
    if let Ok(gw) = Arc::try_unwrap(gw) {
        gw.stop().await;
    }
}
