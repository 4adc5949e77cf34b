//! Reading a relay's memory and CPU time from /proc, over its whole process tree
//! (websockify forks a process per session; the gateway is one process).

use std::collections::HashMap;

/// The process `root` and all its descendants that are alive now.
pub fn tree_pids(root: u32) -> Vec<u32> {
    let mut parent: HashMap<u32, u32> = HashMap::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(ppid) = stat_fields(pid).and_then(|f| f.get(1).and_then(|s| s.parse().ok()))
            {
                parent.insert(pid, ppid);
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parent.iter().filter(|(_, pp)| **pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

/// The fields of /proc/PID/stat after the command name: [state, ppid, ...].
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Memory of a process tree, KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mem {
    /// Sum of VmRSS (counts pages shared by forked processes once per process).
    pub rss_kib: u64,
    /// Sum of Pss from smaps_rollup (shared pages divided among their sharers).
    pub pss_kib: u64,
    pub procs: usize,
}

fn kib_field(text: &str, key: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn tree_mem(root: u32) -> Mem {
    let mut m = Mem::default();
    for pid in tree_pids(root) {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        m.rss_kib += kib_field(&status, "VmRSS:");
        if let Ok(r) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
            m.pss_kib += kib_field(&r, "Pss:");
        }
        m.procs += 1;
    }
    m
}

/// CPU time (user + system) of a process tree, seconds. Processes that exited are not
/// counted (websockify's finished sessions): use only around steady-state windows.
pub fn tree_cpu_secs(root: u32) -> f64 {
    tree_pids(root).into_iter().map(proc_cpu_secs).sum()
}

/// CPU time of one process (all its threads), seconds; USER_HZ is 100 on Linux.
pub fn proc_cpu_secs(pid: u32) -> f64 {
    stat_fields(pid)
        .map(|f| {
            // utime and stime are fields 14 and 15 of stat; index 11 and 12 here.
            let t = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
            (t(11) + t(12)) as f64 / 100.0
        })
        .unwrap_or(0.0)
}

pub fn mem_available_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .map(|t| kib_field(&t, "MemAvailable:"))
        .unwrap_or(0)
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// What churn watches in one process: open descriptors, threads, RSS and PSS (KiB).
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub fds: u64,
    pub threads: u64,
    pub rss_kib: u64,
    pub pss_kib: u64,
}

impl Usage {
    /// The larger of each field (for peaks).
    pub fn max(self, o: Usage) -> Usage {
        Usage {
            fds: self.fds.max(o.fds),
            threads: self.threads.max(o.threads),
            rss_kib: self.rss_kib.max(o.rss_kib),
            pss_kib: self.pss_kib.max(o.pss_kib),
        }
    }
}

/// Descriptors (entries of /proc/PID/fd), threads and memory of one process.
pub fn usage(pid: u32) -> anyhow::Result<Usage> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    Ok(Usage {
        fds,
        threads: kib_field(&status, "Threads:"),
        rss_kib: kib_field(&status, "VmRSS:"),
        pss_kib: kib_field(&rollup, "Pss:"),
    })
}
