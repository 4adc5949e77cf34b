//! Test harness for real QEMU VMs (in the spirit of Cloud Hypervisor's `test_infra`): a
//! private data directory, the small Linux test guest, helpers to wait on the guest's
//! serial console, and a guard that leaves no QEMU behind, whatever the test did.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use vmm_backend::nic::NicRequest;
use vmm_backend::{Accel, BackendConfig, BootSource, ConsoleConfig, QemuBackend, VmDefinition};

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The test guest's kernel and initramfs, built (and cached) by the project's script.
/// Never skips: a missing guest is built, and a failed build fails the test.
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
            let st = std::process::Command::new("bash")
                .arg(&script)
                .arg(&dir)
                .status()
                .expect("running build-test-guest.sh");
            assert!(st.success(), "building the test guest failed");
        }
        (kernel, initrd)
    })
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub backend: QemuBackend,
}

impl Harness {
    pub fn new() -> Harness {
        Self::with(|_| {})
    }

    pub fn with(tune: impl FnOnce(&mut BackendConfig)) -> Harness {
        // Short paths: unix socket names must stay under 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("vmgw-t")
            .tempdir_in("/tmp")
            .unwrap();
        let mut cfg = BackendConfig::new(dir.path());
        cfg.shutdown_grace = Duration::from_secs(20);
        cfg.guest_agent_timeout = Duration::from_secs(3);
        tune(&mut cfg);
        let backend = QemuBackend::open(cfg).unwrap();
        Harness { dir, backend }
    }

    /// A fresh backend instance on the same data directory (as after a restart).
    pub fn reopen(&self) -> QemuBackend {
        let mut cfg = self.backend.config().clone();
        cfg.watch_events = false;
        QemuBackend::open(cfg).unwrap()
    }

    pub fn run_dir(&self, vm: &str) -> PathBuf {
        self.backend.config().run_dir.join(vm)
    }

    /// The Linux test guest, with extra kernel command line words.
    pub fn linux(&self, name: &str, extra_cmdline: &str, nics: &[&str]) -> VmDefinition {
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
                .map(|n| n.parse::<NicRequest>().unwrap())
                .collect(),
            // Linux guests hang under nested KVM here.
            accel: Accel::Tcg,
            autostart: false,
        }
    }

    /// Firmware only (SeaBIOS, no OS): a guest that ignores ACPI and runs no agent.
    pub fn firmware(&self, name: &str) -> VmDefinition {
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
        }
    }

    pub fn serial(&self, vm: &str) -> String {
        std::fs::read_to_string(self.run_dir(vm).join("serial.log")).unwrap_or_default()
    }

    /// Waits until the guest's serial console shows `marker`.
    pub async fn wait_serial(&self, vm: &str, marker: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.serial(vm).contains(marker) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{vm}: {marker:?} not seen on the serial console within {timeout:?}; it shows:\n{}",
                    self.serial(vm)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Pids of QEMU processes still running from this harness's run directory.
    pub fn live_qemus(&self) -> Vec<i32> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.backend.config().run_dir) else {
            return out;
        };
        for e in entries.flatten() {
            let Ok(pid) = std::fs::read_to_string(e.path().join("qemu.pid")) else {
                continue;
            };
            let Ok(pid) = pid.trim().parse::<i32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let alive = stat
                .rsplit_once(')')
                .map(|(_, r)| !r.trim_start().starts_with('Z'))
                .unwrap_or(false);
            if alive {
                out.push(pid);
            }
        }
        out
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for pid in self.live_qemus() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
