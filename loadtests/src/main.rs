//! vmgw-load: the gateway's console relay against a minimal reference relay, websocat
//! and websockify, on the same TCP backend, in one run. See README.md for what is measured and how to read it.

mod attack;
mod backend;
mod churn;
mod client;
mod measure;
mod procinfo;
mod recording;
mod refrelay;
mod relays;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::client::Relay;
use crate::measure::{Idle, Latency, Rate, RateMode, Throughput};

#[derive(Debug, Parser)]
#[command(
    name = "vmgw-load",
    about = "Gateway console relay vs. a reference relay, websocat and websockify, one run"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// The gateway binary (built with `cargo build --release -p gateway`).
    #[arg(long, default_value = "../target/release/gateway")]
    gateway: PathBuf,
    /// The websockify script; without it websockify is not measured.
    #[arg(long)]
    websockify: Option<PathBuf>,
    /// The websocat binary (1.14); without it websocat is not measured.
    #[arg(long)]
    websocat: Option<PathBuf>,
    /// Do not run the reference relay.
    #[arg(long)]
    no_reference: bool,
    /// The reference relay's rustls crypto provider(s): one reference relay per value
    /// ("reference" with ring, the gateway's; "reference-aws-lc-rs" with aws-lc-rs).
    #[arg(long, value_delimiter = ',', default_values_t = [refrelay::Provider::Ring])]
    reference_provider: Vec<refrelay::Provider>,
    /// A second gateway binary measured in the same run as "gateway-before" (to compare
    /// a change with the build before it).
    #[arg(long)]
    gateway_before: Option<PathBuf>,
    /// The second gateway's name in the report (e.g. "gateway-aws-lc-rs" for a build
    /// with another crypto provider).
    #[arg(long, default_value = "gateway-before")]
    before_name: String,
    /// Tests to leave out (for quick experiments): idle, latency, throughput, rate, attack.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// Write the Markdown report here (it is printed too).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Core for the relays; this process should run on another (`taskset -c 1`).
    #[arg(long, default_value_t = 0)]
    relay_cpu: usize,
    /// Do not pin the relays.
    #[arg(long)]
    no_pin: bool,
    /// Concurrent sessions for the throughput tests (one test per number).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16, 64])]
    sessions: Vec<usize>,
    #[arg(long, default_value_t = 6)]
    throughput_secs: u64,
    #[arg(long, default_value_t = 5)]
    rate_secs: u64,
    /// Concurrent connecting loops for the session-rate test.
    #[arg(long, default_value_t = 16)]
    rate_workers: usize,
    /// Idle sessions to open for the memory test (2 fds each in the relay, 2 in this
    /// process: client and backend side; the open-file limit is 20,000).
    #[arg(long, default_value_t = 9900)]
    idle: usize,
    /// Idle sessions for websockify (a process of ~5 MiB each, and it fails past ~507).
    #[arg(long, default_value_t = 1000)]
    idle_websockify: usize,
    /// Attacking addresses (127.0.1.1 …) for the under-attack test; 0 skips it.
    #[arg(long, default_value_t = 50)]
    attack_addresses: u8,
    /// Each under-attack phase measures at least this long.
    #[arg(long, default_value_t = 4)]
    attack_secs: u64,
    /// Round trips per latency measurement.
    #[arg(long, default_value_t = 2000)]
    latency_samples: usize,
    /// Keep the relays' data, certificates and logs in this directory (else a temporary one).
    #[arg(long)]
    keep_work: Option<PathBuf>,
    /// Lines for the report's environment section (run.sh passes commit, versions).
    #[arg(long)]
    note: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// A bare TCP forwarder (the latency baseline); prints its port.
    Forward {
        #[arg(long)]
        to: SocketAddr,
    },
    /// The reference relay (tokio-tungstenite + tokio-rustls, see refrelay.rs); prints
    /// its port.
    RefRelay {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
        #[arg(long, default_value_t = refrelay::Provider::Ring)]
        provider: refrelay::Provider,
    },
    /// Open/close cycles (visitor sessions, admin requests, refused connections, failed
    /// TLS handshakes) against the gateway alone: are its fds, threads and memory back
    /// at their baseline afterwards? See README.md, "Churn".
    Churn(ChurnArgs),
    /// The cost of session recording on the relay: throughput and latency through one
    /// gateway, on a link that is not recorded and one that is, alternated. See
    /// README.md, "Recording".
    Recording(recording::RecordingArgs),
}

