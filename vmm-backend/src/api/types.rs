//! What the backend API speaks in: VM states, power actions, VM reports and events.

use serde::Serialize;

use super::console::ConsoleEndpoint;
use crate::spec::vm::VmSpec;

/// A VM's run state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    Stopped,
    Running,
    Paused,
    /// QEMU runs but the guest is in another state (shutting down, crashed, …).
    Other,
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VmState::Stopped => "stopped",
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Other => "other",
        })
    }
}

/// A power action, as named in the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerAction {
    Start,
    Shutdown,
    Poweroff,
    Reset,
    Suspend,
    Resume,
}

impl std::str::FromStr for PowerAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "start" => PowerAction::Start,
            "shutdown" => PowerAction::Shutdown,
            "poweroff" => PowerAction::Poweroff,
            "reset" => PowerAction::Reset,
            "suspend" => PowerAction::Suspend,
            "resume" => PowerAction::Resume,
            o => return Err(format!("unknown action {o:?}")),
        })
    }
}

/// What the backend reports about one VM.
#[derive(Debug, Clone, Serialize)]
pub struct VmInfo {
    pub spec: VmSpec,
    pub state: VmState,
    /// QEMU's own run state name when running (`running`, `paused`, `shutdown`, …).
    pub qemu_status: Option<String>,
    pub pid: Option<i32>,
    /// Why the VM last stopped, when known.
    pub exit_reason: Option<String>,
    pub consoles: Vec<ConsoleEndpoint>,
    pub suspendable: bool,
    pub live_migratable: bool,
    pub ha_eligible: bool,
}

/// Something that happened to a VM, for listeners such as the gateway's sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmEvent {
    pub vm: String,
    pub event: String,
}
