//! Confinement of unix-socket console targets.
//!
//! An external target (`POST /api/v1/targets` with `socket`) makes the gateway connect a
//! visitor's WebSocket to a unix socket on this host. Left open, an admin token could
//! hand a visitor any socket the gateway's user can open: QEMU's QMP socket (which runs
//! host commands through `migrate exec:`), the guest agent, Open vSwitch's database, a
//! container runtime. So a unix-socket target is accepted, at registration and again at
//! every connect, only when all of these hold:
//!
//! - the path is absolute and already in normal form (no `.`, `..`, `//`, trailing `/`);
//! - no component of it is a symbolic link (the canonical path is the path itself);
//! - it lies under one of the configured `targets.unix_socket_dirs`;
//! - it does not lie under the gateway's own data or run directories (VM run directories
//!   with QMP and guest-agent sockets, the Open vSwitch run directory, the store);
//! - it is a socket (not a symlink, file or directory), owned by an allowed user
//!   (`targets.unix_socket_owners`, default: the gateway's own user);
//! - its directory is owned by root or the gateway's user and writable by no one else, so
//!   nobody else can swap the socket between the check and the connect.
//!
//! With no `unix_socket_dirs` configured (the default), unix-socket targets are refused.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::config::is_normal;

/// Why a unix-socket target path was refused. The messages name the rule, never more of
/// the file system than the path the admin gave.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfineError {
    #[error("unix-socket targets are disabled (no targets.unix_socket_dirs configured)")]
    Disabled,
    #[error(
        "socket path must be absolute and in normal form (no '.', '..', '//' or trailing '/')"
    )]
    NotNormal,
    #[error("socket path is not under any of targets.unix_socket_dirs")]
    NotAllowed,
    #[error("socket path lies in the gateway's own data or run directory")]
    OwnDirectory,
    #[error("socket path goes through a symbolic link")]
    Symlink,
    #[error("socket path does not exist")]
    Missing,
    #[error("socket path is not a unix socket")]
    NotSocket,
    #[error("socket is owned by a user not in targets.unix_socket_owners")]
    Owner,
    #[error("socket's directory is writable by other users, or owned by another user")]
    DirectoryWritable,
}

/// The rules, built once from the configuration and the directories the gateway owns.
#[derive(Debug, Clone)]
pub struct SocketConfinement {
    allowed_dirs: Vec<PathBuf>,
    own_dirs: Vec<PathBuf>,
    owners: Vec<u32>,
    self_uid: u32,
}

/// The canonical form of a directory when it exists, else the path as given.
fn canonical_or_given(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned())
}

impl SocketConfinement {
    /// `allowed_dirs` and `owners` from `[targets]`; `own_dirs` are the data directory and
    /// the VM run directory.
    pub fn new(allowed_dirs: &[PathBuf], own_dirs: &[&Path], owners: &[u32]) -> Self {
        let self_uid = nix::unistd::geteuid().as_raw();
        let mut owners = owners.to_vec();
        if owners.is_empty() {
            owners.push(self_uid);
        }
        SocketConfinement {
            allowed_dirs: allowed_dirs.iter().map(|d| canonical_or_given(d)).collect(),
            own_dirs: own_dirs.iter().map(|d| canonical_or_given(d)).collect(),
            owners,
            self_uid,
        }
    }

