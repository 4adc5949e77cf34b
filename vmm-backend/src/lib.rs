//! The host side of the VM console gateway: QEMU virtual machines, their NICs, virtual
//! switches and bonds. No HTTP, no TLS, no notion of links or users.
//!
//! The gateway talks to it only through [`VmBackend`] (and the [`net::Network`] it hands
//! out). The folders are the layers; each imports only the ones below it:
//!
//! ```text
//! backend/ QemuBackend: VmBackend on QEMU + OVS   fake/ FakeBackend, feature "fake":
//!          (config, lifecycle, status, nics)            VMs in memory, console sockets
//! api/     VmBackend trait, BackendError, PowerAction, VmInfo, VmEvent, ConsoleKind
//! net/     Network trait + NetManager: vSwitches, bonds, OVS, state, plan, host, hotplug
//! qemu/    run dir, command line, process, QMP, guest agent
//! spec/    VM specs, NICs (model, SR-IOV), the spec store
//! util/    leaf helpers: valid_ifname, write_atomic, lockfile (imports nothing of ours)
//! ```
//!
//! Imports go down only (`backend`/`fake` → `api` → `net` → `qemu` → `spec` → `util`,
//! skipping layers allowed); within a folder, `mod.rs` only declares and re-exports.

pub mod api;
pub mod backend;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod net;
pub mod qemu;
pub mod spec;
pub mod util;

pub use spec::{keyboard, nic, vm};
pub use util::lockfile;

pub use api::console;
pub use api::{
    BackendError, ConsoleEndpoint, ConsoleKind, PowerAction, VmBackend, VmEvent, VmInfo, VmState,
};
pub use backend::{BackendConfig, QemuBackend};
pub use qemu::GuestAddress;
pub use vm::{Accel, BootSource, ConsoleConfig, VmDefinition, VmSpec};
