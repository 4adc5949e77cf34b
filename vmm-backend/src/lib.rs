//! The host side of the VM console gateway: QEMU virtual machines, their NICs, and (later)
//! virtual switches and bonds. No HTTP, no TLS, no notion of links or users.
//!
//! The gateway talks to it only through [`VmBackend`].

pub mod api;
pub mod backend;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod net;
pub mod qemu;
pub mod spec;
pub mod util;

pub use spec::{nic, vm};
pub use util::lockfile;

pub use api::console;
pub use api::{
    BackendError, ConsoleEndpoint, ConsoleKind, PowerAction, VmBackend, VmEvent, VmInfo, VmState,
};
pub use backend::{BackendConfig, QemuBackend};
pub use qemu::GuestAddress;
pub use vm::{Accel, BootSource, ConsoleConfig, VmDefinition, VmSpec};
