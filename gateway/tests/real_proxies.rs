//! Behind real reverse proxies: Debian's nginx (terminating TLS, naming the client in
//! `X-Forwarded-For` or `Forwarded`, passing WebSocket upgrades) and HAProxy (TCP mode,
//! PROXY protocol v2) in front of an in-process gateway. Each test starts its own proxy
//! on a free loopback port with a generated configuration in a temporary directory and
//! kills it at the end. Visitors connect from their own loopback addresses (127.0.0.7,
//! 127.0.0.8, …), so the tests can tell the visitor's address from the proxy's
//! (127.0.0.1). A missing nginx or haproxy fails the test: `scripts/setup.sh` installs
//! both.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{http_call, TestGateway, WsBytes};
use gateway::config::{Cidr, ClientHeader, Config};
use rustls_pki_types::ServerName;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const VISITOR: [u8; 4] = [127, 0, 0, 7];
const OTHER: [u8; 4] = [127, 0, 0, 8];
const FORGER: [u8; 4] = [127, 0, 0, 9];

// ---------------------------------------------------------------------------------
// Proxy processes

/// A proxy process with its directory; killed (and reaped) when dropped.
struct Proxy {
    child: std::process::Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the proxy accepts connections; panics with its log if it exits.
    async fn wait_ready(&mut self, name: &str) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "{name} exited ({status}) before listening:\n{}",
                    self.log_text()
                );
            }
            if TcpStream::connect(self.addr()).await.is_ok() {
                // Listening, and still alive a moment later (not someone else's port).
                tokio::time::sleep(Duration::from_millis(100)).await;
                if self.child.try_wait().unwrap().is_none() {
                    return;
                }
                continue;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{name} did not listen within 10 s:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The path of a proxy binary (Debian installs both in /usr/sbin); fails the test with
/// what to do when it is missing — these tests never skip.
fn tool(name: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs = path
        .split(':')
        .map(PathBuf::from)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    for d in dirs {
        let p = d.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "{name} is not installed: these tests run Debian's nginx and haproxy in front of \
         the gateway; run scripts/setup.sh (it installs packages nginx and haproxy)"
    );
}

/// nginx's certificate: a self-signed one for `localhost`, and a client trusting it.
fn nginx_tls(dir: &Path) -> TlsConnector {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.join("nginx.crt"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("nginx.key"), ck.key_pair.serialize_pem()).unwrap();
    common::tls_trusting(ck.cert.pem().as_bytes())
}

/// nginx terminating TLS on `port` and proxying to the gateway's public listener over
/// TLS (not verified: the gateway's certificate is self-signed), with the usual
/// reverse-proxy headers and WebSocket upgrades.
async fn start_nginx(port: u16, gateway: SocketAddr) -> (Proxy, TlsConnector) {
    let bin = tool("nginx");
    let dir = tempfile::Builder::new()
        .prefix("vmgw-nginx")
        .tempdir_in("/tmp")
        .unwrap();
    let tls = nginx_tls(dir.path());
    let d = dir.path().display();
    // master_process off: one process, so killing it leaves no worker behind
    let conf = format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {d}/nginx.crt;
        ssl_certificate_key {d}/nginx.key;
        location / {{
            proxy_pass https://{gateway};
            proxy_ssl_verify off;
            proxy_ssl_server_name on;
            proxy_ssl_name localhost;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header Forwarded "for=$remote_addr;proto=https";
            proxy_set_header X-Forwarded-Proto https;
            proxy_read_timeout 300s;
        }}
    }}
}}
"#
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let log = dir.path().join("error.log");
    let child = std::process::Command::new(bin)
        .arg("-e")
        .arg(&log)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf_path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let mut p = Proxy {
        child,
        port,
        log,
        _dir: dir,
    };
    p.wait_ready("nginx").await;
    (p, tls)
}

