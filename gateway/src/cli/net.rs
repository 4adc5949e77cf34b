//! `gateway vswitch …` and `gateway bond …`: virtual switches and bonds (Open vSwitch),
//! on the same data directory as the server.

use clap::{Args, Subcommand};
use gateway::config::Config;
use vmm_backend::net::{BondMode, BondRequest, SwitchRequest};
use vmm_backend::VmBackend;

use crate::cli::args::{JsonFlag, NameArgs};

#[derive(Debug, Subcommand)]
pub enum SwitchCommand {
    /// List vSwitches.
    List(JsonFlag),
    /// Show one vSwitch.
    Show(NameArgs),
    /// Create a vSwitch: private (no --uplink), external (one), or bonded uplinks (two or more).
    Create(SwitchArgs),
    /// Delete a vSwitch (refused while VMs use it).
    Delete(NameArgs),
}

#[derive(Debug, Args)]
pub struct SwitchArgs {
    name: String,
    /// A host interface (LAN port) to use as uplink; repeat for several.
    #[arg(long = "uplink")]
    uplinks: Vec<String>,
    /// With several uplinks: active-backup (default), balance-slb or balance-tcp.
    #[arg(long)]
    bond_mode: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub enum BondCommand {
    /// List bonds.
    List(JsonFlag),
    /// A bond's status: mode, LACP, members and the active one.
    Show(NameArgs),
    /// Bond two or more free interfaces on a vSwitch.
    Create(BondArgs),
    /// Change a bond's mode.
    SetMode(ModeArgs),
    /// Delete a bond.
    Delete(NameArgs),
}

#[derive(Debug, Args)]
pub struct BondArgs {
    name: String,
    #[arg(long)]
    switch: String,
    /// A member interface; at least two.
    #[arg(long = "member", required = true)]
    members: Vec<String>,
    #[arg(long, default_value = "active-backup")]
    mode: String,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ModeArgs {
    name: String,
    mode: String,
}

fn mode(s: &str) -> anyhow::Result<BondMode> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| {
        anyhow::anyhow!("unknown bond mode {s:?} (active-backup, balance-slb or balance-tcp)")
    })
}

fn print<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub async fn run_switch(cmd: SwitchCommand, cfg: &Config) -> anyhow::Result<()> {
    let backend = gateway::launch::open_backend(cfg, false)?;
    let net = backend.network();
    match cmd {
        SwitchCommand::List(j) => {
            let all = net.list_switches()?;
            if j.json {
                println!("{}", serde_json::to_string(&all)?);
            } else {
                for s in all {
                    println!("{}", serde_json::to_string(&s)?);
                }
            }
        }
        SwitchCommand::Show(a) => print(&net.get_switch(&a.name)?)?,
        SwitchCommand::Create(a) => {
            let req = SwitchRequest {
                name: a.name,
                uplinks: a.uplinks,
                bond_mode: a.bond_mode.as_deref().map(mode).transpose()?,
                bond_name: None,
            };
            let info = net.create_switch(req).await?;
            if a.json {
                println!("{}", serde_json::to_string(&info)?);
            } else {
                print(&info)?;
            }
        }
        SwitchCommand::Delete(a) => {
            net.delete_switch(&a.name).await?;
            println!("deleted {}", a.name);
        }
    }
    Ok(())
}

pub async fn run_bond(cmd: BondCommand, cfg: &Config) -> anyhow::Result<()> {
    let backend = gateway::launch::open_backend(cfg, false)?;
    let net = backend.network();
    match cmd {
        BondCommand::List(j) => {
            let all = net.list_bonds()?;
            if j.json {
                println!("{}", serde_json::to_string(&all)?);
            } else {
                for b in all {
                    println!("{}", serde_json::to_string(&b)?);
                }
            }
        }
        BondCommand::Show(a) => print(&net.bond_status(&a.name).await?)?,
        BondCommand::Create(a) => {
            let req = BondRequest {
                name: a.name,
                switch: a.switch,
                members: a.members,
                mode: mode(&a.mode)?,
            };
            let b = net.create_bond(req).await?;
            if a.json {
                println!("{}", serde_json::to_string(&b)?);
            } else {
                print(&b)?;
            }
        }
        BondCommand::SetMode(a) => print(&net.set_bond_mode(&a.name, mode(&a.mode)?).await?)?,
        BondCommand::Delete(a) => {
            net.delete_bond(&a.name).await?;
            println!("deleted {}", a.name);
        }
    }
    Ok(())
}
