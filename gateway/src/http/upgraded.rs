//! The visitor's connection after the WebSocket upgrade, as the relay reads and writes it.
//!
//! hyper hands an upgraded connection back as [`Upgraded`]: a boxed `dyn` stream behind
//! a rewind buffer, in hyper's own I/O traits, which `TokioIo` turns back into tokio's.
//! Every read and write of a relayed console went through those three layers. The
//! server gives hyper one of two concrete streams (`server::serve_connection`), so the
//! upgrade is taken apart again ([`Upgraded::downcast`]) and the relay works on the TLS
//! (or plain TCP) stream itself; bytes hyper had already read past the request go to
//! the WebSocket first (`WebSocketStream::from_partially_read`). Any other stream type
//! (none today) stays boxed.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// A visitor's upgraded connection.
#[derive(Debug)]
pub enum VisitorIo {
    Tls(Box<TlsStream<TcpStream>>),
    Plain(TcpStream),
    Boxed(TokioIo<Upgraded>),
}

impl VisitorIo {
    /// The stream under `upgraded`, and the bytes hyper read past the request. Call it
    /// on the runtime that is to relay: the socket moves to that runtime's reactor
    /// ([`crate::relay::rehome`]).
    pub fn from_upgraded(upgraded: Upgraded) -> (VisitorIo, Vec<u8>) {
        let upgraded = match upgraded.downcast::<TokioIo<TlsStream<TcpStream>>>() {
            Ok(parts) => {
                let mut tls = parts.io.into_inner();
                crate::relay::rehome::tcp(tls.get_mut().0);
                return (VisitorIo::Tls(Box::new(tls)), parts.read_buf.to_vec());
            }
            Err(u) => u,
        };
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                let mut tcp = parts.io.into_inner();
                crate::relay::rehome::tcp(&mut tcp);
                (VisitorIo::Plain(tcp), parts.read_buf.to_vec())
            }
            Err(u) => (VisitorIo::Boxed(TokioIo::new(u)), Vec::new()),
        }
    }
}

impl AsyncRead for VisitorIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            VisitorIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            VisitorIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            VisitorIo::Boxed(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for VisitorIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            VisitorIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            VisitorIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            VisitorIo::Boxed(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            VisitorIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            VisitorIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            VisitorIo::Boxed(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            VisitorIo::Tls(s) => s.is_write_vectored(),
            VisitorIo::Plain(s) => s.is_write_vectored(),
            VisitorIo::Boxed(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            VisitorIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            VisitorIo::Plain(s) => Pin::new(s).poll_flush(cx),
            VisitorIo::Boxed(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            VisitorIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            VisitorIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            VisitorIo::Boxed(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
