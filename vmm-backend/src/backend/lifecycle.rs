//! Starting and stopping VMs: host resources (SR-IOV VFs, taps) taken at start and
//! given back at stop, QEMU spawned, and stopped gently or by force.

use std::time::Duration;

use super::QemuBackend;
use crate::api::{BackendError, VmInfo};
use crate::qemu::{self, VfAssignment};
use crate::spec::nic::{NicError, NicModel, Sysfs};
use crate::spec::vm::{BootSource, SpecError, VmSpec};

impl QemuBackend {
    /// VFs held by other running VMs.
    fn vfs_in_use(&self, except: &str) -> Vec<String> {
        let mut out = Vec::new();
        for spec in self.inner.specs.list().unwrap_or_default() {
            if spec.name == except {
                continue;
            }
            let run = self.run_dir(&spec.name);
            if qemu::live_pid(&run, &spec.uuid).is_none() {
                continue;
            }
            if let Ok(s) = std::fs::read_to_string(run.dir.join("vfs")) {
                out.extend(
                    s.lines()
                        .filter_map(|l| l.split_once(' '))
                        .map(|(_, a)| a.to_owned()),
                );
            }
        }
        out
    }

    pub(super) async fn start(&self, spec: &VmSpec) -> Result<(), BackendError> {
        let run = self.run_dir(&spec.name);
        if qemu::live_pid(&run, &spec.uuid).is_some() {
            return Err(BackendError::AlreadyRunning(spec.name.clone()));
        }
        let accel = qemu::resolve_accel(spec.accel)?;
        match &spec.boot {
            BootSource::Kernel { kernel, initrd, .. } => {
                if !kernel.is_file() {
                    return Err(SpecError::MissingKernel(kernel.clone()).into());
                }
                if let Some(i) = initrd.as_ref().filter(|i| !i.is_file()) {
                    return Err(SpecError::MissingInitrd(i.clone()).into());
                }
            }
            BootSource::Disk { path, .. } if !path.is_file() => {
                return Err(SpecError::MissingDisk(path.clone()).into());
            }
            _ => {}
        }
        let mut vfs = Vec::new();
        let sysfs = Sysfs::new(&self.inner.cfg.sysfs_root);
        let mut in_use = self.vfs_in_use(&spec.name);
        for nic in spec.nics.iter().filter(|n| n.model == NicModel::Sriov) {
            let pf = nic.pf.as_deref().ok_or(NicError::SriovWithoutPf)?;
            let vf = sysfs.free_vf(pf, &in_use)?;
            in_use.push(vf.pci_address.clone());
            vfs.push(VfAssignment {
                nic_id: nic.id.clone(),
                pci_address: vf.pci_address,
            });
        }
        run.prepare()?;
        // Held until QEMU has opened the taps, so no reconcile removes them meanwhile.
        let (taps, net_lock) = self.inner.net.plug(&spec.name, &spec.nics).await?;
        if !vfs.is_empty() {
            let text: String = vfs
                .iter()
                .map(|v| format!("{} {}\n", v.nic_id, v.pci_address))
                .collect();
            crate::spec::store::write_atomic(&run.dir.join("vfs"), text.as_bytes())?;
        }
        let args = qemu::command_line(spec, &run, accel, &vfs, &taps);
        if let Err(e) = qemu::spawn(
            &self.inner.cfg.qemu_binary,
            args,
            &run,
            self.inner.cfg.qemu_timeout,
        )
        .await
        {
            run.clear_runtime();
            let _ = std::fs::remove_file(run.dir.join("vfs"));
            drop(net_lock);
            if let Err(ne) = self.inner.net.unplug(&spec.name, &spec.nics).await {
                tracing::warn!(vm = %spec.name, error = %ne, "removing the VM's taps failed");
            }
            return Err(e.into());
        }
        drop(net_lock);
        tracing::info!(vm = %spec.name, accel, "started");
        self.watch(spec);
        Ok(())
    }

    /// Stops QEMU: `quit` over QMP, then SIGTERM, then SIGKILL.
    pub(super) async fn force_off(
        &self,
        spec: &VmSpec,
        pid: i32,
        reason: &str,
    ) -> Result<(), BackendError> {
        let run = self.run_dir(&spec.name);
        if let Ok(mut q) = self.qmp(&run).await {
            // QEMU may close the socket before answering `quit`.
            let _ = q.execute(qapi::qmp::quit {}).await;
        }
        if !qemu::wait_gone(pid, &spec.uuid, Duration::from_secs(5)).await {
            qemu::signal(pid, &spec.uuid, nix::sys::signal::Signal::SIGTERM);
            if !qemu::wait_gone(pid, &spec.uuid, Duration::from_secs(5)).await {
                qemu::signal(pid, &spec.uuid, nix::sys::signal::Signal::SIGKILL);
                if !qemu::wait_gone(pid, &spec.uuid, Duration::from_secs(5)).await {
                    return Err(BackendError::StopFailed(spec.name.clone()));
                }
            }
        }
        self.stopped(&run, reason);
        self.unplug_all(spec).await;
        Ok(())
    }

    /// ACPI power button, then force after `grace`.
    pub async fn shutdown_with_grace(
        &self,
        name: &str,
        grace: Duration,
    ) -> Result<VmInfo, BackendError> {
        let spec = self.inner.specs.get(name)?;
        let _lock = self.lock_vm(name).await?;
        let run = self.run_dir(name);
        let pid = qemu::live_pid(&run, &spec.uuid)
            .ok_or_else(|| BackendError::NotRunning(name.to_owned()))?;
        let mut q = self.qmp(&run).await?;
        q.execute(qapi::qmp::system_powerdown {}).await?;
        drop(q);
        if qemu::wait_gone(pid, &spec.uuid, grace).await {
            self.stopped(
                &run,
                "shut down by the guest after an ACPI power-button request",
            );
            self.unplug_all(&spec).await;
        } else {
            tracing::info!(vm = %name, ?grace, "guest ignored ACPI shutdown; forcing off");
            self.force_off(
                &spec,
                pid,
                &format!(
                    "forced off: the guest did not shut down within the {}s grace period",
                    grace.as_secs()
                ),
            )
            .await?;
        }
        drop(_lock);
        self.info(spec).await
    }
}