/// HAProxy in TCP mode on `port`, prefixing each connection to the gateway with a PROXY
/// protocol v2 header; TLS stays end to end between the visitor and the gateway.
async fn start_haproxy(port: u16, gateway: SocketAddr) -> Proxy {
    let bin = tool("haproxy");
    let dir = tempfile::Builder::new()
        .prefix("vmgw-haproxy")
        .tempdir_in("/tmp")
        .unwrap();
    let conf = format!(
        r#"global
    maxconn 256
defaults
    mode tcp
    timeout connect 5s
    timeout client 300s
    timeout server 300s
frontend visitors
    bind 127.0.0.1:{port}
    default_backend gateway
backend gateway
    server gw {gateway} send-proxy-v2
"#
    );
    let conf_path = dir.path().join("haproxy.cfg");
    std::fs::write(&conf_path, conf).unwrap();
    let log = dir.path().join("haproxy.log");
    let child = std::process::Command::new(bin)
        .arg("-db")
        .arg("-f")
        .arg(&conf_path)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let mut p = Proxy {
        child,
        port,
        log,
        _dir: dir,
    };
    p.wait_ready("haproxy").await;
    p
}

// ---------------------------------------------------------------------------------
// Visitors

/// A TCP connection from the loopback address `src`.
async fn tcp_from(src: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::from((Ipv4Addr::from(src), 0)))?;
    sock.connect(to).await
}

