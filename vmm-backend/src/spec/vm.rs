//! VM specs: what the user defines, validated and persisted under the data directory.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::spec::keyboard::{KeyboardLayout, KEYBOARD_LAYOUTS};
use crate::spec::nic::{MacAddr, NicError, NicModel, NicRequest, NicSpec};

/// Longest VM name accepted.
pub const MAX_NAME_LEN: usize = 63;
/// Most vCPUs a VM may have.
pub const MAX_VCPUS: u32 = 64;
/// Most NICs a VM may have.
pub const MAX_NICS: usize = 16;
/// Memory bounds in MiB.
pub const MIN_MEMORY_MIB: u64 = 16;
pub const MAX_MEMORY_MIB: u64 = 1 << 20;

/// Errors about VM specs and their persistence.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("invalid VM name {0:?}: use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit")]
    InvalidName(String),
    #[error("memory must be between {MIN_MEMORY_MIB} and {MAX_MEMORY_MIB} MiB, got {0}")]
    InvalidMemory(u64),
    #[error("vcpus must be between 1 and {MAX_VCPUS}, got {0}")]
    InvalidVcpus(u32),
    #[error("too many NICs: {0} (at most {MAX_NICS})")]
    TooManyNics(usize),
    #[error("NIC {index}")]
    Nic {
        index: usize,
        #[source]
        source: NicError,
    },
    #[error("MAC address {mac} is used twice in this VM")]
    DuplicateMacInVm { mac: MacAddr },
    #[error("MAC address {mac} is already used by VM {vm:?}")]
    DuplicateMac { mac: MacAddr, vm: String },
    #[error("kernel file {0} does not exist")]
    MissingKernel(PathBuf),
    #[error("initrd file {0} does not exist")]
    MissingInitrd(PathBuf),
    #[error("disk image {0} does not exist (give a size to create it)")]
    MissingDisk(PathBuf),
    #[error("disk image {0} already exists; refusing to overwrite it")]
    DiskExists(PathBuf),
    #[error("disk size must be between 1 MiB and 16 TiB")]
    InvalidDiskSize,
    #[error("unknown accelerator {0:?} (expected auto, kvm or tcg)")]
    UnknownAccel(String),
    #[error("unknown console {0:?} (expected vnc, spice or both)")]
    UnknownConsole(String),
    #[error("unknown keyboard layout {0:?} (expected one of {layouts})", layouts = KEYBOARD_LAYOUTS.join(", "))]
    UnknownKeyboardLayout(String),
    #[error("kernel command line too long ({0} bytes, at most 4096)")]
    CmdlineTooLong(usize),
    #[error("a VM named {0:?} already exists")]
    AlreadyExists(String),
    #[error("no VM named {0:?}")]
    NotFound(String),
    #[error("creating the disk image with qemu-img failed: {0}")]
    DiskCreate(String),
    #[error("spec file {path} is unreadable")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How the VM's CPU is executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM when `/dev/kvm` is usable, else TCG.
    #[default]
    Auto,
    Kvm,
    Tcg,
}

impl FromStr for Accel {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Accel::Auto),
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            o => Err(SpecError::UnknownAccel(o.chars().take(40).collect())),
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Auto => "auto",
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// Which remote console servers QEMU runs for the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ConsoleConfig {
    Vnc,
    Spice,
    #[default]
    Both,
}

impl ConsoleConfig {
    pub fn has_vnc(self) -> bool {
        matches!(self, ConsoleConfig::Vnc | ConsoleConfig::Both)
    }
    pub fn has_spice(self) -> bool {
        matches!(self, ConsoleConfig::Spice | ConsoleConfig::Both)
    }
}

impl FromStr for ConsoleConfig {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "vnc" => Ok(ConsoleConfig::Vnc),
            "spice" => Ok(ConsoleConfig::Spice),
            "both" => Ok(ConsoleConfig::Both),
            o => Err(SpecError::UnknownConsole(o.chars().take(40).collect())),
        }
    }
}

