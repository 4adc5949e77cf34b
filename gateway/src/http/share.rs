//! The visitor's side on the public listener: the token exchange and the console
//! WebSocket. Visitors get fixed, short answers; details go to the debug log.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use super::{ApiError, Body, ConnInfo, Route, Site};
use crate::engine::sessions::{EndReason, SessionGuard};
use crate::engine::{cookie_name, App, ConsoleAddress, ResolvedConsole, VisitorPower};
use crate::metrics::Metrics;
use crate::model::links::{ConsoleType, Link};
use crate::relay::{self, ConsoleIo, RelayOptions};
use crate::store::AuditKind;

/// The visitor's operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Exchange,
    Console,
    Status,
    Power,
}

/// The public listener's routes.
pub const ROUTES: &[Route<Op>] = &[
    Route::new("POST", "/s/session", Op::Exchange),
    Route::new("GET", "/s/ws/{link_id}", Op::Console),
    Route::new("GET", "/s/status/{link_id}", Op::Status),
    Route::new("POST", "/s/power/{link_id}", Op::Power),
];

/// The exchange body is tiny; anything bigger is refused before parsing or hashing.
pub const MAX_EXCHANGE_BODY: usize = 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExchangeRequest {
    token: String,
    #[serde(default)]
    password: Option<crate::model::secret::Secret>,
}

/// The visitor's address (see [`super::forwarded_client`]).
pub fn client_ip(app: &App, peer: IpAddr, headers: &http::HeaderMap) -> IpAddr {
    let cfg = app.config();
    let name = match cfg.client_header {
        crate::config::ClientHeader::XForwardedFor => "x-forwarded-for",
        crate::config::ClientHeader::Forwarded => "forwarded",
        crate::config::ClientHeader::None => return peer,
    };
    let values = headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
    super::forwarded_client(peer, cfg.client_header, values, &cfg.trusted_proxies)
}

pub async fn handle(site: Arc<Site>, req: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
    let tls = conn.tls;
    super::finish(dispatch(&site, req, conn).await, tls)
}

async fn dispatch(
    site: &Site,
    req: Request<Incoming>,
    conn: ConnInfo,
) -> Result<Response<Body>, ApiError> {
    super::check_framing(req.headers())?;
    let path = req.uri().path().to_owned();
    // The share page and its files live under /s/ too.
    let (op, params) = match super::route_or_page(ROUTES, req.method(), &path, &site.assets, |p| {
        match p.strip_prefix("/s/") {
            Some("") => Some("share.html"),
            other => other,
        }
    })? {
        super::Dispatch::Route(op, params) => (op, params),
        super::Dispatch::Page(r) => return Ok(r),
    };
    let app = &site.app;
    let client = client_ip(app, conn.peer.ip(), req.headers());
    let link_id = params.first().copied().unwrap_or("");
    match op {
        Op::Exchange => exchange(app, req, client).await,
        Op::Console => {
            let hold = forwarded_console_hold(app, &conn, client)?;
            websocket(app, req, link_id, client, hold).await
        }
        Op::Status => status(app, &req, link_id).await,
        Op::Power => power(app, req, link_id, client).await,
    }
}

/// What a console holds while it lives. A connection from a trusted proxy took no
/// per-address slot (its peer is the proxy, shared by every visitor); a console over it
/// takes one for the visitor the proxy named (`X-Forwarded-For` / `Forwarded`), so the
/// per-address cap counts visitors behind an HTTP reverse proxy too. Past the cap: 429.
fn forwarded_console_hold(
    app: &App,
    conn: &ConnInfo,
    client: IpAddr,
) -> Result<super::Hold, ApiError> {
    let trusted = |ip: IpAddr| app.config().trusted_proxies.iter().any(|c| c.contains(ip));
    if !trusted(conn.peer.ip()) || trusted(client) {
        return Ok(conn.hold.clone());
    }
    let Some(slot) = app.limiter().connection(client) else {
        Metrics::inc(&app.metrics().connections_refused);
        tracing::debug!("per-address connection cap reached (forwarded client)");
        return Err(ApiError::TooManyRequests {
            retry_after: Duration::from_secs(5),
            reason: "too_many_connections",
        });
    };
    Ok(Arc::new((conn.hold.clone(), slot)))
}

