//! vmgw-load: the gateway's console relay against websockify, on the same TCP backend,
//! in one run. See README.md for what is measured and how to read it.

mod backend;
mod churn;
mod client;
mod measure;
mod procinfo;
mod recording;
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
    about = "Gateway console relay vs. websockify, one run"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// The gateway binary (built with `cargo build --release -p gateway`).
    #[arg(long, default_value = "../target/release/gateway")]
    gateway: PathBuf,
    /// The websockify script; without it only the gateway is measured.
    #[arg(long)]
    websockify: Option<PathBuf>,
    /// Write the Markdown report here (it is printed too).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Core for the relays; this process should run on another (`taskset -c 1`).
    #[arg(long, default_value_t = 0)]
    relay_cpu: usize,
    /// Do not pin the relays.
    #[arg(long)]
    no_pin: bool,
    /// Concurrent sessions for the throughput test.
    #[arg(long, default_value_t = 64)]
    sessions: usize,
    #[arg(long, default_value_t = 10)]
    throughput_secs: u64,
    #[arg(long, default_value_t = 5)]
    rate_secs: u64,
    /// Concurrent connecting loops for the session-rate test.
    #[arg(long, default_value_t = 16)]
    rate_workers: usize,
    /// Idle sessions to open for the memory test (2 fds each in the relay).
    #[arg(long, default_value_t = 1000)]
    idle: usize,
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
    throughput: Option<anyhow::Result<Throughput>>,
    rate: Option<anyhow::Result<Rate>>,
    rate_ws_only: Option<anyhow::Result<Rate>>,
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
    let (gw_proc, gw, _) = relays::start_gateway(&gateway_bin, &work, cpu, backend, 20_000)
        .await
        .context("starting the gateway")?;
    let mut procs = vec![gw_proc];
    let mut relays = vec![gw];
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
    // Each test runs on every relay back to back, so drift in machine load hits both.
    // Idle memory first, on fresh processes (before bulk traffic grows their heaps).
    for (r, res) in relays.iter().zip(results.iter_mut()) {
        progress("idle sessions", r);
        res.idle = Some(measure::idle_memory(r, args.idle, 16).await);
        settle().await;
    }
    for (r, res) in relays.iter().zip(results.iter_mut()) {
        progress("latency", r);
        res.latency = Some(measure::ws_latency(r, args.latency_samples).await);
    }
    eprintln!("[{}] latency: bare forwarder and backend", elapsed());
    let fwd_latency = measure::tcp_latency(fwd_addr, args.latency_samples).await;
    let direct_latency = measure::tcp_latency(backend, args.latency_samples).await;
    for (r, res) in relays.iter().zip(results.iter_mut()) {
        progress("throughput", r);
        res.throughput = Some(
            measure::throughput(
                r,
                args.sessions,
                Duration::from_secs(1),
                Duration::from_secs(args.throughput_secs),
            )
            .await,
        );
        settle().await;
    }
    for (r, res) in relays.iter().zip(results.iter_mut()) {
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
}

fn fmt_err(e: &anyhow::Error) -> String {
    format!("error: {e:#}").replace('|', "/").replace('\n', " ")
}

/// A number with its ratio against the other relay, when both exist.
fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "–".into(),
    }
}

