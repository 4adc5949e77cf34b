//! The error of the OVS layer.

use std::path::PathBuf;
use std::time::Duration;

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
