//! The `gateway` command: the server, the administrator's CLI, and the demo.

mod cli;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gateway::config::{Config, RawConfig};

#[derive(Debug, Parser)]
#[command(
    name = "gateway",
    version,
    about = "Share-link gateway and console proxy for virtual machines"
)]
struct Cli {
    /// Configuration file (TOML). Its data_dir is used unless --data-dir is given.
    #[arg(long, global = true, env = "VMGW_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (VM specs, run directories, the link store).
    #[arg(long, global = true, env = "VMGW_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (public TLS listener and admin listener).
    Serve,
    /// Everything on embedded defaults: a demo VM, an admin token and a password link.
    Demo(cli::demo::DemoArgs),
    /// Manage virtual machines on this host.
    #[command(subcommand)]
    Vm(cli::vm::VmCommand),
    /// Manage share links.
    #[command(subcommand)]
    Link(cli::link::LinkCommand),
    /// Manage admin API tokens.
    #[command(subcommand, name = "admin-token")]
    AdminToken(cli::link::AdminTokenCommand),
    /// Manage the keys that sign link tokens (rotation).
    #[command(subcommand)]
    Key(cli::link::KeyCommand),
    /// Manage virtual switches (Open vSwitch bridges).
    #[command(subcommand)]
    Vswitch(cli::net::SwitchCommand),
    /// Manage bonds of LAN ports.
    #[command(subcommand)]
    Bond(cli::net::BondCommand),
    /// Session recordings: list, show, download, delete.
    #[command(subcommand)]
    Recording(cli::recording::RecordingCommand),
}

fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("vm-gateway");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/vm-gateway"),
        None => PathBuf::from("vm-gateway-data"),
    }
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VMGW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    use tracing_subscriber::util::SubscriberInitExt;
    // Console traffic (WebSocket frames) is never logged, whatever VMGW_LOG says.
    let ansi = std::io::stderr().is_terminal();
    let _ = gateway::logging::subscriber(filter, std::io::stderr, ansi).try_init();
}

/// The validated configuration: the file if given, else defaults; `--data-dir` wins.
pub fn load_config(file: Option<&Path>, data_dir: Option<PathBuf>) -> anyhow::Result<Config> {
    let (raw, base) = match file {
        Some(f) => {
            let raw = RawConfig::load(f)?;
            let base = f.parent().map(Path::to_path_buf).unwrap_or_default();
            (raw, base)
        }
        None => (
            RawConfig::default(),
            std::env::current_dir().context("current directory")?,
        ),
    };
    let mut cfg = raw.validate(&base)?;
    match data_dir {
        Some(d) => cfg.data_dir = d,
        None if file.is_none() => cfg.data_dir = default_data_dir(),
        None => {}
    }
    Ok(cfg)
}

pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let gw = gateway::launch::Gateway::bind(cfg, None).await?;
    tracing::info!(public = %gw.public_addr, admin = %gw.admin_addr, url = %gw.app.public_base(), "serving");
    eprintln!(
        "public listener https://{}  admin listener {}",
        gw.public_addr, gw.admin_addr
    );
    gw.serve(shutdown_signal()).await;
    Ok(())
}

/// `limits.compact_heap`, before any thread starts: executes this program again with
/// glibc's compact-heap tunables (same process id and arguments), or, in the program so
/// executed, puts the environment back as it was for the programs the gateway starts.
fn set_up_heap(compact: bool) {
    use gateway::engine::memory::{HeapSetup, SAVED_TUNABLES_VAR};
    const VAR: &str = "GLIBC_TUNABLES";
    let plan = HeapSetup::plan(
        compact,
        std::env::var_os(VAR).as_deref(),
        std::env::var_os(SAVED_TUNABLES_VAR).as_deref(),
    );
    match plan {
        HeapSetup::ReExec { tunables, saved } => {
            use std::os::unix::process::CommandExt;
            let mut args = std::env::args_os();
            let mut cmd = std::process::Command::new("/proc/self/exe");
            if let Some(arg0) = args.next() {
                cmd.arg0(arg0);
            }
            let e = cmd
                .args(args)
                .env(VAR, tunables)
                .env(SAVED_TUNABLES_VAR, saved)
                .exec();
            // Only on failure: serve with glibc's defaults.
            tracing::warn!(error = %e, "could not restart with a compact heap (limits.compact_heap)");
        }
        // No other thread runs yet: changing the environment races with nothing.
        HeapSetup::Restore(given) => {
            match given {
                Some(v) => std::env::set_var(VAR, v),
                None => std::env::remove_var(VAR),
            }
            std::env::remove_var(SAVED_TUNABLES_VAR);
        }
        HeapSetup::AsIs => {}
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(if matches!(cli.command, Command::Serve) {
        "info"
    } else {
        "warn"
    });
    let data_dir_given = cli.data_dir.is_some();
    let cfg = match load_config(cli.config.as_deref(), cli.data_dir.clone()) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let serving = matches!(cli.command, Command::Serve | Command::Demo(_));
    set_up_heap(serving && cfg.limits.compact_heap);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<()> = rt.block_on(async move {
        match cli.command {
            Command::Serve => serve(cfg).await,
            Command::Demo(args) => {
                cli::demo::run(args, cfg, data_dir_given || cli.config.is_some()).await
            }
            Command::Vm(cmd) => cli::vm::run(cmd, &cfg).await,
            Command::Link(cmd) => cli::link::run_link(cmd, cfg).await,
            Command::AdminToken(cmd) => cli::link::run_admin_token(cmd, &cfg).await,
            Command::Key(cmd) => cli::link::run_key(cmd, &cfg).await,
            Command::Vswitch(cmd) => cli::net::run_switch(cmd, &cfg).await,
            Command::Bond(cmd) => cli::net::run_bond(cmd, &cfg).await,
            Command::Recording(cmd) => cli::recording::run(cmd, cfg).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
