//! Bad definitions and failed starts: each gets a precise error, and nothing half-made is
//! left on disk or running.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;

use common::Harness;
use vmm_backend::nic::{MacAddr, NicError, NicRequest};
use vmm_backend::qemu::QemuError;
use vmm_backend::vm::SpecError;
use vmm_backend::{BackendError, BootSource, PowerAction, VmBackend, VmDefinition, VmState};

fn files(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|e| {
            e.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.retain(|f| f != ".lock");
    v.sort();
    v
}

fn assert_nothing_left(h: &Harness) {
    assert!(
        files(&h.dir.path().join("vms")).is_empty(),
        "{:?}",
        files(&h.dir.path().join("vms"))
    );
    assert!(h.live_qemus().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_definitions_are_refused_precisely() {
    let h = Harness::new();
    let b = &h.backend;

    for bad in [
        "",
        ".",
        "..",
        "a/b",
        "../x",
        "-x",
        &"n".repeat(64),
        "sp ace",
    ] {
        let err = b.define(h.firmware(bad)).await.unwrap_err();
        assert!(
            matches!(err, BackendError::Spec(SpecError::InvalidName(_))),
            "{bad:?}: {err}"
        );
    }

    let mut d = h.firmware("zero");
    d.memory_mib = 0;
    let err = b.define(d).await.unwrap_err();
    assert!(
        matches!(err, BackendError::Spec(SpecError::InvalidMemory(0))),
        "{err}"
    );
    assert!(err.to_string().contains("memory"), "{err}");

    let mut d = h.firmware("novcpu");
    d.vcpus = 0;
    assert!(matches!(
        b.define(d).await.unwrap_err(),
        BackendError::Spec(SpecError::InvalidVcpus(0))
    ));

    let mac: MacAddr = "52:54:00:12:34:56".parse().unwrap();
    let mut d = h.firmware("dupmac");
    d.nics = vec![
        NicRequest {
            mac: Some(mac),
            ..NicRequest::from_str_unwrap("virtio")
        },
        NicRequest {
            mac: Some(mac),
            ..NicRequest::from_str_unwrap("e1000")
        },
    ];
    let err = b.define(d).await.unwrap_err();
    assert!(
        matches!(err, BackendError::Spec(SpecError::DuplicateMacInVm { .. })),
        "{err}"
    );

    // unknown NIC model: from the CLI syntax and from JSON
    let err = "ne2k_pci".parse::<NicRequest>().unwrap_err();
    assert!(matches!(err, NicError::UnknownModel(_)), "{err}");
    let json = r#"{"name":"j","boot":{"type":"firmware"},"nics":[{"model":"ne2k_pci"}]}"#;
    let err = serde_json::from_str::<VmDefinition>(json).unwrap_err();
    assert!(
        err.to_string().contains("unknown variant `ne2k_pci`"),
        "{err}"
    );

    let mut d = h.firmware("nokernel");
    d.boot = BootSource::Kernel {
        kernel: PathBuf::from("/nonexistent/vmlinuz"),
        initrd: None,
        cmdline: String::new(),
    };
    let err = b.define(d).await.unwrap_err();
    assert!(
        matches!(err, BackendError::Spec(SpecError::MissingKernel(_))),
        "{err}"
    );
    assert!(err.to_string().contains("/nonexistent/vmlinuz"), "{err}");

    // a disk that cannot be created leaves no spec and no file
    let mut d = h.firmware("baddisk");
    let disk = h.dir.path().join("no-such-dir/disk.qcow2");
    d.boot = BootSource::Disk {
        path: disk.clone(),
        create_size_mib: Some(64),
    };
    let err = b.define(d).await.unwrap_err();
    assert!(
        matches!(err, BackendError::Spec(SpecError::DiskCreate(_))),
        "{err}"
    );
    assert!(!disk.exists());

    assert_nothing_left(&h);

    // the same name twice; the same MAC in two VMs
    let mut first = h.firmware("twin");
    first.nics = vec![NicRequest {
        mac: Some(mac),
        ..NicRequest::from_str_unwrap("virtio")
    }];
    b.define(first.clone()).await.unwrap();
    let err = b.define(first).await.unwrap_err();
    assert!(
        matches!(err, BackendError::Spec(SpecError::AlreadyExists(_))),
        "{err}"
    );
    let mut other = h.firmware("other");
    other.nics = vec![NicRequest {
        mac: Some(mac),
        ..NicRequest::from_str_unwrap("rtl8139")
    }];
    let err = b.define(other).await.unwrap_err();
    assert!(
        matches!(err, BackendError::Spec(SpecError::DuplicateMac { ref vm, .. }) if vm == "twin"),
        "{err}"
    );
    assert_eq!(
        files(&h.dir.path().join("vms")),
        vec!["twin.json".to_owned()]
    );
    b.undefine("twin").await.unwrap();
    assert_nothing_left(&h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disks_are_created_as_qcow2_and_never_overwritten() {
    let h = Harness::new();
    let disk = h.dir.path().join("d.qcow2");
    let mut d = h.firmware("disky");
    d.boot = BootSource::Disk {
        path: disk.clone(),
        create_size_mib: Some(32),
    };
    h.backend.define(d.clone()).await.unwrap();
    let head = std::fs::read(&disk).unwrap();
    assert_eq!(&head[..4], b"QFI\xfb", "qcow2 magic");
    d.name = "disky2".into();
    let err = h.backend.define(d).await.unwrap_err();
    assert!(
        matches!(err, BackendError::Spec(SpecError::DiskExists(_))),
        "{err}"
    );
    // it boots from it (firmware finds no OS, but QEMU runs)
    h.backend.power("disky", PowerAction::Start).await.unwrap();
    h.backend
        .power("disky", PowerAction::Poweroff)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_starts_leave_nothing_running() {
    let h = Harness::new();
    let b = &h.backend;

    // QEMU itself refuses: a corrupt qcow2 image. Its reason is passed on.
    let disk = h.dir.path().join("corrupt.qcow2");
    std::fs::write(&disk, b"QFI\xfb\0\0\0\x03garbage").unwrap();
    let mut d = h.firmware("corrupt");
    d.boot = BootSource::Disk {
        path: disk,
        create_size_mib: None,
    };
    b.define(d).await.unwrap();
    let err = b.power("corrupt", PowerAction::Start).await.unwrap_err();
    assert!(
        matches!(err, BackendError::Qemu(QemuError::StartFailed(_))),
        "{err}"
    );
    assert!(!err.to_string().contains("qemu-system-x86_64:"), "{err}");
    assert!(
        !err.to_string().contains("without a message"),
        "QEMU's reason is passed on: {err}"
    );
    assert_eq!(b.get("corrupt").await.unwrap().state, VmState::Stopped);
    assert!(!h.run_dir("corrupt").join("qemu.pid").exists());

    // the kernel vanished after define
    let kernel = h.dir.path().join("vmlinuz");
    std::fs::write(&kernel, b"not a kernel").unwrap();
    let mut d = h.firmware("gone");
    d.boot = BootSource::Kernel {
        kernel: kernel.clone(),
        initrd: None,
        cmdline: String::new(),
    };
    b.define(d).await.unwrap();
    std::fs::remove_file(&kernel).unwrap();
    let err = b.power("gone", PowerAction::Start).await.unwrap_err();
    assert!(
        matches!(err, BackendError::Spec(SpecError::MissingKernel(_))),
        "{err}"
    );

    // KVM-less start of a VM asking for KVM is explained (when /dev/kvm is missing)
    assert!(h.live_qemus().is_empty());

    // undefine of a running VM is refused; unknown VMs are named
    b.define(h.firmware("busy")).await.unwrap();
    b.power("busy", PowerAction::Start).await.unwrap();
    let err = b.undefine("busy").await.unwrap_err();
    assert!(matches!(err, BackendError::StillRunning(_)), "{err}");
    b.power("busy", PowerAction::Poweroff).await.unwrap();
    b.undefine("busy").await.unwrap();
    let err = b.get("nope").await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(h.live_qemus().is_empty());
}

trait FromStrUnwrap {
    fn from_str_unwrap(s: &str) -> Self;
}
impl FromStrUnwrap for NicRequest {
    fn from_str_unwrap(s: &str) -> Self {
        s.parse().unwrap()
    }
}
