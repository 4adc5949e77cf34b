//! Small helpers shared by every layer: interface names, atomic file writes and file
//! locks. A leaf: nothing here imports anything else of the crate.

pub mod fs;
pub mod ifname;
pub mod lockfile;

pub use fs::{write_atomic, WriteError};
pub use ifname::{valid_ifname, IFNAMSIZ_MAX};
