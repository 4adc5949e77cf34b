//! Revocation and expiry end live sessions at once; a start time in the future refuses
//! with the time the link opens.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{TestGateway, WsBytes};
use serde_json::json;

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
    let t = Instant::now();
    let mut c = WsBytes::new(gw.open_console(&link, None).await);
    c.rfb_connect().await;
    let closed = c.closed_within(Duration::from_secs(6)).await;
    assert_eq!(closed, Some((4002, "expired".to_owned())));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "closed after {took:?}"
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
