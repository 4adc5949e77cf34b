//! Fuzz both RFB handshakes with an untrusted peer.
//!
//! Input layout: byte 0 bit 0 selects the side (0: the gateway as RFB server
//! facing the browser, `client_handshake`; 1: the gateway as RFB client facing
//! the VNC server, `backend_handshake`), bit 1 removes the configured VNC
//! password; the rest is everything the peer sends. The stream never blocks,
//! so each handshake must finish in a single poll. The corpus replays in
//! `gateway/src/relay/rfb.rs` (`replay_rfb_handshake_corpus`).
#![no_main]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[allow(dead_code)]
#[path = "../../gateway/src/relay/rfb.rs"]
mod rfb;

struct MemStream<'a> {
    input: &'a [u8],
    written: usize,
}

impl AsyncRead for MemStream<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = buf.remaining().min(self.input.len());
        let (head, tail) = self.input.split_at(n);
        buf.put_slice(head);
        self.input = tail;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for MemStream<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.written += buf.len();
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn poll_once<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("handshake pending on an always-ready stream"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, input)) = data.split_first() else {
        return;
    };
    let mut s = MemStream { input, written: 0 };
    let limits = rfb::RfbLimits::default();
    let result = if sel & 1 == 0 {
        poll_once(rfb::client_handshake(&mut s))
    } else {
        let password: Option<&[u8]> = if sel & 2 == 0 {
            Some(b"password")
        } else {
            None
        };
        poll_once(rfb::backend_handshake(&mut s, password, &limits))
    };
    // The gateway's side of either handshake is a few dozen bytes at most.
    assert!(s.written <= 64, "wrote {} bytes", s.written);
    if let Err(e) = result {
        // Error messages must stay bounded (reason strings are capped).
        assert!(e.to_string().len() < 4096);
    }
});
