//! QEMU: the command line, the detached process, and its QMP and guest-agent sockets.
//!
//! Every VM runs as a daemonized `qemu-system-x86_64` that outlives the process that
//! started it (as libvirt's do). Its run directory (mode 0700) holds the pidfile, the QMP
//! sockets, the console sockets (0600) and the logs; a new backend instance finds the VM
//! there and re-attaches.

use std::ffi::OsString;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use qapi::futures::{QapiStream, QgaStreamTokio, QmpStreamTokio};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::UnixStream;

use crate::vm::{Accel, BootSource, VmSpec};

/// Errors talking to QEMU.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("QEMU did not start: {0}")]
    StartFailed(String),
    #[error("running {binary}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("QMP socket {path}")]
    QmpConnect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("QMP command {command} failed: {message}")]
    Qmp {
        command: &'static str,
        message: String,
    },
    #[error("QMP did not answer within {0:?}")]
    QmpTimeout(Duration),
    #[error("guest agent not running (no answer within {0:?})")]
    GuestAgentNotRunning(Duration),
    #[error("guest agent error: {0}")]
    GuestAgent(String),
    #[error("KVM was requested but /dev/kvm is not usable")]
    KvmUnavailable,
    #[error("unix socket path {0} is longer than 107 bytes; use a shorter run directory")]
    SocketPathTooLong(PathBuf),
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Files of one VM's run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub dir: PathBuf,
}

impl RunDir {
    pub fn new(run_root: &Path, name: &str) -> RunDir {
        RunDir {
            dir: run_root.join(name),
        }
    }
    pub fn pidfile(&self) -> PathBuf {
        self.dir.join("qemu.pid")
    }
    pub fn qmp(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }
    /// A second QMP monitor, used only to listen to events.
    pub fn qmp_events(&self) -> PathBuf {
        self.dir.join("events.sock")
    }
    pub fn qga(&self) -> PathBuf {
        self.dir.join("qga.sock")
    }
    pub fn vnc(&self) -> PathBuf {
        self.dir.join("vnc.sock")
    }
    pub fn spice(&self) -> PathBuf {
        self.dir.join("spice.sock")
    }
    pub fn serial_log(&self) -> PathBuf {
        self.dir.join("serial.log")
    }
    /// QEMU's log once it runs (`-D`): its last words, such as the signal that ended it.
    pub fn qemu_log(&self) -> PathBuf {
        self.dir.join("qemu.log")
    }
    /// QEMU's standard error while it starts: why it refused to.
    pub fn start_log(&self) -> PathBuf {
        self.dir.join("qemu-start.log")
    }
    pub fn exit_reason(&self) -> PathBuf {
        self.dir.join("exit-reason")
    }
    pub fn lock(&self) -> PathBuf {
        self.dir.with_extension("lock")
    }

    fn sockets(&self) -> [PathBuf; 5] {
        [
            self.qmp(),
            self.qmp_events(),
            self.qga(),
            self.vnc(),
            self.spice(),
        ]
    }

    /// Empties the directory (a previous run's leftovers) and makes it private.
    pub fn prepare(&self) -> Result<(), QemuError> {
        let io = |op, path: &Path| {
            let path = path.to_owned();
            move |source| QemuError::Io { op, path, source }
        };
        for s in self.sockets() {
            if s.as_os_str().len() > 107 {
                return Err(QemuError::SocketPathTooLong(s));
            }
        }
        if self.dir.exists() {
            std::fs::remove_dir_all(&self.dir).map_err(io("clearing", &self.dir))?;
        }
        std::fs::create_dir_all(&self.dir).map_err(io("creating", &self.dir))?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io("setting the mode of", &self.dir))?;
        Ok(())
    }

    /// Makes sure every socket QEMU created is 0600 (QEMU follows the umask; this is the
    /// belt to those braces).
    pub fn lock_down_sockets(&self) {
        for s in self.sockets() {
            if s.exists() {
                let _ = std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o600));
            }
        }
    }

    /// Removes the sockets and pidfile of a VM that is no longer running, keeping the
    /// logs and the exit reason for `show`.
    pub fn clear_runtime(&self) {
        for s in self.sockets() {
            let _ = std::fs::remove_file(s);
        }
        let _ = std::fs::remove_file(self.pidfile());
    }
}

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

