//! QEMU: the command line, the detached process, and its QMP and guest-agent sockets.
//!
//! Every VM runs as a daemonized `qemu-system-x86_64` that outlives the process that
//! started it (as libvirt's do). Its run directory (mode 0700) holds the pidfile, the QMP
//! sockets, the console sockets (0600) and the logs; a new backend instance finds the VM
//! there and re-attaches.
//!
//! * [`rundir`]: the run directory and its file names.
//! * [`cmdline`]: the command line (pure) and the host resources chosen at start.
//! * [`process`]: starting, finding and signalling the process.
//! * [`qmp`]: QMP sessions and the event monitor.
//! * [`agent`]: the guest agent.

pub mod agent;
pub mod cmdline;
pub mod error;
pub mod process;
pub mod qmp;
pub mod rundir;

pub use agent::{guest_addresses, GuestAddress};
pub use cmdline::{command_line, kvm_usable, resolve_accel, TapAssignment, VfAssignment};
pub use error::QemuError;
pub use process::{last_log_line, live_pid, signal, spawn, wait_gone};
pub use qmp::{watch_events, Qmp};
pub use rundir::RunDir;
