//! The plan: what OVS has ([`Actual`], read from `ovs-vsctl list`) turned into the
//! `ovs-vsctl` commands of one transaction that make it match the desired
//! [`NetState`]. Pure (no I/O), so it is unit-tested; none when OVS already matches.

use std::collections::{BTreeMap, BTreeSet};

use super::ovs::{map_values, opt_string, set_values, Row};
use super::state::{BondMode, NetState, StateError, SwitchSpec, VmPort, MANAGED_KEY};

/// A port as OVS has it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ActualPort {
    pub interfaces: BTreeSet<String>,
    pub bond_mode: Option<String>,
    pub lacp: Option<String>,
    pub tag: Option<u16>,
    pub other_config: BTreeMap<String, String>,
}

/// A bridge as OVS has it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ActualBridge {
    pub datapath: String,
    pub managed: bool,
    pub ports: BTreeMap<String, ActualPort>,
}

/// What OVS has: bridges by name.
pub type Actual = BTreeMap<String, ActualBridge>;

/// Builds [`Actual`] from `ovs-vsctl list` rows of Bridge, Port and Interface.
pub fn actual_from_rows(bridges: &[Row], ports: &[Row], ifaces: &[Row]) -> Actual {
    let iface_names: BTreeMap<String, String> = ifaces
        .iter()
        .filter_map(|r| Some((opt_string(r.get("_uuid"))?, opt_string(r.get("name"))?)))
        .collect();
    let port_rows: BTreeMap<String, (String, ActualPort)> = ports
        .iter()
        .filter_map(|r| {
            let uuid = opt_string(r.get("_uuid"))?;
            let name = opt_string(r.get("name"))?;
            let interfaces = set_values(r.get("interfaces"))
                .iter()
                .filter_map(|u| u.as_str().and_then(|u| iface_names.get(u)).cloned())
                .collect();
            let tag = set_values(r.get("tag"))
                .first()
                .and_then(|t| t.as_u64())
                .and_then(|t| u16::try_from(t).ok());
            Some((
                uuid,
                (
                    name,
                    ActualPort {
                        interfaces,
                        bond_mode: opt_string(r.get("bond_mode")),
                        lacp: opt_string(r.get("lacp")),
                        tag,
                        other_config: map_values(r.get("other_config")),
                    },
                ),
            ))
        })
        .collect();
    let mut out = Actual::new();
    for r in bridges {
        let Some(name) = opt_string(r.get("name")) else {
            continue;
        };
        let ports = set_values(r.get("ports"))
            .iter()
            .filter_map(|u| u.as_str().and_then(|u| port_rows.get(u)).cloned())
            .collect();
        out.insert(
            name,
            ActualBridge {
                datapath: opt_string(r.get("datapath_type")).unwrap_or_default(),
                managed: map_values(r.get("external_ids")).contains_key(MANAGED_KEY),
                ports,
            },
        );
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    Plain {
        tag: Option<u16>,
        ids: Vec<(String, String)>,
    },
    Bond {
        members: BTreeSet<String>,
        mode: BondMode,
    },
}

fn s(v: &str) -> String {
    v.to_owned()
}

fn bond_settings(mode: BondMode) -> Vec<String> {
    vec![
        format!("bond_mode={}", mode.as_str()),
        format!("lacp={}", mode.lacp()),
        s("other_config:bond-detect-mode=carrier"),
        s("other_config:lacp-fallback-ab=true"),
        s("other_config:lacp-time=fast"),
    ]
}

fn bond_matches(p: &ActualPort, members: &BTreeSet<String>, mode: BondMode) -> bool {
    p.interfaces == *members
        && p.bond_mode.as_deref() == Some(mode.as_str())
        && p.lacp.as_deref().unwrap_or("off") == mode.lacp()
        && p.other_config.get("bond-detect-mode").map(String::as_str) == Some("carrier")
        && p.other_config.get("lacp-fallback-ab").map(String::as_str) == Some("true")
        && p.other_config.get("lacp-time").map(String::as_str) == Some("fast")
}

/// The `ovs-vsctl` commands (one transaction) that make OVS match `state` and
/// `vm_ports`, with bridges of datapath type `datapath`. Managed bridges that are not
/// desired are deleted; bridges not managed by us are never touched.
pub fn plan(
    state: &NetState,
    vm_ports: &[VmPort],
    datapath: &str,
    actual: &Actual,
) -> Result<Vec<Vec<String>>, StateError> {
    let mut cmds: Vec<Vec<String>> = Vec::new();
    // Where each port name is now, to move it when it sits on another bridge.
    let mut location: BTreeMap<&str, &str> = BTreeMap::new();
    for (b, ab) in actual {
        for p in ab.ports.keys() {
            location.insert(p.as_str(), b.as_str());
        }
    }
    for (name, ab) in actual {
        if ab.managed && !state.switches.contains_key(name) {
            cmds.push(vec![s("--if-exists"), s("del-br"), name.clone()]);
        }
    }
    let empty = ActualBridge::default();
    for sw in state.switches.values() {
        let want = wanted_ports(state, sw, vm_ports);
        let ab = bridge(sw, datapath, actual, &empty, &mut cmds)?;
        for pname in ab.ports.keys() {
            if *pname != sw.name && !want.contains_key(pname) {
                cmds.push(vec![s("del-port"), sw.name.clone(), pname.clone()]);
            }
        }
        for (pname, w) in &want {
            port(
                &sw.name,
                pname,
                w,
                ab.ports.get(pname),
                &location,
                &mut cmds,
            );
        }
    }
    Ok(cmds)
}

/// The ports a vSwitch should have: its plain uplinks, its bonds and its VMs' taps.
fn wanted_ports(state: &NetState, sw: &SwitchSpec, vm_ports: &[VmPort]) -> BTreeMap<String, Want> {
    let mut want: BTreeMap<String, Want> = BTreeMap::new();
    for u in &sw.uplinks {
        want.insert(
            u.clone(),
            Want::Plain {
                tag: None,
                ids: vec![(s("vmgw-role"), s("uplink"))],
            },
        );
    }
    for b in state.bonds_of(&sw.name) {
        want.insert(
            b.name.clone(),
            Want::Bond {
                members: b.members.iter().cloned().collect(),
                mode: b.mode,
            },
        );
    }
    for p in vm_ports.iter().filter(|p| p.switch == sw.name) {
        want.insert(
            p.tap.clone(),
            Want::Plain {
                tag: p.vlan,
                ids: vec![
                    (s("vmgw-role"), s("vm")),
                    (s("vmgw-vm"), p.vm.clone()),
                    (s("vmgw-nic"), p.nic.clone()),
                ],
            },
        );
    }
    want
}

/// The bridge of a vSwitch as OVS has it (`empty` when it is still to be added, with
/// the commands adding it); refuses a bridge of the same name that is not ours.
fn bridge<'a>(
    sw: &SwitchSpec,
    datapath: &str,
    actual: &'a Actual,
    empty: &'a ActualBridge,
    cmds: &mut Vec<Vec<String>>,
) -> Result<&'a ActualBridge, StateError> {
    match actual.get(&sw.name) {
        Some(ab) if !ab.managed => Err(StateError::ForeignBridge(sw.name.clone())),
        Some(ab) => {
            if ab.datapath != datapath {
                cmds.push(vec![
                    s("set"),
                    s("Bridge"),
                    sw.name.clone(),
                    format!("datapath_type={datapath}"),
                ]);
            }
            Ok(ab)
        }
        None => {
            cmds.push(vec![s("add-br"), sw.name.clone()]);
            cmds.push(vec![
                s("set"),
                s("Bridge"),
                sw.name.clone(),
                format!("datapath_type={datapath}"),
                format!("external_ids:{MANAGED_KEY}=true"),
            ]);
            Ok(empty)
        }
    }
}

