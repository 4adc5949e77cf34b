//! The console relay: a visitor's WebSocket ⇄ a console socket, with bounded buffers in
//! both directions, the RFB handshake and view-only filter for VNC, the link check for
//! SPICE channels, pings, idle timeout, expiry and cancellation.
//!
//! Nothing here logs console traffic: what a visitor types or reads may be a password.
//! Log lines carry the session id, byte counts and error kinds, never payload bytes (and
//! `crate::logging` keeps `tungstenite`'s frame dumps out of the log at every level).

pub mod close;
pub mod rehome;
pub mod rfb;
pub mod spice;
pub mod ws_io;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub use close::Close;

use crate::config::Limits;
use crate::engine::sessions::{EndReason, Session};
use crate::metrics::Metrics;

/// A console connection: a unix or TCP socket, or a viewer of a VM's shared serial port.
pub trait ConsoleIo: AsyncRead + AsyncWrite + Unpin + Send {
    /// Moves the connection's socket to the current runtime's reactor ([`rehome`]): a
    /// console opened while its visitor's request was answered on the setup runtime is
    /// relayed on the relay runtime.
    fn rehome(&mut self) {}
}

impl ConsoleIo for tokio::net::TcpStream {
    fn rehome(&mut self) {
        rehome::tcp(self);
    }
}

impl ConsoleIo for tokio::net::UnixStream {
    fn rehome(&mut self) {
        rehome::unix(self);
    }
}

/// The serial hub runs on the relay runtime already (it is joined there).
impl ConsoleIo for crate::engine::serial::SerialViewer {}

/// Errors before the relay loop runs (handshakes).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("console handshake")]
    Rfb(#[from] rfb::RfbError),
    #[error("SPICE link")]
    Spice(#[from] spice::SpiceError),
    #[error("handshake timed out")]
    Timeout,
    #[error("visitor closed the connection during the handshake")]
    ClientGone,
    #[error("visitor connection")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("session ended during the handshake: {}", .0.as_str())]
    Ended(EndReason),
}

impl RelayError {
    /// How the visitor's connection is closed after this error: with the session's end
    /// reason if it was ended (revoke, expiry, kill, shutdown), else as a protocol error.
    pub fn close(&self) -> Close {
        match self {
            RelayError::Ended(r) => Close::from(*r),
            _ => Close::ProtocolError,
        }
    }
}

/// How long until `expires_at` (zero if it has passed).
fn until(expires_at: OffsetDateTime) -> Duration {
    (expires_at - OffsetDateTime::now_utc())
        .try_into()
        .unwrap_or(Duration::ZERO)
}

/// Runs `fut` unless the session ends first: revoked, killed or shut down (its
/// cancellation), or its link expires. Every wait of a session before its relay loop (the
/// console connect, the handshakes, the SPICE link message) goes through this, so that
/// ending a session reaches it in every state at once, not after a timeout.
pub async fn until_ended<F: Future>(
    session: &Session,
    expires_at: OffsetDateTime,
    fut: F,
) -> Result<F::Output, EndReason> {
    tokio::select! {
        biased;
        _ = session.cancel.cancelled() => Err(session.reason().unwrap_or(EndReason::Killed)),
        _ = tokio::time::sleep(until(expires_at)) => Err(EndReason::Expired),
        r = fut => Ok(r),
    }
}

/// [`until_ended`] with a timeout: the error is [`RelayError::Ended`] or
/// [`RelayError::Timeout`].
async fn bounded<F: Future>(
    session: &Session,
    expires_at: OffsetDateTime,
    timeout: Duration,
    fut: F,
) -> Result<F::Output, RelayError> {
    until_ended(session, expires_at, tokio::time::timeout(timeout, fut))
        .await
        .map_err(RelayError::Ended)?
        .map_err(|_| RelayError::Timeout)
}

/// How one relay behaves.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    pub view_only: bool,
    pub expires_at: OffsetDateTime,
}

