//! Console servers of fake VMs: unix sockets (0600, in a 0700 directory) that accept any
//! number of clients. VNC is a minimal RFB 3.8 server (security None, a 640×480 screen
//! named `fake`, and empty framebuffer updates); SPICE and serial echo what the client
//! sends.
//! Enough for the gateway to relay something real.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use crate::api::{ConsoleEndpoint, ConsoleKind};
use crate::qemu::QemuError;

/// The version greeting a VNC server sends first (RFB 3.8, as QEMU's).
pub const RFB_GREETING: &[u8] = b"RFB 003.008\n";

/// A listening console socket; dropping it disconnects its clients, stops the server
/// and removes the socket.
#[derive(Debug)]
pub struct ConsoleServer {
    pub endpoint: ConsoleEndpoint,
    task: JoinHandle<()>,
}

impl ConsoleServer {
    /// Listens on `dir/<kind>.sock` (the directory is created 0700).
    pub fn listen(dir: &Path, kind: ConsoleKind) -> Result<ConsoleServer, QemuError> {
        let io = |op: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| QemuError::Io { op, path, source }
        };
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io("setting the mode of", dir))?;
        let socket: PathBuf = dir.join(format!("{kind}.sock"));
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).map_err(io("listening on", &socket))?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
            .map_err(io("setting the mode of", &socket))?;
        // Clients are served inside the listener's task: stopping it (the VM stops)
        // drops them all, as QEMU exiting would.
        let task = tokio::spawn(async move {
            let mut clients = tokio::task::JoinSet::new();
            while let Ok((conn, _)) = listener.accept().await {
                clients.spawn(serve(conn, kind));
                while clients.try_join_next().is_some() {}
            }
        });
        Ok(ConsoleServer {
            endpoint: ConsoleEndpoint {
                kind,
                socket,
                log: None,
            },
            task,
        })
    }
}

impl Drop for ConsoleServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.endpoint.socket);
    }
}

/// The screen every fake VNC console reports.
pub const SCREEN: (u16, u16) = (640, 480);
/// The desktop name every fake VNC console reports.
pub const DESKTOP_NAME: &str = "fake";

/// One client.
async fn serve(conn: UnixStream, kind: ConsoleKind) {
    let _ = match kind {
        ConsoleKind::Vnc => serve_rfb(conn).await,
        ConsoleKind::Spice | ConsoleKind::Serial => echo(conn).await,
    };
}

/// Everything the client sends comes back.
async fn echo(mut conn: UnixStream) -> std::io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        conn.write_all(&buf[..n]).await?;
    }
}

/// The server side of RFB 3.8 with security None, then client messages read one by
/// one; a FramebufferUpdateRequest gets an update of no rectangles. An unknown message
/// ends the connection.
async fn serve_rfb(mut conn: UnixStream) -> std::io::Result<()> {
    conn.write_all(RFB_GREETING).await?;
    let mut version = [0u8; 12];
    conn.read_exact(&mut version).await?;
    conn.write_all(&[1, 1]).await?; // one security type: None
    let mut choice = [0u8; 1];
    conn.read_exact(&mut choice).await?;
    conn.write_all(&[0, 0, 0, 0]).await?; // SecurityResult: OK
    let mut shared = [0u8; 1];
    conn.read_exact(&mut shared).await?;
    let mut init = Vec::with_capacity(24 + DESKTOP_NAME.len());
    init.extend_from_slice(&SCREEN.0.to_be_bytes());
    init.extend_from_slice(&SCREEN.1.to_be_bytes());
    // 32 bpp, depth 24, little-endian, true colour, 255/255/255 at shifts 16/8/0.
    init.extend_from_slice(&[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
    init.extend_from_slice(&(DESKTOP_NAME.len() as u32).to_be_bytes());
    init.extend_from_slice(DESKTOP_NAME.as_bytes());
    conn.write_all(&init).await?;
    loop {
        let mut t = [0u8; 1];
        if conn.read_exact(&mut t).await.is_err() {
            return Ok(());
        }
        match t[0] {
            0 => skip(&mut conn, 19).await?,
            2 => {
                let mut h = [0u8; 3];
                conn.read_exact(&mut h).await?;
                skip(&mut conn, 4 * u64::from(u16::from_be_bytes([h[1], h[2]]))).await?;
            }
            3 => {
                skip(&mut conn, 9).await?;
                conn.write_all(&[0, 0, 0, 0]).await?;
            }
            4 => skip(&mut conn, 7).await?,
            5 => skip(&mut conn, 5).await?,
            6 => {
                let mut h = [0u8; 7];
                conn.read_exact(&mut h).await?;
                skip(
                    &mut conn,
                    u64::from(u32::from_be_bytes([h[3], h[4], h[5], h[6]])),
                )
                .await?;
            }
            _ => return Ok(()),
        }
    }
}

/// Reads and drops `n` bytes.
async fn skip(conn: &mut UnixStream, n: u64) -> std::io::Result<()> {
    let copied = tokio::io::copy(&mut (&mut *conn).take(n), &mut tokio::io::sink()).await?;
    if copied < n {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}
