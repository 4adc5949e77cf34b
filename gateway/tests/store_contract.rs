//! The `Store` contract, written once and run against both stores: every behaviour is
//! one generic async function taking a [`Fixture`] (a store behind `Arc<dyn Store>`,
//! plus raw SQL access and a way to reopen it), and `contract!` generates one
//! `#[tokio::test]` per behaviour for SQLite (a file in a temporary directory) and one
//! for PostgreSQL (a fresh database on this binary's throwaway server; never skipped).
//!
//! Store-specific behaviours stay with their store: `src/store/sqlite/tests.rs`
//! (durability, pragmas, upgrades, several connections on one file) and
//! `tests/postgres_store.rs` (pool, reconnects, concurrent migrations, several gateways)
//! and `tests/postgres_outage.rs`.

#![allow(clippy::unwrap_used)]

mod store_fixtures;

use std::path::PathBuf;
use std::sync::Arc;

use gateway::model::links::{ConsoleType, Refusal};
use gateway::model::tokens::{TokenConfig, TokenKeys};
use gateway::store::{
    admin_token_hash, AuditEvent, AuditKind, AuditQuery, Grant, PgSettings, PgStore,
    RecordingFilter, RecordingInfo, RecordingStatus, RedeemError, Secret, SqliteStore, Store,
    StoreError, Target, TargetAddress, TargetRequest, MAX_AUDIT_DETAIL,
};
use store_fixtures::{link_with, NOW};
use test_support::postgres::{PgDatabase, PgServer};

enum Backend {
    Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Postgres {
        db: PgDatabase,
    },
}

/// A store under test and what the contract needs around it.
struct Fixture {
    store: Arc<dyn Store>,
    backend: Backend,
}

impl Fixture {
    async fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite3");
        let store = Arc::new(SqliteStore::open(&path).unwrap());
        Fixture {
            store,
            backend: Backend::Sqlite { _dir: dir, path },
        }
    }

    async fn postgres() -> Fixture {
        let db = PgServer::shared().database();
        let store = Arc::new(
            PgStore::open(&PgSettings::parse(&db.url).unwrap())
                .await
                .unwrap(),
        );
        Fixture {
            store,
            backend: Backend::Postgres { db },
        }
    }

    /// The store's type name, as its `Debug` shows it.
    fn type_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite { .. } => "SqliteStore",
            Backend::Postgres { .. } => "PgStore",
        }
    }

    /// A second, independent store on the same data (a restarted gateway). PostgreSQL
    /// reconnects with the key-value form of the connection string.
    async fn reopen(&self) -> Arc<dyn Store> {
        match &self.backend {
            Backend::Sqlite { path, .. } => Arc::new(SqliteStore::open(path).unwrap()),
            Backend::Postgres { db } => Arc::new(
                PgStore::open(&PgSettings::parse(&db.key_value).unwrap())
                    .await
                    .unwrap(),
            ),
        }
    }

    /// The first column (as text) of every row of `sql`, run beside the store.
    fn column(&self, sql: &str) -> Vec<String> {
        match &self.backend {
            Backend::Sqlite { path, .. } => {
                let c = rusqlite::Connection::open(path).unwrap();
                let mut st = c.prepare(sql).unwrap();
                st.query_map([], |r| r.get::<_, String>(0))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap()
            }
            Backend::Postgres { db } => PgServer::shared()
                .psql(&db.name, sql)
                .lines()
                .map(str::to_owned)
                .collect(),
        }
    }
}

/// One `#[tokio::test]` per behaviour and store: `sqlite::NAME` and `postgres::NAME`.
macro_rules! contract {
    ($($(#[$attr:meta])+ $name:ident;)+) => {
        mod sqlite {
            $($(#[$attr])+ async fn $name() {
                super::$name(super::Fixture::sqlite().await).await
            })+
        }
        mod postgres {
            $($(#[$attr])+ async fn $name() {
                super::$name(super::Fixture::postgres().await).await
            })+
        }
    };
}

contract! {
    #[tokio::test] link_crud_and_revoke;
    #[tokio::test] redeem_checks_everything;
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)] concurrent_redemptions_are_exact;
    #[tokio::test] a_redemption_and_its_grant_commit_together;
    #[tokio::test] a_redemption_its_grant_and_its_audit_record_commit_together;
    #[tokio::test] grants_are_kept_pruned_and_dropped_on_revoke;
    #[tokio::test] admin_tokens;
    #[tokio::test] signing_keys_rotate_and_remove;
    #[tokio::test] targets;
    #[tokio::test] audit_log;
    #[tokio::test] reopen_keeps_everything;
    #[tokio::test] health_and_debug;
    #[tokio::test] recordings_index;
    #[tokio::test] audit_query_filters_pages_and_links_recordings;
    #[tokio::test] link_record_flag_round_trips;
}

