//! Use counts and viewer limits are exact under concurrency; wrong passwords lead to a
//! lockout with Retry-After; exchange bodies and passwords are bounded before hashing.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::TestGateway;
use serde_json::json;

const GENEROUS: &str = "[limits]\nexchanges_per_ip_per_minute = 10000\nmax_concurrent_hashes = 2\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_uses_is_exact_with_50_concurrent_redemptions() {
    let gw = Arc::new(TestGateway::start_with(GENEROUS).await);
    gw.start_firmware_vm("mu").await;
    let link = gw
        .create_link(json!({"vm": "mu", "ttl_seconds": 600, "max_uses": 10}))
        .await;
    let token = link["token"].as_str().unwrap().to_owned();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let gw = gw.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move { gw.exchange(&token, None).await }));
    }
    let mut ok = 0;
    let mut exhausted = 0;
    for t in tasks {
        let (s, _, v) = t.await.unwrap();
        match s {
            200 => ok += 1,
            403 if v["reason"] == "exhausted" => exhausted += 1,
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert_eq!((ok, exhausted), (10, 40));
    let (_, v) = gw
        .admin(
            "GET",
            &format!("/api/v1/links/{}", link["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(v["uses"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_viewers_is_exact_with_50_concurrent_consoles() {
    let gw = Arc::new(TestGateway::start_with(GENEROUS).await);
    gw.start_firmware_vm("mv").await;
    let link = gw
        .create_link(json!({"vm": "mv", "ttl_seconds": 600, "max_viewers": 3}))
        .await;
    let (s, cookie, v) = gw.exchange(link["token"].as_str().unwrap(), None).await;
    assert_eq!(s, 200, "{v}");
    let cookie = cookie.unwrap();
    let path = v["ws_path"].as_str().unwrap().to_owned();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let gw = gw.clone();
        let (cookie, path) = (cookie.clone(), path.clone());
        tasks.push(tokio::spawn(async move {
            let origin = gw.origin();
            gw.ws(&path, Some(&cookie), Some(&origin)).await
        }));
    }
    let mut open = Vec::new();
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(ws) => open.push(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), 403);
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((open.len(), refused), (3, 47));
    // a new exchange is refused while all slots are taken
    let (s, _, v) = gw.exchange(link["token"].as_str().unwrap(), None).await;
    assert_eq!((s, v["reason"].as_str()), (403, Some("viewers_full")));
    // a slot frees up when a viewer leaves
    drop(open.pop());
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let origin = gw.origin();
    assert!(gw.ws(&path, Some(&cookie), Some(&origin)).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_lock_the_link_with_retry_after() {
    let gw = TestGateway::start_with(
        "[limits]\nexchanges_per_ip_per_minute = 1000\npassword_failures_before_lockout = 3\nlockout_secs = 120\n",
    )
    .await;
    gw.start_firmware_vm("pw").await;
    let link = gw
        .create_link(json!({"vm": "pw", "ttl_seconds": 600, "password": "s3cret"}))
        .await;
    let token = link["token"].as_str().unwrap();
    let (s, _, v) = gw.exchange(token, None).await;
    assert_eq!((s, v["reason"].as_str()), (401, Some("password_required")));
    for _ in 0..3 {
        let (s, _, v) = gw.exchange(token, Some("guess")).await;
        assert_eq!((s, v["reason"].as_str()), (401, Some("wrong_password")));
    }
    let (s, head, v) = gw
        .public(
            "POST",
            "/s/session",
            "Content-Type: application/json\r\n",
            Some(json!({"token": token, "password": "s3cret"}).to_string()),
        )
        .await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(v["reason"], "locked_out");
    let retry: u64 = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("retry-after: ")
                .or_else(|| l.strip_prefix("Retry-After: "))
        })
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!((100..=120).contains(&retry), "{retry}");
    let (_, audit) = gw
        .admin(
            "GET",
            &format!("/api/v1/audit?link={}", link["id"].as_str().unwrap()),
            None,
        )
        .await;
    let kinds: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(
        kinds.iter().filter(|k| **k == "password_failure").count() >= 3,
        "{kinds:?}"
    );
    assert!(kinds.contains(&"locked_out"), "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_are_rate_limited_per_client() {
    let gw = TestGateway::start_with("[limits]\nexchanges_per_ip_per_minute = 5\n").await;
    gw.start_firmware_vm("rl").await;
    let link = gw
        .create_link(json!({"vm": "rl", "ttl_seconds": 600}))
        .await;
    let token = link["token"].as_str().unwrap();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(gw.exchange(token, None).await.0);
    }
    assert_eq!(&statuses[..5], &[200; 5]);
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_and_passwords_are_refused_before_hashing() {
    let gw = TestGateway::start().await;
    gw.start_firmware_vm("big").await;
    let link = gw
        .create_link(json!({"vm": "big", "ttl_seconds": 600, "password": "x"}))
        .await;
    let token = link["token"].as_str().unwrap();
    let huge = "a".repeat(4000);
    let (s, _, _) = gw
        .public(
            "POST",
            "/s/session",
            "",
            Some(json!({"token": token, "password": huge}).to_string()),
        )
        .await;
    assert_eq!(s, 413);
    let long = "b".repeat(129);
    let (s, _, _) = gw.exchange(token, Some(&long)).await;
    assert_eq!(s, 400);
}

/// `grant_cache_entries` bounds the visitors' grants held in memory; grants past it are
/// read back from the store, so every visitor keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grant_cache_is_bounded_and_visitors_keep_working() {
    let gw = TestGateway::start_with("[limits]\ngrant_cache_entries = 2\n").await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let link = gw.raw_link("cache", &addr.to_string(), json!({})).await;
    let mut cookies = Vec::new();
    for _ in 0..5 {
        let (s, cookie, v) = gw.exchange(link["token"].as_str().unwrap(), None).await;
        assert_eq!(s, 200, "{v}");
        cookies.push(cookie.unwrap());
        assert!(
            gw.app.cached_grants() <= 2,
            "{} cached",
            gw.app.cached_grants()
        );
    }
    let id = link["id"].as_str().unwrap();
    for c in &cookies {
        let (s, _, v) = gw
            .public(
                "GET",
                &format!("/s/status/{id}"),
                &format!("Cookie: {c}\r\n"),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
    assert!(gw.app.cached_grants() <= 2);
}
