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
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::engine::App;
use crate::http::{ConnInfo, Hold, Side, Site};
use crate::limits::ConnSlot;
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

pub fn tls_config(
    certs: Vec<rustls_pki_types::CertificateDer<'static>>,
    key: rustls_pki_types::PrivateKeyDer<'static>,
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
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(ServerError::NoCert(cert.to_owned()));
    }
    let key_pem = read(key)?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| ServerError::NoKey(key.to_owned()))?;
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

/// Serves both listeners until `shutdown` completes, then drains: live sessions get
/// their close frames within `limits.shutdown_drain_secs`.
pub async fn run(site: Arc<Site>, listeners: Listeners, shutdown: impl Future<Output = ()>) {
    let app = site.app.clone();
    let limits = &app.config().limits;
    let tracker = TaskTracker::new();
    let public_cap = Arc::new(Semaphore::new(limits.max_connections));
    let admin_cap = Arc::new(Semaphore::new(limits.max_admin_connections));
    let public = tokio::spawn(accept_loop(
        site.clone(),
        listeners.public,
        Some(TlsAcceptor::from(listeners.public_tls)),
        Side::Public,
        public_cap,
        tracker.clone(),
    ));
    let admin = tokio::spawn(accept_loop(
        site.clone(),
        listeners.admin,
        listeners.admin_tls.map(TlsAcceptor::from),
        Side::Admin,
        admin_cap,
        tracker.clone(),
    ));
    let background = tokio::spawn(crate::engine::background(app.clone()));

    shutdown.await;
    tracing::info!("shutting down");
    app.shutdown_token().cancel();
    public.abort();
    admin.abort();
    background.abort();
    app.sessions().end_all(EndReason::Shutdown);
    tracker.close();
    if tokio::time::timeout(limits.shutdown_drain, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within the drain time");
    }
}

async fn accept_loop(
    site: Arc<Site>,
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
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = cap.clone().try_acquire_owned() else {
            Metrics::inc(&site.app.metrics().connections_refused);
            drop(stream);
            continue;
        };
        let site = site.clone();
        let tls = tls.clone();
        let span = tracing::debug_span!("conn", %peer, side = ?side);
        tracker.spawn(
            async move {
                serve_connection(site, stream, peer, tls, side, permit).await;
            }
            .instrument(span),
        );
    }
}

/// What one connection holds while it lives, and while a console relayed over it after
/// the WebSocket upgrade lives: its place under the listener's cap, its slot under the
/// per-address cap, and its count in `/metrics`.
struct ConnHold {
    _permit: OwnedSemaphorePermit,
    _slot: Option<ConnSlot>,
    counted: Option<Arc<App>>,
}

impl Drop for ConnHold {
    fn drop(&mut self) {
        if let Some(app) = &self.counted {
            app.open_public_conns().fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Reads a PROXY header when the peer is a trusted proxy that must send one; the
/// client's address, or `None` when the connection is to be closed.
async fn proxied_peer(app: &App, stream: &mut TcpStream, peer: SocketAddr) -> Option<SocketAddr> {
    let cfg = app.config();
    if !cfg.proxy_protocol || !cfg.trusted_proxies.iter().any(|c| c.contains(peer.ip())) {
        return Some(peer);
    }
    match proxy_protocol::read_header(stream, cfg.proxy_header_timeout).await {
        Ok(proxy_protocol::Header::Proxied(client)) => {
            tracing::debug!(%client, "PROXY header");
            Some(client)
        }
        Ok(proxy_protocol::Header::Local) => Some(peer),
        Err(e) => {
            Metrics::inc(&app.metrics().proxy_header_failures);
            tracing::debug!(error = %e, "bad PROXY header");
            None
        }
    }
}

async fn serve_connection(
    site: Arc<Site>,
    mut stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    side: Side,
    permit: OwnedSemaphorePermit,
) {
    let app = &site.app;
    let peer = match side {
        Side::Public => match proxied_peer(app, &mut stream, peer).await {
            Some(p) => p,
            None => return,
        },
        Side::Admin => peer,
    };
    let from_proxy = app
        .config()
        .trusted_proxies
        .iter()
        .any(|c| c.contains(peer.ip()));
    let slot = if side == Side::Public && !from_proxy {
        match app.limiter().connection(peer.ip()) {
            Some(s) => Some(s),
            None => {
                Metrics::inc(&app.metrics().connections_refused);
                tracing::debug!("per-address connection cap reached");
                return;
            }
        }
    } else {
        None
    };
    let counted = (side == Side::Public).then(|| {
        app.open_public_conns().fetch_add(1, Ordering::Relaxed);
        app.clone()
    });
    let hold: Hold = Arc::new(ConnHold {
        _permit: permit,
        _slot: slot,
        counted,
    });
    let _ = stream.set_nodelay(true);
    let info = ConnInfo {
        peer,
        tls: tls.is_some(),
        side,
        hold,
    };
    let Some(acceptor) = tls else {
        return serve_http(site.clone(), TokioIo::new(stream), info).await;
    };
    let hs = tokio::time::timeout(
        app.config().limits.tls_handshake_timeout,
        acceptor.accept(stream),
    )
    .await;
    match hs {
        Ok(Ok(s)) => serve_http(site.clone(), TokioIo::new(s), info).await,
        Ok(Err(e)) => {
            Metrics::inc(&app.metrics().tls_handshake_failures);
            tracing::debug!(error = %e, "TLS handshake failed");
        }
        Err(_) => {
            Metrics::inc(&app.metrics().tls_handshake_failures);
            tracing::debug!("TLS handshake timed out");
        }
    }
}

async fn serve_http<I>(site: Arc<Site>, io: TokioIo<I>, info: ConnInfo)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let limits = site.app.config().limits.clone();
    let svc_site = site.clone();
    let service = service_fn(move |req| {
        let site = svc_site.clone();
        let info = info.clone();
        let request_timeout = limits.request_timeout;
        async move {
            let side = info.side;
            let tls = info.tls;
            let handler = async move {
                match side {
                    Side::Public => crate::http::share::handle(site, req, info).await,
                    Side::Admin => crate::http::admin::handle(site, req, info).await,
                }
            };
            // A request (its body included) must be done within `request_timeout`.
            let resp = match tokio::time::timeout(request_timeout, handler).await {
                Ok(r) => r,
                Err(_) => crate::http::request_timed_out(tls),
            };
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let limits = &site.app.config().limits;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
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
        _ = site.app.shutdown_token().cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(limits.shutdown_drain, conn).await;
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
        for c in rustls_pemfile::certs(&mut ca.as_slice()) {
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
