//! The full path on real QEMU through real TLS: the admin API creates a password link,
//! the visitor exchanges token + password, opens the WebSocket, and talks RFB (or SPICE)
//! with the VM's real console.

#![allow(clippy::unwrap_used)]

mod common;

use common::{TestGateway, WsBytes};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Reads QEMU's own ServerInit straight from the VM's socket (the reference).
async fn qemu_framebuffer(sock: &std::path::Path) -> (u16, u16) {
    let mut s = tokio::net::UnixStream::connect(sock).await.unwrap();
    let mut v = [0u8; 12];
    s.read_exact(&mut v).await.unwrap();
    s.write_all(b"RFB 003.008\n").await.unwrap();
    let mut n = [0u8; 1];
    s.read_exact(&mut n).await.unwrap();
    let mut types = vec![0u8; n[0] as usize];
    s.read_exact(&mut types).await.unwrap();
    s.write_all(&[1]).await.unwrap();
    let mut res = [0u8; 4];
    s.read_exact(&mut res).await.unwrap();
    s.write_all(&[1]).await.unwrap();
    let mut init = [0u8; 4];
    s.read_exact(&mut init).await.unwrap();
    (
        u16::from_be_bytes([init[0], init[1]]),
        u16::from_be_bytes([init[2], init[3]]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vnc_console_through_a_password_link() {
    let gw = TestGateway::start().await;
    gw.start_firmware_vm("alpha").await;
    let link = gw
        .create_link(
            json!({"vm": "alpha", "ttl_seconds": 600, "password": "correct horse", "note": "e2e"}),
        )
        .await;
    let url = link["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{}/s/#", gw.origin())), "{url}");
    assert_eq!(link["has_password"], true);
    assert!(link.get("password_hash").is_none() && link.get("password").is_none());

    // wrong password first, then the right one
    let (status, cookie, v) = gw
        .exchange(link["token"].as_str().unwrap(), Some("wrong"))
        .await;
    assert_eq!(status, 401, "{v}");
    assert!(cookie.is_none());
    let (status, cookie, v) = gw
        .exchange(link["token"].as_str().unwrap(), Some("correct horse"))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["console"], "vnc");
    assert_eq!(v["view_only"], false);
    let cookie = cookie.unwrap();
    assert!(cookie.starts_with("__Host-vmgw-"), "{cookie}");

    let ws = gw
        .ws(
            v["ws_path"].as_str().unwrap(),
            Some(&cookie),
            Some(&gw.origin()),
        )
        .await
        .unwrap();
    let mut c = WsBytes::new(ws);
    let (w, h, name) = c.rfb_connect().await;
    let sock = gw.dir.path().join("run/alpha/vnc.sock");
    assert_eq!(
        (w, h),
        qemu_framebuffer(&sock).await,
        "ServerInit carries QEMU's framebuffer size"
    );
    assert!(name.contains("alpha"), "desktop name {name:?}");
    let rects = c.request_frame(w, h).await;
    assert!(rects >= 1, "a FramebufferUpdate with rectangles");

    // the admin API shows the live session and the use
    let (status, shown) = gw
        .admin(
            "GET",
            &format!("/api/v1/links/{}", link["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(shown["uses"], 1);
    assert_eq!(shown["live_sessions"], 1);
    assert_eq!(shown["sessions"][0]["client"], "127.0.0.1");
    let again = shown["url"].as_str().unwrap();
    assert!(
        again.starts_with(&format!("{}/s/#", gw.origin())),
        "the link can be copied later: {again}"
    );

    // and the metrics count it all
    let tcp = tokio::net::TcpStream::connect(gw.admin).await.unwrap();
    let auth = format!("Authorization: Bearer {}\r\n", gw.admin_token);
    let (s, _, body) = common::http_call(tcp, "GET", "/metrics", &auth, None).await;
    assert_eq!(s, 200);
    let text = String::from_utf8(body).unwrap();
    let value = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from {text}"))
    };
    assert_eq!(value("vmgw_link_redemptions_total"), 1);
    assert_eq!(value("vmgw_password_failures_total"), 1);
    assert_eq!(value("vmgw_sessions_started_total"), 1);
    assert_eq!(value("vmgw_sessions"), 1);
    assert!(value("vmgw_relayed_bytes_to_client_total") > 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spice_link_reply_arrives_through_the_relay() {
    let gw = TestGateway::start().await;
    gw.start_firmware_vm("spicy").await;
    let link = gw
        .create_link(json!({"vm": "spicy", "console": "spice", "ttl_seconds": 600}))
        .await;
    let ws = gw.open_console(&link, None).await;
    let mut c = WsBytes::new(ws);
    let mut msg = Vec::new();
    msg.extend_from_slice(b"REDQ");
    for v in [2u32, 2, 18, 0] {
        msg.extend_from_slice(&v.to_le_bytes());
    }
    msg.extend_from_slice(&[1, 0]); // main channel, id 0
    for v in [0u32, 0, 18] {
        msg.extend_from_slice(&v.to_le_bytes());
    }
    c.send(&msg).await;
    let reply = c.read_exact(16).await;
    assert_eq!(&reply[..4], b"REDQ");
    assert_eq!(
        u32::from_le_bytes([reply[4], reply[5], reply[6], reply[7]]),
        2,
        "SPICE major version"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_need_a_known_vm_and_a_valid_expiry() {
    let gw = TestGateway::start().await;
    gw.start_firmware_vm("known").await;
    let (s, v) = gw
        .admin(
            "POST",
            "/api/v1/links",
            Some(json!({"vm": "nope", "ttl_seconds": 60})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = gw
        .admin("POST", "/api/v1/links", Some(json!({"vm": "known"})))
        .await;
    assert_eq!(s, 400, "expiry is required: {v}");
    let (s, v) = gw
        .admin(
            "POST",
            "/api/v1/links",
            Some(json!({"vm": "known", "ttl_seconds": 999_999_999})),
        )
        .await;
    assert_eq!(s, 400, "beyond the maximum TTL: {v}");
    let (s, v) = gw
        .admin(
            "POST",
            "/api/v1/links",
            Some(json!({"vm": "known", "ttl_seconds": 60, "bogus": 1})),
        )
        .await;
    assert_eq!(s, 400, "unknown fields: {v}");
    // without a bearer token nothing but health and the document answers
    let tcp = tokio::net::TcpStream::connect(gw.admin).await.unwrap();
    let (s, _, _) = common::http_call(tcp, "GET", "/api/v1/links", "", None).await;
    assert_eq!(s, 401);
    let tcp = tokio::net::TcpStream::connect(gw.admin).await.unwrap();
    let (s, _, _) = common::http_call(
        tcp,
        "GET",
        "/api/v1/links",
        "Authorization: Bearer vmgw_nope\r\n",
        None,
    )
    .await;
    assert_eq!(s, 401);
    let tcp = tokio::net::TcpStream::connect(gw.admin).await.unwrap();
    let (s, _, _) = common::http_call(tcp, "GET", "/healthz", "", None).await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitors_see_the_vm_state_and_power_it_only_when_allowed() {
    let gw = TestGateway::start().await;
    gw.start_firmware_vm("pwr").await;
    let plain = gw
        .create_link(json!({"vm": "pwr", "ttl_seconds": 600}))
        .await;
    let (s, cookie, v) = gw.exchange(plain["token"].as_str().unwrap(), None).await;
    assert_eq!(s, 200);
    let id = v["link_id"].as_str().unwrap().to_owned();
    let cookie_h = format!("Cookie: {}\r\nOrigin: {}\r\n", cookie.unwrap(), gw.origin());
    let (s, _, st) = gw
        .public("GET", &format!("/s/status/{id}"), &cookie_h, None)
        .await;
    assert_eq!(s, 200, "{st}");
    assert_eq!(st["vm_state"], "running");
    assert_eq!(st["allow_power"], false);
    assert_eq!(
        (st["viewers"].as_u64(), st["max_viewers"].is_null()),
        (Some(0), true)
    );
    let (s, _, _) = gw.public("GET", &format!("/s/status/{id}"), "", None).await;
    assert_eq!(s, 401, "no cookie");
    let body = Some(json!({"action": "poweroff"}).to_string());
    let (s, _, v) = gw
        .public("POST", &format!("/s/power/{id}"), &cookie_h, body.clone())
        .await;
    assert_eq!((s, v["reason"].as_str()), (403, Some("power_not_allowed")));

    let power = gw
        .create_link(json!({"vm": "pwr", "ttl_seconds": 600, "allow_power": true}))
        .await;
    let (_, cookie, v) = gw.exchange(power["token"].as_str().unwrap(), None).await;
    let id = v["link_id"].as_str().unwrap().to_owned();
    let cookie_h = format!("Cookie: {}\r\nOrigin: {}\r\n", cookie.unwrap(), gw.origin());
    let (s, _, v) = gw
        .public("POST", &format!("/s/power/{id}"), &cookie_h, body)
        .await;
    assert_eq!((s, v["vm_state"].as_str()), (200, Some("stopped")), "{v}");
    let (_, _, st) = gw
        .public("GET", &format!("/s/status/{id}"), &cookie_h, None)
        .await;
    assert_eq!(st["vm_state"], "stopped");
    let start = Some(json!({"action": "start"}).to_string());
    let (s, _, v) = gw
        .public("POST", &format!("/s/power/{id}"), &cookie_h, start)
        .await;
    assert_eq!((s, v["vm_state"].as_str()), (200, Some("running")), "{v}");
    let bad = Some(json!({"action": "rm -rf"}).to_string());
    let (s, _, _) = gw
        .public("POST", &format!("/s/power/{id}"), &cookie_h, bad)
        .await;
    assert_eq!(s, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_served_by_exact_name_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("share.html"),
        "<!doctype html><title>share</title>",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("admin.html"),
        "<!doctype html><title>admin</title>",
    )
    .unwrap();
    std::fs::write(dir.path().join("app.js"), "1").unwrap();
    let pages = dir.path().to_owned();
    let gw = TestGateway::start_tuned(move |c| c.static_dir = Some(pages)).await;
    let (s, head, _) = gw.public("GET", "/s/", "", None).await;
    assert_eq!(s, 200);
    let h = head.to_ascii_lowercase();
    assert!(h.contains("content-type: text/html"), "{head}");
    assert!(
        h.contains("content-security-policy: default-src 'self'"),
        "{head}"
    );
    assert!(
        h.contains("frame-ancestors 'none'") && !h.contains("unsafe-inline"),
        "{head}"
    );
    assert!(
        h.contains("referrer-policy: no-referrer") && h.contains("cache-control: no-store"),
        "{head}"
    );
    assert!(h.contains("strict-transport-security"), "{head}");
    assert_eq!(gw.public("GET", "/s/app.js", "", None).await.0, 200);
    for bad in [
        "/s/../admin.html",
        "/s/%2e%2e/admin.html",
        "/s/..%2fadmin.html",
        "/s/%5capp.js",
        "/s//etc/passwd",
        "/s/sub/",
        "/admin.html",
        "/",
    ] {
        assert_eq!(gw.public("GET", bad, "", None).await.0, 404, "{bad}");
    }
    let tcp = tokio::net::TcpStream::connect(gw.admin).await.unwrap();
    let (s, _, body) = common::http_call(tcp, "GET", "/", "", None).await;
    assert_eq!(s, 200);
    assert!(String::from_utf8_lossy(&body).contains("admin"));
}
