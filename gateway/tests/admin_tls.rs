//! The admin listener with TLS (`[admin] cert/key`) against the attack shapes
//! `transport.rs` runs on the public listener: plaintext is refused, slow TLS handshakes
//! are cut at `tls_handshake_timeout_secs`, request smuggling shapes get 400, and a full
//! public listener (per-address cap) leaves it reachable.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::TestGateway;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A gateway whose admin listener serves TLS with a fresh certificate for `localhost`,
/// plus a client trusting that certificate. `limits` is appended as `[limits]` settings.
async fn admin_tls_gateway(limits: &str) -> (TestGateway, TlsConnector, tempfile::TempDir) {
    let certs = tempfile::Builder::new()
        .prefix("vmgw-admin-tls")
        .tempdir_in("/tmp")
        .unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (
        certs.path().join("admin.crt"),
        certs.path().join("admin.key"),
    );
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    // the harness's TOML ends inside [admin]: these lines belong to it
    let toml = format!("cert = {cert:?}\nkey = {key:?}\n[limits]\n{limits}");
    let gw = TestGateway::start_with(&toml).await;
    (gw, common::tls_trusting(ck.cert.pem().as_bytes()), certs)
}

async fn admin_tls_stream(gw: &TestGateway, tls: &TlsConnector) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(gw.admin).await.unwrap();
    tls.connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// One raw request over TLS to the admin listener: the status.
async fn raw_admin(gw: &TestGateway, tls: &TlsConnector, request: &str) -> u16 {
    let mut s = admin_tls_stream(gw, tls).await;
    s.write_all(request.as_bytes()).await.unwrap();
    common::raw_response(s).await.0
}

/// An authorised admin call over TLS: (status, body).
async fn admin_get(gw: &TestGateway, tls: &TlsConnector, path: &str) -> (u16, String) {
    let s = admin_tls_stream(gw, tls).await;
    let auth = format!("Authorization: Bearer {}\r\n", gw.admin_token);
    let (status, _, body) = common::http_call(s, "GET", path, &auth, None).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_is_refused_and_tls_is_served() {
    let (gw, tls, _certs) = admin_tls_gateway("").await;
    let mut plain = TcpStream::connect(gw.admin).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut buf)).await;
    assert!(
        !buf.starts_with(b"HTTP/"),
        "plaintext HTTP was answered: {:?}",
        String::from_utf8_lossy(&buf)
    );
    // a plaintext request with the admin token gets nothing either
    let mut plain = TcpStream::connect(gw.admin).await.unwrap();
    let req = format!(
        "GET /api/v1/links HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\r\n",
        gw.admin_token
    );
    plain.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut buf)).await;
    assert!(!buf.starts_with(b"HTTP/"), "plaintext API call answered");
    // over TLS the same calls work
    assert_eq!(admin_get(&gw, &tls, "/healthz").await.0, 200);
    assert_eq!(admin_get(&gw, &tls, "/api/v1/links").await.0, 200);
    let (_, metrics) = admin_get(&gw, &tls, "/metrics").await;
    assert!(
        !metrics.contains("vmgw_tls_handshake_failures_total 0\n"),
        "the plaintext attempts count as failed handshakes: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_tls_handshakes_are_cut_off() {
    let (gw, tls, _certs) = admin_tls_gateway("tls_handshake_timeout_secs = 1\n").await;
    // a TCP connection that never starts TLS, and one that stops inside its ClientHello
    let mut silent = TcpStream::connect(gw.admin).await.unwrap();
    let mut partial = TcpStream::connect(gw.admin).await.unwrap();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    let t = Instant::now();
    // meanwhile a legitimate request works
    assert_eq!(admin_get(&gw, &tls, "/healthz").await.0, 200);
    let mut buf = [0u8; 256];
    for (name, s) in [("silent", &mut silent), ("partial", &mut partial)] {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{name}: not closed within 5 s"))
            .unwrap_or(0);
        assert_eq!(n, 0, "{name}: closed without an answer");
    }
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "both closed after about a second: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_shapes_are_refused() {
    let (gw, tls, _certs) = admin_tls_gateway("").await;
    let auth = format!("Authorization: Bearer {}\r\n", gw.admin_token);
    let body = r#"{"name":"t","kind":"raw","address":"127.0.0.1:9"}"#;
    let n = body.len();
    for (name, framing) in [
        ("plus sign", format!("Content-Length: +{n}\r\n")),
        (
            "conflicting",
            format!("Content-Length: {n}\r\nContent-Length: {}\r\n", n + 1),
        ),
        (
            "CL and TE",
            format!("Content-Length: {n}\r\nTransfer-Encoding: chunked\r\n"),
        ),
        ("odd TE", "Transfer-Encoding: xchunked\r\n".to_owned()),
        ("TE list", "Transfer-Encoding: gzip, chunked\r\n".to_owned()),
    ] {
        let req = format!(
            "POST /api/v1/targets HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}Content-Type: application/json\r\n{framing}\r\n{body}"
        );
        let status = raw_admin(&gw, &tls, &req).await;
        assert_eq!(status, 400, "{name}: {status}");
    }
    // the same request well framed creates the target: none of the refused shapes did
    let ok = format!(
        "POST /api/v1/targets HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {n}\r\n\r\n{body}"
    );
    assert_eq!(raw_admin(&gw, &tls, &ok).await, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_public_listener_leaves_the_admin_listener_reachable() {
    let (gw, tls, _certs) = admin_tls_gateway("max_connections_per_ip = 2\n").await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(gw.tls_stream().await);
    }
    // the third public connection from this address is refused
    let tcp = TcpStream::connect(gw.public).await.unwrap();
    let r = gw
        .tls
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await;
    assert!(r.is_err(), "per-address cap on the public listener");
    // the admin listener (same client address) answers over TLS all the same
    for _ in 0..3 {
        assert_eq!(admin_get(&gw, &tls, "/api/v1/links").await.0, 200);
    }
    let (_, metrics) = admin_get(&gw, &tls, "/metrics").await;
    assert!(
        metrics.contains("vmgw_connections_refused_total 1\n"),
        "{metrics}"
    );
    drop(held);
}
