//! The backend's public API ([`VmBackend`]) and its QEMU implementation.
//!
//! This is the one boundary the gateway uses: it knows VMs by name, asks for power
//! actions, console sockets and guest addresses, and never sees QEMU itself.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::console::{ConsoleEndpoint, ConsoleKind};
use crate::net::{Datapath, NetConfig, NetError, NetManager, Network, OvsMode};
use crate::qemu::{self, GuestAddress, QemuError, Qmp, RunDir, VfAssignment};
use crate::spec::nic::{MacAddr, NicError, NicModel, NicRequest, NicSpec, Sysfs};
use crate::spec::vm::{BootSource, SpecError, VmDefinition, VmSpec};
use crate::spec::SpecStore;

/// Errors of the backend API. Messages are for operators and API clients: they say what
/// is wrong with the VM, not how QEMU phrased it.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Nic(#[from] NicError),
    #[error(transparent)]
    Qemu(#[from] QemuError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("VM {vm:?} has no NIC {nic:?}")]
    NoSuchNic { vm: String, nic: String },
    #[error("VM {0:?} is already running")]
    AlreadyRunning(String),
    #[error("VM {0:?} is not running")]
    NotRunning(String),
    #[error("VM {0:?} is not paused")]
    NotPaused(String),
    #[error("VM {0:?} is already paused")]
    AlreadyPaused(String),
    #[error("VM {vm:?} cannot be suspended: {reason}")]
    SuspendRefused { vm: String, reason: String },
    #[error("VM {0:?} is running; stop it first")]
    StillRunning(String),
    #[error("VM {vm:?} has no {kind} console")]
    NoConsole { vm: String, kind: ConsoleKind },
    #[error("VM {0:?} is busy with another operation; try again")]
    Busy(String),
    #[error("VM {0:?} did not stop")]
    StopFailed(String),
    #[error("reading the screenshot of VM {vm:?}")]
    Screenshot {
        vm: String,
        #[source]
        source: std::io::Error,
    },
}

impl BackendError {
    /// Whether the error is about the caller's input or the VM's state (as opposed to a
    /// fault of the host).
    pub fn is_client_error(&self) -> bool {
        match self {
            BackendError::Spec(SpecError::Io { .. } | SpecError::Corrupt { .. }) => false,
            BackendError::Spec(SpecError::DiskCreate(_)) => false,
            BackendError::Spec(_) => true,
            BackendError::Nic(NicError::Sysfs { .. }) => false,
            BackendError::Nic(_) => true,
            // The guest agent is the guest's business: its silence or garbled answers
            // are a state of the VM, not a fault of the host.
            BackendError::Qemu(QemuError::KvmUnavailable)
            | BackendError::Qemu(QemuError::GuestAgentNotRunning(_))
            | BackendError::Qemu(QemuError::GuestAgent(_)) => true,
            BackendError::Qemu(_) => false,
            BackendError::Net(e) => e.is_client_error(),
            BackendError::StopFailed(_) | BackendError::Busy(_) => false,
            BackendError::Screenshot { .. } => false,
            _ => true,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            BackendError::Spec(SpecError::NotFound(_)) | BackendError::NoSuchNic { .. }
        ) || matches!(self, BackendError::Net(e) if e.is_not_found())
    }
}

/// A VM's run state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    Stopped,
    Running,
    Paused,
    /// QEMU runs but the guest is in another state (shutting down, crashed, …).
    Other,
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VmState::Stopped => "stopped",
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Other => "other",
        })
    }
}

/// A power action, as named in the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerAction {
    Start,
    Shutdown,
    Poweroff,
    Reset,
    Suspend,
    Resume,
}

impl std::str::FromStr for PowerAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "start" => PowerAction::Start,
            "shutdown" => PowerAction::Shutdown,
            "poweroff" => PowerAction::Poweroff,
            "reset" => PowerAction::Reset,
            "suspend" => PowerAction::Suspend,
            "resume" => PowerAction::Resume,
            o => return Err(format!("unknown action {o:?}")),
        })
    }
}