fn cell<T>(r: &Option<anyhow::Result<T>>, f: impl Fn(&T) -> String) -> String {
    match r {
        Some(Ok(v)) => f(v),
        Some(Err(e)) => fmt_err(e),
        None => "–".into(),
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
    let os = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| t.lines().next().map(str::to_owned))
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "- Linux {}, {} CPUs online, {}",
        os.trim(),
        std::fs::read_to_string("/sys/devices/system/cpu/online")
            .unwrap_or_default()
            .trim(),
        mem.split_whitespace().collect::<Vec<_>>().join(" ")
    );
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
        "- Parameters: {} throughput sessions for {} s (after 1 s warm-up); session rate {} loops for {} s; \
         {} idle sessions; {} latency round trips of 64 bytes; TLS session resumption off in the client",
        a.sessions, a.throughput_secs, a.rate_workers, a.rate_secs, a.idle, a.latency_samples
    );

    let g = &results[0];
    let w = results.get(1);
    let wname = relays.get(1).map_or("websockify (not run)", |r| r.name);
    let none = Results::default();
    let w = w.unwrap_or(&none);

    let _ = writeln!(
        s,
        "\n## Summary\n\n| metric | better | gateway | {wname} | gateway / websockify |\n|---|---|---|---|---|"
    );
    let tp = |r: &Results| val(&r.throughput, |t| t.mib_s);
    let _ = writeln!(
        s,
        "| wss throughput, {} sessions (MiB/s) | higher | {} | {} | {} |",
        a.sessions,
        cell(&g.throughput, |t| format!("{:.0}", t.mib_s)),
        cell(&w.throughput, |t| format!("{:.0}", t.mib_s)),
        ratio(tp(g), tp(w))
    );
    let rt = |r: &Results| val(&r.rate, |t| t.per_sec);
    let _ = writeln!(
        s,
        "| new sessions/s (gateway: exchange + WS; websockify: WS) | higher | {} | {} | {} |",
        cell(&g.rate, |t| format!("{:.0}", t.per_sec)),
        cell(&w.rate, |t| format!("{:.0}", t.per_sec)),
        ratio(rt(g), rt(w))
    );
    let _ = writeln!(
        s,
        "| new sessions/s, WS only (gateway: reused cookie) | higher | {} | {} | {} |",
        cell(&g.rate_ws_only, |t| format!("{:.0}", t.per_sec)),
        cell(&w.rate, |t| format!("{:.0}", t.per_sec)),
        ratio(val(&g.rate_ws_only, |t| t.per_sec), rt(w))
    );
    let held = |r: &Results| val(&r.idle, |i| i.alive as f64);
    let _ = writeln!(
        s,
        "| idle sessions working (of {} opened) | higher | {} | {} | {} |",
        a.idle,
        cell(&g.idle, |i| i.alive.to_string()),
        cell(&w.idle, |i| i.alive.to_string()),
        ratio(held(g), held(w))
    );
    let pss = |r: &Results| val(&r.idle, Idle::pss_per_session_kib);
    let _ = writeln!(
        s,
        "| relay memory per idle session (PSS, KiB) | lower | {} | {} | {} |",
        cell(&g.idle, |i| format!("{:.0}", i.pss_per_session_kib())),
        cell(&w.idle, |i| format!("{:.0}", i.pss_per_session_kib())),
        ratio(pss(g), pss(w))
    );
    let p50 = |r: &Results| val(&r.latency, |l| l.p50_us);
    let p99 = |r: &Results| val(&r.latency, |l| l.p99_us);
    let _ = writeln!(
        s,
        "| round trip p50 (µs) | lower | {} | {} | {} |",
        cell(&g.latency, |l| format!("{:.0}", l.p50_us)),
        cell(&w.latency, |l| format!("{:.0}", l.p50_us)),
        ratio(p50(g), p50(w))
    );
    let _ = writeln!(
        s,
        "| round trip p99 (µs) | lower | {} | {} | {} |",
        cell(&g.latency, |l| format!("{:.0}", l.p99_us)),
        cell(&w.latency, |l| format!("{:.0}", l.p99_us)),
        ratio(p99(g), p99(w))
    );
    if let Ok(f) = &ctx.fwd_latency {
        let beyond = |r: &Results| p50(r).map(|v| v - f.p50_us);
        let fmt = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.0}"));
        let _ = writeln!(
            s,
            "| round trip p50 beyond the bare TCP forwarder (µs) | lower | {} | {} | {} |",
            fmt(beyond(g)),
            fmt(beyond(w)),
            ratio(beyond(g), beyond(w))
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
    for (r, res) in relays.iter().zip(results) {
        let _ = writeln!(s, "### {}\n", r.name);
        if let Some(Ok(t)) = &res.throughput {
            let _ = writeln!(
                s,
                "- throughput: {:.0} MiB/s over {} sessions ({} failed to open); per session min {:.1}, max {:.1} MiB/s; \
                 relay CPU {:.0} % of one core, load generator + backend CPU {:.0} %",
                t.mib_s, t.sessions, t.errors.count, t.min_session_mib_s, t.max_session_mib_s,
                t.relay_cpu_pct, t.client_cpu_pct
            );
            if let Some(e) = &t.errors.first {
                let _ = writeln!(s, "  - first error: `{e}`");
            }
        }
        for (label, rate) in [
            ("session rate", &res.rate),
            ("session rate, WS only", &res.rate_ws_only),
        ] {
            if let Some(Ok(t)) = rate {
                let _ = writeln!(
                    s,
                    "- {label}: {:.0}/s ({} sessions, {} failures); relay CPU {:.0} % of one core (live processes only)",
                    t.per_sec, t.ok, t.errors.count, t.relay_cpu_pct
                );
                if let Some(e) = &t.errors.first {
                    let _ = writeln!(s, "  - first error: `{e}`");
                }
            }
        }
        if let Some(Ok(i)) = &res.idle {
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
                "- relay memory (processes; RSS sum; PSS sum), before: {}; {} MiB; {} MiB — with sessions: {}; {} MiB; {} MiB — 3 s after closing them: {}; {} MiB; {} MiB",
                i.before.procs,
                i.before.rss_kib / 1024,
                i.before.pss_kib / 1024,
                i.during.procs,
                i.during.rss_kib / 1024,
                i.during.pss_kib / 1024,
                i.after_close.procs,
                i.after_close.rss_kib / 1024,
                i.after_close.pss_kib / 1024
            );
            let _ = writeln!(
                s,
                "- per idle session: PSS {:.0} KiB, RSS {:.0} KiB",
                i.pss_per_session_kib(),
                i.rss_per_session_kib()
            );
        }
        for (label, v) in [
            ("idle", res.idle.as_ref().and_then(|r| r.as_ref().err())),
            (
                "latency",
                res.latency.as_ref().and_then(|r| r.as_ref().err()),
            ),
            (
                "throughput",
                res.throughput.as_ref().and_then(|r| r.as_ref().err()),
            ),
            (
                "session rate",
                res.rate.as_ref().and_then(|r| r.as_ref().err()),
            ),
            (
                "session rate, WS only",
                res.rate_ws_only.as_ref().and_then(|r| r.as_ref().err()),
            ),
        ] {
            if let Some(e) = v {
                let _ = writeln!(s, "- {label}: {}", fmt_err(e));
            }
        }
        let _ = writeln!(s);
    }
    s
}