/// What the VM boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", deny_unknown_fields)]
pub enum BootSource {
    /// Direct kernel boot.
    Kernel {
        kernel: PathBuf,
        #[serde(default)]
        initrd: Option<PathBuf>,
        #[serde(default)]
        cmdline: String,
    },
    /// A disk image (qcow2 or raw).
    Disk {
        path: PathBuf,
        /// When set and the image does not exist, it is created as qcow2 of this size.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        create_size_mib: Option<u64>,
    },
    /// Firmware only (SeaBIOS), no OS: useful as a guest that ignores ACPI.
    Firmware,
}

/// A VM as the user defines it; validated into a [`VmSpec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmDefinition {
    pub name: String,
    #[serde(default)]
    pub uuid: Option<Uuid>,
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
    #[serde(default = "default_memory")]
    pub memory_mib: u64,
    pub boot: BootSource,
    #[serde(default)]
    pub console: ConsoleConfig,
    #[serde(default = "default_nics")]
    pub nics: Vec<NicRequest>,
    #[serde(default)]
    pub accel: Accel,
    #[serde(default)]
    pub autostart: bool,
    /// The guest's keyboard layout, for the console pages (none: `en-us`).
    #[serde(default)]
    pub keyboard_layout: Option<KeyboardLayout>,
}

fn default_vcpus() -> u32 {
    1
}
fn default_memory() -> u64 {
    256
}
fn default_nics() -> Vec<NicRequest> {
    Vec::new()
}

/// A defined VM, as persisted in `vms/NAME.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    pub name: String,
    pub uuid: Uuid,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub boot: BootSource,
    pub console: ConsoleConfig,
    pub nics: Vec<NicSpec>,
    pub accel: Accel,
    pub autostart: bool,
    /// The guest's keyboard layout, for the console pages (none: `en-us`).
    #[serde(default)]
    pub keyboard_layout: Option<KeyboardLayout>,
}

impl VmSpec {
    /// Why this VM cannot be suspended, if it cannot.
    pub fn suspend_blocker(&self) -> Option<String> {
        self.nics
            .iter()
            .find(|n| !n.model.allows_suspend())
            .map(|n| {
                format!(
                    "NIC {} is an SR-IOV virtual function: a passed-through device cannot be suspended",
                    n.id
                )
            })
    }

    pub fn live_migratable(&self) -> bool {
        self.nics.iter().all(|n| n.model.allows_live_migration())
    }

    pub fn ha_eligible(&self) -> bool {
        self.nics.iter().all(|n| n.model.allows_ha())
    }

    /// The NIC `req` becomes when added to this VM: the first free id `nicN`, and its MAC
    /// (the one asked for, refused when any VM in `all` has it, or one derived to be
    /// unique). `all` holds every defined VM, this one included.
    pub fn new_nic(&self, req: NicRequest, all: &[VmSpec]) -> Result<NicSpec, SpecError> {
        let taken: Vec<(MacAddr, &str)> = all
            .iter()
            .flat_map(|s| s.nics.iter().map(move |n| (n.mac, s.name.as_str())))
            .collect();
        let index = (0..)
            .find(|i| !self.nics.iter().any(|n| n.id == format!("nic{i}")))
            .unwrap_or(self.nics.len());
        let mac = match req.mac {
            Some(m) => {
                if let Some((_, vm)) = taken.iter().find(|(t, _)| *t == m) {
                    return Err(if *vm == self.name {
                        SpecError::DuplicateMacInVm { mac: m }
                    } else {
                        SpecError::DuplicateMac {
                            mac: m,
                            vm: (*vm).to_owned(),
                        }
                    });
                }
                m
            }
            None => (0u32..)
                .map(|salt| MacAddr::derive(&self.uuid, index, salt))
                .find(|m| !taken.iter().any(|(t, _)| t == m))
                .unwrap_or_else(|| MacAddr::derive(&self.uuid, index, u32::MAX)),
        };
        Ok(NicSpec {
            id: format!("nic{index}"),
            model: req.model,
            mac,
            attach: req.attach,
            pf: req.pf,
        })
    }
}

