//! `vmgw-load recording`: what recording a session costs the relay. One gateway, two
//! links to the same backend, one recorded (`record: true`) and one not; throughput
//! (sessions streaming console → visitor) and round-trip latency through each,
//! alternated for `rounds` rounds so that drift in the machine's load hits both alike.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context};

use crate::client::{Relay, RelayKind};
use crate::measure::{self, Latency, Throughput};
use crate::{backend, procinfo, relays};

#[derive(Debug, clap::Args)]
pub struct RecordingArgs {
    /// The gateway binary (built with `cargo build --release -p gateway`).
    #[arg(long, default_value = "../target/release/gateway")]
    gateway: PathBuf,
    /// Write the Markdown report here (it is printed too).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Core for the gateway; this process should run on another (`taskset -c 1`).
    #[arg(long, default_value_t = 0)]
    relay_cpu: usize,
    #[arg(long)]
    no_pin: bool,
    /// Concurrent sessions for the throughput test.
    #[arg(long, default_value_t = 16)]
    sessions: usize,
    /// Seconds of each throughput window (the recorded one writes everything to disk:
    /// about throughput × this many bytes).
    #[arg(long, default_value_t = 4)]
    throughput_secs: u64,
    /// Round trips per latency measurement.
    #[arg(long, default_value_t = 2000)]
    latency_samples: usize,
    /// Rounds (each: both links, both metrics).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// The gateway's `[recording] max_total_bytes` for the run (a cap hit stops the
    /// recording: the report counts them, and such a round is not a fair comparison).
    #[arg(long, default_value_t = 16 << 30)]
    max_total_bytes: u64,
    /// Keep the gateway's data (with the recordings) in this directory.
    #[arg(long)]
    keep_work: Option<PathBuf>,
    #[arg(long)]
    note: Vec<String>,
}

