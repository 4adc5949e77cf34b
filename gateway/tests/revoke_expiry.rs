//! Revocation and expiry end live sessions at once; a start time in the future refuses
//! with the time the link opens.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{TestGateway, WsBytes};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_closes_the_session_within_a_second() {
    let gw = TestGateway::start().await;
    gw.start_firmware_vm("rv").await;
    let link = gw
        .create_link(json!({"vm": "rv", "ttl_seconds": 600}))
        .await;
    let mut c = WsBytes::new(gw.open_console(&link, None).await);
    c.rfb_connect().await;
    let id = link["id"].as_str().unwrap();
    let t = Instant::now();
    let (s, v) = gw
        .admin("DELETE", &format!("/api/v1/links/{id}"), None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["revoked"], true);
    let closed = c.closed_within(Duration::from_secs(1)).await;
    assert_eq!(
        closed,
        Some((4001, "revoked".to_owned())),
        "after {:?}",
        t.elapsed()
    );
    // and the token and the cookie are worthless now
    let (s, _, v) = gw.exchange(link["token"].as_str().unwrap(), None).await;
    assert_eq!((s, v["reason"].as_str()), (403, Some("revoked")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_when_its_link_expires() {
    let gw = TestGateway::start().await;
    gw.start_firmware_vm("ex").await;
    let link = gw.create_link(json!({"vm": "ex", "ttl_seconds": 3})).await;
    // Expiry times are whole seconds (the creation time is truncated), so a 3 s link
    // lives 2 to 3 s: measure against the expiry the API gave, not against a stopwatch.
    let expires_at = time::OffsetDateTime::parse(
        link["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let mut c = WsBytes::new(gw.open_console(&link, None).await);
    c.rfb_connect().await;
    let closed = c.closed_within(Duration::from_secs(6)).await;
    let at = time::OffsetDateTime::now_utc();
    assert_eq!(closed, Some((4002, "expired".to_owned())));
    let early = time::Duration::milliseconds(20);
    let late = time::Duration::seconds(1);
    assert!(
        at >= expires_at - early && at < expires_at + late,
        "closed at {at}, the link expires at {expires_at}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_that_is_not_open_yet_says_when_it_opens() {
    let gw = TestGateway::start().await;
    gw.start_firmware_vm("nb").await;
    let opens = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let opens_s = opens
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let link = gw
        .create_link(json!({"vm": "nb", "ttl_seconds": 7200, "not_before": opens_s}))
        .await;
    let (s, cookie, v) = gw.exchange(link["token"].as_str().unwrap(), None).await;
    assert_eq!(s, 403, "{v}");
    assert!(cookie.is_none());
    assert_eq!(v["reason"], "not_yet_valid");
    assert_eq!(v["opens_at"].as_str().unwrap(), opens_s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_kill_ends_one_session() {
    let gw = TestGateway::start().await;
    gw.start_firmware_vm("kl").await;
    let link = gw
        .create_link(json!({"vm": "kl", "ttl_seconds": 600}))
        .await;
    let mut a = WsBytes::new(gw.open_console(&link, None).await);
    a.rfb_connect().await;
    let mut b = WsBytes::new(gw.open_console(&link, None).await);
    b.rfb_connect().await;
    let (s, sessions) = gw
        .admin(
            "GET",
            &format!("/api/v1/links/{}/sessions", link["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(sessions.as_array().unwrap().len(), 2);
    let first = sessions[0]["id"].as_str().unwrap();
    let (s, _) = gw
        .admin("DELETE", &format!("/api/v1/sessions/{first}"), None)
        .await;
    assert_eq!(s, 204);
    let ca = a.closed_within(Duration::from_secs(1)).await;
    let cb = b.closed_within(Duration::from_millis(300)).await;
    // exactly one of them was killed
    let killed = [ca.clone(), cb.clone()]
        .iter()
        .filter(|c| c.as_ref().map(|c| c.0) == Some(4003))
        .count();
    assert_eq!(killed, 1, "{ca:?} {cb:?}");
}

// ---- ending a session before its relay runs ------------------------------------------
//
// A visitor who opens the console WebSocket and never answers the gateway's RFB handshake
// (or never sends a SPICE link message), or whose console never answers, must still be cut
// off at once by revoke, kill and expiry, not only by the handshake timeout (10 s).

/// A TCP console that accepts and never says a word.
async fn mute_console() -> String {
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
    addr.to_string()
}

/// A target of `kind` at `addr` and a link to it, for `ttl` seconds.
async fn link_to(gw: &TestGateway, name: &str, kind: &str, addr: &str, ttl: u64) -> Value {
    let target = json!({"name": name, "kind": kind, "address": addr});
    let (s, v) = gw.admin("POST", "/api/v1/targets", Some(target)).await;
    assert_eq!(s, 201, "{v}");
    gw.create_link(json!({"vm": name, "console": kind, "ttl_seconds": ttl}))
        .await
}

/// A visitor in the RFB handshake with the gateway (a real VM's console answered, the
/// visitor read the gateway's version and says nothing).
async fn silent_visitor(gw: &TestGateway, name: &str, ttl: u64) -> (Value, WsBytes) {
    gw.start_firmware_vm(name).await;
    let link = gw
        .create_link(json!({"vm": name, "ttl_seconds": ttl}))
        .await;
    let mut c = WsBytes::new(gw.open_console(&link, None).await);
    assert_eq!(c.read_exact(12).await, b"RFB 003.008\n");
    (link, c)
}

async fn revoke(gw: &TestGateway, link: &Value) {
    let id = link["id"].as_str().unwrap();
    let (s, v) = gw
        .admin("DELETE", &format!("/api/v1/links/{id}"), None)
        .await;
    assert_eq!(s, 200, "{v}");
}

async fn kill_the_session(gw: &TestGateway, link: &Value) {
    let id = link["id"].as_str().unwrap();
    let (s, sessions) = gw
        .admin("GET", &format!("/api/v1/links/{id}/sessions"), None)
        .await;
    assert_eq!(s, 200);
    let sid = sessions[0]["id"].as_str().unwrap();
    let (s, _) = gw
        .admin("DELETE", &format!("/api/v1/sessions/{sid}"), None)
        .await;
    assert_eq!(s, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_reaches_a_visitor_who_never_answers_the_rfb_handshake() {
    let gw = TestGateway::start().await;
    let (link, mut c) = silent_visitor(&gw, "hs-rv", 600).await;
    revoke(&gw, &link).await;
    let closed = c.closed_within(Duration::from_secs(1)).await;
    assert_eq!(closed, Some((4001, "revoked".to_owned())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_reaches_a_visitor_who_never_answers_the_rfb_handshake() {
    let gw = TestGateway::start().await;
    let (link, mut c) = silent_visitor(&gw, "hs-kl", 600).await;
    kill_the_session(&gw, &link).await;
    let closed = c.closed_within(Duration::from_secs(1)).await;
    assert_eq!(closed, Some((4003, "killed".to_owned())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_reaches_a_visitor_who_never_answers_the_rfb_handshake() {
    let gw = TestGateway::start().await;
    let t = Instant::now();
    let (_link, mut c) = silent_visitor(&gw, "hs-ex", 3).await;
    let closed = c.closed_within(Duration::from_secs(6)).await;
    assert_eq!(closed, Some((4002, "expired".to_owned())));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_and_kill_reach_a_visitor_whose_console_never_answers() {
    let gw = TestGateway::start().await;
    let addr = mute_console().await;
    let link = link_to(&gw, "mute-rv", "vnc", &addr, 600).await;
    let mut c = WsBytes::new(gw.open_console(&link, None).await);
    revoke(&gw, &link).await;
    let closed = c.closed_within(Duration::from_secs(1)).await;
    assert_eq!(closed, Some((4001, "revoked".to_owned())));

    let link = link_to(&gw, "mute-kl", "vnc", &addr, 600).await;
    let mut c = WsBytes::new(gw.open_console(&link, None).await);
    kill_the_session(&gw, &link).await;
    let closed = c.closed_within(Duration::from_secs(1)).await;
    assert_eq!(closed, Some((4003, "killed".to_owned())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_kill_and_expiry_reach_a_spice_channel_before_its_link_message() {
    let gw = TestGateway::start().await;
    let addr = mute_console().await;
    let link = link_to(&gw, "sp-rv", "spice", &addr, 600).await;
    let mut c = WsBytes::new(gw.open_console(&link, None).await);
    revoke(&gw, &link).await;
    let closed = c.closed_within(Duration::from_secs(1)).await;
    assert_eq!(closed, Some((4001, "revoked".to_owned())));

    let link = link_to(&gw, "sp-kl", "spice", &addr, 600).await;
    let mut c = WsBytes::new(gw.open_console(&link, None).await);
    // The channel shows as a session while it is in its link phase.
    let t = Instant::now();
    loop {
        let id = link["id"].as_str().unwrap();
        let (_, s) = gw
            .admin("GET", &format!("/api/v1/links/{id}/sessions"), None)
            .await;
        if !s.as_array().unwrap().is_empty() {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(2), "no session listed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kill_the_session(&gw, &link).await;
    let closed = c.closed_within(Duration::from_secs(1)).await;
    assert_eq!(closed, Some((4003, "killed".to_owned())));

    let link = link_to(&gw, "sp-ex", "spice", &addr, 2).await;
    let t = Instant::now();
    let mut c = WsBytes::new(gw.open_console(&link, None).await);
    let closed = c.closed_within(Duration::from_secs(5)).await;
    assert_eq!(closed, Some((4002, "expired".to_owned())));
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_reaches_a_visitor_whose_console_is_still_connecting() {
    let gw = TestGateway::start().await;
    // A listener whose accept queue is full: connecting to it hangs (5 s connect timeout).
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let l = sock.listen(0).unwrap();
    let addr = l.local_addr().unwrap();
    let mut fillers = Vec::new();
    while let Ok(Ok(s)) = tokio::time::timeout(
        Duration::from_millis(300),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    {
        fillers.push(s);
    }
    let link = link_to(&gw, "deaf", "vnc", &addr.to_string(), 600).await;
    let (status, cookie, v) = gw.exchange(link["token"].as_str().unwrap(), None).await;
    assert_eq!(status, 200, "{v}");
    let origin = gw.origin();
    let opening = gw.ws(
        v["ws_path"].as_str().unwrap(),
        cookie.as_deref(),
        Some(&origin),
    );
    let revoking = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        revoke(&gw, &link).await;
        Instant::now()
    };
    let (r, revoked_at) = tokio::join!(opening, revoking);
    let took = revoked_at.elapsed();
    match r {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 403)
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    assert!(
        took < Duration::from_secs(1),
        "answered {took:?} after the revoke"
    );
    drop(l);
}
