//! [`QemuBackend`]: the [`VmBackend`] of this host, on QEMU and Open vSwitch.
//!
//! * this file: the backend, its shared state, locks and helpers;
//! * [`config`]: the settings, [`BackendConfig`];
//! * `lifecycle`: starting and stopping VMs;
//! * `status`: what a VM reports, and QMP events;
//! * `nics`: NICs added to and removed from VMs;
//! * `vm_backend`: the [`VmBackend`] trait on top of these.

pub mod config;
mod lifecycle;
mod nics;
mod status;
mod vm_backend;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

pub use config::BackendConfig;

pub use crate::api::{BackendError, PowerAction, VmBackend, VmEvent, VmInfo, VmState};
use crate::net::NetManager;
use crate::qemu::{self, Qmp, RunDir};
use crate::spec::vm::{SpecError, VmSpec};
use crate::spec::SpecStore;
use crate::util::lockfile::FileLock;

/// Largest screenshot read back (a PNG of an 8K screen of noise is about 130 MiB; real
/// screens compress far below this).
pub const MAX_SCREENSHOT_BYTES: u64 = 64 << 20;

/// VMs on QEMU on this host.
#[derive(Debug, Clone)]
pub struct QemuBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: BackendConfig,
    specs: SpecStore,
    net: NetManager,
    events: broadcast::Sender<VmEvent>,
    watched: std::sync::Mutex<std::collections::HashSet<String>>,
    qga_gates: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

async fn lock_file(path: &Path, timeout: Duration, what: &str) -> Result<FileLock, BackendError> {
    crate::util::lockfile::lock(path, timeout)
        .await
        .map_err(|e| match e {
            crate::util::lockfile::LockError::Busy => BackendError::Busy(what.to_owned()),
            crate::util::lockfile::LockError::Io(op, source) => SpecError::Io {
                op,
                path: path.to_owned(),
                source,
            }
            .into(),
        })
}

impl QemuBackend {
    /// Opens the data directory. VMs already running (started by an earlier instance)
    /// are found through their run directories and controlled as if started here.
    pub fn open(cfg: BackendConfig) -> Result<QemuBackend, BackendError> {
        let specs = SpecStore::open(&cfg.data_dir)?;
        std::fs::create_dir_all(&cfg.run_dir).map_err(|source| SpecError::Io {
            op: "creating",
            path: cfg.run_dir.clone(),
            source,
        })?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&cfg.run_dir, std::fs::Permissions::from_mode(0o700));
        }
        let (events, _) = broadcast::channel(256);
        let net = NetManager::open(cfg.net_config())?;
        let backend = QemuBackend {
            inner: Arc::new(Inner {
                cfg,
                specs,
                net,
                events,
                watched: Default::default(),
                qga_gates: Default::default(),
            }),
        };
        if backend.inner.cfg.watch_events && tokio::runtime::Handle::try_current().is_ok() {
            for spec in backend.inner.specs.list()? {
                let run = backend.run_dir(&spec.name);
                if qemu::live_pid(&run, &spec.uuid).is_some() {
                    backend.watch(&spec);
                }
            }
        }
        Ok(backend)
    }

    pub fn config(&self) -> &BackendConfig {
        &self.inner.cfg
    }

    /// Virtual switches and bonds (see [`crate::net`]).
    pub fn net(&self) -> &NetManager {
        &self.inner.net
    }

    fn run_dir(&self, name: &str) -> RunDir {
        RunDir::new(&self.inner.cfg.run_dir, name)
    }

    async fn lock_vm(&self, name: &str) -> Result<FileLock, BackendError> {
        lock_file(
            &self.run_dir(name).lock(),
            self.inner.cfg.lock_timeout,
            name,
        )
        .await
    }

    async fn lock_specs(&self) -> Result<FileLock, BackendError> {
        lock_file(
            &self.inner.cfg.data_dir.join("vms/.lock"),
            self.inner.cfg.lock_timeout,
            "VM definitions",
        )
        .await
    }

    /// Starts every stopped VM marked `autostart`; returns the names started and the
    /// failures.
    pub async fn autostart(&self) -> Vec<(String, Result<(), BackendError>)> {
        let mut out = Vec::new();
        let Ok(specs) = self.inner.specs.list() else {
            return out;
        };
        for spec in specs.into_iter().filter(|s| s.autostart) {
            let run = self.run_dir(&spec.name);
            if qemu::live_pid(&run, &spec.uuid).is_none() {
                let r = self.power(&spec.name, PowerAction::Start).await.map(|_| ());
                out.push((spec.name, r));
            }
        }
        out
    }

    async fn qmp(&self, run: &RunDir) -> Result<Qmp, BackendError> {
        Ok(Qmp::connect(&run.qmp(), self.inner.cfg.qemu_timeout).await?)
    }

    /// Removes a stopped VM's tap ports (logged, not fatal: reconcile cleans up too).
    async fn unplug_all(&self, spec: &VmSpec) {
        if let Err(e) = self.inner.net.unplug(&spec.name, &spec.nics).await {
            tracing::warn!(vm = %spec.name, error = %e, "removing the VM's taps failed");
        }
    }

    fn stopped(&self, run: &RunDir, reason: &str) {
        run.clear_runtime();
        let _ = std::fs::write(run.exit_reason(), reason);
        let _ = std::fs::remove_file(run.dir.join("vfs"));
    }
}