/// What the backend reports about one VM.
#[derive(Debug, Clone, Serialize)]
pub struct VmInfo {
    pub spec: VmSpec,
    pub state: VmState,
    /// QEMU's own run state name when running (`running`, `paused`, `shutdown`, …).
    pub qemu_status: Option<String>,
    pub pid: Option<i32>,
    /// Why the VM last stopped, when known.
    pub exit_reason: Option<String>,
    pub consoles: Vec<ConsoleEndpoint>,
    pub suspendable: bool,
    pub live_migratable: bool,
    pub ha_eligible: bool,
}

/// Something that happened to a VM, for listeners such as the gateway's sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmEvent {
    pub vm: String,
    pub event: String,
}

/// Largest screenshot read back (a PNG of an 8K screen of noise is about 130 MiB; real
/// screens compress far below this).
pub const MAX_SCREENSHOT_BYTES: u64 = 64 << 20;

/// Reads a file of at most `cap` bytes.
async fn read_capped(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let f = tokio::fs::File::open(path).await?;
    let mut buf = Vec::new();
    f.take(cap + 1).read_to_end(&mut buf).await?;
    if buf.len() as u64 > cap {
        return Err(std::io::Error::other(format!("larger than {cap} bytes")));
    }
    Ok(buf)
}

/// The public API of the backend: the one thing the gateway depends on.
#[async_trait]
pub trait VmBackend: Send + Sync + std::fmt::Debug {
    async fn list(&self) -> Result<Vec<VmInfo>, BackendError>;
    async fn get(&self, name: &str) -> Result<VmInfo, BackendError>;
    async fn define(&self, def: VmDefinition) -> Result<VmSpec, BackendError>;
    async fn undefine(&self, name: &str) -> Result<(), BackendError>;
    async fn power(&self, name: &str, action: PowerAction) -> Result<VmInfo, BackendError>;
    /// The socket of a running VM's console.
    async fn console(&self, name: &str, kind: ConsoleKind)
        -> Result<ConsoleEndpoint, BackendError>;
    async fn guest_addresses(&self, name: &str) -> Result<Vec<GuestAddress>, BackendError>;
    /// A PNG of a running VM's screen, as QEMU renders it (QMP `screendump`).
    async fn screenshot(&self, name: &str) -> Result<Vec<u8>, BackendError>;
    /// Events of all VMs (state changes seen on QMP).
    fn subscribe(&self) -> broadcast::Receiver<VmEvent>;
    /// Adds a NIC to a VM's spec, hot-plugging it when the VM runs.
    async fn add_nic(&self, vm: &str, req: NicRequest) -> Result<NicSpec, BackendError>;
    /// Removes a NIC from a VM's spec, unplugging it when the VM runs.
    async fn remove_nic(&self, vm: &str, nic_id: &str) -> Result<NicSpec, BackendError>;
    /// Virtual switches and bonds, whatever implements them.
    fn network(&self) -> &dyn Network;
}

/// Settings of the QEMU backend. Every timeout is named here with its default.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// Holds `vms/` (specs) and, unless `run_dir` is set, `run/`.
    pub data_dir: PathBuf,
    /// Where each VM's private run directory lives (`DATA/run` by default). Unix socket
    /// paths must stay under 108 bytes, so keep it short.
    pub run_dir: PathBuf,
    /// The QEMU binary (`qemu-system-x86_64`).
    pub qemu_binary: PathBuf,
    /// `qemu-img`, to create disk images.
    pub qemu_img: PathBuf,
    /// How long `shutdown` waits for the guest to honour ACPI before forcing it off.
    pub shutdown_grace: Duration,
    /// How long to wait for QEMU to start (daemonize) and for QMP answers.
    pub qemu_timeout: Duration,
    /// How long the guest agent may take to answer before it counts as not running.
    pub guest_agent_timeout: Duration,
    /// How long a power action waits for another one on the same VM to finish.
    pub lock_timeout: Duration,
    /// Root of sysfs, for SR-IOV discovery (`/sys`).
    pub sysfs_root: PathBuf,
    /// Listen to each running VM's QMP events (long-running processes such as the
    /// gateway; one-shot CLI commands leave it off).
    pub watch_events: bool,
    /// Which Open vSwitch daemons run the vSwitches (system, or our own private ones).
    pub ovs_mode: OvsMode,
    /// The datapath of new vSwitches (kernel when the module is loaded, else netdev).
    pub datapath: Datapath,
}

