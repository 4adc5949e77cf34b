//! Virtual switches, bonds and VM ports on Open vSwitch.
//!
//! * A **vSwitch** is an OVS bridge (kernel datapath when the `openvswitch` module is
//!   loaded, else the userspace `netdev` datapath). It is *external* when it has
//!   uplinks — host interfaces as plain ports, or bonds — and *private* (VM-to-VM only)
//!   otherwise.
//! * A **bond** is an OVS bond port of two or more host interfaces on a vSwitch, in
//!   `active-backup`, `balance-slb` or `balance-tcp` mode (the last one with LACP,
//!   falling back to active-backup when the partner does not speak it). Members are
//!   watched by carrier.
//! * A **VM port** is a tap device `vt<mac>` on a vSwitch, created when the VM starts
//!   (or the NIC is hot-plugged) and removed when it stops, optionally an access port of
//!   one VLAN. VM NICs say where they attach in their spec ([`NicAttachment::Switch`]).
//!
//! The desired state (switches and bonds; VM ports come from the VM specs) persists in
//! `DATA/net/state.json`. Every change computes the full plan against what OVS has and
//! applies it as one OVSDB transaction, then saves the state: a failure half-way leaves
//! the previous state in OVS and on disk. [`NetManager::reconcile`] (call it once at
//! process start) applies the saved state; a second run finds nothing to do.
//!
//! When no system OVS runs, the manager starts its own `ovsdb-server` and `ovs-vswitchd`
//! in a private run directory ([`NetConfig::ovs_run_dir`]); they outlive the process
//! (like the VMs) and [`NetManager::stop_daemons`] stops them.
//!
//!
//! The rest of the crate and the gateway reach the network through the [`Network`] trait
//! ([`api`]); [`NetManager`] is its implementation on Open vSwitch.
//!
//! * [`api`]: the [`Network`] trait and the types it speaks in.
//! * [`config`]: [`NetConfig`] and the datapath choice.
//! * [`manager`]: [`NetManager`]: the lock, the state file, applying plans, VM ports.
//! * [`switches`]: vSwitch and bond changes, their checks, and the views of them.
//! * [`state`]: the desired state; [`plan`]: what OVS must run to reach it.
//! * [`ovs`]: the OVS daemons and commands; [`host`]: host interfaces and taps;
//!   [`hotplug`]: NICs added to and removed from running VMs over QMP.
//!
//! [`NicAttachment::Switch`]: crate::spec::nic::NicAttachment::Switch

pub mod api;
pub mod config;
pub mod host;
pub mod hotplug;
pub mod manager;
pub mod ovs;
pub mod plan;
pub mod state;
pub mod switches;

use std::path::PathBuf;

pub use api::{
    BondRequest, BondStatus, Network, ReconcileReport, SwitchInfo, SwitchKind, SwitchPortInfo,
    SwitchRequest,
};
pub use config::{Datapath, NetConfig};
pub use host::{HostError, HostIfaces};
pub use manager::{vm_port, NetLock, NetManager};
pub use ovs::{BondRuntime, MemberStatus, Ovs, OvsError, OvsMode};
pub use state::{
    tap_name, valid_ifname, BondMode, BondSpec, NetState, StateError, SwitchSpec, VmPort,
};

/// Errors of the network API. Messages are for operators and API clients.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Ovs(#[from] OvsError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("invalid {what} name {name:?}: use 1-15 letters, digits, '.', '_' or '-', starting with a letter or digit")]
    InvalidName { what: &'static str, name: String },
    #[error("a vSwitch named {0:?} already exists")]
    SwitchExists(String),
    #[error("a bond named {0:?} already exists")]
    BondExists(String),
    #[error("the name {name:?} is already taken by {by}")]
    NameTaken { name: String, by: String },
    #[error("no vSwitch named {0:?}")]
    NoSuchSwitch(String),
    #[error("no bond named {0:?}")]
    NoSuchBond(String),
    #[error("vSwitch {switch:?} is used by VM(s) {}; detach their NICs first", vms.join(", "))]
    SwitchInUse { switch: String, vms: Vec<String> },
    #[error("bond {bond:?} needs at least two members, got {count}")]
    TooFewMembers { bond: String, count: usize },
    #[error("interface {0:?} is listed twice")]
    DuplicateMember(String),
    #[error("no host interface named {0:?}")]
    NoSuchInterface(String),
    #[error("interface {iface:?} is already used by {by}")]
    InterfaceInUse { iface: String, by: String },
    #[error("a bond mode needs at least two uplinks")]
    BondModeWithoutBond,
    #[error("the network configuration is busy with another operation; try again")]
    Busy,
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl NetError {
    /// Whether the error is about the caller's input or the configuration's state (as
    /// opposed to a fault of the host).
    pub fn is_client_error(&self) -> bool {
        !matches!(
            self,
            NetError::Ovs(_)
                | NetError::Host(_)
                | NetError::Io { .. }
                | NetError::Busy
                | NetError::State(StateError::Io { .. } | StateError::Corrupt { .. })
        )
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, NetError::NoSuchSwitch(_) | NetError::NoSuchBond(_))
    }
}
