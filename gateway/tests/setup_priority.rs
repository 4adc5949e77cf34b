//! `limits.setup_nice`: connections are set up (TLS handshakes, HTTP requests) on threads
//! of their own at that CPU priority, and a console, once upgraded, is relayed elsewhere,
//! at the process's priority. Fails if the setting does not reach the threads, or if the
//! relay stays on the setup threads (a flood of handshakes would then slow consoles).

#![allow(clippy::unwrap_used)]

mod common;

use common::{echo_console, TestGateway, WsBytes};
use serde_json::json;

/// This process's threads: (name, nice, CPU ticks used).
fn threads() -> Vec<(String, i64, u64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let Ok(stat) = std::fs::read_to_string(task.unwrap().path().join("stat")) else {
            continue; // the thread ended meanwhile
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_owned();
        let f: Vec<&str> = stat[close + 2..].split(' ').collect();
        // Fields after the name: state is field 3 of stat(5), so field N is f[N - 3].
        let cpu = f[14 - 3].parse::<u64>().unwrap() + f[15 - 3].parse::<u64>().unwrap();
        out.push((name, f[19 - 3].parse().unwrap(), cpu));
    }
    out
}

fn cpu(filter: impl Fn(&str) -> bool) -> u64 {
    threads()
        .iter()
        .filter(|(n, _, _)| filter(n))
        .map(|t| t.2)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_set_up_at_the_setup_priority_and_consoles_relayed_elsewhere() {
    let gw = TestGateway::start_with("[limits]\nsetup_nice = 12\n").await;
    // The setup runtime starts when the gateway starts serving (a task of its own).
    let mut setup = Vec::new();
    for _ in 0..100 {
        setup = threads()
            .into_iter()
            .filter(|t| t.0 == "vmgw-setup")
            .collect();
        if !setup.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!setup.is_empty(), "no setup threads: {:?}", threads());
    assert!(setup.iter().all(|t| t.1 == 12), "{setup:?}");

    let console = echo_console().await;
    let link = gw.raw_link("prio", &console.to_string(), json!({})).await;
    let mut ws = WsBytes::new(gw.open_console(&link, None).await);

    // A bulk transfer through the relay (TLS both ways in the gateway): the setup
    // threads must do almost none of it.
    let (setup0, all0) = (cpu(|n| n == "vmgw-setup"), cpu(|_| true));
    let chunk = vec![0x5a_u8; 60_000];
    for _ in 0..200 {
        ws.send(&chunk).await;
        assert_eq!(ws.read_exact(chunk.len()).await.len(), chunk.len());
    }
    let (setup1, all1) = (cpu(|n| n == "vmgw-setup"), cpu(|_| true));
    let (setup_used, all_used) = (setup1 - setup0, all1 - all0);
    assert!(all_used >= 20, "too little CPU to tell: {all_used} ticks");
    assert!(
        setup_used * 10 <= all_used,
        "the setup threads used {setup_used} of {all_used} CPU ticks while a console relayed 12 MB: the relay runs on them"
    );
    // And they are still at their priority (relaying did not change it).
    assert!(threads()
        .iter()
        .filter(|t| t.0 == "vmgw-setup")
        .all(|t| t.1 == 12));
}
