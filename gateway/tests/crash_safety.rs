//! `kill -9` of the gateway in the middle of 50 concurrent exchanges and 50 concurrent
//! link creations, on SQLite and on PostgreSQL: afterwards every link whose creation was
//! answered exists, every answered exchange is counted, no use is counted without its
//! grant (or a grant stored without its use), no link is over its `max_uses`, and the
//! audit trail has a record for everything that was answered.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// What the store holds after the crash.
#[derive(Debug, Default)]
struct Snapshot {
    /// link id → (uses, max_uses)
    links: HashMap<String, (i64, Option<i64>)>,
    /// link id → grants
    grants: HashMap<String, i64>,
    /// (kind, link id) → records
    audit: HashMap<(String, String), i64>,
}

fn connector(data: &Path) -> TlsConnector {
    common::tls_trusting(&std::fs::read(data.join("tls/self-signed.crt")).unwrap())
}

async fn admin(
    addr: &str,
    token: &str,
    method: &str,
    path: &str,
    body: serde_json::Value,
) -> Option<(u16, serde_json::Value)> {
    let tcp = TcpStream::connect(addr).await.ok()?;
    let auth = format!("Authorization: Bearer {token}\r\n");
    let (s, b) = request(tcp, method, path, &auth, &body.to_string()).await?;
    Some((s, serde_json::from_slice(&b).unwrap_or_default()))
}

/// One request on its own connection: (status, body), or `None` when the connection
/// broke (the gateway was killed) before a whole answer came.
async fn request<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> Option<(u16, Vec<u8>)> {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let status = std::str::from_utf8(buf.get(9..12)?).ok()?.parse().ok()?;
    let at = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    Some((status, buf[at..].to_vec()))
}

/// One visitor exchange; its status, or `None` when the connection broke.
async fn exchange(addr: &str, tls: &TlsConnector, token: &str) -> Option<u16> {
    let tcp = TcpStream::connect(addr).await.ok()?;
    let s = tls
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .ok()?;
    let body = json!({ "token": token }).to_string();
    request(s, "POST", "/s/session", "", &body)
        .await
        .map(|(status, _)| status)
}

/// Runs the storm against a gateway on `config`, kills it, and checks `snapshot()`.
async fn crash_mid_storm(dir: &Path, config: &Path, snapshot: impl Fn() -> Snapshot) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--config"])
        .arg(config)
        .args(["admin-token", "create", "crash", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = token["token"].as_str().unwrap().to_owned();

    let mut gw = common::spawn_serve(config).await;
    let target = json!({"name": "t", "kind": "raw", "address": "127.0.0.1:9"});
    let (s, _) = admin(&gw.admin, &token, "POST", "/api/v1/targets", target)
        .await
        .unwrap();
    assert_eq!(s, 201);
    let mut tokens = Vec::new();
    for _ in 0..20 {
        let l = json!({"vm": "t", "console": "raw", "ttl_seconds": 3600, "max_uses": 3});
        let (s, v) = admin(&gw.admin, &token, "POST", "/api/v1/links", l)
            .await
            .unwrap();
        assert_eq!(s, 201);
        tokens.push((
            v["id"].as_str().unwrap().to_owned(),
            v["token"].as_str().unwrap().to_owned(),
        ));
    }
    let tls = connector(&dir.join("data"));
    let redeemed: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    let created: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let (addr, tls, tokens, redeemed) = (
            gw.public.clone(),
            tls.clone(),
            tokens.clone(),
            redeemed.clone(),
        );
        tasks.spawn(async move {
            for k in 0.. {
                let (id, t) = &tokens[(i + k * 7) % tokens.len()];
                match exchange(&addr, &tls, t).await {
                    Some(200) => *redeemed.lock().unwrap().entry(id.clone()).or_default() += 1,
                    Some(_) => {}
                    None => return,
                }
            }
        });
        let (addr, token, created) = (gw.admin.clone(), token.clone(), created.clone());
        tasks.spawn(async move {
            loop {
                let l = json!({"vm": "t", "console": "raw", "ttl_seconds": 3600, "max_uses": 1});
                match admin(&addr, &token, "POST", "/api/v1/links", l).await {
                    Some((201, v)) => created
                        .lock()
                        .unwrap()
                        .push(v["id"].as_str().unwrap().to_owned()),
                    Some(_) => {}
                    None => return,
                }
            }
        });
    }
    // Let the storm run, then kill -9 while requests are in flight.
    let start = Instant::now();
    // Both halves of the storm must be under way: exchanges answer faster than link
    // creations (which hash nothing but write more), so wait for each.
    while (redeemed.lock().unwrap().values().sum::<i64>() < 20 || created.lock().unwrap().len() < 5)
        && start.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.child.start_kill().unwrap();
    gw.child.wait().await.unwrap();
    while tasks.join_next().await.is_some() {}

    let snap = snapshot();
    let redeemed = redeemed.lock().unwrap().clone();
    let created = created.lock().unwrap().clone();
    eprintln!(
        "answered before the kill: {} exchanges, {} links created",
        redeemed.values().sum::<i64>(),
        created.len()
    );
    assert!(
        !created.is_empty() && !redeemed.is_empty(),
        "the storm did not get going"
    );
    for id in &created {
        assert!(snap.links.contains_key(id), "created link {id} was lost");
        let n = snap
            .audit
            .get(&("link_created".into(), id.clone()))
            .copied();
        assert_eq!(n, Some(1), "audit of link {id}");
    }
    for (id, (uses, max)) in &snap.links {
        let grants = snap.grants.get(id).copied().unwrap_or(0);
        assert_eq!(*uses, grants, "link {id}: {uses} uses but {grants} grants");
        assert!(max.is_none_or(|m| *uses <= m), "link {id} over max_uses");
        let answered = redeemed.get(id).copied().unwrap_or(0);
        assert!(
            *uses >= answered,
            "link {id}: {answered} answered but {uses} counted"
        );
        let audited = snap
            .audit
            .get(&("link_redeemed".into(), id.clone()))
            .copied()
            .unwrap_or(0);
        assert!(
            audited >= answered,
            "link {id}: {answered} answered, {audited} audited"
        );
    }

    // The gateway comes back on the same state.
    let mut again = common::spawn_serve(config).await;
    let (s, v) = admin(&again.admin, &token, "GET", "/api/v1/links", json!({}))
        .await
        .unwrap();
    assert_eq!((s, v.as_array().unwrap().len()), (200, snap.links.len()));
    again.child.start_kill().unwrap();
    let _ = again.child.wait().await;
}

