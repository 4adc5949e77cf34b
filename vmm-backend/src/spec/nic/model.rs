//! NIC models and their capabilities, MAC addresses, attachments, and NICs as requested
//! and as defined.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Errors about NIC definitions and SR-IOV discovery.
#[derive(Debug, thiserror::Error)]
pub enum NicError {
    #[error("unknown NIC model {0:?} (expected e1000, rtl8139, virtio or sriov)")]
    UnknownModel(String),
    #[error("invalid MAC address {0:?}")]
    InvalidMac(String),
    #[error("MAC address {0} is a multicast address")]
    MulticastMac(MacAddr),
    #[error("an sriov NIC needs a physical function (`pf`), e.g. the host interface name")]
    SriovWithoutPf,
    #[error("option `{option}` is only valid for sriov NICs")]
    SriovOnlyOption { option: &'static str },
    #[error("physical function {0:?} does not exist in sysfs")]
    NoSuchPf(String),
    #[error("{0:?} is not SR-IOV capable (no sriov_totalvfs)")]
    NotSriovCapable(String),
    #[error("SR-IOV is not enabled on {0:?} (sriov_numvfs is 0)")]
    SriovDisabled(String),
    #[error("no free virtual function on {pf:?}: all {total} are in use")]
    NoFreeVf { pf: String, total: usize },
    #[error("invalid VLAN {0:?} (expected 1-4094)")]
    InvalidVlan(String),
    #[error("a VLAN tag needs a vSwitch attachment (`switch=NAME`)")]
    VlanWithoutSwitch,
    #[error("invalid vSwitch name {0:?}")]
    InvalidSwitchName(String),
    #[error("an sriov NIC is a passed-through VF and cannot attach to a vSwitch")]
    SriovOnSwitch,
    #[error("reading {path}")]
    Sysfs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The emulated (or passed-through) device a NIC appears as in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NicModel {
    E1000,
    Rtl8139,
    #[default]
    Virtio,
    Sriov,
}

impl NicModel {
    pub const ALL: [NicModel; 4] = [
        NicModel::E1000,
        NicModel::Rtl8139,
        NicModel::Virtio,
        NicModel::Sriov,
    ];

    /// The QEMU `-device` driver name.
    pub fn qemu_driver(self) -> &'static str {
        match self {
            NicModel::E1000 => "e1000",
            NicModel::Rtl8139 => "rtl8139",
            NicModel::Virtio => "virtio-net-pci",
            NicModel::Sriov => "vfio-pci",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NicModel::E1000 => "e1000",
            NicModel::Rtl8139 => "rtl8139",
            NicModel::Virtio => "virtio",
            NicModel::Sriov => "sriov",
        }
    }

    /// Whether a VM with this NIC can be suspended (paused with its devices kept).
    pub fn allows_suspend(self) -> bool {
        self != NicModel::Sriov
    }

    /// Whether a VM with this NIC can be live-migrated.
    pub fn allows_live_migration(self) -> bool {
        self != NicModel::Sriov
    }

    /// Whether a VM with this NIC can be protected by high availability.
    pub fn allows_ha(self) -> bool {
        self != NicModel::Sriov
    }
}

impl fmt::Display for NicModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NicModel {
    type Err = NicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "e1000" => Ok(NicModel::E1000),
            "rtl8139" => Ok(NicModel::Rtl8139),
            "virtio" | "virtio-net" | "virtio-net-pci" => Ok(NicModel::Virtio),
            "sriov" | "sr-iov" => Ok(NicModel::Sriov),
            other => Err(NicError::UnknownModel(other.to_owned())),
        }
    }
}