/// A TLS connection from `src` to `to` (nginx, HAProxy or the gateway itself).
async fn tls_from(
    tls: &TlsConnector,
    src: [u8; 4],
    to: SocketAddr,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = tcp_from(src, to).await?;
    tls.connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// An exchange on `s`: (status, cookie "name=value", body).
async fn exchange_on<S: AsyncRead + AsyncWrite + Unpin>(
    s: S,
    token: &str,
    password: Option<&str>,
    extra_headers: &str,
) -> (u16, Option<String>, serde_json::Value) {
    let body = match password {
        Some(p) => json!({"token": token, "password": p}),
        None => json!({"token": token}),
    };
    let headers = format!("Content-Type: application/json\r\n{extra_headers}");
    let (status, head, body) =
        http_call(s, "POST", "/s/session", &headers, Some(body.to_string())).await;
    let cookie = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .and_then(|l| l.split_once(':'))
        .and_then(|(_, v)| v.trim().split(';').next())
        .map(str::to_owned);
    (
        status,
        cookie,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// The console WebSocket on an established stream.
async fn ws_on(
    s: TlsStream<TcpStream>,
    path: &str,
    cookie: Option<&str>,
    origin: &str,
) -> Result<common::ClientWs, tokio_tungstenite::tungstenite::Error> {
    let mut req = format!("wss://localhost{path}")
        .into_client_request()
        .unwrap();
    let h = req.headers_mut();
    h.insert("Sec-WebSocket-Protocol", HeaderValue::from_static("binary"));
    h.insert("Origin", HeaderValue::from_str(origin).unwrap());
    if let Some(c) = cookie {
        h.insert("Cookie", HeaderValue::from_str(c).unwrap());
    }
    tokio_tungstenite::client_async(req, s)
        .await
        .map(|(ws, _)| ws)
}

/// The audit log's (kind, client) pairs.
async fn audit(gw: &TestGateway) -> Vec<(String, String)> {
    let (s, v) = gw.admin("GET", "/api/v1/audit", None).await;
    assert_eq!(s, 200);
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or_default().to_owned(),
                e["client"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn assert_audited(events: &[(String, String)], kind: &str, client: &str) {
    assert!(
        events.iter().any(|(k, c)| k == kind && c == client),
        "{kind} from {client} missing in {events:?}"
    );
}

async fn metrics_text(gw: &TestGateway) -> String {
    let tcp = TcpStream::connect(gw.admin).await.unwrap();
    let auth = format!("Authorization: Bearer {}\r\n", gw.admin_token);
    let (_, _, body) = http_call(tcp, "GET", "/metrics", &auth, None).await;
    String::from_utf8(body).unwrap()
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing in {text}"))
}

/// A gateway trusting the proxy at 127.0.0.1 (only), tuned further by `tune`.
async fn gateway_behind(tune: impl FnOnce(&mut Config)) -> TestGateway {
    TestGateway::start_tuned(|cfg| {
        cfg.trusted_proxies = vec![Cidr::parse("127.0.0.1/32").unwrap()];
        tune(cfg);
    })
    .await
}

// ---------------------------------------------------------------------------------
// nginx

/// Through nginx: the exchange and the console work, and the visitor's address (not
/// nginx's) is what the audit log, the per-address rate limit and the lockout see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_passes_the_visitor_and_its_address() {
    let port = common::free_port();
    let origin = format!("https://127.0.0.1:{port}");
    let gw = gateway_behind(|cfg| {
        cfg.client_header = ClientHeader::XForwardedFor;
        cfg.allowed_origins.push(origin.clone());
        cfg.limits.exchanges_per_ip_per_minute = 4;
        cfg.limits.password_failures_before_lockout = 3;
    })
    .await;
    let (nginx, tls) = start_nginx(port, gw.public).await;
    let target = common::echo_console().await;
    let open = gw.raw_link("echo", &target.to_string(), json!({})).await;
    let locked = gw
        .raw_link("locked", &target.to_string(), json!({"password": "pw"}))
        .await;

    // exchange (1st from the visitor) and console through nginx
    let s = tls_from(&tls, VISITOR, nginx.addr()).await.unwrap();
    let (status, cookie, v) = exchange_on(s, open["token"].as_str().unwrap(), None, "").await;
    assert_eq!(status, 200, "{v}\n{}", nginx.log_text());
    let s = tls_from(&tls, VISITOR, nginx.addr()).await.unwrap();
    let ws = ws_on(
        s,
        v["ws_path"].as_str().unwrap(),
        cookie.as_deref(),
        &origin,
    )
    .await
    .unwrap_or_else(|e| panic!("WebSocket through nginx: {e}\n{}", nginx.log_text()));
    let mut ws = WsBytes::new(ws);
    ws.send(b"through nginx").await;
    assert_eq!(ws.read_exact(13).await, b"through nginx");

    // three wrong passwords (2nd to 4th exchange): the third locks the link
    let token = locked["token"].as_str().unwrap();
    for expect in [401, 401, 401] {
        let s = tls_from(&tls, VISITOR, nginx.addr()).await.unwrap();
        assert_eq!(exchange_on(s, token, Some("wrong"), "").await.0, expect);
    }
    // the 5th exchange from the visitor is over its rate (4 a minute)...
    let s = tls_from(&tls, VISITOR, nginx.addr()).await.unwrap();
    let (status, _, v) = exchange_on(s, token, Some("pw"), "").await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["reason"], "rate_limited", "{v}");
    // ...while another visitor through the same nginx is not, and finds the link locked
    let s = tls_from(&tls, OTHER, nginx.addr()).await.unwrap();
    let (status, _, v) = exchange_on(s, token, Some("pw"), "").await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["reason"], "locked_out", "{v}");

    let events = audit(&gw).await;
    assert_audited(&events, "link_redeemed", "127.0.0.7");
    assert_audited(&events, "password_failure", "127.0.0.7");
    assert_audited(&events, "locked_out", "127.0.0.7");
    // (the admin's link_created entries name the admin's own 127.0.0.1)
    assert!(
        !events
            .iter()
            .any(|(k, c)| k != "link_created" && c == "127.0.0.1"),
        "nginx's address reached the audit log: {events:?}"
    );
    // the console still works, and a revoke reaches it through nginx as its close code
    ws.send(b"!").await;
    assert_eq!(ws.read_exact(1).await, b"!");
    let id = open["id"].as_str().unwrap();
    let (s, v) = gw
        .admin("DELETE", &format!("/api/v1/links/{id}"), None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        ws.closed_within(Duration::from_secs(3)).await,
        Some((4001, "revoked".to_owned()))
    );
}

/// A forged `X-Forwarded-For` gains nothing: sent directly to the gateway, the sender's
/// own address is used; sent through nginx, nginx appends the real peer and the gateway
/// takes the right-most address that is not a trusted proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_forwarded_for_gains_nothing_with_or_without_nginx() {
    let port = common::free_port();
    let gw = gateway_behind(|cfg| {
        cfg.client_header = ClientHeader::XForwardedFor;
        cfg.limits.exchanges_per_ip_per_minute = 2;
    })
    .await;
    let (nginx, tls) = start_nginx(port, gw.public).await;
    let link = gw
        .raw_link("t", "127.0.0.1:9", json!({"password": "pw"}))
        .await;
    let token = link["token"].as_str().unwrap();

    // directly, with a different forged address each time: the rate limit still counts
    // the sender (127.0.0.9), and the audit names it
    for (i, expect) in [401, 401, 429].into_iter().enumerate() {
        let s = tls_from(&gw.tls, FORGER, gw.public).await.unwrap();
        let forged = format!("X-Forwarded-For: 203.0.113.{i}\r\nForwarded: for=203.0.113.{i}\r\n");
        let (status, _, v) = exchange_on(s, token, Some("wrong"), &forged).await;
        assert_eq!(status, expect, "direct #{i}: {v}");
    }
    // through nginx, with forged entries (even one naming the trusted proxy itself):
    // the visitor's own address is the right-most untrusted one
    for (i, expect) in [401, 401, 429].into_iter().enumerate() {
        let s = tls_from(&tls, VISITOR, nginx.addr()).await.unwrap();
        let forged = format!("X-Forwarded-For: 198.51.100.{i}, 127.0.0.1\r\n");
        let (status, _, v) = exchange_on(s, token, Some("wrong"), &forged).await;
        assert_eq!(
            status,
            expect,
            "through nginx #{i}: {v}\n{}",
            nginx.log_text()
        );
    }
    let events = audit(&gw).await;
    assert_audited(&events, "password_failure", "127.0.0.9");
    assert_audited(&events, "password_failure", "127.0.0.7");
    let forged: Vec<_> = events
        .iter()
        .filter(|(_, c)| c.starts_with("203.0.113.") || c.starts_with("198.51.100."))
        .collect();
    assert!(
        forged.is_empty(),
        "a forged address was believed: {events:?}"
    );
}

/// nginx naming the client in RFC 7239 `Forwarded` (`client_header = "forwarded"`): the
/// gateway reads that header only, so a forged `X-Forwarded-For` is ignored, and nginx
/// replaces a forged `Forwarded` with its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_with_forwarded_names_the_visitor() {
    let port = common::free_port();
    let gw = gateway_behind(|cfg| cfg.client_header = ClientHeader::Forwarded).await;
    let (nginx, tls) = start_nginx(port, gw.public).await;
    let link = gw
        .raw_link("t", "127.0.0.1:9", json!({"password": "pw"}))
        .await;
    let s = tls_from(&tls, VISITOR, nginx.addr()).await.unwrap();
    let forged = "X-Forwarded-For: 203.0.113.50\r\nForwarded: for=203.0.113.51\r\n";
    let (status, _, v) = exchange_on(s, link["token"].as_str().unwrap(), Some("pw"), forged).await;
    assert_eq!(status, 200, "{v}\n{}", nginx.log_text());
    let events = audit(&gw).await;
    assert_audited(&events, "link_redeemed", "127.0.0.7");
    assert!(
        !events.iter().any(|(_, c)| c.starts_with("203.0.113.")),
        "{events:?}"
    );
}