impl BackendConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> BackendConfig {
        let data_dir = data_dir.into();
        BackendConfig {
            run_dir: data_dir.join("run"),
            data_dir,
            qemu_binary: PathBuf::from("qemu-system-x86_64"),
            qemu_img: PathBuf::from("qemu-img"),
            shutdown_grace: Duration::from_secs(60),
            qemu_timeout: Duration::from_secs(30),
            guest_agent_timeout: Duration::from_secs(3),
            lock_timeout: Duration::from_secs(120),
            sysfs_root: PathBuf::from("/sys"),
            watch_events: false,
            ovs_mode: OvsMode::Auto,
            datapath: Datapath::Auto,
        }
    }

    /// The network manager's settings derived from these.
    pub fn net_config(&self) -> NetConfig {
        let mut c = NetConfig::new(&self.data_dir, &self.run_dir);
        c.ovs_mode = self.ovs_mode;
        c.datapath = self.datapath;
        c.sysfs_root = self.sysfs_root.clone();
        c
    }
}

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

use crate::util::lockfile::FileLock;

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

    fn watch(&self, spec: &VmSpec) {
        if !self.inner.cfg.watch_events {
            return;
        }
        {
            let Ok(mut w) = self.inner.watched.lock() else {
                return;
            };
            if !w.insert(spec.name.clone()) {
                return;
            }
        }
        let this = self.clone();
        let name = spec.name.clone();
        tokio::spawn(async move {
            let run = this.run_dir(&name);
            let tx = this.inner.events.clone();
            let reason_path = run.exit_reason();
            let res = qemu::watch_events(&run.qmp_events(), this.inner.cfg.qemu_timeout, |ev| {
                use qapi::qmp::Event;
                let text = match &ev {
                    Event::SHUTDOWN { data, .. } => {
                        let reason = serde_json::to_value(data.reason)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default();
                        let why = if data.guest {
                            format!("the guest powered off ({reason})")
                        } else {
                            format!("stopped by the host ({reason})")
                        };
                        let _ = std::fs::write(&reason_path, &why);
                        "shutdown".to_owned()
                    }
                    Event::STOP { .. } => "paused".to_owned(),
                    Event::RESUME { .. } => "running".to_owned(),
                    Event::RESET { .. } => "reset".to_owned(),
                    Event::POWERDOWN { .. } => "powerdown".to_owned(),
                    _ => return,
                };
                let _ = tx.send(VmEvent {
                    vm: name.clone(),
                    event: text,
                });
            })
            .await;
            if let Err(e) = res {
                tracing::debug!(vm = %name, error = %e, "event monitor unavailable");
            }
            let _ = tx.send(VmEvent {
                vm: name.clone(),
                event: "stopped".to_owned(),
            });
            if let Ok(mut w) = this.inner.watched.lock() {
                w.remove(&name);
            }
        });
    }

    async fn qmp(&self, run: &RunDir) -> Result<Qmp, BackendError> {
        Ok(Qmp::connect(&run.qmp(), self.inner.cfg.qemu_timeout).await?)
    }

    async fn info(&self, spec: VmSpec) -> Result<VmInfo, BackendError> {
        let run = self.run_dir(&spec.name);
        let pid = qemu::live_pid(&run, &spec.uuid);
        let (state, qemu_status) = match pid {
            None => (VmState::Stopped, None),
            Some(_) => match self.qmp(&run).await {
                Ok(mut q) => match q.execute(qapi::qmp::query_status {}).await {
                    Ok(st) => {
                        use qapi::qmp::RunState as R;
                        let name = serde_json::to_value(st.status)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned));
                        let state = match st.status {
                            R::running => VmState::Running,
                            R::paused | R::suspended => VmState::Paused,
                            _ => VmState::Other,
                        };
                        (state, name)
                    }
                    Err(_) => (VmState::Other, None),
                },
                // QEMU is exiting or busy with another client.
                Err(_) => (VmState::Other, None),
            },
        };
        let exit_reason = if state == VmState::Stopped {
            std::fs::read_to_string(run.exit_reason())
                .ok()
                .map(|s| s.trim().to_owned())
                .or_else(|| {
                    run.qemu_log()
                        .exists()
                        .then(|| qemu::last_log_line(&run))
                        .flatten()
                        .filter(|l| l.contains("terminating"))
                })
        } else {
            None
        };
        let consoles = if state == VmState::Stopped {
            Vec::new()
        } else {
            let mut c = Vec::new();
            if spec.console.has_vnc() {
                c.push(ConsoleEndpoint {
                    kind: ConsoleKind::Vnc,
                    socket: run.vnc(),
                });
            }
            if spec.console.has_spice() {
                c.push(ConsoleEndpoint {
                    kind: ConsoleKind::Spice,
                    socket: run.spice(),
                });
            }
            c
        };
        Ok(VmInfo {
            suspendable: spec.suspend_blocker().is_none(),
            live_migratable: spec.live_migratable(),
            ha_eligible: spec.ha_eligible(),
            state,
            qemu_status,
            pid,
            exit_reason,
            consoles,
            spec,
        })
    }

    /// VFs held by other running VMs.
    fn vfs_in_use(&self, except: &str) -> Vec<String> {
        let mut out = Vec::new();
        for spec in self.inner.specs.list().unwrap_or_default() {
            if spec.name == except {
                continue;
            }
            let run = self.run_dir(&spec.name);
            if qemu::live_pid(&run, &spec.uuid).is_none() {
                continue;
            }
            if let Ok(s) = std::fs::read_to_string(run.dir.join("vfs")) {
                out.extend(
                    s.lines()
                        .filter_map(|l| l.split_once(' '))
                        .map(|(_, a)| a.to_owned()),
                );
            }
        }
        out
    }

    async fn start(&self, spec: &VmSpec) -> Result<(), BackendError> {
        let run = self.run_dir(&spec.name);
        if qemu::live_pid(&run, &spec.uuid).is_some() {
            return Err(BackendError::AlreadyRunning(spec.name.clone()));
        }
        let accel = qemu::resolve_accel(spec.accel)?;
        match &spec.boot {
            BootSource::Kernel { kernel, initrd, .. } => {
                if !kernel.is_file() {
                    return Err(SpecError::MissingKernel(kernel.clone()).into());
                }
                if let Some(i) = initrd.as_ref().filter(|i| !i.is_file()) {
                    return Err(SpecError::MissingInitrd(i.clone()).into());
                }
            }
            BootSource::Disk { path, .. } if !path.is_file() => {
                return Err(SpecError::MissingDisk(path.clone()).into());
            }
            _ => {}
        }
        let mut vfs = Vec::new();
        let sysfs = Sysfs::new(&self.inner.cfg.sysfs_root);
        let mut in_use = self.vfs_in_use(&spec.name);
        for nic in spec.nics.iter().filter(|n| n.model == NicModel::Sriov) {
            let pf = nic.pf.as_deref().ok_or(NicError::SriovWithoutPf)?;
            let vf = sysfs.free_vf(pf, &in_use)?;
            in_use.push(vf.pci_address.clone());
            vfs.push(VfAssignment {
                nic_id: nic.id.clone(),
                pci_address: vf.pci_address,
            });
        }
        run.prepare()?;
        // Held until QEMU has opened the taps, so no reconcile removes them meanwhile.
        let (taps, net_lock) = self.inner.net.plug(&spec.name, &spec.nics).await?;
        if !vfs.is_empty() {
            let text: String = vfs
                .iter()
                .map(|v| format!("{} {}\n", v.nic_id, v.pci_address))
                .collect();
            crate::spec::store::write_atomic(&run.dir.join("vfs"), text.as_bytes())?;
        }
        let args = qemu::command_line(spec, &run, accel, &vfs, &taps);
        if let Err(e) = qemu::spawn(
            &self.inner.cfg.qemu_binary,
            args,
            &run,
            self.inner.cfg.qemu_timeout,
        )
        .await
        {
            run.clear_runtime();
            let _ = std::fs::remove_file(run.dir.join("vfs"));
            drop(net_lock);
            if let Err(ne) = self.inner.net.unplug(&spec.name, &spec.nics).await {
                tracing::warn!(vm = %spec.name, error = %ne, "removing the VM's taps failed");
            }
            return Err(e.into());
        }
        drop(net_lock);
        tracing::info!(vm = %spec.name, accel, "started");
        self.watch(spec);
        Ok(())
    }

    /// Stops QEMU: `quit` over QMP, then SIGTERM, then SIGKILL.
    async fn force_off(&self, spec: &VmSpec, pid: i32, reason: &str) -> Result<(), BackendError> {
        let run = self.run_dir(&spec.name);
        if let Ok(mut q) = self.qmp(&run).await {
            // QEMU may close the socket before answering `quit`.
            let _ = q.execute(qapi::qmp::quit {}).await;
        }
        if !qemu::wait_gone(pid, &spec.uuid, Duration::from_secs(5)).await {
            qemu::signal(pid, &spec.uuid, nix::sys::signal::Signal::SIGTERM);
            if !qemu::wait_gone(pid, &spec.uuid, Duration::from_secs(5)).await {
                qemu::signal(pid, &spec.uuid, nix::sys::signal::Signal::SIGKILL);
                if !qemu::wait_gone(pid, &spec.uuid, Duration::from_secs(5)).await {
                    return Err(BackendError::StopFailed(spec.name.clone()));
                }
            }
        }
        self.stopped(&run, reason);
        self.unplug_all(spec).await;
        Ok(())
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

    /// Adds a NIC to a VM. It is saved in the VM's spec and, when the VM runs,
    /// hot-plugged (QMP `netdev_add` + `device_add`; a vSwitch NIC gets its tap port
    /// first). The MAC is derived when not given. On any failure the VM and its spec
    /// are left as they were.
    pub async fn attach_nic(&self, name: &str, req: NicRequest) -> Result<NicSpec, BackendError> {
        req.validate()?;
        let _specs = self.lock_specs().await?;
        let all = self.inner.specs.list()?;
        let old = self.inner.specs.get(name)?;
        let _vm = self.lock_vm(name).await?;
        if old.nics.len() >= crate::spec::vm::MAX_NICS {
            return Err(SpecError::TooManyNics(old.nics.len() + 1).into());
        }
        if let Some((switch, _)) = req.attach.switch() {
            if !self.inner.net.state()?.switches.contains_key(switch) {
                return Err(NetError::NoSuchSwitch(switch.to_owned()).into());
            }
        }
        let taken: Vec<(MacAddr, &str)> = all
            .iter()
            .flat_map(|s| s.nics.iter().map(move |n| (n.mac, s.name.as_str())))
            .collect();
        let index = (0..)
            .find(|i| !old.nics.iter().any(|n| n.id == format!("nic{i}")))
            .unwrap_or(old.nics.len());
        let mac = match req.mac {
            Some(m) => {
                if let Some((_, vm)) = taken.iter().find(|(t, _)| *t == m) {
                    return Err(if *vm == name {
                        SpecError::DuplicateMacInVm { mac: m }
                    } else {
                        SpecError::DuplicateMac {
                            mac: m,
                            vm: (*vm).to_owned(),
                        }
                    }
                    .into());
                }
                m
            }
            None => (0u32..)
                .map(|salt| MacAddr::derive(&old.uuid, index, salt))
                .find(|m| !taken.iter().any(|(t, _)| t == m))
                .unwrap_or_else(|| MacAddr::derive(&old.uuid, index, u32::MAX)),
        };
        let nic = NicSpec {
            id: format!("nic{index}"),
            model: req.model,
            mac,
            attach: req.attach,
            pf: req.pf,
        };
        let mut new = old.clone();
        new.nics.push(nic.clone());
        self.inner.specs.put(&new)?;
        let run = self.run_dir(name);
        if qemu::live_pid(&run, &new.uuid).is_some() {
            if let Err(e) = self.hotplug(&run, name, &nic).await {
                if let Err(pe) = self.inner.specs.put(&old) {
                    tracing::error!(vm = %name, error = %pe, "restoring the VM spec failed");
                }
                return Err(e);
            }
            tracing::info!(vm = %name, nic = %nic.id, model = %nic.model, "NIC hot-plugged");
        }
        Ok(nic)
    }

    async fn hotplug(&self, run: &RunDir, name: &str, nic: &NicSpec) -> Result<(), BackendError> {
        let (taps, lock) = self.inner.net.plug(name, std::slice::from_ref(nic)).await?;
        let result = async {
            let mut q = self.qmp(run).await?;
            crate::net::hotplug::plug(&mut q, nic, taps.first()).await?;
            Ok::<(), BackendError>(())
        }
        .await;
        drop(lock);
        if result.is_err() {
            if let Err(e) = self.inner.net.unplug(name, std::slice::from_ref(nic)).await {
                tracing::warn!(vm = %name, error = %e, "removing the NIC's tap failed");
            }
        }
        result
    }

    /// Removes a NIC from a VM: hot-unplugged when the VM runs (the guest must release
    /// it, within the QEMU timeout), its tap port removed, and dropped from the spec.
    pub async fn detach_nic(&self, name: &str, nic_id: &str) -> Result<NicSpec, BackendError> {
        let _specs = self.lock_specs().await?;
        let mut spec = self.inner.specs.get(name)?;
        let _vm = self.lock_vm(name).await?;
        let idx = spec
            .nics
            .iter()
            .position(|n| n.id == nic_id)
            .ok_or_else(|| BackendError::NoSuchNic {
                vm: name.to_owned(),
                nic: nic_id.chars().take(40).collect(),
            })?;
        let nic = spec.nics[idx].clone();
        let run = self.run_dir(name);
        if qemu::live_pid(&run, &spec.uuid).is_some() {
            if nic.model == NicModel::Sriov {
                return Err(QemuError::Qmp {
                    command: "device_del",
                    message: "an SR-IOV NIC cannot be hot-unplugged; stop the VM first".into(),
                }
                .into());
            }
            let mut q = self.qmp(&run).await?;
            crate::net::hotplug::unplug(&mut q, &nic.id, self.inner.cfg.qemu_timeout).await?;
            drop(q);
            self.inner
                .net
                .unplug(name, std::slice::from_ref(&nic))
                .await?;
            tracing::info!(vm = %name, nic = %nic.id, "NIC hot-unplugged");
        }
        spec.nics.remove(idx);
        self.inner.specs.put(&spec)?;
        Ok(nic)
    }

    /// ACPI power button, then force after `grace`.
    pub async fn shutdown_with_grace(
        &self,
        name: &str,
        grace: Duration,
    ) -> Result<VmInfo, BackendError> {
        let spec = self.inner.specs.get(name)?;
        let _lock = self.lock_vm(name).await?;
        let run = self.run_dir(name);
        let pid = qemu::live_pid(&run, &spec.uuid)
            .ok_or_else(|| BackendError::NotRunning(name.to_owned()))?;
        let mut q = self.qmp(&run).await?;
        q.execute(qapi::qmp::system_powerdown {}).await?;
        drop(q);
        if qemu::wait_gone(pid, &spec.uuid, grace).await {
            self.stopped(
                &run,
                "shut down by the guest after an ACPI power-button request",
            );
            self.unplug_all(&spec).await;
        } else {
            tracing::info!(vm = %name, ?grace, "guest ignored ACPI shutdown; forcing off");
            self.force_off(
                &spec,
                pid,
                &format!(
                    "forced off: the guest did not shut down within the {}s grace period",
                    grace.as_secs()
                ),
            )
            .await?;
        }
        drop(_lock);
        self.info(spec).await
    }
}

