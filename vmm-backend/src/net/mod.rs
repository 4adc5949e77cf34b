//! Virtual switches, bonds and VM ports on Open vSwitch.
//!
//! * A **vSwitch** is an OVS bridge (kernel datapath when the `openvswitch` module is
//!   loaded, else the userspace `netdev` datapath). It is *external* when it has
//!   uplinks — host interfaces as plain ports, or bonds — and *private* (VM-to-VM only)
//!   otherwise.
//! * A **bond** is an OVS bond port of two or more host interfaces on a vSwitch, in
//!   `active-backup`, `balance-slb` or `balance-tcp` mode (the last one with LACP,
//!   falling back to active-backup when the partner does not speak it). Members are
//!   watched by carrier.
//! * A **VM port** is a tap device `vt<mac>` on a vSwitch, created when the VM starts
//!   (or the NIC is hot-plugged) and removed when it stops, optionally an access port of
//!   one VLAN. VM NICs say where they attach in their spec ([`NicAttachment::Switch`]).
//!
//! The desired state (switches and bonds; VM ports come from the VM specs) persists in
//! `DATA/net/state.json`. Every change computes the full plan against what OVS has and
//! applies it as one OVSDB transaction, then saves the state: a failure half-way leaves
//! the previous state in OVS and on disk. [`NetManager::reconcile`] (call it once at
//! process start) applies the saved state; a second run finds nothing to do.
//!
//! When no system OVS runs, the manager starts its own `ovsdb-server` and `ovs-vswitchd`
//! in a private run directory ([`NetConfig::ovs_run_dir`]); they outlive the process
//! (like the VMs) and [`NetManager::stop_daemons`] stops them.
//!
//! [`NicAttachment::Switch`]: crate::spec::nic::NicAttachment::Switch

pub mod host;
pub mod hotplug;
pub mod ovs;
pub mod plan;
pub mod state;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

pub use host::{HostError, HostIfaces};
pub use ovs::{BondRuntime, MemberStatus, Ovs, OvsError, OvsMode};
pub use state::{
    tap_name, valid_ifname, BondMode, BondSpec, NetState, StateError, SwitchSpec, VmPort,
};

use crate::qemu::{RunDir, TapAssignment};
use crate::spec::nic::NicSpec;
use crate::spec::SpecStore;

/// Errors of the network API. Messages are for operators and API clients.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Ovs(#[from] OvsError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("invalid {what} name {name:?}: use 1-15 letters, digits, '.', '_' or '-', starting with a letter or digit")]
    InvalidName { what: &'static str, name: String },
    #[error("a vSwitch named {0:?} already exists")]
    SwitchExists(String),
    #[error("a bond named {0:?} already exists")]
    BondExists(String),
    #[error("the name {name:?} is already taken by {by}")]
    NameTaken { name: String, by: String },
    #[error("no vSwitch named {0:?}")]
    NoSuchSwitch(String),
    #[error("no bond named {0:?}")]
    NoSuchBond(String),
    #[error("vSwitch {switch:?} is used by VM(s) {}; detach their NICs first", vms.join(", "))]
    SwitchInUse { switch: String, vms: Vec<String> },
    #[error("bond {bond:?} needs at least two members, got {count}")]
    TooFewMembers { bond: String, count: usize },
    #[error("interface {0:?} is listed twice")]
    DuplicateMember(String),
    #[error("no host interface named {0:?}")]
    NoSuchInterface(String),
    #[error("interface {iface:?} is already used by {by}")]
    InterfaceInUse { iface: String, by: String },
    #[error("a bond mode needs at least two uplinks")]
    BondModeWithoutBond,
    #[error("the network configuration is busy with another operation; try again")]
    Busy,
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl NetError {
    /// Whether the error is about the caller's input or the configuration's state (as
    /// opposed to a fault of the host).
    pub fn is_client_error(&self) -> bool {
        !matches!(
            self,
            NetError::Ovs(_)
                | NetError::Host(_)
                | NetError::Io { .. }
                | NetError::Busy
                | NetError::State(StateError::Io { .. } | StateError::Corrupt { .. })
        )
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, NetError::NoSuchSwitch(_) | NetError::NoSuchBond(_))
    }
}

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

    fn state_path(&self) -> PathBuf {
        self.data_dir.join("net/state.json")
    }

    fn lock_path(&self) -> PathBuf {
        self.data_dir.join("net/.lock")
    }
}

