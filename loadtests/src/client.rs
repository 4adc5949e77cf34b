//! The visitor side: TLS to a relay, the gateway's token exchange (HTTP/1.1 by hand),
//! and the console WebSocket.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

pub type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// Every network step of a session is bounded by this.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS client trusting only the certificates in `pem` (the relay's self-signed one).
/// Session resumption is off: every connection pays a full handshake, as a new visitor's
/// first one does (see [`Relay::visitor`] for a visitor's later ones).
pub fn tls_connector(pem: &Path) -> anyhow::Result<TlsConnector> {
    let bytes = std::fs::read(pem).with_context(|| format!("reading {}", pem.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&bytes) {
        roots.add(c?)?;
    }
    if roots.is_empty() {
        bail!("no certificate in {}", pem.display());
    }
    // Cipher suites in a browser's order (Chrome and Firefox offer AES-128-GCM first;
    // rustls's default puts AES-256-GCM first).
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|s| match s.suite() {
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384 => 1,
        rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => 2,
        _ => 3,
    });
    let provider = Arc::new(provider);
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// What a gateway exchange gives: the cookie and the WebSocket path.
#[derive(Debug, Clone)]
pub struct Grant {
    pub cookie: String,
    pub ws_path: String,
}

#[derive(Debug, Clone)]
pub enum RelayKind {
    /// The gateway: sessions start with `POST /s/session` and need the cookie.
    Gateway { link_token: String },
    /// websockify, websocat, the reference relay: any path, no exchange.
    Plain,
}

/// A relay under test, as the client sees it.
#[derive(Clone)]
pub struct Relay {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub origin: String,
    pub tls: TlsConnector,
    pub kind: RelayKind,
    /// The relay's process (for websockify, the parent of its per-session children).
    pub pid: u32,
    /// Connect from this local address (a loopback address stands for a client).
    pub src: Option<std::net::IpAddr>,
}

impl Relay {
    pub async fn tls_stream(&self) -> anyhow::Result<TlsStream<TcpStream>> {
        let tcp = match self.src {
            None => TcpStream::connect(self.addr).await.context("connect")?,
            Some(ip) => {
                let sock = tokio::net::TcpSocket::new_v4()?;
                sock.bind(SocketAddr::new(ip, 0)).context("bind")?;
                sock.connect(self.addr).await.context("connect")?
            }
        };
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("localhost")?;
        self.tls.connect(name, tcp).await.context("TLS handshake")
    }

    /// `POST /s/session` on its own TLS connection, as the share page does.
    pub async fn exchange(&self) -> anyhow::Result<Grant> {
        let RelayKind::Gateway { link_token } = &self.kind else {
            bail!("{} has no exchange", self.name);
        };
        self.exchange_with(link_token, None).await
    }

    /// An exchange for `link_token` with an optional password.
    pub async fn exchange_with(
        &self,
        link_token: &str,
        password: Option<&str>,
    ) -> anyhow::Result<Grant> {
        let fut = async {
            let s = self.tls_stream().await?;
            let body = match password {
                None => serde_json::json!({ "token": link_token }),
                Some(p) => serde_json::json!({ "token": link_token, "password": p }),
            }
            .to_string();
            let (status, head, body) = http_call(
                s,
                "POST",
                "/s/session",
                "Content-Type: application/json\r\n",
                &body,
            )
            .await?;
            if status != 200 {
                bail!(
                    "exchange: HTTP {status}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            let cookie = head
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
                .and_then(|l| l.split_once(':'))
                .and_then(|(_, v)| v.trim().split(';').next())
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("exchange: no Set-Cookie"))?;
            let v: serde_json::Value = serde_json::from_slice(&body)?;
            let ws_path = v["ws_path"]
                .as_str()
                .ok_or_else(|| anyhow!("exchange: no ws_path in {v}"))?
                .to_owned();
            Ok(Grant { cookie, ws_path })
        };
        tokio::time::timeout(STEP_TIMEOUT, fut)
            .await
            .map_err(|_| anyhow!("exchange timed out"))?
    }

    /// Opens the console WebSocket (subprotocol `binary`, Origin, cookie if any).
    pub async fn ws(&self, grant: Option<&Grant>, cfg: WebSocketConfig) -> anyhow::Result<Wss> {
        let path = grant.map_or("/", |g| g.ws_path.as_str());
        let url = format!("wss://localhost:{}{}", self.addr.port(), path);
        let mut req = url.into_client_request()?;
        let h = req.headers_mut();
        h.insert("Sec-WebSocket-Protocol", HeaderValue::from_static("binary"));
        h.insert("Origin", HeaderValue::from_str(&self.origin)?);
        if let Some(g) = grant {
            h.insert("Cookie", HeaderValue::from_str(&g.cookie)?);
        }
        let fut = async {
            let s = self.tls_stream().await?;
            let (ws, _) = tokio_tungstenite::client_async_with_config(req, s, Some(cfg))
                .await
                .context("WebSocket upgrade")?;
            Ok(ws)
        };
        tokio::time::timeout(STEP_TIMEOUT, fut)
            .await
            .map_err(|_| anyhow!("WebSocket open timed out"))?
    }

    /// This relay as one new browser sees it: a TLS client with a session cache of its
    /// own, so that its second connection resumes the first one's TLS session (as a
    /// browser does between the exchange and the WebSocket) if the relay offers it.
    pub fn visitor(&self) -> Relay {
        let mut cfg = rustls::ClientConfig::clone(self.tls.config());
        cfg.resumption = rustls::client::Resumption::in_memory_sessions(4);
        Relay {
            tls: TlsConnector::from(Arc::new(cfg)),
            ..self.clone()
        }
    }

    /// A TLS handshake and nothing else: closes with close_notify once the handshake is
    /// done and reads to the end, so that the session ticket the relay sends after the
    /// handshake reaches this client's cache (the first half of [`Relay::two_connections`]).
    pub async fn handshake_only(&self) -> anyhow::Result<()> {
        let fut = async {
            let mut s = self.tls_stream().await?;
            s.shutdown().await.context("close_notify")?;
            // A relay that drops the connection without close_notify ends the read with
            // an error: the ticket, sent first, has been taken in by then.
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink).await;
            anyhow::Ok(())
        };
        tokio::time::timeout(STEP_TIMEOUT, fut)
            .await
            .map_err(|_| anyhow!("TLS handshake timed out"))?
    }

    /// What a visitor's full path costs a relay at the least, asked of a plain relay: a
    /// TLS handshake on one connection, then the WebSocket on a second that resumes the
    /// first's TLS session (as the gateway's exchange and WebSocket do, without the
    /// exchange). Fails if the second connection was not resumed.
    pub async fn two_connections(&self, cfg: WebSocketConfig) -> anyhow::Result<Wss> {
        let v = self.visitor();
        v.handshake_only().await?;
        let ws = v.ws(None, cfg).await?;
        let kind = ws.get_ref().get_ref().1.handshake_kind();
        if kind != Some(rustls::HandshakeKind::Resumed) {
            bail!("the second connection was not resumed ({kind:?})");
        }
        Ok(ws)
    }

    /// A whole new visitor session: exchange (gateway only) and WebSocket, the second
    /// connection resuming the first's TLS session as a browser's does.
    pub async fn open(&self, cfg: WebSocketConfig) -> anyhow::Result<Wss> {
        match self.kind {
            RelayKind::Gateway { .. } => {
                let v = self.visitor();
                let g = v.exchange().await?;
                v.ws(Some(&g), cfg).await
            }
            RelayKind::Plain => self.ws(None, cfg).await,
        }
    }
}

/// One HTTP/1.1 request with `Connection: close`: (status, head, body).
pub async fn http_call<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    method: &str,
    path: &str,
    extra_headers: &str,
    body: &str,
) -> anyhow::Result<(u16, String, Vec<u8>)> {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra_headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    // A TLS peer may close without close_notify after a complete answer: keep what came.
    let read = tokio::time::timeout(STEP_TIMEOUT, s.read_to_end(&mut buf)).await;
    if read.is_err() {
        bail!("{method} {path}: no complete answer within {STEP_TIMEOUT:?}");
    }
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .ok_or_else(|| anyhow!("{method} {path}: no HTTP head in answer"))?;
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("{method} {path}: bad status line"))?;
    Ok((status, head, buf[split..].to_vec()))
}