#[async_trait]
impl VmBackend for QemuBackend {
    async fn list(&self) -> Result<Vec<VmInfo>, BackendError> {
        let mut out = Vec::new();
        for spec in self.inner.specs.list()? {
            out.push(self.info(spec).await?);
        }
        Ok(out)
    }

    async fn get(&self, name: &str) -> Result<VmInfo, BackendError> {
        let spec = self.inner.specs.get(name)?;
        self.info(spec).await
    }

    async fn define(&self, def: VmDefinition) -> Result<VmSpec, BackendError> {
        def.validate_shape()?;
        let _lock = self.lock_specs().await?;
        let others = self.inner.specs.list()?;
        let spec = def.into_spec(&others)?;
        let mut created_disk = None;
        if let BootSource::Disk {
            path,
            create_size_mib: Some(size),
        } = &spec.boot
        {
            let out = tokio::process::Command::new(&self.inner.cfg.qemu_img)
                .arg("create")
                .arg("-q")
                .arg("-f")
                .arg("qcow2")
                .arg(path)
                .arg(format!("{size}M"))
                .output()
                .await
                .map_err(|e| SpecError::DiskCreate(e.to_string()))?;
            if !out.status.success() {
                let msg = String::from_utf8_lossy(&out.stderr);
                return Err(SpecError::DiskCreate(msg.trim().chars().take(300).collect()).into());
            }
            created_disk = Some(path.clone());
        }
        if let Err(e) = self.inner.specs.put(&spec) {
            if let Some(p) = created_disk {
                let _ = std::fs::remove_file(p);
            }
            return Err(e.into());
        }
        tracing::info!(vm = %spec.name, "defined");
        Ok(spec)
    }