/// Builds QEMU's argument vector for a VM. Pure: no I/O, so it is unit-tested. A NIC
/// attached to a vSwitch uses its tap from `taps` (a NIC without one is left out).
pub fn command_line(
    spec: &VmSpec,
    run: &RunDir,
    accel: &str,
    vfs: &[VfAssignment],
    taps: &[TapAssignment],
) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |s: &str| a.push(s.into());
    let p = |p: PathBuf| p.to_string_lossy().into_owned();
    let args: Vec<String> = {
        let mut v = vec![
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
            p(run.pidfile()),
            "-D".into(),
            p(run.qemu_log()),
            "-chardev".into(),
            format!("socket,id=qmp,path={},server=on,wait=off", p(run.qmp())),
            "-mon".into(),
            "chardev=qmp,mode=control".into(),
            "-chardev".into(),
            format!(
                "socket,id=qmpev,path={},server=on,wait=off",
                p(run.qmp_events())
            ),
            "-mon".into(),
            "chardev=qmpev,mode=control".into(),
            "-chardev".into(),
            format!("file,id=serial0,path={}", p(run.serial_log())),
            "-serial".into(),
            "chardev:serial0".into(),
            "-device".into(),
            "virtio-serial-pci,id=vser0".into(),
            "-chardev".into(),
            format!("socket,id=qga0,path={},server=on,wait=off", p(run.qga())),
            "-device".into(),
            "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0".into(),
            "-device".into(),
            "usb-ehci,id=usb".into(),
            "-device".into(),
            "usb-tablet,bus=usb.0".into(),
        ];
        if spec.console.has_vnc() {
            v.push("-vnc".into());
            v.push(format!("unix:{}", p(run.vnc())));
        }
        if spec.console.has_spice() {
            v.push("-spice".into());
            v.push(format!(
                "unix=on,addr={},disable-ticketing=on",
                p(run.spice())
            ));
        }
        match &spec.boot {
            BootSource::Kernel {
                kernel,
                initrd,
                cmdline,
            } => {
                v.push("-kernel".into());
                v.push(p(kernel.clone()));
                if let Some(i) = initrd {
                    v.push("-initrd".into());
                    v.push(p(i.clone()));
                }
                v.push("-append".into());
                v.push(cmdline.clone());
            }
            BootSource::Disk { path, .. } => {
                v.push("-drive".into());
                v.push(format!(
                    "file={},if=virtio,cache=writeback",
                    p(path.clone()).replace(',', ",,")
                ));
            }
            BootSource::Firmware => {}
        }
        for nic in &spec.nics {
            match nic.model {
                crate::nic::NicModel::Sriov => {
                    if let Some(vf) = vfs.iter().find(|v| v.nic_id == nic.id) {
                        v.push("-device".into());
                        v.push(format!("vfio-pci,host={},id={}", vf.pci_address, nic.id));
                    }
                }
                model => {
                    v.push("-netdev".into());
                    match &nic.attach {
                        crate::nic::NicAttachment::User => {
                            v.push(format!("user,id=net-{}", nic.id));
                        }
                        crate::nic::NicAttachment::Switch { .. } => {
                            let Some(tap) = taps.iter().find(|t| t.nic_id == nic.id) else {
                                v.pop();
                                continue;
                            };
                            v.push(tap.netdev_arg());
                        }
                    }
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
        v
    };
    for s in &args {
        push(s);
    }
    a
}

/// The pid in a pidfile, if that process is alive, not a zombie, and is the QEMU of
/// this VM (its command line carries the uuid, so a recycled pid is not mistaken).
pub fn live_pid(run: &RunDir, uuid: &uuid::Uuid) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(run.pidfile())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    pid_is_vm(pid, uuid).then_some(pid)
}

fn pid_is_vm(pid: i32, uuid: &uuid::Uuid) -> bool {
    if pid <= 0 {
        return false;
    }
    let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s,
        Err(_) => return false,
    };
    // The state follows the parenthesised command name.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    if matches!(state, Some('Z') | Some('X') | None) {
        return false;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let needle = uuid.to_string();
    cmdline
        .split(|b| *b == 0)
        .any(|arg| arg == needle.as_bytes())
}

