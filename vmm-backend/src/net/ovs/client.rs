//! [`Ovs`]: a connection to running OVS daemons (the system's, or our private pair
//! started on demand) and the `ovs-vsctl` / `ovs-appctl` commands against them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::command::run;
use super::daemon::{self, check_sock_len, pid_alive};
use super::error::OvsError;
use super::parse::{parse_table, Row};

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

    async fn private(dir: &Path, timeout: Duration) -> Result<Ovs, OvsError> {
        let io = |op: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| OvsError::Io { op, path, source }
        };
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io("setting the mode of", dir))?;
        let ovs = Ovs {
            db: dir.join("db.sock"),
            vswitchd_ctl: dir.join("ovs-vswitchd.ctl"),
            private: Some(dir.to_owned()),
            timeout,
        };
        check_sock_len(&ovs.db)?;
        check_sock_len(&ovs.vswitchd_ctl)?;
        if daemon::start_ovsdb(dir, &ovs.db, timeout).await? {
            ovs.vsctl(&["--no-wait", "init"])
                .await
                .map_err(|e| OvsError::Start {
                    daemon: "ovsdb-server",
                    message: e.to_string(),
                })?;
            tracing::info!(dir = %dir.display(), "started a private ovsdb-server");
        }
        daemon::start_vswitchd(dir, &ovs.db, &ovs.vswitchd_ctl, timeout).await?;
        Ok(ovs)
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
        daemon::stop_private(dir)
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
