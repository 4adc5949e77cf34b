//! Test harness for the gateway: a real gateway in-process (real TLS on loopback, real
//! SQLite, real QEMU through vmm-backend), a small HTTPS client, and a WebSocket client.
#![allow(dead_code, clippy::unwrap_used)]

pub mod spice;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gateway::config::{Config, RawConfig};
use gateway::engine::App;
use gateway::launch::Gateway;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::WebSocketStream;
use vmm_backend::PowerAction;

pub struct TestGateway {
    pub dir: tempfile::TempDir,
    pub app: Arc<App>,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub admin_token: String,
    pub tls: TlsConnector,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<()>>,
}

pub fn test_config(dir: &Path, toml_extra: &str) -> Config {
    let text = format!(
        "data_dir = {:?}\n[public]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{toml_extra}",
        dir.to_str().unwrap()
    );
    let raw: RawConfig = toml::from_str(&text).unwrap();
    raw.validate(dir).unwrap()
}

impl TestGateway {
    pub async fn start() -> TestGateway {
        Self::start_with("").await
    }

    /// A gateway with extra TOML appended to the test configuration.
    pub async fn start_with(toml_extra: &str) -> TestGateway {
        let dir = tempfile::Builder::new()
            .prefix("vmgw-g")
            .tempdir_in("/tmp")
            .unwrap();
        Self::start_in(dir, toml_extra).await
    }

    /// A gateway whose validated configuration is adjusted by `tune`.
    pub async fn start_tuned(tune: impl FnOnce(&mut Config)) -> TestGateway {
        let dir = tempfile::Builder::new()
            .prefix("vmgw-g")
            .tempdir_in("/tmp")
            .unwrap();
        let mut cfg = test_config(dir.path(), "");
        tune(&mut cfg);
        Self::start_cfg(dir, cfg).await
    }

    /// A gateway on an existing data directory (restart tests).
    pub async fn start_in(dir: tempfile::TempDir, toml_extra: &str) -> TestGateway {
        let cfg = test_config(dir.path(), toml_extra);
        Self::start_cfg(dir, cfg).await
    }

    /// A gateway on `backend` (e.g. vmm-backend's fake) instead of QEMU.
    pub async fn start_on(backend: Arc<dyn vmm_backend::VmBackend>) -> TestGateway {
        let dir = tempfile::Builder::new()
            .prefix("vmgw-g")
            .tempdir_in("/tmp")
            .unwrap();
        let cfg = test_config(dir.path(), "");
        Self::start_cfg_on(dir, cfg, Some(backend)).await
    }

    async fn start_cfg(dir: tempfile::TempDir, cfg: Config) -> TestGateway {
        Self::start_cfg_on(dir, cfg, None).await
    }

