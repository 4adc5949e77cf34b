//! Running one OVS program with a timeout, its failure reported in its own words.

use std::time::Duration;

use super::error::OvsError;

/// The output of one command.
#[derive(Debug)]
pub struct Output {
    pub stdout: String,
}

pub async fn run(program: &str, args: &[String], timeout: Duration) -> Result<Output, OvsError> {
    let label = || {
        let mut s = program.to_owned();
        for a in args.iter().filter(|a| !a.starts_with("--db=")).take(6) {
            s.push(' ');
            s.push_str(a);
        }
        s
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(timeout, cmd.output()).await {
        Err(_) => {
            return Err(OvsError::Timeout {
                command: label(),
                timeout,
            })
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(OvsError::NotInstalled(static_name(program)))
        }
        Ok(Err(e)) => {
            return Err(OvsError::Command {
                command: label(),
                message: e.to_string(),
            })
        }
        Ok(Ok(o)) => o,
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let msg = err
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        return Err(OvsError::Command {
            command: label(),
            message: if msg.is_empty() {
                format!("exit status {}", out.status)
            } else {
                msg.chars().take(500).collect()
            },
        });
    }
    Ok(Output {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    })
}

fn static_name(program: &str) -> &'static str {
    match program {
        "ovs-vsctl" => "ovs-vsctl",
        "ovs-appctl" => "ovs-appctl",
        "ovsdb-server" => "ovsdb-server",
        "ovsdb-tool" => "ovsdb-tool",
        "ovs-vswitchd" => "ovs-vswitchd",
        _ => "an Open vSwitch program",
    }
}
