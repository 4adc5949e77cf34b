//! `gateway vm …`: VMs from the command line, on the same data directory as the server.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::cli::args::{JsonFlag, NameArgs};
use vmm_backend::keyboard::KeyboardLayout;
use vmm_backend::nic::NicRequest;
use vmm_backend::{Accel, BootSource, ConsoleConfig, PowerAction, VmBackend, VmDefinition, VmInfo};

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// List VMs with their state.
    List(JsonFlag),
    /// Show one VM.
    Show(NameArgs),
    /// Define a new VM.
    Define(Box<DefineArgs>),
    /// Remove a stopped VM's definition.
    Undefine(NameArgs),
    /// Start a VM.
    Start(NameArgs),
    /// ACPI shutdown; forced off after the grace period.
    Shutdown(ShutdownArgs),
    /// Power off at once.
    Poweroff(NameArgs),
    /// Hard reset.
    Reset(NameArgs),
    /// Pause the VM's CPUs.
    Suspend(NameArgs),
    /// Continue a suspended VM.
    Resume(NameArgs),
    /// The guest's IP addresses (needs the QEMU guest agent in the guest).
    Ip(NameArgs),
    /// A VM's NICs: list, add (hot-plugged when running), remove.
    #[command(subcommand)]
    Nic(NicCommand),
    /// Set the guest's keyboard layout ("type text" on the console pages uses it), or
    /// clear it with `none`.
    KeyboardLayout(KeyboardLayoutArgs),
}

#[derive(Debug, Args)]
pub struct KeyboardLayoutArgs {
    name: String,
    /// en-us, en-gb, de, de-ch, fr, fr-be, fr-ch, es, it, pt, pt-br, nl, sv, no, da,
    /// fi, pl, ja; or none.
    layout: String,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub enum NicCommand {
    /// List a VM's NICs.
    List(NameArgs),
    /// Add a NIC: MODEL[,mac=MAC][,switch=SWITCH[,vlan=N]][,pf=IFACE].
    Add(NicAddArgs),
    /// Remove a NIC by id (nic0, nic1, …).
    Remove(NicRemoveArgs),
}

#[derive(Debug, Args)]
pub struct NicAddArgs {
    vm: String,
    nic: String,
}

#[derive(Debug, Args)]
pub struct NicRemoveArgs {
    vm: String,
    id: String,
}

#[derive(Debug, Args)]
pub struct ShutdownArgs {
    name: String,
    /// Seconds to wait for the guest before forcing it off.
    #[arg(long, default_value_t = 60)]
    grace: u64,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct DefineArgs {
    /// VM name (letters, digits, '.', '_', '-'; at most 63).
    #[arg(long, required_unless_present = "from_file")]
    name: Option<String>,
    /// A JSON VM definition instead of the flags.
    #[arg(long, conflicts_with = "name")]
    from_file: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
    /// Memory in MiB.
    #[arg(long, default_value_t = 256)]
    memory: u64,
    /// Boot this kernel directly.
    #[arg(long, conflicts_with_all = ["disk", "firmware"])]
    kernel: Option<PathBuf>,
    #[arg(long, requires = "kernel")]
    initrd: Option<PathBuf>,
    #[arg(long, requires = "kernel", default_value = "")]
    cmdline: String,
    /// Boot this disk image.
    #[arg(long, conflicts_with = "firmware")]
    disk: Option<PathBuf>,
    /// Create the disk image (qcow2) with this size in MiB.
    #[arg(long, requires = "disk")]
    disk_size: Option<u64>,
    /// Firmware only (no OS).
    #[arg(long)]
    firmware: bool,
    /// vnc, spice or both.
    #[arg(long, default_value = "both")]
    console: String,
    /// A NIC: MODEL[,mac=MAC][,pf=IFACE]; MODEL is e1000, rtl8139, virtio or sriov.
    #[arg(long = "nic")]
    nics: Vec<String>,
    /// auto, kvm or tcg.
    #[arg(long, default_value = "auto")]
    accel: String,
    #[arg(long)]
    autostart: bool,
    /// The guest's keyboard layout (en-us, de, fr, en-gb, ja, …; see `vm keyboard-layout`).
    #[arg(long)]
    keyboard_layout: Option<String>,
    #[arg(long)]
    json: bool,
}

impl DefineArgs {
    fn definition(&self) -> anyhow::Result<VmDefinition> {
        if let Some(f) = &self.from_file {
            let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
            return serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a valid VM definition", f.display()));
        }
        let boot = match (&self.kernel, &self.disk, self.firmware) {
            (Some(k), _, _) => BootSource::Kernel {
                kernel: k.clone(),
                initrd: self.initrd.clone(),
                cmdline: self.cmdline.clone(),
            },
            (None, Some(d), _) => BootSource::Disk {
                path: d.clone(),
                create_size_mib: self.disk_size,
            },
            (None, None, _) => BootSource::Firmware,
        };
        let nics = self
            .nics
            .iter()
            .map(|n| n.parse::<NicRequest>())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(VmDefinition {
            name: self.name.clone().unwrap_or_default(),
            uuid: None,
            vcpus: self.vcpus,
            memory_mib: self.memory,
            boot,
            console: self.console.parse::<ConsoleConfig>()?,
            nics,
            accel: self.accel.parse::<Accel>()?,
            autostart: self.autostart,
            keyboard_layout: self
                .keyboard_layout
                .as_deref()
                .map(str::parse::<KeyboardLayout>)
                .transpose()?,
        })
    }
}

fn print_info(info: &VmInfo, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(info)?);
        return Ok(());
    }
    let s = &info.spec;
    println!("name:        {}", s.name);
    println!("uuid:        {}", s.uuid);
    println!("state:       {}", info.state);
    if let Some(r) = &info.exit_reason {
        println!("last stop:   {r}");
    }
    println!("vcpus:       {}", s.vcpus);
    println!("memory:      {} MiB", s.memory_mib);
    println!("accelerator: {}", s.accel);
    if let Some(l) = &s.keyboard_layout {
        println!("keyboard:    {l}");
    }
    let boot = match &s.boot {
        BootSource::Kernel { kernel, .. } => format!("kernel {}", kernel.display()),
        BootSource::Disk { path, .. } => format!("disk {}", path.display()),
        BootSource::Firmware => "firmware only".to_owned(),
    };
    println!("boot:        {boot}");
    for n in &s.nics {
        println!("nic:         {} {} {}", n.id, n.model, n.mac);
    }
    for c in &info.consoles {
        println!("console:     {} {}", c.kind, c.socket.display());
    }
    if !info.suspendable {
        println!("note:        has an SR-IOV NIC: no suspend, no live migration, no HA");
    }
    Ok(())
}