/// The commands for one wanted port of bridge `br`: moved off another bridge,
/// (re)created when missing or of the wrong shape, else updated in place.
fn port(
    br: &str,
    pname: &str,
    w: &Want,
    here: Option<&ActualPort>,
    location: &BTreeMap<&str, &str>,
    cmds: &mut Vec<Vec<String>>,
) {
    let elsewhere = location.get(pname).is_some_and(|b| *b != br);
    let recreate = match (w, here) {
        (_, None) => true,
        (Want::Plain { .. }, Some(p)) => {
            p.bond_mode.is_some() || p.interfaces != BTreeSet::from([pname.to_owned()])
        }
        (Want::Bond { members, .. }, Some(p)) => p.interfaces != *members,
    };
    if let (true, Some(b)) = (elsewhere && here.is_none(), location.get(pname)) {
        cmds.push(vec![
            s("--if-exists"),
            s("del-port"),
            (*b).to_owned(),
            pname.to_owned(),
        ]);
    }
    if recreate {
        if here.is_some() {
            cmds.push(vec![s("del-port"), br.to_owned(), pname.to_owned()]);
        }
        cmds.push(add_port(br, pname, w));
        return;
    }
    let Some(p) = here else { return };
    match w {
        Want::Plain { tag, .. } if p.tag != *tag => match tag {
            Some(t) => cmds.push(vec![
                s("set"),
                s("Port"),
                pname.to_owned(),
                format!("tag={t}"),
            ]),
            None => cmds.push(vec![s("clear"), s("Port"), pname.to_owned(), s("tag")]),
        },
        Want::Bond { members, mode } if !bond_matches(p, members, *mode) => {
            let mut c = vec![s("set"), s("Port"), pname.to_owned()];
            c.extend(bond_settings(*mode));
            cmds.push(c);
        }
        _ => {}
    }
}

