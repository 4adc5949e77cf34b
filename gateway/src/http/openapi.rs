//! The OpenAPI 3.1 document of both listeners' APIs, served at
//! `/api/v1/openapi.json`. A test keeps it and the route tables identical.

use serde_json::{json, Map, Value};

/// (method, path, summary, request schema, success status, response schema)
type Op = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static str,
    &'static str,
);

const OPS: &[Op] = &[
    ("get", "/healthz", "Liveness check (no auth).", None, "200", "Health"),
    ("get", "/metrics", "Prometheus text metrics (bearer auth).", None, "200", "Metrics"),
    ("get", "/api/v1/openapi.json", "This document (no auth).", None, "200", "Any"),
    ("post", "/api/v1/links", "Create a share link; returns it with its token and URL.", Some("LinkRequest"), "201", "CreatedLink"),
    ("get", "/api/v1/links", "List links with uses and live sessions.", None, "200", "LinkList"),
    ("get", "/api/v1/links/{id}", "Show a link with its live sessions.", None, "200", "Link"),
    ("delete", "/api/v1/links/{id}", "Revoke a link; its live sessions end at once.", None, "200", "Link"),
    ("get", "/api/v1/links/{id}/sessions", "Live sessions of a link.", None, "200", "SessionList"),
    ("get", "/api/v1/sessions", "All live sessions.", None, "200", "SessionList"),
    ("delete", "/api/v1/sessions/{id}", "End one live session.", None, "204", "None"),
    ("get", "/api/v1/vms", "List VMs with their state.", None, "200", "VmList"),
    ("get", "/api/v1/vms/{name}", "Show one VM.", None, "200", "Vm"),
    ("post", "/api/v1/vms/{name}/actions/{action}", "Power action: start, shutdown, poweroff, reset, suspend or resume.", None, "200", "Vm"),
    ("post", "/api/v1/targets", "Register an external console endpoint (VNC, SPICE or raw; TCP or unix socket).", Some("TargetRequest"), "201", "Target"),
    ("get", "/api/v1/targets", "List external console endpoints.", None, "200", "TargetList"),
    ("delete", "/api/v1/targets/{name}", "Remove an external console endpoint.", None, "204", "None"),
    ("get", "/api/v1/audit", "Audit records, newest first. Query filters (all optional, combined): link, vm, kind, client, since and until (RFC 3339), before (an event id: the next page), limit (default 1000, at most 10000), format (json, or jsonl for JSON lines). A session's events carry recording_id when it was recorded.", None, "200", "AuditList"),
    ("get", "/api/v1/vms/{name}/ip", "The guest's IP addresses (from the QEMU guest agent; 409 when it does not run).", None, "200", "GuestAddressList"),
    ("get", "/api/v1/vswitches", "List virtual switches (kind, datapath, uplinks, bonds, VM ports).", None, "200", "SwitchList"),
    ("post", "/api/v1/vswitches", "Create a vSwitch: private (no uplinks), external with one uplink, or with two or more uplinks bonded.", Some("SwitchRequest"), "201", "Switch"),
    ("get", "/api/v1/vswitches/{name}", "Show a vSwitch.", None, "200", "Switch"),
    ("delete", "/api/v1/vswitches/{name}", "Delete a vSwitch (refused while VMs use it).", None, "204", "None"),
    ("get", "/api/v1/bonds", "List bonds.", None, "200", "BondList"),
    ("post", "/api/v1/bonds", "Create a bond of two or more free interfaces on a vSwitch.", Some("BondRequest"), "201", "Bond"),
    ("get", "/api/v1/bonds/{name}", "Bond status: mode, LACP, each member's state and the active one.", None, "200", "BondStatus"),
    ("patch", "/api/v1/bonds/{name}", "Change a bond's mode.", Some("BondModeRequest"), "200", "Bond"),
    ("delete", "/api/v1/bonds/{name}", "Delete a bond.", None, "204", "None"),
    ("get", "/api/v1/vms/{name}/nics", "A VM's NICs.", None, "200", "NicList"),
    ("post", "/api/v1/vms/{name}/nics", "Add a NIC (hot-plugged when the VM runs): model, mac, attach (user or switch with vlan).", Some("NicRequest"), "201", "Nic"),
    ("delete", "/api/v1/vms/{name}/nics/{id}", "Remove a NIC (unplugged when the VM runs).", None, "200", "Nic"),
    ("get", "/api/v1/vms/{name}/screenshot", "A PNG of the running VM's screen (QMP screendump; 409 when it is not running).", None, "200", "Png"),
    ("patch", "/api/v1/vms/{name}", "Change a VM's settings (absent fields stay): keyboard_layout, the guest's layout for the console pages' \"type text\" and on-screen keys (null clears it; consoles opened afterwards use it).", Some("VmUpdate"), "200", "Vm"),
    ("get", "/api/v1/recordings", "Session recordings, newest first, of every gateway sharing the store (optional ?link=ID, ?session=ID).", None, "200", "RecordingList"),
    ("get", "/api/v1/recordings/{id}", "One recording's index entry.", None, "200", "Recording"),
    ("get", "/api/v1/recordings/{id}/file", "The recording file (docs/recording-format.md). Served by the gateway that made it (field gateway); others answer 409 recording_elsewhere naming it.", None, "200", "RecordingFile"),
    ("delete", "/api/v1/recordings/{id}", "Delete a recording (file and entry; on the gateway that holds it, 409 elsewhere or while it is written).", None, "204", "None"),
    ("post", "/s/session", "Visitor: exchange a link token (and password) for a session cookie (public listener).", Some("ExchangeRequest"), "200", "ExchangeResponse"),
    ("get", "/s/status/{link_id}", "Visitor: the link's VM state and expiry (session cookie).", None, "200", "VisitorStatus"),
    ("post", "/s/power/{link_id}", "Visitor: power action start, shutdown, poweroff or reset (links with allow_power; session cookie).", Some("PowerRequest"), "200", "VisitorPower"),
    ("get", "/s/ws/{link_id}", "Visitor: the console WebSocket (cookie from /s/session, allowed Origin; subprotocol `binary`).", None, "101", "None"),
];

