//! Listeners and connections: accept loops with connection caps, the TLS handshake with a
//! timeout, HTTP/1.1 via hyper with a header timeout, and a graceful shutdown that also
//! ends the relayed WebSocket sessions cleanly.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::app::App;
use crate::metrics::Metrics;
use crate::proxy_protocol;
use crate::sessions::EndReason;

/// Errors setting up listeners and TLS.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("reading {path}")]
    ReadPem {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no certificate in {0}")]
    NoCert(std::path::PathBuf),
    #[error("no private key in {0}")]
    NoKey(std::path::PathBuf),
    #[error("TLS configuration")]
    Tls(#[from] rustls::Error),
    #[error("generating a self-signed certificate")]
    SelfSigned(#[from] rcgen::Error),
}

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Public,
    Admin,
}

/// What handlers know about the connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
    pub side: Side,
}

/// A rustls server configuration: TLS 1.3 and 1.2 only (rustls has no renegotiation and
/// no legacy ciphers), HTTP/1.1 by ALPN.
pub fn tls_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg.max_early_data_size = 0;
    Ok(Arc::new(cfg))
}

/// Loads a PEM certificate chain and private key.
pub fn load_tls(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| ServerError::ReadPem {
            path: p.to_owned(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(ServerError::NoCert(cert.to_owned()));
    }
    let key_pem = read(key)?;
    let key =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| ServerError::NoKey(key.to_owned()))?;
    tls_config(certs, key)
}

/// A self-signed certificate for `names` (the demo), as PEM (cert, key).
pub fn self_signed(names: Vec<String>) -> Result<(String, String), ServerError> {
    let ck = rcgen::generate_simple_self_signed(names)?;
    Ok((ck.cert.pem(), ck.key_pair.serialize_pem()))
}

/// The listeners and their TLS settings.
#[derive(Debug)]
pub struct Listeners {
    pub public: TcpListener,
    pub public_tls: Arc<rustls::ServerConfig>,
    pub admin: TcpListener,
    pub admin_tls: Option<Arc<rustls::ServerConfig>>,
}

/// Serves both listeners until `shutdown` completes, then stops accepting, ends every
/// session with a close frame, and waits (bounded) for connections to finish.
pub async fn run(app: Arc<App>, listeners: Listeners, shutdown: impl Future<Output = ()>) {
    let tracker = TaskTracker::new();
    let public_cap = Arc::new(Semaphore::new(app.cfg.limits.max_connections));
    // The admin listener has its own small budget, so it stays reachable when the
    // public one is full.
    let admin_cap = Arc::new(Semaphore::new(256));
    let public = tokio::spawn(accept_loop(
        app.clone(),
        listeners.public,
        Some(TlsAcceptor::from(listeners.public_tls)),
        Side::Public,
        public_cap,
        tracker.clone(),
    ));
    let admin = tokio::spawn(accept_loop(
        app.clone(),
        listeners.admin,
        listeners.admin_tls.map(TlsAcceptor::from),
        Side::Admin,
        admin_cap,
        tracker.clone(),
    ));
    let background = tokio::spawn(crate::app::background(app.clone()));

    shutdown.await;
    tracing::info!("shutting down");
    app.shutdown.cancel();
    public.abort();
    admin.abort();
    background.abort();
    app.sessions.end_all(EndReason::Shutdown);
    tracker.close();
    if tokio::time::timeout(app.cfg.limits.shutdown_drain, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within the drain time");
    }
}

async fn accept_loop(
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    side: Side,
    cap: Arc<Semaphore>,
    tracker: TaskTracker,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = cap.clone().try_acquire_owned() else {
            Metrics::inc(&app.metrics.connections_refused);
            drop(stream);
            continue;
        };
        let app2 = app.clone();
        let tls = tls.clone();
        let span = tracing::debug_span!("conn", %peer, side = ?side);
        tracker.spawn(
            async move {
                let _permit = permit;
                serve_connection(app2, stream, peer, tls, side).await;
            }
            .instrument(span),
        );
    }
}