    async fn start_cfg_on(
        dir: tempfile::TempDir,
        cfg: Config,
        backend: Option<Arc<dyn vmm_backend::VmBackend>>,
    ) -> TestGateway {
        let gw = Gateway::bind(cfg, backend).await.unwrap();
        let app = gw.app.clone();
        let (public, admin) = (gw.public_addr, gw.admin_addr);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(gw.serve(async move {
            let _ = rx.await;
        }));
        let (_, admin_token) = app
            .store()
            .create_admin_token(&format!("test-{}", rand_suffix()))
            .await
            .unwrap();
        let cert_path = match &app.config().public_tls {
            Some(f) => f.cert.clone(),
            None => dir.path().join("tls/self-signed.crt"),
        };
        let tls = tls_trusting(&std::fs::read(cert_path).unwrap());
        TestGateway {
            dir,
            app,
            public,
            admin,
            admin_token,
            tls,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the gateway (graceful shutdown) and returns its data directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
        }
        let dir = tempfile::Builder::new()
            .prefix("x")
            .tempdir_in("/tmp")
            .unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    pub fn origin(&self) -> String {
        format!("https://127.0.0.1:{}", self.public.port())
    }

    pub async fn tls_stream(&self) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.public).await.unwrap();
        self.tls
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    }

    /// An admin API call: (status, JSON body).
    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let tcp = TcpStream::connect(self.admin).await.unwrap();
        let auth = format!("Authorization: Bearer {}\r\n", self.admin_token);
        let (status, _, body) =
            http_call(tcp, method, path, &auth, body.map(|b| b.to_string())).await;
        (
            status,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    /// A visitor call on the public listener: (status, headers, JSON body).
    pub async fn public(
        &self,
        method: &str,
        path: &str,
        headers: &str,
        body: Option<String>,
    ) -> (u16, String, serde_json::Value) {
        let s = self.tls_stream().await;
        let (status, head, body) = http_call(s, method, path, headers, body).await;
        (
            status,
            head,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Creates a link through the admin API; returns its JSON (with `token`, `url`, `id`).
    pub async fn create_link(&self, body: serde_json::Value) -> serde_json::Value {
        let (status, v) = self.admin("POST", "/api/v1/links", Some(body)).await;
        assert_eq!(status, 201, "{v}");
        v
    }

    /// Registers a raw console target `name` at `address` and creates a link to it
    /// (console `raw`, 10 minutes, plus the fields of `extra`); returns the link's JSON.
    pub async fn raw_link(
        &self,
        name: &str,
        address: &str,
        extra: serde_json::Value,
    ) -> serde_json::Value {
        let target = serde_json::json!({"name": name, "kind": "raw", "address": address});
        let (s, v) = self.admin("POST", "/api/v1/targets", Some(target)).await;
        assert_eq!(s, 201, "{v}");
        let mut link = serde_json::json!({"vm": name, "console": "raw", "ttl_seconds": 600});
        if let (Some(l), Some(e)) = (link.as_object_mut(), extra.as_object()) {
            l.extend(e.clone());
        }
        self.create_link(link).await
    }

    /// Exchanges a token (and password): (status, Set-Cookie "name=value", body).
    pub async fn exchange(
        &self,
        token: &str,
        password: Option<&str>,
    ) -> (u16, Option<String>, serde_json::Value) {
        let body = match password {
            Some(p) => serde_json::json!({"token": token, "password": p}),
            None => serde_json::json!({"token": token}),
        };
        let (status, head, v) = self
            .public(
                "POST",
                "/s/session",
                "Content-Type: application/json\r\n",
                Some(body.to_string()),
            )
            .await;
        let cookie = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
            .map(|l| {
                l.split_once(':')
                    .unwrap()
                    .1
                    .trim()
                    .split(';')
                    .next()
                    .unwrap()
                    .to_owned()
            });
        (status, cookie, v)
    }

    /// Opens the console WebSocket with a cookie and an Origin.
    pub async fn ws(
        &self,
        ws_path: &str,
        cookie: Option<&str>,
        origin: Option<&str>,
    ) -> Result<
        WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>,
        tokio_tungstenite::tungstenite::Error,
    > {
        let url = format!("wss://localhost:{}{}", self.public.port(), ws_path);
        let mut req = url.into_client_request().unwrap();
        let h = req.headers_mut();
        h.insert("Sec-WebSocket-Protocol", HeaderValue::from_static("binary"));
        if let Some(c) = cookie {
            h.insert("Cookie", HeaderValue::from_str(c).unwrap());
        }
        if let Some(o) = origin {
            h.insert("Origin", HeaderValue::from_str(o).unwrap());
        }
        let stream = self.tls_stream().await;
        tokio_tungstenite::client_async(req, stream)
            .await
            .map(|(ws, _)| ws)
    }

    /// The console WebSocket of an exchanged link (with the cookie and our Origin), as
    /// bytes.
    pub async fn ws_bytes(&self, ws_path: &str, cookie: Option<&str>) -> WsBytes {
        WsBytes::new(
            self.ws(ws_path, cookie, Some(&self.origin()))
                .await
                .unwrap(),
        )
    }

    /// Link + exchange + WebSocket in one go.
    pub async fn open_console(
        &self,
        link: &serde_json::Value,
        password: Option<&str>,
    ) -> WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>> {
        let (status, cookie, v) = self
            .exchange(link["token"].as_str().unwrap(), password)
            .await;
        assert_eq!(status, 200, "{v}");
        self.ws(
            v["ws_path"].as_str().unwrap(),
            cookie.as_deref(),
            Some(&self.origin()),
        )
        .await
        .unwrap()
    }

    /// Defines and starts a firmware-only VM (fast, no OS) with both consoles.
    pub async fn start_firmware_vm(&self, name: &str) {
        self.app
            .backend()
            .define(test_support::firmware_vm(name))
            .await
            .unwrap();
        self.app
            .backend()
            .power(name, PowerAction::Start)
            .await
            .unwrap();
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        // Leave no QEMU behind.
        test_support::kill_qemus(&self.dir.path().join("run"));
    }
}

fn rand_suffix() -> u64 {
    rand::random()
}

/// One HTTP/1.1 request on a fresh connection (Connection: close): (status, head, body).
pub async fn http_call<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    method: &str,
    path: &str,
    extra_headers: &str,
    body: Option<String>,
) -> (u16, String, Vec<u8>) {
    let body = body.unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra_headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    raw_response(s).await
}

/// Reads a whole response until the server closes.
pub async fn raw_response<S: AsyncRead + Unpin>(mut s: S) -> (u16, String, Vec<u8>) {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf)).await;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or(buf.len());
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head, buf[split..].to_vec())
}

pub type ClientWs = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// Byte-level reading of a console WebSocket, for protocol checks.
pub struct WsBytes {
    pub ws: ClientWs,
    buf: Vec<u8>,
    pub closed: Option<(u16, String)>,
}

impl WsBytes {
    pub fn new(ws: ClientWs) -> WsBytes {
        WsBytes {
            ws,
            buf: Vec::new(),
            closed: None,
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        use futures::SinkExt;
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::Binary(
                bytes.to_vec().into(),
            ))
            .await
            .unwrap();
    }