/// The WebSocket settings for visitor connections: small read buffers (idle sessions
/// cost little), bounded write buffers, bounded messages.
pub fn ws_config(l: &Limits) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(l.relay_buffer_bytes)
        .max_write_buffer_size(l.relay_buffer_bytes * 4)
        .max_message_size(Some(l.ws_max_message_bytes))
        .max_frame_size(Some(l.ws_max_message_bytes))
}

/// Closes a visitor's connection before any relay ran (a refusal): the same closing
/// handshake as [`Closing::finish`], bounded by one second.
pub async fn close_with<S>(ws: WebSocketStream<S>, close: Close)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (ws_tx, ws_rx) = ws.split();
    let closing = Closing {
        ws_tx,
        ws_rx,
        state: CloseState::Send(close.frame()),
        timeout: Duration::from_secs(1),
    };
    closing.finish().await;
}

/// Runs the VNC handshakes: as a client towards the console (answering its password if
/// the target has one), as a server offering no security towards the visitor (who has
/// already authenticated to the gateway). Returns the visitor's bytes read past it. Each
/// handshake is bounded by `timeout`, and both end as soon as the session does (then the
/// visitor's connection is closed here with the session's end reason).
pub async fn vnc_handshake<S, B>(
    ws: WebSocketStream<S>,
    console: &mut B,
    password: Option<&[u8]>,
    timeout: Duration,
    session: &Session,
    opts: &RelayOptions,
) -> Result<(WebSocketStream<S>, Bytes), RelayError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let limits = rfb::RfbLimits::default();
    let backend = rfb::backend_handshake(console, password, &limits);
    match bounded(session, opts.expires_at, timeout, backend).await {
        Ok(r) => r?,
        Err(e) => {
            if let RelayError::Ended(r) = e {
                close_with(ws, Close::from(r)).await;
            }
            return Err(e);
        }
    }
    let mut io = ws_io::WsIo::new(ws);
    let client = bounded(
        session,
        opts.expires_at,
        timeout,
        rfb::client_handshake(&mut io),
    )
    .await;
    match client {
        Ok(r) => r?,
        Err(e) => {
            if let RelayError::Ended(r) = e {
                close_with(io.into_parts().0, Close::from(r)).await;
            }
            return Err(e);
        }
    }
    Ok(io.into_parts())
}

/// Reads the visitor's SPICE link message (the first bytes of every SPICE channel) and
/// returns it parsed, with all bytes read so far (to be forwarded as they are). Bounded by
/// `timeout`, and ends as soon as the session does ([`RelayError::close`] says how to close).
pub async fn spice_link<S>(
    ws: &mut WebSocketStream<S>,
    timeout: Duration,
    session: &Session,
    opts: &RelayOptions,
) -> Result<(spice::LinkHeader, Vec<u8>), RelayError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let read = async {
        let mut buf = Vec::new();
        loop {
            if let Some(h) = spice::parse_link_header(&buf)? {
                return Ok((h, buf));
            }
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => {
                    // The link message is at most a header and LINK_MESS_MAX_LEN bytes;
                    // a client that keeps sending without completing it is cut off.
                    let cap =
                        spice::LINK_HEADER_LEN + spice::LINK_MESS_MAX_LEN as usize + 64 * 1024;
                    if buf.len() + b.len() > cap {
                        return Err(RelayError::Spice(spice::SpiceError::SizeTooLarge(
                            spice::LINK_MESS_MAX_LEN,
                        )));
                    }
                    buf.extend_from_slice(&b);
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Err(RelayError::Spice(spice::SpiceError::BadMagic));
                }
                Some(Ok(Message::Close(_))) | None => return Err(RelayError::ClientGone),
                Some(Err(e)) => return Err(RelayError::Ws(e)),
            }
        }
    };
    bounded(session, opts.expires_at, timeout, read).await?
}

fn millis_since(start: tokio::time::Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What one relay runs under.
#[derive(Debug, Clone, Copy)]
pub struct RelayContext<'a> {
    pub session: &'a Session,
    pub opts: &'a RelayOptions,
    pub limits: &'a Limits,
    pub metrics: &'a Metrics,
}

