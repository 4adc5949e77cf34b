//! The private OVS daemons: `ovsdb-server` and `ovs-vswitchd` started detached in a run
//! directory of ours, found again by their pidfiles, stopped with `exit --cleanup`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::command::run;
use super::error::OvsError;

const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

fn s(p: PathBuf) -> String {
    p.to_string_lossy().into_owned()
}

pub fn pid_alive(pidfile: &Path, comm: &str) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (name, rest) = stat.split_once(") ")?;
    let alive = !matches!(rest.chars().next(), Some('Z') | Some('X'));
    (alive && name.ends_with(comm)).then_some(pid)
}

pub fn check_sock_len(p: &Path) -> Result<(), OvsError> {
    if p.as_os_str().len() > 107 {
        return Err(OvsError::SocketPathTooLong(p.to_owned()));
    }
    Ok(())
}

/// Starts the private `ovsdb-server` of `dir` (creating its database on first use)
/// unless it runs; returns whether it was started (the database then needs `init`).
pub async fn start_ovsdb(dir: &Path, db: &Path, timeout: Duration) -> Result<bool, OvsError> {
    if pid_alive(&dir.join("ovsdb-server.pid"), "ovsdb-server").is_some() {
        return Ok(false);
    }
    let env_dir = s(dir.to_owned());
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
    let _ = std::fs::remove_file(db);
    let args = vec![
        s(db_file),
        format!("--remote=punix:{}", s(db.to_owned())),
        format!("--pidfile={}", s(dir.join("ovsdb-server.pid"))),
        format!("--unixctl={}", s(dir.join("ovsdb-server.ctl"))),
        format!("--log-file={}", s(dir.join("ovsdb-server.log"))),
        "--detach".into(),
        "--no-chdir".into(),
    ];
    start_daemon("ovsdb-server", &args, &env_dir, timeout).await?;
    Ok(true)
}

/// Starts the private `ovs-vswitchd` of `dir` on database `db` unless it runs.
pub async fn start_vswitchd(
    dir: &Path,
    db: &Path,
    ctl: &Path,
    timeout: Duration,
) -> Result<(), OvsError> {
    if pid_alive(&dir.join("ovs-vswitchd.pid"), "ovs-vswitchd").is_some() {
        return Ok(());
    }
    let args = vec![
        format!("unix:{}", s(db.to_owned())),
        format!("--pidfile={}", s(dir.join("ovs-vswitchd.pid"))),
        format!("--unixctl={}", s(ctl.to_owned())),
        format!("--log-file={}", s(dir.join("ovs-vswitchd.log"))),
        "--detach".into(),
        "--no-chdir".into(),
    ];
    start_daemon("ovs-vswitchd", &args, &s(dir.to_owned()), timeout).await?;
    tracing::info!(dir = %dir.display(), "started a private ovs-vswitchd");
    Ok(())
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
