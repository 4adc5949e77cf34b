//! Churn: many short open/close cycles against the gateway, then a check that its open
//! descriptors, threads and memory are back where they started.
//!
//! Phases, each `cycles` long (`workers` at a time, stopped by a time cap):
//! - visitor: exchange (own TLS connection) → WebSocket → one echo → close handshake;
//! - admin: one request per connection to the admin listener (reads, a 401, and a link
//!   created then revoked);
//! - refused (cap): connections refused by `max_connections_per_ip`, while `cap` visitor
//!   sessions hold every slot of 127.0.0.1;
//! - TLS failures: plaintext HTTP to the TLS port, a client that rejects the gateway's
//!   certificate, and a ClientHello cut off mid-record.
//!
//! Each phase: a warm-up of a few hundred cycles, a pause, the baseline, the cycles (with
//! the gateway sampled for peaks), a pause for the gateway to settle, the reading after.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

use crate::backend::MODE_ECHO;
use crate::client::{http_call, Relay, Wss, STEP_TIMEOUT};
use crate::measure::{idle_cfg, Errors};
use crate::procinfo::{self, Usage};
use crate::relays::{admin_call, GatewayAdmin};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Visitor,
    Admin,
    RefusedCap,
    TlsFailure,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Visitor,
        Kind::Admin,
        Kind::RefusedCap,
        Kind::TlsFailure,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Visitor => "visitor sessions (exchange + WS + echo + close)",
            Kind::Admin => "admin API requests (1 per connection)",
            Kind::RefusedCap => "refused by max_connections_per_ip",
            Kind::TlsFailure => "failed TLS handshakes",
        }
    }

    /// The gateway counter each cycle of this kind must raise by one (when there is one).
    fn counter(self) -> Option<&'static str> {
        match self {
            Kind::Visitor => Some("vmgw_link_redemptions_total"),
            Kind::Admin => None,
            Kind::RefusedCap => Some("vmgw_connections_refused_total"),
            Kind::TlsFailure => Some("vmgw_tls_handshake_failures_total"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub cycles: usize,
    pub warmup: usize,
    pub workers: usize,
    pub phase_cap: Duration,
    pub settle: Duration,
    /// The gateway's `max_connections_per_ip` (held open during the refused phase).
    pub cap: usize,
}

/// One phase's outcome.
#[derive(Debug)]
pub struct Phase {
    /// Cycles started, and those that ended as expected.
    pub ran: u64,
    pub ok: u64,
    pub errors: Errors,
    pub secs: f64,
    pub stopped_by_cap: bool,
    pub before: Usage,
    pub peak: Usage,
    pub after: Usage,
    /// (counter, its increase over the phase, warm-up excluded).
    pub counter: Option<(&'static str, f64)>,
    /// `vmgw_sessions` and `vmgw_public_connections` after the settle pause.
    pub live_after: (f64, f64),
}

impl Phase {
    pub fn per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.ran as f64 / self.secs
        } else {
            0.0
        }
    }
}

/// Allowed difference after a phase: descriptors and threads.
pub const FD_SLACK: i64 = 2;
pub const THREAD_SLACK: i64 = 2;

/// Memory counts as back at baseline within 10 % of it or 4 MiB, whichever is larger.
pub fn mem_slack_kib(baseline_kib: u64) -> i64 {
    ((baseline_kib / 10).max(4 * 1024)) as i64
}

impl Phase {
    /// Which of fds, threads, RSS, PSS are not back at baseline.
    pub fn not_back(&self) -> Vec<&'static str> {
        let d = |a: u64, b: u64| a as i64 - b as i64;
        let mut v = Vec::new();
        if d(self.after.fds, self.before.fds).abs() > FD_SLACK {
            v.push("fds");
        }
        if d(self.after.threads, self.before.threads).abs() > THREAD_SLACK {
            v.push("threads");
        }
        if d(self.after.rss_kib, self.before.rss_kib) > mem_slack_kib(self.before.rss_kib) {
            v.push("RSS");
        }
        if d(self.after.pss_kib, self.before.pss_kib) > mem_slack_kib(self.before.pss_kib) {
            v.push("PSS");
        }
        v
    }
}

