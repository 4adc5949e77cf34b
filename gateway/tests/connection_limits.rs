//! Limits that act on whole connections: a request must be done within
//! `request_timeout_secs` (body included), a live console counts against
//! `max_connections` and `max_connections_per_ip` until it closes, and the admin
//! listener has its own `max_admin_connections`. Each test fails if its setting does
//! nothing.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{TestGateway, WsBytes};
use rustls_pki_types::ServerName;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Whether a new TLS connection to the public listener gets an HTTP answer.
async fn public_answers(gw: &TestGateway) -> bool {
    let Ok(tcp) = TcpStream::connect(gw.public).await else {
        return false;
    };
    let name = ServerName::try_from("localhost").unwrap();
    let fut = async {
        let mut s = gw.tls.connect(name, tcp).await.ok()?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        Some(buf.starts_with(b"HTTP/1.1"))
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Two console WebSockets of one visitor: one exchange (its connection closed and its
/// slot given back first), then two WebSockets with the cookie.
async fn two_consoles(
    gw: &TestGateway,
    link: &serde_json::Value,
) -> (common::ClientWs, common::ClientWs) {
    let (status, cookie, v) = gw.exchange(link["token"].as_str().unwrap(), None).await;
    assert_eq!(status, 200, "{v}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let path = v["ws_path"].as_str().unwrap();
    let origin = gw.origin();
    let a = gw.ws(path, cookie.as_deref(), Some(&origin)).await.unwrap();
    let b = gw.ws(path, cookie.as_deref(), Some(&origin)).await.unwrap();
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_body_is_cut_at_the_request_timeout() {
    let gw = TestGateway::start_with("[limits]\nrequest_timeout_secs = 2\n").await;
    let mut s = gw.tls_stream().await;
    s.write_all(
        b"POST /s/session HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 900\r\n\r\n",
    )
    .await
    .unwrap();
    let start = Instant::now();
    // One byte every half second: never done, never idle long enough for other timers.
    let mut answer = Vec::new();
    let mut buf = [0u8; 512];
    while start.elapsed() < Duration::from_secs(12) {
        if s.write_all(b" ").await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(6),
        "the slow request stayed open {took:?}"
    );
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_consoles_count_against_the_per_address_cap() {
    let gw = TestGateway::start_with("[limits]\nmax_connections_per_ip = 2\n").await;
    let target = common::echo_console().await;
    let link = gw.raw_link("echo", &target.to_string(), json!({})).await;
    let (a, b) = two_consoles(&gw, &link).await;
    let (mut a, mut b) = (WsBytes::new(a), WsBytes::new(b));
    a.send(b"a").await;
    assert_eq!(a.read_exact(1).await, b"a");
    b.send(b"b").await;
    assert_eq!(b.read_exact(1).await, b"b");
    // Two consoles are two connections of this address: a third is refused.
    assert!(!public_answers(&gw).await, "a third connection was served");
    let refused = gw.app.metrics().render(0, 0);
    assert!(
        !refused.contains("vmgw_connections_refused_total 0\n"),
        "{refused}"
    );
    // When a console closes, its slot is free again.
    drop(a);
    let start = Instant::now();
    while !public_answers(&gw).await {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the slot was not freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.send(b"c").await;
    assert_eq!(b.read_exact(1).await, b"c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_consoles_count_against_the_global_cap() {
    let gw = TestGateway::start_with("[limits]\nmax_connections = 2\n").await;
    let target = common::echo_console().await;
    let link = gw.raw_link("echo", &target.to_string(), json!({})).await;
    let (a, _b) = two_consoles(&gw, &link).await;
    assert!(!public_answers(&gw).await, "a third connection was served");
    // The admin listener is not part of the public cap.
    let (s, _) = gw.admin("GET", "/api/v1/sessions", None).await;
    assert_eq!(s, 200);
    drop(a);
    let start = Instant::now();
    while !public_answers(&gw).await {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the slot was not freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_has_its_own_cap() {
    let gw = TestGateway::start_with("[limits]\nmax_admin_connections = 2\n").await;
    let idle1 = TcpStream::connect(gw.admin).await.unwrap();
    let idle2 = TcpStream::connect(gw.admin).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(gw.admin).await.unwrap();
    let _ = third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut buf)).await;
    assert!(buf.is_empty(), "{}", String::from_utf8_lossy(&buf));
    drop((idle1, idle2));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (s, _) = gw.admin("GET", "/healthz", None).await;
    assert_eq!(s, 200);
}
