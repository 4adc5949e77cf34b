//! The output of `ovs-vsctl --format=json` and `ovs-appctl bond/show`, parsed. Pure.

use std::collections::BTreeMap;

use serde_json::Value;

/// One row of `ovs-vsctl list --format=json --data=json`.
pub type Row = BTreeMap<String, Value>;

pub fn parse_table(out: &str) -> Result<Vec<Row>, String> {
    let v: Value = serde_json::from_str(out).map_err(|e| e.to_string())?;
    let headings: Vec<String> = v
        .get("headings")
        .and_then(Value::as_array)
        .ok_or("no headings")?
        .iter()
        .filter_map(|h| h.as_str().map(str::to_owned))
        .collect();
    let data = v.get("data").and_then(Value::as_array).ok_or("no data")?;
    Ok(data
        .iter()
        .filter_map(Value::as_array)
        .map(|row| headings.iter().cloned().zip(row.iter().cloned()).collect())
        .collect())
}

/// An OVSDB atom or set as a list of plain JSON values: `["set",[a,b]]` → `[a,b]`,
/// `["uuid","…"]` → `["…"]`, `x` → `[x]`.
pub fn set_values(v: Option<&Value>) -> Vec<Value> {
    match v {
        None => Vec::new(),
        Some(Value::Array(a)) if a.len() == 2 && a[0] == "set" => a[1]
            .as_array()
            .map(|items| items.iter().map(atom).collect())
            .unwrap_or_default(),
        Some(other) => vec![atom(other)],
    }
}

fn atom(v: &Value) -> Value {
    match v {
        Value::Array(a) if a.len() == 2 && (a[0] == "uuid" || a[0] == "named-uuid") => a[1].clone(),
        other => other.clone(),
    }
}

/// An optional string column (`["set",[]]` when empty).
pub fn opt_string(v: Option<&Value>) -> Option<String> {
    set_values(v)
        .into_iter()
        .next()
        .and_then(|x| x.as_str().map(str::to_owned))
}

/// A map column: `["map",[[k,v],…]]`.
pub fn map_values(v: Option<&Value>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(Value::Array(a)) = v {
        if a.len() == 2 && a[0] == "map" {
            for pair in a[1].as_array().into_iter().flatten() {
                if let Some([k, v]) = pair.as_array().map(Vec::as_slice) {
                    if let (Some(k), Some(v)) = (k.as_str(), v.as_str()) {
                        out.insert(k.to_owned(), v.to_owned());
                    }
                }
            }
        }
    }
    out
}

/// One member of a bond as `ovs-appctl bond/show` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MemberStatus {
    pub name: String,
    /// The member may carry traffic (link up, and LACP agrees when LACP is on).
    pub enabled: bool,
    /// The member carries the traffic (active-backup), or the primary one.
    pub active: bool,
}

/// A bond's run-time state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BondRuntime {
    pub mode: String,
    pub lacp_status: String,
    pub active: Option<String>,
    pub members: Vec<MemberStatus>,
}

/// Parses `ovs-appctl bond/show NAME` (OVS 2.x "slave" and 3.x "member" wording).
pub fn parse_bond_show(text: &str) -> BondRuntime {
    let mut rt = BondRuntime {
        mode: String::new(),
        lacp_status: String::new(),
        active: None,
        members: Vec::new(),
    };
    for line in text.lines() {
        let t = line.trim();
        if let Some(m) = t.strip_prefix("bond_mode:") {
            rt.mode = m.trim().to_owned();
        } else if let Some(m) = t.strip_prefix("lacp_status:") {
            rt.lacp_status = m.trim().to_owned();
        } else if let Some(rest) = t
            .strip_prefix("active member mac:")
            .or_else(|| t.strip_prefix("active slave mac:"))
        {
            // `12:18:4b:52:0a:50(xu1)`
            rt.active = rest
                .trim()
                .split_once('(')
                .map(|(_, n)| n.trim_end_matches(')').to_owned())
                .filter(|n| !n.is_empty() && n != "none");
        } else if let Some(rest) = t
            .strip_prefix("member ")
            .or_else(|| t.strip_prefix("slave "))
        {
            if let Some((name, state)) = rest.split_once(':') {
                rt.members.push(MemberStatus {
                    name: name.trim().to_owned(),
                    enabled: state.trim() == "enabled",
                    active: false,
                });
            }
        } else if t == "active member" || t == "active slave" {
            if let Some(m) = rt.members.last_mut() {
                m.active = true;
            }
        }
    }
    if rt.active.is_none() {
        rt.active = rt.members.iter().find(|m| m.active).map(|m| m.name.clone());
    }
    if let Some(a) = rt.active.clone() {
        for m in &mut rt.members {
            m.active = m.name == a;
        }
    }
    rt
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOND_SHOW: &str = "---- xbond ----
bond_mode: active-backup
bond may use recirculation: no, Recirc-ID : -1
bond-hash-basis: 0
lb_output action: disabled, bond-id: -1
updelay: 0 ms
downdelay: 0 ms
lacp_status: off
lacp_fallback_ab: false
active-backup primary: <none>
active member mac: 32:8f:c1:52:ec:34(xu2)

member xu1: disabled
  may_enable: false

member xu2: enabled
  active member
  may_enable: true
";

    #[test]
    fn parses_bond_show() {
        let rt = parse_bond_show(BOND_SHOW);
        assert_eq!(rt.mode, "active-backup");
        assert_eq!(rt.lacp_status, "off");
        assert_eq!(rt.active.as_deref(), Some("xu2"));
        assert_eq!(
            rt.members,
            vec![
                MemberStatus {
                    name: "xu1".into(),
                    enabled: false,
                    active: false
                },
                MemberStatus {
                    name: "xu2".into(),
                    enabled: true,
                    active: true
                },
            ]
        );
        let old = BOND_SHOW
            .replace("member", "slave")
            .replace("active slave mac: 32:8f:c1:52:ec:34(xu2)", "");
        let rt = parse_bond_show(&old);
        assert_eq!(rt.active.as_deref(), Some("xu2"));
    }

    #[test]
    fn parses_vsctl_json() {
        let out = r#"{"data":[["br0",["set",[["uuid","a"],["uuid","b"]]],"netdev",["map",[["vmgw-managed","true"]]],["set",[]]]],"headings":["name","ports","datapath_type","external_ids","tag"]}"#;
        let rows = parse_table(out).expect("parse");
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(opt_string(r.get("name")).as_deref(), Some("br0"));
        assert_eq!(
            set_values(r.get("ports")),
            vec![Value::from("a"), "b".into()]
        );
        assert_eq!(
            map_values(r.get("external_ids"))
                .get("vmgw-managed")
                .map(String::as_str),
            Some("true")
        );
        assert!(set_values(r.get("tag")).is_empty());
        assert_eq!(set_values(Some(&Value::from(7))), vec![Value::from(7)]);
    }
}
