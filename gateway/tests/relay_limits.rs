//! The relay's bounds: a visitor who stops reading cannot grow the gateway's memory (the
//! console is throttled instead), and a silent visitor is pinged and timed out.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{TestGateway, WsBytes};
use serde_json::json;
use tokio::io::AsyncWriteExt;

/// A raw "console" that writes as fast as it can, counting what the gateway accepted.
async fn flooding_target() -> (std::net::SocketAddr, Arc<AtomicU64>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let s2 = sent.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let sent = s2.clone();
            tokio::spawn(async move {
                let chunk = vec![0x5au8; 64 * 1024];
                while s.write_all(&chunk).await.is_ok() {
                    sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                }
            });
        }
    });
    (addr, sent)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_who_stops_reading_throttles_the_console() {
    let gw = TestGateway::start().await;
    let (addr, sent) = flooding_target().await;
    let (s, _) = gw
        .admin(
            "POST",
            "/api/v1/targets",
            Some(json!({"name": "flood", "kind": "raw", "address": addr.to_string()})),
        )
        .await;
    assert_eq!(s, 201);
    let link = gw
        .create_link(json!({"vm": "flood", "console": "raw", "ttl_seconds": 600}))
        .await;
    let rss_before = rss_kib();
    let mut c = WsBytes::new(gw.open_console(&link, None).await);
    // read a little, then stop reading altogether
    c.read_exact(1024).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let at_3s = sent.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let at_5s = sent.load(Ordering::SeqCst);
    let grew_kib = rss_kib().saturating_sub(rss_before);
    eprintln!("console wrote {at_3s} bytes by 3 s, {at_5s} by 5 s; RSS grew {grew_kib} KiB");
    assert!(
        at_5s - at_3s <= 256 * 1024,
        "the console was not throttled: {at_3s} -> {at_5s}"
    );
    assert!(
        at_5s < 64 << 20,
        "{at_5s} bytes were accepted from the console"
    );
    assert!(
        grew_kib < 64 * 1024,
        "gateway memory grew by {grew_kib} KiB"
    );
    // reading again drains it and the relay goes on
    c.read_exact(4 << 20).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sent.load(Ordering::SeqCst) > at_5s, "the relay resumed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_visitor_is_timed_out() {
    let gw =
        TestGateway::start_with("[limits]\nws_ping_interval_secs = 1\nws_idle_timeout_secs = 2\n")
            .await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _keep = s;
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
        }
    });
    let (s, _) = gw
        .admin(
            "POST",
            "/api/v1/targets",
            Some(json!({"name": "quiet", "kind": "raw", "address": addr.to_string()})),
        )
        .await;
    assert_eq!(s, 201);
    let link = gw
        .create_link(json!({"vm": "quiet", "console": "raw", "ttl_seconds": 600}))
        .await;
    let mut c = WsBytes::new(gw.open_console(&link, None).await);
    // not reading means not answering pings
    tokio::time::sleep(Duration::from_secs(4)).await;
    let closed = c.closed_within(Duration::from_secs(2)).await;
    assert_eq!(closed, Some((4008, "idle_timeout".to_owned())));

    // a visitor who answers pings (by reading) stays connected
    let mut d = WsBytes::new(gw.open_console(&link, None).await);
    assert_eq!(d.closed_within(Duration::from_secs(4)).await, None);
}