fn schemas() -> Value {
    let ts = json!({"type": "string", "format": "date-time"});
    let mut all = json!({
        "Any": {},
        "Health": {"type": "object", "properties": {"status": {"type": "string"}}},
        "Metrics": {"type": "string"},
        "Error": {"type": "object", "properties": {
            "error": {"type": "string"}, "reason": {"type": "string"}, "message": {"type": "string"},
            "retry_after": {"type": "integer"}, "opens_at": ts}},
        "LinkRequest": {"type": "object", "required": ["vm"], "additionalProperties": false, "properties": {
            "vm": {"type": "string", "description": "VM or target name"},
            "console": {"type": "string", "enum": ["vnc", "spice", "raw", "serial"], "default": "vnc",
                "description": "serial: the VM's serial port, shared by its viewers, with recent output on connect (local VMs only); raw: an external byte-stream target. Both open in a terminal."},
            "expires_at": ts, "ttl_seconds": {"type": "integer", "minimum": 1},
            "not_before": ts, "password": {"type": "string", "maxLength": 128},
            "max_uses": {"type": "integer", "minimum": 1}, "max_viewers": {"type": "integer", "minimum": 1},
            "view_only": {"type": "boolean"}, "allow_power": {"type": "boolean"}, "note": {"type": "string"},
            "clipboard": {"type": "string", "enum": ["none", "to_guest", "from_guest", "both"], "default": "to_guest",
                "description": "which way clipboard text may cross the gateway (enforced by it); view-only links never write to the guest"}}},
        "Link": {"type": "object", "properties": {
            "id": {"type": "string"}, "vm": {"type": "string"}, "console": {"type": "string"},
            "expires_at": ts, "not_before": ts, "has_password": {"type": "boolean"},
            "max_uses": {"type": ["integer", "null"]}, "max_viewers": {"type": ["integer", "null"]},
            "view_only": {"type": "boolean"}, "allow_power": {"type": "boolean"}, "note": {"type": ["string", "null"]},
            "clipboard": {"type": "string", "enum": ["none", "to_guest", "from_guest", "both"], "description": "as asked (links made before the policy existed: none)"},
            "uses": {"type": "integer"}, "created_at": ts, "revoked": {"type": "boolean"}, "revoked_at": ts,
            "live_sessions": {"type": "integer"}, "sessions": {"$ref": "#/components/schemas/SessionList"},
            "url": {"type": "string", "description": "https://PUBLIC/s/#TOKEN (list and show too)"}, "token": {"type": "string"}}},
        "CreatedLink": {"allOf": [{"$ref": "#/components/schemas/Link"}, {"type": "object", "properties": {
            "url": {"type": "string", "description": "https://PUBLIC/s/#TOKEN"}, "token": {"type": "string"}}}]},
        "LinkList": {"type": "array", "items": {"$ref": "#/components/schemas/Link"}},
        "Session": {"type": "object", "properties": {
            "id": {"type": "string"}, "link_id": {"type": "string"}, "vm": {"type": "string"},
            "client": {"type": "string"}, "started_at": ts,
            "bytes_to_client": {"type": "integer"}, "bytes_to_console": {"type": "integer"}}},
        "SessionList": {"type": "array", "items": {"$ref": "#/components/schemas/Session"}},
        "Vm": {"type": "object", "properties": {
            "spec": {"type": "object"}, "state": {"type": "string", "enum": ["stopped", "running", "paused", "other"]},
            "qemu_status": {"type": ["string", "null"]}, "pid": {"type": ["integer", "null"]},
            "exit_reason": {"type": ["string", "null"]}, "consoles": {"type": "array"},
            "suspendable": {"type": "boolean"}, "live_migratable": {"type": "boolean"}, "ha_eligible": {"type": "boolean"}}},
        "VmList": {"type": "array", "items": {"$ref": "#/components/schemas/Vm"}},
        "TargetRequest": {"type": "object", "required": ["name", "kind"], "additionalProperties": false, "properties": {
            "name": {"type": "string"}, "kind": {"type": "string", "enum": ["vnc", "spice", "raw"], "description": "serial is not a target kind: a VM's serial port is linked to by the VM's name"},
            "address": {"type": "string", "description": "host:port"}, "socket": {"type": "string", "description": "absolute unix socket path"},
            "vnc_password": {"type": "string", "description": "answered by the gateway; never returned"}}},
        "Target": {"type": "object", "properties": {
            "name": {"type": "string"}, "kind": {"type": "string"}, "address": {"type": "object"}, "created_at": ts}},
        "TargetList": {"type": "array", "items": {"$ref": "#/components/schemas/Target"}},
        "AuditList": {"type": "array", "items": {"type": "object", "properties": {
            "at": ts, "kind": {"type": "string"}, "link_id": {"type": ["string", "null"]},
            "session_id": {"type": ["string", "null"]}, "client": {"type": ["string", "null"]}, "detail": {"type": ["string", "null"]}}}},
        "ExchangeRequest": {"type": "object", "required": ["token"], "additionalProperties": false, "properties": {
            "token": {"type": "string"}, "password": {"type": "string", "maxLength": 128}}},
        "ExchangeResponse": {"type": "object", "properties": {
            "link_id": {"type": "string"}, "vm": {"type": "string"}, "console": {"type": "string"},
            "view_only": {"type": "boolean"}, "allow_power": {"type": "boolean"}, "expires_at": ts, "ws_path": {"type": "string"},
            "clipboard": {"type": "string", "enum": ["none", "to_guest", "from_guest", "both"], "description": "the policy in force (view-only: never towards the guest)"}}},
        "GuestAddressList": {"type": "array", "items": {"type": "object", "properties": {
            "interface": {"type": "string"}, "mac": {"type": ["string", "null"]}, "address": {"type": "string"}, "prefix": {"type": "integer"}}}},
        "VisitorStatus": {"type": "object", "properties": {
            "vm_state": {"type": "string", "enum": ["running", "stopped", "paused", "other", "unknown"]},
            "expires_at": ts, "allow_power": {"type": "boolean"}, "view_only": {"type": "boolean"}, "console": {"type": "string"},
            "clipboard": {"type": "string", "enum": ["none", "to_guest", "from_guest", "both"]},
            "viewers": {"type": "integer"}, "max_viewers": {"type": ["integer", "null"]}}},
        "PowerRequest": {"type": "object", "required": ["action"], "properties": {
            "action": {"type": "string", "enum": ["start", "shutdown", "poweroff", "reset"]}}},
        "VisitorPower": {"type": "object", "properties": {"vm_state": {"type": "string"}}},
        "SwitchRequest": {"type": "object", "required": ["name"], "additionalProperties": false, "properties": {
            "name": {"type": "string"}, "uplinks": {"type": "array", "items": {"type": "string"}},
            "bond_mode": {"$ref": "#/components/schemas/BondMode"}, "bond_name": {"type": "string"}}},
        "Switch": {"type": "object", "properties": {"name": {"type": "string"}, "kind": {"type": "string", "enum": ["external", "private"]}}},
        "SwitchList": {"type": "array", "items": {"$ref": "#/components/schemas/Switch"}},
        "BondMode": {"type": "string", "enum": ["active-backup", "balance-slb", "balance-tcp"]},
        "BondRequest": {"type": "object", "required": ["name", "switch", "members"], "additionalProperties": false, "properties": {
            "name": {"type": "string"}, "switch": {"type": "string"}, "members": {"type": "array", "minItems": 2, "items": {"type": "string"}},
            "mode": {"$ref": "#/components/schemas/BondMode"}}},
        "BondModeRequest": {"type": "object", "required": ["mode"], "properties": {"mode": {"$ref": "#/components/schemas/BondMode"}}},
        "Bond": {"type": "object", "properties": {"name": {"type": "string"}, "switch": {"type": "string"},
            "members": {"type": "array", "items": {"type": "string"}}, "mode": {"$ref": "#/components/schemas/BondMode"}}},
        "BondList": {"type": "array", "items": {"$ref": "#/components/schemas/Bond"}},
        "BondStatus": {"type": "object", "description": "mode, lacp, active member, members with their state"},
        "NicRequest": {"type": "object", "additionalProperties": false, "properties": {
            "model": {"type": "string", "enum": ["e1000", "rtl8139", "virtio", "sriov"]}, "mac": {"type": "string"},
            "attach": {"type": "object", "description": "{\"type\":\"user\"} or {\"type\":\"switch\",\"switch\":NAME,\"vlan\":N}"},
            "pf": {"type": "string"}}},
        "Nic": {"type": "object", "properties": {"id": {"type": "string"}, "model": {"type": "string"}, "mac": {"type": "string"}, "attach": {"type": "object"}}},
        "NicList": {"type": "array", "items": {"$ref": "#/components/schemas/Nic"}},
        "None": {}
    });
    // Added apart: one more entry above exceeds the json! macro's recursion limit.
    all["Png"] = json!({"type": "string", "format": "binary"});
    keyboard_layout_schemas(&mut all);
    all["RecordingFile"] = json!({"type": "string", "format": "binary"});
    all["Recording"] = json!({"type": "object", "properties": {
        "id": {"type": "string"}, "session_id": {"type": "string"}, "link_id": {"type": "string"},
        "vm": {"type": "string"}, "console": {"type": "string"}, "channel": {"type": ["string", "null"]},
        "gateway": {"type": "string", "description": "the gateway holding the file (serves its download)"},
        "file": {"type": "string"}, "started_at": {"type": "string", "format": "date-time"},
        "ended_at": {"type": ["string", "null"], "format": "date-time"}, "bytes": {"type": "integer"},
        "status": {"type": "string", "enum": ["recording", "complete", "stopped", "interrupted"]},
        "detail": {"type": ["string", "null"]}}});
    all["RecordingList"] =
        json!({"type": "array", "items": {"$ref": "#/components/schemas/Recording"}});
    all["AuditList"] = json!({"type": "array", "items": {"type": "object", "properties": {
        "id": {"type": "integer", "description": "paging cursor (?before=)"},
        "at": {"type": "string", "format": "date-time"}, "kind": {"type": "string"}, "link_id": {"type": ["string", "null"]},
        "session_id": {"type": ["string", "null"]}, "client": {"type": ["string", "null"]}, "detail": {"type": ["string", "null"]},
        "recording_id": {"type": ["string", "null"]}}}});
    all["LinkRequest"]["properties"]["record"] = json!({"type": ["boolean", "null"], "description": "record every session (default: the gateway's recording.default)"});
    all["Link"]["properties"]["record"] = json!({"type": ["boolean", "null"]});
    all["ExchangeResponse"]["properties"]["recorded"] =
        json!({"type": "boolean", "description": "the session will be recorded"});
    all["VisitorStatus"]["properties"]["recorded"] = json!({"type": "boolean"});
    all
}

