//! Giving freed heap memory back to the system after a burst of sessions has ended.
//!
//! glibc's allocator keeps what a thousand closed sessions freed in its per-thread
//! arenas: the gateway's memory stays at its peak long after the sessions are gone. When
//! the number of live sessions has fallen far enough, the background task asks the
//! allocator to return its free pages.

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
