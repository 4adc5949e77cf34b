//! The [`VmBackend`] trait on [`QemuBackend`].

use std::path::Path;

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::{QemuBackend, MAX_SCREENSHOT_BYTES};
use crate::api::{
    BackendError, ConsoleEndpoint, ConsoleKind, PowerAction, VmBackend, VmEvent, VmInfo,
};
use crate::net::Network;
use crate::qemu::{self, GuestAddress};
use crate::spec::keyboard::KeyboardLayout;
use crate::spec::nic::{NicRequest, NicSpec};
use crate::spec::vm::{BootSource, SpecError, VmDefinition, VmSpec};

/// Reads a file of at most `cap` bytes.
async fn read_capped(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let f = tokio::fs::File::open(path).await?;
    let mut buf = Vec::new();
    f.take(cap + 1).read_to_end(&mut buf).await?;
    if buf.len() as u64 > cap {
        return Err(std::io::Error::other(format!("larger than {cap} bytes")));
    }
    Ok(buf)
}

#[async_trait]
impl VmBackend for QemuBackend {
    async fn list(&self) -> Result<Vec<VmInfo>, BackendError> {
        let mut out = Vec::new();
        for spec in self.inner.specs.list()? {
            out.push(self.info(spec).await?);
        }
        Ok(out)
    }

    async fn get(&self, name: &str) -> Result<VmInfo, BackendError> {
        let spec = self.inner.specs.get(name)?;
        self.info(spec).await
    }

    async fn define(&self, def: VmDefinition) -> Result<VmSpec, BackendError> {
        def.validate_shape()?;
        let _lock = self.lock_specs().await?;
        let others = self.inner.specs.list()?;
        let spec = def.into_spec(&others)?;
        let mut created_disk = None;
        if let BootSource::Disk {
            path,
            create_size_mib: Some(size),
        } = &spec.boot
        {
            let out = tokio::process::Command::new(&self.inner.cfg.qemu_img)
                .arg("create")
                .arg("-q")
                .arg("-f")
                .arg("qcow2")
                .arg(path)
                .arg(format!("{size}M"))
                .output()
                .await
                .map_err(|e| SpecError::DiskCreate(e.to_string()))?;
            if !out.status.success() {
                let msg = String::from_utf8_lossy(&out.stderr);
                return Err(SpecError::DiskCreate(msg.trim().chars().take(300).collect()).into());
            }
            created_disk = Some(path.clone());
        }
        if let Err(e) = self.inner.specs.put(&spec) {
            if let Some(p) = created_disk {
                let _ = std::fs::remove_file(p);
            }
            return Err(e.into());
        }
        tracing::info!(vm = %spec.name, "defined");
        Ok(spec)
    }

    async fn undefine(&self, name: &str) -> Result<(), BackendError> {
        let _lock = self.lock_specs().await?;
        let spec = self.inner.specs.get(name)?;
        let _vm = self.lock_vm(name).await?;
        let run = self.run_dir(name);
        if qemu::live_pid(&run, &spec.uuid).is_some() {
            return Err(BackendError::StillRunning(name.to_owned()));
        }
        self.inner.specs.remove(name)?;
        let _ = std::fs::remove_dir_all(&run.dir);
        let _ = std::fs::remove_file(run.lock());
        tracing::info!(vm = %name, "undefined");
        Ok(())
    }

    async fn power(&self, name: &str, action: PowerAction) -> Result<VmInfo, BackendError> {
        if action == PowerAction::Shutdown {
            return self
                .shutdown_with_grace(name, self.inner.cfg.shutdown_grace)
                .await;
        }
        let spec = self.inner.specs.get(name)?;
        if action == PowerAction::Suspend {
            // A property of the VM, whatever its state.
            if let Some(reason) = spec.suspend_blocker() {
                return Err(BackendError::SuspendRefused {
                    vm: name.to_owned(),
                    reason,
                });
            }
        }
        let lock = self.lock_vm(name).await?;
        let run = self.run_dir(name);
        let pid = qemu::live_pid(&run, &spec.uuid);
        match (action, pid) {
            (PowerAction::Start, _) => self.start(&spec).await?,
            (_, None) => return Err(BackendError::NotRunning(name.to_owned())),
            (PowerAction::Poweroff, Some(pid)) => {
                self.force_off(&spec, pid, "powered off by the administrator")
                    .await?
            }
            (PowerAction::Reset, Some(_)) => {
                self.qmp(&run)
                    .await?
                    .execute(qapi::qmp::system_reset {})
                    .await?;
            }
            (PowerAction::Suspend, Some(_)) => {
                let mut q = self.qmp(&run).await?;
                let st = q.execute(qapi::qmp::query_status {}).await?;
                if !st.running {
                    return Err(BackendError::AlreadyPaused(name.to_owned()));
                }
                q.execute(qapi::qmp::stop {}).await?;
            }
            (PowerAction::Resume, Some(_)) => {
                let mut q = self.qmp(&run).await?;
                let st = q.execute(qapi::qmp::query_status {}).await?;
                if st.running {
                    return Err(BackendError::NotPaused(name.to_owned()));
                }
                q.execute(qapi::qmp::cont {}).await?;
            }
            // Handled by `shutdown_with_grace` above.
            (PowerAction::Shutdown, Some(_)) => {}
        }
        drop(lock);
        tracing::info!(vm = %name, ?action, "power action done");
        self.info(spec).await
    }