/// `vm list`: a table, or JSON.
fn print_list(vms: &[vmm_backend::VmInfo], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(vms)?);
        return Ok(());
    }
    println!(
        "{:<24} {:<8} {:>5} {:>8}  CONSOLES",
        "NAME", "STATE", "VCPUS", "MEMORY"
    );
    for v in vms {
        let consoles: Vec<String> = v.consoles.iter().map(|c| c.kind.to_string()).collect();
        println!(
            "{:<24} {:<8} {:>5} {:>5}MiB  {}",
            v.spec.name,
            v.state.to_string(),
            v.spec.vcpus,
            v.spec.memory_mib,
            consoles.join(",")
        );
    }
    Ok(())
}

/// `vm nic list`: one line a NIC, or JSON.
fn print_nics(nics: &[vmm_backend::nic::NicSpec], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(nics)?);
        return Ok(());
    }
    for n in nics {
        let attach = serde_json::to_string(&n.attach)?;
        println!("{} {} {} {attach}", n.id, n.model, n.mac);
    }
    Ok(())
}

/// `vm ip`: one line an address, or JSON.
fn print_addresses(addrs: &[vmm_backend::GuestAddress], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(addrs)?);
        return Ok(());
    }
    for ad in addrs {
        println!("{:<10} {}/{}", ad.interface, ad.address, ad.prefix);
    }
    Ok(())
}

pub async fn run(cmd: VmCommand, cfg: &gateway::config::Config) -> anyhow::Result<()> {
    let backend = gateway::launch::open_backend(cfg, false)?;
    let power = |name: String, action: PowerAction, json: bool| {
        let backend = backend.clone();
        async move {
            let info = backend.power(&name, action).await?;
            if json {
                println!("{}", serde_json::to_string(&info)?);
            } else {
                println!("{name}: {}", info.state);
            }
            anyhow::Ok(())
        }
    };
    match cmd {
        VmCommand::List(f) => print_list(&backend.list().await?, f.json)?,
        VmCommand::Show(a) => print_info(&backend.get(&a.name).await?, a.json)?,
        VmCommand::Define(a) => {
            let spec = backend.define(a.definition()?).await?;
            if a.json {
                println!("{}", serde_json::to_string(&spec)?);
            } else {
                println!("defined {} ({})", spec.name, spec.uuid);
            }
        }
        VmCommand::Undefine(a) => {
            backend.undefine(&a.name).await?;
            if !a.json {
                println!("undefined {}", a.name);
            }
        }
        VmCommand::Start(a) => power(a.name, PowerAction::Start, a.json).await?,
        VmCommand::Poweroff(a) => power(a.name, PowerAction::Poweroff, a.json).await?,
        VmCommand::Reset(a) => power(a.name, PowerAction::Reset, a.json).await?,
        VmCommand::Suspend(a) => power(a.name, PowerAction::Suspend, a.json).await?,
        VmCommand::Resume(a) => power(a.name, PowerAction::Resume, a.json).await?,
        VmCommand::Shutdown(a) => {
            let info = backend
                .shutdown_with_grace(&a.name, Duration::from_secs(a.grace))
                .await?;
            if a.json {
                println!("{}", serde_json::to_string(&info)?);
            } else {
                println!(
                    "{}: {} ({})",
                    a.name,
                    info.state,
                    info.exit_reason.as_deref().unwrap_or("")
                );
            }
        }
        VmCommand::Nic(NicCommand::List(a)) => {
            print_nics(&backend.get(&a.name).await?.spec.nics, a.json)?
        }
        VmCommand::Nic(NicCommand::Add(a)) => {
            let spec = backend.add_nic(&a.vm, a.nic.parse::<NicRequest>()?).await?;
            println!(
                "added {} ({} {}) to {}",
                spec.id, spec.model, spec.mac, a.vm
            );
        }
        VmCommand::Nic(NicCommand::Remove(a)) => {
            let spec = backend.remove_nic(&a.vm, &a.id).await?;
            println!("removed {} from {}", spec.id, a.vm);
        }
        VmCommand::Ip(a) => print_addresses(&backend.guest_addresses(&a.name).await?, a.json)?,
        VmCommand::KeyboardLayout(a) => {
            let layout = match a.layout.as_str() {
                "none" => None,
                l => Some(l.parse::<KeyboardLayout>()?),
            };
            let spec = backend.set_keyboard_layout(&a.name, layout).await?;
            if a.json {
                println!("{}", serde_json::to_string(&spec)?);
            } else {
                match &spec.keyboard_layout {
                    Some(l) => println!("{}: keyboard layout {l}", spec.name),
                    None => println!("{}: no keyboard layout (en-us assumed)", spec.name),
                }
            }
        }
    }
    Ok(())
}