/// Checks a VM name: no path separators, not dots only, bounded length.
pub fn validate_name(name: &str) -> Result<(), SpecError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(SpecError::InvalidName(name.chars().take(80).collect()))
    }
}

impl VmDefinition {
    /// Everything that can be checked without touching other VMs or the disk.
    pub fn validate_shape(&self) -> Result<(), SpecError> {
        validate_name(&self.name)?;
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.memory_mib) {
            return Err(SpecError::InvalidMemory(self.memory_mib));
        }
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(SpecError::InvalidVcpus(self.vcpus));
        }
        if self.nics.len() > MAX_NICS {
            return Err(SpecError::TooManyNics(self.nics.len()));
        }
        let mut seen = HashSet::new();
        for (index, nic) in self.nics.iter().enumerate() {
            nic.validate()
                .map_err(|source| SpecError::Nic { index, source })?;
            if let Some(mac) = nic.mac {
                if !seen.insert(mac) {
                    return Err(SpecError::DuplicateMacInVm { mac });
                }
            }
        }
        match &self.boot {
            BootSource::Kernel {
                kernel,
                initrd,
                cmdline,
            } => {
                if cmdline.len() > 4096 {
                    return Err(SpecError::CmdlineTooLong(cmdline.len()));
                }
                if !kernel.is_file() {
                    return Err(SpecError::MissingKernel(kernel.clone()));
                }
                if let Some(i) = initrd {
                    if !i.is_file() {
                        return Err(SpecError::MissingInitrd(i.clone()));
                    }
                }
            }
            BootSource::Disk {
                path,
                create_size_mib,
            } => match create_size_mib {
                Some(size) => {
                    if *size == 0 || *size > 16 << 20 {
                        return Err(SpecError::InvalidDiskSize);
                    }
                    if path.exists() {
                        return Err(SpecError::DiskExists(path.clone()));
                    }
                }
                None => {
                    if !path.is_file() {
                        return Err(SpecError::MissingDisk(path.clone()));
                    }
                }
            },
            BootSource::Firmware => {}
        }
        Ok(())
    }

    /// Validates against the other defined VMs and assigns uuid and MACs.
    pub fn into_spec(self, others: &[VmSpec]) -> Result<VmSpec, SpecError> {
        self.validate_shape()?;
        if others.iter().any(|o| o.name == self.name) {
            return Err(SpecError::AlreadyExists(self.name));
        }
        let mut taken: Vec<(MacAddr, &str)> = others
            .iter()
            .flat_map(|o| o.nics.iter().map(move |n| (n.mac, o.name.as_str())))
            .collect();
        for nic in &self.nics {
            if let Some(mac) = nic.mac {
                if let Some((_, vm)) = taken.iter().find(|(m, _)| *m == mac) {
                    return Err(SpecError::DuplicateMac {
                        mac,
                        vm: (*vm).to_owned(),
                    });
                }
            }
        }
        let uuid = self.uuid.unwrap_or_else(Uuid::new_v4);
        let explicit: Vec<MacAddr> = self.nics.iter().filter_map(|n| n.mac).collect();
        let mut nics = Vec::with_capacity(self.nics.len());
        for (index, req) in self.nics.into_iter().enumerate() {
            let mac = match req.mac {
                Some(m) => m,
                None => {
                    let mut salt = 0u32;
                    loop {
                        let m = MacAddr::derive(&uuid, index, salt);
                        let clash = taken.iter().any(|(t, _)| *t == m) || explicit.contains(&m);
                        if !clash {
                            break m;
                        }
                        salt += 1;
                    }
                }
            };
            taken.push((mac, ""));
            nics.push(NicSpec {
                id: format!("nic{index}"),
                model: req.model,
                mac,
                attach: req.attach,
                pf: req.pf,
            });
        }
        Ok(VmSpec {
            name: self.name,
            uuid,
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
            boot: self.boot,
            console: self.console,
            nics,
            accel: self.accel,
            autostart: self.autostart,
            keyboard_layout: self.keyboard_layout,
        })
    }
}

