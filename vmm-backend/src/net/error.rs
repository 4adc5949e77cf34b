//! The error of the network API.

use std::path::PathBuf;

use super::host::HostError;
use super::ovs::OvsError;
use super::state::StateError;

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
