//! Serial consoles (`console: serial`) against a real QEMU guest (TCG): the guest's shell
//! on ttyS0, shared by several viewers through the gateway's per-VM serial hub.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ClientWs, TestGateway, WsBytes};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use vmm_backend::PowerAction;

/// Reads console output until `needle` appears (panics after 60 s or on close); returns
/// everything read.
async fn read_until(ws: &mut ClientWs, needle: &str) -> String {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if String::from_utf8_lossy(&got).contains(needle) {
            return String::from_utf8_lossy(&got).into_owned();
        }
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{needle:?} not seen within 60 s; got {:?}",
                    String::from_utf8_lossy(&got)
                )
            });
        match msg {
            Some(Ok(Message::Binary(b))) => got.extend_from_slice(&b),
            Some(Ok(Message::Close(f))) => panic!("closed while waiting for {needle:?}: {f:?}"),
            Some(Ok(_)) => {}
            other => panic!("stream ended while waiting for {needle:?}: {other:?}"),
        }
    }
}

async fn type_line(ws: &mut ClientWs, line: &str) {
    ws.send(Message::Binary(format!("{line}\r").into_bytes().into()))
        .await
        .unwrap();
}

fn serial_log(gw: &TestGateway, vm: &str) -> String {
    let p = gw.dir.path().join("run").join(vm).join("serial.log");
    String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
}

