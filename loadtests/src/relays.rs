//! Starting the processes under test: the gateway (`gateway serve --config`), websockify,
//! and the bare TCP forwarder, each pinned to the relay core with `taskset`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::client::{http_call, tls_connector, Relay, RelayKind};

/// A started process; killed (with its descendants) by `stop` or on drop.
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
    pub pid: u32,
    pub log: PathBuf,
}

impl Proc {
    /// SIGKILL to the process and everything it forked (websockify's session children).
    pub async fn stop(mut self) {
        let pids: Vec<String> = crate::procinfo::tree_pids(self.pid)
            .into_iter()
            .map(|p| p.to_string())
            .collect();
        let _ = Command::new("kill").arg("-KILL").args(&pids).status().await;
        let _ = self.child.wait().await;
    }
}

/// `taskset -c CPU prog args…` when pinning, else `prog args…`.
fn pinned(cpu: Option<usize>, prog: &Path) -> Command {
    match cpu {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(c.to_string()).arg(prog);
            cmd
        }
        None => Command::new(prog),
    }
}

fn spawn_logged(mut cmd: Command, log: PathBuf) -> anyhow::Result<Proc> {
    let f = std::fs::File::create(&log)?;
    cmd.stdin(Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f)
        .kill_on_drop(true);
    let child = cmd.spawn().context("spawning")?;
    let pid = child.id().ok_or_else(|| anyhow!("no pid"))?;
    Ok(Proc { child, pid, log })
}