/// What the relay lets through of a visitor's bytes: RFB messages (VNC), or SPICE
/// messages on a view-only SPICE channel.
#[derive(Debug)]
pub enum ClientFilter {
    Rfb(rfb::ClientFilter),
    Spice(spice::ClientFilter),
}

/// A visitor message a [`ClientFilter`] refuses (the session ends as a protocol error).
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error(transparent)]
    Rfb(#[from] rfb::RfbError),
    #[error(transparent)]
    Spice(#[from] spice::SpiceError),
}

impl ClientFilter {
    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), FilterError> {
        match self {
            ClientFilter::Rfb(f) => Ok(f.push(input, out)?),
            ClientFilter::Spice(f) => Ok(f.push(input, out)?),
        }
    }

    fn dropped(&self) -> u64 {
        match self {
            ClientFilter::Rfb(f) => f.dropped(),
            ClientFilter::Spice(f) => f.dropped(),
        }
    }

    fn clipboard_dropped(&self) -> u64 {
        match self {
            ClientFilter::Rfb(f) => f.clipboard_dropped(),
            ClientFilter::Spice(f) => f.clipboard_dropped(),
        }
    }
}

/// What the relay lets through of the console's bytes: the RFB server stream (VNC) or a
/// SPICE main channel, without the clipboard messages the link's policy keeps in.
#[derive(Debug)]
pub enum ServerFilter {
    Rfb(rfb::ServerFilter),
    Spice(spice::ServerFilter),
}

impl ServerFilter {
    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), FilterError> {
        match self {
            ServerFilter::Rfb(f) => Ok(f.push(input, out)?),
            ServerFilter::Spice(f) => Ok(f.push(input, out)?),
        }
    }

    fn clipboard_dropped(&self) -> u64 {
        match self {
            ServerFilter::Rfb(f) => f.clipboard_dropped(),
            ServerFilter::Spice(f) => f.clipboard_dropped(),
        }
    }
}

