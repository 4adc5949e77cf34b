//! Giving freed heap memory back to the system after a burst of sessions has ended.
//!
//! glibc's allocator keeps what a thousand closed sessions freed in its per-thread
//! arenas: the gateway's memory stays at its peak long after the sessions are gone. When
//! the number of live sessions has fallen far enough, the background task asks the
//! allocator to return its free pages.
//!
//! Trimming returns only whole free pages, and two glibc behaviours keep a crowd's
//! memory anyway:
//! * its per-thread caches (tcache) keep up to seven freed blocks of each small size per
//!   thread, and each of those can hold a page of the crowd's heap in use;
//! * once a large block that was given its own mapping is freed (argon2's 19 MiB working
//!   set, say), glibc raises its trim threshold to twice that block's size, and
//!   `malloc_trim` does not shrink the top of a thread arena: up to ~40 MiB of free top
//!   then stay in an arena (seen: 27 MiB in one);
//! * small blocks (up to 128 bytes) are freed into "fast bins" without being merged with
//!   their neighbours. When the last blocks below a thread arena's top are such, nothing
//!   shrinks the top when they are freed: `malloc_trim` merges them into it, and then
//!   leaves the top of a thread arena as it is (only a free that merges into the top
//!   shrinks it). Seen in about one run in five: one arena's whole 64 MiB heap, free
//!   according to `malloc_info`, still resident 10 s after 9,900 sessions had closed.
//!
//! Measured with 9,900 sessions (`loadtests/`), PSS 10 s after they closed against
//! before: glibc's defaults 1.2–1.4×; caches off 1.06–1.9× (the arena tops); caches off
//! and a fixed trim threshold of 128 KiB 1.07–1.11× in three of three runs, at 0–5 % of
//! throughput and setup rate (within this machine's noise), but 2.6–2.9× in 5 of 27
//! later runs (the fast bins above); with fast bins off too, 33–35 MiB after close
//! against 32–33 before in 26 of 26.
//! So `gateway serve` (and `demo`) start with those glibc tunables unless
//! `limits.compact_heap = false`:
//! [`HeapSetup`] is decided before any thread starts. Fewer arenas (`arena_max` 1 or 2)
//! gave back as much but are not used: the relay threads then share an arena lock with
//! the setup and argon2 threads, which run at a lower priority and get preempted holding
//! it; under a wrong-password flood a console's round-trip p99 went from 0.8–0.95× its
//! quiet value to 1.6–3.7×.

use std::ffi::{OsStr, OsString};
use std::time::{Duration, Instant};

/// The glibc tunables of a compact heap: no per-thread caches of freed blocks, no fast
/// bins (every freed block is merged with its free neighbours at once, so a free below
/// an arena's top shrinks it), and a fixed trim threshold (glibc's default value, no
/// longer raised by large frees).
pub const COMPACT_TUNABLES: &str =
    "glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0:glibc.malloc.trim_threshold=131072";

/// Carries the environment's own `GLIBC_TUNABLES` (empty: none) across the re-exec, so
/// that the programs the gateway starts (QEMU, `ovs-vsctl`, …) get what it was given.
pub const SAVED_TUNABLES_VAR: &str = "VMGW_SAVED_GLIBC_TUNABLES";

/// What the process does about its heap before anything else.
#[derive(Debug, PartialEq, Eq)]
pub enum HeapSetup {
    /// Execute this program again, same arguments, with these two variables set.
    ReExec { tunables: OsString, saved: OsString },
    /// This is the re-executed process: put `GLIBC_TUNABLES` back as it was (`None`:
    /// unset) and drop the carrier variable.
    Restore(Option<OsString>),
    /// Nothing to do.
    AsIs,
}

impl HeapSetup {
    /// Decides from the setting and the environment's `GLIBC_TUNABLES` and carrier.
    /// A `glibc.malloc.*` tunable set by whoever started the gateway is left alone.
    pub fn plan(compact: bool, tunables: Option<&OsStr>, saved: Option<&OsStr>) -> HeapSetup {
        if let Some(saved) = saved {
            return HeapSetup::Restore((!saved.is_empty()).then(|| saved.to_owned()));
        }
        if !compact || !cfg!(all(target_os = "linux", target_env = "gnu")) {
            return HeapSetup::AsIs;
        }
        let own = tunables.unwrap_or_default();
        if own.to_string_lossy().contains("glibc.malloc.") {
            return HeapSetup::AsIs;
        }
        let mut t = own.to_owned();
        if !t.is_empty() {
            t.push(":");
        }
        t.push(COMPACT_TUNABLES);
        HeapSetup::ReExec {
            tunables: t,
            saved: own.to_owned(),
        }
    }
}

/// Sessions that must have ended since the last peak before memory is trimmed.
pub const TRIM_AFTER_SESSIONS_ENDED: usize = 64;

