//! The handshake fuzz target's body (`fuzz/fuzz_targets/rfb_handshake.rs`, whose corpus
//! also replays in the unit tests), with the never-blocking stream it runs on.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{backend_handshake, client_handshake, RfbLimits};

/// In-memory stream that never returns Pending: reads from `input`, swallows writes
/// (counting them).
#[derive(Debug)]
pub struct MemStream<'a> {
    pub input: &'a [u8],
    pub written: usize,
}

impl<'a> MemStream<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        MemStream { input, written: 0 }
    }
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

/// Polls `f` once; it must be ready (the stream never blocks). Panics otherwise: this
/// is the fuzz target's check.
#[allow(clippy::panic)]
pub fn poll_once<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("handshake pending on an always-ready stream"),
    }
}

/// Byte 0 bit 0 selects the side (0: the gateway as RFB server facing the browser,
/// 1: as RFB client facing the VNC server), bit 1 removes the VNC password; the rest
/// is everything the peer sends. Each handshake must finish in one poll, write at most
/// 64 bytes, and keep its error message bounded.
pub fn handshake(data: &[u8]) {
    let Some((&sel, input)) = data.split_first() else {
        return;
    };
    let mut s = MemStream::new(input);
    let limits = RfbLimits::default();
    let result = if sel & 1 == 0 {
        poll_once(client_handshake(&mut s))
    } else {
        let password: Option<&[u8]> = (sel & 2 == 0).then_some(b"password".as_slice());
        poll_once(backend_handshake(&mut s, password, &limits))
    };
    assert!(s.written <= 64, "wrote {} bytes", s.written);
    if let Err(e) = result {
        assert!(e.to_string().len() < 4096);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
/// The fuzz corpora: `$GATEWAY_FUZZ_CORPUS/<target>` when that variable is
/// set, else `<gateway crate>/../fuzz/corpus/<target>`.
pub(crate) fn corpus_files(target: &str) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let base = std::env::var_os("GATEWAY_FUZZ_CORPUS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
        });
    let dir = base.join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {} unreadable: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let data = std::fs::read(&p).unwrap();
            (p, data)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    files
}