/// Samples the gateway every 100 ms until dropped; `peak` gives the maxima so far.
struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Usage>,
}

impl Sampler {
    fn start(pid: u32, first: Usage) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let mut peak = first;
            while !s.load(Ordering::Relaxed) {
                if let Ok(u) = procinfo::usage(pid) {
                    peak = peak.max(u);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            peak
        });
        Sampler { stop, task }
    }

    async fn peak(self) -> Usage {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

/// What the cycles of one phase share.
#[derive(Clone)]
struct Ctx {
    relay: Relay,
    admin: GatewayAdmin,
    /// Trusts a certificate that is not the gateway's (for the rejected handshake).
    wrong_trust: TlsConnector,
}

/// The outcome of `run_cycles`.
#[derive(Debug, Default)]
struct Cycles {
    ran: u64,
    ok: u64,
    errors: Errors,
    secs: f64,
    stopped_by_cap: bool,
}

/// Runs `f(i)` for i in 0..n, `workers` at a time, until done or `cap` has passed.
async fn run_cycles<F, Fut>(n: usize, workers: usize, cap: Duration, f: F) -> Cycles
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + cap;
    let mut tasks = JoinSet::new();
    for _ in 0..workers {
        let (next, f) = (next.clone(), f.clone());
        tasks.spawn(async move {
            let mut c = Cycles::default();
            loop {
                if Instant::now() >= deadline {
                    c.stopped_by_cap = true;
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                c.ran += 1;
                // A cycle that hangs would stall its worker: bound it.
                let r = tokio::time::timeout(STEP_TIMEOUT * 3, f(i))
                    .await
                    .unwrap_or_else(|_| Err(anyhow!("cycle timed out")));
                match r {
                    Ok(()) => c.ok += 1,
                    Err(e) => c.errors.add(&e),
                }
            }
            c
        });
    }
    let mut all = Cycles::default();
    while let Some(r) = tasks.join_next().await {
        let Ok(c) = r else { continue };
        all.ran += c.ran;
        all.ok += c.ok;
        all.errors.count += c.errors.count;
        if all.errors.first.is_none() {
            all.errors.first = c.errors.first;
        }
        all.stopped_by_cap |= c.stopped_by_cap;
    }
    all.secs = start.elapsed().as_secs_f64();
    all
}

/// Reads the gateway's `/metrics` and returns `name`'s value.
async fn metric(admin: &GatewayAdmin, name: &str) -> anyhow::Result<f64> {
    let tcp = TcpStream::connect(admin.addr).await?;
    let auth = format!("Authorization: Bearer {}\r\n", admin.token);
    let (status, _, body) = http_call(tcp, "GET", "/metrics", &auth, "").await?;
    if status != 200 {
        bail!("GET /metrics: HTTP {status}");
    }
    let text = String::from_utf8_lossy(&body);
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == name).then(|| v.trim().parse().ok())?
        })
        .ok_or_else(|| anyhow!("no {name} in /metrics"))
}

/// Visitor: a new session, one byte echoed end to end, then a clean close.
async fn visitor_cycle(relay: &Relay) -> anyhow::Result<()> {
    let mut ws = relay.open(idle_cfg()).await?;
    ws.send(Message::Binary(vec![MODE_ECHO, b'?'].into()))
        .await?;
    let echoed = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) if !b.is_empty() => return Ok(()),
                Some(Ok(Message::Close(c))) => bail!("closed by the gateway: {c:?}"),
                Some(Err(e)) => return Err(e.into()),
                None => bail!("connection ended before the echo"),
                Some(Ok(_)) => {}
            }
        }
    };
    tokio::time::timeout(STEP_TIMEOUT, echoed)
        .await
        .map_err(|_| anyhow!("no echo"))??;
    close_ws(ws).await
}

/// Sends a close frame and reads until the gateway's answer and the end of the stream.
async fn close_ws(mut ws: Wss) -> anyhow::Result<()> {
    ws.close(None).await.context("sending close")?;
    let drain = async {
        while let Some(m) = ws.next().await {
            if m.is_err() {
                break;
            }
        }
    };
    tokio::time::timeout(STEP_TIMEOUT, drain)
        .await
        .map_err(|_| anyhow!("no end after the close frame"))
}

