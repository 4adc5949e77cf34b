//! No token, password, cookie value or Authorization header appears in any log line, at
//! any level (trace included), through a whole link's life; nor does any byte of console
//! traffic (what a visitor types, what the console shows).

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use common::{TestGateway, WsBytes};
use serde_json::json;
use tracing_subscriber::util::SubscriberInitExt;

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

/// Everything logged in this test process, at trace, through the gateway's own log
/// subscriber (`gateway::logging`, as `gateway serve` installs it), except the test's own
/// WebSocket client (not gateway code), which logs the request it sends, cookie included.
fn capture() -> Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let cap = Capture::default();
            let writer = cap.clone();
            let filter =
                tracing_subscriber::EnvFilter::new("trace,tungstenite::handshake::client=off");
            gateway::logging::subscriber(filter, move || writer.clone(), false).init();
            cap
        })
        .clone()
}

/// The ways a secret's bytes can show in a log line: as text, in hex (either case), and
/// as a Debug list of byte values.
fn renderings(secret: &[u8]) -> Vec<String> {
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let decimal = format!("{:?}", secret);
    vec![
        String::from_utf8_lossy(secret).into_owned(),
        hex.clone(),
        hex.to_ascii_uppercase(),
        decimal.trim_matches(|c| c == '[' || c == ']').to_owned(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_traffic_never_reaches_the_logs() {
    let cap = capture();
    let typed: &[u8] = b"typed-Guest-Passw0rd-5521";
    let shown: &[u8] = b"console-Shows-Secret-7734";
    // A raw console (a serial line) that waits for the visitor's password, then answers.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let console = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut s, _) = l.accept().await.unwrap();
        let mut got = vec![0u8; typed.len()];
        s.read_exact(&mut got).await.unwrap();
        s.write_all(shown).await.unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
        got
    });
    let gw = TestGateway::start().await;
    let link = gw.raw_link("serial", &addr.to_string(), json!({})).await;
    let mut c = WsBytes::new(gw.open_console(&link, None).await);
    c.send(typed).await;
    assert_eq!(c.read_exact(shown.len()).await, shown);
    c.ws.close(None).await.unwrap();
    assert_eq!(
        console.await.unwrap(),
        typed,
        "the console got the keystrokes"
    );

    let text = String::from_utf8_lossy(&cap.0.lock().unwrap()).into_owned();
    assert!(text.contains("session started"), "logging works at all");
    assert!(text.contains("TRACE"), "trace level is on");
    for (what, secret) in [("typed", typed), ("console output", shown)] {
        for r in renderings(secret) {
            let lines: Vec<&str> = text.lines().filter(|l| l.contains(&r)).collect();
            assert!(
                lines.is_empty(),
                "{what} bytes appear in the logs as {r:?}: {lines:#?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_logs() {
    let cap = capture();

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_console_traffic_never_reaches_the_logs() {
    let cap = capture();
    let typed: &[u8] = b"serial-Typed-Passw0rd-8812";
    // The fake backend's serial port echoes: the typed bytes come back as output, through
    // the VM's serial hub, to two viewers.
    let run = tempfile::Builder::new()
        .prefix("vmgw-f")
        .tempdir_in("/tmp")
        .unwrap();
    let backend = Arc::new(vmm_backend::fake::FakeBackend::new(run.path()));
    let gw = TestGateway::start_on(backend).await;
    gw.start_firmware_vm("sl").await;
    let link = gw
        .create_link(json!({"vm": "sl", "console": "serial", "ttl_seconds": 600}))
        .await;
    let mut a = WsBytes::new(gw.open_console(&link, None).await);
    let mut b = WsBytes::new(gw.open_console(&link, None).await);
    a.send(typed).await;
    assert_eq!(a.read_exact(typed.len()).await, typed);
    assert_eq!(b.read_exact(typed.len()).await, typed);
    // A third viewer gets them again from the scrollback.
    let mut c = WsBytes::new(gw.open_console(&link, None).await);
    assert_eq!(c.read_exact(typed.len()).await, typed);
    for v in [&mut a, &mut b, &mut c] {
        v.ws.close(None).await.unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let text = String::from_utf8_lossy(&cap.0.lock().unwrap()).into_owned();
    assert!(
        text.contains("serial console connected"),
        "hub logging works"
    );
    for r in renderings(typed) {
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(&r)).collect();
        assert!(
            lines.is_empty(),
            "serial bytes in the logs as {r:?}: {lines:#?}"
        );
    }
}
