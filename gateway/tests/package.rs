//! The Debian package: built from the binary cargo just made, installed with `dpkg -i`,
//! its unit verified by systemd, the installed binary run with the installed
//! configuration, a share link opened through it, then purged: nothing of it stays but
//! the data directory.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use rustls_pki_types::ServerName;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

const DATA: &str = "/var/lib/vm-gateway";
const CONFIG: &str = "/etc/vm-gateway/gateway.toml";
const PUBLIC: &str = "127.0.0.1:8443";
const ADMIN: &str = "127.0.0.1:8444";

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "vm-gateway"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

async fn tls_to(addr: &str, cert_pem: &[u8]) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    common::tls_trusting(cert_pem)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

async fn admin(
    token: &str,
    method: &str,
    path: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let tcp = TcpStream::connect(ADMIN).await.unwrap();
    let auth = format!("Authorization: Bearer {token}\r\n");
    let (s, _, b) = common::http_call(tcp, method, path, &auth, Some(body.to_string())).await;
    assert!(
        s < 300,
        "{method} {path}: {s} {}",
        String::from_utf8_lossy(&b)
    );
    serde_json::from_slice(&b).unwrap()
}

/// Opens a share link through the installed gateway and relays bytes to an echo
/// console.
async fn open_a_link(token: &str) {
    let addr = common::echo_console().await;
    let target = json!({"name": "pkg-echo", "kind": "raw", "address": addr.to_string()});
    admin(token, "POST", "/api/v1/targets", target).await;
    let link = json!({"vm": "pkg-echo", "console": "raw", "ttl_seconds": 600});
    let link = admin(token, "POST", "/api/v1/links", link).await;
    let cert = std::fs::read(format!("{DATA}/tls/self-signed.crt")).unwrap();
    let body = json!({"token": link["token"]}).to_string();
    let s = tls_to(PUBLIC, &cert).await;
    let (status, head, b) = common::http_call(s, "POST", "/s/session", "", Some(body)).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&b));
    let cookie = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or(l.strip_prefix("Set-Cookie: "))
        })
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_owned();
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    let url = format!("wss://localhost:8443{}", v["ws_path"].as_str().unwrap());
    let mut req = url.into_client_request().unwrap();
    let h = req.headers_mut();
    h.insert("Cookie", HeaderValue::from_str(&cookie).unwrap());
    h.insert("Origin", HeaderValue::from_static("https://localhost:8443"));
    let (mut ws, _) = tokio_tungstenite::client_async(req, tls_to(PUBLIC, &cert).await)
        .await
        .unwrap();
    ws.send(Message::Binary(b"hello".to_vec().into()))
        .await
        .unwrap();
    loop {
        match ws.next().await.unwrap().unwrap() {
            Message::Binary(b) => {
                assert_eq!(&b[..], b"hello");
                break;
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("{other:?}"),
        }
    }
}

/// Leaves the machine as the test found it, also when an assertion fails.
struct Uninstall;

impl Drop for Uninstall {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["--purge", "vm-gateway"])
            .output();
        let _ = std::fs::remove_dir_all(DATA);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_package_installs_serves_and_purges_cleanly() {
    assert!(
        !installed() && !Path::new(DATA).exists(),
        "vm-gateway is installed here (or {DATA} exists): this test would replace it"
    );
    let _cleanup = Uninstall;
    let root = test_support::workspace_root();
    let out = tempfile::tempdir().unwrap();
    let deb = run(Command::new("bash")
        .arg(root.join("gateway/packaging/build-deb.sh"))
        .args(["--binary", env!("CARGO_BIN_EXE_gateway"), "--out"])
        .arg(out.path()));
    let deb = deb.trim();
    run(Command::new("dpkg").args(["-i", deb]));
    assert!(installed());
    let unit = "/lib/systemd/system/vm-gateway.service";
    run(Command::new("systemd-analyze").args(["verify", unit]));
    let security = run(Command::new("systemd-analyze").args(["security", "--offline=yes", unit]));
    let score = security
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_default()
        .to_owned();
    eprintln!("{score}");

    // The installed binary, with the installed configuration and data directory.
    let mut gw = tokio::process::Command::new("/usr/bin/gateway")
        .args(["serve", "--config", CONFIG])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let start = Instant::now();
    while TcpStream::connect(PUBLIC).await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the installed gateway did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let created = run(Command::new("/usr/bin/gateway").args([
        "--config",
        CONFIG,
        "admin-token",
        "create",
        "pkg-test",
        "--json",
    ]));
    let token: serde_json::Value = serde_json::from_str(&created).unwrap();
    open_a_link(token["token"].as_str().unwrap()).await;
    gw.kill().await.unwrap();

    run(Command::new("dpkg").args(["--purge", "vm-gateway"]));
    assert!(!installed());
    for gone in [
        "/usr/bin/gateway",
        unit,
        CONFIG,
        "/etc/vm-gateway",
        "/usr/share/doc/vm-gateway",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} was left behind");
    }
    assert!(
        Path::new(DATA).join("gateway.sqlite3").exists(),
        "the data directory must stay"
    );
}
