//! The CLI works on the same data directory as a running gateway: admin tokens and links
//! made there work at once, a revocation made there ends live sessions, and signing keys
//! rotate without breaking links.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{TestGateway, WsBytes};
use serde_json::json;

fn gateway(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"));
    cmd.arg("--data-dir").arg(dir).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_tokens_links_and_revocation_reach_the_running_gateway() {
    let gw = TestGateway::start().await;
    gw.start_firmware_vm("cli-vm").await;
    let dir = gw.dir.path().to_owned();

    let (ok, out, err) = gateway(&dir, &["admin-token", "create", "ops", "--json"], &[]);
    assert!(ok, "{err}");
    let token = serde_json::from_str::<serde_json::Value>(&out).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let tcp = tokio::net::TcpStream::connect(gw.admin).await.unwrap();
    let (s, _, _) = common::http_call(
        tcp,
        "GET",
        "/api/v1/links",
        &format!("Authorization: Bearer {token}\r\n"),
        None,
    )
    .await;
    assert_eq!(s, 200, "a CLI-made admin token works at once");

    let (ok, out, err) = gateway(
        &dir,
        &[
            "link",
            "create",
            "--vm",
            "cli-vm",
            "--ttl",
            "600",
            "--max-uses",
            "3",
            "--json",
        ],
        &[("VMGW_LINK_PASSWORD", "from-env")],
    );
    assert!(ok, "{err}");
    let link: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(link["has_password"], true);
    assert!(link["url"].as_str().unwrap().contains("/s/#"));
    let id = link["id"].as_str().unwrap().to_owned();

    let mut c = WsBytes::new(gw.open_console(&link, Some("from-env")).await);
    c.rfb_connect().await;

    let (ok, out, _) = gateway(&dir, &["link", "list"], &[]);
    assert!(ok && out.contains(&id) && out.contains("1/3"), "{out}");
    let (ok, _, err) = gateway(&dir, &["link", "revoke", &id], &[]);
    assert!(ok, "{err}");
    let closed = c.closed_within(Duration::from_secs(3)).await;
    assert_eq!(
        closed,
        Some((4001, "revoked".to_owned())),
        "the running gateway picked up the CLI's revocation"
    );

    let (ok, _, err) = gateway(
        &dir,
        &["link", "create", "--vm", "nope", "--ttl", "60"],
        &[],
    );
    assert!(!ok && err.contains("nope"), "{err}");
    let (ok, out, _) = gateway(&dir, &["vm", "list", "--json"], &[]);
    assert!(ok && out.contains("cli-vm"), "{out}");
    let (ok, _, _) = gateway(&dir, &["admin-token", "revoke", "ops"], &[]);
    assert!(ok);
    let tcp = tokio::net::TcpStream::connect(gw.admin).await.unwrap();
    let (s, _, _) = common::http_call(
        tcp,
        "GET",
        "/api/v1/links",
        &format!("Authorization: Bearer {token}\r\n"),
        None,
    )
    .await;
    assert_eq!(s, 401, "a revoked admin token is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_keys_rotate_without_breaking_links_until_removed() {
    let gw = TestGateway::start().await;
    gw.start_firmware_vm("rot").await;
    let dir = gw.dir.path().to_owned();
    let old = gw
        .create_link(json!({"vm": "rot", "ttl_seconds": 600}))
        .await;
    let (ok, out, _) = gateway(&dir, &["key", "list", "--json"], &[]);
    assert!(ok);
    let old_kid = serde_json::from_str::<serde_json::Value>(&out).unwrap()[0]["kid"]
        .as_str()
        .unwrap()
        .to_owned();

    let (ok, out, err) = gateway(&dir, &["key", "rotate"], &[]);
    assert!(ok, "{err}");
    assert!(!out.contains(&old_kid));
    let (ok, out, _) = gateway(
        &dir,
        &["link", "create", "--vm", "rot", "--ttl", "600", "--json"],
        &[],
    );
    assert!(ok);
    let new: serde_json::Value = serde_json::from_str(&out).unwrap();
    // the running gateway verifies both: the new key after a reload, the old one still
    assert_eq!(
        gw.exchange(new["token"].as_str().unwrap(), None).await.0,
        200
    );
    assert_eq!(
        gw.exchange(old["token"].as_str().unwrap(), None).await.0,
        200
    );

    let (ok, _, err) = gateway(&dir, &["key", "remove", &old_kid], &[]);
    assert!(ok, "{err}");
    let dir = gw.stop().await;
    let gw = TestGateway::start_in(dir, "").await;
    assert_eq!(
        gw.exchange(old["token"].as_str().unwrap(), None).await.0,
        401,
        "removed key"
    );
    assert_eq!(
        gw.exchange(new["token"].as_str().unwrap(), None).await.0,
        200
    );
}
