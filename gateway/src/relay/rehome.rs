//! Moving a socket from one tokio runtime's reactor to the current one's.
//!
//! Connections are accepted and set up on the server's setup runtime, whose threads run
//! at a lower CPU priority; the console relayed over them runs on the relay runtime. A
//! socket stays registered with the reactor it was made on, so the relay moves the
//! visitor's socket and the console's to its own: the descriptor is duplicated, the
//! duplicate registered here, and the original deregistered there and closed. The
//! connection (and any TLS state or bytes in flight above it) is untouched: it is the
//! same socket. If that fails (no descriptor left), the stream stays where it was: it
//! still works, driven by the other runtime.

use std::os::fd::{AsFd, OwnedFd};

/// Moves `stream` to the current runtime's reactor: `register` makes a stream of this
/// runtime from a duplicate of its descriptor (see the module).
fn moved<S: AsFd, Std: From<OwnedFd>>(
    stream: &mut S,
    register: fn(Std) -> std::io::Result<S>,
    what: &str,
) {
    match stream
        .as_fd()
        .try_clone_to_owned()
        .map(Std::from)
        .and_then(register)
    {
        Ok(here) => drop(std::mem::replace(stream, here)),
        Err(e) => tracing::debug!(error = %e, "the {what} connection stays on the setup runtime"),
    }
}

/// Moves a TCP stream (a visitor's, or a TCP console's) to the current runtime's reactor.
pub fn tcp(stream: &mut tokio::net::TcpStream) {
    moved::<_, std::net::TcpStream>(stream, tokio::net::TcpStream::from_std, "TCP");
}

/// Moves a unix stream (a QEMU console's) to the current runtime's reactor.
pub fn unix(stream: &mut tokio::net::UnixStream) {
    moved::<_, std::os::unix::net::UnixStream>(stream, tokio::net::UnixStream::from_std, "unix");
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A stream made on one runtime and moved to another keeps working after the first
    /// runtime is gone (so the second drives it), with the bytes in flight.
    #[test]
    fn a_moved_stream_works_on_its_new_runtime_alone() {
        let first = tokio::runtime::Runtime::new().expect("runtime");
        let (mut a, mut b) = first.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = l.local_addr().expect("addr");
            let (a, b) = tokio::join!(tokio::net::TcpStream::connect(addr), l.accept());
            let mut a = a.expect("connect");
            a.write_all(b"in flight").await.expect("write");
            (a, b.expect("accept").0)
        });
        let (mut ua, mut ub) =
            first.block_on(async { tokio::net::UnixStream::pair().expect("pair") });
        let second = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        second.block_on(async {
            super::tcp(&mut a);
            super::tcp(&mut b);
            super::unix(&mut ua);
            super::unix(&mut ub);
        });
        drop(first);
        second.block_on(async {
            let mut buf = [0u8; 9];
            b.read_exact(&mut buf).await.expect("read moved");
            assert_eq!(&buf, b"in flight");
            b.write_all(b"back").await.expect("write moved");
            let mut back = [0u8; 4];
            a.read_exact(&mut back).await.expect("read back");
            assert_eq!(&back, b"back");
            ua.write_all(b"unix").await.expect("unix write");
            let mut u = [0u8; 4];
            ub.read_exact(&mut u).await.expect("unix read");
            assert_eq!(&u, b"unix");
        });
    }
}
