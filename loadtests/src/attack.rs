//! Under attack (issue 12, target 5): a live console's round trip and legitimate
//! visitors' exchanges while the gateway is flooded, against the same quiet.
//!
//! - quiet: no flood;
//! - wrong passwords: one loop per attacking address (127.0.1.1 … 127.0.1.N, each a
//!   client of its own for the gateway's per-address limits), each sending exchanges with
//!   a wrong password on a kept-alive TLS connection, back to back (the gateway under
//!   test runs with `password_failures_before_lockout` out of reach, so every attempt
//!   that gets a hashing slot runs argon2: the worst case, as from an attacker spreading
//!   over many links);
//! - TLS flood: one loop per attacking address opening TCP + TLS handshakes and
//!   dropping them, back to back.
//!
//! The console session and the legitimate visitors (127.0.0.200, the password-less link)
//! each run on a thread of their own with their own runtime, so that the flood's tasks
//! in this process do not queue in front of them.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::Relay;
use crate::measure::{self, Latency};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    Quiet,
    WrongPasswords,
    Tls,
}

impl Flood {
    pub fn label(self) -> &'static str {
        match self {
            Flood::Quiet => "quiet",
            Flood::WrongPasswords => "wrong-password flood",
            Flood::Tls => "TLS connection flood",
        }
    }
}

#[derive(Debug, Default)]
pub struct Phase {
    pub console: Option<Latency>,
    pub console_err: Option<String>,
    pub exchange: Option<Latency>,
    pub exchanges_ok: u64,
    pub exchanges_failed: u64,
    /// Attack requests (or handshakes) completed per second, and how many got 401.
    pub attack_per_sec: f64,
    pub wrong_password_401: u64,
    pub relay_cpu_pct: f64,
}