/// Waits until `pid` is gone (or a zombie), up to `timeout`.
pub async fn wait_gone(pid: i32, uuid: &uuid::Uuid, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if !pid_is_vm(pid, uuid) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends a signal to a VM's QEMU, checking identity first.
pub fn signal(pid: i32, uuid: &uuid::Uuid, sig: nix::sys::signal::Signal) {
    if pid_is_vm(pid, uuid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    }
}

/// Starts QEMU detached. Returns when QEMU has daemonized (its devices are set up and
/// its sockets listen) or with QEMU's own error message when it refused to start.
pub async fn spawn(
    binary: &Path,
    args: Vec<OsString>,
    run: &RunDir,
    timeout: Duration,
) -> Result<(), QemuError> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run.start_log())
        .map_err(|source| QemuError::Io {
            op: "opening",
            path: run.start_log(),
            source,
        })?;
    let mut cmd = tokio::process::Command::new(binary);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true);
    #[allow(unsafe_code)]
    // SAFETY: only async-signal-safe calls (umask, setsid) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
            let _ = nix::unistd::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| QemuError::Spawn {
        binary: binary.to_owned(),
        source,
    })?;
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => {
            return Err(QemuError::Spawn {
                binary: binary.to_owned(),
                source,
            })
        }
        Err(_) => {
            let _ = child.kill().await;
            return Err(QemuError::StartFailed(format!(
                "no answer within {timeout:?}"
            )));
        }
    };
    if !status.success() {
        // Before daemonizing QEMU reports on stderr, or in its -D log when it has one.
        let log = [run.start_log(), run.qemu_log()]
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n");
        let msg = log
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("exited without a message")
            .trim()
            .trim_start_matches(&*binary.to_string_lossy())
            .trim_start_matches(": ")
            .to_owned();
        return Err(QemuError::StartFailed(msg));
    }
    run.lock_down_sockets();
    Ok(())
}

/// QEMU's last words in its log, e.g. "terminating on signal 15 from pid 123".
pub fn last_log_line(run: &RunDir) -> Option<String> {
    let log = std::fs::read_to_string(run.qemu_log()).ok()?;
    log.lines().rev().find(|l| !l.trim().is_empty()).map(|l| {
        l.split_once(": ")
            .map(|(_, m)| m)
            .unwrap_or(l)
            .trim()
            .to_owned()
    })
}

type QmpRead = QmpStreamTokio<ReadHalf<UnixStream>>;
type QmpWrite = QmpStreamTokio<WriteHalf<UnixStream>>;
type QgaRead = QgaStreamTokio<ReadHalf<UnixStream>>;
type QgaWrite = QgaStreamTokio<WriteHalf<UnixStream>>;

/// One short-lived QMP session: connect, negotiate, run commands, close. Sessions are
/// short so that the CLI, the gateway and tests can all drive the same VM.
pub struct Qmp {
    stream: QapiStream<QmpRead, QmpWrite>,
    timeout: Duration,
}

impl std::fmt::Debug for Qmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qmp").finish_non_exhaustive()
    }
}

