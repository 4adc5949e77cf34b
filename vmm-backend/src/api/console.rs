//! Where a VM's remote consoles listen: unix sockets (0600) in its private run directory.
//! The serial console is QEMU's first serial port on a socket chardev that serves one
//! client at a time (the gateway fans it out) and logs everything the guest writes to
//! the VM's serial log file, connected or not.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A console protocol QEMU can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsoleKind {
    Vnc,
    Spice,
    /// The first serial port (a byte stream; every QEMU VM has one).
    Serial,
}

impl fmt::Display for ConsoleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConsoleKind::Vnc => "vnc",
            ConsoleKind::Spice => "spice",
            ConsoleKind::Serial => "serial",
        })
    }
}

impl FromStr for ConsoleKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "vnc" => Ok(ConsoleKind::Vnc),
            "spice" => Ok(ConsoleKind::Spice),
            "serial" => Ok(ConsoleKind::Serial),
            o => Err(format!("unknown console kind {o:?}")),
        }
    }
}

/// A console socket the gateway may connect to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsoleEndpoint {
    pub kind: ConsoleKind,
    pub socket: PathBuf,
    /// The file the console's output is also written to (the serial log), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<PathBuf>,
}