#[derive(Debug, clap::Args)]
struct ChurnArgs {
    /// The gateway binary (built with `cargo build --release -p gateway`).
    #[arg(long, default_value = "../target/release/gateway")]
    gateway: PathBuf,
    /// Write the Markdown report here (it is printed too).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Core for the gateway; this process should run on another (`taskset -c 1`).
    #[arg(long, default_value_t = 0)]
    relay_cpu: usize,
    /// Do not pin the gateway.
    #[arg(long)]
    no_pin: bool,
    /// Cycles per phase.
    #[arg(long, default_value_t = 10_000)]
    cycles: usize,
    /// Warm-up cycles before each phase's baseline.
    #[arg(long, default_value_t = 300)]
    warmup: usize,
    /// Cycles running at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Each phase stops after this many seconds even if its cycles are not done.
    #[arg(long, default_value_t = 300)]
    phase_secs: u64,
    /// Pause before each reading (tokio's idle blocking threads exit after 10 s).
    #[arg(long, default_value_t = 15)]
    settle_secs: u64,
    /// The gateway's `max_connections_per_ip`, held by that many sessions in the
    /// refused phase (more than 2 × concurrency, so the other phases never reach it).
    #[arg(long, default_value_t = 64)]
    cap: usize,
    /// The phases to run, in this order (default: all).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = churn::Kind::ALL)]
    phases: Vec<churn::Kind>,
    /// Keep the gateway's data, certificate and log in this directory.
    #[arg(long)]
    keep_work: Option<PathBuf>,
    /// Lines for the report's environment section (run.sh passes the commit).
    #[arg(long)]
    note: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Cmd::Forward { to }) = args.cmd {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        return rt.block_on(backend::forward(to));
    }
    if let Some(Cmd::RefRelay {
        to,
        cert,
        key,
        provider,
    }) = &args.cmd
    {
        // Like the gateway: a multi-threaded runtime with one worker per usable core.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return rt.block_on(refrelay::serve(*to, cert, key, *provider));
    }
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    let (report, out) = match &args.cmd {
        Some(Cmd::Churn(c)) => (rt.block_on(run_churn(c))?, c.out.as_ref()),
        Some(Cmd::Recording(r)) => (rt.block_on(recording::run(r))?, r.out.as_ref()),
        _ => (rt.block_on(run(&args))?, args.out.as_ref()),
    };
    println!("{report}");
    if let Some(out) = out {
        std::fs::write(out, &report).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("report written to {}", out.display());
    }
    Ok(())
}

async fn run_churn(a: &ChurnArgs) -> anyhow::Result<String> {
    elapsed();
    let cpu = (!a.no_pin).then_some(a.relay_cpu);
    let backend = backend::spawn().await?;
    let tmp = tempfile::Builder::new().prefix("vmgw-churn").tempdir()?;
    let work = match &a.keep_work {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            std::fs::canonicalize(d)?
        }
        None => tmp.path().to_path_buf(),
    };
    let gateway_bin = std::fs::canonicalize(&a.gateway)
        .with_context(|| format!("gateway binary {}", a.gateway.display()))?;
    let (gw_proc, gw, admin) = relays::start_gateway(&gateway_bin, &work, cpu, backend, a.cap)
        .await
        .context("starting the gateway")?;
    let load_before = procinfo::loadavg();
    eprintln!(
        "[{}] gateway started; load average {load_before}",
        elapsed()
    );
    let p = churn::Params {
        cycles: a.cycles,
        warmup: a.warmup,
        workers: a.concurrency,
        phase_cap: Duration::from_secs(a.phase_secs),
        settle: Duration::from_secs(a.settle_secs),
        cap: a.cap,
    };
    let res = churn::run(&gw, &admin, &p, &a.phases, |what| {
        eprintln!(
            "[{}] churn: {what} (load {})",
            elapsed(),
            procinfo::loadavg()
        );
    })
    .await;
    let load_after = procinfo::loadavg();
    gw_proc.stop().await;
    let (start, phases, end) = res?;
    let mut s = String::new();
    let _ = writeln!(s, "# vmgw-load churn\n\n## Environment\n");
    for n in &a.note {
        let _ = writeln!(s, "- {n}");
    }
    let _ = writeln!(s, "- {}", machine());
    let _ = writeln!(
        s,
        "- Load average (1, 5, 15 min) before: {load_before}; after: {load_after}"
    );
    let _ = writeln!(
        s,
        "- Pinning: {}; the load generator and the TCP backend on the other core (run.sh: `taskset -c 1`)",
        match cpu {
            Some(c) => format!("gateway on CPU {c}"),
            None => "none".into(),
        }
    );
    let _ = writeln!(
        s,
        "- Parameters: {} cycles per phase ({} warm-up cycles before each baseline), {} at a time, \
         phase cap {} s, readings {} s after each phase; gateway `max_connections_per_ip = {}`, \
         `exchanges_per_ip_per_minute = 1000000`, other limits default",
        a.cycles, a.warmup, a.concurrency, a.phase_secs, a.settle_secs, a.cap
    );
    let _ = writeln!(
        s,
        "- Back at baseline: fds within ±{}, threads within ±{}, RSS and PSS at most \
         max(10 %, 4 MiB) above",
        churn::FD_SLACK,
        churn::THREAD_SLACK
    );
    let _ = writeln!(
        s,
        "\n## Results\n\nEach cell: before → after (Δ), peak during the phase. Memory in MiB.\n\n\
         | phase | cycles | failed | cycles/s | fds | threads | RSS | PSS | back at baseline |\n\
         |---|---|---|---|---|---|---|---|---|"
    );
    let mib = |k: u64| k as f64 / 1024.0;
    for (kind, r) in &phases {
        match r {
            Ok(ph) => {
                let (b, x, pk) = (ph.before, ph.after, ph.peak);
                let not = ph.not_back();
                let _ = writeln!(
                    s,
                    "| {} | {}{} | {} | {:.0} | {} → {} ({:+}), {} | {} → {} ({:+}), {} | {:.1} → {:.1} ({:+.1}), {:.1} | {:.1} → {:.1} ({:+.1}), {:.1} | {} |",
                    kind.label(),
                    ph.ran,
                    if ph.stopped_by_cap { " (time cap)" } else { "" },
                    ph.ran - ph.ok,
                    ph.per_sec(),
                    b.fds, x.fds, x.fds as i64 - b.fds as i64, pk.fds,
                    b.threads, x.threads, x.threads as i64 - b.threads as i64, pk.threads,
                    mib(b.rss_kib), mib(x.rss_kib), mib(x.rss_kib) - mib(b.rss_kib), mib(pk.rss_kib),
                    mib(b.pss_kib), mib(x.pss_kib), mib(x.pss_kib) - mib(b.pss_kib), mib(pk.pss_kib),
                    if not.is_empty() { "yes".to_owned() } else { format!("**no**: {}", not.join(", ")) },
                );
            }
            Err(e) => {
                let _ = writeln!(s, "| {} | {} | | | | | | | |", kind.label(), fmt_err(e));
            }
        }
    }
    let _ = writeln!(
        s,
        "\nWhole run (first baseline → last reading): fds {} → {}, threads {} → {}, RSS {:.1} → {:.1} MiB, PSS {:.1} → {:.1} MiB.\n\n## Details\n",
        start.fds, end.fds, start.threads, end.threads,
        mib(start.rss_kib), mib(end.rss_kib), mib(start.pss_kib), mib(end.pss_kib)
    );
    for (kind, r) in &phases {
        let Ok(ph) = r else { continue };
        let _ = write!(
            s,
            "- {}: {} cycles in {:.1} s, {} ended as expected",
            kind.label(),
            ph.ran,
            ph.secs,
            ph.ok
        );
        if let Some((name, d)) = ph.counter {
            let _ = write!(s, "; gateway `{name}` +{d:.0}");
        }
        let _ = writeln!(
            s,
            "; after: `vmgw_sessions` {:.0}, `vmgw_public_connections` {:.0}; memory per cycle (PSS Δ / cycles) {:.0} bytes",
            ph.live_after.0,
            ph.live_after.1,
            if ph.ran > 0 { (ph.after.pss_kib as f64 - ph.before.pss_kib as f64) * 1024.0 / ph.ran as f64 } else { 0.0 }
        );
        if let Some(e) = &ph.errors.first {
            let _ = writeln!(s, "  - first failure: `{}`", e.replace('`', "'"));
        }
    }
    Ok(s)
}

