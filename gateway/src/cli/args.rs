//! Arguments shared by the CLI's subcommands.

use clap::Args;

/// `--json`: machine-readable output.
#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// One object by name (or id), with `--json`. Generated ids (links, signing keys,
/// admin tokens) are URL-safe base64 and may begin with `-`: such a name is a name, not
/// an unknown flag.
#[derive(Debug, Args)]
pub struct NameArgs {
    #[arg(allow_hyphen_values = true)]
    pub name: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct One {
        #[command(flatten)]
        a: NameArgs,
    }

    fn parse(args: &[&str]) -> NameArgs {
        let mut argv = vec!["t"];
        argv.extend_from_slice(args);
        One::try_parse_from(argv).expect("parses").a
    }

    #[test]
    fn a_generated_id_that_begins_with_a_hyphen_is_a_name() {
        // A signing key's kid as `key list` printed it (1 in 64 begin with `-`).
        let a = parse(&["-T3kq9Zx_vQ2mLw8"]);
        assert_eq!((a.name.as_str(), a.json), ("-T3kq9Zx_vQ2mLw8", false));
        let a = parse(&["-T3kq9Zx_vQ2mLw8", "--json"]);
        assert_eq!((a.name.as_str(), a.json), ("-T3kq9Zx_vQ2mLw8", true));
        let a = parse(&["--json", "plain"]);
        assert_eq!((a.name.as_str(), a.json), ("plain", true));
        let a = parse(&["--", "-x"]);
        assert_eq!(a.name, "-x");
    }
}
