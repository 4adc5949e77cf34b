//! Certificates are replaced without a restart: when the files change (and on SIGHUP,
//! for the `gateway serve` process), new handshakes get the new certificate while live
//! consoles stay open; a bad new file is refused and the old certificate keeps serving.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{TestGateway, WsBytes};
use rustls_pki_types::ServerName;
use serde_json::json;
use tokio::io::AsyncReadExt;

/// A fresh self-signed certificate for localhost: (cert PEM, key PEM).
fn cert() -> (String, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    (ck.cert.pem(), ck.key_pair.serialize_pem())
}

/// Writes a file the way tools replace certificates: a new file renamed over the old.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Whether a handshake with `addr` succeeds for a client trusting only `cert_pem`.
async fn served(addr: std::net::SocketAddr, cert_pem: &str) -> bool {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    common::tls_trusting(cert_pem.as_bytes())
        .connect(name, tcp)
        .await
        .is_ok()
}

async fn until_served(addr: std::net::SocketAddr, cert_pem: &str, within: Duration) -> Duration {
    let start = Instant::now();
    while !served(addr, cert_pem).await {
        assert!(
            start.elapsed() < within,
            "the new certificate was not served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_certificate_is_served_and_live_consoles_stay() {
    let files = tempfile::tempdir().unwrap();
    let (cp, kp) = (files.path().join("cert.pem"), files.path().join("key.pem"));
    let (a_cert, a_key) = cert();
    replace(&cp, &a_cert);
    replace(&kp, &a_key);
    let files_cfg = gateway::config::TlsFiles {
        cert: cp.clone(),
        key: kp.clone(),
    };
    let gw = TestGateway::start_tuned(move |c| {
        c.public_tls = Some(files_cfg);
        c.limits.tls_reload_poll = Duration::from_secs(1);
    })
    .await;
    // A console over the first certificate.
    let addr = common::echo_console().await;
    let link = gw.raw_link("echo", &addr.to_string(), json!({})).await;
    let mut console = WsBytes::new(gw.open_console(&link, None).await);
    console.send(b"one").await;
    assert_eq!(console.read_exact(3).await, b"one");
    assert!(served(gw.public, &a_cert).await);

    // Renewed: the new certificate is served, the old one no longer.
    let (b_cert, b_key) = cert();
    replace(&kp, &b_key);
    replace(&cp, &b_cert);
    let took = until_served(gw.public, &b_cert, Duration::from_secs(5)).await;
    eprintln!("reloaded after {took:?} (poll 1 s)");
    assert!(!served(gw.public, &a_cert).await);
    console.send(b"two").await;
    assert_eq!(
        console.read_exact(3).await,
        b"two",
        "the live console was cut"
    );

    // Bad files are refused; the last good certificate keeps serving.
    replace(&cp, "not a certificate");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(served(gw.public, &b_cert).await);
    let (c_cert, _c_key) = cert();
    replace(&cp, &c_cert); // a certificate without its key
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(served(gw.public, &b_cert).await);
    assert!(!served(gw.public, &c_cert).await);
    console.send(b"3").await;
    assert_eq!(console.read_exact(1).await, b"3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_of_gateway_serve() {
    let dir = tempfile::tempdir().unwrap();
    let (cp, kp) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (a_cert, a_key) = cert();
    replace(&cp, &a_cert);
    replace(&kp, &a_key);
    let port = common::free_port();
    let config = dir.path().join("gateway.toml");
    // Files are polled only hourly here: the reload below is the signal's.
    std::fs::write(
        &config,
        format!(
            "data_dir = \"data\"\n[public]\nlisten = \"127.0.0.1:{port}\"\ncert = \"cert.pem\"\nkey = \"key.pem\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[limits]\ntls_reload_poll_secs = 3600\n"
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("VMGW_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let start = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "gateway serve did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served(addr, &a_cert).await);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());

    // A bad file first: refused with a log line naming it, the old certificate stays.
    replace(&cp, "garbage");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(served(addr, &a_cert).await);

    let (b_cert, b_key) = cert();
    replace(&kp, &b_key);
    replace(&cp, &b_cert);
    let sent = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    until_served(addr, &b_cert, Duration::from_secs(5)).await;
    eprintln!("SIGHUP to new certificate: {:?}", sent.elapsed());
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP must not stop the gateway"
    );

    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(15), child.wait()).await;
    let mut log = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut log).await;
    }
    assert!(
        log.contains("new TLS certificate refused") && log.contains("cert.pem"),
        "{log}"
    );
    assert!(log.contains("TLS certificate reloaded"), "{log}");
}
