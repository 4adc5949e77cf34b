//! Guest IPs come from the QEMU guest agent, and only from it.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::Harness;
use vmm_backend::qemu::QemuError;
use vmm_backend::{BackendError, PowerAction, VmBackend};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_ip_is_reported_through_the_agent() {
    let h = Harness::new();
    let b = &h.backend;
    b.define(h.linux("agent", "", &["virtio"])).await.unwrap();
    b.power("agent", PowerAction::Start).await.unwrap();
    h.wait_serial("agent", "VMGW-NET-UP", Duration::from_secs(120))
        .await;
    let mac = b.get("agent").await.unwrap().spec.nics[0].mac.to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let addrs = loop {
        match b.guest_addresses("agent").await {
            Ok(a) if a.iter().any(|a| a.address.to_string() == "10.0.2.15") => break a,
            other => {
                assert!(Instant::now() < deadline, "no guest IP: {other:?}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let nic = addrs
        .iter()
        .find(|a| a.address.to_string() == "10.0.2.15")
        .unwrap();
    assert_eq!(nic.prefix, 24);
    assert_eq!(nic.mac.as_deref(), Some(mac.as_str()));
    b.power("agent", PowerAction::Poweroff).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_agent_is_said_plainly_and_quickly() {
    let h = Harness::with(|c| c.guest_agent_timeout = Duration::from_secs(2));
    let b = &h.backend;
    b.define(h.firmware("silent")).await.unwrap();
    b.power("silent", PowerAction::Start).await.unwrap();
    for _ in 0..2 {
        let t = Instant::now();
        let err = b.guest_addresses("silent").await.unwrap_err();
        assert!(
            t.elapsed() < Duration::from_secs(4),
            "took {:?}",
            t.elapsed()
        );
        assert!(
            matches!(err, BackendError::Qemu(QemuError::GuestAgentNotRunning(_))),
            "{err}"
        );
        assert!(err.to_string().contains("guest agent not running"), "{err}");
    }
    b.power("silent", PowerAction::Poweroff).await.unwrap();
    let err = b.guest_addresses("silent").await.unwrap_err();
    assert!(matches!(err, BackendError::NotRunning(_)), "{err}");
}
