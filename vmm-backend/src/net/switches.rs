//! vSwitch and bond changes on [`NetManager`]: the checks that refuse a change before
//! anything happens (names, interfaces in use, members), the changes themselves (each
//! one plan, applied and saved by `NetManager::commit`), and the views of them.

use super::api::{BondRequest, BondStatus, SwitchInfo, SwitchKind, SwitchPortInfo, SwitchRequest};
use super::error::NetError;
use super::manager::NetManager;
use super::ovs;
use super::plan::Actual;
use super::state::{valid_ifname, BondMode, BondSpec, NetState, SwitchSpec};

impl NetManager {
    /// Checks that `iface` is a host interface nobody else uses.
    fn check_free_iface(
        &self,
        iface: &str,
        st: &NetState,
        actual: &Actual,
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
        actual: &Actual,
    ) -> Result<(), NetError> {
        check_name_free(what, name, st)?;
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
}

/// Whether `name` may be a new vSwitch or bond in `st`: a valid interface name that no
/// vSwitch or bond has (the QEMU backend also checks Open vSwitch and the host; the
/// fake backend has only this).
pub(crate) fn check_name_free(
    what: &'static str,
    name: &str,
    st: &NetState,
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
    Ok(())
}
