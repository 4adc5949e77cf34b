//! Open vSwitch: the daemons (a system instance, or our own private pair) and the
//! `ovs-vsctl` / `ovs-appctl` commands, with their JSON output parsed.
//!
//! Private daemons live in one run directory (mode 0700): `conf.db`, `db.sock`,
//! pidfiles, unixctl sockets and logs. They are started detached (`--detach
//! --pidfile`), so they outlive the process that started them (like the VMs' QEMUs), and
//! the next process finds them by their pidfiles. [`Ovs::stop`] stops them cleanly
//! (`exit --cleanup`), which also removes the bridges' datapath devices.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

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
const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

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

fn pid_alive(pidfile: &Path, comm: &str) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (name, rest) = stat.split_once(") ")?;
    let alive = !matches!(rest.chars().next(), Some('Z') | Some('X'));
    (alive && name.ends_with(comm)).then_some(pid)
}

fn check_sock_len(p: &Path) -> Result<(), OvsError> {
    if p.as_os_str().len() > 107 {
        return Err(OvsError::SocketPathTooLong(p.to_owned()));
    }
    Ok(())
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
        let s = |p: PathBuf| p.to_string_lossy().into_owned();
        let env_dir = s(dir.to_owned());

        if pid_alive(&dir.join("ovsdb-server.pid"), "ovsdb-server").is_none() {
            let db_file = dir.join("conf.db");
            if !db_file.exists() {
                run(
                    "ovsdb-tool",
                    &["create".into(), s(db_file.clone()), SCHEMA.into()],
                    timeout,
                )
                .await
                .map_err(|e| match e {
                    OvsError::NotInstalled(p) => OvsError::NotInstalled(p),
                    e => OvsError::Start {
                        daemon: "ovsdb-server",
                        message: e.to_string(),
                    },
                })?;
            }
            let _ = std::fs::remove_file(&ovs.db);
            let args = vec![
                s(db_file),
                format!("--remote=punix:{}", s(ovs.db.clone())),
                format!("--pidfile={}", s(dir.join("ovsdb-server.pid"))),
                format!("--unixctl={}", s(dir.join("ovsdb-server.ctl"))),
                format!("--log-file={}", s(dir.join("ovsdb-server.log"))),
                "--detach".into(),
                "--no-chdir".into(),
            ];
            start_daemon("ovsdb-server", &args, &env_dir, timeout).await?;
            ovs.vsctl(&["--no-wait", "init"])
                .await
                .map_err(|e| OvsError::Start {
                    daemon: "ovsdb-server",
                    message: e.to_string(),
                })?;
            tracing::info!(dir = %dir.display(), "started a private ovsdb-server");
        }
        if pid_alive(&dir.join("ovs-vswitchd.pid"), "ovs-vswitchd").is_none() {
            let args = vec![
                format!("unix:{}", s(ovs.db.clone())),
                format!("--pidfile={}", s(dir.join("ovs-vswitchd.pid"))),
                format!("--unixctl={}", s(ovs.vswitchd_ctl.clone())),
                format!("--log-file={}", s(dir.join("ovs-vswitchd.log"))),
                "--detach".into(),
                "--no-chdir".into(),
            ];
            start_daemon("ovs-vswitchd", &args, &env_dir, timeout).await?;
            tracing::info!(dir = %dir.display(), "started a private ovs-vswitchd");
        }
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

/// Stops the private daemons whose run directory is `dir`, if they run.
pub fn stop_private(dir: &Path) -> Result<(), OvsError> {
    let mut result = Ok(());
    for (daemon, ctl, extra) in [
        ("ovs-vswitchd", "ovs-vswitchd.ctl", Some("--cleanup")),
        ("ovsdb-server", "ovsdb-server.ctl", None),
    ] {
        let pidfile = dir.join(format!("{daemon}.pid"));
        let Some(pid) = pid_alive(&pidfile, daemon) else {
            continue;
        };
        let mut cmd = std::process::Command::new("ovs-appctl");
        cmd.arg("-t")
            .arg(dir.join(ctl))
            .arg("--timeout=5")
            .arg("exit");
        if let Some(e) = extra {
            cmd.arg(e);
        }
        let _ = cmd
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pid_alive(&pidfile, daemon).is_some() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if pid_alive(&pidfile, daemon).is_some() {
            tracing::warn!(daemon, pid, "did not exit; killing it");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            if result.is_ok() {
                result = Err(OvsError::Command {
                    command: format!("ovs-appctl exit ({daemon})"),
                    message: "the daemon did not exit; it was killed".into(),
                });
            }
        } else {
            tracing::info!(daemon, pid, "stopped");
        }
    }
    result
}

async fn start_daemon(
    daemon: &'static str,
    args: &[String],
    rundir: &str,
    timeout: Duration,
) -> Result<(), OvsError> {
    let mut cmd = tokio::process::Command::new(daemon);
    cmd.args(args)
        .env("OVS_RUNDIR", rundir)
        .env("OVS_LOGDIR", rundir)
        .env("OVS_DBDIR", rundir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(false);
    let child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            OvsError::NotInstalled(daemon)
        } else {
            OvsError::Start {
                daemon,
                message: e.to_string(),
            }
        }
    })?;
    // With --detach the parent exits once the daemon is ready.
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| OvsError::Start {
            daemon,
            message: format!("not ready within {timeout:?}"),
        })?
        .map_err(|e| OvsError::Start {
            daemon,
            message: e.to_string(),
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(OvsError::Start {
            daemon,
            message: err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("exited without a message")
                .chars()
                .take(400)
                .collect(),
        });
    }
    Ok(())
}