/// The relay loop. `filter` sees every visitor→console byte (VNC, view-only SPICE); `initial` holds
/// visitor bytes already read (after a handshake) that go through it first. `server` sees
/// every console→visitor byte (VNC: the clipboard policy's other half). Returns why it
/// ended and the visitor's connection, to be closed (after the caller's bookkeeping) with
/// [`Closing::finish`].
pub async fn relay<S, B>(
    ws: WebSocketStream<S>,
    console: B,
    initial: Bytes,
    mut filter: Option<ClientFilter>,
    mut server: Option<ServerFilter>,
    ctx: RelayContext<'_>,
) -> (EndReason, Closing<S>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    B: AsyncRead + AsyncWrite + Unpin + Send,
{
    let RelayContext {
        session,
        opts,
        limits,
        metrics,
    } = ctx;
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (mut con_r, mut con_w) = tokio::io::split(console);
    let seen = LastSeen::new();
    let dropped_before = filter.as_ref().map(|f| f.dropped()).unwrap_or(0);

    let reason = {
        let to_console = to_console(&mut ws_rx, &mut con_w, initial, &mut filter, ctx, &seen);
        let to_client = to_client(&mut ws_tx, &mut con_r, &mut server, ctx, &seen);
        tokio::select! {
            r = to_console => r,
            r = to_client => r,
            _ = session.cancel.cancelled() => session.reason().unwrap_or(EndReason::Killed),
            _ = tokio::time::sleep(until(opts.expires_at)) => EndReason::Expired,
        }
    };
    tracing::debug!(
        session = %session.id,
        reason = reason.as_str(),
        to_console = session.bytes_to_console.load(Ordering::Relaxed),
        to_client = session.bytes_to_client.load(Ordering::Relaxed),
        dropped = filter.as_ref().map(|f| f.dropped()).unwrap_or(0),
        "relay ended"
    );
    if let Some(f) = &filter {
        Metrics::add(
            &metrics.input_messages_dropped,
            f.dropped().saturating_sub(dropped_before),
        );
        Metrics::add(
            &metrics.clipboard_dropped_from_visitor,
            f.clipboard_dropped(),
        );
    }
    if let Some(f) = &server {
        Metrics::add(
            &metrics.clipboard_dropped_from_console,
            f.clipboard_dropped(),
        );
    }
    // The visitor learns why at once, not after the caller's bookkeeping (audit writes):
    // the close frame goes out now; `Closing::finish` waits for the answer.
    let started = tokio::time::Instant::now();
    let state = if reason == EndReason::ClientClosed {
        CloseState::AnswerTheirs
    } else {
        let frame = Message::Close(Some(Close::from(reason).frame()));
        match tokio::time::timeout(limits.ws_close_timeout, ws_tx.send(frame)).await {
            Ok(Ok(())) => CloseState::AwaitAnswer,
            _ => CloseState::Failed,
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), con_w.shutdown()).await;
    let closing = Closing {
        ws_tx,
        ws_rx,
        state,
        timeout: limits.ws_close_timeout.saturating_sub(started.elapsed()),
    };
    (reason, closing)
}

/// When the visitor last sent anything (for the idle timeout), in milliseconds since the
/// relay started.
#[derive(Debug)]
struct LastSeen {
    start: tokio::time::Instant,
    at: AtomicU64,
}

impl LastSeen {
    fn new() -> Self {
        LastSeen {
            start: tokio::time::Instant::now(),
            at: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        self.at.store(millis_since(self.start), Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let now = millis_since(self.start);
        Duration::from_millis(now.saturating_sub(self.at.load(Ordering::Relaxed)))
    }
}

/// Puts into `out` what of the visitor's `bytes` may reach the console: through the RFB
/// filter (VNC), nothing for a view-only raw console (a serial line takes no input that
/// could be told apart from typing), else all of it.
fn pass_input(
    filter: &mut Option<ClientFilter>,
    ctx: RelayContext<'_>,
    bytes: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), EndReason> {
    out.clear();
    match filter.as_mut() {
        Some(f) => f.push(bytes, out).map_err(|e| {
            tracing::debug!(session = %ctx.session.id, error = %e, "visitor sent a bad message");
            EndReason::ProtocolError
        }),
        None if ctx.opts.view_only => Ok(()),
        None => {
            out.extend_from_slice(bytes);
            Ok(())
        }
    }
}

/// Visitor → console: every binary message through [`pass_input`], `initial` first.
async fn to_console<R, W>(
    ws_rx: &mut R,
    con_w: &mut W,
    initial: Bytes,
    filter: &mut Option<ClientFilter>,
    ctx: RelayContext<'_>,
    seen: &LastSeen,
) -> EndReason
where
    R: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut out = Vec::with_capacity(4096);
    if !initial.is_empty() {
        if let Err(r) = pass_input(filter, ctx, &initial, &mut out) {
            return r;
        }
        if con_w.write_all(&out).await.is_err() {
            return EndReason::ConsoleClosed;
        }
        ctx.session.record_to_console(&out);
    }
    loop {
        let msg = match ws_rx.next().await {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                tracing::debug!(session = %ctx.session.id, error = %e, "visitor connection error");
                return match e {
                    tokio_tungstenite::tungstenite::Error::Capacity(_)
                    | tokio_tungstenite::tungstenite::Error::Protocol(_) => {
                        EndReason::ProtocolError
                    }
                    _ => EndReason::ClientClosed,
                };
            }
            None => return EndReason::ClientClosed,
        };
        seen.touch();
        match msg {
            Message::Binary(b) => {
                if let Err(r) = pass_input(filter, ctx, &b, &mut out) {
                    return r;
                }
                if !out.is_empty() {
                    if let Err(e) = con_w.write_all(&out).await {
                        tracing::debug!(session = %ctx.session.id, error = %e, "writing to the console failed");
                        return EndReason::ConsoleClosed;
                    }
                    ctx.session.record_to_console(&out);
                    let n = u64::try_from(out.len()).unwrap_or(0);
                    ctx.session.bytes_to_console.fetch_add(n, Ordering::Relaxed);
                    Metrics::add(&ctx.metrics.bytes_to_console, n);
                }
            }
            Message::Text(_) => return EndReason::ProtocolError,
            Message::Close(_) => return EndReason::ClientClosed,
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

/// What of the console's `bytes` may reach the visitor: through the server filter (the
/// clipboard policy), else all of it. Empty when everything was held back or removed.
fn pass_output(
    server: &mut Option<ServerFilter>,
    ctx: RelayContext<'_>,
    bytes: Bytes,
) -> Result<Bytes, EndReason> {
    let Some(f) = server.as_mut() else {
        return Ok(bytes);
    };
    let mut out = Vec::with_capacity(bytes.len());
    f.push(&bytes, &mut out).map_err(|e| {
        tracing::debug!(session = %ctx.session.id, error = %e, "console sent a message the gateway cannot follow");
        EndReason::ProtocolError
    })?;
    Ok(Bytes::from(out))
}

/// Bytes a session relays to its visitor without waiting before it lets the other
/// sessions on its worker run (see [`to_client`]).
const TURN_BYTES: usize = 256 * 1024;

/// What a session reads from its console when the last read did not fill the buffer: an
/// idle or quiet console holds this much, not `relay_buffer_bytes`.
const SMALL_READ: usize = 4096;

/// Reads what the console has (at most `want` bytes) into `buf`; `turn` counts the bytes
/// read since the console last made this session wait, and starts again when it does.
async fn read_console<R: AsyncRead + Unpin>(
    con_r: &mut R,
    buf: &mut BytesMut,
    want: usize,
    turn: &mut usize,
) -> std::io::Result<usize> {
    buf.reserve(want);
    let mut limited = bytes::BufMut::limit(&mut *buf, want);
    let mut read = std::pin::pin!(con_r.read_buf(&mut limited));
    match futures::poll!(read.as_mut()) {
        std::task::Poll::Ready(r) => r,
        std::task::Poll::Pending => {
            *turn = 0;
            read.await
        }
    }
}

/// Console → visitor, one binary message per read, with pings and the idle timeout.
/// Fair between sessions on a saturated core: a console that always has more to send
/// yields its worker after [`TURN_BYTES`] (a busy screen cannot starve the others).
async fn to_client<T, R>(
    ws_tx: &mut T,
    con_r: &mut R,
    server: &mut Option<ServerFilter>,
    ctx: RelayContext<'_>,
    seen: &LastSeen,
) -> EndReason
where
    T: futures::Sink<Message> + Unpin,
    R: AsyncRead + Unpin,
{
    let limits = ctx.limits;
    // Grown to `relay_buffer_bytes` while the console fills it, small otherwise; each
    // message takes the bytes read without a copy, and the allocation is reused once
    // the WebSocket has written them.
    let mut buf = BytesMut::new();
    let small = SMALL_READ.min(limits.relay_buffer_bytes);
    let mut want = small;
    let mut ping = tokio::time::interval(limits.ws_ping_interval);
    ping.tick().await;
    let mut turn = 0usize;
    loop {
        tokio::select! {
            r = read_console(con_r, &mut buf, want, &mut turn) => {
                let n = match r {
                    Ok(0) => {
                        tracing::debug!(session = %ctx.session.id, "the console closed the connection");
                        return EndReason::ConsoleClosed;
                    }
                    Err(e) => {
                        tracing::debug!(session = %ctx.session.id, error = %e, "reading from the console failed");
                        return EndReason::ConsoleClosed;
                    }
                    Ok(n) => n,
                };
                want = if n < small { small } else { limits.relay_buffer_bytes };
                let data = match pass_output(server, ctx, buf.split().freeze()) {
                    Ok(d) => d,
                    Err(r) => return r,
                };
                ctx.session.record_to_client(&data);
                if !data.is_empty() && ws_tx.send(Message::Binary(data)).await.is_err() {
                    return EndReason::ClientClosed;
                }
                let n64 = u64::try_from(n).unwrap_or(0);
                ctx.session.bytes_to_client.fetch_add(n64, Ordering::Relaxed);
                Metrics::add(&ctx.metrics.bytes_to_client, n64);
                turn += n;
                if turn >= TURN_BYTES {
                    turn = 0;
                    tokio::task::yield_now().await;
                }
            }
            _ = ping.tick() => {
                if seen.idle() > limits.ws_idle_timeout {
                    return EndReason::IdleTimeout;
                }
                if ws_tx.send(Message::Ping(Bytes::new())).await.is_err() {
                    return EndReason::ClientClosed;
                }
            }
        }
    }
}

/// Where the gateway's side of the closing handshake stands.
#[derive(Debug)]
enum CloseState {
    /// The close frame is still to be sent.
    Send(CloseFrame),
    /// The close frame went out; the visitor's answer is awaited.
    AwaitAnswer,
    /// The visitor closed first; its close is to be answered.
    AnswerTheirs,
    /// Sending the close frame failed: nothing is left but ending the connection.
    Failed,
}

/// A visitor connection whose relay has ended, still to be closed.
#[derive(Debug)]
pub struct Closing<S> {
    ws_tx: SplitSink<WebSocketStream<S>, Message>,
    ws_rx: SplitStream<WebSocketStream<S>>,
    state: CloseState,
    timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Closing<S> {
    /// The gateway's side of the WebSocket closing handshake: sends the close frame (if
    /// the visitor did not close first and the relay has not sent it already), then reads
    /// and discards what the visitor still sends until its answering close, so that the
    /// connection is not torn down under the visitor's feet (a reset can lose the close
    /// code it has not read yet), and ends with a TLS close_notify. Bounded in all by its
    /// timeout (what is left of `limits.ws_close_timeout` after a relay).
    pub async fn finish(self) {
        let Closing {
            mut ws_tx,
            mut ws_rx,
            state,
            timeout,
        } = self;
        let _ = tokio::time::timeout(timeout, async {
            let await_answer = match state {
                CloseState::Send(frame) => {
                    if ws_tx.send(Message::Close(Some(frame))).await.is_err() {
                        return;
                    }
                    true
                }
                CloseState::AwaitAnswer => true,
                CloseState::AnswerTheirs => {
                    // Its close is answered (queued by tungstenite).
                    let _ = ws_tx.close().await;
                    false
                }
                CloseState::Failed => return,
            };
            if await_answer {
                // The stream ends once the visitor's close has arrived (or the connection).
                while let Some(Ok(_)) = ws_rx.next().await {}
            }
            if let Ok(mut ws) = ws_tx.reunite(ws_rx) {
                let _ = ws.get_mut().shutdown().await;
            }
        })
        .await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::engine::sessions::Sessions;
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// A revoked session's visitor reads the close code as soon as the relay returns,
    /// before the caller's bookkeeping and `Closing::finish`.
    #[tokio::test]
    async fn the_close_frame_goes_out_when_the_relay_ends() {
        let (server_io, client_io) = tokio::io::duplex(64 * 1024);
        let (console, _console_peer) = tokio::io::duplex(64 * 1024);
        let server = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        let sessions = Sessions::new();
        let guard = sessions
            .open("link", "vm", [127, 0, 0, 1].into(), None, true)
            .unwrap();
        let opts = RelayOptions {
            view_only: false,
            expires_at: OffsetDateTime::now_utc() + time::Duration::hours(1),
        };
        let limits = Limits::default();
        let metrics = Metrics::default();
        let ctx = RelayContext {
            session: &guard.session,
            opts: &opts,
            limits: &limits,
            metrics: &metrics,
        };
        sessions.end_link("link", EndReason::Revoked);
        let (reason, closing) = relay(server, console, Bytes::new(), None, None, ctx).await;
        assert_eq!(reason, EndReason::Revoked);
        let msg = tokio::time::timeout(Duration::from_secs(1), client.next())
            .await
            .expect("no close frame before finish()");
        match msg {
            Some(Ok(Message::Close(Some(f)))) => {
                assert_eq!((u16::from(f.code), f.reason.as_str()), (4001, "revoked"));
            }
            other => panic!("{other:?}"),
        }
        // The client's answering close completes the handshake.
        let finishing = tokio::spawn(closing.finish());
        while let Some(Ok(_)) = client.next().await {}
        tokio::time::timeout(Duration::from_secs(2), finishing)
            .await
            .unwrap()
            .unwrap();
    }
}
