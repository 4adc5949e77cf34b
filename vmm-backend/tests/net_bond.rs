//! A guest on an external vSwitch reaches a "LAN" host in another namespace through a
//! bond of two uplinks; one uplink fails under traffic, traffic keeps flowing (lost
//! packets measured and bounded), the status shows the other member active, and the
//! bond reports the member when it comes back. Mode changes apply in place.

#![allow(clippy::unwrap_used)]

mod common;
mod net_util;

use std::time::{Duration, Instant};

use net_util::{ping_counts, uniq, NetHarness, Netns, Veth};
use vmm_backend::net::{BondMode, SwitchKind, SwitchRequest};
use vmm_backend::{PowerAction, VmBackend};

/// Most packets (at one per 20 ms) a failover may lose: 1 s of traffic.
const MAX_LOST: u32 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bond_fails_over_under_traffic() {
    let nh = NetHarness::new();
    let b = nh.backend();
    // The LAN: a namespace with a Linux bridge joining the far ends of both uplinks.
    let lan = Netns::new("lan");
    lan.ip(&["link", "add", "br0", "type", "bridge"]);
    lan.ip(&["link", "set", "br0", "up"]);
    lan.ip(&["addr", "add", "10.202.0.1/24", "dev", "br0"]);
    let u1 = Veth::new("up", &lan);
    let u2 = Veth::new("up", &lan);
    for v in [&u1, &u2] {
        lan.ip(&["link", "set", &v.peer, "master", "br0"]);
    }

    let sw = uniq("ext");
    let info = b
        .net()
        .create_switch(SwitchRequest {
            name: sw.clone(),
            uplinks: vec![u1.host.clone(), u2.host.clone()],
            bond_mode: Some(BondMode::ActiveBackup),
            bond_name: None,
        })
        .await
        .unwrap();
    assert_eq!(info.kind, SwitchKind::External);
    let bond = format!("{sw}-bond");
    assert_eq!(info.bonds, vec![bond.clone()]);

    let nic = format!("rtl8139,switch={sw}");
    b.define(nh.h.linux("lanvm", "", &[nic.as_str()]))
        .await
        .unwrap();
    let t0 = Instant::now();
    b.power("lanvm", PowerAction::Start).await.unwrap();
    nh.wait_serial("lanvm", "VMGW-GUEST-READY", Duration::from_secs(120))
        .await;
    nh.set_guest_ip("lanvm", "eth0", "10.202.0.10/24").await;
    let (rc, out) = nh
        .guest_exec(
            "lanvm",
            &["ping", "-c", "3", "-W", "2", "10.202.0.1"],
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(rc, 0, "guest → LAN: {out}\n{}", nh.diag(&sw));
    let boot_to_ping = t0.elapsed();
    let (ok, out) = lan.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.202.0.10"]);
    assert!(ok, "LAN → guest: {out}\n{}", nh.diag(&sw));

    // Failover under traffic: 20 ms pings from the LAN host for 8 s; after 2 s the
    // active member's cable is pulled (its far end goes down: no carrier).
    let st = b.net().bond_status(&bond).await.unwrap();
    let active = st.active.clone().expect("an active member");
    assert!(st.members.iter().all(|m| m.enabled), "{st:?}");
    let (failing, other) = if active == u1.host {
        (&u1, &u2)
    } else {
        (&u2, &u1)
    };
    let lan_name = lan.name.clone();
    let pinger = std::thread::spawn(move || {
        let out = std::process::Command::new("ip")
            .args([
                "netns", "exec", &lan_name, "ping", "-i", "0.02", "-w", "8", "-W", "1",
            ])
            .arg("10.202.0.10")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    lan.ip(&["link", "set", &failing.peer, "down"]);
    let t_fail = Instant::now();
    let switched = loop {
        let st = b.net().bond_status(&bond).await.unwrap();
        if st.active.as_deref() == Some(other.host.as_str()) {
            break t_fail.elapsed();
        }
        assert!(
            t_fail.elapsed() < Duration::from_secs(5),
            "no failover: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let out = tokio::task::spawn_blocking(move || pinger.join().unwrap())
        .await
        .unwrap();
    let (sent, received) = ping_counts(&out);
    let lost = sent - received;
    let st = b.net().bond_status(&bond).await.unwrap();
    let failed = st.members.iter().find(|m| m.name == failing.host).unwrap();
    assert!(!failed.enabled && !failed.active, "{st:?}");
    eprintln!(
        "MEASURED bond failover: guest boot→first ping {:.1}s; active-backup switched to {} within {} ms; \
         {lost} of {sent} packets lost at 20 ms intervals",
        boot_to_ping.as_secs_f64(),
        other.host,
        switched.as_millis()
    );
    assert!(sent > 200, "too few packets sent: {out}");
    assert!(
        lost <= MAX_LOST,
        "{lost} packets lost in failover (max {MAX_LOST}): {out}"
    );

    // The member comes back: the bond reports it enabled again.
    lan.ip(&["link", "set", &failing.peer, "up"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = b.net().bond_status(&bond).await.unwrap();
        if st.members.iter().all(|m| m.enabled) {
            break;
        }
        assert!(Instant::now() < deadline, "member not back: {st:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Mode changes apply in place and traffic still flows.
    for mode in [BondMode::BalanceSlb, BondMode::BalanceTcp] {
        b.net().set_bond_mode(&bond, mode).await.unwrap();
        let st = b.net().bond_status(&bond).await.unwrap();
        assert_eq!(st.spec.mode, mode);
        assert_eq!(st.lacp, mode == BondMode::BalanceTcp);
        assert_eq!(
            nh.vsctl(&["get", "Port", &bond, "bond_mode"]).trim(),
            mode.as_str()
        );
        // balance-tcp: LACP finds no partner here and falls back to active-backup
        // after the fast LACP timeout (~3 s).
        let deadline = Instant::now() + Duration::from_secs(15);
        let t = Instant::now();
        loop {
            let st = b.net().bond_status(&bond).await.unwrap();
            if st.members.iter().any(|m| m.enabled) {
                eprintln!(
                    "MEASURED {mode}: a member carries traffic {} ms after the change (lacp {})",
                    t.elapsed().as_millis(),
                    st.lacp_status
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no member enabled in {mode}: {st:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (ok, out) = lan.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.202.0.10"]);
        assert!(ok, "LAN → guest in {mode}: {out}\n{}", nh.diag(&sw));
    }
    b.power("lanvm", PowerAction::Poweroff).await.unwrap();
    b.undefine("lanvm").await.unwrap();
    b.net().delete_switch(&sw).await.unwrap();
    assert!(b.net().list_bonds().unwrap().is_empty());
    assert!(!nh.vsctl(&["list-br"]).contains(&sw));
}