/// One row of `ovs-vsctl list --format=json --data=json`.
pub type Row = BTreeMap<String, Value>;

fn parse_table(out: &str) -> Result<Vec<Row>, String> {
    let v: Value = serde_json::from_str(out).map_err(|e| e.to_string())?;
    let headings: Vec<String> = v
        .get("headings")
        .and_then(Value::as_array)
        .ok_or("no headings")?
        .iter()
        .filter_map(|h| h.as_str().map(str::to_owned))
        .collect();
    let data = v.get("data").and_then(Value::as_array).ok_or("no data")?;
    Ok(data
        .iter()
        .filter_map(Value::as_array)
        .map(|row| headings.iter().cloned().zip(row.iter().cloned()).collect())
        .collect())
}

/// An OVSDB atom or set as a list of plain JSON values: `["set",[a,b]]` → `[a,b]`,
/// `["uuid","…"]` → `["…"]`, `x` → `[x]`.
pub fn set_values(v: Option<&Value>) -> Vec<Value> {
    match v {
        None => Vec::new(),
        Some(Value::Array(a)) if a.len() == 2 && a[0] == "set" => a[1]
            .as_array()
            .map(|items| items.iter().map(atom).collect())
            .unwrap_or_default(),
        Some(other) => vec![atom(other)],
    }
}

fn atom(v: &Value) -> Value {
    match v {
        Value::Array(a) if a.len() == 2 && (a[0] == "uuid" || a[0] == "named-uuid") => a[1].clone(),
        other => other.clone(),
    }
}

/// An optional string column (`["set",[]]` when empty).
pub fn opt_string(v: Option<&Value>) -> Option<String> {
    set_values(v)
        .into_iter()
        .next()
        .and_then(|x| x.as_str().map(str::to_owned))
}

/// A map column: `["map",[[k,v],…]]`.
pub fn map_values(v: Option<&Value>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(Value::Array(a)) = v {
        if a.len() == 2 && a[0] == "map" {
            for pair in a[1].as_array().into_iter().flatten() {
                if let Some([k, v]) = pair.as_array().map(Vec::as_slice) {
                    if let (Some(k), Some(v)) = (k.as_str(), v.as_str()) {
                        out.insert(k.to_owned(), v.to_owned());
                    }
                }
            }
        }
    }
    out
}

/// One member of a bond as `ovs-appctl bond/show` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MemberStatus {
    pub name: String,
    /// The member may carry traffic (link up, and LACP agrees when LACP is on).
    pub enabled: bool,
    /// The member carries the traffic (active-backup), or the primary one.
    pub active: bool,
}

