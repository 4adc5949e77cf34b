//! The gateway on vmm-backend's in-memory fake backend: the admin API, a share link, the
//! WebSocket and RFB through the relay, and a power-off ending the session, in well
//! under a second and without QEMU, Open vSwitch or root.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestGateway, WsBytes};
use serde_json::json;
use vmm_backend::fake::FakeBackend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_flow_on_the_fake_backend() {
    let run = tempfile::Builder::new()
        .prefix("vmgw-f")
        .tempdir_in("/tmp")
        .unwrap();
    let gw = TestGateway::start_on(Arc::new(FakeBackend::new(run.path()))).await;
    gw.start_firmware_vm("alpha").await;
    let (s, v) = gw.admin("GET", "/api/v1/vms/alpha", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "running", "{v}");

    let link = gw
        .create_link(json!({"vm": "alpha", "ttl_seconds": 600}))
        .await;
    let mut ws = WsBytes::new(gw.open_console(&link, None).await);
    let (w, h, name) = ws.rfb_connect().await;
    assert_eq!((w, h, name.as_str()), (640, 480, "fake"));
    assert_eq!(ws.request_frame(w, h).await, 0, "an empty update");

    let (s, v) = gw
        .admin("POST", "/api/v1/vms/alpha/actions/poweroff", None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(
        ws.closed_within(Duration::from_secs(5)).await.is_some(),
        "the session ends with the VM"
    );

    // The network API reaches the fake network through `VmBackend::network()`.
    let (s, v) = gw
        .admin("POST", "/api/v1/vswitches", Some(json!({"name": "lan"})))
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["kind"], "private");
    let (s, v) = gw
        .admin("POST", "/api/v1/vswitches", Some(json!({"name": "lan"})))
        .await;
    assert_eq!(s, 409, "{v}");
}
