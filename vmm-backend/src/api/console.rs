//! Where a VM's remote consoles listen: unix sockets (0600) in its private run directory.

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
}

impl fmt::Display for ConsoleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConsoleKind::Vnc => "vnc",
            ConsoleKind::Spice => "spice",
        })
    }
}

impl FromStr for ConsoleKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "vnc" => Ok(ConsoleKind::Vnc),
            "spice" => Ok(ConsoleKind::Spice),
            o => Err(format!("unknown console kind {o:?}")),
        }
    }
}

/// A console socket the gateway may connect to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsoleEndpoint {
    pub kind: ConsoleKind,
    pub socket: PathBuf,
}
