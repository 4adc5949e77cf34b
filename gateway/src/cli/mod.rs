//! The `gateway` command's subcommands: each file parses its arguments and calls the
//! library (the engine through `launch`, or the VM backend for host-side commands).

pub mod args;
pub mod demo;
pub mod link;
pub mod net;
pub mod recording;
pub mod vm;
