//! NIC hot-plug into a running guest for each model (e1000, rtl8139, virtio): the guest
//! sees the device, takes a DHCP lease on it, and the guest agent reports its address;
//! a vSwitch NIC gets its tap port; unplug removes the device, the port and the spec
//! entry.

#![allow(clippy::unwrap_used)]

mod common;
mod net_util;

use std::time::{Duration, Instant};

use net_util::NetHarness;
use vmm_backend::net::tap_name;
use vmm_backend::nic::NicRequest;
use vmm_backend::{BackendError, PowerAction, VmBackend};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hotplug_each_model_and_unplug() {
    let nh = NetHarness::new();
    let b = nh.backend();
    let sw = nh.private_switch("hsw").await.name;
    b.define(nh.h.linux("hot", "", &[])).await.unwrap();
    b.power("hot", PowerAction::Start).await.unwrap();
    nh.wait_serial("hot", "VMGW-GUEST-READY", Duration::from_secs(120))
        .await;

    let mut plugged = Vec::new();
    for (i, model) in ["e1000", "rtl8139", "virtio"].into_iter().enumerate() {
        let t = Instant::now();
        let nic = b
            .attach_nic("hot", model.parse::<NicRequest>().unwrap())
            .await
            .unwrap();
        assert_eq!(nic.id, format!("nic{i}"));
        let mac = nic.mac.to_string();
        nh.wait_serial(
            "hot",
            &format!("VMGW-NET-UP eth{i} 10.0.2.15"),
            Duration::from_secs(60),
        )
        .await;
        let ip = nh.wait_agent_ip("hot", &mac, Duration::from_secs(30)).await;
        assert_eq!(ip, "10.0.2.15");
        eprintln!(
            "MEASURED hot-plug {model}: in the guest agent's IP report {:.1}s after device_add",
            t.elapsed().as_secs_f64()
        );
        plugged.push(nic);
    }
    assert_eq!(b.get("hot").await.unwrap().spec.nics.len(), 3);

    // A vSwitch NIC: its tap is created and plugged before the device appears.
    let req: NicRequest = format!("virtio,switch={sw},vlan=30").parse().unwrap();
    let swnic = b.attach_nic("hot", req).await.unwrap();
    let tap = tap_name(&swnic.mac);
    assert!(nh.vsctl(&["list-ports", &sw]).contains(&tap));
    assert_eq!(nh.vsctl(&["get", "Port", &tap, "tag"]).trim(), "30");
    let mac = swnic.mac.to_string();
    let (rc, out) = nh
        .guest_exec(
            "hot",
            &["/bin/sh", "-c", &format!("for i in $(seq 50); do grep -il {mac} /sys/class/net/*/address && exit 0; sleep 0.2; done; exit 1")],
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(rc, 0, "the guest does not see the vSwitch NIC: {out}");

    // Unplug everything: devices leave the guest, the tap and port go, the spec shrinks.
    let err = b.detach_nic("hot", "nic9").await.unwrap_err();
    assert!(matches!(err, BackendError::NoSuchNic { .. }), "{err}");
    for nic in plugged.iter().chain([&swnic]) {
        let t = Instant::now();
        b.detach_nic("hot", &nic.id).await.unwrap();
        eprintln!(
            "MEASURED unplug {}: released by the guest in {:.1}s",
            nic.model,
            t.elapsed().as_secs_f64()
        );
    }
    assert!(!std::path::Path::new("/sys/class/net").join(&tap).exists());
    assert!(nh.vsctl(&["list-ports", &sw]).trim().is_empty());
    assert!(b.get("hot").await.unwrap().spec.nics.is_empty());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let addrs = b.guest_addresses("hot").await.unwrap();
        if !addrs.iter().any(|a| a.address.to_string() == "10.0.2.15") {
            break;
        }
        assert!(Instant::now() < deadline, "still reported: {addrs:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    b.power("hot", PowerAction::Poweroff).await.unwrap();
}