fn write_config(dir: &Path, store: &str) -> std::path::PathBuf {
    let p = dir.join("gateway.toml");
    std::fs::write(
        &p,
        format!(
            "data_dir = \"data\"\n[public]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[limits]\nexchanges_per_ip_per_minute = 1000000\nmax_connections_per_ip = 10000\n{store}"
        ),
    )
    .unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_storm_loses_nothing_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let db = dir.path().join("data/gateway.sqlite3");
    crash_mid_storm(dir.path(), &config, || {
        let c = rusqlite::Connection::open(&db).unwrap();
        let mut snap = Snapshot::default();
        let mut q = c.prepare("SELECT id, uses, max_uses FROM links").unwrap();
        for r in q.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap() {
            let (id, uses, max): (String, i64, Option<i64>) = r.unwrap();
            snap.links.insert(id, (uses, max));
        }
        let mut q = c.prepare("SELECT link_id, count(*) FROM grants GROUP BY link_id").unwrap();
        for r in q.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap() {
            let (id, n): (String, i64) = r.unwrap();
            snap.grants.insert(id, n);
        }
        let mut q = c
            .prepare("SELECT kind, link_id, count(*) FROM audit WHERE link_id IS NOT NULL GROUP BY kind, link_id")
            .unwrap();
        for r in q.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap() {
            let (k, id, n): (String, String, i64) = r.unwrap();
            snap.audit.insert((k, id), n);
        }
        snap
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_storm_loses_nothing_on_postgres() {
    let server = test_support::postgres::PgServer::shared();
    let db = server.database();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &format!("[store]\nurl = {:?}\n", db.url));
    crash_mid_storm(dir.path(), &config, || {
        let rows = |sql: &str| -> Vec<Vec<String>> {
            server
                .psql(&db.name, sql)
                .lines()
                .filter(|l| !l.is_empty())
                .map(|l| l.split('|').map(str::to_owned).collect())
                .collect()
        };
        let mut snap = Snapshot::default();
        for r in rows("SELECT id, uses, max_uses FROM links") {
            snap.links
                .insert(r[0].clone(), (r[1].parse().unwrap(), r[2].parse().ok()));
        }
        for r in rows("SELECT link_id, count(*) FROM grants GROUP BY link_id") {
            snap.grants.insert(r[0].clone(), r[1].parse().unwrap());
        }
        for r in rows("SELECT kind, link_id, count(*) FROM audit WHERE link_id IS NOT NULL GROUP BY kind, link_id") {
            snap.audit.insert((r[0].clone(), r[1].clone()), r[2].parse().unwrap());
        }
        snap
    })
    .await;
}