#[derive(Default)]
struct Side {
    throughput: Vec<anyhow::Result<Throughput>>,
    latency: Vec<anyhow::Result<Latency>>,
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

pub async fn run(a: &RecordingArgs) -> anyhow::Result<String> {
    let cpu = (!a.no_pin).then_some(a.relay_cpu);
    let backend = backend::spawn().await?;
    let tmp = tempfile::Builder::new().prefix("vmgw-rec-load").tempdir()?;
    let work = match &a.keep_work {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            std::fs::canonicalize(d)?
        }
        None => tmp.path().to_path_buf(),
    };
    let bin = std::fs::canonicalize(&a.gateway)
        .with_context(|| format!("gateway binary {}", a.gateway.display()))?;
    let extra = format!(
        "[recording]\nmax_bytes_per_recording = {}\nmax_total_bytes = {}\non_limit = \"stop_recording\"\n",
        a.max_total_bytes, a.max_total_bytes
    );
    let (proc_, plain, admin) =
        relays::start_gateway_with(&bin, &work, cpu, backend, 20_000, &extra).await?;
    let link = relays::admin_call(
        admin.addr,
        &admin.token,
        "POST",
        "/api/v1/links",
        serde_json::json!({"vm": "bench", "console": "raw", "ttl_seconds": 3600, "record": true}),
    )
    .await?;
    let token = link["token"]
        .as_str()
        .ok_or_else(|| anyhow!("link without token: {link}"))?
        .to_owned();
    let mut recorded: Relay = plain.clone();
    recorded.name = "gateway, recorded";
    recorded.kind = RelayKind::Gateway { link_token: token };
    let rec_dir = work.join("gateway-data/recordings");
    let load_before = procinfo::loadavg();
    let mut sides = [Side::default(), Side::default()];
    let relays_ = [&plain, &recorded];
    for round in 0..a.rounds {
        // Alternate which goes first.
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for &i in &order {
            eprintln!(
                "round {round}: latency, {} (load {})",
                relays_[i].name,
                procinfo::loadavg()
            );
            sides[i]
                .latency
                .push(measure::ws_latency(relays_[i], a.latency_samples).await);
        }
        for &i in &order {
            eprintln!(
                "round {round}: throughput, {} (load {})",
                relays_[i].name,
                procinfo::loadavg()
            );
            sides[i].throughput.push(
                measure::throughput(
                    relays_[i],
                    a.sessions,
                    Duration::from_secs(1),
                    Duration::from_secs(a.throughput_secs),
                )
                .await,
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let written = dir_bytes(&rec_dir);
    let audit = relays::admin_call(
        admin.addr,
        &admin.token,
        "GET",
        "/api/v1/audit?kind=recording_stopped",
        serde_json::Value::Null,
    )
    .await
    .unwrap_or_default();
    let stops = audit.as_array().map_or(0, Vec::len);
    let recs = relays::admin_call(
        admin.addr,
        &admin.token,
        "GET",
        "/api/v1/recordings",
        serde_json::Value::Null,
    )
    .await
    .unwrap_or_default();
    let n_recs = recs.as_array().map_or(0, Vec::len);
    let load_after = procinfo::loadavg();
    proc_.stop().await;

    let mut s = String::new();
    let _ = writeln!(s, "# vmgw-load recording\n\n## Environment\n");
    for n in &a.note {
        let _ = writeln!(s, "- {n}");
    }
    let _ = writeln!(
        s,
        "- Load average before: {load_before}; after: {load_after}\n- Gateway pinned to CPU {}; {} sessions per throughput window of {} s (after 1 s warm-up); {} round trips of 64 bytes per latency sample; {} rounds, alternating which link goes first\n- Recordings written: {n_recs} files, {:.1} MiB in all (data directory on {}); recording stops (caps, slow writer): {stops}\n",
        cpu.map_or("-".into(), |c| c.to_string()),
        a.sessions,
        a.throughput_secs,
        a.latency_samples,
        a.rounds,
        written as f64 / (1024.0 * 1024.0),
        work.display(),
    );
    let _ = writeln!(s, "## Per round\n");
    let _ = writeln!(
        s,
        "| round | link | MiB/s | gateway CPU % | p50 µs | p99 µs |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for round in 0..a.rounds {
        for (i, side) in sides.iter().enumerate() {
            let t = side.throughput.get(round);
            let l = side.latency.get(round);
            let tp = match t {
                Some(Ok(t)) => format!("{:.0} | {:.0}", t.mib_s, t.relay_cpu_pct),
                Some(Err(e)) => format!("error: {e:#} | -"),
                None => "- | -".into(),
            };
            let lat = match l {
                Some(Ok(l)) => format!("{:.0} | {:.0}", l.p50_us, l.p99_us),
                Some(Err(e)) => format!("error: {e:#} | -"),
                None => "- | -".into(),
            };
            let _ = writeln!(s, "| {round} | {} | {tp} | {lat} |", relays_[i].name);
        }
    }
    let mean = |v: Vec<f64>| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let tp = |i: usize| {
        mean(
            sides[i]
                .throughput
                .iter()
                .filter_map(|t| t.as_ref().ok())
                .map(|t| t.mib_s)
                .collect(),
        )
    };
    let cpu_pct = |i: usize| {
        mean(
            sides[i]
                .throughput
                .iter()
                .filter_map(|t| t.as_ref().ok())
                .map(|t| t.relay_cpu_pct)
                .collect(),
        )
    };
    let p50 = |i: usize| {
        mean(
            sides[i]
                .latency
                .iter()
                .filter_map(|t| t.as_ref().ok())
                .map(|t| t.p50_us)
                .collect(),
        )
    };
    let p99 = |i: usize| {
        mean(
            sides[i]
                .latency
                .iter()
                .filter_map(|t| t.as_ref().ok())
                .map(|t| t.p99_us)
                .collect(),
        )
    };
    let _ = writeln!(s, "\n## Means\n");
    let _ = writeln!(s, "| metric | not recorded | recorded | recorded / not |");
    let _ = writeln!(s, "|---|---|---|---|");
    for (name, f) in [
        ("throughput (MiB/s)", &tp as &dyn Fn(usize) -> f64),
        ("gateway CPU during throughput (% of a core)", &cpu_pct),
        ("round trip p50 (µs)", &p50),
        ("round trip p99 (µs)", &p99),
    ] {
        let (x, y) = (f(0), f(1));
        let _ = writeln!(s, "| {name} | {x:.0} | {y:.0} | {:.2} |", y / x);
    }
    Ok(s)
}