fn recording(id: &str, session: &str, link: &str, gateway: &str, at: i64) -> RecordingInfo {
    RecordingInfo {
        id: id.into(),
        session_id: session.into(),
        link_id: link.into(),
        vm: "web-01".into(),
        console: "spice".into(),
        channel: Some("display".into()),
        gateway: gateway.into(),
        file: format!("{id}.vmrec"),
        started_at: NOW + time::Duration::seconds(at),
        ended_at: None,
        bytes: 17,
        status: RecordingStatus::Recording,
        detail: None,
    }
}

async fn recordings_index(f: Fixture) {
    let s = &f.store;
    let a = recording("r1", "s1", "L1", "gw-a", 0);
    s.put_recording(&a).await.unwrap();
    s.put_recording(&recording("r2", "s2", "L1", "gw-b", 1))
        .await
        .unwrap();
    s.put_recording(&recording("r3", "s3", "L2", "gw-a", 2))
        .await
        .unwrap();
    assert!(matches!(
        s.put_recording(&a).await,
        Err(StoreError::Duplicate(_))
    ));
    let mut bad = recording("r4", "s4", "L1", "gw-a", 0);
    bad.file = "../x".into();
    assert!(matches!(
        s.put_recording(&bad).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(s.get_recording("r1").await.unwrap(), Some(a.clone()));
    assert_eq!(s.get_recording("nope").await.unwrap(), None);
    let ids = |v: Vec<RecordingInfo>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let all = RecordingFilter::default();
    assert_eq!(
        ids(s.list_recordings(&all, 100).await.unwrap()),
        ["r3", "r2", "r1"]
    );
    let by_link = RecordingFilter {
        link_id: Some("L1".into()),
        ..RecordingFilter::default()
    };
    assert_eq!(
        ids(s.list_recordings(&by_link, 100).await.unwrap()),
        ["r2", "r1"]
    );
    let by_session = RecordingFilter {
        session_id: Some("s3".into()),
        ..RecordingFilter::default()
    };
    assert_eq!(
        ids(s.list_recordings(&by_session, 100).await.unwrap()),
        ["r3"]
    );
    let mine = RecordingFilter {
        gateway: Some("gw-a".into()),
        status: Some(RecordingStatus::Recording),
        started_before: Some(NOW + time::Duration::seconds(2)),
        ..RecordingFilter::default()
    };
    assert_eq!(ids(s.list_recordings(&mine, 100).await.unwrap()), ["r1"]);
    assert_eq!(s.list_recordings(&all, 1).await.unwrap().len(), 1);
    let end = NOW + time::Duration::seconds(30);
    assert!(s
        .finish_recording(
            "r1",
            Some(end),
            1234,
            RecordingStatus::Stopped,
            Some("size_cap")
        )
        .await
        .unwrap());
    assert!(!s
        .finish_recording("nope", None, 1, RecordingStatus::Complete, None)
        .await
        .unwrap());
    let r1 = s.get_recording("r1").await.unwrap().unwrap();
    assert_eq!(
        (r1.ended_at, r1.bytes, r1.status, r1.detail.as_deref()),
        (Some(end), 1234, RecordingStatus::Stopped, Some("size_cap"))
    );
    assert_eq!(r1.channel.as_deref(), Some("display"));
    assert!(s.delete_recording("r1").await.unwrap());
    assert!(!s.delete_recording("r1").await.unwrap());
    assert_eq!(
        ids(s.list_recordings(&all, 100).await.unwrap()),
        ["r3", "r2"]
    );
}

async fn audit_query_filters_pages_and_links_recordings(f: Fixture) {
    let s = &f.store;
    let link = link_with(None, None);
    s.create_link(&link).await.unwrap();
    for i in 0..6 {
        let mut e = AuditEvent::new(AuditKind::SessionStarted, NOW + time::Duration::seconds(i))
            .session(format!("s{i}"))
            .client(if i % 2 == 0 {
                "192.0.2.1"
            } else {
                "2001:db8::1"
            });
        if i < 4 {
            e = e.link(link.id.clone());
        }
        s.audit(e).await.unwrap();
    }
    s.audit(AuditEvent::new(AuditKind::VmAction, NOW).detail("x"))
        .await
        .unwrap();
    s.put_recording(&recording("rec-s1", "s1", &link.id, "gw", 0))
        .await
        .unwrap();
    let q = |f: &dyn Fn(&mut AuditQuery)| {
        let mut q = AuditQuery {
            limit: 100,
            ..AuditQuery::default()
        };
        f(&mut q);
        q
    };
    let all = s.query_audit(&q(&|_| {})).await.unwrap();
    assert_eq!(all.len(), 7);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let with_rec: Vec<_> = all.iter().filter(|e| e.recording_id.is_some()).collect();
    assert_eq!(with_rec.len(), 1);
    assert_eq!(with_rec[0].event.session_id.as_deref(), Some("s1"));
    assert_eq!(with_rec[0].recording_id.as_deref(), Some("rec-s1"));
    let n = |q: AuditQuery| async move { s.query_audit(&q).await.unwrap().len() };
    assert_eq!(n(q(&|q| q.link_id = Some(link.id.clone()))).await, 4);
    assert_eq!(n(q(&|q| q.vm = Some("web-01".into()))).await, 4);
    assert_eq!(n(q(&|q| q.vm = Some("other".into()))).await, 0);
    assert_eq!(n(q(&|q| q.kind = Some(AuditKind::VmAction))).await, 1);
    assert_eq!(n(q(&|q| q.client = Some("2001:db8::1".into()))).await, 3);
    let t = |s: i64| NOW + time::Duration::seconds(s);
    assert_eq!(n(q(&|q| q.since = Some(t(4)))).await, 2);
    assert_eq!(n(q(&|q| q.until = Some(t(1)))).await, 2);
    assert_eq!(
        n(q(&|q| {
            q.since = Some(t(1));
            q.until = Some(t(3));
            q.client = Some("192.0.2.1".into());
        }))
        .await,
        1
    );
    // Paging by id: two pages of three and one of one, no overlap.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = s
            .query_audit(&q(&|q| {
                q.limit = 3;
                q.before_id = before;
            }))
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        before = page.last().map(|e| e.id);
        seen.extend(page);
    }
    assert_eq!(seen, all);
}

async fn link_record_flag_round_trips(f: Fixture) {
    let s = &f.store;
    for record in [None, Some(true), Some(false)] {
        let mut l = link_with(None, None);
        l.record = record;
        s.create_link(&l).await.unwrap();
        assert_eq!(s.get_link(&l.id).await.unwrap().unwrap().record, record);
    }
}

async fn link_crud_and_revoke(f: Fixture) {
    let s = &f.store;
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
    // newest first; same created_at: the later insert first
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
    // Text that must round-trip cannot hold NUL: refused as invalid, not a database
    // error, in both stores.
    let mut bad = link_with(None, None);
    bad.note = Some("a\0b".into());
    assert!(matches!(
        s.create_link(&bad).await,
        Err(StoreError::Invalid(_))
    ));
}

async fn redeem_checks_everything(f: Fixture) {
    let s = &f.store;
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

async fn concurrent_redemptions_are_exact(f: Fixture) {
    let l = link_with(Some(10), None);
    f.store.create_link(&l).await.unwrap();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (s, id) = (Arc::clone(&f.store), l.id.clone());
            tokio::spawn(async move { s.redeem(&id, NOW).await })
        })
        .collect();
    let (mut ok, mut exhausted) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(RedeemError::Refused(Refusal::Exhausted)) => exhausted += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!((ok, exhausted), (10, 90));
    assert_eq!(f.store.get_link(&l.id).await.unwrap().unwrap().uses, 10);
}