/// Admin: one request on its own connection, rotating over a few routes.
async fn admin_cycle(admin: &GatewayAdmin, i: usize) -> anyhow::Result<()> {
    let a = admin.addr;
    let t = admin.token.as_str();
    let get = |path: String| async move {
        let tcp = TcpStream::connect(a).await?;
        let auth = format!("Authorization: Bearer {t}\r\n");
        let (status, _, _) = http_call(tcp, "GET", &path, &auth, "").await?;
        Ok::<_, anyhow::Error>(status)
    };
    let expect = |status: u16, want: u16, what: &str| {
        if status == want {
            Ok(())
        } else {
            Err(anyhow!("{what}: HTTP {status}, expected {want}"))
        }
    };
    match i % 7 {
        0 => expect(get("/healthz".into()).await?, 200, "healthz"),
        1 => expect(get("/metrics".into()).await?, 200, "metrics"),
        2 => expect(get("/api/v1/targets".into()).await?, 200, "targets"),
        3 => expect(get("/api/v1/sessions".into()).await?, 200, "sessions"),
        4 => expect(
            get(format!("/api/v1/links/{}", admin.link_id)).await?,
            200,
            "link",
        ),
        5 => {
            let tcp = TcpStream::connect(a).await?;
            let auth = "Authorization: Bearer not-a-token\r\n";
            let (status, _, _) = http_call(tcp, "GET", "/api/v1/sessions", auth, "").await?;
            expect(status, 401, "wrong token")
        }
        _ => {
            let link = admin_call(
                a,
                t,
                "POST",
                "/api/v1/links",
                serde_json::json!({"vm": "bench", "console": "raw", "ttl_seconds": 600}),
            )
            .await?;
            let id = link["id"]
                .as_str()
                .ok_or_else(|| anyhow!("link without id"))?;
            admin_call(
                a,
                t,
                "DELETE",
                &format!("/api/v1/links/{id}"),
                serde_json::json!({}),
            )
            .await?;
            Ok(())
        }
    }
}

/// Refused: while the cap is held, a TLS handshake must not complete.
async fn refused_cycle(relay: &Relay) -> anyhow::Result<()> {
    match tokio::time::timeout(STEP_TIMEOUT, relay.tls_stream()).await {
        Err(_) => bail!("no answer (neither refused nor served)"),
        Ok(Ok(_)) => bail!("served: the TLS handshake completed despite the cap"),
        Ok(Err(_)) => Ok(()),
    }
}

/// Reads until the gateway closes the connection (or resets it).
async fn until_closed(s: &mut TcpStream) -> anyhow::Result<()> {
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(STEP_TIMEOUT, read)
        .await
        .map_err(|_| anyhow!("the gateway kept the connection open"))
}

/// TLS failure: three ways, in turn.
async fn tls_failure_cycle(ctx: &Ctx, i: usize) -> anyhow::Result<()> {
    let addr = ctx.relay.addr;
    match i % 3 {
        // Plain HTTP to the TLS port.
        0 => {
            let mut s = TcpStream::connect(addr).await?;
            s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .await?;
            until_closed(&mut s).await
        }
        // A client that does not trust the gateway's certificate (sends an alert).
        1 => {
            let tcp = TcpStream::connect(addr).await?;
            let name = ServerName::try_from("localhost")?;
            match ctx.wrong_trust.connect(name, tcp).await {
                Ok(_) => bail!("handshake completed with a certificate the client does not trust"),
                Err(_) => Ok(()),
            }
        }
        // A ClientHello record header announcing 512 bytes, 16 of them sent, then EOF.
        _ => {
            let mut s = TcpStream::connect(addr).await?;
            let mut hello = vec![
                0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
            ];
            hello.extend_from_slice(&[0u8; 11]);
            s.write_all(&hello).await?;
            s.shutdown().await?;
            until_closed(&mut s).await
        }
    }
}

