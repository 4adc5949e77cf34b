//! The measurements. Each is bounded in time and in the number of connections.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::backend::{MODE_ECHO, MODE_SOURCE};
use crate::client::{Relay, Wss};
use crate::procinfo::{self, Mem};

const MIB: f64 = 1024.0 * 1024.0;

/// The client's WebSocket settings for bulk reads (tungstenite's defaults).
pub fn bulk_cfg() -> WebSocketConfig {
    WebSocketConfig::default()
}

/// Small buffers for idle sessions, so the client side stays small.
pub fn idle_cfg() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096)
}

/// Keeps the first error of a test, counts the others.
#[derive(Debug, Default)]
pub struct Errors {
    pub count: u64,
    pub first: Option<String>,
}

impl Errors {
    pub fn add(&mut self, e: &anyhow::Error) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(format!("{e:#}"));
        }
    }
}

#[derive(Debug, Default)]
pub struct Throughput {
    pub mib_s: f64,
    pub sessions: usize,
    pub errors: Errors,
    pub min_session_mib_s: f64,
    pub max_session_mib_s: f64,
    /// CPU used by the relay (whole tree) during the window, in % of one core.
    pub relay_cpu_pct: f64,
    /// CPU used by this process (client and backend) during the window.
    pub client_cpu_pct: f64,
}

