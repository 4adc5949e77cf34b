//! The error of everything QEMU.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Errors talking to QEMU.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("QEMU did not start: {0}")]
    StartFailed(String),
    #[error("running {binary}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("QMP socket {path}")]
    QmpConnect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("QMP command {command} failed: {message}")]
    Qmp {
        command: &'static str,
        message: String,
    },
    #[error("QMP did not answer within {0:?}")]
    QmpTimeout(Duration),
    #[error("guest agent not running (no answer within {0:?})")]
    GuestAgentNotRunning(Duration),
    #[error("guest agent error: {0}")]
    GuestAgent(String),
    #[error("KVM was requested but /dev/kvm is not usable")]
    KvmUnavailable,
    #[error("unix socket path {0} is longer than 107 bytes; use a shorter run directory")]
    SocketPathTooLong(PathBuf),
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}