/// Whether a VM with these NICs may use the given model mix (kept for later rules).
pub fn has_sriov(spec: &VmSpec) -> bool {
    spec.nics.iter().any(|n| n.model == NicModel::Sriov)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small valid definition (firmware, one virtio NIC), for tests here and nearby.
    pub(crate) fn def(name: &str) -> VmDefinition {
        VmDefinition {
            name: name.to_owned(),
            uuid: None,
            vcpus: 1,
            memory_mib: 128,
            boot: BootSource::Firmware,
            console: ConsoleConfig::Both,
            nics: vec![NicRequest {
                model: NicModel::Virtio,
                mac: None,
                attach: Default::default(),
                pf: None,
            }],
            accel: Accel::Tcg,
            autostart: false,
            keyboard_layout: None,
        }
    }

    #[test]
    fn names() {
        for ok in ["a", "vm-1", "Web_01.prod", &"x".repeat(63)] {
            validate_name(ok).expect(ok);
        }
        for bad in [
            "",
            ".",
            "..",
            "...",
            "a/b",
            "-a",
            ".hidden",
            "a b",
            "é",
            &"x".repeat(64),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn shape_errors() {
        let mut d = def("m");
        d.memory_mib = 0;
        assert!(matches!(
            d.validate_shape(),
            Err(SpecError::InvalidMemory(0))
        ));
        let mut d = def("m");
        d.vcpus = 0;
        assert!(matches!(
            d.validate_shape(),
            Err(SpecError::InvalidVcpus(0))
        ));
        let mut d = def("m");
        d.boot = BootSource::Kernel {
            kernel: "/nonexistent/vmlinuz".into(),
            initrd: None,
            cmdline: String::new(),
        };
        assert!(matches!(
            d.validate_shape(),
            Err(SpecError::MissingKernel(_))
        ));
        let mut d = def("m");
        let mac: MacAddr = "52:54:00:00:00:01".parse().expect("mac");
        d.nics = vec![
            NicRequest {
                mac: Some(mac),
                ..def("x").nics[0].clone()
            },
            NicRequest {
                mac: Some(mac),
                ..def("x").nics[0].clone()
            },
        ];
        assert!(matches!(
            d.validate_shape(),
            Err(SpecError::DuplicateMacInVm { .. })
        ));
    }

    #[test]
    fn duplicates_across_vms() {
        let a = def("a").into_spec(&[]).expect("a");
        let err = def("a")
            .into_spec(std::slice::from_ref(&a))
            .expect_err("dup");
        assert!(matches!(err, SpecError::AlreadyExists(_)));
        let mut b = def("b");
        b.nics[0].mac = Some(a.nics[0].mac);
        let err = b.into_spec(std::slice::from_ref(&a)).expect_err("dup mac");
        assert!(
            matches!(err, SpecError::DuplicateMac { ref vm, .. } if vm == "a"),
            "{err}"
        );
    }

    #[test]
    fn macs_are_assigned_stably_and_uniquely() {
        let mut d = def("a");
        d.nics = vec![d.nics[0].clone(); 4];
        let s = d.into_spec(&[]).expect("spec");
        let macs: HashSet<_> = s.nics.iter().map(|n| n.mac).collect();
        assert_eq!(macs.len(), 4);
        assert_eq!(s.nics[3].id, "nic3");
    }

    #[test]
    fn sriov_blocks_suspend() {
        let mut d = def("a");
        d.nics = vec![NicRequest {
            model: NicModel::Sriov,
            mac: None,
            attach: Default::default(),
            pf: Some("enp3s0f0".into()),
        }];
        let s = d.into_spec(&[]).expect("spec");
        assert!(s.suspend_blocker().expect("blocked").contains("SR-IOV"));
        assert!(!s.live_migratable() && !s.ha_eligible());
        assert!(has_sriov(&s));
    }
}
