//! The SQLite store's own behaviours: durability, pragmas, file mode, migrations and
//! upgrades, one connection per process. What every store must do is in
//! `tests/store_contract.rs`.
use super::*;
use crate::model::links::{new_link_id, Link, LinkPolicy, LinkRequest, Refusal};
use crate::store::{AuditEvent, AuditKind, Grant, RedeemError, Store, MAX_AUDIT_LIST};
use time::macros::datetime;

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
        clipboard: Some(crate::model::clipboard::ClipboardPolicy::Both),
        record: None,
    }
    .validate(NOW, &LinkPolicy::default())
    .expect("valid")
    .into_link(
        new_link_id(),
        NOW,
        Some("$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA".into()),
    )
    .expect("link")
}

fn tmp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.sqlite3");
    (dir, path)
}

async fn hammer(stores: Vec<SqliteStore>, id: String, n: usize) -> (usize, usize) {
    let mut tasks = Vec::new();
    for i in 0..n {
        let s = stores[i % stores.len()].clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move { s.redeem(&id, NOW).await }));
    }
    let (mut ok, mut exhausted) = (0, 0);
    for t in tasks {
        match t.await.expect("join") {
            Ok(_) => ok += 1,
            Err(RedeemError::Refused(Refusal::Exhausted)) => exhausted += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    (ok, exhausted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_redemptions_across_connections_are_exact() {
    // Four independent connections (as four processes would have) on one file.
    let (_d, path) = tmp();
    let stores: Vec<SqliteStore> = (0..4)
        .map(|_| SqliteStore::open(&path).expect("open"))
        .collect();
    let l = link_with(Some(10), None);
    stores[0].create_link(&l).await.expect("create");
    let (ok, ex) = hammer(stores.clone(), l.id.clone(), 100).await;
    assert_eq!((ok, ex), (10, 90));
    for s in &stores {
        assert_eq!(s.get_link(&l.id).await.expect("get").expect("l").uses, 10);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_audit_events_are_all_committed_durably() {
    let (_d, path) = tmp();
    let s = Arc::new(SqliteStore::open(&path).expect("open"));
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                s.audit(
                    AuditEvent::new(AuditKind::SessionStarted, NOW)
                        .session(format!("s{i}"))
                        .client("192.0.2.1"),
                )
                .await
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("join").expect("audit");
    }
    assert!(lock(&s.audit_queue).is_empty());
    drop(s);
    let s = SqliteStore::open(&path).expect("reopen");
    let all = s.list_audit(None, MAX_AUDIT_LIST).await.expect("list");
    assert_eq!(all.len(), 200);
    let mut ids: Vec<_> = all.iter().filter_map(|e| e.session_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 200);
}

fn started(i: usize) -> AuditEvent {
    AuditEvent::new(AuditKind::SessionStarted, NOW)
        .session(format!("s{i}"))
        .client("192.0.2.1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_arriving_within_the_commit_interval_share_one_commit() {
    // A commit, then 50 visitors' writes within the interval: they wait for the next
    // commit and all ride on it (one transaction, one fsync), each still durable and
    // answered. Without the pace the writer commits as soon as the first arrives.
    let (_d, path) = tmp();
    let interval = Duration::from_millis(300);
    let s = Arc::new(
        SqliteStore::open(&path)
            .expect("open")
            .with_commit_interval(interval),
    );
    s.audit(started(0)).await.expect("first");
    assert_eq!(s.group_commits(), 1);
    let t0 = std::time::Instant::now();
    let tasks: Vec<_> = (1..=50)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.audit(started(i)).await })
        })
        .collect();
    for t in tasks {
        t.await.expect("join").expect("audit");
    }
    assert_eq!(s.group_commits(), 2, "all 50 writes in one commit");
    // They waited for the pace (the bound only says the wait happened).
    assert!(t0.elapsed() >= interval / 2, "{:?}", t0.elapsed());
    drop(s);
    let s = SqliteStore::open(&path).expect("reopen");
    let all = s.list_audit(None, MAX_AUDIT_LIST).await.expect("list");
    assert_eq!(all.len(), 51);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_after_a_quiet_interval_is_committed_at_once() {
    let (_d, path) = tmp();
    let interval = Duration::from_secs(3);
    let s = SqliteStore::open(&path)
        .expect("open")
        .with_commit_interval(interval);
    // The first write of a store, and one after a quiet interval, do not wait for a
    // pace: each is committed as soon as it arrives.
    let t0 = std::time::Instant::now();
    s.audit(started(0)).await.expect("first");
    assert!(t0.elapsed() < interval / 2, "{:?}", t0.elapsed());
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    let t1 = std::time::Instant::now();
    s.audit(started(1)).await.expect("second");
    assert!(t1.elapsed() < interval / 2, "{:?}", t1.elapsed());
    assert_eq!(s.group_commits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_pace_each_write_is_committed_when_it_arrives() {
    // Sequential writes with the pace off: one commit each, no waiting in between.
    let (_d, path) = tmp();
    let s = SqliteStore::open(&path)
        .expect("open")
        .with_commit_interval(Duration::ZERO);
    for i in 0..5 {
        s.audit(started(i)).await.expect("audit");
    }
    assert_eq!(s.group_commits(), 5);
}

/// Child half of `committed_writes_survive_abort`: only acts when re-run by it.
#[test]
fn abort_child() {
    let Some(path) = std::env::var_os("VMGW_STORE_ABORT_CHILD") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let s = SqliteStore::open(&path).expect("open");
        let mut l = link_with(Some(3), None);
        l.id = "abort-link".into();
        s.create_link(&l).await.expect("create");
        s.redeem(&l.id, NOW).await.expect("redeem");
        s.audit(AuditEvent::new(AuditKind::LinkRedeemed, NOW).link(&l.id))
            .await
            .expect("audit");
    });
    // No destructors, no sqlite3_close, no checkpoint: like kill -9 right after
    // the commits returned.
    std::process::abort();
}

#[test]
fn committed_writes_survive_abort() {
    let (_d, path) = tmp();
    let exe = std::env::current_exe().expect("exe");
    let status = std::process::Command::new(exe)
        .args([
            "--exact",
            "store::sqlite::tests::abort_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("VMGW_STORE_ABORT_CHILD", &path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("spawn child");
    assert!(!status.success(), "the child should have aborted");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let s = SqliteStore::open(&path).expect("reopen");
        let l = s
            .get_link("abort-link")
            .await
            .expect("get")
            .expect("link survived");
        assert_eq!(l.uses, 1);
        let a = s.list_audit(Some("abort-link"), 10).await.expect("audit");
        assert_eq!(a.len(), 1);
    });
}

#[test]
fn pragmas_and_file_mode() {
    let (_d, path) = tmp();
    let s = SqliteStore::open(&path).expect("open");
    {
        let c = lock(&s.conn);
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("mode");
        assert_eq!(mode, "wal");
        let sync: i64 = c
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .expect("sync");
        assert_eq!(sync, 2, "synchronous=FULL");
        let busy: i64 = c
            .query_row("PRAGMA busy_timeout", [], |r| r.get(0))
            .expect("busy");
        assert!(busy >= 1000);
        c.execute_batch("INSERT INTO audit (at_ms, kind) VALUES (0, 'vm_action')")
            .expect("write");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            let meta = std::fs::metadata(&p).expect("meta");
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{suffix}");
        }
        // An existing file with loose permissions is tightened at open.
        drop(s);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let _s = SqliteStore::open(&path).expect("reopen");
        let meta = std::fs::metadata(&path).expect("meta");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
}

fn version(c: &Connection) -> Vec<i64> {
    let mut st = c
        .prepare("SELECT version FROM schema_version ORDER BY version")
        .expect("prep");
    st.query_map([], |r| r.get(0))
        .expect("q")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[test]
fn migrations_idempotent_ordered_and_guarded() {
    let (_d, path) = tmp();
    drop(SqliteStore::open(&path).expect("open"));
    drop(SqliteStore::open(&path).expect("reopen"));
    let mut c = Connection::open(&path).expect("conn");
    assert_eq!(version(&c), vec![1, 2, 3, 5]);
    // A later migration is applied once, in order, after the existing ones; given
    // out of order it still applies in version order.
    let more = [
        Migration {
            version: 12,
            sql: "ALTER TABLE links ADD COLUMN c12 TEXT; UPDATE links SET c12 = c11;",
        },
        MIGRATIONS[0],
        MIGRATIONS[1],
        MIGRATIONS[2],
        Migration {
            version: 11,
            sql: "ALTER TABLE links ADD COLUMN c11 TEXT;",
        },
    ];
    assert_eq!(migrate(&mut c, &more).expect("migrate"), 12);
    assert_eq!(migrate(&mut c, &more).expect("again"), 12);
    assert_eq!(version(&c), vec![1, 2, 3, 5, 11, 12]);
    // A failing migration rolls back entirely.
    let broken = [Migration {
        version: 13,
        sql: "CREATE TABLE t5 (x); THIS IS NOT SQL;",
    }];
    assert!(migrate(&mut c, &broken).is_err());
    assert_eq!(version(&c), vec![1, 2, 3, 5, 11, 12]);
    let t5: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 't5'",
            [],
            |r| r.get(0),
        )
        .expect("q");
    assert_eq!(t5, 0);
    // A store written by a newer gateway is refused.
    drop(c);
    assert!(matches!(
        SqliteStore::open(&path),
        Err(StoreError::SchemaTooNew {
            found: 12,
            supported: 5
        })
    ));
}

#[tokio::test]
async fn a_version_1_store_is_upgraded_in_place() {
    let (_d, path) = tmp();
    let mut c = Connection::open(&path).expect("conn");
    migrate(&mut c, &MIGRATIONS[..1]).expect("v1");
    drop(c);
    // what the first release wrote (its columns only: no clipboard policy yet)
    let mut l = link_with(Some(3), None);
    {
        let r = crate::store::rows::LinkRow::new(&l).expect("row");
        let c = Connection::open(&path).expect("conn");
        c.execute(
            "INSERT INTO links (id, vm, console, expires_at_ms, not_before_ms, password_hash, \
             max_uses, max_viewers, view_only, allow_power, note, uses, created_at_ms, \
             revoked_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            rusqlite::params![
                r.id,
                r.vm,
                r.console,
                r.expires_at_ms,
                r.not_before_ms,
                r.password_hash,
                r.max_uses,
                r.max_viewers,
                r.view_only,
                r.allow_power,
                r.note,
                r.uses,
                r.created_at_ms,
                r.revoked_at_ms
            ],
        )
        .expect("create");
    }
    let s = SqliteStore::open(&path).expect("upgrade");
    // Links from before the clipboard policy keep what they had: none.
    l.clipboard = crate::model::clipboard::ClipboardPolicy::None;
    assert_eq!(s.get_link(&l.id).await.expect("get"), Some(l.clone()));
    let g = Grant {
        link_id: l.id.clone(),
        expires_at: NOW,
    };
    s.put_grant("aa", &g).await.expect("grants table exists");
    drop(s);
    let c = Connection::open(&path).expect("conn");
    assert_eq!(version(&c), vec![1, 2, 3, 5]);
}

#[tokio::test]
async fn in_memory_health_and_debug() {
    let s = SqliteStore::open_in_memory().expect("open");
    s.health().await.expect("health");
    assert!(format!("{s:?}").contains("SqliteStore"));
    assert_eq!(s.path(), None);
    let dyn_store: Arc<dyn Store> = Arc::new(s);
    dyn_store.health().await.expect("dyn");
}

#[tokio::test]
async fn a_file_locked_past_the_busy_timeout_is_unavailable() {
    let (_d, path) = tmp();
    let s = SqliteStore::open(&path).expect("open");
    let l = link_with(Some(1), None);
    s.create_link(&l).await.expect("create");
    // Another process holds the write lock for longer than the busy timeout.
    let other = Connection::open(&path).expect("conn");
    other.execute_batch("BEGIN IMMEDIATE").expect("lock");
    let err = s
        .redeem_with_grant(&l.id, NOW, "k1")
        .await
        .expect_err("locked");
    match err {
        RedeemError::Store(e) => assert!(e.is_unavailable(), "{e:?}"),
        other => panic!("expected an outage, got {other:?}"),
    }
    other.execute_batch("ROLLBACK").expect("unlock");
    // Nothing was counted; the retry gets the use and its grant.
    assert_eq!(s.get_link(&l.id).await.expect("get").expect("l").uses, 0);
    assert_eq!(
        s.redeem_with_grant(&l.id, NOW, "k2")
            .await
            .expect("retry")
            .uses,
        1
    );
    assert!(s.get_grant("k2").await.expect("grant").is_some());
}

/// SQLite's page cache of `s`'s connection, in bytes.
fn cache_used(s: &SqliteStore) -> i64 {
    let conn = lock(&s.conn);
    let (mut now, mut high) = (0, 0);
    #[allow(unsafe_code)]
    // SAFETY: the handle is this open connection's, held locked for the call; the
    // out-pointers are live locals.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_db_status(
            conn.handle(),
            rusqlite::ffi::SQLITE_DBSTATUS_CACHE_USED,
            &mut now,
            &mut high,
            0,
        )
    };
    assert_eq!(rc, rusqlite::ffi::SQLITE_OK);
    i64::from(now)
}

#[tokio::test]
async fn release_memory_empties_the_page_cache_a_burst_filled() {
    let (_d, path) = tmp();
    let s = SqliteStore::open(&path).expect("open");
    for _ in 0..400 {
        s.create_link(&link_with(None, None)).await.expect("create");
    }
    assert_eq!(s.list_links().await.expect("list").len(), 400);
    let full = cache_used(&s);
    assert!(full > 64 * 1024, "cache {full}");
    s.release_memory().await.expect("release");
    let after = cache_used(&s);
    assert!(after < full / 4, "cache {full} -> {after}");
    // Later reads fill it again from the file.
    assert_eq!(s.list_links().await.expect("list").len(), 400);
}
