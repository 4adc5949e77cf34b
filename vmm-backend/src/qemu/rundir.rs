//! A VM's private run directory: pidfile, QMP and console sockets, logs.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::error::QemuError;

/// Files of one VM's run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub dir: PathBuf,
}

impl RunDir {
    pub fn new(run_root: &Path, name: &str) -> RunDir {
        RunDir {
            dir: run_root.join(name),
        }
    }
    pub fn pidfile(&self) -> PathBuf {
        self.dir.join("qemu.pid")
    }
    pub fn qmp(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }
    /// A second QMP monitor, used only to listen to events.
    pub fn qmp_events(&self) -> PathBuf {
        self.dir.join("events.sock")
    }
    pub fn qga(&self) -> PathBuf {
        self.dir.join("qga.sock")
    }
    pub fn vnc(&self) -> PathBuf {
        self.dir.join("vnc.sock")
    }
    pub fn spice(&self) -> PathBuf {
        self.dir.join("spice.sock")
    }
    /// The serial port's socket (one client at a time; output is logged either way).
    pub fn serial(&self) -> PathBuf {
        self.dir.join("serial.sock")
    }
    pub fn serial_log(&self) -> PathBuf {
        self.dir.join("serial.log")
    }
    /// QEMU's log once it runs (`-D`): its last words, such as the signal that ended it.
    pub fn qemu_log(&self) -> PathBuf {
        self.dir.join("qemu.log")
    }
    /// QEMU's standard error while it starts: why it refused to.
    pub fn start_log(&self) -> PathBuf {
        self.dir.join("qemu-start.log")
    }
    pub fn exit_reason(&self) -> PathBuf {
        self.dir.join("exit-reason")
    }
    pub fn lock(&self) -> PathBuf {
        self.dir.with_extension("lock")
    }

    fn sockets(&self) -> [PathBuf; 6] {
        [
            self.serial(),
            self.qmp(),
            self.qmp_events(),
            self.qga(),
            self.vnc(),
            self.spice(),
        ]
    }

    /// Empties the directory (a previous run's leftovers) and makes it private.
    pub fn prepare(&self) -> Result<(), QemuError> {
        let io = |op, path: &Path| {
            let path = path.to_owned();
            move |source| QemuError::Io { op, path, source }
        };
        for s in self.sockets() {
            if s.as_os_str().len() > 107 {
                return Err(QemuError::SocketPathTooLong(s));
            }
        }
        if self.dir.exists() {
            std::fs::remove_dir_all(&self.dir).map_err(io("clearing", &self.dir))?;
        }
        std::fs::create_dir_all(&self.dir).map_err(io("creating", &self.dir))?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io("setting the mode of", &self.dir))?;
        Ok(())
    }

    /// Makes sure every socket QEMU created is 0600 (QEMU follows the umask; this is the
    /// belt to those braces).
    pub fn lock_down_sockets(&self) {
        for s in self.sockets() {
            if s.exists() {
                let _ = std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o600));
            }
        }
    }

    /// Removes the sockets and pidfile of a VM that is no longer running, keeping the
    /// logs and the exit reason for `show`.
    pub fn clear_runtime(&self) {
        for s in self.sockets() {
            let _ = std::fs::remove_file(s);
        }
        let _ = std::fs::remove_file(self.pidfile());
    }
}