    /// Reads exactly `n` bytes (panics on timeout or close).
    pub async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.buf.len() < n {
            let msg = tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut self.ws))
                .await
                .unwrap_or_else(|_| {
                    panic!("timed out waiting for {n} bytes (have {})", self.buf.len())
                });
            match msg {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(b))) => {
                    self.buf.extend_from_slice(&b)
                }
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f))) => {
                    panic!("closed while reading: {f:?}")
                }
                Some(Ok(_)) => {}
                other => panic!("stream ended while reading: {other:?}"),
            }
        }
        self.buf.drain(..n).collect()
    }

    /// Waits for the close frame: (code, reason), discarding data.
    pub async fn closed_within(&mut self, t: Duration) -> Option<(u16, String)> {
        let deadline = tokio::time::Instant::now() + t;
        loop {
            let msg =
                match tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut self.ws))
                    .await
                {
                    Err(_) => return None,
                    Ok(m) => m,
                };
            match msg {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f))) => {
                    let r = f
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    self.closed = Some(r.clone());
                    return Some(r);
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Some((1006, String::new())),
            }
        }
    }

    /// The visitor side of the gateway's RFB handshake, then ClientInit/ServerInit:
    /// returns (width, height, desktop name).
    pub async fn rfb_connect(&mut self) -> (u16, u16, String) {
        assert_eq!(self.read_exact(12).await, b"RFB 003.008\n");
        self.send(b"RFB 003.008\n").await;
        let n = self.read_exact(1).await[0] as usize;
        let types = self.read_exact(n).await;
        assert!(types.contains(&1), "security types {types:?}");
        self.send(&[1]).await;
        assert_eq!(self.read_exact(4).await, [0, 0, 0, 0], "SecurityResult ok");
        self.send(&[1]).await; // ClientInit, shared
        let init = self.read_exact(24).await;
        let w = u16::from_be_bytes([init[0], init[1]]);
        let h = u16::from_be_bytes([init[2], init[3]]);
        let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]) as usize;
        let name = String::from_utf8_lossy(&self.read_exact(name_len).await).into_owned();
        (w, h, name)
    }

    /// Sends a full (non-incremental) FramebufferUpdateRequest and reads the update's
    /// header: returns the number of rectangles.
    pub async fn request_frame(&mut self, w: u16, h: u16) -> u16 {
        let mut req = vec![3u8, 0];
        for v in [0u16, 0, w, h] {
            req.extend_from_slice(&v.to_be_bytes());
        }
        self.send(&req).await;
        // QEMU sends nothing else before the update here.
        let t = self.read_exact(1).await[0];
        assert_eq!(
            t, 0,
            "expected a FramebufferUpdate, got server message type {t}"
        );
        let hdr = self.read_exact(3).await;
        u16::from_be_bytes([hdr[1], hdr[2]])
    }
}

/// A TLS client trusting only the certificates in `pem`.
pub fn tls_trusting(pem: &[u8]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(cfg))
}

/// A TCP console on 127.0.0.1 that echoes what it gets; its address.
pub async fn echo_console() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// A free loopback port for a server a test starts itself (a proxy, a CA, a `gateway
/// serve`): bound and released, then bound by that server. It is drawn below Linux's
/// ephemeral range (32768–60999), so a listener on port 0 elsewhere in the test run
/// cannot take it in between.
pub fn free_port() -> u16 {
    loop {
        let port = 20_000 + rand::random::<u16>() % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A `gateway serve` process (the real binary, for tests that `kill -9` it) and the
/// addresses of its listeners.
pub struct ServeProcess {
    pub child: tokio::process::Child,
    /// `127.0.0.1:P` of the public (TLS) listener.
    pub public: String,
    /// `127.0.0.1:Q` of the admin listener.
    pub admin: String,
}

/// Starts `gateway serve --config CONFIG` (log level `warn`) and waits, up to 60 s, for
/// its "public listener https://A  admin listener B" line; the rest of its log is drained.
pub async fn spawn_serve(config: &Path) -> ServeProcess {
    spawn_serve_with(config, |_| {}).await
}

/// [`spawn_serve`], with `adjust` applied to the command before it starts (its
/// environment, say).
pub async fn spawn_serve_with(
    config: &Path,
    adjust: impl FnOnce(&mut tokio::process::Command),
) -> ServeProcess {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_gateway"));
    cmd.args(["serve", "--config"])
        .arg(config)
        .env("VMGW_LOG", "warn")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    adjust(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let l = lines.next_line().await.unwrap().expect("gateway exited");
            if l.starts_with("public listener") {
                return l;
            }
        }
    })
    .await
    .unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    let public = words[2].trim_start_matches("https://").to_owned();
    let admin = words[5].to_owned();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    ServeProcess {
        child,
        public,
        admin,
    }
}
