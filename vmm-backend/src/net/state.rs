//! The desired network state (vSwitches, bonds, VM ports), its validation rules, its
//! file under the data directory, and the plan that turns what OVS has into it.
//!
//! The plan is pure (no I/O) so it is unit-tested: given the desired state and what
//! `ovs-vsctl list` shows, it returns the `ovs-vsctl` commands of one transaction, and
//! none when OVS already matches (applying the same state twice changes nothing).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn state() -> NetState {
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
