//! The desired network state (vSwitches, bonds, VM ports), its validation rules, its
//! file under the data directory, and the plan that turns what OVS has into it.
//!
//! The plan is pure (no I/O) so it is unit-tested: given the desired state and what
//! `ovs-vsctl list` shows, it returns the `ovs-vsctl` commands of one transaction, and
//! none when OVS already matches (applying the same state twice changes nothing).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ovs::{map_values, opt_string, set_values, Row};
use crate::spec::nic::MacAddr;
pub use crate::util::{valid_ifname, IFNAMSIZ_MAX};

/// The `external_ids` key marking bridges and ports this project manages.
pub const MANAGED_KEY: &str = "vmgw-managed";

/// Errors about the state file and the plan.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("network state file {path} is unreadable")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bridge {0:?} exists in Open vSwitch but was not created by vm-gateway; rename or remove it")]
    ForeignBridge(String),
    #[error("unknown bond mode {0:?} (expected active-backup, balance-slb or balance-tcp)")]
    UnknownBondMode(String),
}

/// How a bond spreads traffic over its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum BondMode {
    /// One member carries everything; another takes over when it fails.
    #[default]
    ActiveBackup,
    /// Source-MAC load balancing, no switch cooperation needed.
    BalanceSlb,
    /// L4 hashing; needs LACP, which is then enabled (fast LACP timers, with fallback
    /// to active-backup when the partner does not speak LACP: traffic resumes within
    /// about 3 s).
    BalanceTcp,
}

impl BondMode {
    pub const ALL: [BondMode; 3] = [
        BondMode::ActiveBackup,
        BondMode::BalanceSlb,
        BondMode::BalanceTcp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BondMode::ActiveBackup => "active-backup",
            BondMode::BalanceSlb => "balance-slb",
            BondMode::BalanceTcp => "balance-tcp",
        }
    }

    /// The OVS `lacp` column for this mode.
    pub fn lacp(self) -> &'static str {
        match self {
            BondMode::BalanceTcp => "active",
            _ => "off",
        }
    }
}

impl fmt::Display for BondMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BondMode {
    type Err = StateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BondMode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| StateError::UnknownBondMode(s.chars().take(40).collect()))
    }
}

/// A vSwitch: an OVS bridge. External when it has uplinks (plain ports or bonds),
/// private (VM-to-VM only) otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchSpec {
    pub name: String,
    /// Host interfaces plugged in as plain (non-bonded) uplink ports.
    #[serde(default)]
    pub uplinks: Vec<String>,
}

/// A bond: an OVS bond port on a vSwitch, the switch's uplink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BondSpec {
    pub name: String,
    pub switch: String,
    pub members: Vec<String>,
    pub mode: BondMode,
}

/// Everything the user configured, as persisted in `DATA/net/state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NetState {
    #[serde(default)]
    pub switches: BTreeMap<String, SwitchSpec>,
    #[serde(default)]
    pub bonds: BTreeMap<String, BondSpec>,
}

impl NetState {
    /// Reads the state file; a missing file is the empty state.
    pub fn load(path: &Path) -> Result<NetState, StateError> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| StateError::Corrupt {
                path: path.to_owned(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(NetState::default()),
            Err(source) => Err(StateError::Io {
                op: "reading",
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Writes the state file atomically (a crash leaves the old or the new one).
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|source| StateError::Corrupt {
            path: path.to_owned(),
            source,
        })?;
        crate::util::write_atomic(path, &bytes).map_err(|e| match e {
            crate::util::WriteError::Io { op, path, source } => StateError::Io { op, path, source },
        })
    }

    /// Who uses host interface `iface` in this state: `switch X` or `bond Y`.
    pub fn user_of(&self, iface: &str) -> Option<String> {
        for s in self.switches.values() {
            if s.uplinks.iter().any(|u| u == iface) {
                return Some(format!("vSwitch {:?} (uplink)", s.name));
            }
        }
        for b in self.bonds.values() {
            if b.members.iter().any(|m| m == iface) {
                return Some(format!("bond {:?}", b.name));
            }
        }
        None
    }

    pub fn bonds_of<'a>(&'a self, switch: &'a str) -> impl Iterator<Item = &'a BondSpec> + 'a {
        self.bonds.values().filter(move |b| b.switch == switch)
    }
}

/// A VM NIC plugged into a vSwitch: a tap port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmPort {
    pub vm: String,
    pub nic: String,
    pub mac: MacAddr,
    pub switch: String,
    pub vlan: Option<u16>,
    /// The host tap device, [`tap_name`] of the MAC.
    pub tap: String,
}

