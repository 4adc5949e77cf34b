//! Exclusive advisory locks on files (flock), shared by the CLI, the gateway and tests
//! working on one data directory: waits with a deadline instead of blocking a thread.

use std::path::Path;
use std::time::Duration;

/// An exclusive lock on a file, released on drop.
#[derive(Debug)]
pub struct FileLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// Why a lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Someone else held it until the deadline.
    Busy,
    /// Opening or locking the file failed.
    Io(&'static str, std::io::Error),
}

/// Takes an exclusive lock on `path` (created if missing), waiting up to `timeout`.
pub async fn lock(path: &Path, timeout: Duration) -> Result<FileLock, LockError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| LockError::Io("opening lock file", e))?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(FileLock { _lock: lock }),
            Err((_f, nix::errno::Errno::EWOULDBLOCK)) => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(LockError::Busy);
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err((_f, errno)) => return Err(LockError::Io("locking", std::io::Error::from(errno))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_locker_waits_then_gives_up() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("x.lock");
        let held = lock(&p, Duration::from_secs(1)).await.expect("first");
        assert!(matches!(
            lock(&p, Duration::from_millis(100)).await,
            Err(LockError::Busy)
        ));
        drop(held);
        assert!(lock(&p, Duration::from_millis(100)).await.is_ok());
    }
}