fn machine() -> String {
    let os = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| t.lines().next().map(str::to_owned))
        .unwrap_or_default();
    format!(
        "Linux {}, {} CPUs online, {}",
        os.trim(),
        std::fs::read_to_string("/sys/devices/system/cpu/online")
            .unwrap_or_default()
            .trim(),
        mem.split_whitespace().collect::<Vec<_>>().join(" ")
    )
}

/// Results of one relay.
#[derive(Debug, Default)]
struct Results {
    idle: Option<anyhow::Result<Idle>>,
    latency: Option<anyhow::Result<Latency>>,
    /// By number of sessions.
    throughput: Vec<(usize, anyhow::Result<Throughput>)>,
    rate: Option<anyhow::Result<Rate>>,
    rate_ws_only: Option<anyhow::Result<Rate>>,
    /// The reference relay only: a full path's two TLS connections without the exchange.
    rate_two: Option<anyhow::Result<Rate>>,
}

impl Results {
    fn tp(&self, n: usize) -> Option<&Throughput> {
        self.throughput
            .iter()
            .find(|(k, _)| *k == n)
            .and_then(|(_, r)| r.as_ref().ok())
    }
}

fn progress(what: &str, relay: &Relay) {
    eprintln!(
        "[{}] {what}: {} (load {})",
        elapsed(),
        relay.name,
        procinfo::loadavg()
    );
}

static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
fn elapsed() -> String {
    format!(
        "{:6.1}s",
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_secs_f64()
    )
}

async fn settle() {
    tokio::time::sleep(Duration::from_secs(2)).await;
}

