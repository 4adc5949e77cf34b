//! Settings of the network manager, and the datapath new vSwitches get.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::ovs::OvsMode;

/// Which datapath new bridges use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Datapath {
    /// `system` (kernel) when the `openvswitch` module is loaded, else `netdev`.
    #[default]
    Auto,
    Kernel,
    Netdev,
}

impl Datapath {
    /// The OVS `datapath_type` value.
    pub fn resolve(self) -> &'static str {
        match self {
            Datapath::Kernel => "system",
            Datapath::Netdev => "netdev",
            Datapath::Auto if Path::new("/sys/module/openvswitch").exists() => "system",
            Datapath::Auto => "netdev",
        }
    }
}

/// Settings of the network manager.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// The VM data directory (`vms/` are read for VM ports; `net/state.json` is ours).
    pub data_dir: PathBuf,
    /// The VMs' run root, to tell running VMs.
    pub vm_run_dir: PathBuf,
    /// Private OVS daemons' run directory (sockets: keep the path short).
    pub ovs_run_dir: PathBuf,
    pub ovs_mode: OvsMode,
    pub datapath: Datapath,
    /// Root of sysfs, for host interfaces (`/sys`).
    pub sysfs_root: PathBuf,
    /// Timeout of each OVS command and of the configuration lock.
    pub timeout: Duration,
}

impl NetConfig {
    pub fn new(data_dir: &Path, vm_run_dir: &Path) -> NetConfig {
        NetConfig {
            data_dir: data_dir.to_owned(),
            vm_run_dir: vm_run_dir.to_owned(),
            ovs_run_dir: vm_run_dir.join(".ovs"),
            ovs_mode: OvsMode::Auto,
            datapath: Datapath::Auto,
            sysfs_root: PathBuf::from("/sys"),
            timeout: Duration::from_secs(20),
        }
    }

    pub(super) fn state_path(&self) -> PathBuf {
        self.data_dir.join("net/state.json")
    }

    pub(super) fn lock_path(&self) -> PathBuf {
        self.data_dir.join("net/.lock")
    }
}
