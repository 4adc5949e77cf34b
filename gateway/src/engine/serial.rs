//! Serial consoles: one connection per VM to its serial port, shared by all its viewers.
//!
//! QEMU's socket chardev serves one client at a time, so the gateway holds the one
//! connection (a *hub* per VM) and fans it out:
//!
//! - **When it connects:** at the first viewer. The hub starts with the tail of the VM's
//!   serial log (QEMU writes everything the guest prints there, connected or not), at most
//!   `limits.serial_scrollback_bytes`, so the first viewer sees the recent output too.
//!   The log is read just before the socket is connected: output of that instant is in
//!   the log but may be missing from the scrollback.
//! - **Scrollback:** the hub keeps the last `limits.serial_scrollback_bytes` of output
//!   while it runs; a viewer that joins gets them first, then live output, with no gap
//!   and nothing twice (both happen under the hub's lock). A trimmed scrollback starts
//!   after its first line break (when one is near), so it does not begin mid-sequence,
//!   and terminal queries (cursor position and device attribute requests) are left out
//!   of it, so that the joining viewer's terminal does not answer old questions into the
//!   guest's input.
//! - **Input:** what every viewer that may type sends is merged into one bounded queue
//!   to the serial port. A view-only viewer's handle has no way to the queue at all: its
//!   bytes are dropped here, whatever the relay let through.
//! - **Slow viewers:** each viewer has its own bounded queue
//!   (`limits.serial_viewer_queue_bytes`). Output that does not fit is skipped for that
//!   viewer only, and the viewer sees a marker line where output was left out; the hub
//!   and the other viewers never wait for it.
//! - **How it ends:** when the last viewer leaves (the next one connects anew, seeded
//!   from the log again), or when the serial port closes (the VM stopped): every viewer
//!   then reads the end of its console, and its relay ends as "console closed".
//!
//! Nothing here logs console content: only VM names, counts and error kinds.

use std::collections::{HashMap, VecDeque};
use std::io::SeekFrom;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, PollSender};
use vmm_backend::ConsoleEndpoint;

/// Bytes read from the serial port at a time (and the largest chunk of a viewer's input
/// put in the input queue at a time).
pub const CHUNK_BYTES: usize = 4096;

/// Chunks of merged input waiting for the serial port (at most `CHUNK_BYTES` each).
const INPUT_QUEUE_CHUNKS: usize = 64;

/// What a viewer that fell behind sees where output was skipped.
pub const SKIP_MARKER: &[u8] =
    b"\r\n\x1b[7m[gateway: output skipped here, this viewer fell behind]\x1b[0m\r\n";

/// How far into a trimmed scrollback a line break is looked for to start at.
const LINE_START_WINDOW: usize = 1024;

/// Terminal queries a terminal answers with input (cursor position and status reports,
/// device attributes). They are left out of the scrollback a viewer gets on joining:
/// replayed, each would make the new viewer's terminal type an answer into whatever
/// reads the serial line now (a shell, a login prompt).
const QUERIES: &[&[u8]] = &[
    b"\x1b[6n",
    b"\x1b[?6n",
    b"\x1b[5n",
    b"\x1b[c",
    b"\x1b[0c",
    b"\x1b[>c",
    b"\x1b[>0c",
    b"\x1b[=c",
];

/// `data` without the [`QUERIES`] in it.
fn without_queries(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        let rest = data.get(i..).unwrap_or_default();
        if rest.first() == Some(&0x1b) {
            if let Some(q) = QUERIES.iter().find(|q| rest.starts_with(q)) {
                i += q.len();
                continue;
            }
        }
        out.extend_from_slice(rest.get(..1).unwrap_or_default());
        i += 1;
    }
    out
}

