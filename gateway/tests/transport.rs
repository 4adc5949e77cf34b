//! Transport defences: request smuggling shapes, slow headers, slow TLS handshakes and
//! connection caps — each closed or refused while legitimate requests keep working, and
//! the admin listener stays reachable when the public one is full.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::TestGateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn raw_public(gw: &TestGateway, request: &str) -> u16 {
    let mut s = gw.tls_stream().await;
    s.write_all(request.as_bytes()).await.unwrap();
    common::raw_response(s).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_shapes_are_refused() {
    let gw = TestGateway::start().await;
    let body = r#"{"token":"x"}"#;
    for (name, framing) in [
        ("plus sign", "Content-Length: +13\r\n".to_owned()),
        (
            "conflicting",
            "Content-Length: 13\r\nContent-Length: 14\r\n".to_owned(),
        ),
        (
            "CL and TE",
            "Content-Length: 13\r\nTransfer-Encoding: chunked\r\n".to_owned(),
        ),
        ("odd TE", "Transfer-Encoding: xchunked\r\n".to_owned()),
        ("TE list", "Transfer-Encoding: gzip, chunked\r\n".to_owned()),
    ] {
        let req = format!("POST /s/session HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{framing}\r\n{body}");
        let status = raw_public(&gw, &req).await;
        assert_eq!(status, 400, "{name}: {status}");
    }
    // the same request, well framed, is understood (and refused for its bad token)
    let ok = format!("POST /s/session HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    assert_eq!(raw_public(&gw, &ok).await, 401);
    // identical duplicate lengths are one length (RFC 9112 permits it; hyper merges them),
    // so there is no second reading of the message to desynchronise with
    let dup = format!("POST /s/session HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 13\r\nContent-Length: 13\r\n\r\n{body}");
    assert_eq!(raw_public(&gw, &dup).await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_slow_handshakes_are_cut_off() {
    let gw = TestGateway::start_with(
        "[limits]\nheader_read_timeout_secs = 1\ntls_handshake_timeout_secs = 1\n",
    )
    .await;
    // slowloris: a request head that never ends
    let mut slow = gw.tls_stream().await;
    slow.write_all(b"GET /s/ HTTP/1.1\r\nHost: localhost\r\nX-a: ")
        .await
        .unwrap();
    // a TCP connection that never starts TLS
    let mut silent = tokio::net::TcpStream::connect(gw.public).await.unwrap();
    let t = Instant::now();
    // meanwhile a legitimate request works
    let (s, _, _) = gw.public("GET", "/s/nonexistent.js", "", None).await;
    assert_eq!(s, 404);
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the silent connection was closed");
    let _ = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf))
        .await
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "both closed after about a second: {:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_keep_the_admin_listener_reachable() {
    let gw = TestGateway::start_with("[limits]\nmax_connections = 4\nmax_connections_per_ip = 3\n")
        .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(gw.tls_stream().await);
    }
    // the fourth from the same address is refused (closed without a TLS handshake)
    let tcp = tokio::net::TcpStream::connect(gw.public).await.unwrap();
    let r = gw
        .tls
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await;
    assert!(r.is_err(), "per-address cap");
    // the admin API answers all the same
    let (s, _) = gw.admin("GET", "/api/v1/links", None).await;
    assert_eq!(s, 200);
    let tcp = tokio::net::TcpStream::connect(gw.admin).await.unwrap();
    let auth = format!("Authorization: Bearer {}\r\n", gw.admin_token);
    let (_, _, body) = common::http_call(tcp, "GET", "/metrics", &auth, None).await;
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("vmgw_connections_refused_total 1"), "{text}");
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        gw.public("GET", "/s/x.js", "", None).await.0,
        404,
        "slots are given back"
    );
}