    /// Checks `path` against every rule; called at registration and before each connect.
    pub fn check(&self, path: &Path) -> Result<(), ConfineError> {
        if self.allowed_dirs.is_empty() {
            return Err(ConfineError::Disabled);
        }
        if !is_normal(path) {
            return Err(ConfineError::NotNormal);
        }
        let under = |roots: &[PathBuf]| roots.iter().any(|r| path.starts_with(r));
        if !under(&self.allowed_dirs) {
            return Err(ConfineError::NotAllowed);
        }
        if under(&self.own_dirs) {
            return Err(ConfineError::OwnDirectory);
        }
        let parent = path.parent().ok_or(ConfineError::NotNormal)?;
        let canonical_parent = std::fs::canonicalize(parent).map_err(|_| ConfineError::Missing)?;
        if canonical_parent != parent {
            return Err(ConfineError::Symlink);
        }
        // Re-check the own directories against the resolved parent too (an allowed dir
        // that is itself reached through a link into the data directory).
        if self
            .own_dirs
            .iter()
            .any(|r| canonical_parent.starts_with(r))
        {
            return Err(ConfineError::OwnDirectory);
        }
        let dir = std::fs::metadata(&canonical_parent).map_err(|_| ConfineError::Missing)?;
        if (dir.uid() != 0 && dir.uid() != self.self_uid) || dir.mode() & 0o022 != 0 {
            return Err(ConfineError::DirectoryWritable);
        }
        let meta = std::fs::symlink_metadata(path).map_err(|_| ConfineError::Missing)?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            return Err(ConfineError::Symlink);
        }
        if !ft.is_socket() {
            return Err(ConfineError::NotSocket);
        }
        if !self.owners.contains(&meta.uid()) {
            return Err(ConfineError::Owner);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct Fixture {
        _tmp: tempfile::TempDir,
        allowed: PathBuf,
        data: PathBuf,
        conf: SocketConfinement,
        _listeners: Vec<std::os::unix::net::UnixListener>,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(tmp.path()).unwrap();
        let allowed = base.join("consoles");
        let data = base.join("data");
        for d in [&allowed, &data, &data.join("run/vm1")] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        let mut listeners = Vec::new();
        for p in [allowed.join("ok.sock"), data.join("run/vm1/qmp.sock")] {
            listeners.push(std::os::unix::net::UnixListener::bind(p).unwrap());
        }
        std::fs::write(allowed.join("file"), b"x").unwrap();
        let conf = SocketConfinement::new(std::slice::from_ref(&allowed), &[&data], &[]);
        Fixture {
            _tmp: tmp,
            allowed,
            data,
            conf,
            _listeners: listeners,
        }
    }

    #[test]
    fn a_socket_in_an_allowed_directory_passes() {
        let f = fixture();
        assert_eq!(f.conf.check(&f.allowed.join("ok.sock")), Ok(()));
    }

    #[test]
    fn nothing_passes_without_allowed_directories() {
        let f = fixture();
        let none = SocketConfinement::new(&[], &[&f.data], &[]);
        assert_eq!(
            none.check(&f.allowed.join("ok.sock")),
            Err(ConfineError::Disabled)
        );
    }

    #[test]
    fn qmp_and_files_outside_are_refused() {
        let f = fixture();
        let qmp = f.data.join("run/vm1/qmp.sock");
        assert_eq!(f.conf.check(&qmp), Err(ConfineError::NotAllowed));
        assert_eq!(
            f.conf.check(Path::new("/etc/passwd")),
            Err(ConfineError::NotAllowed)
        );
        // Even when the allowed directory is the data directory's parent.
        let wide = SocketConfinement::new(&[f.data.parent().unwrap().to_owned()], &[&f.data], &[]);
        assert_eq!(wide.check(&qmp), Err(ConfineError::OwnDirectory));
    }

    #[test]
    fn dot_dot_and_odd_forms_are_refused() {
        let f = fixture();
        let a = f.allowed.to_str().unwrap();
        for p in [
            format!("{a}/../data/run/vm1/qmp.sock"),
            format!("{a}/./ok.sock"),
            format!("{a}//ok.sock"),
            format!("{a}/ok.sock/"),
            "consoles/ok.sock".to_owned(),
        ] {
            assert_eq!(
                f.conf.check(Path::new(&p)),
                Err(ConfineError::NotNormal),
                "{p}"
            );
        }
    }

    #[test]
    fn symlinks_are_refused_at_every_level() {
        let f = fixture();
        // A link to QMP placed in the allowed directory.
        let link = f.allowed.join("evil.sock");
        std::os::unix::fs::symlink(f.data.join("run/vm1/qmp.sock"), &link).unwrap();
        assert_eq!(f.conf.check(&link), Err(ConfineError::Symlink));
        // A directory link inside the allowed directory pointing at the run directory.
        let dlink = f.allowed.join("vm1");
        std::os::unix::fs::symlink(f.data.join("run/vm1"), &dlink).unwrap();
        assert_eq!(
            f.conf.check(&dlink.join("qmp.sock")),
            Err(ConfineError::Symlink)
        );
    }

    #[test]
    fn type_owner_and_directory_mode_are_checked() {
        let f = fixture();
        assert_eq!(
            f.conf.check(&f.allowed.join("file")),
            Err(ConfineError::NotSocket)
        );
        assert_eq!(
            f.conf.check(&f.allowed.join("absent.sock")),
            Err(ConfineError::Missing)
        );
        let other = SocketConfinement::new(std::slice::from_ref(&f.allowed), &[&f.data], &[54_321]);
        assert_eq!(
            other.check(&f.allowed.join("ok.sock")),
            Err(ConfineError::Owner)
        );
        std::fs::set_permissions(&f.allowed, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(
            f.conf.check(&f.allowed.join("ok.sock")),
            Err(ConfineError::DirectoryWritable)
        );
    }
}