/// Visitor sessions that hold every per-address slot until `release`.
struct Holders {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Holders {
    /// Opens `n` sessions (retrying a few times: a slot is freed just after the client
    /// has seen its connection end), each read in its own task so pings are answered.
    async fn open(relay: &Relay, n: usize) -> anyhow::Result<Holders> {
        let (stop, rx) = tokio::sync::watch::channel(false);
        let mut tasks = JoinSet::new();
        for k in 0..n {
            let mut tries = 0;
            let mut ws = loop {
                match relay.open(idle_cfg()).await {
                    Ok(ws) => break ws,
                    Err(_) if tries < 5 => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => return Err(e.context(format!("holding slot {k} of {n}"))),
                }
            };
            ws.send(Message::Binary(vec![MODE_ECHO].into())).await?;
            let mut rx = rx.clone();
            tasks.spawn(async move {
                loop {
                    tokio::select! {
                        _ = rx.changed() => break,
                        m = ws.next() => if !matches!(m, Some(Ok(_))) { return },
                    }
                }
                let _ = close_ws(ws).await;
            });
        }
        Ok(Holders { stop, tasks })
    }

    async fn release(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Runs one phase: warm-up, settle, baseline, cycles, settle, reading after.
async fn phase(ctx: &Ctx, kind: Kind, p: &Params) -> anyhow::Result<Phase> {
    let pid = ctx.relay.pid;
    let run = |n: usize| {
        let c = ctx.clone();
        run_cycles(n, p.workers, p.phase_cap, move |i| {
            let c = c.clone();
            async move {
                match kind {
                    Kind::Visitor => visitor_cycle(&c.relay).await,
                    Kind::Admin => admin_cycle(&c.admin, i).await,
                    Kind::RefusedCap => refused_cycle(&c.relay).await,
                    Kind::TlsFailure => tls_failure_cycle(&c, i).await,
                }
            }
        })
    };
    // Warm-up (for the refused phase, with the cap held: that is the path being warmed).
    let warm = if kind == Kind::RefusedCap {
        let h = Holders::open(&ctx.relay, p.cap).await?;
        let w = run(p.warmup).await;
        h.release().await;
        w
    } else {
        run(p.warmup).await
    };
    if warm.ok == 0 {
        bail!(
            "warm-up: no cycle ended as expected: {}",
            warm.errors.first.unwrap_or_default()
        );
    }
    tokio::time::sleep(p.settle).await;
    let before = procinfo::usage(pid)?;
    let counter_before = match kind.counter() {
        Some(name) => Some((name, metric(&ctx.admin, name).await?)),
        None => None,
    };
    let sampler = Sampler::start(pid, before);
    let holders = if kind == Kind::RefusedCap {
        Some(Holders::open(&ctx.relay, p.cap).await?)
    } else {
        None
    };
    let c = run(p.cycles).await;
    if let Some(h) = holders {
        h.release().await;
    }
    let peak = sampler.peak().await;
    tokio::time::sleep(p.settle).await;
    let after = procinfo::usage(pid)?;
    let counter = match counter_before {
        Some((name, v0)) => Some((name, metric(&ctx.admin, name).await? - v0)),
        None => None,
    };
    let live_after = (
        metric(&ctx.admin, "vmgw_sessions").await?,
        metric(&ctx.admin, "vmgw_public_connections").await?,
    );
    Ok(Phase {
        ran: c.ran,
        ok: c.ok,
        errors: c.errors,
        secs: c.secs,
        stopped_by_cap: c.stopped_by_cap,
        before,
        peak: peak.max(after),
        after,
        counter,
        live_after,
    })
}

/// All phases, in order; a phase that fails is reported as an error and the rest run.
pub async fn run(
    relay: &Relay,
    admin: &GatewayAdmin,
    p: &Params,
    kinds: &[Kind],
    progress: impl Fn(&str),
) -> anyhow::Result<(Usage, Vec<(Kind, anyhow::Result<Phase>)>, Usage)> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let ctx = Ctx {
        relay: relay.clone(),
        admin: admin.clone(),
        wrong_trust: TlsConnector::from(Arc::new(cfg)),
    };
    tokio::time::sleep(p.settle).await;
    let start = procinfo::usage(relay.pid)?;
    let mut out = Vec::new();
    for &kind in kinds {
        progress(kind.label());
        out.push((kind, phase(&ctx, kind, p).await));
    }
    let end = procinfo::usage(relay.pid)?;
    Ok((start, out, end))
}
