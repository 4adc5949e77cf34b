//! Virtual NIC models, MAC addresses and SR-IOV virtual functions.
//!
//! The capability rules follow the seed notes: `e1000` and `rtl8139` for the widest guest
//! compatibility, `virtio` (the recommended default) for speed, and `sriov` — a PCI
//! virtual function passed through with vfio-pci — for near-native speed at the price of
//! suspend, live migration and HA.
//!
//! * [`model`]: models, MACs, attachments, NIC requests and specs, and [`NicError`].
//! * [`sriov`]: physical and virtual functions as sysfs shows them.

pub mod model;
pub mod sriov;

pub use model::{MacAddr, NicAttachment, NicError, NicModel, NicRequest, NicSpec};
pub use sriov::{write_fake_sysfs, PhysicalFunction, Sysfs, VirtualFunction};
