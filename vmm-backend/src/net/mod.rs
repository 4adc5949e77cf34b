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
pub mod error;
pub mod host;
pub mod hotplug;
pub mod manager;
pub mod ovs;
pub mod plan;
pub mod state;
pub mod switches;

pub use api::{
    BondRequest, BondStatus, Network, ReconcileReport, SwitchInfo, SwitchKind, SwitchPortInfo,
    SwitchRequest,
};
pub use config::{Datapath, NetConfig};
pub use error::NetError;
pub use host::{HostError, HostIfaces};
pub use manager::{vm_port, NetLock, NetManager};
pub use ovs::{BondRuntime, MemberStatus, Ovs, OvsError, OvsMode};
pub use state::{
    tap_name, valid_ifname, BondMode, BondSpec, NetState, StateError, SwitchSpec, VmPort,
};
