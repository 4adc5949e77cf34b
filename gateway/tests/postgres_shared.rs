//! Two gateways sharing one PostgreSQL database (a real server from
//! `test_support::postgres`): a link made on gateway A is exchanged and used on gateway
//! B, uses are counted once across both, and revoking it on A ends B's live session
//! within B's `revocation_poll_ms`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{TestGateway, WsBytes};
use serde_json::json;
use test_support::postgres::PgServer;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_made_on_one_gateway_works_and_is_revoked_on_another() {
    let db = PgServer::shared().database();
    let toml = format!(
        "[store]\nurl = {:?}\npool_size = 4\n[limits]\nrevocation_poll_ms = 100\n",
        db.url
    );
    let a = TestGateway::start_with(&toml).await;
    let b = TestGateway::start_with(&toml).await;

    // A raw console: greets every connection, then holds it open.
    let console = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = console.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = console.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(b"hello").await;
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
        }
    });

    // Target and link are made on A; B knows both through the database.
    let link = a
        .raw_link("shared-raw", &addr.to_string(), json!({"max_uses": 2}))
        .await;
    let id = link["id"].as_str().unwrap();
    let (s, v) = b.admin("GET", &format!("/api/v1/links/{id}"), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["id"], id);

    // Exchanged and used on B.
    let (s, cookie, v) = b.exchange(link["token"].as_str().unwrap(), None).await;
    assert_eq!(s, 200, "{v}");
    let ws_path = v["ws_path"].as_str().unwrap().to_owned();
    let ws = b.ws(&ws_path, cookie.as_deref(), Some(&b.origin())).await;
    let mut c = WsBytes::new(ws.unwrap());
    assert_eq!(c.read_exact(5).await, b"hello");
    // The second use on A; the third, on either, is refused: one counter.
    let (s, _, v) = a.exchange(link["token"].as_str().unwrap(), None).await;
    assert_eq!(s, 200, "{v}");
    let (s, _, v) = b.exchange(link["token"].as_str().unwrap(), None).await;
    assert_eq!((s, v["reason"].as_str()), (403, Some("exhausted")), "{v}");

    // Revoked on A: B's session ends within its poll interval (100 ms here).
    let t = Instant::now();
    let (s, v) = a
        .admin("DELETE", &format!("/api/v1/links/{id}"), None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["revoked"], true);
    let closed = c.closed_within(Duration::from_secs(3)).await;
    assert_eq!(
        closed,
        Some((4001, "revoked".to_owned())),
        "after {:?}",
        t.elapsed()
    );
    eprintln!("B's session ended {:?} after A's revocation", t.elapsed());
    // Nor may B's visitor reconnect with its cookie: B reads the link again from its
    // next poll on (it caches links between two polls).
    let r = b.ws(&ws_path, cookie.as_deref(), Some(&b.origin())).await;
    assert!(
        matches!(&r, Err(tokio_tungstenite::tungstenite::Error::Http(resp)) if resp.status() == 403),
        "{:?}",
        r.map(|_| ())
    );
    let (s, v) = b.admin("GET", &format!("/api/v1/links/{id}"), None).await;
    assert_eq!((s, v["revoked"].as_bool()), (200, Some(true)), "{v}");
    for gw in [&a, &b] {
        let (s, _, v) = gw.exchange(link["token"].as_str().unwrap(), None).await;
        assert_eq!((s, v["reason"].as_str()), (403, Some("revoked")), "{v}");
    }
    a.stop().await;
    b.stop().await;
}
