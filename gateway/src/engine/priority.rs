//! CPU priority of the gateway's threads. Live consoles are relayed at the process's own
//! priority; work that a visitor or an attacker can start in bulk runs below it: the
//! connection setup runtime (`server`, `limits.setup_nice`) and argon2 (nice 19, in
//! `passwords`). On a saturated core the kernel then runs a relay as soon as it has
//! bytes to move, and the bulk work gets what is left.

/// The lowest priority (argon2).
pub const LOWEST: u8 = 19;

/// Sets the calling thread's nice value to `nice` (0–19; 0 leaves it as it is). On Linux
/// the nice value belongs to the thread, so no other thread changes. Lowering needs no
/// privilege and cannot be undone without one (`CAP_SYS_NICE`): call it only on
/// threads that are for low-priority work for good. A failure leaves the thread as it
/// was; elsewhere than Linux it does nothing.
pub fn lower_current_thread(nice: u8) {
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    // SAFETY: gettid and setpriority take no pointers; PRIO_PROCESS with a thread id
    // changes that thread only.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(
            libc::PRIO_PROCESS,
            tid as libc::id_t,
            libc::c_int::from(nice.min(LOWEST)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's nice value (Linux).
    fn current_nice() -> Option<i32> {
        #[cfg(target_os = "linux")]
        #[allow(unsafe_code)]
        // SAFETY: as above; getpriority only reads. It may return -1 as a value, so errno
        // is cleared first and checked after.
        unsafe {
            *libc::__errno_location() = 0;
            let tid = libc::gettid();
            let n = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
            if n == -1 && *libc::__errno_location() != 0 {
                return None;
            }
            Some(n)
        }
        #[cfg(not(target_os = "linux"))]
        None
    }

    #[test]
    fn lowering_changes_only_the_calling_thread() {
        let before = current_nice().expect("nice");
        let lowered = std::thread::spawn(|| {
            lower_current_thread(LOWEST);
            current_nice()
        })
        .join()
        .expect("thread");
        assert_eq!(lowered, Some(19));
        assert_eq!(current_nice(), Some(before));
        // 0 leaves a thread alone.
        let same = std::thread::spawn(|| {
            lower_current_thread(0);
            current_nice()
        })
        .join()
        .expect("thread");
        assert_eq!(same, Some(before));
    }
}