/// Waits for a line containing `needle` in a log file; returns that line.
async fn wait_log_line(p: &mut Proc, needle: &str, limit: Duration) -> anyhow::Result<String> {
    let start = Instant::now();
    while start.elapsed() < limit {
        let text = std::fs::read_to_string(&p.log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains(needle)) {
            return Ok(l.to_owned());
        }
        if let Some(st) = p.child.try_wait()? {
            bail!("exited ({st}); log {}:\n{text}", p.log.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("no {needle:?} in {} within {limit:?}", p.log.display())
}

/// The gateway's admin listener and a token for it.
#[derive(Debug, Clone)]
pub struct GatewayAdmin {
    pub addr: SocketAddr,
    pub token: String,
    /// The id of the link made to the backend.
    pub link_id: String,
    /// A second link to the backend, with the password [`LINK_PASSWORD`] (attack test).
    pub pw_link_token: String,
}

/// The password of the gateway's second link.
pub const LINK_PASSWORD: &str = "correct horse battery staple";

pub async fn admin_call(
    admin: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let tcp = TcpStream::connect(admin).await?;
    let auth = format!("Authorization: Bearer {token}\r\nContent-Type: application/json\r\n");
    let (status, _, resp) = http_call(tcp, method, path, &auth, &body.to_string()).await?;
    if !(200..300).contains(&status) {
        bail!(
            "{method} {path}: HTTP {status}: {}",
            String::from_utf8_lossy(&resp)
        );
    }
    Ok(serde_json::from_slice(&resp)?)
}

/// Starts `gateway serve` on a fresh data directory under `work`, registers the backend
/// as a raw external target and makes one link to it. `max_conns_per_ip` is the
/// gateway's per-address connection cap (all the load comes from 127.0.0.1).
pub async fn start_gateway(
    bin: &Path,
    work: &Path,
    cpu: Option<usize>,
    backend: SocketAddr,
    max_conns_per_ip: usize,
) -> anyhow::Result<(Proc, Relay, GatewayAdmin)> {
    start_gateway_with(bin, work, cpu, backend, max_conns_per_ip, "").await
}

/// [`start_gateway`] with more TOML appended to the gateway's configuration.
pub async fn start_gateway_with(
    bin: &Path,
    work: &Path,
    cpu: Option<usize>,
    backend: SocketAddr,
    max_conns_per_ip: usize,
    extra_toml: &str,
) -> anyhow::Result<(Proc, Relay, GatewayAdmin)> {
    let data = work.join("gateway-data");
    std::fs::create_dir_all(&data)?;
    let cfg = work.join("gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {data:?}\n\
             [public]\nlisten = \"127.0.0.1:0\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\
             [limits]\n\
             exchanges_per_ip_per_minute = 1000000\n\
             password_failures_before_lockout = 1000000000\n\
             max_connections = 20000\n\
             max_connections_per_ip = {max_conns_per_ip}\n\
             {extra_toml}"
        ),
    )?;
    let out = Command::new(bin)
        .arg("--config")
        .arg(&cfg)
        .args(["admin-token", "create", "bench"])
        .stdin(Stdio::null())
        .output()
        .await
        .context("gateway admin-token create")?;
    if !out.status.success() {
        bail!(
            "gateway admin-token create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let admin_token = String::from_utf8(out.stdout)?.trim().to_owned();

    let mut cmd = pinned(cpu, bin);
    cmd.arg("--config").arg(&cfg).arg("serve");
    let mut p = spawn_logged(cmd, work.join("gateway.log")).context("gateway serve")?;
    // "public listener https://127.0.0.1:P  admin listener 127.0.0.1:Q"
    let line = wait_log_line(&mut p, "public listener https://", Duration::from_secs(30)).await?;
    let mut words = line.split_whitespace();
    let public: SocketAddr = words
        .clone()
        .find(|w| w.starts_with("https://"))
        .and_then(|w| w.trim_start_matches("https://").parse().ok())
        .ok_or_else(|| anyhow!("cannot parse public address from {line:?}"))?;
    let admin: SocketAddr = words
        .by_ref()
        .last()
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| anyhow!("cannot parse admin address from {line:?}"))?;

    admin_call(
        admin,
        &admin_token,
        "POST",
        "/api/v1/targets",
        serde_json::json!({"name": "bench", "kind": "raw", "address": backend.to_string()}),
    )
    .await?;
    let link = admin_call(
        admin,
        &admin_token,
        "POST",
        "/api/v1/links",
        serde_json::json!({"vm": "bench", "console": "raw", "ttl_seconds": 3600}),
    )
    .await?;
    let link_token = link["token"]
        .as_str()
        .ok_or_else(|| anyhow!("link without token: {link}"))?
        .to_owned();
    let link_id = link["id"]
        .as_str()
        .ok_or_else(|| anyhow!("link without id: {link}"))?
        .to_owned();
    let pw_link = admin_call(
        admin,
        &admin_token,
        "POST",
        "/api/v1/links",
        serde_json::json!({"vm": "bench", "console": "raw", "ttl_seconds": 3600,
                           "password": LINK_PASSWORD}),
    )
    .await?;
    let pw_link_token = pw_link["token"]
        .as_str()
        .ok_or_else(|| anyhow!("link without token: {pw_link}"))?
        .to_owned();
    let tls = tls_connector(&data.join("tls/self-signed.crt"))?;
    let relay = Relay {
        name: "gateway",
        addr: public,
        origin: format!("https://{public}"),
        tls,
        kind: RelayKind::Gateway { link_token },
        pid: p.pid,
        src: None,
    };
    let admin = GatewayAdmin {
        addr: admin,
        token: admin_token,
        link_id,
        pw_link_token,
    };
    Ok((p, relay, admin))
}

/// Starts websockify (default engine, TLS only) with a fresh self-signed certificate.
pub async fn start_websockify(
    bin: &Path,
    work: &Path,
    cpu: Option<usize>,
    backend: SocketAddr,
) -> anyhow::Result<(Proc, Relay)> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])?;
    let crt = work.join("websockify.crt");
    let pem = work.join("websockify.pem");
    std::fs::write(&crt, ck.cert.pem())?;
    std::fs::write(
        &pem,
        format!("{}{}", ck.cert.pem(), ck.key_pair.serialize_pem()),
    )?;
    // A free port (released just before websockify binds it).
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut cmd = pinned(cpu, bin);
    cmd.arg(format!("--cert={}", pem.display()))
        .arg("--ssl-only")
        .arg(addr.to_string())
        .arg(backend.to_string());
    let mut p = spawn_logged(cmd, work.join("websockify.log")).context("websockify")?;
    wait_log_line(&mut p, "Listen on", Duration::from_secs(30)).await?;
    let relay = Relay {
        name: "websockify",
        addr,
        origin: format!("https://{addr}"),
        tls: tls_connector(&crt)?,
        kind: RelayKind::Plain,
        pid: p.pid,
        src: None,
    };
    Ok((p, relay))
}