/// Behind nginx every connection comes from nginx, so the per-address connection cap
/// cannot count connections; it counts consoles by the visitor nginx names: a visitor
/// at its cap (2) is refused a third console (429), another visitor is not, and a
/// closed console gives its slot back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_console_cap_counts_the_named_visitor() {
    let port = common::free_port();
    let origin = format!("https://127.0.0.1:{port}");
    let gw = gateway_behind(|cfg| {
        cfg.client_header = ClientHeader::XForwardedFor;
        cfg.allowed_origins.push(origin.clone());
        cfg.limits.max_connections_per_ip = 2;
    })
    .await;
    let (nginx, tls) = start_nginx(port, gw.public).await;
    let target = common::echo_console().await;
    let link = gw.raw_link("echo", &target.to_string(), json!({})).await;
    let s = tls_from(&tls, VISITOR, nginx.addr()).await.unwrap();
    let (status, cookie, v) = exchange_on(s, link["token"].as_str().unwrap(), None, "").await;
    assert_eq!(status, 200, "{v}");
    let path = v["ws_path"].as_str().unwrap().to_owned();
    let console = |src: [u8; 4]| {
        let (tls, path, cookie, origin) = (&tls, &path, &cookie, &origin);
        let to = nginx.addr();
        async move {
            let s = tls_from(tls, src, to).await.unwrap();
            ws_on(s, path, cookie.as_deref(), origin).await
        }
    };
    let mut a = WsBytes::new(console(VISITOR).await.unwrap());
    let _b = console(VISITOR).await.unwrap();
    a.send(b"a").await;
    assert_eq!(a.read_exact(1).await, b"a");
    let before = metric(&metrics_text(&gw).await, "vmgw_connections_refused_total");
    match console(VISITOR).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 429),
        other => panic!("a third console from 127.0.0.7 was not refused: {other:?}"),
    }
    let after = metric(&metrics_text(&gw).await, "vmgw_connections_refused_total");
    assert_eq!(after, before + 1);
    // another visitor behind the same nginx is not affected
    let mut c = WsBytes::new(console(OTHER).await.unwrap());
    c.send(b"c").await;
    assert_eq!(c.read_exact(1).await, b"c");
    // a closed console gives the visitor's slot back
    drop(a);
    let start = Instant::now();
    loop {
        match console(VISITOR).await {
            Ok(_) => break,
            Err(e) => assert!(
                start.elapsed() < Duration::from_secs(5),
                "the slot was not given back: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------
// HAProxy

/// Through HAProxy with PROXY protocol v2: consoles, the audit log and the per-address
/// connection cap see the visitor's address; a direct client's forged PROXY header is
/// not read (it is not a trusted proxy), so it gains nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_proxy_protocol_names_the_visitor() {
    let port = common::free_port();
    let gw = gateway_behind(|cfg| {
        cfg.proxy_protocol = true;
        cfg.client_header = ClientHeader::None;
        cfg.limits.max_connections_per_ip = 2;
    })
    .await;
    let haproxy = start_haproxy(port, gw.public).await;
    let target = common::echo_console().await;
    let link = gw
        .raw_link("echo", &target.to_string(), json!({"password": "pw"}))
        .await;
    let token = link["token"].as_str().unwrap();
    let origin = gw.origin();

    // a wrong password, then the right one, from the visitor through HAProxy
    let s = tls_from(&gw.tls, VISITOR, haproxy.addr()).await.unwrap();
    assert_eq!(exchange_on(s, token, Some("wrong"), "").await.0, 401);
    let s = tls_from(&gw.tls, VISITOR, haproxy.addr()).await.unwrap();
    let (status, cookie, v) = exchange_on(s, token, Some("pw"), "").await;
    assert_eq!(status, 200, "{v}\n{}", haproxy.log_text());
    let path = v["ws_path"].as_str().unwrap().to_owned();
    // the exchange's connection is closed; give its slot back before counting
    tokio::time::sleep(Duration::from_millis(300)).await;

    // two consoles from the visitor fill its cap of 2
    let mut consoles = Vec::new();
    for i in 0..2u8 {
        let s = tls_from(&gw.tls, VISITOR, haproxy.addr()).await.unwrap();
        let ws = ws_on(s, &path, cookie.as_deref(), &origin).await.unwrap();
        let mut ws = WsBytes::new(ws);
        ws.send(&[b'a' + i]).await;
        assert_eq!(ws.read_exact(1).await, [b'a' + i]);
        consoles.push(ws);
    }
    let refused_before = metric(&metrics_text(&gw).await, "vmgw_connections_refused_total");
    // a third connection from the visitor through HAProxy is refused...
    let third = tls_from(&gw.tls, VISITOR, haproxy.addr()).await;
    assert!(
        third.is_err(),
        "a third connection from 127.0.0.7 was served"
    );
    // ...while another visitor through the same HAProxy gets in
    let s = tls_from(&gw.tls, OTHER, haproxy.addr()).await.unwrap();
    let (status, _, _) = http_call(s, "GET", "/s/", "", None).await;
    assert_eq!(status, 200, "the share page through HAProxy");
    let refused_after = metric(&metrics_text(&gw).await, "vmgw_connections_refused_total");
    assert!(
        refused_after > refused_before,
        "vmgw_connections_refused_total {refused_before} -> {refused_after}"
    );
    for (i, ws) in consoles.iter_mut().enumerate() {
        ws.send(b"z").await;
        assert_eq!(ws.read_exact(1).await, b"z", "console {i}");
    }

    // directly, a forged PROXY header naming someone else: the forger is not a trusted
    // proxy, so the header is a broken TLS handshake and nothing is served
    let mut tcp = tcp_from(FORGER, gw.public).await.unwrap();
    tcp.write_all(b"PROXY TCP4 203.0.113.77 127.0.0.1 5555 443\r\n")
        .await
        .unwrap();
    let r = gw
        .tls
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await;
    assert!(r.is_err(), "a forged PROXY header was served");
    // the forger speaking plain TLS is served as itself
    let s = tls_from(&gw.tls, FORGER, gw.public).await.unwrap();
    assert_eq!(exchange_on(s, token, Some("wrong"), "").await.0, 401);

    let events = audit(&gw).await;
    assert_audited(&events, "password_failure", "127.0.0.7");
    assert_audited(&events, "link_redeemed", "127.0.0.7");
    assert_audited(&events, "password_failure", "127.0.0.9");
    assert!(
        !events
            .iter()
            .any(|(k, c)| (k != "link_created" && c == "127.0.0.1") || c == "203.0.113.77"),
        "{events:?}"
    );
}

/// The per-address exchange rate limit behind HAProxy counts each visitor separately,
/// and an `X-Forwarded-For` passed through the TCP proxy untouched is not believed (the
/// PROXY header named an untrusted client, whose headers are not read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_rate_limits_per_visitor() {
    let port = common::free_port();
    let gw = gateway_behind(|cfg| {
        cfg.proxy_protocol = true;
        cfg.limits.exchanges_per_ip_per_minute = 2;
    })
    .await;
    let haproxy = start_haproxy(port, gw.public).await;
    let link = gw
        .raw_link("t", "127.0.0.1:9", json!({"password": "pw"}))
        .await;
    let token = link["token"].as_str().unwrap();
    for (i, expect) in [401, 401, 429].into_iter().enumerate() {
        let s = tls_from(&gw.tls, VISITOR, haproxy.addr()).await.unwrap();
        let forged = format!("X-Forwarded-For: 203.0.113.{i}\r\n");
        assert_eq!(
            exchange_on(s, token, Some("wrong"), &forged).await.0,
            expect
        );
    }
    let s = tls_from(&gw.tls, OTHER, haproxy.addr()).await.unwrap();
    assert_eq!(exchange_on(s, token, Some("wrong"), "").await.0, 401);
    let events = audit(&gw).await;
    assert_audited(&events, "password_failure", "127.0.0.7");
    assert_audited(&events, "password_failure", "127.0.0.8");
    assert!(
        !events.iter().any(|(_, c)| c.starts_with("203.0.113.")),
        "{events:?}"
    );
}