/// What to create: a private vSwitch (no uplinks), one with a plain uplink, or one whose
/// two or more uplinks form a bond (named `bond_name`, default `<name>-bond`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchRequest {
    pub name: String,
    #[serde(default)]
    pub uplinks: Vec<String>,
    #[serde(default)]
    pub bond_mode: Option<BondMode>,
    #[serde(default)]
    pub bond_name: Option<String>,
}

/// A new bond on an existing vSwitch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BondRequest {
    pub name: String,
    pub switch: String,
    pub members: Vec<String>,
    #[serde(default)]
    pub mode: BondMode,
}

/// External (has uplinks) or private.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SwitchKind {
    External,
    Private,
}

/// A VM NIC defined on a vSwitch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SwitchPortInfo {
    pub vm: String,
    pub nic: String,
    pub mac: String,
    pub vlan: Option<u16>,
    pub tap: String,
    /// The VM runs, so the tap port exists.
    pub active: bool,
}

/// What the API reports about one vSwitch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SwitchInfo {
    pub name: String,
    pub kind: SwitchKind,
    pub datapath: String,
    pub uplinks: Vec<String>,
    pub bonds: Vec<String>,
    pub ports: Vec<SwitchPortInfo>,
}

/// A bond's configuration and run-time state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BondStatus {
    #[serde(flatten)]
    pub spec: BondSpec,
    /// Whether LACP is enabled (balance-tcp).
    pub lacp: bool,
    /// The member carrying traffic now (active-backup, or the fallback of balance-tcp).
    pub active: Option<String>,
    pub members: Vec<MemberStatus>,
    /// OVS's LACP status (`off`, `negotiated`, `configured`).
    pub lacp_status: String,
}

/// What [`NetManager::reconcile`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct ReconcileReport {
    /// OVS commands applied (0: OVS already matched).
    pub ovs_commands: usize,
    /// Leftover tap devices of stopped VMs that were removed.
    pub removed_taps: Vec<String>,
}

/// An exclusive lock on the network configuration (across processes), released on drop.
#[derive(Debug)]
pub struct NetLock {
    _lock: crate::util::lockfile::FileLock,
}

/// Virtual switches and bonds of this host. Cheap to clone.
#[derive(Debug, Clone)]
pub struct NetManager {
    cfg: NetConfig,
    specs: SpecStore,
    hosts: HostIfaces,
}

impl NetManager {
    /// Opens the configuration. Starts nothing: daemons start on first use.
    pub fn open(cfg: NetConfig) -> Result<NetManager, NetError> {
        let dir = cfg.data_dir.join("net");
        std::fs::create_dir_all(&dir).map_err(|source| NetError::Io {
            op: "creating",
            path: dir.clone(),
            source,
        })?;
        NetState::load(&cfg.state_path())?;
        let specs = SpecStore::open(&cfg.data_dir).map_err(|e| NetError::Io {
            op: "opening the VM definitions in",
            path: cfg.data_dir.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(NetManager {
            hosts: HostIfaces::new(&cfg.sysfs_root),
            cfg,
            specs,
        })
    }

    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }

    /// The datapath type new bridges get (`system` or `netdev`).
    pub fn datapath(&self) -> &'static str {
        self.cfg.datapath.resolve()
    }

    /// The OVS daemons, started privately when needed.
    pub async fn ovs(&self) -> Result<Ovs, NetError> {
        Ok(Ovs::connect(self.cfg.ovs_mode, &self.cfg.ovs_run_dir, self.cfg.timeout).await?)
    }

    /// Stops the private OVS daemons of this data directory (never the system ones).
    /// The configuration stays; the next use starts them again and re-applies it.
    pub fn stop_daemons(&self) -> Result<(), NetError> {
        Ok(ovs::stop_private(&self.cfg.ovs_run_dir)?)
    }

    /// Takes the configuration lock (waits up to the configured timeout).
    pub async fn lock(&self) -> Result<NetLock, NetError> {
        let path = self.cfg.lock_path();
        match crate::util::lockfile::lock(&path, self.cfg.timeout).await {
            Ok(lock) => Ok(NetLock { _lock: lock }),
            Err(crate::util::lockfile::LockError::Busy) => Err(NetError::Busy),
            Err(crate::util::lockfile::LockError::Io(op, source)) => {
                Err(NetError::Io { op, path, source })
            }
        }
    }

