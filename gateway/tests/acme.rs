//! Automatic certificates against a real ACME server: Debian's `pebble` (installed by
//! `scripts/setup.sh`), with `pebble-challtestsrv` as its DNS, answering 127.0.0.1 for
//! every name. Pebble validates for real (no PEBBLE_VA_ALWAYS_VALID): it connects to the
//! gateway's public listener (TLS-ALPN-01) or HTTP-01 listener, whose ports are pebble's
//! `tlsPort` / `httpPort`.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::launch::Gateway;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const DOMAIN: &str = "gw.acme.test";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A CA and a certificate for pebble's own HTTPS (127.0.0.1 and localhost).
fn pebble_https(dir: &Path) -> PathBuf {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &ca_cert, &ca_key)
        .unwrap();
    std::fs::write(dir.join("https.crt"), leaf.pem()).unwrap();
    std::fs::write(dir.join("https.key"), key.serialize_pem()).unwrap();
    let ca_path = dir.join("directory-ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();
    ca_path
}

/// A running pebble (and its DNS), stopped on drop.
struct Pebble {
    dir: tempfile::TempDir,
    children: Vec<Child>,
    directory: String,
    management: SocketAddr,
    directory_ca: PathBuf,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            for f in ["pebble.log", "pebble.err"] {
                let text = std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
                eprintln!("--- {f}\n{text}");
            }
        }
    }
}

/// The gateway's log in the test's output (`RUST_LOG`, default info).
fn logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

async fn wait_port(addr: SocketAddr) {
    let start = Instant::now();
    while TcpStream::connect(addr).await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{addr} never listened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Pebble {
    /// Pebble validating on `tls_port` (TLS-ALPN-01) and `http_port` (HTTP-01), issuing
    /// certificates valid for `validity_secs`.
    async fn start(tls_port: u16, http_port: u16, validity_secs: u64) -> Pebble {
        Self::start_at(common::free_port(), tls_port, http_port, validity_secs).await
    }

    /// The same, with its directory on port `listen`.
    async fn start_at(listen: u16, tls_port: u16, http_port: u16, validity_secs: u64) -> Pebble {
        assert!(
            Path::new("/usr/bin/pebble").exists(),
            "pebble is missing: run scripts/setup.sh"
        );
        let dir = tempfile::Builder::new()
            .prefix("vmgw-pebble")
            .tempdir()
            .unwrap();
        let directory_ca = pebble_https(dir.path());
        let (mgmt, dns) = (common::free_port(), common::free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt}"),
            "certificate": dir.path().join("https.crt"),
            "privateKey": dir.path().join("https.key"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity_secs,
        }});
        let cfg_path = dir.path().join("pebble.json");
        std::fs::write(&cfg_path, config.to_string()).unwrap();
        let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
        let dns_srv = Command::new("/usr/bin/pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-management", &format!("127.0.0.1:{}", common::free_port())])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(log("dns.log"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pebble = Command::new("/usr/bin/pebble")
            .arg("-config")
            .arg(&cfg_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .unwrap();
        let p = Pebble {
            dir,
            children: vec![dns_srv, pebble],
            directory: format!("https://127.0.0.1:{listen}/dir"),
            management: SocketAddr::from(([127, 0, 0, 1], mgmt)),
            directory_ca,
        };
        wait_port(SocketAddr::from(([127, 0, 0, 1], listen))).await;
        wait_port(p.management).await;
        p
    }

    /// Pebble's issuing root (made anew at each start).
    async fn root(&self) -> rustls::RootCertStore {
        let ca = std::fs::read(&self.directory_ca).unwrap();
        let mut trust = rustls::RootCertStore::empty();
        trust
            .add(CertificateDer::from_pem_slice(&ca).unwrap())
            .unwrap();
        let cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(trust)
            .with_no_client_auth();
        let tcp = TcpStream::connect(self.management).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let s = TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .unwrap();
        let (status, _, body) = common::http_call(s, "GET", "/roots/0", "", None).await;
        assert_eq!(status, 200);
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(&body).unwrap())
            .unwrap();
        roots
    }

    /// How many orders pebble has been sent so far.
    fn orders(&self) -> usize {
        let log = std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default();
        log.lines().filter(|l| l.contains("/order-plz")).count()
    }
}

