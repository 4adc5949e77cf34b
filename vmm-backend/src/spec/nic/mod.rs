//! Virtual NIC models, MAC addresses and SR-IOV virtual functions.
//!
//! The capability rules follow the seed notes: `e1000` and `rtl8139` for the widest guest
//! compatibility, `virtio` (the recommended default) for speed, and `sriov` — a PCI
//! virtual function passed through with vfio-pci — for near-native speed at the price of
//! suspend, live migration and HA.
//!
//! * [`model`]: models, MACs, attachments, NIC requests and specs.
//! * [`sriov`]: physical and virtual functions as sysfs shows them.

pub mod model;
pub mod sriov;

use std::path::PathBuf;

pub use model::{MacAddr, NicAttachment, NicModel, NicRequest, NicSpec};
pub use sriov::{write_fake_sysfs, PhysicalFunction, Sysfs, VirtualFunction};

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
