//! The console relay: a visitor's WebSocket ⇄ a console socket, with bounded buffers in
//! both directions, the RFB handshake and view-only filter for VNC, the link check for
//! SPICE channels, pings, idle timeout, expiry and cancellation.

pub mod rfb;
pub mod spice;
pub mod ws_io;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::config::Limits;
use crate::metrics::Metrics;
use crate::sessions::{EndReason, Session};

/// A console connection (unix or TCP socket).
pub trait ConsoleIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ConsoleIo for T {}

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

/// The WebSocket close code and text for an end reason.
pub fn close_frame(reason: EndReason) -> CloseFrame {
    let code = match reason {
        EndReason::Revoked => CloseCode::Library(4001),
        EndReason::Expired => CloseCode::Library(4002),
        EndReason::Killed => CloseCode::Library(4003),
        EndReason::IdleTimeout => CloseCode::Library(4008),
        EndReason::ConsoleClosed => CloseCode::Library(4010),
        EndReason::Shutdown => CloseCode::Away,
        EndReason::ProtocolError => CloseCode::Policy,
        EndReason::ClientClosed => CloseCode::Normal,
    };
    CloseFrame {
        code,
        reason: reason.as_str().into(),
    }
}

/// Closes a visitor's connection before any relay ran (a refusal): the same closing
/// handshake as [`Closing::finish`], bounded by one second.
pub async fn close_with<S>(ws: WebSocketStream<S>, code: u16, reason: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (ws_tx, ws_rx) = ws.split();
    let closing = Closing {
        ws_tx,
        ws_rx,
        frame: Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.to_owned().into(),
        }),
        timeout: Duration::from_secs(1),
    };
    closing.finish().await;
}

/// Runs the VNC handshakes: as a client towards the console (answering its password if
/// the target has one), as a server offering no security towards the visitor (who has
/// already authenticated to the gateway). Returns the visitor's bytes read past it.
pub async fn vnc_handshake<S, B>(
    ws: WebSocketStream<S>,
    console: &mut B,
    password: Option<&[u8]>,
    timeout: Duration,
) -> Result<(WebSocketStream<S>, Bytes), RelayError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let limits = rfb::RfbLimits::default();
    tokio::time::timeout(timeout, rfb::backend_handshake(console, password, &limits))
        .await
        .map_err(|_| RelayError::Timeout)??;
    let mut io = ws_io::WsIo::new(ws);
    tokio::time::timeout(timeout, rfb::client_handshake(&mut io))
        .await
        .map_err(|_| RelayError::Timeout)??;
    Ok(io.into_parts())
}

/// Reads the visitor's SPICE link message (the first bytes of every SPICE channel) and
/// returns it parsed, with all bytes read so far (to be forwarded as they are).
pub async fn spice_link<S>(
    ws: &mut WebSocketStream<S>,
    timeout: Duration,
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
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| RelayError::Timeout)?
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
}