/// Accepts any server certificate (to look at what is served).
#[derive(Debug)]
struct AnyCert;

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The leaf the public listener serves for `DOMAIN`, and whether it verifies against
/// `roots` (as a browser trusting pebble's CA would).
async fn served(addr: SocketAddr, roots: &rustls::RootCertStore) -> (Vec<u8>, bool) {
    let name = ServerName::try_from(DOMAIN).unwrap();
    let any = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let s = TlsConnector::from(Arc::new(any))
        .connect(name.clone(), tcp)
        .await
        .unwrap();
    let leaf = s.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let strict = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let ok = TlsConnector::from(Arc::new(strict))
        .connect(name, tcp)
        .await
        .is_ok();
    (leaf, ok)
}

/// Waits until the served certificate verifies against `roots` and differs from `not`;
/// the leaf and the time it took.
async fn until_issued(
    addr: SocketAddr,
    roots: &rustls::RootCertStore,
    not: &[u8],
    within: Duration,
) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    loop {
        let (leaf, ok) = served(addr, roots).await;
        if ok && leaf != not {
            return (leaf, start.elapsed());
        }
        assert!(
            start.elapsed() < within,
            "no certificate from pebble served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

async fn start_gateway(data: &Path, public_port: u16, acme_toml: &str) -> Running {
    logs();
    // A gateway just stopped may hold its port a moment longer (its accept task is
    // aborted, not yet dropped).
    let start = Instant::now();
    while std::net::TcpListener::bind(("127.0.0.1", public_port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "port {public_port} stays busy"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let extra = format!("[public.acme]\n{acme_toml}");
    let mut cfg = common::test_config(data, &extra);
    cfg.public_listen = SocketAddr::from(([127, 0, 0, 1], public_port));
    let gw = Gateway::bind(cfg, None).await.unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(gw.serve(async move {
        let _ = rx.await;
    }));
    Running { stop, task }
}

fn acme_toml(p: &Pebble, extra: &str) -> String {
    format!(
        "domains = [{DOMAIN:?}]\ncontact = [\"mailto:ops@acme.test\"]\ndirectory = {:?}\ndirectory_ca = {:?}\nretry_min_secs = 1\nretry_max_secs = 2\norder_timeout_secs = 20\n{extra}",
        p.directory,
        p.directory_ca.to_str().unwrap()
    )
}

/// The files of `DATA/acme/` whose names begin with `kind`.
fn stored(data: &Path, kind: &str) -> Vec<PathBuf> {
    std::fs::read_dir(data.join("acme"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(kind))
        })
        .collect()
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// TLS-ALPN-01: the first order completes, the issued certificate is served, stored
/// (0600) and served again at once after a restart, with the same account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_01_order_is_served_and_reused_after_restart() {
    let public = common::free_port();
    let pebble = Pebble::start(public, common::free_port(), 90 * 86_400).await;
    let roots = pebble.root().await;
    let data = tempfile::Builder::new()
        .prefix("vmgw-acme")
        .tempdir()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], public));
    let start = Instant::now();
    let gw = start_gateway(data.path(), public, &acme_toml(&pebble, "")).await;
    let (temporary, ok) = served(addr, &roots).await;
    assert!(!ok, "a temporary self-signed certificate is served first");
    let (leaf, _) = until_issued(addr, &roots, &temporary, Duration::from_secs(30)).await;
    println!(
        "TLS-ALPN-01 order: {:?} from start to served",
        start.elapsed()
    );
    let acme_dir = data.path().join("acme");
    assert_eq!(mode(&acme_dir), 0o700);
    for kind in ["cert-", "key-", "account-"] {
        let files = stored(data.path(), kind);
        assert_eq!(files.len(), 1, "{kind}");
        assert_eq!(mode(&files[0]), 0o600, "{kind}");
    }
    let accounts = stored(data.path(), "account-");
    let account = std::fs::read(&accounts[0]).unwrap();
    gw.stop().await;
    let orders = pebble.orders();

    let gw = start_gateway(data.path(), public, &acme_toml(&pebble, "")).await;
    let (again, ok) = served(addr, &roots).await;
    assert!(
        ok && again == leaf,
        "the stored certificate is served at once"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        pebble.orders(),
        orders,
        "no new order while the stored one is good"
    );
    assert_eq!(std::fs::read(&accounts[0]).unwrap(), account);
    gw.stop().await;
}

