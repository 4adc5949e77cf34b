//! [`FakeBackend`]: an in-memory [`VmBackend`] (and [`Network`]) for fast tests of the
//! gateway, behind the cargo feature `fake`. No QEMU, no Open vSwitch, no root: VMs are
//! entries in a map that define, start, stop, pause and take NICs with the same refusals
//! as the QEMU backend, and each running VM's consoles are real unix sockets in the run
//! directory given at construction, served by [`console`] (a minimal RFB server for VNC,
//! an echo for SPICE).
//!
//! What it does not do: boot files are not checked, nothing persists, guest addresses
//! are always empty and screenshots are a fixed 1×1 PNG.

pub mod console;
pub mod network;
mod vms;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::api::{
    BackendError, ConsoleEndpoint, ConsoleKind, PowerAction, VmBackend, VmEvent, VmInfo, VmState,
};
use crate::net::{NetError, Network};
use crate::qemu::{GuestAddress, QemuError};
use crate::spec::keyboard::KeyboardLayout;
use crate::spec::nic::{NicModel, NicRequest, NicSpec};
use crate::spec::vm::{SpecError, VmDefinition, VmSpec, MAX_NICS};
use console::ConsoleServer;
use network::FakeNetwork;
use vms::{FakeVm, Vms};

/// A 1×1 PNG, the screenshot of every fake VM.
pub const SCREENSHOT_PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0b, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x60, 0x00, 0x02, 0x00,
    0x00, 0x05, 0x00, 0x01, 0x7a, 0x5e, 0xab, 0x3f, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44,
    0xae, 0x42, 0x60, 0x82,
];

/// VMs in memory. Cheap to clone (clones share the VMs).
#[derive(Debug, Clone)]
pub struct FakeBackend {
    run_dir: PathBuf,
    vms: Arc<Vms>,
    net: Arc<FakeNetwork>,
    events: broadcast::Sender<VmEvent>,
}

fn not_found(name: &str) -> BackendError {
    SpecError::NotFound(name.chars().take(80).collect()).into()
}

impl FakeBackend {
    /// A backend whose console sockets live under `run_dir/<vm>/` (keep the path short:
    /// unix socket paths have 107 bytes) and whose network has no host interfaces.
    pub fn new(run_dir: impl Into<PathBuf>) -> FakeBackend {
        Self::with_host_interfaces(run_dir, &[])
    }

    /// As [`FakeBackend::new`], with host interfaces vSwitches may use as uplinks.
    pub fn with_host_interfaces(run_dir: impl Into<PathBuf>, ifaces: &[&str]) -> FakeBackend {
        let vms = Arc::new(Vms::default());
        let ifaces: BTreeSet<String> = ifaces.iter().map(|s| (*s).to_owned()).collect();
        let (events, _) = broadcast::channel(256);
        FakeBackend {
            run_dir: run_dir.into(),
            net: Arc::new(FakeNetwork::new(vms.clone(), ifaces)),
            vms,
            events,
        }
    }

    fn info(vm: &FakeVm) -> VmInfo {
        let spec = vm.spec.clone();
        VmInfo {
            suspendable: spec.suspend_blocker().is_none(),
            live_migratable: spec.live_migratable(),
            ha_eligible: spec.ha_eligible(),
            state: vm.state,
            qemu_status: match vm.state {
                VmState::Running => Some("running".into()),
                VmState::Paused => Some("paused".into()),
                _ => None,
            },
            pid: None,
            exit_reason: vm.exit_reason.clone(),
            // The remote consoles, as the QEMU backend reports them (not the serial port).
            consoles: vm
                .consoles
                .iter()
                .filter(|c| c.endpoint.kind != ConsoleKind::Serial)
                .map(|c| c.endpoint.clone())
                .collect(),
            spec,
        }
    }

    fn emit(&self, vm: &str, events: &[&str]) {
        for e in events {
            let _ = self.events.send(VmEvent {
                vm: vm.to_owned(),
                event: (*e).to_owned(),
            });
        }
    }

    /// Starts a stopped VM: its console sockets listen.
    fn start(&self, vm: &mut FakeVm) -> Result<(), BackendError> {
        if vm.state != VmState::Stopped {
            return Err(BackendError::AlreadyRunning(vm.spec.name.clone()));
        }
        let dir = self.run_dir.join(&vm.spec.name);
        let mut consoles = Vec::new();
        if vm.spec.console.has_vnc() {
            consoles.push(ConsoleServer::listen(&dir, ConsoleKind::Vnc)?);
        }
        if vm.spec.console.has_spice() {
            consoles.push(ConsoleServer::listen(&dir, ConsoleKind::Spice)?);
        }
        consoles.push(ConsoleServer::listen(&dir, ConsoleKind::Serial)?);
        vm.consoles = consoles;
        vm.state = VmState::Running;
        vm.exit_reason = None;
        Ok(())
    }

