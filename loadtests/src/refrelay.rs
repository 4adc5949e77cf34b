//! The reference relay: the smallest sensible tokio-tungstenite + tokio-rustls relay,
//! with the gateway's TLS settings (rustls with the ring provider — or aws-lc-rs, to
//! measure the provider: `--reference-provider ring,aws-lc-rs` —, TLS 1.3 and 1.2,
//! ALPN `http/1.1`, no 0-RTT, rustls's default in-memory session cache and no tickets, an
//! ECDSA P-256 self-signed certificate from rcgen) and tungstenite's default WebSocket
//! settings. No exchange, no cookie, no filter, no accounting: what the gateway is
//! measured against ("the gateway's bookkeeping must cost almost nothing").
//! `vmgw-load ref-relay --to ADDR --cert C --key K` prints its port and serves.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

/// Bytes read from the console per WebSocket message (the gateway's default too).
const BUF: usize = 64 * 1024;

/// The rustls crypto provider of a reference relay: ring is the gateway's; aws-lc-rs
/// (rustls's own default) is there to measure what the provider is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Provider {
    Ring,
    AwsLcRs,
}

impl Provider {
    /// The relay's name in the report.
    pub fn relay_name(self) -> &'static str {
        match self {
            Provider::Ring => "reference",
            Provider::AwsLcRs => "reference-aws-lc-rs",
        }
    }

    fn crypto(self) -> rustls::crypto::CryptoProvider {
        match self {
            Provider::Ring => rustls::crypto::ring::default_provider(),
            Provider::AwsLcRs => rustls::crypto::aws_lc_rs::default_provider(),
        }
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Provider::Ring => "ring",
            Provider::AwsLcRs => "aws-lc-rs",
        })
    }
}

fn tls_config(
    cert: &Path,
    key: &Path,
    provider: Provider,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let provider = Arc::new(provider.crypto());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg.max_early_data_size = 0;
    Ok(Arc::new(cfg))
}

pub async fn serve(
    to: SocketAddr,
    cert: &Path,
    key: &Path,
    provider: Provider,
) -> anyhow::Result<()> {
    let acceptor = TlsAcceptor::from(tls_config(cert, key, provider)?);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?.port());
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _ = session(acceptor, tcp, to).await;
        });
    }
}

async fn session(acceptor: TlsAcceptor, tcp: TcpStream, to: SocketAddr) -> anyhow::Result<()> {
    tcp.set_nodelay(true)?;
    let tls = acceptor.accept(tcp).await?;
    // Answer the `binary` subprotocol noVNC (and the load generator) asks for.
    #[allow(clippy::result_large_err)] // the callback type is tungstenite's
    let answer = |req: &Request, mut resp: Response| {
        if req.headers().contains_key("Sec-WebSocket-Protocol") {
            resp.headers_mut()
                .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("binary"));
        }
        Ok(resp)
    };
    let ws = tokio_tungstenite::accept_hdr_async(tls, answer).await?;
    let console = TcpStream::connect(to).await?;
    console.set_nodelay(true)?;
    let (mut con_r, mut con_w) = console.into_split();
    let (mut ws_tx, mut ws_rx) = ws.split();
    let to_console = async {
        while let Some(Ok(m)) = ws_rx.next().await {
            match m {
                Message::Binary(b) => con_w.write_all(&b).await?,
                Message::Close(_) => break,
                _ => {}
            }
        }
        anyhow::Ok(())
    };
    let to_client = async {
        let mut buf = vec![0u8; BUF];
        loop {
            let n = con_r.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            ws_tx
                .send(Message::Binary(buf[..n].to_vec().into()))
                .await?;
        }
        anyhow::Ok(())
    };
    tokio::select! {
        r = to_console => r,
        r = to_client => r,
    }
}
