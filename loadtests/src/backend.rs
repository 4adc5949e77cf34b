//! The "console" backend both relays forward to: one TCP listener on loopback. The first
//! byte a client sends through the relay picks what the connection does:
//! `S` source (stream bytes to the client as fast as possible, discard what it reads),
//! `E` echo; a connection that sends nothing stays idle.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const MODE_SOURCE: u8 = b'S';
pub const MODE_ECHO: u8 = b'E';

/// Size of each write in source mode.
const SOURCE_CHUNK: usize = 64 * 1024;

/// Binds the backend on 127.0.0.1 and serves it in the background.
pub async fn spawn() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((s, _)) => {
                    tokio::spawn(serve(s));
                }
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    eprintln!("backend: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    });
    Ok(addr)
}

async fn serve(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut first = [0u8; 1];
    match s.read(&mut first).await {
        Ok(1) => {}
        _ => return,
    }
    match first[0] {
        MODE_SOURCE => source(s).await,
        MODE_ECHO => echo(s).await,
        _ => sink(s).await,
    }
}

async fn source(s: TcpStream) {
    let (mut r, mut w) = s.into_split();
    let drain = tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = r.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    });
    let chunk = vec![0x5au8; SOURCE_CHUNK];
    while w.write_all(&chunk).await.is_ok() {}
    drain.abort();
}

async fn echo(mut s: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn sink(mut s: TcpStream) {
    let mut buf = vec![0u8; 4096];
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}

/// A bare TCP forwarder (the latency baseline), run as its own process on the relay's
/// core: `vmgw-load forward --to ADDR` prints its port and forwards every connection.
pub async fn forward(to: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?.port());
    loop {
        let (mut a, _) = listener.accept().await?;
        tokio::spawn(async move {
            let Ok(mut b) = TcpStream::connect(to).await else {
                return;
            };
            let _ = a.set_nodelay(true);
            let _ = b.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
        });
    }
}
