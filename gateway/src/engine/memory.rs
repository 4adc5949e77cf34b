//! Giving freed heap memory back to the system after a burst of sessions has ended.
//!
//! glibc's allocator keeps what a thousand closed sessions freed in its per-thread
//! arenas: the gateway's memory stays at its peak long after the sessions are gone. When
//! the number of live sessions has fallen far enough, the background task asks the
//! allocator to return its free pages.
//!
//! Trimming returns only whole free pages. glibc's per-thread caches (tcache) keep up to
//! seven freed blocks of each small size per thread, and each of those can hold a page of
//! the crowd's heap in use; with several arenas the same happens once per arena. Measured
//! with 9,900 sessions (`loadtests/`): 10 s after they closed, 1.25× the memory before
//! with glibc's defaults, 1.00× with the caches off and one arena. So `gateway serve`
//! (and `demo`) start with those glibc tunables unless `limits.compact_heap = false`:
//! [`HeapSetup`] is decided before any thread starts.

use std::ffi::{OsStr, OsString};

/// The glibc tunables of a compact heap: no per-thread caches of freed blocks, one arena.
pub const COMPACT_TUNABLES: &str = "glibc.malloc.tcache_count=0:glibc.malloc.arena_max=1";

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

/// When to trim: each time the live session count has fallen by `step` from the highest
/// count seen since the last trim.
#[derive(Debug)]
pub struct TrimPolicy {
    peak: usize,
    step: usize,
}

impl TrimPolicy {
    pub fn new(step: usize) -> TrimPolicy {
        TrimPolicy {
            peak: 0,
            step: step.max(1),
        }
    }

    /// Records the live session count; `true` when memory should be trimmed now.
    pub fn observe(&mut self, live: usize) -> bool {
        if live >= self.peak {
            self.peak = live;
            return false;
        }
        if self.peak - live >= self.step {
            self.peak = live;
            return true;
        }
        false
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
        let mut p = TrimPolicy::new(64);
        assert!(!p.observe(0));
        assert!(!p.observe(1000));
        assert!(!p.observe(990), "ten ended: not yet");
        assert!(p.observe(936), "64 ended since the peak");
        assert!(!p.observe(936), "nothing more ended");
        assert!(!p.observe(900));
        assert!(p.observe(0));
        // a new burst raises the peak again
        assert!(!p.observe(50));
        assert!(!p.observe(0), "fewer than a step ended");
        assert!(!p.observe(200));
        assert!(p.observe(100));
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