    async fn undefine(&self, name: &str) -> Result<(), BackendError> {
        let _lock = self.lock_specs().await?;
        let spec = self.inner.specs.get(name)?;
        let _vm = self.lock_vm(name).await?;
        let run = self.run_dir(name);
        if qemu::live_pid(&run, &spec.uuid).is_some() {
            return Err(BackendError::StillRunning(name.to_owned()));
        }
        self.inner.specs.remove(name)?;
        let _ = std::fs::remove_dir_all(&run.dir);
        let _ = std::fs::remove_file(run.lock());
        tracing::info!(vm = %name, "undefined");
        Ok(())
    }

    async fn power(&self, name: &str, action: PowerAction) -> Result<VmInfo, BackendError> {
        if action == PowerAction::Shutdown {
            return self
                .shutdown_with_grace(name, self.inner.cfg.shutdown_grace)
                .await;
        }
        let spec = self.inner.specs.get(name)?;
        if action == PowerAction::Suspend {
            // A property of the VM, whatever its state.
            if let Some(reason) = spec.suspend_blocker() {
                return Err(BackendError::SuspendRefused {
                    vm: name.to_owned(),
                    reason,
                });
            }
        }
        let lock = self.lock_vm(name).await?;
        let run = self.run_dir(name);
        let pid = qemu::live_pid(&run, &spec.uuid);
        match (action, pid) {
            (PowerAction::Start, _) => self.start(&spec).await?,
            (_, None) => return Err(BackendError::NotRunning(name.to_owned())),
            (PowerAction::Poweroff, Some(pid)) => {
                self.force_off(&spec, pid, "powered off by the administrator")
                    .await?
            }
            (PowerAction::Reset, Some(_)) => {
                self.qmp(&run)
                    .await?
                    .execute(qapi::qmp::system_reset {})
                    .await?;
            }
            (PowerAction::Suspend, Some(_)) => {
                let mut q = self.qmp(&run).await?;
                let st = q.execute(qapi::qmp::query_status {}).await?;
                if !st.running {
                    return Err(BackendError::AlreadyPaused(name.to_owned()));
                }
                q.execute(qapi::qmp::stop {}).await?;
            }
            (PowerAction::Resume, Some(_)) => {
                let mut q = self.qmp(&run).await?;
                let st = q.execute(qapi::qmp::query_status {}).await?;
                if st.running {
                    return Err(BackendError::NotPaused(name.to_owned()));
                }
                q.execute(qapi::qmp::cont {}).await?;
            }
            // Handled by `shutdown_with_grace` above.
            (PowerAction::Shutdown, Some(_)) => {}
        }
        drop(lock);
        tracing::info!(vm = %name, ?action, "power action done");
        self.info(spec).await
    }

