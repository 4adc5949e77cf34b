//! VLAN isolation on one vSwitch, with real guest traffic: a guest on VLAN 10 reaches the
//! other guest's VLAN-10 NIC, and cannot reach its VLAN-20 NIC, although that NIC's
//! address is in a subnet the first guest is on.

#![allow(clippy::unwrap_used)]

mod common;
mod net_util;

use std::time::Duration;

use net_util::NetHarness;
use vmm_backend::{PowerAction, VmBackend};

/// The guest's interface name for `mac` (found in its sysfs).
async fn guest_dev(nh: &NetHarness, vm: &str, mac: &str) -> String {
    let script = format!(
        "for d in /sys/class/net/*; do [ \"$(cat $d/address)\" = \"{mac}\" ] && basename $d; done; true"
    );
    let (rc, out) = nh
        .guest_exec(vm, &["/bin/sh", "-c", &script], Duration::from_secs(60))
        .await;
    assert_eq!(rc, 0, "{vm}: {out}");
    let dev = out.trim().to_owned();
    assert!(!dev.is_empty(), "{vm} has no interface with {mac}");
    dev
}

async fn ping(nh: &NetHarness, from: &str, to: &str) -> (i64, String) {
    nh.guest_exec(
        from,
        &["ping", "-c", "3", "-W", "2", to],
        Duration::from_secs(60),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_on_different_vlans_of_one_switch_do_not_reach_each_other() {
    let nh = NetHarness::new();
    let b = nh.backend();
    let sw = nh.private_switch("vln").await.name;
    let on = |model: &str, vlan: u16| format!("{model},switch={sw},vlan={vlan}");
    b.define(nh.h.linux("va", "", &[on("virtio", 10).as_str()]))
        .await
        .unwrap();
    b.define(nh.h.linux(
        "vb",
        "",
        &[on("virtio", 20).as_str(), on("e1000", 10).as_str()],
    ))
    .await
    .unwrap();
    for vm in ["va", "vb"] {
        b.power(vm, PowerAction::Start).await.unwrap();
    }
    let macs = |vm: &'static str| async move {
        b.get(vm)
            .await
            .unwrap()
            .spec
            .nics
            .iter()
            .map(|n| n.mac)
            .collect::<Vec<_>>()
    };
    let (a_macs, b_macs) = (macs("va").await, macs("vb").await);

    // The taps carry their tags in Open vSwitch.
    for (mac, tag) in [(&a_macs[0], "10"), (&b_macs[0], "20"), (&b_macs[1], "10")] {
        let tap = vmm_backend::net::tap_name(mac);
        let got = nh.vsctl(&["get", "Port", &tap, "tag"]);
        assert_eq!(got.trim(), tag, "{tap}");
    }

    for vm in ["va", "vb"] {
        nh.wait_serial(vm, "VMGW-GUEST-READY", Duration::from_secs(120))
            .await;
    }
    let a10 = guest_dev(&nh, "va", &a_macs[0].to_string()).await;
    let b20 = guest_dev(&nh, "vb", &b_macs[0].to_string()).await;
    let b10 = guest_dev(&nh, "vb", &b_macs[1].to_string()).await;
    // vb answers ARP only on the interface that has the address asked for, so a reply
    // can only come over the VLAN that address is on.
    let (rc, out) = nh
        .guest_exec(
            "vb",
            &[
                "/bin/sh",
                "-c",
                "for c in /proc/sys/net/ipv4/conf/*/arp_ignore; do echo 1 > $c; done",
            ],
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(rc, 0, "{out}");
    // va is on both subnets, on its one VLAN-10 interface
    nh.set_guest_ip("va", &a10, "10.204.0.1/24").await;
    nh.set_guest_ip("va", &a10, "10.204.1.1/24").await;
    nh.set_guest_ip("vb", &b20, "10.204.0.2/24").await;
    nh.set_guest_ip("vb", &b10, "10.204.1.2/24").await;

    // same VLAN: through
    let (rc, out) = ping(&nh, "va", "10.204.1.2").await;
    assert_eq!(rc, 0, "VLAN 10 → VLAN 10: {out}\n{}", nh.diag(&sw));
    assert!(out.contains("3 packets received"), "{out}");
    // other VLAN: nothing, in either direction
    let (rc, out) = ping(&nh, "va", "10.204.0.2").await;
    assert_ne!(rc, 0, "VLAN 10 reached VLAN 20: {out}");
    assert!(out.contains("0 packets received"), "{out}");
    let (rc, out) = nh
        .guest_exec(
            "vb",
            &["ping", "-c", "3", "-W", "2", "-I", &b20, "10.204.0.1"],
            Duration::from_secs(60),
        )
        .await;
    assert_ne!(rc, 0, "VLAN 20 reached VLAN 10: {out}");

    for vm in ["va", "vb"] {
        b.power(vm, PowerAction::Poweroff).await.unwrap();
    }
}