/// Why a viewer could not join a VM's serial console.
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    #[error("looking up the serial port")]
    Backend(#[from] vmm_backend::BackendError),
    #[error("connecting to the serial port")]
    Connect(#[source] std::io::Error),
    #[error("connecting to the serial port timed out")]
    Timeout,
    #[error("the serial port closed at once")]
    Closed,
}

/// The bounds of the serial hubs (from `[limits]`).
#[derive(Debug, Clone, Copy)]
pub struct SerialLimits {
    pub scrollback_bytes: usize,
    pub viewer_queue_bytes: usize,
    pub connect_timeout: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A VM's current hub, if any.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<Hub>>>>;

/// The serial hubs of all VMs.
#[derive(Debug)]
pub struct SerialHubs {
    limits: SerialLimits,
    /// Per VM, the current hub; the async lock makes concurrent first viewers share one
    /// connect.
    slots: Mutex<HashMap<String, Slot>>,
    next_viewer: AtomicU64,
}

impl SerialHubs {
    pub fn new(limits: SerialLimits) -> SerialHubs {
        SerialHubs {
            limits,
            slots: Mutex::new(HashMap::new()),
            next_viewer: AtomicU64::new(1),
        }
    }

    /// Joins the serial console of `vm` at `endpoint` (connecting the hub if it is the
    /// first viewer). A `view_only` viewer's input goes nowhere.
    pub async fn attach(
        &self,
        vm: &str,
        endpoint: &ConsoleEndpoint,
        view_only: bool,
    ) -> Result<SerialViewer, SerialError> {
        let slot = lock(&self.slots).entry(vm.to_owned()).or_default().clone();
        let mut current = slot.lock().await;
        let id = self.next_viewer.fetch_add(1, Ordering::Relaxed);
        if let Some(viewer) = current.as_ref().and_then(|h| h.join(id, view_only)) {
            return Ok(viewer);
        }
        let hub = Hub::connect(endpoint, &self.limits).await?;
        let viewer = hub.join(id, view_only).ok_or(SerialError::Closed)?;
        tracing::debug!(vm, "serial console connected");
        *current = Some(hub);
        Ok(viewer)
    }

    /// Viewers of `vm`'s serial console right now (0 without a hub).
    pub fn viewers(&self, vm: &str) -> usize {
        let slot = lock(&self.slots).get(vm).cloned();
        slot.and_then(|s| {
            s.try_lock()
                .ok()
                .and_then(|h| h.as_ref().map(|h| lock(&h.state).viewers.len()))
        })
        .unwrap_or(0)
    }
}

/// One VM's serial connection and its viewers.
#[derive(Debug)]
struct Hub {
    state: Mutex<HubState>,
    input: mpsc::Sender<Bytes>,
    end: CancellationToken,
    scrollback_cap: usize,
    queue_chunks: usize,
}

#[derive(Debug)]
struct HubState {
    scrollback: VecDeque<u8>,
    /// Output was dropped from the front of the scrollback (or the log tail was partial).
    trimmed: bool,
    viewers: Vec<ViewerSlot>,
    /// The hub has ended (or is ending): no one may join it any more.
    ended: bool,
}

#[derive(Debug)]
struct ViewerSlot {
    id: u64,
    tx: mpsc::Sender<Bytes>,
    /// Output was skipped since the last chunk this viewer got (the marker is owed).
    skipped: bool,
}

impl HubState {
    fn push_scrollback(&mut self, data: &[u8], cap: usize) {
        if data.len() >= cap {
            self.scrollback.clear();
            self.scrollback
                .extend(data.get(data.len() - cap..).unwrap_or_default());
            self.trimmed = true;
            return;
        }
        let over = (self.scrollback.len() + data.len()).saturating_sub(cap);
        if over > 0 {
            self.scrollback.drain(..over);
            self.trimmed = true;
        }
        self.scrollback.extend(data);
    }

    /// The scrollback as a viewer gets it first (without terminal queries).
    fn snapshot(&self) -> Bytes {
        let (a, b) = self.scrollback.as_slices();
        let mut v = Vec::with_capacity(a.len() + b.len());
        v.extend_from_slice(a);
        v.extend_from_slice(b);
        if self.trimmed {
            let window = v.get(..LINE_START_WINDOW.min(v.len())).unwrap_or_default();
            if let Some(i) = window.iter().position(|&c| c == b'\n') {
                v.drain(..=i);
            }
        }
        Bytes::from(without_queries(&v))
    }
}

impl Hub {
    /// Reads the log tail, connects to the serial port and starts the hub's task.
    async fn connect(
        endpoint: &ConsoleEndpoint,
        limits: &SerialLimits,
    ) -> Result<Arc<Hub>, SerialError> {
        let cap = limits.scrollback_bytes.max(1);
        let (seed, partial) = match &endpoint.log {
            Some(p) => read_tail(p, cap).await.unwrap_or_else(|e| {
                tracing::debug!(error = %e, "serial log not readable");
                (Vec::new(), false)
            }),
            None => (Vec::new(), false),
        };
        let stream = tokio::time::timeout(limits.connect_timeout, connect_unix(&endpoint.socket))
            .await
            .map_err(|_| SerialError::Timeout)?
            .map_err(SerialError::Connect)?;
        let (input, input_rx) = mpsc::channel(INPUT_QUEUE_CHUNKS);
        let mut state = HubState {
            scrollback: VecDeque::with_capacity(seed.len()),
            trimmed: partial,
            viewers: Vec::new(),
            ended: false,
        };
        state.push_scrollback(&seed, cap);
        let hub = Arc::new(Hub {
            state: Mutex::new(state),
            input,
            end: CancellationToken::new(),
            scrollback_cap: cap,
            queue_chunks: (limits.viewer_queue_bytes / CHUNK_BYTES).max(2),
        });
        tokio::spawn(hub.clone().run(stream, input_rx));
        Ok(hub)
    }

    /// Relays the serial port until it closes or the last viewer leaves.
    async fn run(
        self: Arc<Self>,
        stream: tokio::net::UnixStream,
        mut input: mpsc::Receiver<Bytes>,
    ) {
        let (mut r, mut w) = stream.into_split();
        let reading = async {
            let mut buf = vec![0u8; CHUNK_BYTES];
            loop {
                match r.read(&mut buf).await {
                    Ok(0) => return "closed",
                    Err(_) => return "read error",
                    Ok(n) => self.publish(buf.get(..n).unwrap_or_default()),
                }
            }
        };
        let writing = async {
            while let Some(b) = input.recv().await {
                if w.write_all(&b).await.is_err() {
                    return "write error";
                }
            }
            "input closed"
        };
        let why = tokio::select! {
            w = reading => w,
            w = writing => w,
            _ = self.end.cancelled() => "no viewers left",
        };
        tracing::debug!(why, "serial console disconnected");
        let mut st = lock(&self.state);
        st.ended = true;
        // Dropping the senders ends every viewer's stream.
        st.viewers.clear();
    }

    /// New output: into the scrollback and every viewer's queue (never waiting).
    fn publish(&self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let mut st = lock(&self.state);
        st.push_scrollback(data, self.scrollback_cap);
        let chunk = Bytes::copy_from_slice(data);
        for v in st.viewers.iter_mut() {
            if v.skipped {
                if v.tx.try_send(Bytes::from_static(SKIP_MARKER)).is_err() {
                    continue;
                }
                v.skipped = false;
            }
            if v.tx.try_send(chunk.clone()).is_err() {
                v.skipped = true;
            }
        }
    }

    /// A new viewer, with the scrollback first; `None` once the hub has ended.
    fn join(self: &Arc<Self>, id: u64, view_only: bool) -> Option<SerialViewer> {
        let mut st = lock(&self.state);
        if st.ended {
            return None;
        }
        let (tx, rx) = mpsc::channel(self.queue_chunks);
        st.viewers.push(ViewerSlot {
            id,
            tx,
            skipped: false,
        });
        Some(SerialViewer {
            hub: self.clone(),
            id,
            pending: st.snapshot(),
            rx,
            input: (!view_only).then(|| PollSender::new(self.input.clone())),
        })
    }

    /// A viewer left; the last one ends the hub.
    fn leave(&self, id: u64) {
        let mut st = lock(&self.state);
        st.viewers.retain(|v| v.id != id);
        if st.viewers.is_empty() && !st.ended {
            st.ended = true;
            self.end.cancel();
        }
    }
}

/// The tail of the serial log (at most `cap` bytes), and whether it starts mid-file.
async fn read_tail(path: &Path, cap: usize) -> std::io::Result<(Vec<u8>, bool)> {
    let mut f = tokio::fs::File::open(path).await?;
    let len = f.metadata().await?.len();
    let cap64 = u64::try_from(cap).unwrap_or(u64::MAX);
    let start = len.saturating_sub(cap64);
    f.seek(SeekFrom::Start(start)).await?;
    let mut v = Vec::new();
    f.take(cap64).read_to_end(&mut v).await?;
    Ok((v, start > 0))
}

/// QEMU listens with a backlog of one, and a full unix backlog refuses at once
/// (`EAGAIN`): retry until the caller's timeout.
async fn connect_unix(path: &Path) -> std::io::Result<tokio::net::UnixStream> {
    loop {
        match tokio::net::UnixStream::connect(path).await {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => return other,
        }
    }
}

/// One viewer's side of a serial hub, a byte stream like any console connection: reads
/// give the scrollback, then live output (the end of the stream when the hub ends);
/// writes go to the serial port, or nowhere for a view-only viewer. Dropping it leaves
/// the hub.
#[derive(Debug)]
pub struct SerialViewer {
    hub: Arc<Hub>,
    id: u64,
    pending: Bytes,
    rx: mpsc::Receiver<Bytes>,
    input: Option<PollSender<Bytes>>,
}

impl Drop for SerialViewer {
    fn drop(&mut self) {
        self.hub.leave(self.id);
    }
}

impl AsyncRead for SerialViewer {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.pending.is_empty() {
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(b)) => this.pending = b,
                // The hub ended: end of stream.
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = buf.remaining().min(this.pending.len());
        buf.put_slice(&this.pending.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SerialViewer {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let Some(tx) = self.input.as_mut() else {
            // View-only: dropped by the gateway.
            return Poll::Ready(Ok(buf.len()));
        };
        let broken = || std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        match tx.poll_reserve(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(_)) => Poll::Ready(Err(broken())),
            Poll::Ready(Ok(())) => {
                let n = buf.len().min(CHUNK_BYTES);
                let chunk = Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
                match tx.send_item(chunk) {
                    Ok(()) => Poll::Ready(Ok(n)),
                    Err(_) => Poll::Ready(Err(broken())),
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    struct Port {
        _dir: tempfile::TempDir,
        listener: UnixListener,
        endpoint: ConsoleEndpoint,
    }

    fn port(log: Option<&[u8]>) -> Port {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("serial.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let log = log.map(|l| {
            let p = dir.path().join("serial.log");
            std::fs::write(&p, l).unwrap();
            p
        });
        Port {
            endpoint: ConsoleEndpoint {
                kind: vmm_backend::ConsoleKind::Serial,
                socket,
                log,
            },
            listener,
            _dir: dir,
        }
    }

    fn hubs(scrollback: usize, queue: usize) -> SerialHubs {
        SerialHubs::new(SerialLimits {
            scrollback_bytes: scrollback,
            viewer_queue_bytes: queue,
            connect_timeout: Duration::from_secs(5),
        })
    }

    async fn read_until(v: &mut SerialViewer, want: &[u8]) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        tokio::time::timeout(Duration::from_secs(5), async {
            while !got.windows(want.len()).any(|w| w == want) {
                let n = v.read(&mut buf).await.unwrap();
                assert!(n > 0, "stream ended; got {got:?}");
                got.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{want:?} not seen; got {got:?}"));
        got
    }

    #[tokio::test]
    async fn viewers_share_one_connection_with_scrollback_and_merged_input() {
        let p = port(Some(b"old line\r\nlogin: "));
        let h = hubs(1024, 64 * 1024);
        let mut a = h.attach("vm", &p.endpoint, false).await.unwrap();
        let (mut guest, _) = p.listener.accept().await.unwrap();
        assert_eq!(read_until(&mut a, b"login: ").await, b"old line\r\nlogin: ");
        guest.write_all(b"hello\r\n").await.unwrap();
        read_until(&mut a, b"hello\r\n").await;
        // A second viewer: the same connection, the scrollback (log tail + live) first.
        let mut b = h.attach("vm", &p.endpoint, true).await.unwrap();
        assert_eq!(h.viewers("vm"), 2);
        assert_eq!(
            read_until(&mut b, b"hello\r\n").await,
            b"old line\r\nlogin: hello\r\n"
        );
        guest.write_all(b"both").await.unwrap();
        read_until(&mut a, b"both").await;
        read_until(&mut b, b"both").await;
        // Input: the view-only viewer's is dropped, the other's arrives.
        b.write_all(b"from-b").await.unwrap();
        a.write_all(b"from-a").await.unwrap();
        let mut got = [0u8; 6];
        guest.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"from-a");
        // The last viewer leaving closes the connection.
        drop(a);
        drop(b);
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), guest.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 0, "view-only input reached the port");
        // The next viewer connects anew.
        let _c = h.attach("vm", &p.endpoint, false).await.unwrap();
        let _ = p.listener.accept().await.unwrap();
    }

    #[tokio::test]
    async fn the_port_closing_ends_every_viewer() {
        let p = port(None);
        let h = hubs(1024, 64 * 1024);
        let mut a = h.attach("vm", &p.endpoint, false).await.unwrap();
        let (guest, _) = p.listener.accept().await.unwrap();
        drop(guest);
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), a.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn a_slow_viewer_skips_with_a_marker_and_stalls_no_one() {
        let p = port(None);
        let h = hubs(1024, 2 * CHUNK_BYTES);
        let mut fast = h.attach("vm", &p.endpoint, false).await.unwrap();
        let mut slow = h.attach("vm", &p.endpoint, false).await.unwrap();
        let (mut guest, _) = p.listener.accept().await.unwrap();
        // Far more than the slow viewer's queue, while it reads nothing; the fast one
        // reads each piece before the next is written, and gets every byte.
        let line = [b'x'; 1000];
        let mut buf = vec![0u8; 64 * 1024];
        for _ in 0..50 {
            guest.write_all(&line).await.unwrap();
            let mut got = 0usize;
            while got < line.len() {
                let n = tokio::time::timeout(Duration::from_secs(5), fast.read(&mut buf))
                    .await
                    .expect("the fast viewer was stalled")
                    .unwrap();
                assert!(n > 0);
                assert!(buf[..n].iter().all(|&c| c == b'x'));
                got += n;
            }
            assert_eq!(got, line.len());
        }
        guest.write_all(b"after").await.unwrap();
        let got = read_until(&mut slow, b"after").await;
        let has_marker = got.windows(SKIP_MARKER.len()).any(|w| w == SKIP_MARKER);
        assert!(has_marker, "no skip marker");
        assert!(got.len() < 50 * 1000, "the slow viewer got everything");
    }

    #[test]
    fn replayed_scrollback_asks_the_terminal_nothing() {
        let mut st = HubState {
            scrollback: VecDeque::new(),
            trimmed: false,
            viewers: Vec::new(),
            ended: false,
        };
        st.push_scrollback(b"vm:~# \x1b[6nls\r\nx\x1b[cy\x1b[1mz\x1b", 1024);
        assert_eq!(&st.snapshot()[..], b"vm:~# ls\r\nxy\x1b[1mz\x1b");
    }

    #[test]
    fn a_trimmed_scrollback_starts_at_a_line() {
        let mut st = HubState {
            scrollback: VecDeque::new(),
            trimmed: false,
            viewers: Vec::new(),
            ended: false,
        };
        st.push_scrollback(b"first line\nsecond\n", 64);
        assert_eq!(&st.snapshot()[..], b"first line\nsecond\n");
        st.push_scrollback(b"0123456789012345678901234567890123456789012345678901", 64);
        assert!(st.trimmed);
        assert_eq!(st.scrollback.len(), 64);
        assert!(st.snapshot().starts_with(b"second\n"));
    }
}
