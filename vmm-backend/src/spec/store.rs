//! The persisted specs: one JSON file per VM under `DATA/vms/`, written atomically.

use std::path::{Path, PathBuf};

use super::vm::{validate_name, SpecError, VmSpec};
use crate::util::WriteError;

/// Writes `bytes` to `path` atomically (see [`crate::util::write_atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SpecError> {
    crate::util::write_atomic(path, bytes).map_err(|e| match e {
        WriteError::Io { op, path, source } => SpecError::Io { op, path, source },
    })
}

/// The persisted specs: one JSON file per VM under `DIR/vms/`.
#[derive(Debug, Clone)]
pub struct SpecStore {
    dir: PathBuf,
}

impl SpecStore {
    pub fn open(data_dir: &Path) -> Result<SpecStore, SpecError> {
        let dir = data_dir.join("vms");
        std::fs::create_dir_all(&dir).map_err(|source| SpecError::Io {
            op: "creating",
            path: dir.clone(),
            source,
        })?;
        // Leftovers of an interrupted write are never specs.
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(".tmp-") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(SpecStore { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    pub fn list(&self) -> Result<Vec<VmSpec>, SpecError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| SpecError::Io {
            op: "listing",
            path: self.dir.clone(),
            source,
        })?;
        let mut out = Vec::new();
        for e in entries.flatten() {
            let fname = e.file_name().to_string_lossy().into_owned();
            let Some(name) = fname.strip_suffix(".json") else {
                continue;
            };
            if validate_name(name).is_err() {
                continue;
            }
            out.push(self.get(name)?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub fn get(&self, name: &str) -> Result<VmSpec, SpecError> {
        validate_name(name).map_err(|_| SpecError::NotFound(name.chars().take(80).collect()))?;
        let path = self.path(name);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SpecError::NotFound(name.to_owned()))
            }
            Err(source) => {
                return Err(SpecError::Io {
                    op: "reading",
                    path,
                    source,
                })
            }
        };
        serde_json::from_slice(&bytes).map_err(|source| SpecError::Corrupt { path, source })
    }

    pub fn put(&self, spec: &VmSpec) -> Result<(), SpecError> {
        let bytes = serde_json::to_vec_pretty(spec).map_err(|source| SpecError::Corrupt {
            path: self.path(&spec.name),
            source,
        })?;
        write_atomic(&self.path(&spec.name), &bytes)
    }

    pub fn remove(&self, name: &str) -> Result<(), SpecError> {
        let path = self.path(name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(SpecError::NotFound(name.to_owned()))
            }
            Err(source) => Err(SpecError::Io {
                op: "removing",
                path,
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::vm::tests::def;

    #[test]
    fn store_roundtrip_and_atomic_leftovers() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = SpecStore::open(dir.path()).expect("store");
        let s = def("a").into_spec(&[]).expect("spec");
        store.put(&s).expect("put");
        std::fs::write(dir.path().join("vms/.tmp-deadbeef"), b"{half").expect("w");
        let store = SpecStore::open(dir.path()).expect("reopen");
        assert_eq!(store.list().expect("list"), vec![s.clone()]);
        assert!(!dir.path().join("vms/.tmp-deadbeef").exists());
        assert!(matches!(store.get("nope"), Err(SpecError::NotFound(_))));
        assert!(matches!(
            store.get("../etc/passwd"),
            Err(SpecError::NotFound(_))
        ));
        store.remove("a").expect("rm");
        assert!(store.list().expect("list").is_empty());
    }
}