async fn run(args: &Args) -> anyhow::Result<String> {
    elapsed();
    let cpu = (!args.no_pin).then_some(args.relay_cpu);
    let backend = backend::spawn().await?;
    let tmp = tempfile::Builder::new().prefix("vmgw-load").tempdir()?;
    let work = match &args.keep_work {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            std::fs::canonicalize(d)?
        }
        None => tmp.path().to_path_buf(),
    };
    let gateway_bin = std::fs::canonicalize(&args.gateway)
        .with_context(|| format!("gateway binary {}", args.gateway.display()))?;
    let (gw_proc, gw, gw_admin) = relays::start_gateway(&gateway_bin, &work, cpu, backend, 20_000)
        .await
        .context("starting the gateway")?;
    let mut procs = vec![gw_proc];
    let mut relays = vec![gw];
    if let Some(bin) = &args.gateway_before {
        let bin = std::fs::canonicalize(bin)?;
        let dir = work.join("before");
        std::fs::create_dir_all(&dir)?;
        let (p, mut r, _) = relays::start_gateway(&bin, &dir, cpu, backend, 20_000)
            .await
            .context("starting the gateway (before)")?;
        // One name for the whole run: leaking it once is what a `&'static str` costs.
        r.name = Box::leak(args.before_name.clone().into_boxed_str());
        procs.push(p);
        relays.push(r);
    }
    for provider in args
        .reference_provider
        .iter()
        .filter(|_| !args.no_reference)
    {
        let (p, r) = relays::start_reference(&work, cpu, backend, *provider)
            .await
            .context("starting the reference relay")?;
        procs.push(p);
        relays.push(r);
    }
    if let Some(bin) = &args.websocat {
        let (p, r) = relays::start_websocat(bin, &work, cpu, backend)
            .await
            .context("starting websocat")?;
        procs.push(p);
        relays.push(r);
    }
    if let Some(ws) = &args.websockify {
        let (p, r) = relays::start_websockify(ws, &work, cpu, backend)
            .await
            .context("starting websockify")?;
        procs.push(p);
        relays.push(r);
    }
    let (forwarder, fwd_addr) = relays::start_forwarder(cpu, backend).await?;
    let load_before = procinfo::loadavg();
    eprintln!("[{}] started; load average {load_before}", elapsed());

    let mut results: Vec<Results> = relays.iter().map(|_| Results::default()).collect();
    // Each test runs on every relay back to back, so drift in machine load hits all.
    // Idle memory first, on fresh processes (before bulk traffic grows their heaps).
    let run = |t: &str| !args.skip.iter().any(|s| s == t);
    for (r, res) in relays.iter().zip(results.iter_mut()) {
        if !run("idle") {
            break;
        }
        progress("idle sessions", r);
        let n = if r.name == "websockify" {
            args.idle.min(args.idle_websockify)
        } else {
            args.idle
        };
        res.idle = Some(measure::idle_memory(r, n, 16).await);
        settle().await;
    }
    for (r, res) in relays.iter().zip(results.iter_mut()) {
        if !run("latency") {
            break;
        }
        progress("latency", r);
        res.latency = Some(measure::ws_latency(r, args.latency_samples).await);
    }
    eprintln!("[{}] latency: bare forwarder and backend", elapsed());
    let fwd_latency = measure::tcp_latency(fwd_addr, args.latency_samples).await;
    let direct_latency = measure::tcp_latency(backend, args.latency_samples).await;
    for &n in &args.sessions {
        if !run("throughput") {
            break;
        }
        for (r, res) in relays.iter().zip(results.iter_mut()) {
            progress(&format!("throughput, {n} sessions"), r);
            let t = measure::throughput(
                r,
                n,
                Duration::from_secs(1),
                Duration::from_secs(args.throughput_secs),
            )
            .await;
            res.throughput.push((n, t));
            settle().await;
        }
    }
    for (r, res) in relays.iter().zip(results.iter_mut()) {
        if !run("rate") {
            break;
        }
        progress("session rate", r);
        let window = Duration::from_secs(args.rate_secs);
        res.rate = Some(measure::session_rate(r, args.rate_workers, window, RateMode::Full).await);
        settle().await;
        if matches!(r.kind, client::RelayKind::Gateway { .. }) {
            progress("session rate, WebSocket only", r);
            res.rate_ws_only =
                Some(measure::session_rate(r, args.rate_workers, window, RateMode::WsOnly).await);
            settle().await;
        }
        if r.name == "reference" {
            progress("session rate, two connections", r);
            res.rate_two = Some(
                measure::session_rate(r, args.rate_workers, window, RateMode::TwoConnections).await,
            );
            settle().await;
        }
    }
    let mut attack = Vec::new();
    if args.attack_addresses > 0 && run("attack") {
        for flood in [
            attack::Flood::Quiet,
            attack::Flood::WrongPasswords,
            attack::Flood::Tls,
        ] {
            progress(&format!("under attack: {}", flood.label()), &relays[0]);
            let p = attack::phase(
                &relays[0],
                &gw_admin.pw_link_token,
                flood,
                args.attack_addresses,
                args.latency_samples,
                args.attack_secs as f64,
            )
            .await;
            attack.push((flood, p));
            settle().await;
        }
    }
    let load_after = procinfo::loadavg();
    for p in procs {
        p.stop().await;
    }
    drop(forwarder);
    let ctx = Context_ {
        args,
        cpu,
        load_before,
        load_after,
        fwd_latency,
        direct_latency,
        attack,
    };
    Ok(report(&ctx, &relays, &results))
}

