//! Cross-site WebSocket hijacking is refused before any console connection, and a link
//! for one VM never reaches another, whatever the request says.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::TestGateway;
use serde_json::json;

/// A TCP "console" that counts connections.
async fn counting_target() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            n2.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let _keep = s;
                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            });
        }
    });
    (addr, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_or_missing_origin_is_refused_before_connecting() {
    let gw = TestGateway::start().await;
    let (addr, count) = counting_target().await;
    let (s, v) = gw
        .admin(
            "POST",
            "/api/v1/targets",
            Some(json!({"name": "serial1", "kind": "raw", "address": addr.to_string()})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert!(v.get("vnc_password").is_none());
    let link = gw
        .create_link(json!({"vm": "serial1", "console": "raw", "ttl_seconds": 600}))
        .await;
    let (s, cookie, v) = gw.exchange(link["token"].as_str().unwrap(), None).await;
    assert_eq!(s, 200, "{v}");
    let path = v["ws_path"].as_str().unwrap();
    for origin in [
        None,
        Some("https://evil.example"),
        Some("null"),
        Some("https://127.0.0.1.evil.example"),
    ] {
        match gw.ws(path, cookie.as_deref(), origin).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), 403, "{origin:?}")
            }
            other => panic!("{origin:?}: {:?}", other.map(|_| ())),
        }
    }
    assert_eq!(
        count.load(Ordering::SeqCst),
        0,
        "no console connection for refused origins"
    );
    // no cookie → 401, also without connecting
    match gw.ws(path, None, Some(&gw.origin())).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("{:?}", other.map(|_| ())),
    }
    assert_eq!(count.load(Ordering::SeqCst), 0);
    // the right origin connects
    let _ws = gw
        .ws(path, cookie.as_deref(), Some(&gw.origin()))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_for_vm_a_never_reaches_vm_b() {
    let gw = TestGateway::start().await;
    let (a_addr, a_count) = counting_target().await;
    let (b_addr, b_count) = counting_target().await;
    for (name, addr) in [("vm-a", a_addr), ("vm-b", b_addr)] {
        let (s, _) = gw
            .admin(
                "POST",
                "/api/v1/targets",
                Some(json!({"name": name, "kind": "raw", "address": addr.to_string()})),
            )
            .await;
        assert_eq!(s, 201);
    }
    let la = gw
        .create_link(json!({"vm": "vm-a", "console": "raw", "ttl_seconds": 600}))
        .await;
    let lb = gw
        .create_link(json!({"vm": "vm-b", "console": "raw", "ttl_seconds": 600}))
        .await;
    let (_, cookie_a, _) = gw.exchange(la["token"].as_str().unwrap(), None).await;
    let cookie_a = cookie_a.unwrap();
    let b_id = lb["id"].as_str().unwrap();
    let a_id = la["id"].as_str().unwrap();
    // A's cookie under B's path, renamed as B's cookie, with query strings and odd paths
    let renamed = cookie_a.replacen(a_id, b_id, 1);
    for (path, cookie) in [
        (format!("/s/ws/{b_id}"), cookie_a.clone()),
        (format!("/s/ws/{b_id}"), renamed.clone()),
        (format!("/s/ws/{b_id}?vm=vm-a"), renamed.clone()),
        (format!("/s/ws/{a_id}/../{b_id}"), cookie_a.clone()),
        (format!("/s/ws/{a_id}%2f..%2f{b_id}"), cookie_a.clone()),
    ] {
        let r = gw.ws(&path, Some(&cookie), Some(&gw.origin())).await;
        assert!(r.is_err(), "{path} with {cookie} was accepted");
    }
    // A's own console with a forged target hint still goes to A
    let _ws = gw
        .ws(
            &format!("/s/ws/{a_id}?target=vm-b&vm=vm-b"),
            Some(&cookie_a),
            Some(&gw.origin()),
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        (
            a_count.load(Ordering::SeqCst),
            b_count.load(Ordering::SeqCst)
        ),
        (1, 0)
    );
}

/// Cross-site request forgery on the visitor's state-changing requests: a power action
/// with the visitor's cookie from a foreign page (a `text/plain` body, so no CORS
/// preflight) or with no Origin is refused and the VM is untouched; a foreign page
/// cannot run the exchange either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_power_and_exchange_are_refused() {
    let gw = TestGateway::start().await;
    gw.start_firmware_vm("csrf").await;
    let link = gw
        .create_link(json!({"vm": "csrf", "ttl_seconds": 600, "allow_power": true}))
        .await;
    let token = link["token"].as_str().unwrap();
    let body = json!({"token": token}).to_string();
    for origin in ["https://evil.example", "null"] {
        let h = format!("Origin: {origin}\r\nContent-Type: text/plain\r\n");
        let (s, _, v) = gw
            .public("POST", "/s/session", &h, Some(body.clone()))
            .await;
        assert_eq!((s, v["reason"].as_str()), (403, Some("origin")), "{origin}");
    }
    let (s, cookie, v) = gw.exchange(token, None).await;
    assert_eq!(s, 200, "{v}");
    let id = v["link_id"].as_str().unwrap();
    let cookie = cookie.unwrap();
    let poweroff = Some(json!({"action": "poweroff"}).to_string());
    for origin in [Some("https://evil.example"), Some("null"), None] {
        let h = match origin {
            Some(o) => format!("Cookie: {cookie}\r\nOrigin: {o}\r\nContent-Type: text/plain\r\n"),
            None => format!("Cookie: {cookie}\r\nContent-Type: text/plain\r\n"),
        };
        let (s, _, v) = gw
            .public("POST", &format!("/s/power/{id}"), &h, poweroff.clone())
            .await;
        assert_eq!(
            (s, v["reason"].as_str()),
            (403, Some("origin")),
            "{origin:?}"
        );
    }
    let (s, vm) = gw.admin("GET", "/api/v1/vms/csrf", None).await;
    assert_eq!((s, vm["state"].as_str()), (200, Some("running")), "{vm}");
    // The visitor's own page may.
    let h = format!("Cookie: {cookie}\r\nOrigin: {}\r\n", gw.origin());
    let (s, _, v) = gw
        .public("POST", &format!("/s/power/{id}"), &h, poweroff)
        .await;
    assert_eq!((s, v["vm_state"].as_str()), (200, Some("stopped")), "{v}");
}