async fn a_redemption_and_its_grant_commit_together(f: Fixture) {
    let s = &f.store;
    let l = link_with(Some(2), None);
    s.create_link(&l).await.unwrap();
    let got = s.redeem_with_grant(&l.id, NOW, "k1").await.unwrap();
    assert_eq!(got.uses, 1);
    let g = s.get_grant("k1").await.unwrap().unwrap();
    assert_eq!(
        (g.link_id.as_str(), g.expires_at),
        (l.id.as_str(), l.expires_at)
    );
    // a grant that cannot be stored undoes the use
    assert!(matches!(
        s.redeem_with_grant(&l.id, NOW, "k1").await,
        Err(RedeemError::Store(StoreError::Duplicate(_)))
    ));
    assert_eq!(s.get_link(&l.id).await.unwrap().unwrap().uses, 1);
    // a refused redemption stores no grant
    s.redeem_with_grant(&l.id, NOW, "k2").await.unwrap();
    assert!(matches!(
        s.redeem_with_grant(&l.id, NOW, "k3").await,
        Err(RedeemError::Refused(Refusal::Exhausted))
    ));
    assert_eq!(s.get_grant("k3").await.unwrap(), None);
    assert!(matches!(
        s.redeem_with_grant("missing", NOW, "k4").await,
        Err(RedeemError::NotFound)
    ));
    assert_eq!(s.get_grant("k4").await.unwrap(), None);
}

