//! The network half through the admin API: vSwitches, bonds and VM NICs (the packet
//! level is proven in vmm-backend's net tests).

#![allow(clippy::unwrap_used)]

mod common;

use common::TestGateway;
use serde_json::json;

/// Stops this gateway's private OVS daemons, whatever the test did.
struct OvsGuard<'a>(&'a TestGateway);

impl Drop for OvsGuard<'_> {
    fn drop(&mut self) {
        let _ = self.0.app.backend().network().stop_daemons();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switches_bonds_and_nics_through_the_admin_api() {
    let gw = TestGateway::start().await;
    let _ovs = OvsGuard(&gw);
    let sw = format!("api{}", std::process::id() % 100_000);

    let (s, v) = gw
        .admin(
            "POST",
            "/api/v1/vswitches",
            Some(json!({"name": sw, "uplinks": []})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["kind"], "private");
    let (s, v) = gw
        .admin("POST", "/api/v1/vswitches", Some(json!({"name": sw})))
        .await;
    assert_eq!(s, 409, "name collision: {v}");
    let (s, v) = gw.admin("GET", "/api/v1/vswitches", None).await;
    assert_eq!(s, 200);
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .any(|x| x["name"] == sw.as_str()),
        "{v}"
    );

    let (s, v) = gw
        .admin(
            "POST",
            "/api/v1/bonds",
            Some(json!({"name": "b1", "switch": sw, "members": ["only0"]})),
        )
        .await;
    assert_eq!(s, 409, "one-member bond: {v}");
    let (s, v) = gw
        .admin(
            "POST",
            "/api/v1/bonds",
            Some(json!({"name": "b1", "switch": sw, "members": ["nosuch0", "nosuch1"]})),
        )
        .await;
    assert_eq!(s, 409, "unknown interfaces: {v}");
    assert!(v["message"].as_str().unwrap().contains("nosuch"), "{v}");
    let (s, _) = gw.admin("GET", "/api/v1/bonds/nope", None).await;
    assert_eq!(s, 404);

    gw.start_firmware_vm("netvm").await;
    let (s, _) = gw
        .admin("POST", "/api/v1/vms/netvm/actions/poweroff", None)
        .await;
    assert_eq!(s, 200);
    let nic = json!({"model": "e1000", "attach": {"type": "switch", "switch": sw, "vlan": 10}});
    let (s, v) = gw.admin("POST", "/api/v1/vms/netvm/nics", Some(nic)).await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let (s, v) = gw.admin("GET", "/api/v1/vms/netvm/nics", None).await;
    assert_eq!(s, 200);
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    let (s, v) = gw
        .admin("DELETE", &format!("/api/v1/vswitches/{sw}"), None)
        .await;
    assert_eq!(s, 409, "a VM is on it: {v}");
    let (s, v) = gw
        .admin("DELETE", &format!("/api/v1/vms/netvm/nics/{id}"), None)
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = gw
        .admin("DELETE", "/api/v1/vms/netvm/nics/nic9", None)
        .await;
    assert_eq!(s, 404);
    let (s, v) = gw
        .admin("DELETE", &format!("/api/v1/vswitches/{sw}"), None)
        .await;
    assert_eq!(s, 204, "{v}");
}
