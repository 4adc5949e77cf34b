//! SR-IOV physical and virtual functions, read from sysfs.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::model::NicError;

/// An SR-IOV virtual function found in sysfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VirtualFunction {
    /// Index N of `virtfnN` under the physical function.
    pub index: usize,
    /// PCI address such as `0000:03:10.1`.
    pub pci_address: String,
    /// The kernel driver the VF is bound to now (`vfio-pci` is needed for passthrough).
    pub driver: Option<String>,
}

/// A physical function with SR-IOV capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhysicalFunction {
    pub name: String,
    pub total_vfs: usize,
    pub num_vfs: usize,
    pub vfs: Vec<VirtualFunction>,
}

/// Reads SR-IOV state from a sysfs tree (`/sys` normally, a fake tree in tests).
#[derive(Debug, Clone)]
pub struct Sysfs {
    root: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Self {
        Sysfs {
            root: PathBuf::from("/sys"),
        }
    }
}

impl Sysfs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Sysfs { root: root.into() }
    }

    fn read_trimmed(path: &Path) -> Result<String, NicError> {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .map_err(|source| NicError::Sysfs {
                path: path.to_owned(),
                source,
            })
    }

    fn read_count(path: &Path) -> Result<usize, NicError> {
        let s = Self::read_trimmed(path)?;
        s.parse().map_err(|_| NicError::Sysfs {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not a number"),
        })
    }

    /// Every SR-IOV capable network interface (those with `device/sriov_totalvfs`).
    pub fn physical_functions(&self) -> Result<Vec<PhysicalFunction>, NicError> {
        let net = self.root.join("class/net");
        let entries = match std::fs::read_dir(&net) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(NicError::Sysfs { path: net, source }),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().join("device/sriov_totalvfs").exists() {
                out.push(self.physical_function(&name)?);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// One physical function by interface name.
    pub fn physical_function(&self, name: &str) -> Result<PhysicalFunction, NicError> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(NicError::NoSuchPf(name.to_owned()));
        }
        let dev = self.root.join("class/net").join(name).join("device");
        if !dev.exists() {
            return Err(NicError::NoSuchPf(name.to_owned()));
        }
        let total_path = dev.join("sriov_totalvfs");
        if !total_path.exists() {
            return Err(NicError::NotSriovCapable(name.to_owned()));
        }
        let total_vfs = Self::read_count(&total_path)?;
        let num_vfs = Self::read_count(&dev.join("sriov_numvfs"))?;
        let mut vfs = Vec::new();
        let entries = std::fs::read_dir(&dev).map_err(|source| NicError::Sysfs {
            path: dev.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let fname = entry.file_name().to_string_lossy().into_owned();
            let Some(index) = fname
                .strip_prefix("virtfn")
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            let target = std::fs::read_link(entry.path()).map_err(|source| NicError::Sysfs {
                path: entry.path(),
                source,
            })?;
            let pci_address = target
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let driver = std::fs::read_link(entry.path().join("driver"))
                .ok()
                .and_then(|d| d.file_name().map(|f| f.to_string_lossy().into_owned()));
            vfs.push(VirtualFunction {
                index,
                pci_address,
                driver,
            });
        }
        vfs.sort_by_key(|v| v.index);
        Ok(PhysicalFunction {
            name: name.to_owned(),
            total_vfs,
            num_vfs,
            vfs,
        })
    }

    /// The first VF of `pf` whose PCI address is not in `in_use`.
    pub fn free_vf(&self, pf: &str, in_use: &[String]) -> Result<VirtualFunction, NicError> {
        let pf_info = self.physical_function(pf)?;
        if pf_info.num_vfs == 0 {
            return Err(NicError::SriovDisabled(pf.to_owned()));
        }
        pf_info
            .vfs
            .iter()
            .find(|vf| !in_use.contains(&vf.pci_address))
            .cloned()
            .ok_or(NicError::NoFreeVf {
                pf: pf.to_owned(),
                total: pf_info.vfs.len(),
            })
    }
}