/// HTTP-01 on its own plain-HTTP listener, which answers nothing but challenges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_01_order_is_served() {
    let (public, http) = (common::free_port(), common::free_port());
    let pebble = Pebble::start(common::free_port(), http, 90 * 86_400).await;
    let roots = pebble.root().await;
    let data = tempfile::Builder::new()
        .prefix("vmgw-acme")
        .tempdir()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], public));
    let extra = format!("challenge = \"http-01\"\nhttp01_listen = \"127.0.0.1:{http}\"");
    let start = Instant::now();
    let gw = start_gateway(data.path(), public, &acme_toml(&pebble, &extra)).await;
    let (temporary, _) = served(addr, &roots).await;
    until_issued(addr, &roots, &temporary, Duration::from_secs(30)).await;
    println!("HTTP-01 order: {:?} from start to served", start.elapsed());
    for path in ["/", "/.well-known/acme-challenge/unknown", "/s/session"] {
        let tcp = TcpStream::connect(("127.0.0.1", http)).await.unwrap();
        let (status, _, _) = common::http_call(tcp, "GET", path, "", None).await;
        assert_eq!(status, 404, "{path}");
    }
    gw.stop().await;
}

/// Renewal: certificates valid one day with renew_before_days = 2 are due at once, so
/// a second certificate is ordered and served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_certificate_is_renewed_and_the_new_one_served() {
    let public = common::free_port();
    let pebble = Pebble::start(public, common::free_port(), 86_400).await;
    let roots = pebble.root().await;
    let data = tempfile::Builder::new()
        .prefix("vmgw-acme")
        .tempdir()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], public));
    let gw = start_gateway(
        data.path(),
        public,
        &acme_toml(&pebble, "renew_before_days = 2"),
    )
    .await;
    let (temporary, _) = served(addr, &roots).await;
    let (first, _) = until_issued(addr, &roots, &temporary, Duration::from_secs(30)).await;
    let (second, _) = until_issued(addr, &roots, &first, Duration::from_secs(30)).await;
    assert_ne!(first, second);
    assert!(pebble.orders() >= 2);
    gw.stop().await;
}