/// A bond's run-time state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BondRuntime {
    pub mode: String,
    pub lacp_status: String,
    pub active: Option<String>,
    pub members: Vec<MemberStatus>,
}

/// Parses `ovs-appctl bond/show NAME` (OVS 2.x "slave" and 3.x "member" wording).
pub fn parse_bond_show(text: &str) -> BondRuntime {
    let mut rt = BondRuntime {
        mode: String::new(),
        lacp_status: String::new(),
        active: None,
        members: Vec::new(),
    };
    for line in text.lines() {
        let t = line.trim();
        if let Some(m) = t.strip_prefix("bond_mode:") {
            rt.mode = m.trim().to_owned();
        } else if let Some(m) = t.strip_prefix("lacp_status:") {
            rt.lacp_status = m.trim().to_owned();
        } else if let Some(rest) = t
            .strip_prefix("active member mac:")
            .or_else(|| t.strip_prefix("active slave mac:"))
        {
            // `12:18:4b:52:0a:50(xu1)`
            rt.active = rest
                .trim()
                .split_once('(')
                .map(|(_, n)| n.trim_end_matches(')').to_owned())
                .filter(|n| !n.is_empty() && n != "none");
        } else if let Some(rest) = t
            .strip_prefix("member ")
            .or_else(|| t.strip_prefix("slave "))
        {
            if let Some((name, state)) = rest.split_once(':') {
                rt.members.push(MemberStatus {
                    name: name.trim().to_owned(),
                    enabled: state.trim() == "enabled",
                    active: false,
                });
            }
        } else if t == "active member" || t == "active slave" {
            if let Some(m) = rt.members.last_mut() {
                m.active = true;
            }
        }
    }
    if rt.active.is_none() {
        rt.active = rt.members.iter().find(|m| m.active).map(|m| m.name.clone());
    }
    if let Some(a) = rt.active.clone() {
        for m in &mut rt.members {
            m.active = m.name == a;
        }
    }
    rt
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOND_SHOW: &str = "---- xbond ----
bond_mode: active-backup
bond may use recirculation: no, Recirc-ID : -1
bond-hash-basis: 0
lb_output action: disabled, bond-id: -1
updelay: 0 ms
downdelay: 0 ms
lacp_status: off
lacp_fallback_ab: false
active-backup primary: <none>
active member mac: 32:8f:c1:52:ec:34(xu2)

member xu1: disabled
  may_enable: false

member xu2: enabled
  active member
  may_enable: true
";

    #[test]
    fn parses_bond_show() {
        let rt = parse_bond_show(BOND_SHOW);
        assert_eq!(rt.mode, "active-backup");
        assert_eq!(rt.lacp_status, "off");
        assert_eq!(rt.active.as_deref(), Some("xu2"));
        assert_eq!(
            rt.members,
            vec![
                MemberStatus {
                    name: "xu1".into(),
                    enabled: false,
                    active: false
                },
                MemberStatus {
                    name: "xu2".into(),
                    enabled: true,
                    active: true
                },
            ]
        );
        let old = BOND_SHOW
            .replace("member", "slave")
            .replace("active slave mac: 32:8f:c1:52:ec:34(xu2)", "");
        let rt = parse_bond_show(&old);
        assert_eq!(rt.active.as_deref(), Some("xu2"));
    }

    #[test]
    fn parses_vsctl_json() {
        let out = r#"{"data":[["br0",["set",[["uuid","a"],["uuid","b"]]],"netdev",["map",[["vmgw-managed","true"]]],["set",[]]]],"headings":["name","ports","datapath_type","external_ids","tag"]}"#;
        let rows = parse_table(out).expect("parse");
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(opt_string(r.get("name")).as_deref(), Some("br0"));
        assert_eq!(
            set_values(r.get("ports")),
            vec![Value::from("a"), "b".into()]
        );
        assert_eq!(
            map_values(r.get("external_ids"))
                .get("vmgw-managed")
                .map(String::as_str),
            Some("true")
        );
        assert!(set_values(r.get("tag")).is_empty());
        assert_eq!(set_values(Some(&Value::from(7))), vec![Value::from(7)]);
    }
}