/// Writes a sysfs tree shaped like the kernel's under `root`: one SR-IOV physical
/// function `pf` with `total` VFs (enabled or not, bound to vfio-pci) and a plain NIC
/// `eth9`. For tests on machines without SR-IOV hardware.
#[doc(hidden)]
pub fn write_fake_sysfs(root: &Path, pf: &str, total: usize, enabled: bool) -> std::io::Result<()> {
    use std::os::unix::fs::symlink;
    let pf_dev = root.join("devices/pci0000:00/0000:00:03.0/0000:03:00.0");
    std::fs::create_dir_all(&pf_dev)?;
    std::fs::write(pf_dev.join("sriov_totalvfs"), format!("{total}\n"))?;
    let num = if enabled { total } else { 0 };
    std::fs::write(pf_dev.join("sriov_numvfs"), format!("{num}\n"))?;
    std::fs::create_dir_all(root.join("class/net").join(pf))?;
    symlink(&pf_dev, root.join("class/net").join(pf).join("device"))?;
    let vfio = root.join("bus/pci/drivers/vfio-pci");
    std::fs::create_dir_all(&vfio)?;
    if enabled {
        for i in 0..total {
            let vf = root.join(format!("devices/pci0000:00/0000:00:03.0/0000:03:10.{i}"));
            std::fs::create_dir_all(&vf)?;
            symlink(&vfio, vf.join("driver"))?;
            symlink(&vf, pf_dev.join(format!("virtfn{i}")))?;
        }
    }
    let plain = root.join("devices/pci0000:00/0000:00:04.0");
    std::fs::create_dir_all(&plain)?;
    std::fs::create_dir_all(root.join("class/net/eth9"))?;
    symlink(&plain, root.join("class/net/eth9/device"))?;
    Ok(())
}
#[cfg(test)]
mod tests {
    use super::*;

    fn fake_sysfs(n: usize, enabled: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        write_fake_sysfs(dir.path(), "enp3s0f0", n, enabled).expect("fake sysfs");
        dir
    }

    #[test]
    fn discovers_vfs_from_sysfs() {
        let dir = fake_sysfs(4, true);
        let sys = Sysfs::new(dir.path());
        let pfs = sys.physical_functions().expect("pfs");
        assert_eq!(pfs.len(), 1);
        let pf = &pfs[0];
        assert_eq!(pf.name, "enp3s0f0");
        assert_eq!((pf.total_vfs, pf.num_vfs), (4, 4));
        assert_eq!(pf.vfs.len(), 4);
        assert_eq!(pf.vfs[2].pci_address, "0000:03:10.2");
        assert_eq!(pf.vfs[2].driver.as_deref(), Some("vfio-pci"));
    }

    #[test]
    fn free_vf_skips_used_and_reports_exhaustion() {
        let dir = fake_sysfs(2, true);
        let sys = Sysfs::new(dir.path());
        let a = sys.free_vf("enp3s0f0", &[]).expect("vf");
        assert_eq!(a.pci_address, "0000:03:10.0");
        let b = sys
            .free_vf("enp3s0f0", std::slice::from_ref(&a.pci_address))
            .expect("vf");
        assert_eq!(b.pci_address, "0000:03:10.1");
        let err = sys
            .free_vf("enp3s0f0", &[a.pci_address, b.pci_address])
            .expect_err("exhausted");
        assert!(matches!(err, NicError::NoFreeVf { total: 2, .. }), "{err}");
    }

    #[test]
    fn sriov_errors_are_precise() {
        let dir = fake_sysfs(2, false);
        let sys = Sysfs::new(dir.path());
        assert!(matches!(
            sys.free_vf("enp3s0f0", &[]),
            Err(NicError::SriovDisabled(_))
        ));
        assert!(matches!(
            sys.physical_function("eth9"),
            Err(NicError::NotSriovCapable(_))
        ));
        assert!(matches!(
            sys.physical_function("nope0"),
            Err(NicError::NoSuchPf(_))
        ));
        assert!(matches!(
            sys.physical_function("../../etc"),
            Err(NicError::NoSuchPf(_))
        ));
    }

    #[test]
    fn no_sysfs_means_no_pfs() {
        let sys = Sysfs::new("/nonexistent-sysfs-root");
        assert!(sys.physical_functions().expect("empty").is_empty());
    }
}
