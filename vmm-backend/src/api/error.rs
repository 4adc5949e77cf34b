//! The error of the backend API.

use super::console::ConsoleKind;
use crate::net::NetError;
use crate::qemu::QemuError;
use crate::spec::nic::NicError;
use crate::spec::vm::SpecError;

/// Errors of the backend API. Messages are for operators and API clients: they say what
/// is wrong with the VM, not how QEMU phrased it.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Nic(#[from] NicError),
    #[error(transparent)]
    Qemu(#[from] QemuError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("VM {vm:?} has no NIC {nic:?}")]
    NoSuchNic { vm: String, nic: String },
    #[error("VM {0:?} is already running")]
    AlreadyRunning(String),
    #[error("VM {0:?} is not running")]
    NotRunning(String),
    #[error("VM {0:?} is not paused")]
    NotPaused(String),
    #[error("VM {0:?} is already paused")]
    AlreadyPaused(String),
    #[error("VM {vm:?} cannot be suspended: {reason}")]
    SuspendRefused { vm: String, reason: String },
    #[error("VM {0:?} is running; stop it first")]
    StillRunning(String),
    #[error("VM {vm:?} has no {kind} console")]
    NoConsole { vm: String, kind: ConsoleKind },
    #[error("VM {0:?} is busy with another operation; try again")]
    Busy(String),
    #[error("VM {0:?} did not stop")]
    StopFailed(String),
    #[error("reading the screenshot of VM {vm:?}")]
    Screenshot {
        vm: String,
        #[source]
        source: std::io::Error,
    },
}

impl BackendError {
    /// Whether the error is about the caller's input or the VM's state (as opposed to a
    /// fault of the host).
    pub fn is_client_error(&self) -> bool {
        match self {
            BackendError::Spec(SpecError::Io { .. } | SpecError::Corrupt { .. }) => false,
            BackendError::Spec(SpecError::DiskCreate(_)) => false,
            BackendError::Spec(_) => true,
            BackendError::Nic(NicError::Sysfs { .. }) => false,
            BackendError::Nic(_) => true,
            // The guest agent is the guest's business: its silence or garbled answers
            // are a state of the VM, not a fault of the host.
            BackendError::Qemu(QemuError::KvmUnavailable)
            | BackendError::Qemu(QemuError::GuestAgentNotRunning(_))
            | BackendError::Qemu(QemuError::GuestAgent(_)) => true,
            BackendError::Qemu(_) => false,
            BackendError::Net(e) => e.is_client_error(),
            BackendError::StopFailed(_) | BackendError::Busy(_) => false,
            BackendError::Screenshot { .. } => false,
            _ => true,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            BackendError::Spec(SpecError::NotFound(_)) | BackendError::NoSuchNic { .. }
        ) || matches!(self, BackendError::Net(e) if e.is_not_found())
    }
}
