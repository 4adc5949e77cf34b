//! VMs outlive the backend instance that started them; a new instance re-attaches.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::Harness;
use vmm_backend::{PowerAction, VmBackend, VmState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_backend_finds_and_controls_running_vms() {
    let h = Harness::new();
    h.backend
        .define(h.linux("keep", "", &["e1000"]))
        .await
        .unwrap();
    let pid = h
        .backend
        .power("keep", PowerAction::Start)
        .await
        .unwrap()
        .pid
        .unwrap();

    // Drop every handle of the first instance, as a gateway restart would.
    let again = h.reopen();
    let info = again.get("keep").await.unwrap();
    assert_eq!(info.state, VmState::Running);
    assert_eq!(info.pid, Some(pid), "same QEMU process");

    let info = again.power("keep", PowerAction::Suspend).await.unwrap();
    assert_eq!(info.state, VmState::Paused);
    let info = again.power("keep", PowerAction::Resume).await.unwrap();
    assert_eq!(info.state, VmState::Running);
    h.wait_serial("keep", "VMGW-GUEST-READY", Duration::from_secs(90))
        .await;

    // A third instance through the CLI's path: the listing shows it running too.
    let third = h.reopen();
    let all = third.list().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].state, VmState::Running);

    third.power("keep", PowerAction::Poweroff).await.unwrap();
    assert_eq!(again.get("keep").await.unwrap().state, VmState::Stopped);
    assert!(h.live_qemus().is_empty());
}
