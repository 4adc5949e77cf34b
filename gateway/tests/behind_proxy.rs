//! Behind reverse proxies: the PROXY protocol (v1 and v2) and the RFC 7239 `Forwarded`
//! header, believed only from configured trusted proxies. A missing, malformed or late
//! PROXY header closes the connection; the per-address connection cap counts the client
//! the header names, not the proxy.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{http_call, TestGateway};
use rustls_pki_types::ServerName;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PROXIED: &str =
    "[proxy]\ntrusted = [\"127.0.0.1/32\"]\nprotocol = true\nheader_timeout_secs = 1\n";

/// A raw target and a password link to it (exchanges need no console).
async fn password_link(gw: &TestGateway) -> String {
    let link = gw
        .raw_link("t", "127.0.0.1:9", json!({"password": "pw"}))
        .await;
    link["token"].as_str().unwrap().to_owned()
}

/// A TCP connection to the public listener that first sends `header`, then speaks TLS.
async fn via_proxy(
    gw: &TestGateway,
    header: &[u8],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut tcp = TcpStream::connect(gw.public).await?;
    tcp.write_all(header).await?;
    gw.tls
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

async fn exchange_on<S>(s: S, token: &str, password: &str, extra: &str) -> u16
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let body = json!({"token": token, "password": password}).to_string();
    let headers = format!("Content-Type: application/json\r\n{extra}");
    http_call(s, "POST", "/s/session", &headers, Some(body))
        .await
        .0
}

/// The audit log's (kind, client) pairs.
async fn audit(gw: &TestGateway) -> Vec<(String, String)> {
    let (s, v) = gw.admin("GET", "/api/v1/audit", None).await;
    assert_eq!(s, 200);
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or_default().to_owned(),
                e["client"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn v2_tcp4(src: [u8; 4], sport: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    h.extend_from_slice(&src);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&443u16.to_be_bytes());
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_header_names_the_client() {
    let gw = TestGateway::start_with(PROXIED).await;
    let token = password_link(&gw).await;

    let s = via_proxy(&gw, b"PROXY TCP4 203.0.113.7 127.0.0.1 56324 443\r\n")
        .await
        .unwrap();
    assert_eq!(exchange_on(s, &token, "wrong", "").await, 401);

    let s = via_proxy(&gw, b"PROXY TCP6 2001:db8::7 ::1 4000 443\r\n")
        .await
        .unwrap();
    assert_eq!(exchange_on(s, &token, "pw", "").await, 200);

    let s = via_proxy(&gw, &v2_tcp4([198, 51, 100, 23], 5000))
        .await
        .unwrap();
    assert_eq!(exchange_on(s, &token, "wrong", "").await, 401);

    // a LOCAL header (the proxy's own health check) leaves the proxy as the client
    let s = via_proxy(&gw, b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00")
        .await
        .unwrap();
    assert_eq!(exchange_on(s, &token, "wrong", "").await, 401);

    let events = audit(&gw).await;
    for (kind, client) in [
        ("password_failure", "203.0.113.7"),
        ("link_redeemed", "2001:db8::7"),
        ("password_failure", "198.51.100.23"),
        ("password_failure", "127.0.0.1"),
    ] {
        assert!(
            events.iter().any(|(k, c)| k == kind && c == client),
            "{kind} from {client} missing in {events:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_malformed_or_late_header_closes_the_connection() {
    let gw = TestGateway::start_with(PROXIED).await;

    // TLS straight away: the ClientHello is not a PROXY header
    assert!(via_proxy(&gw, b"").await.is_err());
    // malformed v1 and v2
    for bad in [
        &b"PROXY TCP4 203.0.113.7 127.0.0.1 056324 443\r\n"[..],
        b"PROXY TCP4 nonsense\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff",
    ] {
        assert!(via_proxy(&gw, bad).await.is_err(), "{bad:?}");
    }
    // late: half a header, then nothing; closed after header_timeout_secs
    let mut tcp = TcpStream::connect(gw.public).await.unwrap();
    tcp.write_all(b"PROXY TCP4 203.0.").await.unwrap();
    let t = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "nothing is answered");
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );

    let metrics = metrics_text(&gw).await;
    assert!(
        metrics.contains("vmgw_proxy_header_failures_total 5"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_peers_are_never_read_for_a_header() {
    // the proxy is elsewhere: loopback clients speak TLS directly, and a PROXY header
    // from them is just a broken TLS handshake
    let gw = TestGateway::start_with(
        "[proxy]\ntrusted = [\"10.0.0.0/8\"]\nprotocol = true\nclient_header = \"forwarded\"\n",
    )
    .await;
    let token = password_link(&gw).await;
    assert!(
        via_proxy(&gw, b"PROXY TCP4 203.0.113.7 127.0.0.1 1 443\r\n")
            .await
            .is_err()
    );
    let s = gw.tls_stream().await;
    let forged = "Forwarded: for=203.0.113.99\r\nX-Forwarded-For: 203.0.113.98\r\n";
    assert_eq!(exchange_on(s, &token, "wrong", forged).await, 401);
    let events = audit(&gw).await;
    assert!(
        events
            .iter()
            .any(|(k, c)| k == "password_failure" && c == "127.0.0.1"),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_is_read_from_a_trusted_proxy_and_only_the_configured_header() {
    let gw = TestGateway::start_with(
        "[proxy]\ntrusted = [\"127.0.0.1/32\"]\nclient_header = \"forwarded\"\n",
    )
    .await;
    let token = password_link(&gw).await;
    let s = gw.tls_stream().await;
    let headers =
        "Forwarded: for=\"[2001:db8::42]:1234\";proto=https\r\nX-Forwarded-For: 203.0.113.98\r\n";
    assert_eq!(exchange_on(s, &token, "wrong", headers).await, 401);
    let events = audit(&gw).await;
    assert!(
        events
            .iter()
            .any(|(k, c)| k == "password_failure" && c == "2001:db8::42"),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|(_, c)| c == "203.0.113.98"),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_address_cap_counts_the_named_client_not_the_proxy() {
    let gw =
        TestGateway::start_with(&format!("{PROXIED}[limits]\nmax_connections_per_ip = 1\n")).await;
    let a = via_proxy(&gw, b"PROXY TCP4 203.0.113.1 127.0.0.1 1000 443\r\n")
        .await
        .unwrap();
    let b = via_proxy(&gw, b"PROXY TCP4 203.0.113.2 127.0.0.1 1000 443\r\n")
        .await
        .unwrap();
    // a second connection naming 203.0.113.1 is over its cap and is closed
    assert!(
        via_proxy(&gw, b"PROXY TCP4 203.0.113.1 127.0.0.1 1001 443\r\n")
            .await
            .is_err()
    );
    // the held connections still work
    for s in [a, b] {
        let (status, _, _) = http_call(s, "GET", "/s/status/x", "", None).await;
        assert_ne!(status, 0, "answered");
    }
}

async fn metrics_text(gw: &TestGateway) -> String {
    let tcp = TcpStream::connect(gw.admin).await.unwrap();
    let auth = format!("Authorization: Bearer {}\r\n", gw.admin_token);
    let (_, _, body) = http_call(tcp, "GET", "/metrics", &auth, None).await;
    String::from_utf8(body).unwrap()
}