/// Cross-site requests: an `Origin` that is not one of ours is refused (403 `origin`)
/// before anything else; with `required`, so is a request without one. Browsers send
/// `Origin` on every WebSocket and every POST, so requests that act with the visitor's
/// cookie (console, power) require it; the exchange, which carries its own token, only
/// refuses a foreign one.
fn check_origin(app: &App, h: &http::HeaderMap, required: bool) -> Result<(), ApiError> {
    let origin = h
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_ascii_lowercase);
    match origin {
        Some(o) if app.origin_allowed(&o) => Ok(()),
        None if !required => Ok(()),
        _ => Err(ApiError::Forbidden("origin")),
    }
}

/// The cookie-bound link of a visitor request.
async fn visitor_link(app: &App, h: &http::HeaderMap, link_id: &str) -> Result<Link, ApiError> {
    let cookie = super::cookie(h, &cookie_name(link_id)).map(str::to_owned);
    Ok(app.check_grant(link_id, cookie.as_deref()).await?)
}

/// What the console page needs to know: whether the VM runs, until when the link lasts.
async fn status(
    app: &Arc<App>,
    req: &Request<Incoming>,
    link_id: &str,
) -> Result<Response<Body>, ApiError> {
    let link = visitor_link(app, req.headers(), link_id).await?;
    let body = serde_json::json!({
        "vm_state": app.vm_state(&link.vm).await,
        "expires_at": link.expires_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "allow_power": link.allow_power,
        "view_only": link.view_only,
        "clipboard": link.clipboard.effective(link.view_only),
        "console": link.console,
        "viewers": app.sessions().count_viewers(&link.id),
        "max_viewers": link.max_viewers,
        "keyboard_layout": app.keyboard_layout(&link).await,
        "recorded": app.link_recorded(&link),
    });
    Ok(super::error::json_response(StatusCode::OK, &body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PowerRequest {
    action: String,
}

/// Power actions for visitors of links that allow them.
async fn power(
    app: &Arc<App>,
    req: Request<Incoming>,
    link_id: &str,
    client: IpAddr,
) -> Result<Response<Body>, ApiError> {
    check_origin(app, req.headers(), true)?;
    let link = visitor_link(app, req.headers(), link_id).await?;
    if !link.allow_power {
        return Err(ApiError::Forbidden("power_not_allowed"));
    }
    let body = super::read_body(req, MAX_EXCHANGE_BODY).await?;
    let r: PowerRequest = serde_json::from_slice(&body)
        .map_err(|_| ApiError::BadRequest("expected {\"action\": ...}".into()))?;
    let action = match r.action.as_str() {
        "start" => VisitorPower::Start,
        "shutdown" => VisitorPower::Shutdown,
        "poweroff" => VisitorPower::Poweroff,
        "reset" => VisitorPower::Reset,
        _ => {
            return Err(ApiError::BadRequest(
                "action must be start, shutdown, poweroff or reset".into(),
            ))
        }
    };
    let done = app.visitor_power(&link, action, client).await?;
    let status = if done {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let body = serde_json::json!({"vm_state": app.vm_state(&link.vm).await});
    Ok(super::error::json_response(status, &body))
}

async fn exchange(
    app: &Arc<App>,
    req: Request<Incoming>,
    client: IpAddr,
) -> Result<Response<Body>, ApiError> {
    check_origin(app, req.headers(), false)?;
    let body = super::read_body(req, MAX_EXCHANGE_BODY).await?;
    let r: ExchangeRequest = serde_json::from_slice(&body)
        .map_err(|_| ApiError::BadRequest("expected {\"token\": ..., \"password\": ...}".into()))?;
    let ex = app
        .exchange(
            &r.token,
            r.password
                .as_ref()
                .map(crate::model::secret::Secret::expose),
            client,
        )
        .await?;
    let body = serde_json::json!({
        "link_id": ex.link.id,
        "vm": ex.link.vm,
        "console": ex.link.console,
        "view_only": ex.link.view_only,
        "clipboard": ex.link.clipboard.effective(ex.link.view_only),
        "allow_power": ex.link.allow_power,
        "recorded": app.link_recorded(&ex.link),
        "expires_at": ex.link.expires_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "ws_path": format!("/s/ws/{}", ex.link.id),
        "keyboard_layout": app.keyboard_layout(&ex.link).await,
    });
    let mut resp = super::error::json_response(StatusCode::OK, &body);
    let cookie = format!(
        "{}={}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        ex.cookie_name, ex.cookie_value, ex.max_age
    );
    let v = HeaderValue::from_str(&cookie).map_err(|e| ApiError::Internal(Box::new(e)))?;
    resp.headers_mut().insert(header::SET_COOKIE, v);
    Ok(resp)
}

fn header_has_token(h: &http::HeaderMap, name: header::HeaderName, token: &str) -> bool {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

async fn connect(addr: &ConsoleAddress, timeout: Duration) -> std::io::Result<Box<dyn ConsoleIo>> {
    let fut = async {
        Ok::<Box<dyn ConsoleIo>, std::io::Error>(match addr {
            ConsoleAddress::Unix(p) => Box::new(connect_unix(p).await?),
            ConsoleAddress::Tcp(a) => {
                let s = tokio::net::TcpStream::connect(a.as_str()).await?;
                let _ = s.set_nodelay(true);
                Box::new(s)
            }
        })
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// Connects to the console of a VNC, raw or serial link. A VM's serial port is shared
/// by its viewers: it is joined through the VM's serial hub (`engine::serial`).
async fn open_console(
    app: &Arc<App>,
    link: &Link,
    console: &ResolvedConsole,
) -> Result<Box<dyn ConsoleIo>, Box<dyn std::error::Error + Send + Sync>> {
    if link.console == ConsoleType::Serial {
        // The VM's serial hub (started by its first viewer) runs on the relay runtime.
        let (joiner, link) = (app.clone(), link.clone());
        let joined = app
            .on_relay_runtime(async move { joiner.attach_serial(&link).await })
            .await
            .ok_or("the relay runtime is shutting down")?;
        return Ok(Box::new(joined?));
    }
    let timeout = app.config().limits.console_connect_timeout;
    Ok(connect(&console.address, timeout).await?)
}

/// Connects to a unix-socket console. QEMU listens on its VNC and SPICE sockets with a
/// backlog of one, and a unix socket whose backlog is full refuses at once (`EAGAIN`)
/// instead of queueing: visitors arriving together wait their turn (bounded by the
/// caller's connect timeout) instead of failing.
async fn connect_unix(path: &std::path::Path) -> std::io::Result<tokio::net::UnixStream> {
    loop {
        match tokio::net::UnixStream::connect(path).await {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => return other,
        }
    }
}

/// The answer to a WebSocket request whose session ended while connecting to the console.
fn ended_refusal(r: EndReason) -> ApiError {
    match r {
        EndReason::Revoked => ApiError::Refused(crate::model::links::Refusal::Revoked),
        EndReason::Expired => ApiError::Refused(crate::model::links::Refusal::Expired),
        _ => ApiError::Unavailable {
            retry_after: Duration::from_secs(5),
            reason: r.as_str(),
        },
    }
}

async fn websocket(
    app: &Arc<App>,
    mut req: Request<Incoming>,
    link_id: &str,
    client: IpAddr,
    hold: super::Hold,
) -> Result<Response<Body>, ApiError> {
    let h = req.headers();
    if req.method() != Method::GET
        || !header_has_token(h, header::UPGRADE, "websocket")
        || !header_has_token(h, header::CONNECTION, "upgrade")
        || h.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13")
    {
        return Err(ApiError::BadRequest("expected a WebSocket upgrade".into()));
    }
    let key = h
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| derive_accept_key(k.as_bytes()))
        .ok_or_else(|| ApiError::BadRequest("missing Sec-WebSocket-Key".into()))?;
    // Cross-site WebSocket hijacking: only our own pages may open consoles.
    check_origin(app, h, true)?;
    let wants_binary = header_has_token(h, header::SEC_WEBSOCKET_PROTOCOL, "binary");
    let cookie = super::cookie(h, &cookie_name(link_id)).map(str::to_owned);
    let link = app.check_grant(link_id, cookie.as_deref()).await?;
    let console = app.resolve_console(&link).await?;

    // VNC and raw consoles: one WebSocket is one viewer; take the slot and connect now,
    // so that refusals are plain HTTP answers. SPICE channels are told apart later.
    let early = if link.console == ConsoleType::Spice {
        None
    } else {
        let guard = app.open_session(&link, client, true)?;
        let connecting = open_console(app, &link, &console);
        let io = relay::until_ended(&guard.session, link.expires_at, connecting)
            .await
            .map_err(ended_refusal)?
            .map_err(|e| {
                tracing::debug!(error = %e, "console connect failed");
                ApiError::BadGateway("console_unavailable")
            })?;
        Some((guard, io))
    };

    // This request is answered on the setup runtime; once the upgrade is through, the
    // session moves to the relay runtime in one hand-over (every wake-up of the relay
    // runtime from here preempts this lower-priority thread: one per session, not three).
    let upgrade = hyper::upgrade::on(&mut req);
    let app2 = app.clone();
    app.tasks().spawn(async move {
        let upgraded = match upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let app3 = app2.clone();
        app2.spawn_relay(async move {
            // The console counts as this connection until it closes (connection caps).
            let _hold = hold;
            let (io, read_ahead) = super::upgraded::VisitorIo::from_upgraded(upgraded);
            let early = early.map(|(guard, mut console)| {
                console.rehome();
                (guard, console)
            });
            let ws = WebSocketStream::from_partially_read(
                io,
                read_ahead,
                Role::Server,
                Some(relay::ws_config(&app3.config().limits)),
            )
            .await;
            run_session(app3, ws, link, console, early, client).await;
        });
    });

    let mut resp = super::empty(StatusCode::SWITCHING_PROTOCOLS);
    let hm = resp.headers_mut();
    hm.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    hm.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    hm.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&key).map_err(|e| ApiError::Internal(Box::new(e)))?,
    );
    if wants_binary {
        hm.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("binary"),
        );
    }
    Ok(resp)
}

type Ws = WebSocketStream<super::upgraded::VisitorIo>;

/// A console ready to relay: its session, its connection, the visitor's WebSocket, the
/// visitor bytes already read, and the filter of the visitor's messages.
struct Ready {
    guard: SessionGuard,
    io: Box<dyn ConsoleIo>,
    ws: Ws,
    initial: Bytes,
    filter: Option<relay::ClientFilter>,
    server_filter: Option<relay::ServerFilter>,
    /// What a recording of it starts with: the SPICE channel, and the bytes the gateway
    /// itself sent the visitor before the relay (its side of the RFB handshake).
    channel: Option<String>,
    preamble: Vec<u8>,
    /// Finds the key points of its recording (recorded VNC sessions).
    indexer: Option<Box<dyn crate::engine::recordings::Indexer>>,
}

/// A setup phase that failed: the visitor's WebSocket, to be closed with this code.
type Refused = (Ws, relay::Close);

/// The outcome of a setup phase raced against the session's end (revoke, kill, expiry):
/// its value, or the close code that says why not.
fn phase<T, E: std::fmt::Display>(
    r: Result<Result<T, E>, EndReason>,
    what: &'static str,
) -> Result<T, relay::Close> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Err(ended) => Err(ended.into()),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "{what}");
            Err(relay::Close::ConsoleUnavailable)
        }
    }
}

