//! The relay's idle bound: a silent visitor is pinged, timed out, and still reads the
//! close code (the gateway waits for its answering close before ending the connection).
//! The memory bound for a visitor who stops reading is in `relay_backpressure.rs`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{TestGateway, WsBytes};
use serde_json::json;

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
    let link = gw.raw_link("quiet", &addr.to_string(), json!({})).await;
    let mut c = WsBytes::new(gw.open_console(&link, None).await);
    // not reading means not answering pings
    tokio::time::sleep(Duration::from_secs(4)).await;
    let closed = c.closed_within(Duration::from_secs(2)).await;
    assert_eq!(closed, Some((4008, "idle_timeout".to_owned())));

    // a visitor who answers pings (by reading) stays connected
    let mut d = WsBytes::new(gw.open_console(&link, None).await);
    assert_eq!(d.closed_within(Duration::from_secs(4)).await, None);
}

/// A TCP "console" that accepts and never says a word (a VNC server that never starts
/// the RFB handshake).
async fn mute_console() -> std::net::SocketAddr {
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
    addr
}

/// A VNC target at `addr` and a link to it.
async fn vnc_link(gw: &TestGateway, name: &str, addr: &str) -> serde_json::Value {
    let target = json!({"name": name, "kind": "vnc", "address": addr});
    let (s, v) = gw.admin("POST", "/api/v1/targets", Some(target)).await;
    assert_eq!(s, 201, "{v}");
    gw.create_link(json!({"vm": name, "console": "vnc", "ttl_seconds": 600}))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_handshake_timeout_cuts_a_console_that_never_answers() {
    let gw = TestGateway::start_with("[limits]\nconsole_handshake_timeout_secs = 1\n").await;
    assert_eq!(
        gw.app.config().limits.console_handshake_timeout,
        Duration::from_secs(1)
    );
    let addr = mute_console().await;
    let link = vnc_link(&gw, "mute", &addr.to_string()).await;
    let t = std::time::Instant::now();
    let mut c = WsBytes::new(gw.open_console(&link, None).await);
    // The default (10 s) would keep it open far longer.
    let closed = c.closed_within(Duration::from_secs(3)).await;
    assert!(closed.is_some(), "still open after {:?}", t.elapsed());
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
}

/// A loopback listener whose accept queue is full and never drained: connecting to it
/// hangs (the kernel drops the SYNs).
async fn full_listener() -> (std::net::SocketAddr, Vec<tokio::net::TcpStream>) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let l = sock.listen(0).unwrap();
    let addr = l.local_addr().unwrap();
    let mut fillers = Vec::new();
    // Fill the queue: connects succeed until it is full, then hang.
    for _ in 0..8 {
        match tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(s)) => fillers.push(s),
            _ => break,
        }
    }
    std::mem::forget(l);
    (addr, fillers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_connect_timeout_gives_up_on_a_console_that_never_accepts() {
    let gw = TestGateway::start_with("[limits]\nconsole_connect_timeout_secs = 1\n").await;
    let (addr, _fillers) = full_listener().await;
    // The queue is full: a plain connect hangs.
    assert!(tokio::time::timeout(
        Duration::from_millis(500),
        tokio::net::TcpStream::connect(addr)
    )
    .await
    .is_err());
    let link = gw.raw_link("deaf", &addr.to_string(), json!({})).await;
    let (status, cookie, v) = gw.exchange(link["token"].as_str().unwrap(), None).await;
    assert_eq!(status, 200, "{v}");
    let t = std::time::Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(3),
        gw.ws(
            v["ws_path"].as_str().unwrap(),
            cookie.as_deref(),
            Some(&gw.origin()),
        ),
    )
    .await;
    // The default (5 s) would still be connecting.
    let Ok(r) = r else {
        panic!("still connecting after {:?}", t.elapsed());
    };
    assert!(
        r.is_err(),
        "the WebSocket opened on a console that never accepted"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
}
