//! SR-IOV on a fake sysfs tree (this machine has no SR-IOV hardware): VF discovery, the
//! no-suspend / no-migration / no-HA rules, and VFs handed out once.

#![allow(clippy::unwrap_used)]

mod common;

use common::Harness;
use vmm_backend::nic::{write_fake_sysfs, NicError, NicRequest, Sysfs};
use vmm_backend::{BackendError, PowerAction, VmBackend};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sriov_vm_refuses_suspend_and_reports_its_limits() {
    let sys = tempfile::tempdir().unwrap();
    write_fake_sysfs(sys.path(), "enp3s0f0", 2, true).unwrap();
    let pfs = Sysfs::new(sys.path()).physical_functions().unwrap();
    assert_eq!(pfs.len(), 1);
    assert_eq!(pfs[0].vfs.len(), 2);

    let root = sys.path().to_owned();
    let h = Harness::with(move |c| c.sysfs_root = root);
    let mut d = h.firmware("fast");
    d.nics = vec!["sriov,pf=enp3s0f0".parse::<NicRequest>().unwrap()];
    h.backend.define(d).await.unwrap();

    let info = h.backend.get("fast").await.unwrap();
    assert!(!info.suspendable && !info.live_migratable && !info.ha_eligible);
    let err = h
        .backend
        .power("fast", PowerAction::Suspend)
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::SuspendRefused { .. }), "{err}");
    assert!(err.to_string().contains("SR-IOV"), "{err}");

    // Starting really passes the VF to QEMU's vfio-pci, which fails here (no such PCI
    // device): the error is QEMU's reason and the VF is not left reserved.
    let err = h
        .backend
        .power("fast", PowerAction::Start)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("0000:03:10.0"), "{err}");
    assert!(!h.run_dir("fast").join("vfs").exists());
    assert!(h.live_qemus().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sriov_disabled_pf_is_reported() {
    let sys = tempfile::tempdir().unwrap();
    write_fake_sysfs(sys.path(), "enp3s0f0", 4, false).unwrap();
    let root = sys.path().to_owned();
    let h = Harness::with(move |c| c.sysfs_root = root);
    let mut d = h.firmware("slow");
    d.nics = vec!["sriov,pf=enp3s0f0".parse::<NicRequest>().unwrap()];
    h.backend.define(d).await.unwrap();
    let err = h
        .backend
        .power("slow", PowerAction::Start)
        .await
        .unwrap_err();
    assert!(
        matches!(err, BackendError::Nic(NicError::SriovDisabled(_))),
        "{err}"
    );
    let mut d = h.firmware("ghost");
    d.nics = vec!["sriov,pf=enp9s9".parse::<NicRequest>().unwrap()];
    h.backend.define(d).await.unwrap();
    let err = h
        .backend
        .power("ghost", PowerAction::Start)
        .await
        .unwrap_err();
    assert!(
        matches!(err, BackendError::Nic(NicError::NoSuchPf(_))),
        "{err}"
    );
}
