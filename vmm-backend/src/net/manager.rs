//! [`NetManager`]: the network on Open vSwitch. This file holds its core: the
//! configuration lock, the state file, applying a plan (one OVSDB transaction) and
//! saving, reconciling, and the tap ports of VMs. Switch and bond changes are in
//! [`super::switches`].

use async_trait::async_trait;

use super::api::{BondRequest, BondStatus, Network, ReconcileReport, SwitchInfo, SwitchRequest};
use super::config::NetConfig;
use super::error::NetError;
use super::host::{self, HostIfaces};
use super::ovs::{self, Ovs};
use super::plan;
use super::state::{tap_name, BondMode, BondSpec, NetState, VmPort};
use crate::qemu::{RunDir, TapAssignment};
use crate::spec::nic::NicSpec;
use crate::spec::SpecStore;

/// An exclusive lock on the network configuration (across processes), released on drop.
#[derive(Debug)]
pub struct NetLock {
    _lock: crate::util::lockfile::FileLock,
}

/// Virtual switches and bonds of this host. Cheap to clone.
#[derive(Debug, Clone)]
pub struct NetManager {
    pub(super) cfg: NetConfig,
    pub(super) specs: SpecStore,
    pub(super) hosts: HostIfaces,
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
    pub(super) fn defined_ports(&self) -> Vec<(VmPort, bool)> {
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

    pub(super) async fn actual(&self, ovs: &Ovs) -> Result<plan::Actual, NetError> {
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
    pub(super) async fn commit(&self, old: &NetState, new: &NetState) -> Result<(), NetError> {
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

#[async_trait]
impl Network for NetManager {
    fn state(&self) -> Result<NetState, NetError> {
        NetManager::state(self)
    }
    fn list_switches(&self) -> Result<Vec<SwitchInfo>, NetError> {
        NetManager::list_switches(self)
    }
    fn get_switch(&self, name: &str) -> Result<SwitchInfo, NetError> {
        NetManager::get_switch(self, name)
    }
    async fn create_switch(&self, req: SwitchRequest) -> Result<SwitchInfo, NetError> {
        NetManager::create_switch(self, req).await
    }
    async fn delete_switch(&self, name: &str) -> Result<(), NetError> {
        NetManager::delete_switch(self, name).await
    }
    fn list_bonds(&self) -> Result<Vec<BondSpec>, NetError> {
        NetManager::list_bonds(self)
    }
    async fn create_bond(&self, req: BondRequest) -> Result<BondSpec, NetError> {
        NetManager::create_bond(self, req).await
    }
    async fn bond_status(&self, name: &str) -> Result<BondStatus, NetError> {
        NetManager::bond_status(self, name).await
    }
    async fn set_bond_mode(&self, name: &str, mode: BondMode) -> Result<BondSpec, NetError> {
        NetManager::set_bond_mode(self, name, mode).await
    }
    async fn delete_bond(&self, name: &str) -> Result<(), NetError> {
        NetManager::delete_bond(self, name).await
    }
    async fn reconcile(&self) -> Result<ReconcileReport, NetError> {
        NetManager::reconcile(self).await
    }
    fn stop_daemons(&self) -> Result<(), NetError> {
        NetManager::stop_daemons(self)
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
