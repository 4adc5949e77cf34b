//! The guest keyboard layout as the admin API sets it and the visitor's page learns it
//! (exchange and status answers), on vmm-backend's in-memory fake backend. That typed
//! characters arrive in a real guest using the layout is tested in Chromium
//! (`static/tests/keyboard.test.mjs`), since the page's tables do the typing.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::TestGateway;
use serde_json::json;
use vmm_backend::fake::FakeBackend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layout_is_set_checked_and_reported_to_visitors() {
    let run = tempfile::Builder::new()
        .prefix("vmgw-k")
        .tempdir_in("/tmp")
        .unwrap();
    let gw = TestGateway::start_on(Arc::new(FakeBackend::new(run.path()))).await;
    gw.start_firmware_vm("alpha").await;

    // None set: null, and visitors are told null (the page assumes en-us).
    let (s, v) = gw.admin("GET", "/api/v1/vms/alpha", None).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["spec"]["keyboard_layout"].is_null(), "{v}");
    let link = gw
        .create_link(json!({"vm": "alpha", "ttl_seconds": 600}))
        .await;
    let token = link["token"].as_str().unwrap();
    let (s, _, v) = gw.exchange(token, None).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["keyboard_layout"].is_null(), "{v}");

    // Set it: the VM reports it, the next exchange and the status carry it.
    let (s, v) = gw
        .admin(
            "PATCH",
            "/api/v1/vms/alpha",
            Some(json!({"keyboard_layout": "de"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["spec"]["keyboard_layout"], "de", "{v}");
    let (s, cookie, v) = gw.exchange(token, None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["keyboard_layout"], "de", "{v}");
    let status_path = format!("/s/status/{}", v["link_id"].as_str().unwrap());
    let (s, _, st) = gw
        .public(
            "GET",
            &status_path,
            &format!("Cookie: {}\r\n", cookie.unwrap()),
            None,
        )
        .await;
    assert_eq!(s, 200, "{st}");
    assert_eq!(st["keyboard_layout"], "de", "{st}");

    // Absent field: unchanged. Unknown names and fields, other VMs: refused.
    let (s, v) = gw
        .admin("PATCH", "/api/v1/vms/alpha", Some(json!({})))
        .await;
    assert_eq!(
        (s, v["spec"]["keyboard_layout"].as_str()),
        (200, Some("de"))
    );
    for bad in [
        json!({"keyboard_layout": "klingon"}),
        json!({"keyboard_layout": "DE"}),
        json!({"keyboard_layout": 7}),
        json!({"keyboard_layout": "de", "memory_mib": 4096}),
    ] {
        let (s, v) = gw
            .admin("PATCH", "/api/v1/vms/alpha", Some(bad.clone()))
            .await;
        assert_eq!(s, 400, "{bad} -> {v}");
    }
    let (s, v) = gw
        .admin(
            "PATCH",
            "/api/v1/vms/nosuch",
            Some(json!({"keyboard_layout": "fr"})),
        )
        .await;
    assert_eq!(s, 404, "{v}");
    let (_, v) = gw.admin("GET", "/api/v1/vms/alpha", None).await;
    assert_eq!(
        v["spec"]["keyboard_layout"], "de",
        "refusals change nothing: {v}"
    );

    // Null clears it; the change is audited.
    let (s, v) = gw
        .admin(
            "PATCH",
            "/api/v1/vms/alpha",
            Some(json!({"keyboard_layout": null})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(v["spec"]["keyboard_layout"].is_null(), "{v}");
    let (_, audit) = gw.admin("GET", "/api/v1/audit", None).await;
    let details: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["detail"].as_str())
        .filter(|d| d.contains("keyboard layout"))
        .collect();
    assert_eq!(
        details,
        [
            "admin clear keyboard layout of alpha",
            "admin set keyboard layout of alpha to de"
        ],
        "{audit}"
    );

    // The OpenAPI document describes the field.
    let (_, doc) = gw.admin("GET", "/api/v1/openapi.json", None).await;
    let layouts =
        &doc["components"]["schemas"]["VmUpdate"]["properties"]["keyboard_layout"]["enum"];
    for l in ["en-us", "de", "fr", "en-gb", "ja"] {
        assert!(layouts.as_array().unwrap().contains(&json!(l)), "{layouts}");
    }
    assert!(
        doc["components"]["schemas"]["ExchangeResponse"]["properties"]["keyboard_layout"]
            .is_object()
    );
}

/// `gateway vm define --keyboard-layout` and `gateway vm keyboard-layout` on a data
/// directory: set, shown, checked, cleared.
#[test]
fn cli_sets_shows_checks_and_clears_the_layout() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = gateway(&[
        "vm",
        "define",
        "--name",
        "k1",
        "--firmware",
        "--keyboard-layout",
        "fr",
        "--json",
    ]);
    assert!(ok, "{err}");
    let spec: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(spec["keyboard_layout"], "fr", "{out}");

    let (ok, _, err) = gateway(&["vm", "keyboard-layout", "k1", "klingon"]);
    assert!(
        !ok && err.contains("unknown keyboard layout") && err.contains("en-gb"),
        "{err}"
    );
    let (ok, _, err) = gateway(&[
        "vm",
        "define",
        "--name",
        "k2",
        "--firmware",
        "--keyboard-layout",
        "xx",
    ]);
    assert!(!ok && err.contains("unknown keyboard layout"), "{err}");

    let (ok, out, err) = gateway(&["vm", "keyboard-layout", "k1", "ja"]);
    assert!(ok && out.contains("ja"), "{out}{err}");
    let (ok, out, _) = gateway(&["vm", "show", "k1"]);
    assert!(ok && out.contains("keyboard:    ja"), "{out}");
    let (ok, out, _) = gateway(&["vm", "keyboard-layout", "k1", "none", "--json"]);
    assert!(ok, "{out}");
    let spec: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(spec["keyboard_layout"].is_null(), "{out}");
    let (ok, out, _) = gateway(&["vm", "show", "k1"]);
    assert!(ok && !out.contains("keyboard:"), "{out}");
}