/// A SPICE channel: its link message, a session (a viewer for the main channel), the
/// console connection and the link with the console.
async fn spice_setup(
    app: &App,
    mut ws: Ws,
    link: &Link,
    console: &ResolvedConsole,
    client: IpAddr,
    opts: &RelayOptions,
) -> Result<Ready, Refused> {
    let limits = &app.config().limits;
    // The link phase is a session too (not a viewer), so that revoke, kill and shutdown
    // reach it.
    let Ok(linking) = app.open_session(link, client, false) else {
        return Err((ws, relay::Close::Shutdown));
    };
    let timeout = limits.console_handshake_timeout;
    let (hdr, first) = match relay::spice_link(&mut ws, timeout, &linking.session, opts).await {
        Ok(x) => x,
        Err(e) => {
            tracing::debug!(error = %e, "no SPICE link message");
            let close = e.close();
            return Err((ws, close));
        }
    };
    if link.view_only && !hdr.channel_type.permitted_view_only() {
        return Err((ws, relay::Close::ViewOnly));
    }
    let viewer = hdr.channel_type == relay::spice::ChannelType::Main;
    let Ok(guard) = app.open_session(link, client, viewer) else {
        return Err((ws, relay::Close::ViewersFull));
    };
    // Ended between the link message and now: the new session inherits it.
    if linking.session.cancel.is_cancelled() {
        guard
            .session
            .end(linking.session.reason().unwrap_or(EndReason::Killed));
    }
    drop(linking);
    let connecting = connect(&console.address, limits.console_connect_timeout);
    let ended = relay::until_ended(&guard.session, link.expires_at, connecting).await;
    let mut io = match phase(ended, "console connect failed") {
        Ok(io) => io,
        Err(c) => return Err((ws, c)),
    };
    // The link with the console (the visitor's bytes after its link message, an early
    // ticket, go through the view-only filter, if any), bounded and ended with the
    // session like every other phase.
    let (link_msg, rest) = first.split_at(hdr.total_len.min(first.len()));
    let policy = link.clipboard.effective(link.view_only);
    let linking = relay::spice::connect_channel(
        &mut ws,
        &mut io,
        link_msg,
        &hdr,
        link.view_only,
        policy,
        limits.max_cut_text_bytes,
        timeout,
    );
    let ended = relay::until_ended(&guard.session, link.expires_at, linking).await;
    let (filter, server_filter) = match phase(ended, "SPICE link with the console failed") {
        Ok((f, s)) => (
            f.map(relay::ClientFilter::Spice),
            s.map(relay::ServerFilter::Spice),
        ),
        Err(c) => return Err((ws, c)),
    };
    Ok(Ready {
        guard,
        io,
        ws,
        initial: Bytes::copy_from_slice(rest),
        filter,
        server_filter,
        channel: Some(format!("{:?}", hdr.channel_type).to_ascii_lowercase()),
        preamble: Vec::new(),
        indexer: None,
    })
}

