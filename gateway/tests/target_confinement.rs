//! Unix-socket targets are confined: an admin token cannot turn a share link into a
//! visitor's QMP (or guest-agent) session. The attack: register the running VM's
//! `DATA/run/<vm>/qmp.sock` as a raw target, link to it, open the link. It must fail at
//! registration, and at connect for a target that got into the store some other way or
//! whose socket was swapped for a link afterwards.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{TestGateway, WsBytes};
use gateway::model::links::ConsoleType;
use gateway::store::{Target, TargetAddress};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A private directory (0700) for console sockets.
fn socket_dir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("vmgw-consoles")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    d
}

/// An echoing unix-socket console at `path`.
fn echo_console(path: &Path) {
    let l = tokio::net::UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 256];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
}

async fn register(gw: &TestGateway, name: &str, socket: &Path) -> (u16, serde_json::Value) {
    gw.admin(
        "POST",
        "/api/v1/targets",
        Some(json!({"name": name, "kind": "raw", "socket": socket})),
    )
    .await
}

/// Opens a link's console; the HTTP status of a refused upgrade, or 101.
async fn console_status(gw: &TestGateway, link: &serde_json::Value) -> u16 {
    let (status, cookie, v) = gw.exchange(link["token"].as_str().unwrap(), None).await;
    assert_eq!(status, 200, "{v}");
    match gw
        .ws(
            v["ws_path"].as_str().unwrap(),
            cookie.as_deref(),
            Some(&gw.origin()),
        )
        .await
    {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_targets_are_refused_by_default() {
    let gw = TestGateway::start().await;
    let dir = socket_dir();
    let sock = dir.path().join("c.sock");
    echo_console(&sock);
    let (s, v) = register(&gw, "c", &sock).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("disabled"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_link_never_reaches_qmp() {
    let dir = socket_dir();
    let allowed: PathBuf = std::fs::canonicalize(dir.path()).unwrap();
    // An admin who allows all of /tmp, where the gateway's own data directory lies too.
    let gw = TestGateway::start_with(&format!(
        "[targets]\nunix_socket_dirs = [\"/tmp\", {allowed:?}]\n"
    ))
    .await;
    gw.start_firmware_vm("vm1").await;
    let data = std::fs::canonicalize(gw.dir.path()).unwrap();
    let qmp = data.join("run/vm1/qmp.sock");
    assert!(qmp.exists(), "the VM runs with its QMP socket");

    // Registration: QMP, the guest agent, other files, a link to QMP, `..` games.
    let qga = data.join("run/vm1/qga.sock");
    let link = allowed.join("evil.sock");
    std::os::unix::fs::symlink(&qmp, &link).unwrap();
    let dlink = allowed.join("vm1");
    std::os::unix::fs::symlink(data.join("run/vm1"), &dlink).unwrap();
    let dotdot = PathBuf::from(format!("{}/../{}", allowed.display(), qmp.display()));
    for (i, p) in [
        qmp.clone(),
        qga,
        PathBuf::from("/etc/passwd"),
        link.clone(),
        dlink.join("qmp.sock"),
        dotdot,
        PathBuf::from("relative.sock"),
    ]
    .iter()
    .enumerate()
    {
        let (s, v) = register(&gw, &format!("t{i}"), p).await;
        assert_eq!(s, 400, "{} was accepted: {v}", p.display());
    }
    let (s, v) = gw.admin("GET", "/api/v1/targets", None).await;
    assert_eq!((s, v), (200, json!([])));

    // A real console socket in the allowed directory works.
    let good = allowed.join("console.sock");
    echo_console(&good);
    let (s, v) = register(&gw, "good", &good).await;
    assert_eq!(s, 201, "{v}");
    let l = gw
        .create_link(json!({"vm": "good", "console": "raw", "ttl_seconds": 600}))
        .await;
    let mut c = WsBytes::new(gw.open_console(&l, None).await);
    c.send(b"ping").await;
    assert_eq!(c.read_exact(4).await, b"ping");
    drop(c);

    // The socket is swapped for a link to QMP after registration: refused at connect.
    std::fs::remove_file(&good).unwrap();
    std::os::unix::fs::symlink(&qmp, &good).unwrap();
    assert_eq!(console_status(&gw, &l).await, 502);

    // A target stored some other way (an old database, another tool): refused at connect.
    gw.app
        .store()
        .put_target(&Target {
            name: "old".into(),
            kind: ConsoleType::Raw,
            address: TargetAddress::Unix(qmp.clone()),
            vnc_password: None,
            created_at: time::OffsetDateTime::now_utc(),
        })
        .await
        .unwrap();
    let l = gw
        .create_link(json!({"vm": "old", "console": "raw", "ttl_seconds": 600}))
        .await;
    assert_eq!(console_status(&gw, &l).await, 502);
}
