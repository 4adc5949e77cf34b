//! Two test guests on a private vSwitch reach each other (ping both ways), with real
//! packets through Open vSwitch; stopping a VM removes its tap port.

#![allow(clippy::unwrap_used)]

mod common;
mod net_util;

use std::time::{Duration, Instant};

use net_util::NetHarness;
use vmm_backend::net::SwitchKind;
use vmm_backend::{PowerAction, VmBackend};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_guests_on_a_private_switch_ping_each_other() {
    let nh = NetHarness::new();
    let b = nh.backend();
    let info = nh.private_switch("prv").await;
    let sw = info.name.clone();
    assert_eq!(info.kind, SwitchKind::Private);
    assert_eq!(
        info.datapath, "netdev",
        "no OVS kernel module on this machine"
    );

    let guests = [
        ("ga", "virtio", "10.201.0.1"),
        ("gb", "e1000", "10.201.0.2"),
    ];
    for (vm, model, _) in guests {
        let nic = format!("{model},switch={sw}");
        b.define(nh.h.linux(vm, "", &[nic.as_str()])).await.unwrap();
    }
    let t0 = Instant::now();
    for (vm, _, _) in guests {
        b.power(vm, PowerAction::Start).await.unwrap();
    }
    // Both taps are ports of the bridge, tagged with their VM.
    let ports = nh.vsctl(&["list-ports", &sw]);
    for (vm, _, _) in guests {
        let mac = b.get(vm).await.unwrap().spec.nics[0].mac;
        let tap = vmm_backend::net::tap_name(&mac);
        assert!(ports.contains(&tap), "{tap} not on {sw}: {ports}");
    }
    for (vm, _, ip) in guests {
        nh.wait_serial(vm, "VMGW-GUEST-READY", Duration::from_secs(120))
            .await;
        nh.set_guest_ip(vm, "eth0", &format!("{ip}/24")).await;
    }
    let ready = t0.elapsed();
    let mut first_ping = None;
    for ((from, _, _), (_, _, to)) in [(guests[0], guests[1]), (guests[1], guests[0])] {
        let (rc, out) = nh
            .guest_exec(
                from,
                &["ping", "-c", "3", "-W", "2", to],
                Duration::from_secs(60),
            )
            .await;
        assert_eq!(rc, 0, "{from} cannot ping {to}: {out}\n{}", nh.diag(&sw));
        assert!(out.contains("3 packets received"), "{from} → {to}: {out}");
        first_ping.get_or_insert(t0.elapsed());
    }
    eprintln!(
        "MEASURED private switch: two guests started → addresses set in {:.1}s, first successful ping at {:.1}s",
        ready.as_secs_f64(),
        first_ping.unwrap().as_secs_f64()
    );

    // The switch is in use: it cannot be deleted.
    let err = b.net().delete_switch(&sw).await.unwrap_err();
    assert!(err.to_string().contains("used by VM(s) ga, gb"), "{err}");

    // Stopping a VM removes its tap and its port.
    b.power("gb", PowerAction::Poweroff).await.unwrap();
    let mac = b.get("gb").await.unwrap().spec.nics[0].mac;
    let tap = vmm_backend::net::tap_name(&mac);
    assert!(!std::path::Path::new("/sys/class/net").join(&tap).exists());
    assert!(!nh.vsctl(&["list-ports", &sw]).contains(&tap));
    b.power("ga", PowerAction::Poweroff).await.unwrap();
    assert!(nh.vsctl(&["list-ports", &sw]).trim().is_empty());
}
