//! vSwitch and bond configuration without guests: precise errors on bad input with
//! nothing changed, persistence and idempotent reconcile, a failed VM start that leaves
//! no tap or port behind, and clean daemon start/stop.

#![allow(clippy::unwrap_used)]

mod common;
mod net_util;

use net_util::{uniq, NetHarness, Netns, Veth};
use vmm_backend::net::{BondMode, BondRequest, NetError, SwitchRequest};
use vmm_backend::{BackendError, PowerAction, VmBackend};

fn switch(name: &str, uplinks: &[&str]) -> SwitchRequest {
    SwitchRequest {
        name: name.into(),
        uplinks: uplinks.iter().map(|s| s.to_string()).collect(),
        bond_mode: None,
        bond_name: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_precisely_and_changes_nothing() {
    let nh = NetHarness::new();
    let net = nh.backend().net();
    let ns = Netns::new("bad");
    let (a, b, c) = (
        Veth::new("ba", &ns),
        Veth::new("bb", &ns),
        Veth::new("bc", &ns),
    );
    let sw = uniq("bsw");
    net.create_switch(switch(&sw, &[])).await.unwrap();
    net.create_bond(BondRequest {
        name: uniq("bnd"),
        switch: sw.clone(),
        members: vec![a.host.clone(), b.host.clone()],
        mode: BondMode::ActiveBackup,
    })
    .await
    .unwrap();
    let state_file = nh.h.dir.path().join("net/state.json");
    let before = (std::fs::read(&state_file).unwrap(), nh.vsctl(&["show"]));

    let bond = |name: &str, members: &[&str]| BondRequest {
        name: name.into(),
        switch: sw.clone(),
        members: members.iter().map(|s| s.to_string()).collect(),
        mode: BondMode::BalanceSlb,
    };
    let cases: Vec<(NetError, &str)> = vec![
        (
            net.create_bond(bond("b1", &[&c.host])).await.unwrap_err(),
            "needs at least two members, got 1",
        ),
        (
            net.create_bond(bond("b1", &[&c.host, &a.host]))
                .await
                .unwrap_err(),
            "is already used by bond",
        ),
        (
            net.create_bond(bond("b1", &[&c.host, "nosuch0"]))
                .await
                .unwrap_err(),
            "no host interface named \"nosuch0\"",
        ),
        (
            net.create_bond(bond("b1", &[&c.host, &c.host]))
                .await
                .unwrap_err(),
            "is listed twice",
        ),
        (
            net.create_switch(switch(&sw, &[])).await.unwrap_err(),
            "already exists",
        ),
        (
            net.create_switch(switch(&c.host, &[])).await.unwrap_err(),
            "already taken by a host network interface",
        ),
        (
            net.create_switch(switch("x", &[&a.host]))
                .await
                .unwrap_err(),
            "is already used by bond",
        ),
        (
            net.create_switch(switch("../etc", &[])).await.unwrap_err(),
            "invalid vSwitch name",
        ),
        (
            net.set_bond_mode("nobond", BondMode::BalanceTcp)
                .await
                .unwrap_err(),
            "no bond named \"nobond\"",
        ),
    ];
    for (err, want) in &cases {
        assert!(err.to_string().contains(want), "{err} (want {want:?})");
        assert!(err.is_client_error(), "{err}");
    }
    // An interface enslaved to a kernel master is in use too.
    ns.ip(&["link", "add", "kbr", "type", "bridge"]);
    let d = Veth::new("bd", &ns);
    let kbr_host = uniq("kbr");
    net_util::sh(&["ip", "link", "add", &kbr_host, "type", "bridge"]);
    net_util::sh(&["ip", "link", "set", &d.host, "master", &kbr_host]);
    let err = net
        .create_bond(bond("b1", &[&c.host, &d.host]))
        .await
        .unwrap_err();
    net_util::sh_quiet(&["ip", "link", "del", &kbr_host]);
    assert!(err.to_string().contains("host master device"), "{err}");

    // Deleting a vSwitch with a VM on it.
    let nic = format!("virtio,switch={sw},vlan=20");
    let mut d2 = nh.h.firmware("onsw");
    d2.nics = vec![nic.parse().unwrap()];
    nh.backend().define(d2).await.unwrap();
    let err = net.delete_switch(&sw).await.unwrap_err();
    assert!(
        matches!(&err, NetError::SwitchInUse { vms, .. } if vms == &["onsw".to_string()]),
        "{err}"
    );
    assert!(err.to_string().contains("used by VM(s) onsw"), "{err}");

    let after = (std::fs::read(&state_file).unwrap(), nh.vsctl(&["show"]));
    assert_eq!(before.0, after.0, "the state file changed");
    assert_eq!(before.1, after.1, "OVS changed");
    assert_eq!(net.reconcile().await.unwrap().ovs_commands, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_persists_and_reconcile_is_idempotent() {
    let nh = NetHarness::new();
    let net = nh.backend().net();
    let ns = Netns::new("rec");
    let (a, b, c) = (
        Veth::new("ra", &ns),
        Veth::new("rb", &ns),
        Veth::new("rc", &ns),
    );
    let sw = uniq("rsw");
    let mut req = switch(&sw, &[&a.host, &b.host]);
    req.bond_mode = Some(BondMode::BalanceSlb);
    req.bond_name = Some(uniq("rbd"));
    let bond = req.bond_name.clone().unwrap();
    net.create_switch(req).await.unwrap();
    let priv_sw = uniq("rpv");
    net.create_switch(switch(&priv_sw, &[&c.host]))
        .await
        .unwrap();
    assert_eq!(net.reconcile().await.unwrap().ovs_commands, 0);
    let config = nh.vsctl(&["show"]);

    // A new process on the same data directory sees the same state; after the daemons
    // stop (and their datapath with them) and something deletes a bridge behind our
    // back, reconcile restores exactly the configuration, and a second run does nothing.
    let again = nh.h.reopen();
    let names: Vec<String> = again
        .net()
        .list_switches()
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names.len(), 2);
    assert_eq!(again.net().list_bonds().unwrap()[0].name, bond);
    again.net().stop_daemons().unwrap();
    assert!(
        !nh.backend()
            .net()
            .config()
            .ovs_run_dir
            .join("ovs-vswitchd.pid")
            .exists()
            || std::fs::read_to_string(
                nh.backend()
                    .net()
                    .config()
                    .ovs_run_dir
                    .join("ovs-vswitchd.pid")
            )
            .map(|p| !std::path::Path::new(&format!("/proc/{}", p.trim())).exists())
            .unwrap_or(true)
    );
    net.ovs().await.unwrap();
    nh.vsctl(&["del-br", &sw]);
    let r = again.net().reconcile().await.unwrap();
    assert!(r.ovs_commands > 0, "{r:?}");
    assert_eq!(nh.vsctl(&["show"]).lines().count(), config.lines().count());
    assert_eq!(again.net().reconcile().await.unwrap().ovs_commands, 0);
    assert_eq!(
        nh.vsctl(&["get", "Port", &bond, "bond_mode"]).trim(),
        "balance-slb"
    );

    // Delete and re-create: members are free again.
    net.delete_bond(&bond).await.unwrap();
    net.create_bond(BondRequest {
        name: bond.clone(),
        switch: priv_sw.clone(),
        members: vec![a.host.clone(), b.host.clone()],
        mode: BondMode::ActiveBackup,
    })
    .await
    .unwrap();
    assert!(nh.vsctl(&["list-ports", &priv_sw]).contains(&bond));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_start_leaves_no_tap_or_port() {
    let nh = NetHarness::new();
    let b = nh.backend();
    let sw = uniq("fsw");
    b.net().create_switch(switch(&sw, &[])).await.unwrap();
    let mut d = nh.h.firmware("half");
    let n0 = format!("virtio,switch={sw}");
    let n1 = format!("e1000,switch={sw},vlan=7");
    d.nics = vec![n0.parse().unwrap(), n1.parse().unwrap()];
    b.define(d).await.unwrap();
    let spec = b.get("half").await.unwrap().spec;
    let taps: Vec<String> = spec
        .nics
        .iter()
        .map(|n| vmm_backend::net::tap_name(&n.mac))
        .collect();
    // Something else holds the second NIC's tap name: the start fails half-way.
    let ns = Netns::new("blk");
    net_util::sh(&[
        "ip",
        "link",
        "add",
        &taps[1],
        "type",
        "veth",
        "peer",
        "name",
        &uniq("blkp"),
    ]);
    let err = b.power("half", PowerAction::Start).await.unwrap_err();
    net_util::sh_quiet(&["ip", "link", "del", &taps[1]]);
    drop(ns);
    assert!(matches!(err, BackendError::Net(_)), "{err}");
    assert!(err.to_string().contains("is not a tap"), "{err}");
    assert!(!std::path::Path::new("/sys/class/net")
        .join(&taps[0])
        .exists());
    assert!(nh.vsctl(&["list-ports", &sw]).trim().is_empty());
    assert!(nh.h.live_qemus().is_empty());

    // Once the name is free it starts, both taps on the switch, the second on VLAN 7.
    b.power("half", PowerAction::Start).await.unwrap();
    let ports = nh.vsctl(&["list-ports", &sw]);
    assert!(
        ports.contains(&taps[0]) && ports.contains(&taps[1]),
        "{ports}"
    );
    assert_eq!(nh.vsctl(&["get", "Port", &taps[1], "tag"]).trim(), "7");
    assert_eq!(b.net().reconcile().await.unwrap().ovs_commands, 0);
    b.power("half", PowerAction::Poweroff).await.unwrap();
    assert!(nh.vsctl(&["list-ports", &sw]).trim().is_empty());
}
