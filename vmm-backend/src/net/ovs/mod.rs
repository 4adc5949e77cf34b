//! Open vSwitch: the daemons (a system instance, or our own private pair) and the
//! `ovs-vsctl` / `ovs-appctl` commands, with their JSON output parsed.
//!
//! Private daemons live in one run directory (mode 0700): `conf.db`, `db.sock`,
//! pidfiles, unixctl sockets and logs. They are started detached (`--detach
//! --pidfile`), so they outlive the process that started them (like the VMs' QEMUs), and
//! the next process finds them by their pidfiles. [`Ovs::stop`] stops them cleanly
//! (`exit --cleanup`), which also removes the bridges' datapath devices.
//!
//! * [`daemon`]: starting and stopping the private daemons.
//! * [`parse`]: the JSON and text output of the commands (pure, unit-tested).

pub mod daemon;
pub mod parse;

use std::path::{Path, PathBuf};
use std::time::Duration;

use daemon::pid_alive;
pub use daemon::stop_private;
pub use parse::{
    map_values, opt_string, parse_bond_show, parse_table, set_values, BondRuntime, MemberStatus,
    Row,
};

/// Errors of the OVS layer.
#[derive(Debug, thiserror::Error)]
pub enum OvsError {
    #[error(
        "Open vSwitch is not installed ({0} not found); install the Debian package openvswitch-switch"
    )]
    NotInstalled(&'static str),
    #[error("no system Open vSwitch is running (ovs mode \"system\")")]
    NoSystemInstance,
    #[error("starting {daemon}: {message}")]
    Start {
        daemon: &'static str,
        message: String,
    },
    #[error("{command} failed: {message}")]
    Command { command: String, message: String },
    #[error("{command} did not finish within {timeout:?}")]
    Timeout { command: String, timeout: Duration },
    #[error("unexpected output of {command}: {message}")]
    Parse { command: String, message: String },
    #[error("unix socket path {0} is longer than 107 bytes; use a shorter run directory")]
    SocketPathTooLong(PathBuf),
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Which OVS daemons to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OvsMode {
    /// The system instance when it runs, else our own private daemons.
    #[default]
    Auto,
    /// Only the system instance (`/run/openvswitch`).
    System,
    /// Always our own private daemons (tests use this: one pair per data directory).
    Private,
}

const SYSTEM_RUN_DIR: &str = "/run/openvswitch";

/// A connection to running OVS daemons.
#[derive(Debug, Clone)]
pub struct Ovs {
    db: PathBuf,
    vswitchd_ctl: PathBuf,
    private: Option<PathBuf>,
    timeout: Duration,
}

/// The output of one command.
#[derive(Debug)]
struct Output {
    stdout: String,
}

async fn run(program: &str, args: &[String], timeout: Duration) -> Result<Output, OvsError> {
    let label = || {
        let mut s = program.to_owned();
        for a in args.iter().filter(|a| !a.starts_with("--db=")).take(6) {
            s.push(' ');
            s.push_str(a);
        }
        s
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(timeout, cmd.output()).await {
        Err(_) => {
            return Err(OvsError::Timeout {
                command: label(),
                timeout,
            })
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(OvsError::NotInstalled(static_name(program)))
        }
        Ok(Err(e)) => {
            return Err(OvsError::Command {
                command: label(),
                message: e.to_string(),
            })
        }
        Ok(Ok(o)) => o,
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let msg = err
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        return Err(OvsError::Command {
            command: label(),
            message: if msg.is_empty() {
                format!("exit status {}", out.status)
            } else {
                msg.chars().take(500).collect()
            },
        });
    }
    Ok(Output {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    })
}

fn static_name(program: &str) -> &'static str {
    match program {
        "ovs-vsctl" => "ovs-vsctl",
        "ovs-appctl" => "ovs-appctl",
        "ovsdb-server" => "ovsdb-server",
        "ovsdb-tool" => "ovsdb-tool",
        "ovs-vswitchd" => "ovs-vswitchd",
        _ => "an Open vSwitch program",
    }
}
impl Ovs {
    /// Connects to the daemons `mode` asks for, starting private ones in `private_dir`
    /// when needed. Idempotent: running private daemons are reused.
    pub async fn connect(
        mode: OvsMode,
        private_dir: &Path,
        timeout: Duration,
    ) -> Result<Ovs, OvsError> {
        if mode != OvsMode::Private {
            if let Some(ovs) = Self::system(timeout).await {
                return Ok(ovs);
            }
            if mode == OvsMode::System {
                return Err(OvsError::NoSystemInstance);
            }
        }
        Self::private(private_dir, timeout).await
    }

    async fn system(timeout: Duration) -> Option<Ovs> {
        let dir = Path::new(SYSTEM_RUN_DIR);
        let pid = pid_alive(&dir.join("ovs-vswitchd.pid"), "ovs-vswitchd")?;
        pid_alive(&dir.join("ovsdb-server.pid"), "ovsdb-server")?;
        let ovs = Ovs {
            db: dir.join("db.sock"),
            vswitchd_ctl: dir.join(format!("ovs-vswitchd.{pid}.ctl")),
            private: None,
            timeout,
        };
        ovs.vsctl(&["--no-wait", "show"]).await.ok()?;
        tracing::debug!("using the system Open vSwitch");
        Some(ovs)
    }

    /// Whether these are our private daemons (as opposed to the system's).
    pub fn is_private(&self) -> bool {
        self.private.is_some()
    }

    /// Stops private daemons cleanly (`exit --cleanup`: the datapath and the bridges'
    /// devices go too; the database keeps the configuration). The system instance is
    /// never stopped.
    pub fn stop(&self) -> Result<(), OvsError> {
        let Some(dir) = &self.private else {
            return Ok(());
        };
        stop_private(dir)
    }

    /// Runs `ovs-vsctl` against this database.
    pub async fn vsctl(&self, args: &[&str]) -> Result<String, OvsError> {
        let mut a = vec![
            format!("--db=unix:{}", self.db.to_string_lossy()),
            format!("--timeout={}", self.timeout.as_secs().max(1)),
        ];
        a.extend(args.iter().map(|s| (*s).to_owned()));
        Ok(run("ovs-vsctl", &a, self.timeout + Duration::from_secs(2))
            .await?
            .stdout)
    }

    /// Runs `ovs-vsctl` with several commands joined by `--`: one database transaction,
    /// so either all of them take effect or none.
    pub async fn transaction(&self, commands: &[Vec<String>]) -> Result<(), OvsError> {
        if commands.is_empty() {
            return Ok(());
        }
        let mut args: Vec<&str> = Vec::new();
        for (i, c) in commands.iter().enumerate() {
            if i > 0 {
                args.push("--");
            }
            args.extend(c.iter().map(String::as_str));
        }
        self.vsctl(&args).await.map(|_| ())
    }

    /// Runs `ovs-appctl` against ovs-vswitchd.
    pub async fn appctl(&self, args: &[&str]) -> Result<String, OvsError> {
        let mut a = vec!["-t".to_owned(), self.vswitchd_ctl.to_string_lossy().into()];
        a.extend(args.iter().map(|s| (*s).to_owned()));
        Ok(run("ovs-appctl", &a, self.timeout).await?.stdout)
    }

    /// The rows of a table as column → value maps (`--format=json --data=json`).
    pub async fn list(&self, table: &str, columns: &str) -> Result<Vec<Row>, OvsError> {
        let out = self
            .vsctl(&[
                "--format=json",
                "--data=json",
                &format!("--columns={columns}"),
                "list",
                table,
            ])
            .await?;
        parse_table(&out).map_err(|message| OvsError::Parse {
            command: format!("ovs-vsctl list {table}"),
            message,
        })
    }
}
