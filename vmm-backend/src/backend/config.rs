//! Settings of the QEMU backend.

use std::path::PathBuf;
use std::time::Duration;

use crate::net::{Datapath, NetConfig, OvsMode};

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