/// The guest keyboard layout: the VM update request, and where it is reported (the VM's
/// spec, the visitor's exchange and status answers).
fn keyboard_layout_schemas(all: &mut Value) {
    let layout = json!({"type": ["string", "null"], "enum": vmm_backend::keyboard::KEYBOARD_LAYOUTS.iter().map(|l| Value::from(*l)).chain([Value::Null]).collect::<Vec<_>>(),
        "description": "the guest's keyboard layout; \"type text\" and the on-screen keys type for it (null: none set, en-us assumed)"});
    all["VmUpdate"] = json!({"type": "object", "additionalProperties": false,
        "properties": {"keyboard_layout": layout.clone()}});
    all["Vm"]["properties"]["spec"] =
        json!({"type": "object", "properties": {"keyboard_layout": layout.clone()}});
    all["ExchangeResponse"]["properties"]["keyboard_layout"] = layout.clone();
    all["VisitorStatus"]["properties"]["keyboard_layout"] = layout;
}

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for (method, path, summary, req, status, resp) in OPS {
        let params: Vec<Value> = path
            .split('/')
            .filter(|s| s.starts_with('{'))
            .map(|s| json!({"name": s.trim_matches(['{', '}']), "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let media = match *resp {
            "Metrics" => "text/plain",
            "Png" => "image/png",
            "RecordingFile" => "application/octet-stream",
            _ => "application/json",
        };
        let mut op = json!({
            "summary": summary,
            "parameters": params,
            "responses": {
                *status: {"description": "success", "content": {media: {"schema": {"$ref": format!("#/components/schemas/{resp}")}}}},
                "default": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        });
        if let Some(r) = req {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{r}")}}}});
        }
        let public =
            path.starts_with("/s/") || *path == "/healthz" || *path == "/api/v1/openapi.json";
        if !public {
            op["security"] = json!([{"bearer": []}]);
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "vm-gateway API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Admin API (admin listener, bearer tokens) and the visitor endpoints (public listener, /s/...)."},
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_and_every_documented_route_exists() {
        let doc = document();
        let paths = doc["paths"].as_object().expect("paths");
        let mut routed = Vec::new();
        let admin = crate::http::admin::ROUTES
            .iter()
            .map(|r| (r.method, r.pattern));
        let share = crate::http::share::ROUTES
            .iter()
            .map(|r| (r.method, r.pattern));
        for (method, pattern) in admin.chain(share) {
            let m = method.to_ascii_lowercase();
            assert!(
                paths.get(pattern).and_then(|p| p.get(&m)).is_some(),
                "{method} {pattern} is not in the OpenAPI document"
            );
            routed.push((m, pattern.to_owned()));
        }
        for (path, ops) in paths {
            for method in ops.as_object().expect("ops").keys() {
                assert!(
                    routed.contains(&(method.clone(), path.clone())),
                    "{method} {path} is documented but not routed"
                );
            }
        }
        // every $ref resolves
        let text = doc.to_string();
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part.chars().take_while(|c| c.is_alphanumeric()).collect();
            assert!(
                doc["components"]["schemas"].get(&name).is_some(),
                "dangling $ref {name}"
            );
        }
    }
}