/// The `add-port` or `add-bond` command of a wanted port.
fn add_port(br: &str, pname: &str, w: &Want) -> Vec<String> {
    match w {
        Want::Plain { tag, ids } => {
            let mut c = vec![s("add-port"), br.to_owned(), pname.to_owned()];
            if let Some(t) = tag {
                c.push(format!("tag={t}"));
            }
            c.push(format!("external_ids:{MANAGED_KEY}=true"));
            c.extend(ids.iter().map(|(k, v)| format!("external_ids:{k}={v}")));
            c
        }
        Want::Bond { members, mode } => {
            let mut c = vec![s("add-bond"), br.to_owned(), pname.to_owned()];
            c.extend(members.iter().cloned());
            c.extend(bond_settings(*mode));
            c.push(format!("external_ids:{MANAGED_KEY}=true"));
            c.push(s("external_ids:vmgw-role=bond"));
            c
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::state::tap_name;
    use crate::net::state::tests::state;
    use crate::spec::nic::MacAddr;

    fn port(ifaces: &[&str]) -> ActualPort {
        ActualPort {
            interfaces: ifaces.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn applied(st: &NetState, vm: &[VmPort]) -> Actual {
        let mut ab = ActualBridge {
            datapath: "netdev".into(),
            managed: true,
            ports: BTreeMap::new(),
        };
        ab.ports.insert("sw0".into(), port(&["sw0"]));
        for u in &st.switches["sw0"].uplinks {
            ab.ports.insert(u.clone(), port(&[u]));
        }
        for b in st.bonds.values() {
            let mut p = port(&b.members.iter().map(String::as_str).collect::<Vec<_>>());
            p.bond_mode = Some(b.mode.as_str().into());
            p.lacp = Some(b.mode.lacp().into());
            p.other_config
                .insert("bond-detect-mode".into(), "carrier".into());
            p.other_config
                .insert("lacp-fallback-ab".into(), "true".into());
            p.other_config.insert("lacp-time".into(), "fast".into());
            ab.ports.insert(b.name.clone(), p);
        }
        for v in vm {
            let mut p = port(&[&v.tap]);
            p.tag = v.vlan;
            ab.ports.insert(v.tap.clone(), p);
        }
        BTreeMap::from([("sw0".to_string(), ab)])
    }

    fn vm_port() -> VmPort {
        let mac: MacAddr = "52:54:00:12:34:56".parse().expect("mac");
        VmPort {
            vm: "web".into(),
            nic: "nic0".into(),
            mac,
            switch: "sw0".into(),
            vlan: Some(10),
            tap: tap_name(&mac),
        }
    }

    #[test]
    fn empty_ovs_gets_everything_in_one_plan() {
        let cmds = plan(&state(), &[vm_port()], "netdev", &Actual::new()).expect("plan");
        let text: Vec<String> = cmds.iter().map(|c| c.join(" ")).collect();
        assert_eq!(text[0], "add-br sw0");
        assert!(text[1].contains("datapath_type=netdev"));
        assert!(text
            .iter()
            .any(|c| c.starts_with("add-bond sw0 bond0 eth2 eth3 bond_mode=balance-slb lacp=off")));
        assert!(text.iter().any(|c| c.starts_with("add-port sw0 eth1 ")));
        assert!(text
            .iter()
            .any(|c| c.starts_with("add-port sw0 vt525400123456 tag=10 ")));
    }

    #[test]
    fn applied_state_plans_nothing() {
        let st = state();
        let vm = [vm_port()];
        assert!(plan(&st, &vm, "netdev", &applied(&st, &vm))
            .expect("plan")
            .is_empty());
    }

    #[test]
    fn changes_are_minimal() {
        let st = state();
        let vm = [vm_port()];
        let actual = applied(&st, &vm);
        let mut st2 = st.clone();
        st2.bonds.get_mut("bond0").expect("bond").mode = BondMode::BalanceTcp;
        let mut vm2 = vm.clone();
        vm2[0].vlan = None;
        let text: Vec<String> = plan(&st2, &vm2, "netdev", &actual)
            .expect("plan")
            .iter()
            .map(|c| c.join(" "))
            .collect();
        assert_eq!(
            text,
            vec![
                "set Port bond0 bond_mode=balance-tcp lacp=active other_config:bond-detect-mode=carrier other_config:lacp-fallback-ab=true other_config:lacp-time=fast",
                "clear Port vt525400123456 tag",
            ]
        );
        // A VM that stopped: its port goes; a deleted switch: its bridge goes.
        let text: Vec<String> = plan(&st, &[], "netdev", &actual)
            .expect("plan")
            .iter()
            .map(|c| c.join(" "))
            .collect();
        assert_eq!(text, vec!["del-port sw0 vt525400123456"]);
        let text: Vec<String> = plan(&NetState::default(), &[], "netdev", &actual)
            .expect("plan")
            .iter()
            .map(|c| c.join(" "))
            .collect();
        assert_eq!(text, vec!["--if-exists del-br sw0"]);
    }

    #[test]
    fn foreign_bridges_are_left_alone() {
        let mut actual = applied(&state(), &[]);
        actual.get_mut("sw0").expect("sw0").managed = false;
        assert!(matches!(
            plan(&state(), &[], "netdev", &actual),
            Err(StateError::ForeignBridge(_))
        ));
        assert!(plan(&NetState::default(), &[], "netdev", &actual)
            .expect("plan")
            .is_empty());
    }
}
