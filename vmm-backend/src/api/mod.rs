//! The backend API: [`VmBackend`], the one boundary the gateway uses. It knows VMs by
//! name, asks for power actions, console sockets and guest addresses, reaches the
//! network through [`Network`], and never sees QEMU itself.
//!
//! * [`error`]: [`BackendError`]; [`types`]: states, power actions, reports, events;
//!   [`console`]: console kinds and endpoints.

pub mod console;
pub mod error;
pub mod types;

use async_trait::async_trait;
use tokio::sync::broadcast;

pub use console::{ConsoleEndpoint, ConsoleKind};
pub use error::BackendError;
pub use types::{PowerAction, VmEvent, VmInfo, VmState};

use crate::net::Network;
use crate::qemu::GuestAddress;
use crate::spec::keyboard::KeyboardLayout;
use crate::spec::nic::{NicRequest, NicSpec};
use crate::spec::vm::{VmDefinition, VmSpec};

/// The public API of the backend: the one thing the gateway depends on.
#[async_trait]
pub trait VmBackend: Send + Sync + std::fmt::Debug {
    async fn list(&self) -> Result<Vec<VmInfo>, BackendError>;
    async fn get(&self, name: &str) -> Result<VmInfo, BackendError>;
    async fn define(&self, def: VmDefinition) -> Result<VmSpec, BackendError>;
    async fn undefine(&self, name: &str) -> Result<(), BackendError>;
    async fn power(&self, name: &str, action: PowerAction) -> Result<VmInfo, BackendError>;
    /// The socket of a running VM's console.
    async fn console(&self, name: &str, kind: ConsoleKind)
        -> Result<ConsoleEndpoint, BackendError>;
    async fn guest_addresses(&self, name: &str) -> Result<Vec<GuestAddress>, BackendError>;
    /// A PNG of a running VM's screen, as QEMU renders it (QMP `screendump`).
    async fn screenshot(&self, name: &str) -> Result<Vec<u8>, BackendError>;
    /// Events of all VMs (state changes seen on QMP).
    fn subscribe(&self) -> broadcast::Receiver<VmEvent>;
    /// Adds a NIC to a VM's spec, hot-plugging it when the VM runs.
    async fn add_nic(&self, vm: &str, req: NicRequest) -> Result<NicSpec, BackendError>;
    /// Removes a NIC from a VM's spec, unplugging it when the VM runs.
    async fn remove_nic(&self, vm: &str, nic_id: &str) -> Result<NicSpec, BackendError>;
    /// Sets (or clears) the guest's keyboard layout in a VM's spec. Takes effect for
    /// consoles opened afterwards; the running VM is not touched.
    async fn set_keyboard_layout(
        &self,
        vm: &str,
        layout: Option<KeyboardLayout>,
    ) -> Result<VmSpec, BackendError>;
    /// Virtual switches and bonds, whatever implements them.
    fn network(&self) -> &dyn Network;
}
