//! Listeners and connections: accept loops with connection caps, the TLS handshake with a
//! timeout, HTTP/1.1 via hyper with a header timeout, and a graceful shutdown that also
//! ends the relayed WebSocket sessions cleanly. `tls` holds the certificates (reloaded
//! while serving), `proxy_protocol` the PROXY header reader.

pub mod proxy_protocol;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
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

use crate::engine::limits::ConnSlot;
use crate::engine::sessions::EndReason;
use crate::engine::App;
use crate::http::{ConnInfo, Hold, Side, Site};
use crate::metrics::Metrics;
use tls::ListenerTls;

#[derive(Debug)]
pub struct Listeners {
    pub public: TcpListener,
    pub public_tls: ListenerTls,
    pub admin: TcpListener,
    pub admin_tls: Option<ListenerTls>,
    /// The task that keeps the public certificate from ACME current, if configured.
    pub acme: Option<crate::acme::Acme>,
}

/// The runtime connections are set up on: accept loops, PROXY headers, TLS handshakes
/// and HTTP (every request, the WebSocket upgrade included), on threads at nice
/// `limits.setup_nice`. Consoles are relayed on the runtime `run` was called on (the
/// engine's relay runtime, at the process's priority): the upgrade hands the connection
/// over (`http::upgraded`). On one saturated core a flood of handshakes or requests then
/// takes only what the relays leave, instead of queueing ahead of them in one runtime.
struct SetupRuntime(Option<tokio::runtime::Runtime>);

impl SetupRuntime {
    /// As many workers as the runtime that relays (tokio's default: the CPUs this
    /// process may run on).
    fn start(nice: u8) -> std::io::Result<SetupRuntime> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .thread_name("vmgw-setup")
            .on_thread_start(move || crate::engine::priority::lower_current_thread(nice))
            .enable_all()
            .build()?;
        Ok(SetupRuntime(Some(rt)))
    }

    fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.0.as_ref().map(|rt| rt.handle())
    }
}

impl Drop for SetupRuntime {
    /// Runs from async code: the runtime's threads are told to stop, not waited for.
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Moves a listener to `rt`'s reactor (see [`SetupRuntime`]).
fn rehome_listener(l: TcpListener, rt: &tokio::runtime::Handle) -> std::io::Result<TcpListener> {
    let std = l.into_std()?;
    let _in = rt.enter();
    TcpListener::from_std(std)
}

/// Serves both listeners until `shutdown` completes, then drains: live sessions get
/// their close frames within `limits.shutdown_drain_secs`.
pub async fn run(site: Arc<Site>, listeners: Listeners, shutdown: impl Future<Output = ()>) {
    let app = site.app.clone();
    let limits = &app.config().limits;
    let setup = SetupRuntime::start(limits.setup_nice).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "no setup runtime: connections are set up where consoles are relayed");
        SetupRuntime(None)
    });
    let here = tokio::runtime::Handle::current();
    let on = setup.handle().unwrap_or(&here).clone();
    let (public_listener, admin_listener) = match (
        rehome_listener(listeners.public, &on),
        rehome_listener(listeners.admin, &on),
    ) {
        (Ok(p), Ok(a)) => (p, a),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "moving the listeners to the setup runtime failed");
            return;
        }
    };
    let tracker = TaskTracker::new();
    let public_cap = Arc::new(Semaphore::new(limits.max_connections));
    let admin_cap = Arc::new(Semaphore::new(limits.max_admin_connections));
    let mut watched = vec![("public", listeners.public_tls.clone())];
    watched.extend(listeners.admin_tls.clone().map(|t| ("admin", t)));
    let certs = tokio::spawn(tls::watch_certificates(watched, limits.tls_reload_poll));
    let acme = listeners.acme.map(|a| tokio::spawn(a.run()));
    let public = on.spawn(accept_loop(
        site.clone(),
        public_listener,
        Some(TlsAcceptor::from(listeners.public_tls.config)),
        Side::Public,
        public_cap,
        tracker.clone(),
    ));
    let admin = on.spawn(accept_loop(
        site.clone(),
        admin_listener,
        listeners.admin_tls.map(|t| TlsAcceptor::from(t.config)),
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
    certs.abort();
    if let Some(a) = acme {
        a.abort();
    }
    app.sessions().end_all(EndReason::Shutdown);
    tracker.close();
    // The relayed sessions left the connection tracker at their upgrade: their close
    // frames and `session_ended` audit records are waited for in the app's own.
    app.tasks().close();
    let drained = async { tokio::join!(tracker.wait(), app.tasks().wait()) };
    if tokio::time::timeout(limits.shutdown_drain, drained)
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within the drain time");
    }
    drop(setup);
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
        // One new connection per turn of the scheduler: a burst of connections waiting
        // in the backlog (a flood of TLS handshakes, each a few hundred µs of CPU) is
        // admitted between the live sessions' turns instead of all at once ahead of
        // them, so consoles keep their round-trip time while new visitors queue.
        tokio::task::yield_now().await;
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
    use std::path::Path;

    fn example(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../certs-example")
            .join(name)
    }

    /// The example certificates load, and a client trusting the example CA completes
    /// TLS 1.2 and TLS 1.3 handshakes (HTTP/1.1 by ALPN); older versions are not offered.
    #[tokio::test]
    async fn example_certificate_serves_tls_12_and_13() {
        let server = ListenerTls::from_files(&example("server.crt"), &example("server.key"), false)
            .expect("example cert")
            .config;
        let ca = std::fs::read(example("ca.crt")).expect("ca");
        let mut roots = rustls::RootCertStore::empty();
        use rustls_pki_types::pem::PemObject;
        for c in rustls_pki_types::CertificateDer::pem_slice_iter(&ca) {
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
        assert!(ListenerTls::from_files(&example("ca.crt"), &example("nope.key"), false).is_err());
        // A key that is not the certificate's is refused.
        assert!(
            ListenerTls::from_files(&example("ca.crt"), &example("server.key"), false).is_err()
        );
    }

    #[test]
    fn the_example_configuration_validates() {
        let raw = crate::config::RawConfig::load(&example("gateway.toml")).expect("toml");
        let cfg = raw.validate(&example("")).expect("valid");
        assert!(cfg.public_tls.is_some());
    }
}