async fn run_session(
    app: Arc<App>,
    ws: Ws,
    link: Link,
    console: ResolvedConsole,
    early: Option<(SessionGuard, Box<dyn ConsoleIo>)>,
    client: IpAddr,
) {
    let opts = RelayOptions {
        view_only: link.view_only,
        expires_at: link.expires_at,
    };
    let limits = &app.config().limits;
    let ready = match (link.console, early) {
        (ConsoleType::Spice, _) => {
            match spice_setup(&app, ws, &link, &console, client, &opts).await {
                Ok(r) => r,
                Err((ws, close)) => return relay::close_with(ws, close).await,
            }
        }
        (ConsoleType::Vnc, Some((guard, mut io))) => {
            let pw = console.vnc_password.as_ref().map(|p| p.expose().as_bytes());
            let timeout = limits.console_handshake_timeout;
            match relay::vnc_handshake(ws, &mut io, pw, timeout, &guard.session, &opts).await {
                Ok((ws, initial)) => {
                    let keys = match app.link_recorded(&link) {
                        true => app.config().recording.key_point_interval,
                        false => None,
                    };
                    let (filter, server_filter, indexer) =
                        vnc_filters(&link, limits.max_cut_text_bytes, keys);
                    Ready {
                        guard,
                        io,
                        ws,
                        initial,
                        filter: Some(relay::ClientFilter::Rfb(filter)),
                        server_filter: server_filter.map(relay::ServerFilter::Rfb),
                        channel: None,
                        preamble: crate::engine::recordings::VNC_PREAMBLE.to_vec(),
                        indexer,
                    }
                }
                Err(e) => {
                    tracing::debug!(session = %guard.session.id, error = %e, "VNC handshake failed");
                    return;
                }
            }
        }
        (_, Some((guard, io))) => Ready {
            guard,
            io,
            ws,
            initial: Bytes::new(),
            filter: None,
            server_filter: None,
            channel: None,
            preamble: Vec::new(),
            indexer: None,
        },
        (_, None) => return,
    };
    relay_and_record(&app, ready, &link, client, &opts).await;
}

