//! NIC hot-plug over QMP: `netdev_add` + `device_add`, and `device_del` (waiting until
//! the guest has released the device) + `netdev_del`.

use std::time::Duration;

use crate::qemu::{QemuError, Qmp, TapAssignment};
use crate::spec::nic::{NicAttachment, NicModel, NicSpec};

/// The `netdev_add` argument of a NIC: user-mode, or its tap.
pub fn netdev(nic: &NicSpec, tap: Option<&TapAssignment>) -> Result<serde_json::Value, QemuError> {
    let id = format!("net-{}", nic.id);
    match (&nic.attach, tap) {
        (NicAttachment::User, _) => Ok(serde_json::json!({"type": "user", "id": id})),
        (NicAttachment::Switch { .. }, Some(t)) => Ok(serde_json::json!({
            "type": "tap",
            "id": id,
            "ifname": t.ifname,
            "script": "no",
            "downscript": "no",
            "vnet_hdr": t.vnet_hdr,
        })),
        (NicAttachment::Switch { switch, .. }, None) => Err(QemuError::Qmp {
            command: "netdev_add",
            message: format!("no tap was made for NIC {} on vSwitch {switch:?}", nic.id),
        }),
    }
}

/// The `device_add` command of a NIC.
pub fn device(nic: &NicSpec) -> Result<qapi::qmp::device_add, QemuError> {
    if nic.model == NicModel::Sriov {
        return Err(QemuError::Qmp {
            command: "device_add",
            message: "SR-IOV NICs cannot be hot-plugged".into(),
        });
    }
    let mut arguments = qapi::Dictionary::new();
    arguments.insert("netdev".into(), format!("net-{}", nic.id).into());
    arguments.insert("mac".into(), nic.mac.to_string().into());
    Ok(qapi::qmp::device_add {
        driver: nic.model.qemu_driver().into(),
        id: Some(nic.id.clone()),
        bus: None,
        arguments,
    })
}

/// Adds the NIC to a running QEMU; on a failure of `device_add` the netdev is removed.
pub async fn plug(
    qmp: &mut Qmp,
    nic: &NicSpec,
    tap: Option<&TapAssignment>,
) -> Result<(), QemuError> {
    let nd: qapi::qmp::Netdev =
        serde_json::from_value(netdev(nic, tap)?).map_err(|e| QemuError::Qmp {
            command: "netdev_add",
            message: e.to_string(),
        })?;
    qmp.execute(qapi::qmp::netdev_add(nd)).await?;
    if let Err(e) = qmp.execute(device(nic)?).await {
        let _ = qmp
            .execute(qapi::qmp::netdev_del {
                id: format!("net-{}", nic.id),
            })
            .await;
        return Err(e);
    }
    Ok(())
}

/// Whether QEMU still has device `id` (`qom-list /machine/peripheral`).
pub async fn has_device(qmp: &mut Qmp, id: &str) -> Result<bool, QemuError> {
    let props = qmp
        .execute(qapi::qmp::qom_list {
            path: "/machine/peripheral".into(),
        })
        .await?;
    Ok(props.iter().any(|p| p.name == id))
}

/// Asks the guest to release the NIC (`device_del`, ACPI hot-unplug), waits up to
/// `timeout` until QEMU has removed it, then removes its netdev.
pub async fn unplug(qmp: &mut Qmp, nic_id: &str, timeout: Duration) -> Result<(), QemuError> {
    if has_device(qmp, nic_id).await? {
        qmp.execute(qapi::qmp::device_del {
            id: nic_id.to_owned(),
        })
        .await?;
        let deadline = tokio::time::Instant::now() + timeout;
        while has_device(qmp, nic_id).await? {
            if tokio::time::Instant::now() >= deadline {
                return Err(QemuError::Qmp {
                    command: "device_del",
                    message: format!(
                        "the guest did not release NIC {nic_id} within {}s",
                        timeout.as_secs()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Gone with the device on some QEMU versions; absent is fine.
    let _ = qmp
        .execute(qapi::qmp::netdev_del {
            id: format!("net-{nic_id}"),
        })
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(attach: NicAttachment) -> NicSpec {
        NicSpec {
            id: "nic2".into(),
            model: NicModel::E1000,
            mac: "52:54:00:00:00:02".parse().expect("mac"),
            attach,
            pf: None,
        }
    }

    #[test]
    fn builds_qmp_arguments() {
        let user = netdev(&nic(NicAttachment::User), None).expect("user");
        let nd: qapi::qmp::Netdev = serde_json::from_value(user).expect("a valid Netdev");
        let _ = nd;
        let sw = nic(NicAttachment::Switch {
            switch: "sw0".into(),
            vlan: None,
        });
        assert!(netdev(&sw, None).is_err());
        let tap = TapAssignment {
            nic_id: "nic2".into(),
            ifname: "vt525400000002".into(),
            vnet_hdr: false,
        };
        let v = netdev(&sw, Some(&tap)).expect("tap");
        assert_eq!(v["ifname"], "vt525400000002");
        let nd: qapi::qmp::Netdev = serde_json::from_value(v).expect("a valid Netdev");
        let _ = nd;
        let d = device(&sw).expect("device");
        assert_eq!(d.driver, "e1000");
        assert_eq!(d.id.as_deref(), Some("nic2"));
        let mut sriov = sw.clone();
        sriov.model = NicModel::Sriov;
        assert!(device(&sriov).is_err());
    }
}