    async fn console(
        &self,
        name: &str,
        kind: ConsoleKind,
    ) -> Result<ConsoleEndpoint, BackendError> {
        let spec = self.inner.specs.get(name)?;
        let has = match kind {
            ConsoleKind::Vnc => spec.console.has_vnc(),
            ConsoleKind::Spice => spec.console.has_spice(),
        };
        if !has {
            return Err(BackendError::NoConsole {
                vm: name.to_owned(),
                kind,
            });
        }
        let run = self.run_dir(name);
        if qemu::live_pid(&run, &spec.uuid).is_none() {
            return Err(BackendError::NotRunning(name.to_owned()));
        }
        Ok(ConsoleEndpoint {
            kind,
            socket: match kind {
                ConsoleKind::Vnc => run.vnc(),
                ConsoleKind::Spice => run.spice(),
            },
        })
    }

    async fn guest_addresses(&self, name: &str) -> Result<Vec<GuestAddress>, BackendError> {
        let spec = self.inner.specs.get(name)?;
        let run = self.run_dir(name);
        if qemu::live_pid(&run, &spec.uuid).is_none() {
            return Err(BackendError::NotRunning(name.to_owned()));
        }
        // The agent's socket takes one client at a time; queue ours instead of letting
        // two callers garble each other's exchanges.
        let gate = {
            let mut gates = self
                .inner
                .qga_gates
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            gates.entry(name.to_owned()).or_default().clone()
        };
        let _turn = gate.lock().await;
        Ok(qemu::guest_addresses(&run.qga(), self.inner.cfg.guest_agent_timeout).await?)
    }