async fn a_redemption_its_grant_and_its_audit_record_commit_together(f: Fixture) {
    let s = &f.store;
    let l = link_with(Some(2), None);
    s.create_link(&l).await.unwrap();
    let event = || AuditEvent::new(AuditKind::LinkRedeemed, NOW).client("192.0.2.9");
    let got = s
        .redeem_with_grant_audited(&l.id, NOW, "k1", event())
        .await
        .unwrap();
    assert_eq!(got.uses, 1);
    assert_eq!(s.get_grant("k1").await.unwrap().unwrap().link_id, l.id);
    let audit = s.list_audit(Some(&l.id), 100).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].kind, AuditKind::LinkRedeemed);
    assert_eq!(audit[0].client.as_deref(), Some("192.0.2.9"));
    assert_eq!(audit[0].detail.as_deref(), Some("uses=1"));
    assert_eq!(audit[0].at, NOW);
    // a grant that cannot be stored undoes the use and its record
    assert!(matches!(
        s.redeem_with_grant_audited(&l.id, NOW, "k1", event()).await,
        Err(RedeemError::Store(StoreError::Duplicate(_)))
    ));
    assert_eq!(s.get_link(&l.id).await.unwrap().unwrap().uses, 1);
    assert_eq!(s.list_audit(Some(&l.id), 100).await.unwrap().len(), 1);
    s.redeem_with_grant_audited(&l.id, NOW, "k2", event())
        .await
        .unwrap();
    let audit = s.list_audit(Some(&l.id), 100).await.unwrap();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0].detail.as_deref(), Some("uses=2"));
    // a refused redemption stores neither grant nor record
    assert!(matches!(
        s.redeem_with_grant_audited(&l.id, NOW, "k3", event()).await,
        Err(RedeemError::Refused(Refusal::Exhausted))
    ));
    assert_eq!(s.get_grant("k3").await.unwrap(), None);
    assert!(matches!(
        s.redeem_with_grant_audited("missing", NOW, "k4", event())
            .await,
        Err(RedeemError::NotFound)
    ));
    assert_eq!(s.list_audit(None, 100).await.unwrap().len(), 2);
}

async fn grants_are_kept_pruned_and_dropped_on_revoke(f: Fixture) {
    let s = &f.store;
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
        matches!(s.put_grant("aa", &g).await, Err(StoreError::Duplicate(_))),
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

async fn admin_tokens(f: Fixture) {
    let s = &f.store;
    let (info, token) = s.create_admin_token("ci").await.unwrap();
    assert!(token.starts_with("vmgw_"));
    assert_eq!(info.name, "ci");
    assert!(!info.revoked);
    assert_eq!(
        s.check_admin_token(&token).await.unwrap(),
        Some(info.clone())
    );
    // Only the hash is stored.
    assert_eq!(
        f.column("SELECT token_sha256 FROM admin_tokens"),
        vec![admin_token_hash(&token)]
    );
    // Wrong / malformed tokens.
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
    // The secret never appears in the info's JSON.
    assert!(!serde_json::to_string(&all).unwrap().contains(&token[5..]));
}

async fn signing_keys_rotate_and_remove(f: Fixture) {
    let s = &f.store;
    let k1 = s.signing_keys().await.unwrap();
    assert_eq!(k1.len(), 1);
    assert!(!k1[0].retired);
    assert_eq!(k1[0].secret.len(), 32);
    // Stable on repeated calls.
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

async fn targets(f: Fixture) {
    let s = &f.store;
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
    // Upper case sorts before lower case: byte order in both stores.
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
    let mut bad = u.clone();
    bad.name = "c".into();
    bad.vnc_password = Some("a\0b".into());
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

async fn audit_log(f: Fixture) {
    let s = &f.store;
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

async fn reopen_keeps_everything(f: Fixture) {
    let l = link_with(Some(5), None);
    let (kid, token, tinfo) = {
        let s = &f.store;
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
    let s = f.reopen().await;
    let got = s.get_link(&l.id).await.unwrap().unwrap();
    assert_eq!(got.uses, 2);
    assert_eq!(got.password_hash, l.password_hash);
    assert_eq!(got.note, l.note);
    assert_eq!(got.expires_at, l.expires_at);
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

async fn health_and_debug(f: Fixture) {
    f.store.health().await.unwrap();
    let d = format!("{:?}", f.store);
    assert!(d.contains(f.type_name()), "{d}");
    if let Backend::Postgres { db } = &f.backend {
        assert!(d.contains(&db.name), "{d}");
    }
}
