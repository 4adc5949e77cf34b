//! Helpers of the network tests: network namespaces and veths that the tests create
//! (and always remove, through Drop guards), a harness with private OVS daemons, and
//! `guest-exec` through the guest agent. Never touches the host's own interfaces.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::Harness;
use vmm_backend::net::{tap_name, OvsMode};
use vmm_backend::VmBackend;

/// Fails (never skips) when Open vSwitch or iproute2 are missing.
pub fn require_tools() {
    for (tool, pkg) in [
        ("ovs-vswitchd", "openvswitch-switch"),
        ("ovsdb-server", "openvswitch-switch"),
        ("ovs-vsctl", "openvswitch-switch"),
        ("ip", "iproute2"),
        ("ping", "iputils-ping"),
    ] {
        let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(tool).exists());
        assert!(
            found,
            "{tool} is missing: the network tests need the Debian package {pkg} \
             (scripts/setup.sh installs it)"
        );
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "the network tests create namespaces, veths and taps: run them as root"
    );
}

/// A short name unique to this process and a counter (interface names are 15 bytes).
pub fn uniq(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let s = format!("{prefix}{:04x}{n:x}", std::process::id() & 0xffff);
    assert!(s.len() <= 15, "{s} is too long for an interface name");
    s
}

/// Runs a command, panicking with its stderr on failure; returns stdout.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command, ignoring its result (cleanup).
pub fn sh_quiet(args: &[&str]) {
    let _ = Command::new(args[0])
        .args(&args[1..])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Netns {
        let name = uniq(prefix);
        sh(&["ip", "netns", "add", &name]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Netns { name }
    }

    /// Runs a command inside the namespace; returns (success, stdout).
    pub fn exec(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    pub fn ip(&self, args: &[&str]) {
        let mut a = vec!["ip", "-n", &self.name];
        a.extend_from_slice(args);
        sh(&a);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        sh_quiet(&["ip", "netns", "del", &self.name]);
    }
}

/// A veth pair: `host` stays in the host namespace (an uplink for a vSwitch), `peer`
/// goes into `ns` with `addr` if given. Deleted on drop (deleting one end deletes both).
pub struct Veth {
    pub host: String,
    pub peer: String,
}

impl Veth {
    pub fn new(prefix: &str, ns: &Netns) -> Veth {
        let host = uniq(prefix);
        let peer = format!("{host}p");
        sh(&[
            "ip", "link", "add", &host, "type", "veth", "peer", "name", &peer,
        ]);
        let v = Veth { host, peer };
        sh(&["ip", "link", "set", &v.peer, "netns", &ns.name]);
        sh(&["ip", "link", "set", &v.host, "up"]);
        ns.ip(&["link", "set", &v.peer, "up"]);
        // The userspace datapath forwards what it reads from AF_PACKET sockets:
        // checksums must be complete (UDP/TCP), so no TX checksum offload on the peer.
        sh_quiet(&[
            "ip", "netns", "exec", &ns.name, "ethtool", "-K", &v.peer, "tx", "off",
        ]);
        v
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        sh_quiet(&["ip", "link", "del", &self.host]);
    }
}

/// A VM harness whose vSwitches run on private OVS daemons; on drop it kills the
/// QEMUs, removes the VMs' taps and stops the daemons (which removes the bridges).
pub struct NetHarness {
    pub h: Harness,
}

impl NetHarness {
    pub fn new() -> NetHarness {
        require_tools();
        let h = Harness::with(|c| {
            c.ovs_mode = OvsMode::Private;
            c.qemu_timeout = Duration::from_secs(40);
        });
        NetHarness { h }
    }

    /// Creates a private vSwitch (no uplinks) named `uniq(prefix)`; returns it.
    pub async fn private_switch(&self, prefix: &str) -> vmm_backend::net::SwitchInfo {
        self.backend()
            .net()
            .create_switch(vmm_backend::net::SwitchRequest {
                name: uniq(prefix),
                uplinks: vec![],
                bond_mode: None,
                bond_name: None,
            })
            .await
            .unwrap()
    }

    pub fn backend(&self) -> &vmm_backend::QemuBackend {
        &self.h.backend
    }

    /// `ovs-vsctl` on our private database.
    pub fn vsctl(&self, args: &[&str]) -> String {
        let db = format!(
            "--db=unix:{}",
            self.backend()
                .net()
                .config()
                .ovs_run_dir
                .join("db.sock")
                .display()
        );
        let mut a = vec!["ovs-vsctl", db.as_str(), "--timeout=10"];
        a.extend_from_slice(args);
        sh(&a)
    }

    /// What OVS shows (for failure messages): config, MAC table, port counters.
    pub fn diag(&self, switch: &str) -> String {
        let dir = self.backend().net().config().ovs_run_dir.clone();
        let ctl = dir.join("ovs-vswitchd.ctl");
        let ctl = ctl.to_string_lossy();
        let run = |args: &[&str]| {
            Command::new(args[0])
                .args(&args[1..])
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout).into_owned()
                        + &String::from_utf8_lossy(&o.stderr)
                })
                .unwrap_or_default()
        };
        let db = format!("--db=unix:{}", dir.join("db.sock").display());
        format!(
            "--- ovs-vsctl show\n{}--- fdb/show\n{}--- dpctl/show\n{}--- dump-flows\n{}--- log tail\n{}",
            run(&["ovs-vsctl", &db, "show"]),
            run(&["ovs-appctl", "-t", &ctl, "fdb/show", switch]),
            run(&["ovs-appctl", "-t", &ctl, "dpctl/show", "-s"]),
            run(&["ovs-appctl", "-t", &ctl, "dpctl/dump-flows"]),
            std::fs::read_to_string(dir.join("ovs-vswitchd.log"))
                .unwrap_or_default()
                .lines()
                .rev()
                .take(25)
                .collect::<Vec<_>>()
                .join("\n"),
        )
    }

    /// Waits for `marker` on the serial console, returning how long it took.
    pub async fn wait_serial(&self, vm: &str, marker: &str, timeout: Duration) -> Duration {
        let t = Instant::now();
        self.h.wait_serial(vm, marker, timeout).await;
        t.elapsed()
    }

    /// Runs a command in the guest through the guest agent; (exit code, output).
    pub async fn guest_exec(&self, vm: &str, argv: &[&str], timeout: Duration) -> (i64, String) {
        let sock = self.h.run_dir(vm).join("qga.sock");
        let deadline = Instant::now() + timeout;
        loop {
            match tokio::time::timeout(timeout, guest_exec_once(&sock, argv, deadline)).await {
                Ok(Ok(r)) => return r,
                Ok(Err(e)) if Instant::now() < deadline => {
                    eprintln!("guest-exec in {vm}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Ok(Err(e)) => panic!("guest-exec {argv:?} in {vm}: {e}"),
                Err(_) => panic!("guest-exec {argv:?} in {vm}: no answer within {timeout:?}"),
            }
        }
    }

    /// Gives the guest's `dev` a static address. Waits until the guest's DHCP client
    /// for `dev` has started (its start flushes addresses), then adds the address.
    pub async fn set_guest_ip(&self, vm: &str, dev: &str, cidr: &str) {
        let script = format!(
            "i=0; while [ $i -lt 100 ] && ! grep -q discover /run/vmgw/udhcpc.{dev}.log 2>/dev/null; \
             do sleep 0.1; i=$((i+1)); done; \
             ip addr add {cidr} dev {dev} && ip link set {dev} up && ip -4 addr show dev {dev}"
        );
        let (rc, out) = self
            .guest_exec(vm, &["/bin/sh", "-c", &script], Duration::from_secs(60))
            .await;
        assert_eq!(rc, 0, "{vm}: setting {cidr} on {dev}: {out}");
    }

    /// Waits until the guest agent reports `ip` on the interface with `mac`.
    pub async fn wait_agent_ip(&self, vm: &str, mac: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.backend().guest_addresses(vm).await;
            if let Ok(a) = &r {
                if let Some(x) = a
                    .iter()
                    .find(|a| a.mac.as_deref() == Some(mac) && a.address.is_ipv4())
                {
                    return x.address.to_string();
                }
            }
            assert!(
                Instant::now() < deadline,
                "{vm}: the guest agent reports no IPv4 address on {mac}: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

async fn guest_exec_once(
    sock: &Path,
    argv: &[&str],
    deadline: Instant,
) -> Result<(i64, String), String> {
    use qapi::futures::QgaStreamTokio;
    let stream = QgaStreamTokio::open_uds(sock)
        .await
        .map_err(|e| e.to_string())?;
    let (service, events) = stream.into_parts();
    let reader = events.spawn_tokio();
    let r = async {
        service
            .guest_sync(rand::random::<i32>() & 0x7fff_ffff)
            .await
            .map_err(|e| e.to_string())?;
        let started = service
            .execute(qapi::qga::guest_exec {
                path: argv[0].into(),
                arg: Some(argv[1..].iter().map(|s| s.to_string()).collect()),
                env: None,
                input_data: None,
                capture_output: Some(serde_json::from_value(serde_json::json!(true)).unwrap()),
            })
            .await
            .map_err(|e| e.to_string())?;
        loop {
            let st = service
                .execute(qapi::qga::guest_exec_status { pid: started.pid })
                .await
                .map_err(|e| e.to_string())?;
            if st.exited {
                let mut out =
                    String::from_utf8_lossy(&st.out_data.unwrap_or_default()).into_owned();
                out.push_str(&String::from_utf8_lossy(&st.err_data.unwrap_or_default()));
                return Ok((st.exitcode.unwrap_or(-1), out));
            }
            if Instant::now() >= deadline {
                return Err(format!("{argv:?} still running"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    .await;
    reader.abort();
    r
}

impl Drop for NetHarness {
    fn drop(&mut self) {
        for pid in self.h.live_qemus() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(100));
        let vms = self.h.dir.path().join("vms");
        for e in std::fs::read_dir(vms).into_iter().flatten().flatten() {
            let Ok(text) = std::fs::read_to_string(e.path()) else {
                continue;
            };
            let Ok(spec) = serde_json::from_str::<vmm_backend::VmSpec>(&text) else {
                continue;
            };
            for nic in &spec.nics {
                let tap = tap_name(&nic.mac);
                if Path::new("/sys/class/net").join(&tap).exists() {
                    sh_quiet(&["ip", "link", "del", &tap]);
                }
            }
        }
        if let Err(e) = self.backend().net().stop_daemons() {
            eprintln!("stopping the private OVS daemons: {e}");
        }
    }
}

/// Parses ping's summary: (transmitted, received).
pub fn ping_counts(out: &str) -> (u32, u32) {
    let line = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary in {out}"));
    let nums: Vec<u32> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    (nums[0], nums[1])
}