/// Log lines written while the guard lives, on this thread (the whole gateway runs on
/// it in a current-thread test).
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn start(&self) -> tracing::subscriber::DefaultGuard {
        let me = self.clone();
        let sub = tracing_subscriber::fmt()
            .with_env_filter("gateway=info")
            .with_ansi(false)
            .with_writer(move || me.clone())
            .finish();
        tracing::subscriber::set_default(sub)
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A challenge that fails (pebble validates on a port where nothing listens) is logged
/// with the CA's reason and retried with backoff; the gateway keeps serving its
/// temporary certificate.
#[tokio::test]
async fn a_failed_challenge_is_retried_and_the_gateway_keeps_serving() {
    let log = Captured::default();
    let _guard = log.start();
    let public = common::free_port();
    let pebble = Pebble::start(common::free_port(), common::free_port(), 90 * 86_400).await;
    let roots = pebble.root().await;
    let data = tempfile::Builder::new()
        .prefix("vmgw-acme")
        .tempdir()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], public));
    let gw = start_gateway(data.path(), public, &acme_toml(&pebble, "")).await;
    let (temporary, _) = served(addr, &roots).await;
    let start = Instant::now();
    while pebble.orders() < 3 {
        assert!(start.elapsed() < Duration::from_secs(20), "no retries");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Three orders need at least the first two delays (1 s, then 2 s).
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let (still, ok) = served(addr, &roots).await;
    assert!(!ok && still == temporary);
    assert!(!gw.task.is_finished());
    assert!(stored(data.path(), "cert-").is_empty());
    let text = log.text();
    let failures: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("ACME order failed"))
        .collect();
    assert!(failures.len() >= 2, "{text}");
    assert!(failures[0].contains("WARN") && failures[0].contains("tls-alpn-01 challenge"));
    assert!(failures[0].contains("retry_in_secs=1") && failures[1].contains("retry_in_secs=2"));
    assert!(!text.contains("PRIVATE KEY") && !text.contains("key_pkcs8"));
    gw.stop().await;
}

/// A CA that forgot the stored account (pebble keeps nothing across restarts): the
/// order is refused, the account file is dropped, and the next order creates a new
/// account and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_the_ca_forgot_is_replaced() {
    let (public, listen) = (common::free_port(), common::free_port());
    let pebble = Pebble::start_at(listen, public, common::free_port(), 90 * 86_400).await;
    let roots = pebble.root().await;
    let data = tempfile::Builder::new()
        .prefix("vmgw-acme")
        .tempdir()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], public));
    let gw = start_gateway(data.path(), public, &acme_toml(&pebble, "")).await;
    let (temporary, _) = served(addr, &roots).await;
    let (first, _) = until_issued(addr, &roots, &temporary, Duration::from_secs(30)).await;
    gw.stop().await;
    let account_file = |dir: &Path| std::fs::read(&stored(dir, "account-")[0]).ok();
    let old_account = account_file(data.path()).unwrap();
    drop(pebble);

    let pebble = Pebble::start_at(listen, public, common::free_port(), 90 * 86_400).await;
    let roots = pebble.root().await;
    // Renewal due at once, so the stored account is used at start.
    let toml = acme_toml(&pebble, "renew_before_days = 36500");
    let gw = start_gateway(data.path(), public, &toml).await;
    let (second, _) = until_issued(addr, &roots, &first, Duration::from_secs(30)).await;
    assert_ne!(second, first);
    let new_account = account_file(data.path()).unwrap();
    assert_ne!(new_account, old_account);
    gw.stop().await;
}

/// The HTTP-01 listener's bounds act: with `http01_max_connections = 1` a second client
/// waits while an idle one holds the slot, and the idle one is cut at
/// `limits.header_read_timeout_secs`, after which the second is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http01_listener_is_bounded() {
    let (public, http) = (common::free_port(), common::free_port());
    let data = tempfile::Builder::new()
        .prefix("vmgw-acme")
        .tempdir()
        .unwrap();
    // A CA that cannot be reached: orders fail and wait; the listener serves anyway.
    let toml = format!(
        "domains = [{DOMAIN:?}]\ndirectory = \"https://127.0.0.1:1/dir\"\nchallenge = \"http-01\"\nhttp01_listen = \"127.0.0.1:{http}\"\nhttp01_max_connections = 1\nretry_min_secs = 600\n[limits]\nheader_read_timeout_secs = 1\n"
    );
    let gw = start_gateway(data.path(), public, &toml).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], http));
    wait_port(addr).await;
    let idle = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (status, _, _) = common::http_call(tcp, "GET", "/", "", None).await;
    let waited = start.elapsed();
    assert_eq!(status, 404);
    assert!(
        waited >= Duration::from_millis(600),
        "not held by the cap: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "the idle client was not cut: {waited:?}"
    );
    drop(idle);
    gw.stop().await;
}