/// (a) `n` sessions each read a backend stream for `window` after `warmup`.
pub async fn throughput(
    relay: &Relay,
    n: usize,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<Throughput> {
    let counters: Vec<Arc<AtomicU64>> = (0..n).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<anyhow::Result<()>>(n);
    let mut tasks = JoinSet::new();
    for c in &counters {
        let (relay, c, ready) = (relay.clone(), c.clone(), ready_tx.clone());
        tasks.spawn(async move {
            let mut ws = match relay.open(bulk_cfg()).await {
                Ok(ws) => ws,
                Err(e) => {
                    let _ = ready.send(Err(e)).await;
                    return;
                }
            };
            if let Err(e) = ws.send(Message::Binary(vec![MODE_SOURCE].into())).await {
                let _ = ready.send(Err(e.into())).await;
                return;
            }
            let _ = ready.send(Ok(())).await;
            while let Some(Ok(m)) = ws.next().await {
                if let Message::Binary(b) = m {
                    c.fetch_add(b.len() as u64, Ordering::Relaxed);
                }
            }
        });
    }
    drop(ready_tx);
    let mut t = Throughput::default();
    // Every task reports once (and keeps its sender while it reads).
    for _ in 0..n {
        let Some(r) = ready_rx.recv().await else {
            break;
        };
        match r {
            Ok(()) => t.sessions += 1,
            Err(e) => t.errors.add(&e),
        }
    }
    if t.sessions == 0 {
        tasks.abort_all();
        bail!("no session opened: {}", t.errors.first.unwrap_or_default());
    }
    tokio::time::sleep(warmup).await;
    let me = std::process::id();
    let snap = || -> Vec<u64> { counters.iter().map(|c| c.load(Ordering::Relaxed)).collect() };
    let (b0, r0, c0, t0) = (
        snap(),
        procinfo::tree_cpu_secs(relay.pid),
        procinfo::proc_cpu_secs(me),
        Instant::now(),
    );
    tokio::time::sleep(window).await;
    let (b1, r1, c1, secs) = (
        snap(),
        procinfo::tree_cpu_secs(relay.pid),
        procinfo::proc_cpu_secs(me),
        t0.elapsed().as_secs_f64(),
    );
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    let per: Vec<f64> = b0
        .iter()
        .zip(&b1)
        .map(|(a, b)| (b - a) as f64 / MIB / secs)
        .collect();
    let active: Vec<f64> = per.iter().copied().filter(|v| *v > 0.0).collect();
    t.mib_s = per.iter().sum();
    t.min_session_mib_s = if active.len() < t.sessions {
        0.0
    } else {
        active.iter().copied().fold(f64::INFINITY, f64::min)
    };
    t.max_session_mib_s = per.iter().copied().fold(0.0, f64::max);
    t.relay_cpu_pct = (r1 - r0) / secs * 100.0;
    t.client_cpu_pct = (c1 - c0) / secs * 100.0;
    Ok(t)
}

#[derive(Debug, Default)]
pub struct Rate {
    pub per_sec: f64,
    /// CPU used by the relay during the window, % of one core (exited processes, such as
    /// websockify's finished sessions, are not counted).
    pub relay_cpu_pct: f64,
    pub ok: u64,
    pub errors: Errors,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateMode {
    /// A new visitor: (exchange for the gateway) + TLS + WebSocket upgrade.
    Full,
    /// The gateway's WebSocket only, reusing one cookie (a reconnect).
    WsOnly,
    /// A plain relay doing a full path's two TLS connections without the exchange: a
    /// handshake, then the WebSocket resuming it ([`Relay::two_connections`]).
    TwoConnections,
}

/// (b) `workers` loops opening sessions back to back for `window`; each session is
/// dropped as soon as the upgrade answered.
pub async fn session_rate(
    relay: &Relay,
    workers: usize,
    window: Duration,
    mode: RateMode,
) -> anyhow::Result<Rate> {
    let grant = match mode {
        RateMode::WsOnly => Some(relay.exchange().await?),
        RateMode::Full | RateMode::TwoConnections => None,
    };
    let deadline = Instant::now() + window;
    let start = Instant::now();
    let cpu0 = procinfo::tree_cpu_secs(relay.pid);
    let mut tasks = JoinSet::new();
    for _ in 0..workers {
        let (relay, grant) = (relay.clone(), grant.clone());
        tasks.spawn(async move {
            let (mut ok, mut errs) = (0u64, Errors::default());
            while Instant::now() < deadline {
                let r = match (&grant, mode) {
                    (Some(g), _) => relay.ws(Some(g), idle_cfg()).await,
                    (None, RateMode::TwoConnections) => relay.two_connections(idle_cfg()).await,
                    (None, _) => relay.open(idle_cfg()).await,
                };
                match r {
                    Ok(ws) => {
                        ok += 1;
                        drop(ws);
                    }
                    Err(e) => {
                        errs.add(&e);
                        // Do not spin on a refusing relay.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (ok, errs)
        });
    }
    let mut rate = Rate::default();
    while let Some(r) = tasks.join_next().await {
        let (ok, e) = r.map_err(|e| anyhow!("worker: {e}"))?;
        rate.ok += ok;
        rate.errors.count += e.count;
        if rate.errors.first.is_none() {
            rate.errors.first = e.first;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    rate.per_sec = rate.ok as f64 / secs;
    rate.relay_cpu_pct = (procinfo::tree_cpu_secs(relay.pid) - cpu0) / secs * 100.0;
    Ok(rate)
}

#[derive(Debug, Default)]
pub struct Idle {
    pub wanted: usize,
    pub held: usize,
    /// Of `held`, still echoing end to end right after the memory was read.
    pub alive: usize,
    pub errors: Errors,
    pub before: Mem,
    pub during: Mem,
    pub after_close: Mem,
    pub open_secs: f64,
    pub stopped_early: Option<String>,
}

impl Idle {
    /// PSS growth per session still open when measured, KiB.
    pub fn pss_per_session_kib(&self) -> f64 {
        if self.alive == 0 {
            return 0.0;
        }
        (self.during.pss_kib as f64 - self.before.pss_kib as f64) / self.alive as f64
    }
    pub fn rss_per_session_kib(&self) -> f64 {
        if self.alive == 0 {
            return 0.0;
        }
        (self.during.rss_kib as f64 - self.before.rss_kib as f64) / self.alive as f64
    }
}

/// How long after closing the idle sessions the relay's memory is read again.
pub const AFTER_CLOSE: Duration = Duration::from_secs(10);

/// (c) Opens up to `n` idle sessions (`workers` at a time), reads the relay's memory,
/// closes them and reads it again. Stops early after many failures in a row or when
/// the machine runs low on memory.
pub async fn idle_memory(relay: &Relay, n: usize, workers: usize) -> anyhow::Result<Idle> {
    const MIN_AVAILABLE_KIB: u64 = 1024 * 1024;
    const MAX_FAILURES_IN_A_ROW: u64 = 50;
    let mut idle = Idle {
        wanted: n,
        ..Idle::default()
    };
    // Warm up lazily initialised state with a few sessions first.
    for _ in 0..8 {
        if let Ok(mut ws) = relay.open(idle_cfg()).await {
            let _ = ws.close(None).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    idle.before = procinfo::tree_mem(relay.pid);
    let start = Instant::now();
    let mut held: Vec<Wss> = Vec::with_capacity(n);
    let mut in_a_row = 0u64;
    let mut tasks = JoinSet::new();
    let mut launched = 0usize;
    loop {
        while launched < n && tasks.len() < workers && idle.stopped_early.is_none() {
            let r = relay.clone();
            tasks.spawn(async move {
                // Echo mode, so that liveness can be checked end to end later.
                let mut ws = r.open(idle_cfg()).await?;
                ws.send(Message::Binary(vec![MODE_ECHO].into())).await?;
                Ok::<_, anyhow::Error>(ws)
            });
            launched += 1;
        }
        let Some(res) = tasks.join_next().await else {
            break;
        };
        match res.map_err(|e| anyhow!("task: {e}")).and_then(|r| r) {
            Ok(ws) => {
                held.push(ws);
                in_a_row = 0;
            }
            Err(e) => {
                idle.errors.add(&e);
                in_a_row += 1;
                if in_a_row >= MAX_FAILURES_IN_A_ROW && idle.stopped_early.is_none() {
                    idle.stopped_early = Some(format!("{in_a_row} failures in a row"));
                }
            }
        }
        if idle.stopped_early.is_none() && procinfo::mem_available_kib() < MIN_AVAILABLE_KIB {
            idle.stopped_early = Some("MemAvailable below 1 GiB".into());
        }
    }
    idle.open_secs = start.elapsed().as_secs_f64();
    idle.held = held.len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    idle.during = procinfo::tree_mem(relay.pid);
    // Count the sessions that still work end to end: one byte through each to the echo
    // backend and back (a relay process that died may leave the socket open, held by a
    // sibling that inherited it: websockify does).
    idle.alive = futures_util::future::join_all(held.iter_mut().map(echoes))
        .await
        .into_iter()
        .filter(|ok| *ok)
        .count();
    drop(held);
    tokio::time::sleep(AFTER_CLOSE).await;
    idle.after_close = procinfo::tree_mem(relay.pid);
    Ok(idle)
}

/// Whether one byte sent on an echo session comes back within 5 s.
async fn echoes(ws: &mut Wss) -> bool {
    let probe = async {
        ws.send(Message::Binary(vec![b'?'].into())).await.ok()?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) if !b.is_empty() => return Some(()),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                Some(Ok(_)) => {}
            }
        }
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), probe).await,
        Ok(Some(()))
    )
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
}

pub fn percentiles(mut v: Vec<f64>) -> Latency {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    Latency {
        p50_us: at(0.50),
        p99_us: at(0.99),
    }
}

const PING_BYTES: usize = 64;
const LATENCY_WARMUP: usize = 200;

/// Puts a session's backend into echo mode.
pub async fn echo_mode(ws: &mut Wss) -> anyhow::Result<()> {
    ws.send(Message::Binary(vec![MODE_ECHO].into())).await?;
    Ok(())
}

/// One round trip of a 64-byte message on an echo session, in µs.
pub async fn round_trip(ws: &mut Wss) -> anyhow::Result<f64> {
    let msg = vec![0xa5u8; PING_BYTES];
    let t = Instant::now();
    ws.send(Message::Binary(msg.into())).await?;
    let mut got = 0;
    while got < PING_BYTES {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => got += b.len(),
            Ok(Some(Ok(_))) => {}
            Ok(other) => bail!("echo session ended: {other:?}"),
            Err(_) => bail!("no echo within 5 s"),
        }
    }
    Ok(t.elapsed().as_secs_f64() * 1e6)
}

/// (d) Round trips of a 64-byte message through a relay to the echo backend.
pub async fn ws_latency(relay: &Relay, samples: usize) -> anyhow::Result<Latency> {
    let mut ws = relay.open(bulk_cfg()).await?;
    echo_mode(&mut ws).await?;
    let mut out = Vec::with_capacity(samples);
    for i in 0..LATENCY_WARMUP + samples {
        let t = round_trip(&mut ws).await?;
        if i >= LATENCY_WARMUP {
            out.push(t);
        }
    }
    let _ = ws.close(None).await;
    Ok(percentiles(out))
}

/// The same round trip over plain TCP to `addr` (the bare forwarder, or the backend).
pub async fn tcp_latency(addr: SocketAddr, samples: usize) -> anyhow::Result<Latency> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(&[MODE_ECHO]).await?;
    let msg = vec![0xa5u8; PING_BYTES];
    let mut buf = vec![0u8; PING_BYTES];
    let mut out = Vec::with_capacity(samples);
    for i in 0..LATENCY_WARMUP + samples {
        let t = Instant::now();
        s.write_all(&msg).await?;
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .map_err(|_| anyhow!("no echo within 5 s"))??;
        if i >= LATENCY_WARMUP {
            out.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    Ok(percentiles(out))
}
