//! A gateway restart (graceful, or kill -9 of the process in spirit: the store is all
//! there is) keeps links, use counts, visitors' grants and audit records; live sessions
//! get a close frame on graceful shutdown.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{TestGateway, WsBytes};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_counts_and_audit_survive_a_restart() {
    // A slow commit pace: a session's `session_ended` record is committed up to a second
    // after the session ends, so the shutdown must wait for the relay tasks' writes.
    let paced = "[store]\ncommit_interval_ms = 1000\n";
    let gw = TestGateway::start_with(paced).await;
    gw.start_firmware_vm("keep").await;
    let link = gw
        .create_link(json!({"vm": "keep", "ttl_seconds": 600, "max_uses": 5, "password": "pw"}))
        .await;
    let id = link["id"].as_str().unwrap().to_owned();
    let token = link["token"].as_str().unwrap().to_owned();
    let (s, cookie, v) = gw.exchange(&token, Some("pw")).await;
    assert_eq!(s, 200, "{v}");
    let cookie = cookie.unwrap();
    let ws_path = v["ws_path"].as_str().unwrap().to_owned();
    let mut c = WsBytes::new(
        gw.ws(&ws_path, Some(&cookie), Some(&gw.origin()))
            .await
            .unwrap(),
    );
    c.rfb_connect().await;
    assert_eq!(
        gw.exchange(link["token"].as_str().unwrap(), Some("bad"))
            .await
            .0,
        401
    );

    // graceful shutdown closes the live session with "shutdown"
    let stopping = tokio::spawn(async move { gw.stop().await });
    let closed = c.closed_within(Duration::from_secs(5)).await;
    assert_eq!(closed, Some((1001, "shutdown".to_owned())));
    let dir = stopping.await.unwrap();

    let gw = TestGateway::start_in(dir, paced).await;
    let (s, v) = gw.admin("GET", &format!("/api/v1/links/{id}"), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["uses"], 1);
    assert_eq!(v["has_password"], true);
    let (_, audit) = gw
        .admin("GET", &format!("/api/v1/audit?link={id}"), None)
        .await;
    let kinds: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    for k in [
        "link_created",
        "link_redeemed",
        "password_failure",
        "session_started",
        "session_ended",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    // the visitor's cookie still opens the console: no new exchange, no use spent
    let mut c = WsBytes::new(
        gw.ws(&ws_path, Some(&cookie), Some(&gw.origin()))
            .await
            .unwrap(),
    );
    c.rfb_connect().await;
    let (_, v) = gw.admin("GET", &format!("/api/v1/links/{id}"), None).await;
    assert_eq!(v["uses"], 1);
    // the old token still works after the restart (same signing keys)
    let (s, _, v) = gw.exchange(&token, Some("pw")).await;
    assert_eq!(s, 200, "{v}");
    // revoking the link ends that grant too, after a restart as before
    let (s, _) = gw
        .admin("DELETE", &format!("/api/v1/links/{id}"), None)
        .await;
    assert_eq!(s, 200);
    assert!(gw
        .ws(&ws_path, Some(&cookie), Some(&gw.origin()))
        .await
        .is_err());
    let dir = gw.stop().await;
    let gw = TestGateway::start_in(dir, "").await;
    assert!(gw
        .ws(&ws_path, Some(&cookie), Some(&gw.origin()))
        .await
        .is_err());
    // the VM outlived both restarts
    let (_, vm) = gw.admin("GET", "/api/v1/vms/keep", None).await;
    assert_eq!(vm["state"], "running");
}
