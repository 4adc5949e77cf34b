//! Open vSwitch: the daemons (a system instance, or our own private pair) and the
//! `ovs-vsctl` / `ovs-appctl` commands, with their JSON output parsed.
//!
//! Private daemons live in one run directory (mode 0700): `conf.db`, `db.sock`,
//! pidfiles, unixctl sockets and logs. They are started detached (`--detach
//! --pidfile`), so they outlive the process that started them (like the VMs' QEMUs), and
//! the next process finds them by their pidfiles. [`Ovs::stop`] stops them cleanly
//! (`exit --cleanup`), which also removes the bridges' datapath devices.
//!
//! * [`client`]: [`Ovs`], a connection to running daemons, and its commands.
//! * [`daemon`]: starting and stopping the private daemons.
//! * [`command`]: running one OVS program.
//! * [`parse`]: the JSON and text output of the commands (pure, unit-tested).
//!
//! Imports go `client` → `daemon` → `command`, and `client` → `parse`; this file holds
//! only re-exports.

pub mod client;
pub mod command;
pub mod daemon;
pub mod error;
pub mod parse;

pub use client::{Ovs, OvsMode};
pub use daemon::stop_private;
pub use error::OvsError;
pub use parse::{
    map_values, opt_string, parse_bond_show, parse_table, set_values, BondRuntime, MemberStatus,
    Row,
};