    /// The saved desired state.
    pub fn state(&self) -> Result<NetState, NetError> {
        Ok(NetState::load(&self.cfg.state_path())?)
    }

    /// VM NICs defined on switches: (port, VM running).
    fn defined_ports(&self) -> Vec<(VmPort, bool)> {
        let mut out = Vec::new();
        for spec in self.specs.list().unwrap_or_default() {
            let running =
                crate::qemu::live_pid(&RunDir::new(&self.cfg.vm_run_dir, &spec.name), &spec.uuid)
                    .is_some();
            for nic in &spec.nics {
                if let Some(p) = vm_port(&spec.name, nic) {
                    out.push((p, running));
                }
            }
        }
        out
    }

    async fn actual(&self, ovs: &Ovs) -> Result<plan::Actual, NetError> {
        let bridges = ovs
            .list("Bridge", "name,ports,datapath_type,external_ids")
            .await?;
        let ports = ovs
            .list(
                "Port",
                "_uuid,name,interfaces,bond_mode,lacp,tag,other_config",
            )
            .await?;
        let ifaces = ovs.list("Interface", "_uuid,name").await?;
        Ok(plan::actual_from_rows(&bridges, &ports, &ifaces))
    }

    /// Makes OVS match `new` (with the ports of running VMs plus `extra`), as one
    /// transaction; returns the number of OVS commands run.
    async fn apply(&self, new: &NetState, extra: &[VmPort]) -> Result<usize, NetError> {
        let ovs = self.ovs().await?;
        let mut ports: Vec<VmPort> = self
            .defined_ports()
            .into_iter()
            .filter(|(p, running)| *running && new.switches.contains_key(&p.switch))
            .map(|(p, _)| p)
            .filter(|p| !extra.iter().any(|e| e.tap == p.tap))
            .collect();
        ports.extend(extra.iter().cloned());
        let actual = self.actual(&ovs).await?;
        let cmds = plan::plan(new, &ports, self.datapath(), &actual)?;
        if !cmds.is_empty() {
            tracing::debug!(commands = cmds.len(), "applying the network configuration");
            ovs.transaction(&cmds).await?;
        }
        Ok(cmds.len())
    }