struct Context_<'a> {
    args: &'a Args,
    cpu: Option<usize>,
    load_before: String,
    load_after: String,
    fwd_latency: anyhow::Result<Latency>,
    direct_latency: anyhow::Result<Latency>,
    attack: Vec<(attack::Flood, anyhow::Result<attack::Phase>)>,
}

fn fmt_err(e: &anyhow::Error) -> String {
    format!("error: {e:#}").replace('|', "/").replace('\n', " ")
}

fn f0(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.0}"))
}

fn f2(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.2}"))
}

fn div(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// "yes"/"**no**" for a ratio against a goal.
fn met(v: Option<f64>, at_least: Option<f64>, at_most: Option<f64>) -> &'static str {
    match v {
        None => "–",
        Some(v) if at_least.is_some_and(|g| v < g) || at_most.is_some_and(|g| v > g) => "**no**",
        Some(_) => "yes",
    }
}

/// MiB relayed per CPU-second of the relay: on a shared machine, where the relay gets
/// only part of its core, the comparison that does not depend on its share.
fn per_cpu_tp(t: &Throughput) -> Option<f64> {
    (t.relay_cpu_pct > 0.0).then(|| t.mib_s / (t.relay_cpu_pct / 100.0))
}

/// New sessions per CPU-second of the relay.
fn rate_per_cpu(r: &Option<anyhow::Result<Rate>>) -> Option<f64> {
    match r {
        Some(Ok(t)) if t.relay_cpu_pct > 0.0 => Some(t.per_sec / (t.relay_cpu_pct / 100.0)),
        _ => None,
    }
}

fn val<T>(r: &Option<anyhow::Result<T>>, f: impl Fn(&T) -> f64) -> Option<f64> {
    match r {
        Some(Ok(v)) => Some(f(v)),
        _ => None,
    }
}

