//! NICs added to and removed from a VM's spec, hot-plugged into or out of the running
//! VM (a vSwitch NIC gets its tap port first); on failure everything stays as it was.

use super::QemuBackend;
use crate::api::BackendError;
use crate::net::NetError;
use crate::qemu::{self, QemuError, RunDir};
use crate::spec::nic::{NicModel, NicRequest, NicSpec};
use crate::spec::vm::SpecError;

impl QemuBackend {
    /// Adds a NIC to a VM. It is saved in the VM's spec and, when the VM runs,
    /// hot-plugged (QMP `netdev_add` + `device_add`; a vSwitch NIC gets its tap port
    /// first). The MAC is derived when not given. On any failure the VM and its spec
    /// are left as they were.
    pub async fn attach_nic(&self, name: &str, req: NicRequest) -> Result<NicSpec, BackendError> {
        req.validate()?;
        let _specs = self.lock_specs().await?;
        let all = self.inner.specs.list()?;
        let old = self.inner.specs.get(name)?;
        let _vm = self.lock_vm(name).await?;
        if old.nics.len() >= crate::spec::vm::MAX_NICS {
            return Err(SpecError::TooManyNics(old.nics.len() + 1).into());
        }
        if let Some((switch, _)) = req.attach.switch() {
            if !self.inner.net.state()?.switches.contains_key(switch) {
                return Err(NetError::NoSuchSwitch(switch.to_owned()).into());
            }
        }
        let nic = old.new_nic(req, &all)?;
        let mut new = old.clone();
        new.nics.push(nic.clone());
        self.inner.specs.put(&new)?;
        let run = self.run_dir(name);
        if qemu::live_pid(&run, &new.uuid).is_some() {
            if let Err(e) = self.hotplug(&run, name, &nic).await {
                if let Err(pe) = self.inner.specs.put(&old) {
                    tracing::error!(vm = %name, error = %pe, "restoring the VM spec failed");
                }
                return Err(e);
            }
            tracing::info!(vm = %name, nic = %nic.id, model = %nic.model, "NIC hot-plugged");
        }
        Ok(nic)
    }

    async fn hotplug(&self, run: &RunDir, name: &str, nic: &NicSpec) -> Result<(), BackendError> {
        let (taps, lock) = self.inner.net.plug(name, std::slice::from_ref(nic)).await?;
        let result = async {
            let mut q = self.qmp(run).await?;
            crate::net::hotplug::plug(&mut q, nic, taps.first()).await?;
            Ok::<(), BackendError>(())
        }
        .await;
        drop(lock);
        if result.is_err() {
            if let Err(e) = self.inner.net.unplug(name, std::slice::from_ref(nic)).await {
                tracing::warn!(vm = %name, error = %e, "removing the NIC's tap failed");
            }
        }
        result
    }

    /// Removes a NIC from a VM: hot-unplugged when the VM runs (the guest must release
    /// it, within the QEMU timeout), its tap port removed, and dropped from the spec.
    pub async fn detach_nic(&self, name: &str, nic_id: &str) -> Result<NicSpec, BackendError> {
        let _specs = self.lock_specs().await?;
        let mut spec = self.inner.specs.get(name)?;
        let _vm = self.lock_vm(name).await?;
        let idx = spec
            .nics
            .iter()
            .position(|n| n.id == nic_id)
            .ok_or_else(|| BackendError::NoSuchNic {
                vm: name.to_owned(),
                nic: nic_id.chars().take(40).collect(),
            })?;
        let nic = spec.nics[idx].clone();
        let run = self.run_dir(name);
        if qemu::live_pid(&run, &spec.uuid).is_some() {
            if nic.model == NicModel::Sriov {
                return Err(QemuError::Qmp {
                    command: "device_del",
                    message: "an SR-IOV NIC cannot be hot-unplugged; stop the VM first".into(),
                }
                .into());
            }
            let mut q = self.qmp(&run).await?;
            crate::net::hotplug::unplug(&mut q, &nic.id, self.inner.cfg.qemu_timeout).await?;
            drop(q);
            self.inner
                .net
                .unplug(name, std::slice::from_ref(&nic))
                .await?;
            tracing::info!(vm = %name, nic = %nic.id, "NIC hot-unplugged");
        }
        spec.nics.remove(idx);
        self.inner.specs.put(&spec)?;
        Ok(nic)
    }
}