    fn stop(vm: &mut FakeVm, reason: &str) {
        vm.consoles.clear();
        vm.state = VmState::Stopped;
        vm.exit_reason = Some(reason.to_owned());
    }

    /// Applies a power action to a VM; returns the events it causes.
    fn act(
        &self,
        vm: &mut FakeVm,
        action: PowerAction,
    ) -> Result<&'static [&'static str], BackendError> {
        let name = vm.spec.name.clone();
        if action == PowerAction::Suspend {
            if let Some(reason) = vm.spec.suspend_blocker() {
                return Err(BackendError::SuspendRefused { vm: name, reason });
            }
        }
        match (action, vm.state) {
            (PowerAction::Start, _) => self.start(vm).map(|()| &[][..]),
            (_, VmState::Stopped) => Err(BackendError::NotRunning(name)),
            (PowerAction::Shutdown, _) => {
                Self::stop(
                    vm,
                    "shut down by the guest after an ACPI power-button request",
                );
                Ok(&["powerdown", "shutdown", "stopped"][..])
            }
            (PowerAction::Poweroff, _) => {
                Self::stop(vm, "powered off by the administrator");
                Ok(&["shutdown", "stopped"][..])
            }
            (PowerAction::Reset, _) => Ok(&["reset"][..]),
            (PowerAction::Suspend, VmState::Paused) => Err(BackendError::AlreadyPaused(name)),
            (PowerAction::Suspend, _) => {
                vm.state = VmState::Paused;
                Ok(&["paused"][..])
            }
            (PowerAction::Resume, VmState::Paused) => {
                vm.state = VmState::Running;
                Ok(&["running"][..])
            }
            (PowerAction::Resume, _) => Err(BackendError::NotPaused(name)),
        }
    }
}

#[async_trait]
impl VmBackend for FakeBackend {
    async fn list(&self) -> Result<Vec<VmInfo>, BackendError> {
        Ok(self.vms.lock().values().map(Self::info).collect())
    }

    async fn get(&self, name: &str) -> Result<VmInfo, BackendError> {
        let vms = self.vms.lock();
        vms.get(name).map(Self::info).ok_or_else(|| not_found(name))
    }

    async fn define(&self, def: VmDefinition) -> Result<VmSpec, BackendError> {
        let mut vms = self.vms.lock();
        let others: Vec<VmSpec> = vms.values().map(|v| v.spec.clone()).collect();
        let spec = def.into_spec(&others)?;
        vms.insert(
            spec.name.clone(),
            FakeVm {
                spec: spec.clone(),
                state: VmState::Stopped,
                exit_reason: None,
                consoles: Vec::new(),
            },
        );
        Ok(spec)
    }

    async fn undefine(&self, name: &str) -> Result<(), BackendError> {
        let mut vms = self.vms.lock();
        let vm = vms.get(name).ok_or_else(|| not_found(name))?;
        if vm.state != VmState::Stopped {
            return Err(BackendError::StillRunning(name.to_owned()));
        }
        vms.remove(name);
        Ok(())
    }

    async fn power(&self, name: &str, action: PowerAction) -> Result<VmInfo, BackendError> {
        let (info, events) = {
            let mut vms = self.vms.lock();
            let vm = vms.get_mut(name).ok_or_else(|| not_found(name))?;
            let events = self.act(vm, action)?;
            (Self::info(vm), events)
        };
        self.emit(name, events);
        Ok(info)
    }

    async fn console(
        &self,
        name: &str,
        kind: ConsoleKind,
    ) -> Result<ConsoleEndpoint, BackendError> {
        let vms = self.vms.lock();
        let vm = vms.get(name).ok_or_else(|| not_found(name))?;
        let has = match kind {
            ConsoleKind::Vnc => vm.spec.console.has_vnc(),
            ConsoleKind::Spice => vm.spec.console.has_spice(),
            ConsoleKind::Serial => true,
        };
        if !has {
            return Err(BackendError::NoConsole {
                vm: name.to_owned(),
                kind,
            });
        }
        vm.consoles
            .iter()
            .find(|c| c.endpoint.kind == kind)
            .map(|c| c.endpoint.clone())
            .ok_or_else(|| BackendError::NotRunning(name.to_owned()))
    }

    async fn guest_addresses(&self, name: &str) -> Result<Vec<GuestAddress>, BackendError> {
        let vms = self.vms.lock();
        match vms.get(name).ok_or_else(|| not_found(name))?.state {
            VmState::Stopped => Err(BackendError::NotRunning(name.to_owned())),
            _ => Ok(Vec::new()),
        }
    }

