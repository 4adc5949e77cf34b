//! What a VM reports (state, QEMU status, exit reason, consoles), and the QMP events
//! of running VMs turned into [`VmEvent`]s.

use super::QemuBackend;
use crate::api::{BackendError, ConsoleEndpoint, ConsoleKind, VmEvent, VmInfo, VmState};
use crate::qemu;
use crate::spec::vm::VmSpec;

impl QemuBackend {
    pub(super) fn watch(&self, spec: &VmSpec) {
        if !self.inner.cfg.watch_events {
            return;
        }
        {
            let Ok(mut w) = self.inner.watched.lock() else {
                return;
            };
            if !w.insert(spec.name.clone()) {
                return;
            }
        }
        let this = self.clone();
        let name = spec.name.clone();
        tokio::spawn(async move {
            let run = this.run_dir(&name);
            let tx = this.inner.events.clone();
            let reason_path = run.exit_reason();
            let res = qemu::watch_events(&run.qmp_events(), this.inner.cfg.qemu_timeout, |ev| {
                use qapi::qmp::Event;
                let text = match &ev {
                    Event::SHUTDOWN { data, .. } => {
                        let reason = serde_json::to_value(data.reason)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default();
                        let why = if data.guest {
                            format!("the guest powered off ({reason})")
                        } else {
                            format!("stopped by the host ({reason})")
                        };
                        let _ = std::fs::write(&reason_path, &why);
                        "shutdown".to_owned()
                    }
                    Event::STOP { .. } => "paused".to_owned(),
                    Event::RESUME { .. } => "running".to_owned(),
                    Event::RESET { .. } => "reset".to_owned(),
                    Event::POWERDOWN { .. } => "powerdown".to_owned(),
                    _ => return,
                };
                let _ = tx.send(VmEvent {
                    vm: name.clone(),
                    event: text,
                });
            })
            .await;
            if let Err(e) = res {
                tracing::debug!(vm = %name, error = %e, "event monitor unavailable");
            }
            let _ = tx.send(VmEvent {
                vm: name.clone(),
                event: "stopped".to_owned(),
            });
            if let Ok(mut w) = this.inner.watched.lock() {
                w.remove(&name);
            }
        });
    }

    pub(super) async fn info(&self, spec: VmSpec) -> Result<VmInfo, BackendError> {
        let run = self.run_dir(&spec.name);
        let pid = qemu::live_pid(&run, &spec.uuid);
        let (state, qemu_status) = match pid {
            None => (VmState::Stopped, None),
            Some(_) => match self.qmp(&run).await {
                Ok(mut q) => match q.execute(qapi::qmp::query_status {}).await {
                    Ok(st) => {
                        use qapi::qmp::RunState as R;
                        let name = serde_json::to_value(st.status)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned));
                        let state = match st.status {
                            R::running => VmState::Running,
                            R::paused | R::suspended => VmState::Paused,
                            _ => VmState::Other,
                        };
                        (state, name)
                    }
                    Err(_) => (VmState::Other, None),
                },
                // QEMU is exiting or busy with another client.
                Err(_) => (VmState::Other, None),
            },
        };
        let exit_reason = if state == VmState::Stopped {
            std::fs::read_to_string(run.exit_reason())
                .ok()
                .map(|s| s.trim().to_owned())
                .or_else(|| {
                    run.qemu_log()
                        .exists()
                        .then(|| qemu::last_log_line(&run))
                        .flatten()
                        .filter(|l| l.contains("terminating"))
                })
        } else {
            None
        };
        let consoles = if state == VmState::Stopped {
            Vec::new()
        } else {
            let mut c = Vec::new();
            if spec.console.has_vnc() {
                c.push(ConsoleEndpoint {
                    kind: ConsoleKind::Vnc,
                    socket: run.vnc(),
                    log: None,
                });
            }
            if spec.console.has_spice() {
                c.push(ConsoleEndpoint {
                    kind: ConsoleKind::Spice,
                    socket: run.spice(),
                    log: None,
                });
            }
            c
        };
        Ok(VmInfo {
            suspendable: spec.suspend_blocker().is_none(),
            live_migratable: spec.live_migratable(),
            ha_eligible: spec.ha_eligible(),
            state,
            qemu_status,
            pid,
            exit_reason,
            consoles,
            spec,
        })
    }
}