/// The relay loop. `filter` sees every visitor→console byte (VNC, view-only SPICE); `initial` holds
/// visitor bytes already read (after a handshake) that go through it first. Returns why it
/// ended and the visitor's connection, to be closed (after the caller's bookkeeping) with
/// [`Closing::finish`].
pub async fn relay<S, B>(
    ws: WebSocketStream<S>,
    console: B,
    initial: Bytes,
    mut filter: Option<ClientFilter>,
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
    let start = tokio::time::Instant::now();
    let last_seen = AtomicU64::new(0);
    let dropped_before = filter.as_ref().map(|f| f.dropped()).unwrap_or(0);

    let reason = {
        let filter = &mut filter;
        let to_console = async {
            let mut out = Vec::with_capacity(4096);
            let mut pass = |bytes: &[u8], out: &mut Vec<u8>| -> Result<(), EndReason> {
                out.clear();
                match filter.as_mut() {
                    Some(f) => f.push(bytes, out).map_err(|e| {
                        tracing::debug!(session = %session.id, error = %e, "visitor sent a bad message");
                        EndReason::ProtocolError
                    }),
                    // A view-only raw console (a serial line) takes no input at all.
                    None if opts.view_only => Ok(()),
                    None => {
                        out.extend_from_slice(bytes);
                        Ok(())
                    }
                }
            };
            if !initial.is_empty() {
                if let Err(r) = pass(&initial, &mut out) {
                    return r;
                }
                if con_w.write_all(&out).await.is_err() {
                    return EndReason::ConsoleClosed;
                }
            }
            loop {
                let msg = match ws_rx.next().await {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        tracing::debug!(session = %session.id, error = %e, "visitor connection error");
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
                last_seen.store(millis_since(start), Ordering::Relaxed);
                match msg {
                    Message::Binary(b) => {
                        if let Err(r) = pass(&b, &mut out) {
                            return r;
                        }
                        if !out.is_empty() {
                            if con_w.write_all(&out).await.is_err() {
                                return EndReason::ConsoleClosed;
                            }
                            let n = u64::try_from(out.len()).unwrap_or(0);
                            session.bytes_to_console.fetch_add(n, Ordering::Relaxed);
                            Metrics::add(&metrics.bytes_to_console, n);
                        }
                    }
                    Message::Text(_) => return EndReason::ProtocolError,
                    Message::Close(_) => return EndReason::ClientClosed,
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                }
            }
        };
        let to_client = async {
            let mut buf = vec![0u8; limits.relay_buffer_bytes];
            let mut ping = tokio::time::interval(limits.ws_ping_interval);
            ping.tick().await;
            loop {
                tokio::select! {
                    r = con_r.read(&mut buf) => {
                        let n = match r {
                            Ok(0) | Err(_) => return EndReason::ConsoleClosed,
                            Ok(n) => n,
                        };
                        if ws_tx.send(Message::Binary(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                            return EndReason::ClientClosed;
                        }
                        let n = u64::try_from(n).unwrap_or(0);
                        session.bytes_to_client.fetch_add(n, Ordering::Relaxed);
                        Metrics::add(&metrics.bytes_to_client, n);
                    }
                    _ = ping.tick() => {
                        let idle = millis_since(start).saturating_sub(last_seen.load(Ordering::Relaxed));
                        if Duration::from_millis(idle) > limits.ws_idle_timeout {
                            return EndReason::IdleTimeout;
                        }
                        if ws_tx.send(Message::Ping(Bytes::new())).await.is_err() {
                            return EndReason::ClientClosed;
                        }
                    }
                }
            }
        };
        let until_expiry = (opts.expires_at - OffsetDateTime::now_utc())
            .try_into()
            .unwrap_or(Duration::ZERO);
        tokio::select! {
            r = to_console => r,
            r = to_client => r,
            _ = session.cancel.cancelled() => session.reason().unwrap_or(EndReason::Killed),
            _ = tokio::time::sleep(until_expiry) => EndReason::Expired,
        }
    };
    if let Some(f) = &filter {
        Metrics::add(
            &metrics.input_messages_dropped,
            f.dropped().saturating_sub(dropped_before),
        );
    }
    let _ = tokio::time::timeout(Duration::from_millis(500), con_w.shutdown()).await;
    let closing = Closing {
        ws_tx,
        ws_rx,
        frame: (reason != EndReason::ClientClosed).then(|| close_frame(reason)),
        timeout: limits.ws_close_timeout,
    };
    (reason, closing)
}

/// A visitor connection whose relay has ended, still to be closed.
#[derive(Debug)]
pub struct Closing<S> {
    ws_tx: SplitSink<WebSocketStream<S>, Message>,
    ws_rx: SplitStream<WebSocketStream<S>>,
    frame: Option<CloseFrame>,
    timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Closing<S> {
    /// The gateway's side of the WebSocket closing handshake: sends the close frame (if
    /// the visitor did not close first), then reads and discards what the visitor still
    /// sends until its answering close, so that the connection is not torn down under the
    /// visitor's feet (a reset can lose the close code it has not read yet), and ends with
    /// a TLS close_notify. Bounded in all by its timeout (`limits.ws_close_timeout` after
    /// a relay).
    pub async fn finish(self) {
        let Closing {
            mut ws_tx,
            mut ws_rx,
            frame,
            timeout,
        } = self;
        let _ = tokio::time::timeout(timeout, async {
            if let Some(frame) = frame {
                if ws_tx.send(Message::Close(Some(frame))).await.is_err() {
                    return;
                }
                // The stream ends once the visitor's close has arrived (or the connection).
                while let Some(Ok(_)) = ws_rx.next().await {}
            } else {
                // The visitor closed first: its close is answered (queued by tungstenite).
                let _ = ws_tx.close().await;
            }
            if let Ok(mut ws) = ws_tx.reunite(ws_rx) {
                let _ = ws.get_mut().shutdown().await;
            }
        })
        .await;
    }
}