/// Boots the Linux test guest `vm` and waits for its readiness marker in the serial log
/// (the log file stays beside the serial console).
async fn boot_guest(gw: &TestGateway, vm: &str) {
    let backend = gw.app.backend();
    backend
        .define(test_support::linux_vm(vm, "", &[]))
        .await
        .unwrap();
    backend.power(vm, PowerAction::Start).await.unwrap();
    let until = Instant::now() + Duration::from_secs(180);
    while !serial_log(gw, vm).contains("VMGW-GUEST-READY") {
        assert!(
            Instant::now() < until,
            "the guest did not get ready; serial log: {}",
            serial_log(gw, vm)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_console_is_shared_with_scrollback_view_only_viewer_limit_and_revoke() {
    let gw = Arc::new(TestGateway::start().await);
    boot_guest(&gw, "ser").await;

    // Scrollback on connect: the first viewer sees what the guest printed before anyone
    // was connected (the hub starts from the tail of the serial log).
    let link = gw
        .create_link(
            json!({"vm": "ser", "console": "serial", "ttl_seconds": 600, "max_viewers": 2}),
        )
        .await;
    assert_eq!(link["console"], "serial");
    let mut a = gw.open_console(&link, None).await;
    read_until(&mut a, "VMGW-GUEST-READY").await;

    // The shell on ttyS0 runs what a viewer types.
    type_line(&mut a, "echo serial-$((6*7))").await;
    read_until(&mut a, "serial-42").await;

    // A second viewer joins: the recent output (the live part too) first, then both see
    // the same output.
    let mut b = gw.open_console(&link, None).await;
    read_until(&mut b, "serial-42").await;
    type_line(&mut a, "echo both-$((7*8))").await;
    read_until(&mut a, "both-56").await;
    read_until(&mut b, "both-56").await;
    // B may type too: its input is merged into the same port.
    type_line(&mut b, "echo fromb-$((4*4))").await;
    read_until(&mut a, "fromb-16").await;

    // max_viewers is exact: both slots are taken, so a new exchange is refused, and so is
    // every one of several concurrent console connections with a valid cookie.
    let (s, _, v) = gw.exchange(link["token"].as_str().unwrap(), None).await;
    assert_eq!(
        (s, v["reason"].as_str()),
        (403, Some("viewers_full")),
        "{v}"
    );
    let other = gw
        .create_link(
            json!({"vm": "ser", "console": "serial", "ttl_seconds": 600, "max_viewers": 3}),
        )
        .await;
    let (s, cookie, v) = gw.exchange(other["token"].as_str().unwrap(), None).await;
    assert_eq!(s, 200, "{v}");
    let (cookie, path) = (cookie.unwrap(), v["ws_path"].as_str().unwrap().to_owned());
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (gw, cookie, path) = (gw.clone(), cookie.clone(), path.clone());
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
    assert_eq!((open.len(), refused), (3, 7));
    // Each of them is a viewer of the same port.
    for ws in open.iter_mut() {
        type_line(&mut a, "echo many-$((9*9))").await;
        read_until(ws, "many-81").await;
    }
    drop(open);

    // View-only: the viewer sees the output, but what it sends never reaches the guest.
    let vo = gw
        .create_link(
            json!({"vm": "ser", "console": "serial", "ttl_seconds": 600, "view_only": true}),
        )
        .await;
    let mut c = gw.open_console(&vo, None).await;
    read_until(&mut c, "both-56").await;
    type_line(&mut c, "echo viewonly-$((5*5))").await;
    type_line(&mut a, "echo after-$((3*3))").await;
    let seen = read_until(&mut a, "after-9").await;
    read_until(&mut c, "after-9").await;
    assert!(
        !seen.contains("viewonly"),
        "view-only input reached the guest: {seen:?}"
    );
    assert!(!serial_log(&gw, "ser").contains("viewonly"));

    // Revoke ends the link's sessions at once; the view-only link's session goes on.
    let id = link["id"].as_str().unwrap();
    let (s, v) = gw
        .admin("DELETE", &format!("/api/v1/links/{id}"), None)
        .await;
    assert_eq!(s, 200, "{v}");
    let (mut a, mut b) = (WsBytes::new(a), WsBytes::new(b));
    let revoked = Some((4001, "revoked".to_owned()));
    assert_eq!(a.closed_within(Duration::from_secs(1)).await, revoked);
    assert_eq!(b.closed_within(Duration::from_secs(1)).await, revoked);
    // The serial log still records everything the guest printed.
    assert!(serial_log(&gw, "ser").contains("after-9"));
    let vo_id = vo["id"].as_str().unwrap();
    let (s, _) = gw
        .admin("DELETE", &format!("/api/v1/links/{vo_id}"), None)
        .await;
    assert_eq!(s, 200);
    let mut c = WsBytes::new(c);
    assert_eq!(c.closed_within(Duration::from_secs(1)).await, revoked);

    // The sessions are in the audit trail like any console's: two started, two ended.
    let (s, audit) = gw
        .admin("GET", &format!("/api/v1/audit?link={id}"), None)
        .await;
    assert_eq!(s, 200, "{audit}");
    let kinds: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    let count = |k: &str| kinds.iter().filter(|x| **x == k).count();
    assert_eq!(count("session_started"), 2, "{kinds:?}");
    assert_eq!(count("session_ended"), 2, "{kinds:?}");
    assert!(kinds.contains(&"link_revoked"), "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_links_need_a_vm_and_serial_is_no_target_kind() {
    let gw = TestGateway::start().await;
    let (s, v) = gw
        .admin(
            "POST",
            "/api/v1/targets",
            Some(json!({"name": "ext", "kind": "serial", "address": "127.0.0.1:9"})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = gw
        .admin(
            "POST",
            "/api/v1/links",
            Some(json!({"vm": "nope", "console": "serial", "ttl_seconds": 60})),
        )
        .await;
    assert!(s == 400 || s == 404, "{s} {v}");
}

/// Kill and power-off on the fake backend (its serial port echoes): a killed viewer's
/// session ends at once while the other viewer goes on; the VM stopping ends the rest
/// as "console closed".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_ends_one_serial_viewer_and_power_off_ends_all() {
    let run = tempfile::Builder::new()
        .prefix("vmgw-f")
        .tempdir_in("/tmp")
        .unwrap();
    let backend = Arc::new(vmm_backend::fake::FakeBackend::new(run.path()));
    let gw = TestGateway::start_on(backend).await;
    gw.start_firmware_vm("fk").await;
    let link = gw
        .create_link(json!({"vm": "fk", "console": "serial", "ttl_seconds": 600}))
        .await;
    let mut a = WsBytes::new(gw.open_console(&link, None).await);
    let mut b = WsBytes::new(gw.open_console(&link, None).await);
    a.send(b"ping-1").await;
    assert_eq!(a.read_exact(6).await, b"ping-1");
    assert_eq!(b.read_exact(6).await, b"ping-1");

    let id = link["id"].as_str().unwrap();
    let (s, sessions) = gw
        .admin("GET", &format!("/api/v1/links/{id}/sessions"), None)
        .await;
    assert_eq!(s, 200, "{sessions}");
    let list = sessions.as_array().unwrap();
    assert_eq!(list.len(), 2, "{sessions}");
    let first = list[0]["id"].as_str().unwrap();
    let (s, _) = gw
        .admin("DELETE", &format!("/api/v1/sessions/{first}"), None)
        .await;
    assert!(s == 200 || s == 204, "{s}");
    // One of the two is killed within a second; the other still relays.
    let (killed, alive) = tokio::select! {
        r = a.closed_within(Duration::from_secs(1)) => (r, &mut b),
        r = b.closed_within(Duration::from_secs(1)) => (r, &mut a),
    };
    assert_eq!(killed, Some((4003, "killed".to_owned())));
    alive.send(b"ping-2").await;
    assert_eq!(alive.read_exact(6).await, b"ping-2");

    let (s, v) = gw
        .admin("POST", "/api/v1/vms/fk/actions/poweroff", None)
        .await;
    assert_eq!(s, 200, "{v}");
    let closed = alive.closed_within(Duration::from_secs(5)).await;
    assert_eq!(closed.map(|c| c.0), Some(4010));
}