    async fn screenshot(&self, name: &str) -> Result<Vec<u8>, BackendError> {
        let spec = self.inner.specs.get(name)?;
        let run = self.run_dir(name);
        if qemu::live_pid(&run, &spec.uuid).is_none() {
            return Err(BackendError::NotRunning(name.to_owned()));
        }
        // QEMU writes the file itself, into the VM's private run directory.
        let file = run
            .dir
            .join(format!("screendump-{}.png", uuid::Uuid::new_v4().simple()));
        let mut q = self.qmp(&run).await?;
        let done = q
            .execute(qapi::qmp::screendump {
                filename: file.to_string_lossy().into_owned(),
                format: Some(qapi::qmp::ImageFormat::png),
                device: None,
                head: None,
            })
            .await;
        let read = match done {
            Ok(_) => read_capped(&file, MAX_SCREENSHOT_BYTES).await,
            Err(e) => {
                let _ = tokio::fs::remove_file(&file).await;
                return Err(e.into());
            }
        };
        let _ = tokio::fs::remove_file(&file).await;
        read.map_err(|source| BackendError::Screenshot {
            vm: name.to_owned(),
            source,
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<VmEvent> {
        self.inner.events.subscribe()
    }

    async fn add_nic(&self, vm: &str, req: NicRequest) -> Result<NicSpec, BackendError> {
        self.attach_nic(vm, req).await
    }

    async fn remove_nic(&self, vm: &str, nic_id: &str) -> Result<NicSpec, BackendError> {
        self.detach_nic(vm, nic_id).await
    }

    fn network(&self) -> &dyn Network {
        self.net()
    }
}
