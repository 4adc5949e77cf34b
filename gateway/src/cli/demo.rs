//! `gateway demo`: everything on embedded defaults — a data directory, a self-signed
//! certificate, the SQLite store, a demo VM (the small Linux test guest, so the visitor
//! lands at a real shell), an admin token and a password-protected link.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use gateway::config::Config;
use gateway::model::links::{ConsoleType, LinkRequest};
use vmm_backend::{
    Accel, BootSource, ConsoleConfig, PowerAction, VmBackend, VmDefinition, VmState,
};

/// The demo VM's name.
const DEMO_VM: &str = "demo";

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Public (visitor) listener; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8443")]
    public_listen: SocketAddr,
    /// Admin listener; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8444")]
    admin_listen: SocketAddr,
    /// Print one JSON line with the addresses, token, link and password once ready.
    #[arg(long)]
    json: bool,
    /// Leave the demo VM running when the demo stops.
    #[arg(long)]
    keep_vm: bool,
    /// Link lifetime in seconds.
    #[arg(long, default_value_t = 86_400)]
    link_ttl: u64,
    /// The demo VM's consoles when it is first defined: vnc, spice or both (a VM with
    /// both has the clipboard on VNC only; a SPICE-only VM has it on SPICE).
    #[arg(long, default_value = "both")]
    vm_console: String,
}

