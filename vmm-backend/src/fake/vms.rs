//! The fake VMs, shared by the backend and its network (which reports the ports on its
//! switches).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::console::ConsoleServer;
use crate::api::VmState;
use crate::spec::vm::VmSpec;

/// One fake VM.
#[derive(Debug)]
pub(super) struct FakeVm {
    pub(super) spec: VmSpec,
    pub(super) state: VmState,
    pub(super) exit_reason: Option<String>,
    /// Listening while the VM runs; dropped (socket removed) when it stops.
    pub(super) consoles: Vec<ConsoleServer>,
}

/// The VMs by name, shared with the network (which reports the ports on its switches).
#[derive(Debug, Default)]
pub(super) struct Vms(Mutex<BTreeMap<String, FakeVm>>);

impl Vms {
    pub(super) fn lock(&self) -> MutexGuard<'_, BTreeMap<String, FakeVm>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