    async fn screenshot(&self, name: &str) -> Result<Vec<u8>, BackendError> {
        let vms = self.vms.lock();
        match vms.get(name).ok_or_else(|| not_found(name))?.state {
            VmState::Stopped => Err(BackendError::NotRunning(name.to_owned())),
            _ => Ok(SCREENSHOT_PNG.to_vec()),
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<VmEvent> {
        self.events.subscribe()
    }

    async fn set_keyboard_layout(
        &self,
        vm: &str,
        layout: Option<KeyboardLayout>,
    ) -> Result<VmSpec, BackendError> {
        let mut vms = self.vms.lock();
        let v = vms.get_mut(vm).ok_or_else(|| not_found(vm))?;
        v.spec.keyboard_layout = layout;
        Ok(v.spec.clone())
    }

    async fn add_nic(&self, vm: &str, req: NicRequest) -> Result<NicSpec, BackendError> {
        req.validate()?;
        // The network's state first: it is never locked while the VMs are.
        let switches = self.net.state()?.switches;
        let mut vms = self.vms.lock();
        let all: Vec<VmSpec> = vms.values().map(|v| v.spec.clone()).collect();
        let v = vms.get_mut(vm).ok_or_else(|| not_found(vm))?;
        if v.spec.nics.len() >= MAX_NICS {
            return Err(SpecError::TooManyNics(v.spec.nics.len() + 1).into());
        }
        if let Some((switch, _)) = req.attach.switch() {
            if !switches.contains_key(switch) {
                return Err(NetError::NoSuchSwitch(switch.to_owned()).into());
            }
        }
        let nic = v.spec.new_nic(req, &all)?;
        v.spec.nics.push(nic.clone());
        Ok(nic)
    }

    async fn remove_nic(&self, vm: &str, nic_id: &str) -> Result<NicSpec, BackendError> {
        let mut vms = self.vms.lock();
        let v = vms.get_mut(vm).ok_or_else(|| not_found(vm))?;
        let idx = v
            .spec
            .nics
            .iter()
            .position(|n| n.id == nic_id)
            .ok_or_else(|| BackendError::NoSuchNic {
                vm: vm.to_owned(),
                nic: nic_id.chars().take(40).collect(),
            })?;
        if v.state != VmState::Stopped && v.spec.nics[idx].model == NicModel::Sriov {
            return Err(QemuError::Qmp {
                command: "device_del",
                message: "an SR-IOV NIC cannot be hot-unplugged; stop the VM first".into(),
            }
            .into());
        }
        Ok(v.spec.nics.remove(idx))
    }

    fn network(&self) -> &dyn Network {
        self.net.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{BondMode, SwitchRequest};
    use crate::spec::vm::{Accel, BootSource, ConsoleConfig};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn def(name: &str, console: ConsoleConfig) -> VmDefinition {
        VmDefinition {
            name: name.to_owned(),
            uuid: None,
            vcpus: 1,
            memory_mib: 128,
            boot: BootSource::Firmware,
            console,
            nics: Vec::new(),
            accel: Accel::Tcg,
            autostart: false,
            keyboard_layout: None,
        }
    }

    /// The client side of RFB 3.8 against a fake VNC console, and one empty update.
    async fn rfb_handshake(c: &mut tokio::net::UnixStream) {
        let mut greeting = [0u8; 12];
        c.read_exact(&mut greeting).await.expect("greeting");
        assert_eq!(&greeting, console::RFB_GREETING);
        c.write_all(b"RFB 003.008\n").await.expect("write");
        let mut types = [0u8; 2];
        c.read_exact(&mut types).await.expect("security types");
        assert_eq!(types, [1, 1], "only None");
        c.write_all(&[1]).await.expect("choose None");
        let mut result = [0u8; 4];
        c.read_exact(&mut result).await.expect("result");
        assert_eq!(result, [0, 0, 0, 0]);
        c.write_all(&[1]).await.expect("ClientInit");
        let mut init = [0u8; 28];
        c.read_exact(&mut init).await.expect("ServerInit");
        assert_eq!(init[..4], [2, 128, 1, 224], "640x480");
        assert_eq!(&init[24..], b"fake");
        c.write_all(&[3, 0, 0, 0, 0, 0, 2, 128, 1, 224])
            .await
            .expect("FramebufferUpdateRequest");
        let mut update = [0u8; 4];
        c.read_exact(&mut update).await.expect("update");
        assert_eq!(update, [0, 0, 0, 0], "an update of no rectangles");
    }

    #[tokio::test]
    async fn vms_start_with_listening_consoles_and_stop() {
        let dir = tempfile::tempdir().expect("tmp");
        let b = FakeBackend::new(dir.path());
        let mut events = b.subscribe();
        b.define(def("web", ConsoleConfig::Both))
            .await
            .expect("define");
        assert!(matches!(
            b.define(def("web", ConsoleConfig::Vnc)).await,
            Err(BackendError::Spec(SpecError::AlreadyExists(_)))
        ));
        assert!(matches!(
            b.console("web", ConsoleKind::Vnc).await,
            Err(BackendError::NotRunning(_))
        ));
        let info = b.power("web", PowerAction::Start).await.expect("start");
        assert_eq!(info.state, VmState::Running);
        assert_eq!(info.consoles.len(), 2);
        assert!(matches!(
            b.power("web", PowerAction::Start).await,
            Err(BackendError::AlreadyRunning(_))
        ));

        let vnc = b.console("web", ConsoleKind::Vnc).await.expect("vnc");
        let mut c = tokio::net::UnixStream::connect(&vnc.socket)
            .await
            .expect("connect");
        rfb_handshake(&mut c).await;
        let spice = b.console("web", ConsoleKind::Spice).await.expect("spice");
        let mut s = tokio::net::UnixStream::connect(&spice.socket)
            .await
            .expect("connect spice");
        s.write_all(b"ping").await.expect("write");
        let mut pong = [0u8; 4];
        s.read_exact(&mut pong).await.expect("echo");
        assert_eq!(&pong, b"ping");
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&vnc.socket)
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        assert!(matches!(
            b.undefine("web").await,
            Err(BackendError::StillRunning(_))
        ));
        let info = b.power("web", PowerAction::Suspend).await.expect("pause");
        assert_eq!(info.state, VmState::Paused);
        assert!(matches!(
            b.power("web", PowerAction::Suspend).await,
            Err(BackendError::AlreadyPaused(_))
        ));
        b.power("web", PowerAction::Resume).await.expect("resume");
        let info = b.power("web", PowerAction::Poweroff).await.expect("off");
        let mut rest = Vec::new();
        assert_eq!(
            c.read_to_end(&mut rest).await.expect("closed"),
            0,
            "clients are disconnected when the VM stops"
        );
        assert_eq!(info.state, VmState::Stopped);
        assert!(info.consoles.is_empty());
        assert!(!vnc.socket.exists(), "socket removed when the VM stops");
        assert!(tokio::net::UnixStream::connect(&vnc.socket).await.is_err());
        assert_eq!(
            info.exit_reason.as_deref(),
            Some("powered off by the administrator")
        );
        let mut seen = Vec::new();
        while let Ok(e) = events.try_recv() {
            seen.push(e.event);
        }
        assert_eq!(seen, ["paused", "running", "shutdown", "stopped"]);
        b.undefine("web").await.expect("undefine");
        assert!(b.get("web").await.is_err_and(|e| e.is_not_found()));
    }

    #[tokio::test]
    async fn consoles_nics_and_switches_are_checked() {
        let dir = tempfile::tempdir().expect("tmp");
        let b = FakeBackend::with_host_interfaces(dir.path(), &["eth1", "eth2"]);
        b.define(def("db", ConsoleConfig::Vnc))
            .await
            .expect("define");
        b.power("db", PowerAction::Start).await.expect("start");
        assert!(matches!(
            b.console("db", ConsoleKind::Spice).await,
            Err(BackendError::NoConsole { .. })
        ));
        assert_eq!(
            b.screenshot("db").await.expect("png")[..8],
            *b"\x89PNG\r\n\x1a\n"
        );

        let net = b.network();
        let nic: NicRequest = "virtio,switch=lan".parse().expect("nic");
        assert!(matches!(
            b.add_nic("db", nic.clone()).await,
            Err(BackendError::Net(NetError::NoSuchSwitch(_)))
        ));
        let sw = net
            .create_switch(SwitchRequest {
                name: "lan".into(),
                uplinks: vec!["eth1".into(), "eth2".into()],
                bond_mode: Some(BondMode::BalanceTcp),
                bond_name: None,
            })
            .await
            .expect("switch");
        assert_eq!(sw.bonds, ["lan-bond"]);
        assert!(matches!(
            net.create_switch(SwitchRequest {
                name: "wan".into(),
                uplinks: vec!["eth1".into()],
                bond_mode: None,
                bond_name: None,
            })
            .await,
            Err(NetError::InterfaceInUse { .. })
        ));
        let added = b.add_nic("db", nic).await.expect("nic");
        assert_eq!(added.id, "nic0");
        let ports = net.get_switch("lan").expect("lan").ports;
        assert_eq!(ports.len(), 1);
        assert!(ports[0].active);
        assert!(matches!(
            net.delete_switch("lan").await,
            Err(NetError::SwitchInUse { .. })
        ));
        assert!(net.bond_status("lan-bond").await.expect("bond").lacp);
        b.remove_nic("db", "nic0").await.expect("remove");
        net.delete_switch("lan").await.expect("delete");
        assert!(net.list_bonds().expect("bonds").is_empty());
        assert_eq!(net.reconcile().await.expect("reconcile").ovs_commands, 0);
    }
}
