//! QEMU's command line for a VM, and the host resources chosen for it at start
//! (accelerator, SR-IOV virtual functions, taps). Pure: no I/O, so it is unit-tested.

use std::ffi::OsString;
use std::path::Path;

use super::error::QemuError;
use super::rundir::RunDir;
use crate::spec::nic::{NicAttachment, NicModel, NicSpec};
use crate::spec::vm::{Accel, BootSource, VmSpec};

/// Whether `/dev/kvm` can be opened for reading and writing.
pub fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Resolves `auto` to a concrete accelerator.
pub fn resolve_accel(accel: Accel) -> Result<&'static str, QemuError> {
    match accel {
        Accel::Tcg => Ok("tcg"),
        Accel::Kvm if kvm_usable() => Ok("kvm"),
        Accel::Kvm => Err(QemuError::KvmUnavailable),
        Accel::Auto if kvm_usable() => Ok("kvm"),
        Accel::Auto => Ok("tcg"),
    }
}

/// An SR-IOV virtual function chosen for a NIC at start.
#[derive(Debug, Clone)]
pub struct VfAssignment {
    pub nic_id: String,
    pub pci_address: String,
}

/// A tap device made for a NIC attached to a vSwitch (see [`crate::net`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapAssignment {
    pub nic_id: String,
    pub ifname: String,
    /// Offer checksum/segmentation offloads to the guest: only with the kernel
    /// datapath (the userspace one would forward packets with partial checksums).
    pub vnet_hdr: bool,
}

impl TapAssignment {
    /// The `-netdev` value for this tap.
    pub fn netdev_arg(&self) -> String {
        format!(
            "tap,id=net-{},ifname={},script=no,downscript=no,vnet_hdr={}",
            self.nic_id,
            self.ifname,
            if self.vnet_hdr { "on" } else { "off" }
        )
    }
}

/// A path as a command-line argument.
fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Builds QEMU's argument vector for a VM. Pure: no I/O, so it is unit-tested. A NIC
/// attached to a vSwitch uses its tap from `taps` (a NIC without one is left out).
pub fn command_line(
    spec: &VmSpec,
    run: &RunDir,
    accel: &str,
    vfs: &[VfAssignment],
    taps: &[TapAssignment],
) -> Vec<OsString> {
    let mut v = machine_args(spec, run, accel);
    console_args(spec, run, &mut v);
    boot_args(&spec.boot, &mut v);
    for nic in &spec.nics {
        nic_args(nic, vfs, taps, &mut v);
    }
    v.into_iter().map(OsString::from).collect()
}