    /// Applies `new` and saves it; on a failure to save, puts OVS back as it was.
    async fn commit(&self, old: &NetState, new: &NetState) -> Result<(), NetError> {
        self.apply(new, &[]).await?;
        if let Err(e) = new.save(&self.cfg.state_path()) {
            tracing::warn!(error = %e, "saving the network state failed; rolling back");
            if let Err(e2) = self.apply(old, &[]).await {
                tracing::error!(error = %e2, "rolling back the network configuration failed");
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// Checks that `iface` is a host interface nobody else uses.
    fn check_free_iface(
        &self,
        iface: &str,
        st: &NetState,
        actual: &plan::Actual,
    ) -> Result<(), NetError> {
        if !self.hosts.exists(iface) || iface == "lo" {
            return Err(NetError::NoSuchInterface(iface.chars().take(40).collect()));
        }
        if let Some(by) = st.user_of(iface) {
            return Err(NetError::InterfaceInUse {
                iface: iface.to_owned(),
                by,
            });
        }
        if st.switches.contains_key(iface) || actual.contains_key(iface) {
            return Err(NetError::InterfaceInUse {
                iface: iface.to_owned(),
                by: "Open vSwitch (it is a bridge)".into(),
            });
        }
        for (b, ab) in actual {
            if ab
                .ports
                .iter()
                .any(|(p, ap)| p == iface || ap.interfaces.contains(iface))
            {
                return Err(NetError::InterfaceInUse {
                    iface: iface.to_owned(),
                    by: format!("Open vSwitch bridge {b:?}"),
                });
            }
        }
        if let Some(m) = self.hosts.master(iface) {
            return Err(NetError::InterfaceInUse {
                iface: iface.to_owned(),
                by: format!("host master device {m:?}"),
            });
        }
        Ok(())
    }

    fn check_members(bond: &str, members: &[String]) -> Result<(), NetError> {
        if members.len() < 2 {
            return Err(NetError::TooFewMembers {
                bond: bond.to_owned(),
                count: members.len(),
            });
        }
        for (i, m) in members.iter().enumerate() {
            if members[..i].contains(m) {
                return Err(NetError::DuplicateMember(m.clone()));
            }
        }
        Ok(())
    }

    fn check_new_name(
        &self,
        what: &'static str,
        name: &str,
        st: &NetState,
        actual: &plan::Actual,
    ) -> Result<(), NetError> {
        if !valid_ifname(name) {
            return Err(NetError::InvalidName {
                what,
                name: name.chars().take(40).collect(),
            });
        }
        if st.switches.contains_key(name) {
            return Err(if what == "vSwitch" {
                NetError::SwitchExists(name.to_owned())
            } else {
                NetError::NameTaken {
                    name: name.to_owned(),
                    by: format!("vSwitch {name:?}"),
                }
            });
        }
        if st.bonds.contains_key(name) {
            return Err(if what == "bond" {
                NetError::BondExists(name.to_owned())
            } else {
                NetError::NameTaken {
                    name: name.to_owned(),
                    by: format!("bond {name:?}"),
                }
            });
        }
        if actual.contains_key(name) {
            return Err(NetError::NameTaken {
                name: name.to_owned(),
                by: "an Open vSwitch bridge not managed by vm-gateway".into(),
            });
        }
        if actual.values().any(|b| b.ports.contains_key(name)) {
            return Err(NetError::NameTaken {
                name: name.to_owned(),
                by: "an Open vSwitch port".into(),
            });
        }
        if self.hosts.exists(name) {
            return Err(NetError::NameTaken {
                name: name.to_owned(),
                by: "a host network interface".into(),
            });
        }
        Ok(())
    }

    /// Creates a vSwitch. With two or more uplinks they form a bond (`bond_mode`,
    /// default active-backup). Nothing changes when any check fails.
    pub async fn create_switch(&self, req: SwitchRequest) -> Result<SwitchInfo, NetError> {
        let _lock = self.lock().await?;
        let old = self.state()?;
        let ovs = self.ovs().await?;
        let actual = self.actual(&ovs).await?;
        self.check_new_name("vSwitch", &req.name, &old, &actual)?;
        if req.uplinks.len() < 2 && (req.bond_mode.is_some() || req.bond_name.is_some()) {
            return Err(NetError::BondModeWithoutBond);
        }
        let mut new = old.clone();
        let mut sw = SwitchSpec {
            name: req.name.clone(),
            uplinks: Vec::new(),
        };
        for (i, u) in req.uplinks.iter().enumerate() {
            if req.uplinks[..i].contains(u) {
                return Err(NetError::DuplicateMember(u.clone()));
            }
            self.check_free_iface(u, &old, &actual)?;
        }
        if req.uplinks.len() >= 2 {
            let bond = req
                .bond_name
                .clone()
                .unwrap_or_else(|| format!("{}-bond", req.name));
            if bond == req.name {
                return Err(NetError::NameTaken {
                    name: bond,
                    by: format!("vSwitch {:?}", req.name),
                });
            }
            self.check_new_name("bond", &bond, &old, &actual)?;
            new.bonds.insert(
                bond.clone(),
                BondSpec {
                    name: bond,
                    switch: req.name.clone(),
                    members: req.uplinks.clone(),
                    mode: req.bond_mode.unwrap_or_default(),
                },
            );
        } else {
            sw.uplinks = req.uplinks.clone();
        }
        new.switches.insert(req.name.clone(), sw);
        self.commit(&old, &new).await?;
        tracing::info!(switch = %req.name, uplinks = ?req.uplinks, "vSwitch created");
        self.info(&new, &req.name)
    }

    /// Deletes a vSwitch and its bonds; refused while a VM has a NIC on it.
    pub async fn delete_switch(&self, name: &str) -> Result<(), NetError> {
        let _lock = self.lock().await?;
        let old = self.state()?;
        if !old.switches.contains_key(name) {
            return Err(NetError::NoSuchSwitch(name.chars().take(40).collect()));
        }
        let mut vms: Vec<String> = self
            .defined_ports()
            .into_iter()
            .filter(|(p, _)| p.switch == name)
            .map(|(p, _)| p.vm)
            .collect();
        vms.dedup();
        if !vms.is_empty() {
            return Err(NetError::SwitchInUse {
                switch: name.to_owned(),
                vms,
            });
        }
        let mut new = old.clone();
        new.switches.remove(name);
        new.bonds.retain(|_, b| b.switch != name);
        self.commit(&old, &new).await?;
        tracing::info!(switch = %name, "vSwitch deleted");
        Ok(())
    }

    fn info(&self, st: &NetState, name: &str) -> Result<SwitchInfo, NetError> {
        let sw = st
            .switches
            .get(name)
            .ok_or_else(|| NetError::NoSuchSwitch(name.chars().take(40).collect()))?;
        let bonds: Vec<String> = st.bonds_of(name).map(|b| b.name.clone()).collect();
        let ports = self
            .defined_ports()
            .into_iter()
            .filter(|(p, _)| p.switch == name)
            .map(|(p, active)| SwitchPortInfo {
                vm: p.vm,
                nic: p.nic,
                mac: p.mac.to_string(),
                vlan: p.vlan,
                tap: p.tap,
                active,
            })
            .collect();
        Ok(SwitchInfo {
            name: sw.name.clone(),
            kind: if sw.uplinks.is_empty() && bonds.is_empty() {
                SwitchKind::Private
            } else {
                SwitchKind::External
            },
            datapath: self.datapath().to_owned(),
            uplinks: sw.uplinks.clone(),
            bonds,
            ports,
        })
    }

    /// One vSwitch.
    pub fn get_switch(&self, name: &str) -> Result<SwitchInfo, NetError> {
        self.info(&self.state()?, name)
    }

    /// Every vSwitch, by name.
    pub fn list_switches(&self) -> Result<Vec<SwitchInfo>, NetError> {
        let st = self.state()?;
        st.switches.keys().map(|n| self.info(&st, n)).collect()
    }

    /// Every bond's configuration, by name.
    pub fn list_bonds(&self) -> Result<Vec<BondSpec>, NetError> {
        Ok(self.state()?.bonds.into_values().collect())
    }

    /// Creates a bond of `members` (two or more free host interfaces) on a vSwitch.
    pub async fn create_bond(&self, req: BondRequest) -> Result<BondSpec, NetError> {
        let _lock = self.lock().await?;
        let old = self.state()?;
        let ovs = self.ovs().await?;
        let actual = self.actual(&ovs).await?;
        self.check_new_name("bond", &req.name, &old, &actual)?;
        if !old.switches.contains_key(&req.switch) {
            return Err(NetError::NoSuchSwitch(
                req.switch.chars().take(40).collect(),
            ));
        }
        Self::check_members(&req.name, &req.members)?;
        for m in &req.members {
            self.check_free_iface(m, &old, &actual)?;
        }
        let spec = BondSpec {
            name: req.name.clone(),
            switch: req.switch,
            members: req.members,
            mode: req.mode,
        };
        let mut new = old.clone();
        new.bonds.insert(req.name.clone(), spec.clone());
        self.commit(&old, &new).await?;
        tracing::info!(bond = %spec.name, switch = %spec.switch, mode = %spec.mode, "bond created");
        Ok(spec)
    }

    /// Changes a bond's mode (balance-tcp turns LACP on, the others turn it off).
    pub async fn set_bond_mode(&self, name: &str, mode: BondMode) -> Result<BondSpec, NetError> {
        let _lock = self.lock().await?;
        let old = self.state()?;
        let mut new = old.clone();
        let bond = new
            .bonds
            .get_mut(name)
            .ok_or_else(|| NetError::NoSuchBond(name.chars().take(40).collect()))?;
        bond.mode = mode;
        let spec = bond.clone();
        self.commit(&old, &new).await?;
        tracing::info!(bond = %name, %mode, "bond mode changed");
        Ok(spec)
    }

    /// Deletes a bond (its members become free host interfaces again).
    pub async fn delete_bond(&self, name: &str) -> Result<(), NetError> {
        let _lock = self.lock().await?;
        let old = self.state()?;
        let mut new = old.clone();
        if new.bonds.remove(name).is_none() {
            return Err(NetError::NoSuchBond(name.chars().take(40).collect()));
        }
        self.commit(&old, &new).await?;
        tracing::info!(bond = %name, "bond deleted");
        Ok(())
    }

    /// A bond's configuration and the state of each member as OVS sees it now.
    pub async fn bond_status(&self, name: &str) -> Result<BondStatus, NetError> {
        let spec = self
            .state()?
            .bonds
            .remove(name)
            .ok_or_else(|| NetError::NoSuchBond(name.chars().take(40).collect()))?;
        let ovs = self.ovs().await?;
        let rt = ovs::parse_bond_show(&ovs.appctl(&["bond/show", name]).await?);
        Ok(BondStatus {
            lacp: spec.mode == BondMode::BalanceTcp,
            spec,
            active: rt.active,
            members: rt.members,
            lacp_status: rt.lacp_status,
        })
    }

    /// Applies the saved state and the ports of running VMs to OVS, and removes the
    /// taps of VMs that no longer run. Idempotent: a second run reports 0 commands.
    /// Starts no daemon when there is nothing to configure.
    pub async fn reconcile(&self) -> Result<ReconcileReport, NetError> {
        let _lock = self.lock().await?;
        let st = self.state()?;
        let defined = self.defined_ports();
        let mut report = ReconcileReport::default();
        for (p, running) in &defined {
            if !running && self.hosts.exists(&p.tap) {
                host::delete_link(&p.tap).await?;
                report.removed_taps.push(p.tap.clone());
            }
        }
        if st.switches.is_empty() && !self.cfg.ovs_run_dir.join("conf.db").exists() {
            return Ok(report);
        }
        report.ovs_commands = self.apply(&st, &[]).await?;
        tracing::info!(?report, "network reconciled");
        Ok(report)
    }

    /// Creates the taps of a VM's switch NICs and plugs them into their vSwitches (one
    /// transaction). The returned lock must be held until QEMU has opened the taps.
    /// On failure nothing is left behind.
    pub async fn plug(
        &self,
        vm: &str,
        nics: &[NicSpec],
    ) -> Result<(Vec<TapAssignment>, Option<NetLock>), NetError> {
        let ports: Vec<VmPort> = nics.iter().filter_map(|n| vm_port(vm, n)).collect();
        if ports.is_empty() {
            return Ok((Vec::new(), None));
        }
        let lock = self.lock().await?;
        let st = self.state()?;
        if let Some(p) = ports.iter().find(|p| !st.switches.contains_key(&p.switch)) {
            return Err(NetError::NoSuchSwitch(p.switch.clone()));
        }
        let mut created = Vec::new();
        let result = async {
            for p in &ports {
                host::create_tap(&p.tap).await?;
                created.push(p.tap.clone());
            }
            self.apply(&st, &ports).await
        }
        .await;
        if let Err(e) = result {
            for t in &created {
                let _ = host::delete_link(t).await;
            }
            return Err(e);
        }
        let vnet_hdr = self.datapath() != "netdev";
        let taps = ports
            .into_iter()
            .map(|p| TapAssignment {
                nic_id: p.nic,
                ifname: p.tap,
                vnet_hdr,
            })
            .collect();
        tracing::info!(vm, "VM ports plugged");
        Ok((taps, Some(lock)))
    }

    /// Removes the tap ports of these NICs from OVS and deletes the taps.
    pub async fn unplug(&self, vm: &str, nics: &[NicSpec]) -> Result<(), NetError> {
        let taps: Vec<String> = nics
            .iter()
            .filter_map(|n| vm_port(vm, n))
            .map(|p| p.tap)
            .collect();
        if taps.is_empty() {
            return Ok(());
        }
        let _lock = self.lock().await?;
        let ovs = self.ovs().await?;
        let cmds: Vec<Vec<String>> = taps
            .iter()
            .map(|t| vec!["--if-exists".into(), "del-port".into(), t.clone()])
            .collect();
        ovs.transaction(&cmds).await?;
        for t in &taps {
            host::delete_link(t).await?;
        }
        tracing::info!(vm, ?taps, "VM ports unplugged");
        Ok(())
    }
}

/// The port of a NIC attached to a vSwitch.
pub fn vm_port(vm: &str, nic: &NicSpec) -> Option<VmPort> {
    let (switch, vlan) = nic.attach.switch()?;
    Some(VmPort {
        vm: vm.to_owned(),
        nic: nic.id.clone(),
        mac: nic.mac,
        switch: switch.to_owned(),
        vlan,
        tap: tap_name(&nic.mac),
    })
}
