//! No token, password, cookie value or Authorization header appears in any log line, at
//! any level (trace included), through a whole link's life.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{TestGateway, WsBytes};
use serde_json::json;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_logs() {
    let cap = Capture::default();
    let writer = cap.clone();
    // Everything at trace, except the test's own WebSocket client (not gateway code),
    // which logs the request it sends, cookie included.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "trace,tungstenite::handshake::client=off",
        ))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let gw = TestGateway::start().await;
    gw.start_firmware_vm("lg").await;
    let password = "Pa55-unique-Secret-9931";
    let link = gw
        .create_link(json!({"vm": "lg", "ttl_seconds": 600, "password": password}))
        .await;
    let token = link["token"].as_str().unwrap().to_owned();
    assert_eq!(gw.exchange(&token, Some("wrong-guess-XYZ")).await.0, 401);
    let (s, cookie, v) = gw.exchange(&token, Some(password)).await;
    assert_eq!(s, 200);
    let cookie = cookie.unwrap();
    let mut c = WsBytes::new(
        gw.ws(
            v["ws_path"].as_str().unwrap(),
            Some(&cookie),
            Some(&gw.origin()),
        )
        .await
        .unwrap(),
    );
    c.rfb_connect().await;
    let (s, _) = gw
        .admin(
            "DELETE",
            &format!("/api/v1/links/{}", link["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, 200);
    c.closed_within(std::time::Duration::from_secs(2)).await;

    let text = String::from_utf8_lossy(&cap.0.lock().unwrap()).into_owned();
    assert!(text.contains("session started"), "logging works at all");
    let cookie_value = cookie.split_once('=').unwrap().1;
    let signature = token.rsplit('.').next().unwrap();
    for (what, secret) in [
        ("password", password),
        ("wrong password", "wrong-guess-XYZ"),
        ("token", token.as_str()),
        ("token signature", signature),
        ("cookie", cookie_value),
        ("admin token", gw.admin_token.as_str()),
    ] {
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(secret)).collect();
        assert!(
            lines.is_empty(),
            "the {what} appears in the logs: {lines:#?}"
        );
    }
    assert!(
        !text.to_ascii_lowercase().contains("authorization: bearer"),
        "an Authorization header is logged"
    );
}