impl Qmp {
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QemuError> {
        let fut = async {
            let neg =
                QmpStreamTokio::open_uds(path)
                    .await
                    .map_err(|source| QemuError::QmpConnect {
                        path: path.to_owned(),
                        source,
                    })?;
            neg.negotiate()
                .await
                .map_err(|source| QemuError::QmpConnect {
                    path: path.to_owned(),
                    source,
                })
        };
        let stream = tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| QemuError::QmpTimeout(timeout))??;
        Ok(Qmp { stream, timeout })
    }

    pub async fn execute<C>(&mut self, command: C) -> Result<C::Ok, QemuError>
    where
        C: qapi::qmp::QmpCommand + 'static,
    {
        let name = <C as qapi::Command>::NAME;
        match tokio::time::timeout(self.timeout, self.stream.execute(command)).await {
            Err(_) => Err(QemuError::QmpTimeout(self.timeout)),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(QemuError::Qmp {
                command: name,
                message: e.to_string(),
            }),
        }
    }
}

/// Listens to a VM's event monitor until QEMU goes away; calls `on_event` per event.
pub async fn watch_events<F>(
    path: &Path,
    timeout: Duration,
    mut on_event: F,
) -> Result<(), QemuError>
where
    F: FnMut(qapi::qmp::Event),
{
    let qmp = Qmp::connect(path, timeout).await?;
    let (_service, mut events) = qmp.stream.into_parts();
    while let Some(ev) = events.next().await {
        match ev {
            Ok(ev) => on_event(ev),
            Err(_) => break,
        }
    }
    Ok(())
}

/// An IP address the guest agent reported.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GuestAddress {
    pub interface: String,
    pub mac: Option<String>,
    pub address: std::net::IpAddr,
    pub prefix: u8,
}

async fn qga_once(path: &Path) -> Result<Vec<GuestAddress>, QemuError> {
    let stream: QapiStream<QgaRead, QgaWrite> =
        QgaStreamTokio::open_uds(path)
            .await
            .map_err(|source| QemuError::Io {
                op: "connecting to the guest agent socket",
                path: path.to_owned(),
                source,
            })?;
    let (service, events) = stream.into_parts();
    let reader = events.spawn_tokio();
    let result = async {
        service
            .guest_sync(rand::random::<i32>() & 0x7fff_ffff)
            .await
            .map_err(|e| QemuError::GuestAgent(e.to_string()))?;
        service
            .execute(qapi::qga::guest_network_get_interfaces {})
            .await
            .map_err(|e| QemuError::GuestAgent(e.to_string()))
    }
    .await;
    reader.abort();
    let ifaces = result?;
    let mut out = Vec::new();
    for iface in ifaces {
        for ip in iface.ip_addresses.unwrap_or_default() {
            let Ok(address) = ip.ip_address.parse() else {
                continue;
            };
            out.push(GuestAddress {
                interface: iface.name.clone(),
                mac: iface.hardware_address.clone(),
                address,
                prefix: u8::try_from(ip.prefix).unwrap_or(0),
            });
        }
    }
    Ok(out)
}

/// The guest's addresses through the guest agent, or `GuestAgentNotRunning` when it does
/// not answer within `timeout`. Retries once on a garbled exchange (a stale answer to an
/// earlier client's command).
pub async fn guest_addresses(
    path: &Path,
    timeout: Duration,
) -> Result<Vec<GuestAddress>, QemuError> {
    let attempt = async {
        let mut last = None;
        for _ in 0..3 {
            match qga_once(path).await {
                Ok(v) => return Ok(v),
                // The socket is gone or refuses (QEMU exiting): the agent is unreachable.
                Err(QemuError::Io { source, .. }) => {
                    last = Some(QemuError::GuestAgent(format!("unreachable ({source})")))
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(QemuError::GuestAgentNotRunning(timeout)))
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(QemuError::GuestAgentNotRunning(timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nic::{NicModel, NicRequest};
    use crate::vm::{ConsoleConfig, VmDefinition};

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
            "-pidfile /run/x/t1/qemu.pid",
            "vfio-pci,host=0000:03:10.1,id=nic3",
            "-daemonize",
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
        s.nics[1].attach = crate::nic::NicAttachment::Switch {
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
