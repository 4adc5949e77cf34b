//! Host interfaces: existence and masters from sysfs, tap devices with `ip`.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Errors of host interface operations.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("`{command}` failed: {message}")]
    Command { command: String, message: String },
    #[error("`{0}` did not finish in time")]
    Timeout(String),
}

/// Host interfaces as sysfs shows them (`/sys/class/net`).
#[derive(Debug, Clone)]
pub struct HostIfaces {
    class_net: PathBuf,
}

impl Default for HostIfaces {
    fn default() -> Self {
        HostIfaces::new(Path::new("/sys"))
    }
}

impl HostIfaces {
    pub fn new(sysfs_root: &Path) -> HostIfaces {
        HostIfaces {
            class_net: sysfs_root.join("class/net"),
        }
    }

    pub fn exists(&self, name: &str) -> bool {
        crate::util::valid_ifname(name) && self.class_net.join(name).exists()
    }

    /// The kernel master (Linux bridge or bond) the interface is enslaved to.
    pub fn master(&self, name: &str) -> Option<String> {
        let link = std::fs::read_link(self.class_net.join(name).join("master")).ok()?;
        link.file_name().map(|f| f.to_string_lossy().into_owned())
    }
}

async fn ip(args: &[&str]) -> Result<(), HostError> {
    let command = format!("ip {}", args.join(" "));
    let mut cmd = tokio::process::Command::new("ip");
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(10), cmd.output())
        .await
        .map_err(|_| HostError::Timeout(command.clone()))?
        .map_err(|e| HostError::Command {
            command: command.clone(),
            message: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(HostError::Command {
            command,
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Creates tap `name` (replacing a stale tap of that name, never another kind of
/// interface) and sets it up.
pub async fn create_tap(name: &str) -> Result<(), HostError> {
    let dev = Path::new("/sys/class/net").join(name);
    if dev.exists() {
        if !dev.join("tun_flags").exists() {
            return Err(HostError::Command {
                command: format!("ip tuntap add dev {name} mode tap"),
                message: format!("a host interface named {name} exists and is not a tap"),
            });
        }
        delete_link(name).await?;
    }
    ip(&["tuntap", "add", "dev", name, "mode", "tap"]).await?;
    if let Err(e) = ip(&["link", "set", "dev", name, "up"]).await {
        let _ = delete_link(name).await;
        return Err(e);
    }
    tracing::debug!(tap = name, "created");
    Ok(())
}

/// Deletes link `name` if it exists.
pub async fn delete_link(name: &str) -> Result<(), HostError> {
    if !Path::new("/sys/class/net").join(name).exists() {
        return Ok(());
    }
    match ip(&["link", "del", "dev", name]).await {
        Err(HostError::Command { message, .. }) if message.contains("Cannot find device") => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sysfs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let net = dir.path().join("class/net");
        std::fs::create_dir_all(net.join("eth1")).expect("mkdir");
        std::fs::create_dir_all(net.join("br0")).expect("mkdir");
        std::os::unix::fs::symlink(net.join("br0"), net.join("eth1/master")).expect("symlink");
        let h = HostIfaces::new(dir.path());
        assert!(h.exists("eth1"));
        assert!(!h.exists("eth2"));
        assert!(!h.exists("../eth1"));
        assert_eq!(h.master("eth1").as_deref(), Some("br0"));
        assert_eq!(h.master("br0"), None);
    }
}
