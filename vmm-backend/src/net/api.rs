//! The network as the rest of the crate and the gateway see it: the [`Network`] trait
//! (vSwitches, bonds, reconciling) and the requests and reports it speaks in.

use async_trait::async_trait;
use serde::Serialize;

use super::error::NetError;
use super::ovs::MemberStatus;
use super::state::{BondMode, BondSpec, NetState};

/// Virtual switches and bonds: what the admin API and the CLI may do with the network.
/// [`super::NetManager`] implements it on Open vSwitch; a fake can hold it in memory.
#[async_trait]
pub trait Network: Send + Sync + std::fmt::Debug {
    /// The saved desired state (vSwitches and bonds).
    fn state(&self) -> Result<NetState, NetError>;
    /// Every vSwitch, by name.
    fn list_switches(&self) -> Result<Vec<SwitchInfo>, NetError>;
    /// One vSwitch.
    fn get_switch(&self, name: &str) -> Result<SwitchInfo, NetError>;
    /// Creates a vSwitch (its uplinks bonded when there are two or more).
    async fn create_switch(&self, req: SwitchRequest) -> Result<SwitchInfo, NetError>;
    /// Deletes a vSwitch and its bonds; refused while a VM has a NIC on it.
    async fn delete_switch(&self, name: &str) -> Result<(), NetError>;
    /// Every bond's configuration, by name.
    fn list_bonds(&self) -> Result<Vec<BondSpec>, NetError>;
    /// Creates a bond on an existing vSwitch.
    async fn create_bond(&self, req: BondRequest) -> Result<BondSpec, NetError>;
    /// A bond's configuration and the state of its members now.
    async fn bond_status(&self, name: &str) -> Result<BondStatus, NetError>;
    /// Changes a bond's mode.
    async fn set_bond_mode(&self, name: &str, mode: BondMode) -> Result<BondSpec, NetError>;
    /// Deletes a bond.
    async fn delete_bond(&self, name: &str) -> Result<(), NetError>;
    /// Makes the host match the saved state (at process start); idempotent.
    async fn reconcile(&self) -> Result<ReconcileReport, NetError>;
    /// Stops daemons this network started for itself, if any.
    fn stop_daemons(&self) -> Result<(), NetError>;
}

/// What to create: a private vSwitch (no uplinks), one with a plain uplink, or one whose
/// two or more uplinks form a bond (named `bond_name`, default `<name>-bond`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchRequest {
    pub name: String,
    #[serde(default)]
    pub uplinks: Vec<String>,
    #[serde(default)]
    pub bond_mode: Option<BondMode>,
    #[serde(default)]
    pub bond_name: Option<String>,
}

/// A new bond on an existing vSwitch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BondRequest {
    pub name: String,
    pub switch: String,
    pub members: Vec<String>,
    #[serde(default)]
    pub mode: BondMode,
}

/// External (has uplinks) or private.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SwitchKind {
    External,
    Private,
}

/// A VM NIC defined on a vSwitch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SwitchPortInfo {
    pub vm: String,
    pub nic: String,
    pub mac: String,
    pub vlan: Option<u16>,
    pub tap: String,
    /// The VM runs, so the tap port exists.
    pub active: bool,
}

/// What the API reports about one vSwitch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SwitchInfo {
    pub name: String,
    pub kind: SwitchKind,
    pub datapath: String,
    pub uplinks: Vec<String>,
    pub bonds: Vec<String>,
    pub ports: Vec<SwitchPortInfo>,
}

/// A bond's configuration and run-time state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BondStatus {
    #[serde(flatten)]
    pub spec: BondSpec,
    /// Whether LACP is enabled (balance-tcp).
    pub lacp: bool,
    /// The member carrying traffic now (active-backup, or the fallback of balance-tcp).
    pub active: Option<String>,
    pub members: Vec<MemberStatus>,
    /// OVS's LACP status (`off`, `negotiated`, `configured`).
    pub lacp_status: String,
}

/// What [`Network::reconcile`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct ReconcileReport {
    /// OVS commands applied (0: OVS already matched).
    pub ovs_commands: usize,
    /// Leftover tap devices of stopped VMs that were removed.
    pub removed_taps: Vec<String>,
}
