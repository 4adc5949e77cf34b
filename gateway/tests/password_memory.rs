//! Password checks keep the gateway's memory within the hashing budget.
//!
//! Each argon2id check needs its 19 MiB memory block. Allocated and freed per check,
//! glibc's adaptive mmap threshold moved those blocks into its per-thread arenas, where
//! they stayed: 48 correct passwords took a gateway from 16 MiB to ~500 MiB, a few
//! hundred checks to ~1 GiB, kept after idle time and `malloc_trim`. The verifier now
//! owns at most `max_concurrent` blocks and reuses them.
//!
//! Its own test binary (one test): the resident set measured is this process's alone.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gateway::engine::passwords::{PasswordPolicy, PasswordVerifier};

const MIB: u64 = 1024 * 1024;

/// Resident set size of this process, from /proc/self/status.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_flood_stays_within_hashing_budget() {
    const CONCURRENT: usize = 4;
    let policy = PasswordPolicy {
        max_concurrent: CONCURRENT,
        // Every check waits for its slot: the test measures memory, not refusals.
        max_wait: Duration::from_secs(600),
        ..PasswordPolicy::default()
    };
    let argon2_bytes = u64::from(policy.m_cost_kib) * 1024;
    let v = Arc::new(PasswordVerifier::new(policy));
    let phc = v.hash("correct horse battery staple").await.expect("hash");

    // The budget: the hashes that may run at once, plus a small constant for the test
    // binary, the runtime and its threads.
    let budget = CONCURRENT as u64 * argon2_bytes + 64 * MIB;

    // Peak RSS, sampled while the checks run.
    let peak = Arc::new(AtomicU64::new(rss()));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (Arc::clone(&peak), Arc::clone(&done));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    // 48 correct + 50 wrong passwords, CONCURRENT at a time, as visitors would send.
    let attempts: Vec<&str> = std::iter::repeat_n("correct horse battery staple", 48)
        .chain(std::iter::repeat_n("wrong horse", 50))
        .collect();
    for (round, batch) in attempts.chunks(CONCURRENT).enumerate() {
        let mut tasks = Vec::new();
        for &pw in batch {
            let (v, phc) = (Arc::clone(&v), phc.clone());
            tasks.push(tokio::spawn(async move { (pw, v.verify(pw, &phc).await) }));
        }
        for t in tasks {
            let (pw, r) = t.await.expect("join");
            let want = pw.starts_with("correct");
            assert_eq!(r, Ok(want), "round {round}");
        }
        let now = rss();
        assert!(
            now <= budget,
            "after round {round}: RSS {} MiB > budget {} MiB",
            now / MIB,
            budget / MIB
        );
    }

    done.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let (peak, end) = (peak.load(Ordering::Relaxed), rss());
    eprintln!(
        "password flood: peak RSS {} MiB, end {} MiB, budget {} MiB",
        peak / MIB,
        end / MIB,
        budget / MIB
    );
    assert!(
        peak <= budget,
        "peak RSS {} MiB > budget {} MiB",
        peak / MIB,
        budget / MIB
    );
}