fn report(ctx: &Context_, relays: &[Relay], results: &[Results]) -> String {
    let a = ctx.args;
    let mut s = String::new();
    let _ = writeln!(s, "# vmgw-load results\n\n## Environment\n");
    for n in &a.note {
        let _ = writeln!(s, "- {n}");
    }
    let _ = writeln!(s, "- {}", machine());
    let _ = writeln!(
        s,
        "- Load average (1, 5, 15 min) before: {}; after: {}",
        ctx.load_before, ctx.load_after
    );
    let _ = writeln!(
        s,
        "- Pinning: {}; the load generator and the TCP backend share the other core (run.sh: `taskset -c 1`)",
        match ctx.cpu {
            Some(c) => format!("relays (and the bare forwarder) on CPU {c} with `taskset -c {c}`"),
            None => "none".into(),
        }
    );
    let _ = writeln!(
        s,
        "- Parameters: throughput with {:?} sessions for {} s each (after 1 s warm-up); session rate {} loops for {} s; \
         {} idle sessions (websockify {}); {} latency round trips of 64 bytes; under attack {} addresses, ≥ {} s per phase; \
         TLS session resumption off in the client",
        a.sessions, a.throughput_secs, a.rate_workers, a.rate_secs, a.idle,
        a.idle.min(a.idle_websockify), a.latency_samples, a.attack_addresses, a.attack_secs
    );

    let by = |name: &str| {
        relays
            .iter()
            .position(|r| r.name == name)
            .map(|i| &results[i])
    };
    let g = &results[0];
    let reference = by("reference");
    let wsf = by("websockify");
    let big = a.sessions.iter().copied().max().unwrap_or(64);
    let tp = |r: Option<&Results>, n: usize| r.and_then(|r| r.tp(n)).map(|t| t.mib_s);

    let _ = writeln!(
        s,
        "\n## Targets (issue 12)\n\n| # | ratio | value | goal | met |\n|---|---|---|---|---|"
    );
    for &n in &a.sessions {
        let goal_w = if n == big {
            ("≥ 2", Some(2.0))
        } else {
            ("(reported)", None)
        };
        let goal_r = if n == big {
            ("≥ 0.95", Some(0.95))
        } else {
            ("(reported)", None)
        };
        let v = div(tp(Some(g), n), tp(wsf, n));
        let _ = writeln!(
            s,
            "| 1 | throughput, {n} sessions: gateway / websockify | {} | {} | {} |",
            f2(v),
            goal_w.0,
            if goal_w.1.is_some() {
                met(v, goal_w.1, None)
            } else {
                ""
            }
        );
        let v = div(tp(Some(g), n), tp(reference, n));
        let _ = writeln!(
            s,
            "| 1 | throughput, {n} sessions: gateway / reference relay | {} | {} | {} |",
            f2(v),
            goal_r.0,
            if goal_r.1.is_some() {
                met(v, goal_r.1, None)
            } else {
                ""
            }
        );
        let cpu = |r: Option<&Results>| r.and_then(|r| r.tp(n)).and_then(per_cpu_tp);
        let _ = writeln!(
            s,
            "| 1 | … per relay CPU-second: gateway / websockify; gateway / reference | {}; {} | (shared machine) | |",
            f2(div(cpu(Some(g)), cpu(wsf))),
            f2(div(cpu(Some(g)), cpu(reference)))
        );
    }
    let fair = |r: Option<&Results>| {
        r.and_then(|r| r.tp(big))
            .and_then(|t| div(Some(t.min_session_mib_s), Some(t.max_session_mib_s)))
    };
    let v = fair(Some(g));
    let _ = writeln!(
        s,
        "| 2 | fairness at {big} sessions: slowest / fastest session (gateway) | {} | ≥ 0.33 | {} |",
        f2(v),
        met(v, Some(1.0 / 3.0), None)
    );
    let ref_ws = reference.and_then(|r| val(&r.rate, |t| t.per_sec));
    let v = div(val(&g.rate_ws_only, |t| t.per_sec), ref_ws);
    let _ = writeln!(
        s,
        "| 3 | reconnect (WS with cookie) / reference WS setup rate | {} | ≥ 0.75 | {} |",
        f2(v),
        met(v, Some(0.75), None)
    );
    let v = div(val(&g.rate, |t| t.per_sec), ref_ws);
    let _ = writeln!(
        s,
        "| 3 | full path (exchange + WS) / reference WS setup rate | {} | ≥ 0.6 | {} |",
        f2(v),
        met(v, Some(0.6), None)
    );
    let v = div(
        reference.and_then(|r| val(&r.rate_two, |t| t.per_sec)),
        ref_ws,
    );
    let _ = writeln!(
        s,
        "| 3 | … the most a full path can reach: the reference doing its two TLS connections (a handshake, then the WS resuming it; no exchange) / its WS setup rate | {} | (reported) | |",
        f2(v)
    );
    let ref_cpu = reference.and_then(|r| rate_per_cpu(&r.rate));
    let _ = writeln!(
        s,
        "| 3 | … per relay CPU-second: reconnect / reference; full path / reference | {}; {} | (shared machine) | |",
        f2(div(rate_per_cpu(&g.rate_ws_only), ref_cpu)),
        f2(div(rate_per_cpu(&g.rate), ref_cpu))
    );
    let _ = writeln!(
        s,
        "| 3 | … per relay CPU-second: the reference's two connections / its WS setup | {} | (shared machine) | |",
        f2(div(reference.and_then(|r| rate_per_cpu(&r.rate_two)), ref_cpu))
    );
    let held = val(&g.idle, |i| i.alive as f64);
    let _ = writeln!(
        s,
        "| 4 | idle sessions still relaying (of {}) | {} | {} | {} |",
        a.idle,
        f0(held),
        a.idle,
        met(held, Some(a.idle as f64), None)
    );
    let v = val(&g.idle, Idle::pss_per_session_kib);
    let _ = writeln!(
        s,
        "| 4 | memory per idle session (PSS, KiB) | {} | < 48 | {} |",
        f0(v),
        met(v, None, Some(47.99))
    );
    let v = val(&g.idle, |i| {
        i.after_close.pss_kib as f64 / i.before.pss_kib.max(1) as f64
    });
    let _ = writeln!(
        s,
        "| 4 | PSS {} s after closing / before loading | {} | ≤ 1.10 | {} |",
        measure::AFTER_CLOSE.as_secs(),
        f2(v),
        met(v, None, Some(1.10))
    );
    let quiet = ctx
        .attack
        .iter()
        .find(|(f, _)| *f == attack::Flood::Quiet)
        .and_then(|(_, p)| p.as_ref().ok());
    for (flood, p) in &ctx.attack {
        if *flood == attack::Flood::Quiet {
            continue;
        }
        let p = p.as_ref().ok();
        let v = div(
            p.and_then(|p| p.console).map(|l| l.p99_us),
            quiet.and_then(|q| q.console).map(|l| l.p99_us),
        );
        let _ = writeln!(
            s,
            "| 5 | console round-trip p99, {} / quiet | {} | ≤ 2 | {} |",
            flood.label(),
            f2(v),
            met(v, None, Some(2.0))
        );
        let ex = p.and_then(|p| p.exchange);
        let _ = writeln!(
            s,
            "| 5 | legitimate exchange p99 (ms) during the {} (quiet: {}); failed | {}; {} | (reported) | |",
            flood.label(),
            quiet
                .and_then(|q| q.exchange)
                .map_or("–".into(), |l| format!("{:.1}", l.p99_us / 1000.0)),
            ex.map_or("–".into(), |l| format!("{:.1}", l.p99_us / 1000.0)),
            p.map_or("–".into(), |p| p.exchanges_failed.to_string()),
        );
    }
    let direct = ctx.direct_latency.as_ref().ok();
    let fwd = ctx.fwd_latency.as_ref().ok();
    let fwd_added = match (fwd, direct) {
        (Some(f), Some(d)) => Some(f.p50_us - d.p50_us),
        _ => None,
    };
    let added = |r: &Results, p99: bool| match (&r.latency, direct) {
        (Some(Ok(l)), Some(d)) => Some(if p99 {
            l.p99_us - d.p99_us
        } else {
            l.p50_us - d.p50_us
        }),
        _ => None,
    };
    let v = div(added(g, false), fwd_added);
    let _ = writeln!(
        s,
        "| 6 | added round-trip p50 (over the backend directly): gateway / bare TCP forwarder ({} µs / {} µs) | {} | ≤ 1.2 | {} |",
        f0(added(g, false)),
        f0(fwd_added),
        f2(v),
        met(v, None, Some(1.2))
    );
    let _ = writeln!(
        s,
        "| 6 | added p99: gateway; bare forwarder (µs) | {}; {} | (reported) | |",
        f0(added(g, true)),
        f0(match (fwd, direct) {
            (Some(f), Some(d)) => Some(f.p99_us - d.p99_us),
            _ => None,
        })
    );

    // Every relay side by side.
    let _ = write!(s, "\n## All relays\n\n| metric | better |");
    for r in relays {
        let _ = write!(s, " {} |", r.name);
    }
    let _ = write!(s, "\n|---|---|");
    for _ in relays {
        let _ = write!(s, "---|");
    }
    let _ = writeln!(s);
    let row = |s: &mut String, label: &str, better: &str, f: &dyn Fn(&Results) -> String| {
        let _ = write!(s, "| {label} | {better} |");
        for r in results {
            let _ = write!(s, " {} |", f(r));
        }
        let _ = writeln!(s);
    };
    for &n in &a.sessions {
        row(
            &mut s,
            &format!("wss throughput, {n} sessions (MiB/s)"),
            "higher",
            &|r| f0(r.tp(n).map(|t| t.mib_s)),
        );
    }
    row(
        &mut s,
        &format!("per session at {big}: min / max (MiB/s)"),
        "even",
        &|r| {
            r.tp(big).map_or("–".into(), |t| {
                format!("{:.1} / {:.1}", t.min_session_mib_s, t.max_session_mib_s)
            })
        },
    );
    row(
        &mut s,
        &format!("relay CPU at {big} (% of a core)"),
        "",
        &|r| f0(r.tp(big).map(|t| t.relay_cpu_pct)),
    );
    row(
        &mut s,
        &format!("MiB relayed per relay CPU-second at {big}"),
        "higher",
        &|r| f0(r.tp(big).and_then(per_cpu_tp)),
    );
    row(
        &mut s,
        &format!("load generator CPU at {big} (%)"),
        "",
        &|r| f0(r.tp(big).map(|t| t.client_cpu_pct)),
    );
    row(
        &mut s,
        "new sessions/s (gateway: exchange + WS; others: WS)",
        "higher",
        &|r| f0(val(&r.rate, |t| t.per_sec)),
    );
    row(
        &mut s,
        "new sessions/s, reconnect (gateway: WS with cookie)",
        "higher",
        &|r| f0(val(&r.rate_ws_only, |t| t.per_sec)),
    );
    row(
        &mut s,
        "new sessions/s, two TLS connections (reference: a handshake, then WS resumed)",
        "higher",
        &|r| f0(val(&r.rate_two, |t| t.per_sec)),
    );
    row(
        &mut s,
        "new sessions per relay CPU-second (full; reconnect)",
        "higher",
        &|r| {
            format!(
                "{}; {}",
                f0(rate_per_cpu(&r.rate)),
                f0(rate_per_cpu(&r.rate_ws_only))
            )
        },
    );
    row(
        &mut s,
        "idle sessions relaying (of opened)",
        "higher",
        &|r| match &r.idle {
            Some(Ok(i)) => format!("{} of {}", i.alive, i.held),
            Some(Err(e)) => fmt_err(e),
            None => "–".into(),
        },
    );
    row(
        &mut s,
        "memory per idle session (PSS, KiB)",
        "lower",
        &|r| f0(val(&r.idle, Idle::pss_per_session_kib)),
    );
    row(
        &mut s,
        &format!(
            "PSS before → with idle sessions → {} s after close (MiB)",
            measure::AFTER_CLOSE.as_secs()
        ),
        "lower",
        &|r| match &r.idle {
            Some(Ok(i)) => format!(
                "{:.0} → {:.0} → {:.0}",
                i.before.pss_kib as f64 / 1024.0,
                i.during.pss_kib as f64 / 1024.0,
                i.after_close.pss_kib as f64 / 1024.0
            ),
            _ => "–".into(),
        },
    );
    row(
        &mut s,
        "round trip p50 / p99 (µs)",
        "lower",
        &|r| match &r.latency {
            Some(Ok(l)) => format!("{:.0} / {:.0}", l.p50_us, l.p99_us),
            Some(Err(e)) => fmt_err(e),
            None => "–".into(),
        },
    );
    if let Some(f) = fwd {
        row(
            &mut s,
            &format!(
                "round trip p50 beyond the bare forwarder (µs; forwarder p50 {:.0})",
                f.p50_us
            ),
            "lower",
            &|r| f0(val(&r.latency, |l| l.p50_us - f.p50_us)),
        );
    }

    let _ = writeln!(s, "\n## Details\n");
    let lat = |l: &anyhow::Result<Latency>| match l {
        Ok(l) => format!("p50 {:.0} µs / p99 {:.0} µs", l.p50_us, l.p99_us),
        Err(e) => fmt_err(e),
    };
    let _ = writeln!(
        s,
        "Latency baselines (plain TCP, same 64-byte echo): bare forwarder on the relay core {}; backend directly {}.\n",
        lat(&ctx.fwd_latency),
        lat(&ctx.direct_latency)
    );
    if !ctx.attack.is_empty() {
        let _ = writeln!(
            s,
            "Under attack (gateway; console round trips on one live session, legitimate exchanges in a loop from 127.0.0.200):\n"
        );
        for (flood, p) in &ctx.attack {
            match p {
                Ok(p) => {
                    let _ = writeln!(
                        s,
                        "- {}: console {}; legitimate exchanges {} ok, {} failed, {}; attack {:.0}/s ({} answered 401); gateway CPU {:.0} %",
                        flood.label(),
                        p.console.map_or_else(
                            || p.console_err.clone().unwrap_or_default(),
                            |l| format!("p50 {:.0} µs / p99 {:.0} µs", l.p50_us, l.p99_us)
                        ),
                        p.exchanges_ok,
                        p.exchanges_failed,
                        p.exchange.map_or("–".into(), |l| format!(
                            "p50 {:.1} ms / p99 {:.1} ms",
                            l.p50_us / 1000.0,
                            l.p99_us / 1000.0
                        )),
                        p.attack_per_sec,
                        p.wrong_password_401,
                        p.relay_cpu_pct
                    );
                }
                Err(e) => {
                    let _ = writeln!(s, "- {}: {}", flood.label(), fmt_err(e));
                }
            }
        }
        let _ = writeln!(s);
    }
    for (r, res) in relays.iter().zip(results) {
        let _ = writeln!(s, "### {}\n", r.name);
        for (n, t) in &res.throughput {
            match t {
                Ok(t) => {
                    let _ = writeln!(
                        s,
                        "- throughput, {n} sessions: {:.0} MiB/s over {} sessions ({} failed to open); per session min {:.1}, max {:.1} MiB/s; \
                         relay CPU {:.0} % of one core, load generator + backend CPU {:.0} %",
                        t.mib_s, t.sessions, t.errors.count, t.min_session_mib_s, t.max_session_mib_s,
                        t.relay_cpu_pct, t.client_cpu_pct
                    );
                    if let Some(e) = &t.errors.first {
                        let _ = writeln!(s, "  - first error: `{e}`");
                    }
                }
                Err(e) => {
                    let _ = writeln!(s, "- throughput, {n} sessions: {}", fmt_err(e));
                }
            }
        }
        for (label, rate) in [
            ("session rate", &res.rate),
            ("session rate, reconnect", &res.rate_ws_only),
            ("session rate, two connections", &res.rate_two),
        ] {
            match rate {
                Some(Ok(t)) => {
                    let _ = writeln!(
                        s,
                        "- {label}: {:.0}/s ({} sessions, {} failures); relay CPU {:.0} % of one core (live processes only)",
                        t.per_sec, t.ok, t.errors.count, t.relay_cpu_pct
                    );
                    if let Some(e) = &t.errors.first {
                        let _ = writeln!(s, "  - first error: `{e}`");
                    }
                }
                Some(Err(e)) => {
                    let _ = writeln!(s, "- {label}: {}", fmt_err(e));
                }
                None => {}
            }
        }
        match &res.idle {
            Some(Ok(i)) => {
                let _ = writeln!(
                    s,
                    "- idle: opened {} of {} in {:.1} s, {} still echoing after the memory reading, {} failures{}",
                    i.held,
                    i.wanted,
                    i.open_secs,
                    i.alive,
                    i.errors.count,
                    i.stopped_early
                        .as_ref()
                        .map_or(String::new(), |w| format!(" (stopped early: {w})"))
                );
                if let Some(e) = &i.errors.first {
                    let _ = writeln!(s, "  - first error: `{e}`");
                }
                let _ = writeln!(
                    s,
                    "- relay memory (processes; RSS sum; PSS sum), before: {}; {} MiB; {} MiB — with sessions: {}; {} MiB; {} MiB — {} s after closing them: {}; {} MiB; {} MiB",
                    i.before.procs,
                    i.before.rss_kib / 1024,
                    i.before.pss_kib / 1024,
                    i.during.procs,
                    i.during.rss_kib / 1024,
                    i.during.pss_kib / 1024,
                    measure::AFTER_CLOSE.as_secs(),
                    i.after_close.procs,
                    i.after_close.rss_kib / 1024,
                    i.after_close.pss_kib / 1024
                );
                let _ = writeln!(
                    s,
                    "- per idle session: PSS {:.1} KiB, RSS {:.1} KiB",
                    i.pss_per_session_kib(),
                    i.rss_per_session_kib()
                );
            }
            Some(Err(e)) => {
                let _ = writeln!(s, "- idle: {}", fmt_err(e));
            }
            None => {}
        }
        if let Some(Err(e)) = &res.latency {
            let _ = writeln!(s, "- latency: {}", fmt_err(e));
        }
        let _ = writeln!(s);
    }
    s
}