async fn serve_connection(
    app: Arc<App>,
    mut stream: TcpStream,
    mut peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    side: Side,
) {
    let from_proxy = |ip| app.cfg.trusted_proxies.iter().any(|c| c.contains(ip));
    if side == Side::Public && app.cfg.proxy_protocol && from_proxy(peer.ip()) {
        match proxy_protocol::read_header(&mut stream, app.cfg.proxy_header_timeout).await {
            Ok(proxy_protocol::Header::Proxied(client)) => {
                tracing::debug!(%client, "PROXY header");
                peer = client;
            }
            Ok(proxy_protocol::Header::Local) => {}
            Err(e) => {
                Metrics::inc(&app.metrics.proxy_header_failures);
                tracing::debug!(error = %e, "bad PROXY header");
                return;
            }
        }
    }
    // A trusted proxy's connections carry many clients: the per-address cap would
    // throttle them all as one, so only the global cap applies to them.
    let _slot = if side == Side::Public && !from_proxy(peer.ip()) {
        match app.limiter.connection(peer.ip()) {
            Some(s) => Some(s),
            None => {
                Metrics::inc(&app.metrics.connections_refused);
                tracing::debug!("per-address connection cap reached");
                return;
            }
        }
    } else {
        None
    };
    if side == Side::Public {
        app.open_public_conns.fetch_add(1, Ordering::Relaxed);
    }
    let _count = scopeguard(&app, side);
    let _ = stream.set_nodelay(true);
    let info = ConnInfo {
        peer,
        tls: tls.is_some(),
        side,
    };
    match tls {
        Some(acceptor) => {
            let hs = tokio::time::timeout(
                app.cfg.limits.tls_handshake_timeout,
                acceptor.accept(stream),
            )
            .await;
            match hs {
                Ok(Ok(s)) => serve_http(app.clone(), TokioIo::new(s), info).await,
                Ok(Err(e)) => {
                    Metrics::inc(&app.metrics.tls_handshake_failures);
                    tracing::debug!(error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    Metrics::inc(&app.metrics.tls_handshake_failures);
                    tracing::debug!("TLS handshake timed out");
                }
            }
        }
        None => serve_http(app.clone(), TokioIo::new(stream), info).await,
    }
}

/// Decrements the public connection gauge when the connection ends.
struct ConnCount<'a> {
    app: &'a App,
    side: Side,
}

impl Drop for ConnCount<'_> {
    fn drop(&mut self) {
        if self.side == Side::Public {
            self.app.open_public_conns.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn scopeguard(app: &App, side: Side) -> ConnCount<'_> {
    ConnCount { app, side }
}

async fn serve_http<I>(app: Arc<App>, io: TokioIo<I>, info: ConnInfo)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let app_svc = app.clone();
    let service = service_fn(move |req| {
        let app = app_svc.clone();
        async move {
            let resp = match info.side {
                Side::Public => crate::http::share::handle(app, req, info).await,
                Side::Admin => crate::http::admin::handle(app, req, info).await,
            };
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(app.cfg.limits.header_read_timeout)
        .max_buf_size(app.cfg.limits.max_header_bytes.max(8192))
        .max_headers(100)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = app.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(app.cfg.limits.shutdown_drain, conn).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../certs-example")
            .join(name)
    }

    /// The example certificates load, and a client trusting the example CA completes
    /// TLS 1.2 and TLS 1.3 handshakes (HTTP/1.1 by ALPN); older versions are not offered.
    #[tokio::test]
    async fn example_certificate_serves_tls_12_and_13() {
        let server =
            load_tls(&example("server.crt"), &example("server.key")).expect("example cert");
        let ca = std::fs::read(example("ca.crt")).expect("ca");
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&ca) {
            roots.add(c.expect("pem")).expect("root");
        }
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut client = rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[version])
                .expect("versions")
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            client.alpn_protocols = vec![b"http/1.1".to_vec()];
            let (a, b) = tokio::io::duplex(64 * 1024);
            let acceptor = TlsAcceptor::from(server.clone());
            let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
            let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
            let (s, c) = tokio::join!(acceptor.accept(a), connector.connect(name, b));
            let (s, c) = (s.expect("server side"), c.expect("client side"));
            assert_eq!(c.get_ref().1.protocol_version(), Some(version.version));
            assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        }
        assert!(load_tls(&example("ca.crt"), &example("nope.key")).is_err());
    }

    #[test]
    fn the_example_configuration_validates() {
        let raw = crate::config::RawConfig::load(&example("gateway.toml")).expect("toml");
        let cfg = raw.validate(&example("")).expect("valid");
        assert!(cfg.public_tls.is_some());
    }
}