    async fn console(
        &self,
        name: &str,
        kind: ConsoleKind,
    ) -> Result<ConsoleEndpoint, BackendError> {
        let spec = self.inner.specs.get(name)?;
        let has = match kind {
            ConsoleKind::Vnc => spec.console.has_vnc(),
            ConsoleKind::Spice => spec.console.has_spice(),
            ConsoleKind::Serial => true,
        };
        if !has {
            return Err(BackendError::NoConsole {
                vm: name.to_owned(),
                kind,
            });
        }
        let run = self.run_dir(name);
        if qemu::live_pid(&run, &spec.uuid).is_none() {
            return Err(BackendError::NotRunning(name.to_owned()));
        }
        Ok(ConsoleEndpoint {
            kind,
            socket: match kind {
                ConsoleKind::Vnc => run.vnc(),
                ConsoleKind::Spice => run.spice(),
                ConsoleKind::Serial => run.serial(),
            },
            log: (kind == ConsoleKind::Serial).then(|| run.serial_log()),
        })
    }

    async fn guest_addresses(&self, name: &str) -> Result<Vec<GuestAddress>, BackendError> {
        let spec = self.inner.specs.get(name)?;
        let run = self.run_dir(name);
        if qemu::live_pid(&run, &spec.uuid).is_none() {
            return Err(BackendError::NotRunning(name.to_owned()));
        }
        // The agent's socket takes one client at a time; queue ours instead of letting
        // two callers garble each other's exchanges.
        let gate = {
            let mut gates = self
                .inner
                .qga_gates
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            gates.entry(name.to_owned()).or_default().clone()
        };
        let _turn = gate.lock().await;
        Ok(qemu::guest_addresses(&run.qga(), self.inner.cfg.guest_agent_timeout).await?)
    }

    async fn screenshot(&self, name: &str) -> Result<Vec<u8>, BackendError> {
        let spec = self.inner.specs.get(name)?;
        let run = self.run_dir(name);
        if qemu::live_pid(&run, &spec.uuid).is_none() {
            return Err(BackendError::NotRunning(name.to_owned()));
        }
        // QEMU writes the file itself, into the VM's private run directory.
        let file = run
            .dir
            .join(format!("screendump-{}.png", uuid::Uuid::new_v4().simple()));
        let mut q = self.qmp(&run).await?;
        let done = q
            .execute(qapi::qmp::screendump {
                filename: file.to_string_lossy().into_owned(),
                format: Some(qapi::qmp::ImageFormat::png),
                device: None,
                head: None,
            })
            .await;
        let read = match done {
            Ok(_) => read_capped(&file, MAX_SCREENSHOT_BYTES).await,
            Err(e) => {
                let _ = tokio::fs::remove_file(&file).await;
                return Err(e.into());
            }
        };
        let _ = tokio::fs::remove_file(&file).await;
        read.map_err(|source| BackendError::Screenshot {
            vm: name.to_owned(),
            source,
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<VmEvent> {
        self.inner.events.subscribe()
    }

    async fn add_nic(&self, vm: &str, req: NicRequest) -> Result<NicSpec, BackendError> {
        self.attach_nic(vm, req).await
    }

    async fn remove_nic(&self, vm: &str, nic_id: &str) -> Result<NicSpec, BackendError> {
        self.detach_nic(vm, nic_id).await
    }

    async fn set_keyboard_layout(
        &self,
        vm: &str,
        layout: Option<KeyboardLayout>,
    ) -> Result<VmSpec, BackendError> {
        let _specs = self.lock_specs().await?;
        let mut spec = self.inner.specs.get(vm)?;
        spec.keyboard_layout = layout;
        self.inner.specs.put(&spec)?;
        Ok(spec)
    }

    fn network(&self) -> &dyn Network {
        self.net()
    }
}