/// The filters of a VNC session: the visitor's messages under the link's clipboard
/// policy and, when the policy keeps the guest's clipboard in, the parser of the
/// console's stream that removes it (which also limits the encodings the visitor may
/// negotiate to the ones it follows; links that let the guest's text out keep all).
/// A recorded session with key points (`keys`: their interval) gets the gateway's own
/// full refresh requests and the indexer of its recording, which follows the server
/// stream too (so its encodings are limited the same way).
fn vnc_filters(
    link: &Link,
    max_cut_text: usize,
    keys: Option<std::time::Duration>,
) -> (
    relay::rfb::ClientFilter,
    Option<relay::rfb::ServerFilter>,
    Option<Box<dyn crate::engine::recordings::Indexer>>,
) {
    let policy = link.clipboard.effective(link.view_only);
    let mut filter =
        relay::rfb::ClientFilter::new(link.view_only, max_cut_text).with_clipboard(policy);
    if policy.from_guest() && keys.is_none() {
        return (filter, None, None);
    }
    let share = relay::rfb::PixelFormatShare::new();
    filter = filter.with_server_parsing(share.clone());
    if let Some(every) = keys {
        filter = filter.with_refresh(every);
    }
    let indexer = keys.map(|every| {
        let ix = relay::rfb::keys::KeyIndexer::new(
            share.clone(),
            crate::engine::recordings::VNC_PREAMBLE,
            every,
        );
        Box::new(ix) as Box<dyn crate::engine::recordings::Indexer>
    });
    let server = (!policy.from_guest()).then(|| relay::rfb::ServerFilter::new(policy, share));
    (filter, server, indexer)
}

