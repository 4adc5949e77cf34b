//! What the user defines: VM specs and their NICs, validated, and persisted under the
//! data directory. Knows nothing of QEMU or the network; imports only [`crate::util`].
//!
//! * [`vm`]: VM definitions and specs, their limits and validation.
//! * [`nic`]: NIC models, MACs, attachments, SR-IOV functions.
//! * [`keyboard`]: the guest's keyboard layout.
//! * [`store`]: the spec files.

pub mod keyboard;
pub mod nic;
pub mod store;
pub mod vm;

pub use store::SpecStore;