/// The machine, its fixed devices, and the sockets and logs in the run directory.
fn machine_args(spec: &VmSpec, run: &RunDir, accel: &str) -> Vec<String> {
    vec![
        "-name".into(),
        format!("guest={},debug-threads=on", spec.name.replace(',', ",,")),
        "-uuid".into(),
        spec.uuid.to_string(),
        "-machine".into(),
        format!("pc,accel={accel}"),
        "-cpu".into(),
        if accel == "kvm" { "host" } else { "max" }.into(),
        "-smp".into(),
        spec.vcpus.to_string(),
        "-m".into(),
        spec.memory_mib.to_string(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-vga".into(),
        if spec.console.has_spice() {
            "qxl"
        } else {
            "std"
        }
        .into(),
        "-daemonize".into(),
        "-pidfile".into(),
        p(&run.pidfile()),
        "-D".into(),
        p(&run.qemu_log()),
        "-chardev".into(),
        format!("socket,id=qmp,path={},server=on,wait=off", p(&run.qmp())),
        "-mon".into(),
        "chardev=qmp,mode=control".into(),
        "-chardev".into(),
        format!(
            "socket,id=qmpev,path={},server=on,wait=off",
            p(&run.qmp_events())
        ),
        "-mon".into(),
        "chardev=qmpev,mode=control".into(),
        "-chardev".into(),
        // The serial port: a socket the gateway's serial console connects to, and the
        // serial log, which gets everything the guest writes whether or not a client
        // is connected (QEMU's chardev `logfile`).
        format!(
            "socket,id=serial0,path={},server=on,wait=off,logfile={},logappend=on",
            p(&run.serial()),
            p(&run.serial_log())
        ),
        "-serial".into(),
        "chardev:serial0".into(),
        "-device".into(),
        "virtio-serial-pci,id=vser0".into(),
        "-chardev".into(),
        format!("socket,id=qga0,path={},server=on,wait=off", p(&run.qga())),
        "-device".into(),
        "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0".into(),
        "-device".into(),
        "usb-ehci,id=usb".into(),
        "-device".into(),
        "usb-tablet,bus=usb.0".into(),
    ]
}

/// The virtio-serial port name clipboard agents in guests open (`spice-vdagent` and
/// the test guest's `vmgw-clip`).
pub const CLIPBOARD_AGENT_PORT: &str = "com.redhat.spice.0";

/// The remote consoles, on unix sockets in the run directory, and the guest's clipboard
/// agent channel on the port [`CLIPBOARD_AGENT_PORT`]. Only one chardev can own that
/// port: a VM with VNC gets QEMU's own agent (`qemu-vdagent`, clipboard on, which
/// QEMU's VNC server speaks to through its extended clipboard), a SPICE-only VM the
/// SPICE server's (`spicevmc`). A VM with both consoles therefore has the clipboard on
/// VNC only.
fn console_args(spec: &VmSpec, run: &RunDir, v: &mut Vec<String>) {
    if spec.console.has_vnc() {
        v.push("-vnc".into());
        v.push(format!("unix:{}", p(&run.vnc())));
        // mouse=off: the pointer stays the USB tablet's, whatever the guest's agent says.
        v.push("-chardev".into());
        v.push("qemu-vdagent,id=vdagent0,name=vdagent,clipboard=on,mouse=off".into());
    } else if spec.console.has_spice() {
        v.push("-chardev".into());
        v.push("spicevmc,id=vdagent0,name=vdagent".into());
    }
    if spec.console.has_vnc() || spec.console.has_spice() {
        v.push("-device".into());
        v.push(format!(
            "virtserialport,bus=vser0.0,chardev=vdagent0,name={CLIPBOARD_AGENT_PORT}"
        ));
    }
    if spec.console.has_spice() {
        v.push("-spice".into());
        v.push(format!(
            "unix=on,addr={},disable-ticketing=on",
            p(&run.spice())
        ));
    }
}

fn boot_args(boot: &BootSource, v: &mut Vec<String>) {
    match boot {
        BootSource::Kernel {
            kernel,
            initrd,
            cmdline,
        } => {
            v.push("-kernel".into());
            v.push(p(kernel));
            if let Some(i) = initrd {
                v.push("-initrd".into());
                v.push(p(i));
            }
            v.push("-append".into());
            v.push(cmdline.clone());
        }
        BootSource::Disk { path, .. } => {
            v.push("-drive".into());
            v.push(format!(
                "file={},if=virtio,cache=writeback",
                p(path).replace(',', ",,")
            ));
        }
        BootSource::Firmware => {}
    }
}

/// One NIC: a passed-through VF, or a netdev (user networking or its tap) and its
/// device. A NIC without its VF or tap is left out rather than put somewhere else.
fn nic_args(nic: &NicSpec, vfs: &[VfAssignment], taps: &[TapAssignment], v: &mut Vec<String>) {
    match nic.model {
        NicModel::Sriov => {
            if let Some(vf) = vfs.iter().find(|v| v.nic_id == nic.id) {
                v.push("-device".into());
                v.push(format!("vfio-pci,host={},id={}", vf.pci_address, nic.id));
            }
        }
        model => {
            let netdev = match &nic.attach {
                NicAttachment::User => format!("user,id=net-{}", nic.id),
                NicAttachment::Switch { .. } => {
                    let Some(tap) = taps.iter().find(|t| t.nic_id == nic.id) else {
                        return;
                    };
                    tap.netdev_arg()
                }
            };
            v.push("-netdev".into());
            v.push(netdev);
            v.push("-device".into());
            v.push(format!(
                "{},netdev=net-{},mac={},id={}",
                model.qemu_driver(),
                nic.id,
                nic.mac,
                nic.id
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::nic::NicRequest;
    use crate::spec::vm::{ConsoleConfig, VmDefinition};
    use std::path::Path;

    fn spec() -> VmSpec {
        VmDefinition {
            name: "t1".into(),
            uuid: Some(uuid::Uuid::from_u128(1)),
            vcpus: 2,
            memory_mib: 128,
            boot: BootSource::Firmware,
            console: ConsoleConfig::Both,
            nics: ["e1000", "rtl8139", "virtio", "sriov,pf=enp3s0f0"]
                .iter()
                .map(|s| s.parse::<NicRequest>().expect("nic"))
                .collect(),
            accel: Accel::Tcg,
            autostart: false,
            keyboard_layout: None,
        }
        .into_spec(&[])
        .expect("spec")
    }

    #[test]
    fn command_line_has_everything() {
        let s = spec();
        let run = RunDir::new(Path::new("/run/x"), &s.name);
        let vfs = [VfAssignment {
            nic_id: "nic3".into(),
            pci_address: "0000:03:10.1".into(),
        }];
        let args: Vec<String> = command_line(&s, &run, "tcg", &vfs, &[])
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        for want in [
            "-machine pc,accel=tcg",
            "-smp 2",
            "-m 128",
            "-uuid 00000000-0000-0000-0000-000000000001",
            "-vnc unix:/run/x/t1/vnc.sock",
            "unix=on,addr=/run/x/t1/spice.sock",
            "name=org.qemu.guest_agent.0",
            "qemu-vdagent,id=vdagent0,name=vdagent,clipboard=on,mouse=off",
            "virtserialport,bus=vser0.0,chardev=vdagent0,name=com.redhat.spice.0",
            "-pidfile /run/x/t1/qemu.pid",
            "vfio-pci,host=0000:03:10.1,id=nic3",
            "-daemonize",
            "socket,id=serial0,path=/run/x/t1/serial.sock,server=on,wait=off,logfile=/run/x/t1/serial.log,logappend=on",
            "-serial chardev:serial0",
        ] {
            assert!(joined.contains(want), "missing {want:?} in {joined}");
        }
        for model in [NicModel::E1000, NicModel::Rtl8139, NicModel::Virtio] {
            assert!(joined.contains(&format!("{},netdev=", model.qemu_driver())));
        }
    }

    #[test]
    fn switch_nics_use_their_tap() {
        let mut s = spec();
        s.nics[1].attach = crate::spec::nic::NicAttachment::Switch {
            switch: "sw0".into(),
            vlan: Some(5),
        };
        s.nics[2].attach = s.nics[1].attach.clone();
        let run = RunDir::new(Path::new("/run/x"), &s.name);
        let taps = [TapAssignment {
            nic_id: "nic1".into(),
            ifname: "vt525400000001".into(),
            vnet_hdr: false,
        }];
        let joined = command_line(&s, &run, "tcg", &[], &taps)
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(joined.contains(
            "-netdev tap,id=net-nic1,ifname=vt525400000001,script=no,downscript=no,vnet_hdr=off -device rtl8139,netdev=net-nic1"
        ), "{joined}");
        assert!(joined.contains("-netdev user,id=net-nic0"), "{joined}");
        // nic2 has no tap: left out rather than silently put on user networking.
        assert!(!joined.contains("net-nic2"), "{joined}");
    }
}