/// A self-signed ECDSA P-256 certificate from rcgen (the kind the gateway makes) in
/// `work`: (certificate PEM path, key PEM path).
fn self_signed(work: &Path, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])?;
    let crt = work.join(format!("{name}.crt"));
    let key = work.join(format!("{name}.key"));
    std::fs::write(&crt, ck.cert.pem())?;
    std::fs::write(&key, ck.key_pair.serialize_pem())?;
    Ok((crt, key))
}

/// Starts this binary's reference relay (`ref-relay`, see `refrelay.rs`) to `backend`.
pub async fn start_reference(
    work: &Path,
    cpu: Option<usize>,
    backend: SocketAddr,
    provider: crate::refrelay::Provider,
) -> anyhow::Result<(Proc, Relay)> {
    let name = provider.relay_name();
    let (crt, key) = self_signed(work, name)?;
    let me = std::env::current_exe()?;
    let mut cmd = pinned(cpu, &me);
    cmd.arg("ref-relay")
        .arg("--to")
        .arg(backend.to_string())
        .arg("--cert")
        .arg(&crt)
        .arg("--key")
        .arg(&key)
        .arg("--provider")
        .arg(provider.to_string());
    let mut p = spawn_logged(cmd, work.join(format!("{name}.log"))).context("reference relay")?;
    let line = wait_log_line(&mut p, "", Duration::from_secs(10)).await?;
    let port: u16 = line.trim().parse().context("reference relay port")?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let relay = Relay {
        name,
        addr,
        origin: format!("https://{addr}"),
        tls: tls_connector(&crt)?,
        kind: RelayKind::Plain,
        pid: p.pid,
        src: None,
    };
    Ok((p, relay))
}

/// Starts websocat 1.14 as a wss → TCP relay (`--binary`, its TLS from a PKCS#12 file
/// made with `openssl pkcs12`, as websocat's TLS server needs).
pub async fn start_websocat(
    bin: &Path,
    work: &Path,
    cpu: Option<usize>,
    backend: SocketAddr,
) -> anyhow::Result<(Proc, Relay)> {
    let (crt, key) = self_signed(work, "websocat")?;
    let p12 = work.join("websocat.p12");
    let st = Command::new("openssl")
        .args(["pkcs12", "-export", "-passout", "pass:bench", "-inkey"])
        .arg(&key)
        .arg("-in")
        .arg(&crt)
        .arg("-out")
        .arg(&p12)
        .stdin(Stdio::null())
        .status()
        .await
        .context("openssl pkcs12")?;
    if !st.success() {
        bail!("openssl pkcs12: {st}");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut cmd = pinned(cpu, bin);
    cmd.arg("--binary")
        .arg("--pkcs12-der")
        .arg(&p12)
        .arg("--pkcs12-passwd")
        .arg("bench")
        .arg("--server-protocol")
        .arg("binary")
        .arg(format!("wss-l:{addr}"))
        .arg(format!("tcp:{backend}"));
    let p = spawn_logged(cmd, work.join("websocat.log")).context("websocat")?;
    // websocat prints nothing when it listens: wait for the port.
    let start = Instant::now();
    while TcpStream::connect(addr).await.is_err() {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("websocat did not listen on {addr}; log {}", p.log.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let relay = Relay {
        name: "websocat",
        addr,
        origin: format!("https://{addr}"),
        tls: tls_connector(&crt)?,
        kind: RelayKind::Plain,
        pid: p.pid,
        src: None,
    };
    Ok((p, relay))
}

/// Starts this binary's bare TCP forwarder to `backend`; returns it and its address.
pub async fn start_forwarder(
    cpu: Option<usize>,
    backend: SocketAddr,
) -> anyhow::Result<(Child, SocketAddr)> {
    let me = std::env::current_exe()?;
    let mut cmd = pinned(cpu, &me);
    cmd.arg("forward")
        .arg("--to")
        .arg(backend.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().context("forwarder")?;
    let out = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("forwarder: no stdout"))?;
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::BufReader::new(out).read_line(&mut line),
    )
    .await
    .map_err(|_| anyhow!("forwarder did not start"))??;
    let port: u16 = line.trim().parse().context("forwarder port")?;
    Ok((child, ([127, 0, 0, 1], port).into()))
}
