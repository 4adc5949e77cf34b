//! Virtual NIC models, MAC addresses and SR-IOV virtual functions.
//!
//! The capability rules follow the seed notes: `e1000` and `rtl8139` for the widest guest
//! compatibility, `virtio` (the recommended default) for speed, and `sriov` — a PCI
//! virtual function passed through with vfio-pci — for near-native speed at the price of
//! suspend, live migration and HA.

use std::fmt;
use std::path::{Path, PathBuf};
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

/// An SR-IOV virtual function found in sysfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VirtualFunction {
    /// Index N of `virtfnN` under the physical function.
    pub index: usize,
    /// PCI address such as `0000:03:10.1`.
    pub pci_address: String,
    /// The kernel driver the VF is bound to now (`vfio-pci` is needed for passthrough).
    pub driver: Option<String>,
}

/// A physical function with SR-IOV capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhysicalFunction {
    pub name: String,
    pub total_vfs: usize,
    pub num_vfs: usize,
    pub vfs: Vec<VirtualFunction>,
}

/// Reads SR-IOV state from a sysfs tree (`/sys` normally, a fake tree in tests).
#[derive(Debug, Clone)]
pub struct Sysfs {
    root: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Self {
        Sysfs {
            root: PathBuf::from("/sys"),
        }
    }
}

impl Sysfs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Sysfs { root: root.into() }
    }

    fn read_trimmed(path: &Path) -> Result<String, NicError> {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .map_err(|source| NicError::Sysfs {
                path: path.to_owned(),
                source,
            })
    }

    fn read_count(path: &Path) -> Result<usize, NicError> {
        let s = Self::read_trimmed(path)?;
        s.parse().map_err(|_| NicError::Sysfs {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not a number"),
        })
    }

    /// Every SR-IOV capable network interface (those with `device/sriov_totalvfs`).
    pub fn physical_functions(&self) -> Result<Vec<PhysicalFunction>, NicError> {
        let net = self.root.join("class/net");
        let entries = match std::fs::read_dir(&net) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(NicError::Sysfs { path: net, source }),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().join("device/sriov_totalvfs").exists() {
                out.push(self.physical_function(&name)?);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// One physical function by interface name.
    pub fn physical_function(&self, name: &str) -> Result<PhysicalFunction, NicError> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(NicError::NoSuchPf(name.to_owned()));
        }
        let dev = self.root.join("class/net").join(name).join("device");
        if !dev.exists() {
            return Err(NicError::NoSuchPf(name.to_owned()));
        }
        let total_path = dev.join("sriov_totalvfs");
        if !total_path.exists() {
            return Err(NicError::NotSriovCapable(name.to_owned()));
        }
        let total_vfs = Self::read_count(&total_path)?;
        let num_vfs = Self::read_count(&dev.join("sriov_numvfs"))?;
        let mut vfs = Vec::new();
        let entries = std::fs::read_dir(&dev).map_err(|source| NicError::Sysfs {
            path: dev.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let fname = entry.file_name().to_string_lossy().into_owned();
            let Some(index) = fname
                .strip_prefix("virtfn")
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            let target = std::fs::read_link(entry.path()).map_err(|source| NicError::Sysfs {
                path: entry.path(),
                source,
            })?;
            let pci_address = target
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let driver = std::fs::read_link(entry.path().join("driver"))
                .ok()
                .and_then(|d| d.file_name().map(|f| f.to_string_lossy().into_owned()));
            vfs.push(VirtualFunction {
                index,
                pci_address,
                driver,
            });
        }
        vfs.sort_by_key(|v| v.index);
        Ok(PhysicalFunction {
            name: name.to_owned(),
            total_vfs,
            num_vfs,
            vfs,
        })
    }

    /// The first VF of `pf` whose PCI address is not in `in_use`.
    pub fn free_vf(&self, pf: &str, in_use: &[String]) -> Result<VirtualFunction, NicError> {
        let pf_info = self.physical_function(pf)?;
        if pf_info.num_vfs == 0 {
            return Err(NicError::SriovDisabled(pf.to_owned()));
        }
        pf_info
            .vfs
            .iter()
            .find(|vf| !in_use.contains(&vf.pci_address))
            .cloned()
            .ok_or(NicError::NoFreeVf {
                pf: pf.to_owned(),
                total: pf_info.vfs.len(),
            })
    }
}