/// Relays a ready console, with the session's start and end in the audit trail.
async fn relay_and_record(
    app: &App,
    ready: Ready,
    link: &Link,
    client: IpAddr,
    opts: &RelayOptions,
) {
    let Ready {
        guard,
        io,
        ws,
        initial,
        filter,
        server_filter,
        channel,
        preamble,
        indexer,
    } = ready;
    let session = guard.session.clone();
    if let Err(r) = app
        .start_recording(&session, link, channel, preamble, indexer)
        .await
    {
        drop(guard);
        return relay::close_with(ws, r.into()).await;
    }
    Metrics::inc(&app.metrics().sessions_started);
    app.audit(
        AuditKind::SessionStarted,
        Some(&link.id),
        Some(&session.id),
        Some(client),
        None,
    )
    .await;
    tracing::info!(session = %session.id, link = %link.id, vm = %link.vm, "session started");
    let ctx = relay::RelayContext {
        session: &session,
        opts,
        limits: &app.config().limits,
        metrics: app.metrics(),
    };
    let (reason, closing) = relay::relay(ws, io, initial, filter, server_filter, ctx).await;
    if let Some(tap) = session.recording.get() {
        tap.finish(reason).await;
    }
    Metrics::inc(&app.metrics().sessions_ended);
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    let detail = format!(
        "reason={} to_client={} to_console={}",
        reason.as_str(),
        session.bytes_to_client.load(relaxed),
        session.bytes_to_console.load(relaxed)
    );
    app.audit(
        AuditKind::SessionEnded,
        Some(&link.id),
        Some(&session.id),
        Some(client),
        Some(detail),
    )
    .await;
    tracing::info!(session = %session.id, reason = reason.as_str(), "session ended");
    if reason == EndReason::Killed {
        app.audit(
            AuditKind::SessionKilled,
            Some(&link.id),
            Some(&session.id),
            None,
            None,
        )
        .await;
    }
    // The viewer slot is free and the end recorded before the close handshake, which
    // waits on the visitor.
    drop(guard);
    closing.finish().await;
}
