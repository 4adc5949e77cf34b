//! Power cycle on real QEMU: start, suspend, resume, reset, ACPI shutdown honoured and
//! ignored, and clear errors for actions that do not fit the VM's state.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::Harness;
use vmm_backend::{BackendError, PowerAction, VmBackend, VmState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cycle_of_a_linux_guest() {
    let h = Harness::new();
    let b = &h.backend;
    b.define(h.linux("cycle", "", &["virtio"])).await.unwrap();
    assert_eq!(b.get("cycle").await.unwrap().state, VmState::Stopped);

    let info = b.power("cycle", PowerAction::Start).await.unwrap();
    assert_eq!(info.state, VmState::Running);
    assert!(info.pid.is_some());
    h.wait_serial("cycle", "VMGW-GUEST-READY", Duration::from_secs(90))
        .await;

    let err = b.power("cycle", PowerAction::Start).await.unwrap_err();
    assert!(matches!(err, BackendError::AlreadyRunning(_)), "{err}");
    let err = b.power("cycle", PowerAction::Resume).await.unwrap_err();
    assert!(matches!(err, BackendError::NotPaused(_)), "{err}");

    let info = b.power("cycle", PowerAction::Suspend).await.unwrap();
    assert_eq!(info.state, VmState::Paused);
    assert_eq!(info.qemu_status.as_deref(), Some("paused"));
    let err = b.power("cycle", PowerAction::Suspend).await.unwrap_err();
    assert!(matches!(err, BackendError::AlreadyPaused(_)), "{err}");

    let info = b.power("cycle", PowerAction::Resume).await.unwrap();
    assert_eq!(info.state, VmState::Running);

    // Reset reboots the guest: it prints its banner again.
    let before = h.serial("cycle").matches("VMGW-GUEST-READY").count();
    let info = b.power("cycle", PowerAction::Reset).await.unwrap();
    assert_eq!(info.state, VmState::Running);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while h.serial("cycle").matches("VMGW-GUEST-READY").count() <= before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "guest did not reboot after reset"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The guest honours ACPI: it goes down well before the grace period.
    let t = std::time::Instant::now();
    let info = b
        .shutdown_with_grace("cycle", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(info.state, VmState::Stopped);
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        info.exit_reason.as_deref().unwrap_or("").contains("ACPI"),
        "{:?}",
        info.exit_reason
    );
    assert!(h.live_qemus().is_empty());

    for action in [
        PowerAction::Shutdown,
        PowerAction::Poweroff,
        PowerAction::Reset,
        PowerAction::Suspend,
        PowerAction::Resume,
    ] {
        let err = b.power("cycle", action).await.unwrap_err();
        assert!(
            matches!(err, BackendError::NotRunning(_)),
            "{action:?}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_forced_when_the_guest_ignores_acpi() {
    let h = Harness::new();
    let b = &h.backend;
    b.define(h.linux("stubborn", "vmgw.acpi=ignore", &[]))
        .await
        .unwrap();
    b.power("stubborn", PowerAction::Start).await.unwrap();
    h.wait_serial("stubborn", "VMGW-GUEST-READY", Duration::from_secs(90))
        .await;
    let t = std::time::Instant::now();
    let info = b
        .shutdown_with_grace("stubborn", Duration::from_secs(3))
        .await
        .unwrap();
    let took = t.elapsed();
    assert_eq!(info.state, VmState::Stopped);
    assert!(
        took >= Duration::from_secs(3),
        "forced before the grace period: {took:?}"
    );
    let reason = info.exit_reason.unwrap_or_default();
    assert!(reason.contains("forced off"), "{reason}");
    assert!(h.live_qemus().is_empty());
    // It can be started again afterwards.
    assert_eq!(
        b.power("stubborn", PowerAction::Start).await.unwrap().state,
        VmState::Running
    );
    b.power("stubborn", PowerAction::Poweroff).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_that_died_is_reported_stopped_with_its_reason() {
    let h = Harness::new();
    let b = &h.backend;
    b.define(h.firmware("victim")).await.unwrap();
    let pid = b
        .power("victim", PowerAction::Start)
        .await
        .unwrap()
        .pid
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = b.get("victim").await.unwrap();
        if info.state == VmState::Stopped {
            let reason = info.exit_reason.unwrap_or_default();
            assert!(reason.contains("signal 15"), "{reason}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // and it starts again cleanly over the stale run directory
    b.power("victim", PowerAction::Start).await.unwrap();
    b.power("victim", PowerAction::Poweroff).await.unwrap();
    assert!(h.live_qemus().is_empty());
}