/// The tap device of a NIC: `vt` and the MAC's 12 hex digits (MACs are unique across
/// VMs, and the name fits the 15 bytes of a Linux interface name).
pub fn tap_name(mac: &MacAddr) -> String {
    let b = mac.0;
    format!(
        "vt{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[0], b[1], b[2], b[3], b[4], b[5]
    )
}

/// A port as OVS has it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ActualPort {
    pub interfaces: BTreeSet<String>,
    pub bond_mode: Option<String>,
    pub lacp: Option<String>,
    pub tag: Option<u16>,
    pub other_config: BTreeMap<String, String>,
}

/// A bridge as OVS has it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ActualBridge {
    pub datapath: String,
    pub managed: bool,
    pub ports: BTreeMap<String, ActualPort>,
}

/// What OVS has: bridges by name.
pub type Actual = BTreeMap<String, ActualBridge>;

/// Builds [`Actual`] from `ovs-vsctl list` rows of Bridge, Port and Interface.
pub fn actual_from_rows(bridges: &[Row], ports: &[Row], ifaces: &[Row]) -> Actual {
    let iface_names: BTreeMap<String, String> = ifaces
        .iter()
        .filter_map(|r| Some((opt_string(r.get("_uuid"))?, opt_string(r.get("name"))?)))
        .collect();
    let port_rows: BTreeMap<String, (String, ActualPort)> = ports
        .iter()
        .filter_map(|r| {
            let uuid = opt_string(r.get("_uuid"))?;
            let name = opt_string(r.get("name"))?;
            let interfaces = set_values(r.get("interfaces"))
                .iter()
                .filter_map(|u| u.as_str().and_then(|u| iface_names.get(u)).cloned())
                .collect();
            let tag = set_values(r.get("tag"))
                .first()
                .and_then(|t| t.as_u64())
                .and_then(|t| u16::try_from(t).ok());
            Some((
                uuid,
                (
                    name,
                    ActualPort {
                        interfaces,
                        bond_mode: opt_string(r.get("bond_mode")),
                        lacp: opt_string(r.get("lacp")),
                        tag,
                        other_config: map_values(r.get("other_config")),
                    },
                ),
            ))
        })
        .collect();
    let mut out = Actual::new();
    for r in bridges {
        let Some(name) = opt_string(r.get("name")) else {
            continue;
        };
        let ports = set_values(r.get("ports"))
            .iter()
            .filter_map(|u| u.as_str().and_then(|u| port_rows.get(u)).cloned())
            .collect();
        out.insert(
            name,
            ActualBridge {
                datapath: opt_string(r.get("datapath_type")).unwrap_or_default(),
                managed: map_values(r.get("external_ids")).contains_key(MANAGED_KEY),
                ports,
            },
        );
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    Plain {
        tag: Option<u16>,
        ids: Vec<(String, String)>,
    },
    Bond {
        members: BTreeSet<String>,
        mode: BondMode,
    },
}

fn s(v: &str) -> String {
    v.to_owned()
}

fn bond_settings(mode: BondMode) -> Vec<String> {
    vec![
        format!("bond_mode={}", mode.as_str()),
        format!("lacp={}", mode.lacp()),
        s("other_config:bond-detect-mode=carrier"),
        s("other_config:lacp-fallback-ab=true"),
        s("other_config:lacp-time=fast"),
    ]
}

fn bond_matches(p: &ActualPort, members: &BTreeSet<String>, mode: BondMode) -> bool {
    p.interfaces == *members
        && p.bond_mode.as_deref() == Some(mode.as_str())
        && p.lacp.as_deref().unwrap_or("off") == mode.lacp()
        && p.other_config.get("bond-detect-mode").map(String::as_str) == Some("carrier")
        && p.other_config.get("lacp-fallback-ab").map(String::as_str) == Some("true")
        && p.other_config.get("lacp-time").map(String::as_str) == Some("fast")
}

/// The `ovs-vsctl` commands (one transaction) that make OVS match `state` and
/// `vm_ports`, with bridges of datapath type `datapath`. Managed bridges that are not
/// desired are deleted; bridges not managed by us are never touched.
pub fn plan(
    state: &NetState,
    vm_ports: &[VmPort],
    datapath: &str,
    actual: &Actual,
) -> Result<Vec<Vec<String>>, StateError> {
    let mut cmds: Vec<Vec<String>> = Vec::new();
    // Where each port name is now, to move it when it sits on another bridge.
    let mut location: BTreeMap<&str, &str> = BTreeMap::new();
    for (b, ab) in actual {
        for p in ab.ports.keys() {
            location.insert(p.as_str(), b.as_str());
        }
    }
    for (name, ab) in actual {
        if ab.managed && !state.switches.contains_key(name) {
            cmds.push(vec![s("--if-exists"), s("del-br"), name.clone()]);
        }
    }
    for sw in state.switches.values() {
        let mut want: BTreeMap<String, Want> = BTreeMap::new();
        for u in &sw.uplinks {
            want.insert(
                u.clone(),
                Want::Plain {
                    tag: None,
                    ids: vec![(s("vmgw-role"), s("uplink"))],
                },
            );
        }
        for b in state.bonds_of(&sw.name) {
            want.insert(
                b.name.clone(),
                Want::Bond {
                    members: b.members.iter().cloned().collect(),
                    mode: b.mode,
                },
            );
        }
        for p in vm_ports.iter().filter(|p| p.switch == sw.name) {
            want.insert(
                p.tap.clone(),
                Want::Plain {
                    tag: p.vlan,
                    ids: vec![
                        (s("vmgw-role"), s("vm")),
                        (s("vmgw-vm"), p.vm.clone()),
                        (s("vmgw-nic"), p.nic.clone()),
                    ],
                },
            );
        }
        let empty = ActualBridge::default();
        let ab = match actual.get(&sw.name) {
            Some(ab) if !ab.managed => return Err(StateError::ForeignBridge(sw.name.clone())),
            Some(ab) => {
                if ab.datapath != datapath {
                    cmds.push(vec![
                        s("set"),
                        s("Bridge"),
                        sw.name.clone(),
                        format!("datapath_type={datapath}"),
                    ]);
                }
                ab
            }
            None => {
                cmds.push(vec![s("add-br"), sw.name.clone()]);
                cmds.push(vec![
                    s("set"),
                    s("Bridge"),
                    sw.name.clone(),
                    format!("datapath_type={datapath}"),
                    format!("external_ids:{MANAGED_KEY}=true"),
                ]);
                &empty
            }
        };
        for pname in ab.ports.keys() {
            if *pname != sw.name && !want.contains_key(pname) {
                cmds.push(vec![s("del-port"), sw.name.clone(), pname.clone()]);
            }
        }
        for (pname, w) in &want {
            let here = ab.ports.get(pname);
            let elsewhere = location
                .get(pname.as_str())
                .is_some_and(|b| *b != sw.name.as_str());
            let recreate = match (w, here) {
                (_, None) => true,
                (Want::Plain { .. }, Some(p)) => {
                    p.bond_mode.is_some() || p.interfaces != BTreeSet::from([pname.clone()])
                }
                (Want::Bond { members, .. }, Some(p)) => p.interfaces != *members,
            };
            if let (true, Some(b)) = (elsewhere && here.is_none(), location.get(pname.as_str())) {
                cmds.push(vec![
                    s("--if-exists"),
                    s("del-port"),
                    (*b).to_owned(),
                    pname.clone(),
                ]);
            }
            if recreate {
                if here.is_some() {
                    cmds.push(vec![s("del-port"), sw.name.clone(), pname.clone()]);
                }
                match w {
                    Want::Plain { tag, ids } => {
                        let mut c = vec![s("add-port"), sw.name.clone(), pname.clone()];
                        if let Some(t) = tag {
                            c.push(format!("tag={t}"));
                        }
                        c.push(format!("external_ids:{MANAGED_KEY}=true"));
                        c.extend(ids.iter().map(|(k, v)| format!("external_ids:{k}={v}")));
                        cmds.push(c);
                    }
                    Want::Bond { members, mode } => {
                        let mut c = vec![s("add-bond"), sw.name.clone(), pname.clone()];
                        c.extend(members.iter().cloned());
                        c.extend(bond_settings(*mode));
                        c.push(format!("external_ids:{MANAGED_KEY}=true"));
                        c.push(s("external_ids:vmgw-role=bond"));
                        cmds.push(c);
                    }
                }
                continue;
            }
            let Some(p) = here else { continue };
            match w {
                Want::Plain { tag, .. } if p.tag != *tag => match tag {
                    Some(t) => {
                        cmds.push(vec![s("set"), s("Port"), pname.clone(), format!("tag={t}")])
                    }
                    None => cmds.push(vec![s("clear"), s("Port"), pname.clone(), s("tag")]),
                },
                Want::Bond { members, mode } if !bond_matches(p, members, *mode) => {
                    let mut c = vec![s("set"), s("Port"), pname.clone()];
                    c.extend(bond_settings(*mode));
                    cmds.push(c);
                }
                _ => {}
            }
        }
    }
    Ok(cmds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> NetState {
        let mut st = NetState::default();
        st.switches.insert(
            "sw0".into(),
            SwitchSpec {
                name: "sw0".into(),
                uplinks: vec!["eth1".into()],
            },
        );
        st.bonds.insert(
            "bond0".into(),
            BondSpec {
                name: "bond0".into(),
                switch: "sw0".into(),
                members: vec!["eth2".into(), "eth3".into()],
                mode: BondMode::BalanceSlb,
            },
        );
        st
    }

    fn port(ifaces: &[&str]) -> ActualPort {
        ActualPort {
            interfaces: ifaces.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn applied(st: &NetState, vm: &[VmPort]) -> Actual {
        let mut ab = ActualBridge {
            datapath: "netdev".into(),
            managed: true,
            ports: BTreeMap::new(),
        };
        ab.ports.insert("sw0".into(), port(&["sw0"]));
        for u in &st.switches["sw0"].uplinks {
            ab.ports.insert(u.clone(), port(&[u]));
        }
        for b in st.bonds.values() {
            let mut p = port(&b.members.iter().map(String::as_str).collect::<Vec<_>>());
            p.bond_mode = Some(b.mode.as_str().into());
            p.lacp = Some(b.mode.lacp().into());
            p.other_config
                .insert("bond-detect-mode".into(), "carrier".into());
            p.other_config
                .insert("lacp-fallback-ab".into(), "true".into());
            p.other_config.insert("lacp-time".into(), "fast".into());
            ab.ports.insert(b.name.clone(), p);
        }
        for v in vm {
            let mut p = port(&[&v.tap]);
            p.tag = v.vlan;
            ab.ports.insert(v.tap.clone(), p);
        }
        BTreeMap::from([("sw0".to_string(), ab)])
    }

    fn vm_port() -> VmPort {
        let mac: MacAddr = "52:54:00:12:34:56".parse().expect("mac");
        VmPort {
            vm: "web".into(),
            nic: "nic0".into(),
            mac,
            switch: "sw0".into(),
            vlan: Some(10),
            tap: tap_name(&mac),
        }
    }

    #[test]
    fn empty_ovs_gets_everything_in_one_plan() {
        let cmds = plan(&state(), &[vm_port()], "netdev", &Actual::new()).expect("plan");
        let text: Vec<String> = cmds.iter().map(|c| c.join(" ")).collect();
        assert_eq!(text[0], "add-br sw0");
        assert!(text[1].contains("datapath_type=netdev"));
        assert!(text
            .iter()
            .any(|c| c.starts_with("add-bond sw0 bond0 eth2 eth3 bond_mode=balance-slb lacp=off")));
        assert!(text.iter().any(|c| c.starts_with("add-port sw0 eth1 ")));
        assert!(text
            .iter()
            .any(|c| c.starts_with("add-port sw0 vt525400123456 tag=10 ")));
    }

    #[test]
    fn applied_state_plans_nothing() {
        let st = state();
        let vm = [vm_port()];
        assert!(plan(&st, &vm, "netdev", &applied(&st, &vm))
            .expect("plan")
            .is_empty());
    }

    #[test]
    fn changes_are_minimal() {
        let st = state();
        let vm = [vm_port()];
        let actual = applied(&st, &vm);
        let mut st2 = st.clone();
        st2.bonds.get_mut("bond0").expect("bond").mode = BondMode::BalanceTcp;
        let mut vm2 = vm.clone();
        vm2[0].vlan = None;
        let text: Vec<String> = plan(&st2, &vm2, "netdev", &actual)
            .expect("plan")
            .iter()
            .map(|c| c.join(" "))
            .collect();
        assert_eq!(
            text,
            vec![
                "set Port bond0 bond_mode=balance-tcp lacp=active other_config:bond-detect-mode=carrier other_config:lacp-fallback-ab=true other_config:lacp-time=fast",
                "clear Port vt525400123456 tag",
            ]
        );
        // A VM that stopped: its port goes; a deleted switch: its bridge goes.
        let text: Vec<String> = plan(&st, &[], "netdev", &actual)
            .expect("plan")
            .iter()
            .map(|c| c.join(" "))
            .collect();
        assert_eq!(text, vec!["del-port sw0 vt525400123456"]);
        let text: Vec<String> = plan(&NetState::default(), &[], "netdev", &actual)
            .expect("plan")
            .iter()
            .map(|c| c.join(" "))
            .collect();
        assert_eq!(text, vec!["--if-exists del-br sw0"]);
    }

    #[test]
    fn foreign_bridges_are_left_alone() {
        let mut actual = applied(&state(), &[]);
        actual.get_mut("sw0").expect("sw0").managed = false;
        assert!(matches!(
            plan(&state(), &[], "netdev", &actual),
            Err(StateError::ForeignBridge(_))
        ));
        assert!(plan(&NetState::default(), &[], "netdev", &actual)
            .expect("plan")
            .is_empty());
    }

    #[test]
    fn names_and_modes() {
        assert!(valid_ifname("sw-lan.1"));
        assert!(!valid_ifname("a-very-long-name-x"));
        assert!(!valid_ifname("../x"));
        assert!(!valid_ifname("-x"));
        assert!(!valid_ifname(""));
        for m in BondMode::ALL {
            assert_eq!(m.as_str().parse::<BondMode>().expect("mode"), m);
        }
        assert!("802.3ad".parse::<BondMode>().is_err());
        let mac: MacAddr = "52:54:ab:cd:ef:01".parse().expect("mac");
        assert_eq!(tap_name(&mac), "vt5254abcdef01");
        assert!(valid_ifname(&tap_name(&mac)));
    }

    #[test]
    fn state_file_roundtrip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("state.json");
        assert_eq!(NetState::load(&p).expect("empty"), NetState::default());
        state().save(&p).expect("save");
        assert_eq!(NetState::load(&p).expect("load"), state());
        std::fs::write(&p, b"{not json").expect("write");
        assert!(matches!(
            NetState::load(&p),
            Err(StateError::Corrupt { .. })
        ));
    }
}