/// Returns free heap pages to the operating system (glibc `malloc_trim`); elsewhere a
/// no-op. Takes a few milliseconds on a large heap: run it off the async workers.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim takes no pointers; it locks each arena in turn and only
    // releases pages that are free, so it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// After a trim, the memory of what was still closing then (sessions whose sockets and
/// buffers are dropped after they left the registry, the audit records of their ends
/// written to the store) is freed later: trim once more this long after the last trim.
pub const TRIM_AGAIN_AFTER: Duration = Duration::from_secs(3);

/// When to trim: each time the live session count has fallen by `step` from the highest
/// count seen since the last trim, and once more [`TRIM_AGAIN_AFTER`] the last such trim.
#[derive(Debug)]
pub struct TrimPolicy {
    peak: usize,
    step: usize,
    again_at: Option<Instant>,
}

impl TrimPolicy {
    pub fn new(step: usize) -> TrimPolicy {
        TrimPolicy {
            peak: 0,
            step: step.max(1),
            again_at: None,
        }
    }

    /// Records the live session count at `now`; `true` when memory should be trimmed.
    pub fn observe(&mut self, live: usize, now: Instant) -> bool {
        if live >= self.peak {
            self.peak = live;
        } else if self.peak - live >= self.step {
            self.peak = live;
            self.again_at = Some(now + TRIM_AGAIN_AFTER);
            return true;
        }
        match self.again_at {
            Some(t) if now >= t => {
                self.again_at = None;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compact_heap_re_executes_once_and_gives_children_the_original_environment() {
        let plan = HeapSetup::plan(true, None, None);
        let HeapSetup::ReExec { tunables, saved } = plan else {
            panic!("{plan:?}");
        };
        assert_eq!(tunables, COMPACT_TUNABLES);
        assert_eq!(saved, "");
        // The re-executed process sees the carrier: it restores, never re-executes again.
        assert_eq!(
            HeapSetup::plan(true, Some(&tunables), Some(&saved)),
            HeapSetup::Restore(None)
        );
        // Other tunables are kept, and restored for children.
        let own = OsStr::new("glibc.rtld.optional_static_tls=4096");
        let HeapSetup::ReExec { tunables, saved } = HeapSetup::plan(true, Some(own), None) else {
            panic!("no re-exec");
        };
        assert_eq!(
            tunables,
            OsString::from(format!("{}:{COMPACT_TUNABLES}", own.to_string_lossy()))
        );
        assert_eq!(
            HeapSetup::plan(true, Some(&tunables), Some(&saved)),
            HeapSetup::Restore(Some(own.to_owned()))
        );
    }

    #[test]
    fn the_setting_and_the_administrators_own_malloc_tunables_win() {
        assert_eq!(HeapSetup::plan(false, None, None), HeapSetup::AsIs);
        let own = OsStr::new("glibc.malloc.arena_max=4");
        assert_eq!(HeapSetup::plan(true, Some(own), None), HeapSetup::AsIs);
    }

    #[test]
    fn trims_once_per_step_of_sessions_ended() {
        let t0 = Instant::now();
        let mut p = TrimPolicy::new(64);
        assert!(!p.observe(0, t0));
        assert!(!p.observe(1000, t0));
        assert!(!p.observe(990, t0), "ten ended: not yet");
        assert!(p.observe(936, t0), "64 ended since the peak");
        assert!(!p.observe(936, t0), "nothing more ended");
        assert!(!p.observe(900, t0));
        assert!(p.observe(0, t0));
        // a new burst raises the peak again
        assert!(!p.observe(50, t0));
        assert!(!p.observe(0, t0), "fewer than a step ended");
        assert!(!p.observe(200, t0));
        assert!(p.observe(100, t0));
    }

    #[test]
    fn trims_once_more_when_the_crowd_has_settled() {
        let t0 = Instant::now();
        let later = |s: u64| t0 + Duration::from_secs(s);
        let mut p = TrimPolicy::new(64);
        assert!(!p.observe(9900, t0));
        assert!(p.observe(3000, later(1)));
        assert!(p.observe(0, later(2)), "another step ended");
        assert!(!p.observe(0, later(3)));
        assert!(!p.observe(0, later(4)), "too soon after the last trim");
        assert!(p.observe(0, later(5)), "once more when it has settled");
        for s in 6..30 {
            assert!(!p.observe(0, later(s)), "and only once ({s} s)");
        }
        // A crowd arriving meanwhile does not cancel it.
        assert!(!p.observe(500, later(30)));
        assert!(p.observe(400, later(31)));
        assert!(!p.observe(900, later(32)));
        assert!(p.observe(900, later(34)));
    }

    #[test]
    fn release_does_not_disturb_live_allocations() {
        let keep: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 64 * 1024]).collect();
        let freed: Vec<Vec<u8>> = (0..256).map(|_| vec![1u8; 64 * 1024]).collect();
        drop(freed);
        release_free_memory();
        for (i, v) in keep.iter().enumerate() {
            assert!(v.iter().all(|b| *b == i as u8));
        }
    }
}