fn random_password() -> String {
    // 12 characters without look-alikes, from the OS CSPRNG.
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut raw = [0u8; 12];
    gateway::model::links::os_random(&mut raw);
    raw.iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// The recipe of the demo guest (the project's test guest: a Debian kernel and a
/// busybox initramfs with the guest agent), built into the binary so that an installed
/// copy can build its guest with no source tree.
#[derive(rust_embed::RustEmbed)]
#[folder = "../vmm-backend/guest/"]
struct GuestKit;

/// Where the demo guest is cached: `VMGW_TEST_GUEST_DIR` (the test suite's cache), else
/// `$XDG_CACHE_HOME/vm-gateway/guest`, `~/.cache/vm-gateway/guest`, or the data directory.
fn guest_cache(data_dir: &Path) -> PathBuf {
    if let Some(d) = std::env::var_os("VMGW_TEST_GUEST_DIR") {
        return PathBuf::from(d);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    match cache {
        Some(c) => c.join("vm-gateway/guest"),
        None => data_dir.join("guest"),
    }
}

/// Writes the embedded recipe into `dir` (scripts executable).
fn unpack_guest_kit(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for name in GuestKit::iter() {
        let Some(file) = GuestKit::get(&name) else {
            continue;
        };
        let path = dir.join(name.as_ref());
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, &file.data).with_context(|| format!("writing {}", path.display()))?;
        let mode = if file.data.starts_with(b"#!") {
            0o755
        } else {
            0o644
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// The demo guest's kernel and initramfs: found in the cache, or built there from the
/// embedded recipe (Debian packages, about a minute the first time).
fn guest_image(data_dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let out = guest_cache(data_dir);
    let (k, i) = (out.join("vmlinuz"), out.join("initrd.img"));
    let kit = out.join("recipe");
    unpack_guest_kit(&kit)?;
    if !(k.is_file() && i.is_file()) {
        eprintln!(
            "Building the demo guest in {} (a Debian kernel and a busybox initramfs from \
             Debian packages; once, about a minute)...",
            out.display()
        );
    }
    // The script checks its own cache stamp and returns at once when it is current.
    let st = std::process::Command::new("bash")
        .arg(kit.join("build-test-guest.sh"))
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .context("running the guest build script")?;
    if !(st.success() && k.is_file() && i.is_file()) {
        anyhow::bail!("building the demo guest failed (see the messages above)");
    }
    Ok((k, i))
}

async fn demo_vm(
    backend: &dyn VmBackend,
    data_dir: &Path,
    console: ConsoleConfig,
) -> anyhow::Result<()> {
    if backend.get(DEMO_VM).await.is_err() {
        let (kernel, initrd) = guest_image(data_dir)?;
        let boot = BootSource::Kernel {
            kernel,
            initrd: Some(initrd),
            cmdline: "console=ttyS0 quiet".into(),
        };
        backend
            .define(VmDefinition {
                name: DEMO_VM.into(),
                uuid: None,
                vcpus: 1,
                memory_mib: 256,
                boot,
                console,
                nics: vec!["virtio".parse()?],
                // Linux guests under nested KVM hang on some hosts; TCG always works.
                accel: Accel::Tcg,
                autostart: false,
                keyboard_layout: None,
            })
            .await?;
    }
    if backend.get(DEMO_VM).await?.state == VmState::Stopped {
        backend.power(DEMO_VM, PowerAction::Start).await?;
    }
    Ok(())
}

pub async fn run(args: DemoArgs, mut cfg: Config, data_dir_given: bool) -> anyhow::Result<()> {
    if !data_dir_given {
        cfg.data_dir = cfg.data_dir.join("demo");
    }
    cfg.public_listen = args.public_listen;
    cfg.admin_listen = args.admin_listen;
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let data_dir = cfg.data_dir.clone();
    let backend = Arc::new(gateway::launch::open_backend(&cfg, true)?);
    let asked = args.vm_console.parse::<ConsoleConfig>()?;
    demo_vm(backend.as_ref(), &data_dir, asked).await?;
    // The link goes to the console the VM has (a VM kept from an earlier run keeps its).
    let vm_console = backend.get(DEMO_VM).await?.spec.console;

    let gw = gateway::launch::Gateway::bind(cfg, Some(backend.clone())).await?;
    let app = gw.app.clone();
    let gw_assets_empty = gw.assets.is_empty();
    let fingerprint = gw.self_signed_fingerprint.clone().unwrap_or_default();
    let (_, admin_token) = app
        .store()
        .create_admin_token(&format!("demo-{}", std::process::id()))
        .await?;
    let password = random_password();
    let created = app
        .create_link(
            LinkRequest {
                vm: DEMO_VM.into(),
                console: Some(if vm_console.has_vnc() {
                    ConsoleType::Vnc
                } else {
                    ConsoleType::Spice
                }),
                expires_at: None,
                ttl_seconds: Some(args.link_ttl),
                not_before: None,
                password: Some(password.clone().into()),
                max_uses: None,
                max_viewers: None,
                view_only: false,
                allow_power: true,
                note: Some("gateway demo".into()),
                // The demo link is the administrator's own: both ways.
                clipboard: Some(gateway::model::clipboard::ClipboardPolicy::Both),
                record: None,
            },
            None,
        )
        .await
        .map_err(|e| anyhow::anyhow!("creating the demo link: {e}"))?;
    let admin_url = format!("http://{}", gw.admin_addr);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "public_url": app.public_base(),
                "admin_url": admin_url,
                "admin_token": admin_token,
                "share_url": created.url,
                "password": password,
                "vm": DEMO_VM,
                "data_dir": data_dir,
                "cert_sha256": fingerprint,
            })
        );
    } else {
        println!("The gateway demo is running (Ctrl+C stops it).\n");
        println!("  Share link:     {}", created.url);
        println!("  Password:       {password}");
        println!("  Admin console:  {admin_url}/   (log in with the admin token)");
        println!("  Admin token:    {admin_token}");
        println!("  Data directory: {}\n", data_dir.display());
        println!("The certificate is self-signed: your browser will ask you to accept it.");
        println!("  SHA-256 fingerprint: {fingerprint}");
        if gw_assets_empty {
            println!("Note: the browser pages are not built; run static/build.sh (scripts/demo.sh does).");
        }
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    gw.serve(crate::shutdown_signal()).await;
    if !args.keep_vm {
        let _ = tokio::time::timeout(
            Duration::from_secs(20),
            backend.power(DEMO_VM, PowerAction::Poweroff),
        )
        .await;
    }
    Ok(())
}
