//! Test infrastructure shared by the workspace's integration tests (in the spirit of
//! Cloud Hypervisor's `test_infra`): where the workspace is, the small Linux test guest
//! (built and cached by the project's script, never skipped), and finding and killing
//! the QEMU processes of a run directory so that no test leaves one behind, and a
//! throwaway PostgreSQL server ([`postgres::PgServer`]).

pub mod postgres;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use vmm_backend::nic::NicRequest;
use vmm_backend::{Accel, BootSource, ConsoleConfig, VmDefinition};

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| here.to_path_buf())
}

/// The test guest's kernel and initramfs. Built by `vmm-backend/guest/build-test-guest.sh`
/// when missing (cached under `target/test-guest`, or `VMGW_TEST_GUEST_DIR`); a failed
/// build fails the test that asked.
pub fn test_guest() -> &'static (PathBuf, PathBuf) {
    static GUEST: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    GUEST.get_or_init(|| {
        let dir = std::env::var_os("VMGW_TEST_GUEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target/test-guest"));
        let kernel = dir.join("vmlinuz");
        let initrd = dir.join("initrd.img");
        if !kernel.is_file() || !initrd.is_file() {
            let script = workspace_root().join("vmm-backend/guest/build-test-guest.sh");
            let ok = std::process::Command::new("bash")
                .arg(&script)
                .arg(&dir)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(
                ok,
                "building the test guest with {} failed",
                script.display()
            );
        }
        (kernel, initrd)
    })
}

/// Pids of the QEMU processes still alive (not zombies) whose pidfiles are in the VM run
/// directories under `run_root`.
pub fn live_qemus(run_root: &Path) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(run_root) else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = std::fs::read_to_string(e.path().join("qemu.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let alive = stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'));
        if alive {
            out.push(pid);
        }
    }
    out
}

/// Kills (SIGKILL) every QEMU of `run_root`: the guard of every test harness.
pub fn kill_qemus(run_root: &Path) {
    for pid in live_qemus(run_root) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// The Linux test guest as a VM definition (TCG: Linux guests hang under nested KVM
/// here), with extra kernel command line words and NICs in the CLI's `--nic` syntax.
pub fn linux_vm(name: &str, extra_cmdline: &str, nics: &[&str]) -> VmDefinition {
    let (kernel, initrd) = test_guest();
    VmDefinition {
        name: name.into(),
        uuid: None,
        vcpus: 1,
        memory_mib: 256,
        boot: BootSource::Kernel {
            kernel: kernel.clone(),
            initrd: Some(initrd.clone()),
            cmdline: format!("console=ttyS0 quiet {extra_cmdline}"),
        },
        console: ConsoleConfig::Both,
        nics: nics
            .iter()
            .map(|n| {
                n.parse::<NicRequest>()
                    .unwrap_or_else(|e| panic!("test NIC {n:?}: {e}"))
            })
            .collect(),
        accel: Accel::Tcg,
        autostart: false,
        keyboard_layout: None,
    }
}

/// Firmware only (SeaBIOS, no OS): starts fast, ignores ACPI, runs no guest agent.
pub fn firmware_vm(name: &str) -> VmDefinition {
    VmDefinition {
        name: name.into(),
        uuid: None,
        vcpus: 1,
        memory_mib: 64,
        boot: BootSource::Firmware,
        console: ConsoleConfig::Both,
        nics: vec![],
        accel: Accel::Tcg,
        autostart: false,
        keyboard_layout: None,
    }
}
