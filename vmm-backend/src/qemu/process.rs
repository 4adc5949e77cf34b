//! The QEMU process: starting it detached, telling whether it still runs (and is ours),
//! signalling it, and reading its last words.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use super::error::QemuError;
use super::rundir::RunDir;

/// The pid in a pidfile, if that process is alive, not a zombie, and is the QEMU of
/// this VM (its command line carries the uuid, so a recycled pid is not mistaken).
pub fn live_pid(run: &RunDir, uuid: &uuid::Uuid) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(run.pidfile())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    pid_is_vm(pid, uuid).then_some(pid)
}

fn pid_is_vm(pid: i32, uuid: &uuid::Uuid) -> bool {
    if pid <= 0 {
        return false;
    }
    let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s,
        Err(_) => return false,
    };
    // The state follows the parenthesised command name.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    if matches!(state, Some('Z') | Some('X') | None) {
        return false;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let needle = uuid.to_string();
    cmdline
        .split(|b| *b == 0)
        .any(|arg| arg == needle.as_bytes())
}

/// Waits until `pid` is gone (or a zombie), up to `timeout`.
pub async fn wait_gone(pid: i32, uuid: &uuid::Uuid, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if !pid_is_vm(pid, uuid) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends a signal to a VM's QEMU, checking identity first.
pub fn signal(pid: i32, uuid: &uuid::Uuid, sig: nix::sys::signal::Signal) {
    if pid_is_vm(pid, uuid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    }
}

/// Starts QEMU detached. Returns when QEMU has daemonized (its devices are set up and
/// its sockets listen) or with QEMU's own error message when it refused to start.
pub async fn spawn(
    binary: &Path,
    args: Vec<OsString>,
    run: &RunDir,
    timeout: Duration,
) -> Result<(), QemuError> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run.start_log())
        .map_err(|source| QemuError::Io {
            op: "opening",
            path: run.start_log(),
            source,
        })?;
    let mut cmd = tokio::process::Command::new(binary);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true);
    #[allow(unsafe_code)]
    // SAFETY: only async-signal-safe calls (umask, setsid) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
            let _ = nix::unistd::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| QemuError::Spawn {
        binary: binary.to_owned(),
        source,
    })?;
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => {
            return Err(QemuError::Spawn {
                binary: binary.to_owned(),
                source,
            })
        }
        Err(_) => {
            let _ = child.kill().await;
            return Err(QemuError::StartFailed(format!(
                "no answer within {timeout:?}"
            )));
        }
    };
    if !status.success() {
        // Before daemonizing QEMU reports on stderr, or in its -D log when it has one.
        let log = [run.start_log(), run.qemu_log()]
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n");
        let msg = log
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("exited without a message")
            .trim()
            .trim_start_matches(&*binary.to_string_lossy())
            .trim_start_matches(": ")
            .to_owned();
        return Err(QemuError::StartFailed(msg));
    }
    run.lock_down_sockets();
    Ok(())
}

/// QEMU's last words in its log, e.g. "terminating on signal 15 from pid 123".
pub fn last_log_line(run: &RunDir) -> Option<String> {
    let log = std::fs::read_to_string(run.qemu_log()).ok()?;
    log.lines().rev().find(|l| !l.trim().is_empty()).map(|l| {
        l.split_once(": ")
            .map(|(_, m)| m)
            .unwrap_or(l)
            .trim()
            .to_owned()
    })
}
