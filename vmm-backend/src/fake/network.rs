//! [`FakeNetwork`]: vSwitches and bonds in memory, with the same refusals as the real
//! network for names, missing switches and bonds, interfaces in use and switches still
//! used by VMs. Host interfaces are the ones given at construction.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use super::vms::Vms;
use crate::api::VmState;
use crate::net::switches::check_name_free;
use crate::net::{
    tap_name, BondMode, BondRequest, BondSpec, BondStatus, MemberStatus, NetError, NetState,
    Network, ReconcileReport, SwitchInfo, SwitchKind, SwitchPortInfo, SwitchRequest, SwitchSpec,
};

/// The network of a [`super::FakeBackend`]. Lock order: its state, then the VMs.
#[derive(Debug)]
pub struct FakeNetwork {
    state: Mutex<NetState>,
    host_ifaces: BTreeSet<String>,
    vms: Arc<Vms>,
}

impl FakeNetwork {
    pub(super) fn new(vms: Arc<Vms>, host_ifaces: BTreeSet<String>) -> FakeNetwork {
        FakeNetwork {
            state: Mutex::default(),
            host_ifaces,
            vms,
        }
    }

    fn lock(&self) -> MutexGuard<'_, NetState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn info(&self, st: &NetState, name: &str) -> Result<SwitchInfo, NetError> {
        let sw = st
            .switches
            .get(name)
            .ok_or_else(|| NetError::NoSuchSwitch(name.chars().take(40).collect()))?;
        let bonds: Vec<String> = st.bonds_of(name).map(|b| b.name.clone()).collect();
        let mut ports = Vec::new();
        for vm in self.vms.lock().values() {
            for nic in &vm.spec.nics {
                if let Some((switch, vlan)) = nic.attach.switch().filter(|(s, _)| *s == name) {
                    ports.push(SwitchPortInfo {
                        vm: vm.spec.name.clone(),
                        nic: nic.id.clone(),
                        mac: nic.mac.to_string(),
                        vlan,
                        tap: tap_name(&nic.mac),
                        active: vm.state != VmState::Stopped && switch == name,
                    });
                }
            }
        }
        Ok(SwitchInfo {
            name: sw.name.clone(),
            kind: if sw.uplinks.is_empty() && bonds.is_empty() {
                SwitchKind::Private
            } else {
                SwitchKind::External
            },
            datapath: "fake".into(),
            uplinks: sw.uplinks.clone(),
            bonds,
            ports,
        })
    }

    /// Checks that `members` are two or more distinct host interfaces nobody uses.
    fn check_ifaces(&self, members: &[String], st: &NetState) -> Result<(), NetError> {
        for (i, m) in members.iter().enumerate() {
            if members[..i].contains(m) {
                return Err(NetError::DuplicateMember(m.clone()));
            }
            if !self.host_ifaces.contains(m) {
                return Err(NetError::NoSuchInterface(m.chars().take(40).collect()));
            }
            if let Some(by) = st.user_of(m) {
                return Err(NetError::InterfaceInUse {
                    iface: m.clone(),
                    by,
                });
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Network for FakeNetwork {
    fn state(&self) -> Result<NetState, NetError> {
        Ok(self.lock().clone())
    }

    fn list_switches(&self) -> Result<Vec<SwitchInfo>, NetError> {
        let st = self.lock().clone();
        st.switches.keys().map(|n| self.info(&st, n)).collect()
    }

    fn get_switch(&self, name: &str) -> Result<SwitchInfo, NetError> {
        let st = self.lock().clone();
        self.info(&st, name)
    }

    async fn create_switch(&self, req: SwitchRequest) -> Result<SwitchInfo, NetError> {
        let mut st = self.lock();
        check_name_free("vSwitch", &req.name, &st)?;
        if req.uplinks.len() < 2 && (req.bond_mode.is_some() || req.bond_name.is_some()) {
            return Err(NetError::BondModeWithoutBond);
        }
        self.check_ifaces(&req.uplinks, &st)?;
        let mut sw = SwitchSpec {
            name: req.name.clone(),
            uplinks: Vec::new(),
        };
        if req.uplinks.len() >= 2 {
            let bond = req
                .bond_name
                .clone()
                .unwrap_or_else(|| format!("{}-bond", req.name));
            check_name_free("bond", &bond, &st)?;
            st.bonds.insert(
                bond.clone(),
                BondSpec {
                    name: bond,
                    switch: req.name.clone(),
                    members: req.uplinks,
                    mode: req.bond_mode.unwrap_or_default(),
                },
            );
        } else {
            sw.uplinks = req.uplinks;
        }
        st.switches.insert(req.name.clone(), sw);
        let snapshot = st.clone();
        drop(st);
        self.info(&snapshot, &req.name)
    }

    async fn delete_switch(&self, name: &str) -> Result<(), NetError> {
        let mut st = self.lock();
        if !st.switches.contains_key(name) {
            return Err(NetError::NoSuchSwitch(name.chars().take(40).collect()));
        }
        let vms: Vec<String> = self
            .vms
            .lock()
            .values()
            .filter(|vm| {
                vm.spec
                    .nics
                    .iter()
                    .any(|n| n.attach.switch().is_some_and(|(s, _)| s == name))
            })
            .map(|vm| vm.spec.name.clone())
            .collect();
        if !vms.is_empty() {
            return Err(NetError::SwitchInUse {
                switch: name.to_owned(),
                vms,
            });
        }
        st.switches.remove(name);
        st.bonds.retain(|_, b| b.switch != name);
        Ok(())
    }

    fn list_bonds(&self) -> Result<Vec<BondSpec>, NetError> {
        Ok(self.lock().bonds.values().cloned().collect())
    }

    async fn create_bond(&self, req: BondRequest) -> Result<BondSpec, NetError> {
        let mut st = self.lock();
        check_name_free("bond", &req.name, &st)?;
        if !st.switches.contains_key(&req.switch) {
            return Err(NetError::NoSuchSwitch(
                req.switch.chars().take(40).collect(),
            ));
        }
        if req.members.len() < 2 {
            return Err(NetError::TooFewMembers {
                bond: req.name.clone(),
                count: req.members.len(),
            });
        }
        self.check_ifaces(&req.members, &st)?;
        let spec = BondSpec {
            name: req.name.clone(),
            switch: req.switch,
            members: req.members,
            mode: req.mode,
        };
        st.bonds.insert(req.name, spec.clone());
        Ok(spec)
    }

    async fn bond_status(&self, name: &str) -> Result<BondStatus, NetError> {
        let spec = self
            .lock()
            .bonds
            .get(name)
            .cloned()
            .ok_or_else(|| NetError::NoSuchBond(name.chars().take(40).collect()))?;
        let lacp = spec.mode == BondMode::BalanceTcp;
        let members = spec
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| MemberStatus {
                name: m.clone(),
                enabled: true,
                active: i == 0,
            })
            .collect();
        Ok(BondStatus {
            lacp,
            active: spec.members.first().cloned(),
            members,
            lacp_status: if lacp { "negotiated" } else { "off" }.into(),
            spec,
        })
    }

    async fn set_bond_mode(&self, name: &str, mode: BondMode) -> Result<BondSpec, NetError> {
        let mut st = self.lock();
        let bond = st
            .bonds
            .get_mut(name)
            .ok_or_else(|| NetError::NoSuchBond(name.chars().take(40).collect()))?;
        bond.mode = mode;
        Ok(bond.clone())
    }

    async fn delete_bond(&self, name: &str) -> Result<(), NetError> {
        match self.lock().bonds.remove(name) {
            Some(_) => Ok(()),
            None => Err(NetError::NoSuchBond(name.chars().take(40).collect())),
        }
    }

    async fn reconcile(&self) -> Result<ReconcileReport, NetError> {
        Ok(ReconcileReport::default())
    }

    fn stop_daemons(&self) -> Result<(), NetError> {
        Ok(())
    }
}
