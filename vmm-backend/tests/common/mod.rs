//! Test harness for real QEMU VMs (in the spirit of Cloud Hypervisor's `test_infra`): a
//! private data directory, the small Linux test guest, helpers to wait on the guest's
//! serial console, and a guard that leaves no QEMU behind, whatever the test did.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use vmm_backend::{BackendConfig, QemuBackend, VmDefinition};

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
        test_support::linux_vm(name, extra_cmdline, nics)
    }

    /// Firmware only (SeaBIOS, no OS): a guest that ignores ACPI and runs no agent.
    pub fn firmware(&self, name: &str) -> VmDefinition {
        test_support::firmware_vm(name)
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
        test_support::live_qemus(&self.backend.config().run_dir)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        test_support::kill_qemus(&self.backend.config().run_dir);
    }
}
