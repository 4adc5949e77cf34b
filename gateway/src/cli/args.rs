//! Arguments shared by the CLI's subcommands.

use clap::Args;

/// `--json`: machine-readable output.
#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// One object by name (or id), with `--json`.
#[derive(Debug, Args)]
pub struct NameArgs {
    pub name: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}