/// A 48-bit Ethernet MAC address, serialized as `52:54:00:12:34:56`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// A stable, locally administered unicast address derived from a VM uuid and a NIC
    /// index; `salt` lets a caller step past a collision.
    pub fn derive(uuid: &uuid::Uuid, index: usize, salt: u32) -> MacAddr {
        // FNV-1a over the uuid, the index and the salt: stable across releases, unlike
        // std's hasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let idx = u64::try_from(index).unwrap_or(u64::MAX);
        for b in uuid
            .as_bytes()
            .iter()
            .chain(idx.to_le_bytes().iter())
            .chain(salt.to_le_bytes().iter())
        {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        let b = h.to_le_bytes();
        // 0x52 = locally administered (bit 1 set), unicast (bit 0 clear); QEMU's habit.
        MacAddr([0x52, 0x54, b[0], b[1], b[2], b[3]])
    }

    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    pub fn is_locally_administered(&self) -> bool {
        self.0[0] & 0x02 != 0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = NicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NicError::InvalidMac(s.chars().take(40).collect());
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for slot in &mut out {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *slot = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a NIC's traffic goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum NicAttachment {
    /// QEMU user-mode networking (NAT, no inbound; the demo default).
    #[default]
    User,
    /// A tap port on a vSwitch (see [`crate::net`]), an access port of `vlan` when set.
    Switch {
        switch: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vlan: Option<u16>,
    },
}

impl NicAttachment {
    /// The vSwitch this NIC plugs into, if any.
    pub fn switch(&self) -> Option<(&str, Option<u16>)> {
        match self {
            NicAttachment::User => None,
            NicAttachment::Switch { switch, vlan } => Some((switch, *vlan)),
        }
    }

    pub fn validate(&self) -> Result<(), NicError> {
        if let NicAttachment::Switch { switch, vlan } = self {
            if !crate::util::valid_ifname(switch) {
                return Err(NicError::InvalidSwitchName(
                    switch.chars().take(40).collect(),
                ));
            }
            if let Some(v) = vlan {
                if !(1..=4094).contains(v) {
                    return Err(NicError::InvalidVlan(v.to_string()));
                }
            }
        }
        Ok(())
    }
}

/// A NIC as the user asks for it; the MAC is filled in when the VM is defined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicRequest {
    #[serde(default)]
    pub model: NicModel,
    #[serde(default)]
    pub mac: Option<MacAddr>,
    #[serde(default)]
    pub attach: NicAttachment,
    /// For `sriov`: the physical function (host interface name such as `enp1s0f0`).
    #[serde(default)]
    pub pf: Option<String>,
}

impl NicRequest {
    pub fn validate(&self) -> Result<(), NicError> {
        if let Some(mac) = self.mac {
            if mac.is_multicast() {
                return Err(NicError::MulticastMac(mac));
            }
        }
        self.attach.validate()?;
        if self.model == NicModel::Sriov && self.attach != NicAttachment::User {
            return Err(NicError::SriovOnSwitch);
        }
        match (self.model, &self.pf) {
            (NicModel::Sriov, None) => Err(NicError::SriovWithoutPf),
            (NicModel::Sriov, Some(_)) => Ok(()),
            (_, Some(_)) => Err(NicError::SriovOnlyOption { option: "pf" }),
            (_, None) => Ok(()),
        }
    }
}

impl FromStr for NicRequest {
    type Err = NicError;
    /// `MODEL[,mac=MAC][,pf=IFACE][,switch=NAME[,vlan=N]]`, the CLI's `--nic` syntax.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split(',');
        let model: NicModel = parts.next().unwrap_or_default().parse()?;
        let mut req = NicRequest {
            model,
            mac: None,
            attach: NicAttachment::User,
            pf: None,
        };
        let mut switch = None;
        let mut vlan = None;
        for p in parts {
            match p.split_once('=') {
                Some(("mac", v)) => req.mac = Some(v.parse()?),
                Some(("pf", v)) => req.pf = Some(v.to_owned()),
                Some(("switch", v)) => switch = Some(v.to_owned()),
                Some(("vlan", v)) => {
                    vlan = Some(
                        v.parse::<u16>()
                            .map_err(|_| NicError::InvalidVlan(v.chars().take(20).collect()))?,
                    )
                }
                _ => return Err(NicError::UnknownModel(s.chars().take(60).collect())),
            }
        }
        match (switch, vlan) {
            (Some(switch), vlan) => req.attach = NicAttachment::Switch { switch, vlan },
            (None, Some(_)) => return Err(NicError::VlanWithoutSwitch),
            (None, None) => {}
        }
        req.validate()?;
        Ok(req)
    }
}

/// A NIC of a defined VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicSpec {
    /// Stable QEMU device id, `nic0`, `nic1`, …
    pub id: String,
    pub model: NicModel,
    pub mac: MacAddr,
    #[serde(default)]
    pub attach: NicAttachment,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pf: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parse_and_derive() {
        let m: MacAddr = "52:54:00:AB:cd:01".parse().expect("mac");
        assert_eq!(m.to_string(), "52:54:00:ab:cd:01");
        assert!("52:54:00:ab:cd".parse::<MacAddr>().is_err());
        assert!("52:54:00:ab:cd:01:02".parse::<MacAddr>().is_err());
        assert!("zz:54:00:ab:cd:01".parse::<MacAddr>().is_err());
        let u = uuid::Uuid::from_u128(7);
        let a = MacAddr::derive(&u, 0, 0);
        assert_eq!(a, MacAddr::derive(&u, 0, 0), "stable");
        assert_ne!(a, MacAddr::derive(&u, 1, 0));
        assert!(a.is_locally_administered() && !a.is_multicast());
    }

    #[test]
    fn nic_rules() {
        assert!("virtio".parse::<NicRequest>().is_ok());
        assert!(matches!(
            "ne2k".parse::<NicRequest>(),
            Err(NicError::UnknownModel(_))
        ));
        assert!(matches!(
            "sriov".parse::<NicRequest>(),
            Err(NicError::SriovWithoutPf)
        ));
        assert!(matches!(
            "e1000,mac=01:00:5e:00:00:01".parse::<NicRequest>(),
            Err(NicError::MulticastMac(_))
        ));
        let r: NicRequest = "sriov,pf=enp3s0f0".parse().expect("sriov");
        assert!(!r.model.allows_suspend());
        assert!(!r.model.allows_live_migration());
        assert!(!r.model.allows_ha());
        for m in NicModel::ALL {
            assert_eq!(m.as_str().parse::<NicModel>().expect("roundtrip"), m);
        }
    }

    #[test]
    fn switch_attachment() {
        let r: NicRequest = "e1000,switch=sw0,vlan=10".parse().expect("switch nic");
        assert_eq!(
            r.attach,
            NicAttachment::Switch {
                switch: "sw0".into(),
                vlan: Some(10)
            }
        );
        let json = serde_json::to_value(&r.attach).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"type": "switch", "switch": "sw0", "vlan": 10})
        );
        let user: NicAttachment =
            serde_json::from_value(serde_json::json!({"type": "user"})).expect("user");
        assert_eq!(user, NicAttachment::User);
        for (bad, want) in [
            ("virtio,vlan=5", "VLAN tag needs"),
            ("virtio,switch=sw0,vlan=0", "invalid VLAN"),
            ("virtio,switch=sw0,vlan=4095", "invalid VLAN"),
            ("virtio,switch=sw0,vlan=x", "invalid VLAN"),
            ("virtio,switch=../x", "invalid vSwitch name"),
            ("sriov,pf=eth0,switch=sw0", "cannot attach to a vSwitch"),
        ] {
            let err = bad.parse::<NicRequest>().expect_err(bad);
            assert!(err.to_string().contains(want), "{bad}: {err}");
        }
    }
}