/// Runs one phase: the flood (if any) for a 1 s ramp, then the console's round trips
/// (`samples`, at least `min_secs`) with legitimate exchanges beside them.
pub async fn phase(
    gw: &Relay,
    pw_link_token: &str,
    flood: Flood,
    addresses: u8,
    samples: usize,
    min_secs: f64,
) -> anyhow::Result<Phase> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let rejected = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    // The attacker's loops run on threads of their own at the lowest CPU priority: they
    // share this core with the console's measuring thread, which stands for a visitor
    // on another machine, so their CPU must not delay it (measured: at equal priority a
    // TLS flood's client handshakes alone put milliseconds into its round trips).
    let attacker = attacker_runtime()?;
    if flood != Flood::Quiet {
        for i in 0..addresses {
            let mut r = gw.clone();
            r.src = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1 + i)));
            let (stop, done, rejected) = (stop.clone(), done.clone(), rejected.clone());
            let token = pw_link_token.to_owned();
            tasks.spawn_on(
                async move {
                    while !stop.load(Ordering::Relaxed) {
                        let r = match flood {
                            Flood::WrongPasswords => {
                                wrong_passwords(&r, &token, &stop, &done, &rejected).await
                            }
                            _ => r.tls_stream().await.map(|s| {
                                drop(s);
                                done.fetch_add(1, Ordering::Relaxed);
                            }),
                        };
                        if r.is_err() {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                },
                attacker.handle(),
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let cpu0 = crate::procinfo::tree_cpu_secs(gw.pid);
    let (done0, t0) = (done.load(Ordering::Relaxed), Instant::now());
    let legit_stop = Arc::new(AtomicBool::new(false));
    let legit = {
        let mut r = gw.clone();
        r.src = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 200)));
        let stop = legit_stop.clone();
        on_own_thread(async move {
            let (mut times, mut failed) = (Vec::new(), 0u64);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match r.exchange().await {
                    Ok(_) => times.push(t.elapsed().as_secs_f64() * 1e6),
                    Err(_) => {
                        failed += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            (times, failed)
        })
    };
    let console = {
        let r = gw.clone();
        on_own_thread(async move {
            let start = Instant::now();
            let mut lat = Vec::new();
            let mut ws = r.open(measure::bulk_cfg()).await?;
            measure::echo_mode(&mut ws).await?;
            // At least `min_secs`; then until `samples` or 3 × `min_secs`, whichever
            // comes first (a flooded console may take milliseconds per round trip).
            loop {
                let t = start.elapsed().as_secs_f64();
                if t >= min_secs && (lat.len() >= samples || t >= 3.0 * min_secs) {
                    break;
                }
                lat.push(measure::round_trip(&mut ws).await?);
            }
            anyhow::Ok(lat)
        })
    };
    let console = console
        .await
        .map_err(|_| anyhow!("console thread"))?
        .map(measure::percentiles);
    legit_stop.store(true, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let attacks = done.load(Ordering::Relaxed) - done0;
    let cpu = (crate::procinfo::tree_cpu_secs(gw.pid) - cpu0) / secs * 100.0;
    stop.store(true, Ordering::Relaxed);
    let (times, failed) = legit.await.map_err(|_| anyhow!("visitor thread"))?;
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    let mut p = Phase {
        exchanges_ok: times.len() as u64,
        exchanges_failed: failed,
        attack_per_sec: attacks as f64 / secs,
        wrong_password_401: rejected.load(Ordering::Relaxed),
        relay_cpu_pct: cpu,
        ..Phase::default()
    };
    match console {
        Ok(l) => p.console = Some(l),
        Err(e) => p.console_err = Some(format!("{e:#}")),
    }
    if !times.is_empty() {
        p.exchange = Some(measure::percentiles(times));
    }
    Ok(p)
}

/// The attacker's runtime: one worker and its blocking threads, each at nice 19 (by
/// `renice`, as this crate has no unsafe code for `setpriority`).
fn attacker_runtime() -> anyhow::Result<Attacker> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("vmgw-attacker")
        .on_thread_start(|| {
            let tid = std::fs::read_to_string("/proc/thread-self/stat")
                .ok()
                .and_then(|s| s.split(' ').next().map(str::to_owned));
            if let Some(tid) = tid {
                let _ = std::process::Command::new("renice")
                    .args(["-n", "19", "-p", &tid])
                    .stdout(std::process::Stdio::null())
                    .status();
            }
        })
        .enable_all()
        .build()?;
    Ok(Attacker(Some(rt)))
}

/// Stops the attacker's runtime without waiting (it is dropped in async code).
struct Attacker(Option<tokio::runtime::Runtime>);

impl Attacker {
    fn handle(&self) -> &tokio::runtime::Handle {
        match &self.0 {
            Some(rt) => rt.handle(),
            None => unreachable!("the runtime is taken only when dropped"),
        }
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Runs `fut` on a new thread with its own single-threaded runtime.
fn on_own_thread<T: Send + 'static>(
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> tokio::sync::oneshot::Receiver<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _ = tx.send(rt.block_on(fut));
    });
    rx
}

/// Wrong-password exchanges on one kept-alive TLS connection until it closes or `stop`.
async fn wrong_passwords(
    r: &Relay,
    token: &str,
    stop: &AtomicBool,
    done: &AtomicU64,
    rejected: &AtomicU64,
) -> anyhow::Result<()> {
    let mut s = r.tls_stream().await?;
    let body = serde_json::json!({ "token": token, "password": "wrong password" }).to_string();
    let req = format!(
        "POST /s/session HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut buf = Vec::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) {
        s.write_all(req.as_bytes()).await?;
        buf.clear();
        // The head, then Content-Length bytes of body.
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let mut chunk = [0u8; 2048];
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                bail!("closed");
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 2048];
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                bail!("closed");
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        done.fetch_add(1, Ordering::Relaxed);
        if head.starts_with("http/1.1 401") {
            rejected.fetch_add(1, Ordering::Relaxed);
        }
        if head.contains("connection: close") {
            return Ok(());
        }
    }
    Ok(())
}