/// Writes a sysfs tree shaped like the kernel's under `root`: one SR-IOV physical
/// function `pf` with `total` VFs (enabled or not, bound to vfio-pci) and a plain NIC
/// `eth9`. For tests on machines without SR-IOV hardware.
#[doc(hidden)]
pub fn write_fake_sysfs(root: &Path, pf: &str, total: usize, enabled: bool) -> std::io::Result<()> {
    use std::os::unix::fs::symlink;
    let pf_dev = root.join("devices/pci0000:00/0000:00:03.0/0000:03:00.0");
    std::fs::create_dir_all(&pf_dev)?;
    std::fs::write(pf_dev.join("sriov_totalvfs"), format!("{total}\n"))?;
    let num = if enabled { total } else { 0 };
    std::fs::write(pf_dev.join("sriov_numvfs"), format!("{num}\n"))?;
    std::fs::create_dir_all(root.join("class/net").join(pf))?;
    symlink(&pf_dev, root.join("class/net").join(pf).join("device"))?;
    let vfio = root.join("bus/pci/drivers/vfio-pci");
    std::fs::create_dir_all(&vfio)?;
    if enabled {
        for i in 0..total {
            let vf = root.join(format!("devices/pci0000:00/0000:00:03.0/0000:03:10.{i}"));
            std::fs::create_dir_all(&vf)?;
            symlink(&vfio, vf.join("driver"))?;
            symlink(&vf, pf_dev.join(format!("virtfn{i}")))?;
        }
    }
    let plain = root.join("devices/pci0000:00/0000:00:04.0");
    std::fs::create_dir_all(&plain)?;
    std::fs::create_dir_all(root.join("class/net/eth9"))?;
    symlink(&plain, root.join("class/net/eth9/device"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_sysfs(n: usize, enabled: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        write_fake_sysfs(dir.path(), "enp3s0f0", n, enabled).expect("fake sysfs");
        dir
    }

    #[test]
    fn discovers_vfs_from_sysfs() {
        let dir = fake_sysfs(4, true);
        let sys = Sysfs::new(dir.path());
        let pfs = sys.physical_functions().expect("pfs");
        assert_eq!(pfs.len(), 1);
        let pf = &pfs[0];
        assert_eq!(pf.name, "enp3s0f0");
        assert_eq!((pf.total_vfs, pf.num_vfs), (4, 4));
        assert_eq!(pf.vfs.len(), 4);
        assert_eq!(pf.vfs[2].pci_address, "0000:03:10.2");
        assert_eq!(pf.vfs[2].driver.as_deref(), Some("vfio-pci"));
    }

    #[test]
    fn free_vf_skips_used_and_reports_exhaustion() {
        let dir = fake_sysfs(2, true);
        let sys = Sysfs::new(dir.path());
        let a = sys.free_vf("enp3s0f0", &[]).expect("vf");
        assert_eq!(a.pci_address, "0000:03:10.0");
        let b = sys
            .free_vf("enp3s0f0", std::slice::from_ref(&a.pci_address))
            .expect("vf");
        assert_eq!(b.pci_address, "0000:03:10.1");
        let err = sys
            .free_vf("enp3s0f0", &[a.pci_address, b.pci_address])
            .expect_err("exhausted");
        assert!(matches!(err, NicError::NoFreeVf { total: 2, .. }), "{err}");
    }

    #[test]
    fn sriov_errors_are_precise() {
        let dir = fake_sysfs(2, false);
        let sys = Sysfs::new(dir.path());
        assert!(matches!(
            sys.free_vf("enp3s0f0", &[]),
            Err(NicError::SriovDisabled(_))
        ));
        assert!(matches!(
            sys.physical_function("eth9"),
            Err(NicError::NotSriovCapable(_))
        ));
        assert!(matches!(
            sys.physical_function("nope0"),
            Err(NicError::NoSuchPf(_))
        ));
        assert!(matches!(
            sys.physical_function("../../etc"),
            Err(NicError::NoSuchPf(_))
        ));
    }

    #[test]
    fn no_sysfs_means_no_pfs() {
        let sys = Sysfs::new("/nonexistent-sysfs-root");
        assert!(sys.physical_functions().expect("empty").is_empty());
    }

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
