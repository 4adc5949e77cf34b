//! A throwaway PostgreSQL server for tests: its own cluster in a temporary directory,
//! listening only on a unix socket there, as user `postgres` when the tests run as root
//! (the server refuses to run as root). Never skipped: without the server binaries
//! (Debian's `postgresql`, installed by `scripts/setup.sh`) the test that asked fails.
//!
//! One server per test binary ([`PgServer::shared`]) with a fresh database per test
//! ([`PgServer::database`]) keeps tests fast: a cluster starts in 1 to 2 s, a database in
//! a few tens of milliseconds.
//!
//! Clean-up: dropping a [`PgServer`] stops it (SIGINT, PostgreSQL's fast shutdown) and
//! removes its directory. The shared server is never dropped (statics are not), so every
//! server also has a watchdog process that holds the read end of a pipe whose write end
//! only the test process has: when the test process ends, however it ends, the watchdog
//! reads end-of-file, stops the server and removes the directory.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{Pid, User};

/// The superuser `initdb` creates (no password: `trust` on the private socket).
pub const PG_USER: &str = "vmgw";

const SETUP_HINT: &str = "run scripts/setup.sh (it installs Debian's `postgresql` package)";

/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a fast shutdown may take before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

static SERIAL: AtomicU64 = AtomicU64::new(0);

/// A running throwaway PostgreSQL cluster.
#[derive(Debug)]
pub struct PgServer {
    root: PathBuf,
    socket_dir: PathBuf,
    bin: PathBuf,
    postgres: Mutex<Option<Child>>,
    watchdog: Mutex<Option<Child>>,
    next_db: AtomicU64,
}

/// A database created for one test on a [`PgServer`].
#[derive(Debug, Clone)]
pub struct PgDatabase {
    /// The database name (`t_…`).
    pub name: String,
    /// Connection URL: `postgresql:///NAME?host=SOCKET_DIR&user=vmgw`.
    pub url: String,
    /// The same in the key-value form: `host=SOCKET_DIR user=vmgw dbname=NAME`.
    pub key_value: String,
}

/// The directory with `initdb` and `postgres` (the highest version under
/// `/usr/lib/postgresql/*/bin`, or `VMGW_PG_BIN`). Panics with the setup hint if none.
pub fn pg_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VMGW_PG_BIN") {
        let dir = PathBuf::from(dir);
        assert!(
            dir.join("postgres").is_file() && dir.join("initdb").is_file(),
            "VMGW_PG_BIN={} has no postgres and initdb",
            dir.display()
        );
        return dir;
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("postgres").is_file() && bin.join("initdb").is_file())
                .then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "the PostgreSQL server binaries (initdb, postgres) are not under \
             /usr/lib/postgresql/*/bin: {SETUP_HINT}"
        ),
    }
}

/// The uid/gid to run the server as: `postgres` when we are root, else ourselves.
fn server_ids() -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    match User::from_name("postgres") {
        Ok(Some(u)) => Some((u.uid.as_raw(), u.gid.as_raw())),
        _ => panic!("there is no `postgres` system user to run the test server as: {SETUP_HINT}"),
    }
}

fn as_server(mut cmd: Command, ids: Option<(u32, u32)>) -> Command {
    if let Some((uid, gid)) = ids {
        // std drops root's supplementary groups when it changes the uid.
        cmd.uid(uid).gid(gid);
    }
    cmd
}

fn private_dir(path: &Path, ids: Option<(u32, u32)>) {
    std::fs::create_dir(path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    if let Some((uid, gid)) = ids {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}

/// Starts `postgres` on the cluster in `root/data`, logging to `root/postgres.log`
/// (appended: a restarted server keeps the earlier log).
fn spawn_postgres(bin: &Path, root: &Path, ids: Option<(u32, u32)>) -> Child {
    let data = root.join("data");
    let socket_dir = root.join("sock");
    let log_path = root.join("postgres.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", log_path.display()));
    let log2 = log.try_clone().unwrap_or_else(|e| panic!("dup log: {e}"));
    as_server(Command::new(bin.join("postgres")), ids)
        .arg("-D")
        .arg(&data)
        .arg("-k")
        .arg(&socket_dir)
        // unix socket only; no fsync (throwaway data); enough connections for
        // several gateways' pools
        .args(["-c", "listen_addresses=", "-F", "-c", "max_connections=200"])
        .args(["-c", "shared_buffers=16MB", "-c", "synchronous_commit=off"])
        .current_dir(root)
        .env_remove("PGDATA")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}/postgres: {e}", bin.display()))
}

impl PgServer {
    /// The server shared by all tests of this test binary (started on first use; stopped
    /// by its watchdog when the process ends).
    pub fn shared() -> &'static PgServer {
        static SHARED: OnceLock<PgServer> = OnceLock::new();
        SHARED.get_or_init(PgServer::start)
    }

    /// Creates a cluster in a new temporary directory, starts it on a unix socket only,
    /// and waits until it accepts connections. Panics (with the server's log) on failure.
    pub fn start() -> PgServer {
        let bin = pg_bin_dir();
        let ids = server_ids();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let root = std::env::temp_dir().join(format!(
            "vmgw-pg-{}-{}-{nanos:x}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        ));
        private_dir(&root, ids);
        let data = root.join("data");
        let socket_dir = root.join("sock");
        private_dir(&socket_dir, ids);

        let out = as_server(Command::new(bin.join("initdb")), ids)
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", PG_USER, "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"])
            .current_dir(&root)
            .env_remove("PGDATA")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {}/initdb: {e} ({SETUP_HINT})", bin.display()));
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&root);
            panic!(
                "initdb failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }

        let child = spawn_postgres(&bin, &root, ids);
        let pid = child.id();
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(
                // The server removes postmaster.pid when its shutdown is complete
                // (`kill -0` would not tell: an unreaped server lingers as a zombie).
                // The pid is read from postmaster.pid: after `restart` the server is
                // another process than the one started first.
                "read -r _ ; pid=$(head -n 1 \"$2/data/postmaster.pid\" 2>/dev/null); \
                 pid=${pid:-$1}; kill -INT \"$pid\" 2>/dev/null; i=0; \
                 while [ -e \"$2/data/postmaster.pid\" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; \
                 [ -e \"$2/data/postmaster.pid\" ] && kill -KILL \"$pid\" 2>/dev/null; rm -rf \"$2\"",
            )
            .arg("pg-watchdog")
            .arg(pid.to_string())
            .arg(&root)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting the PostgreSQL watchdog: {e}"));
        let server = PgServer {
            root,
            socket_dir,
            bin,
            postgres: Mutex::new(Some(child)),
            watchdog: Mutex::new(Some(watchdog)),
            next_db: AtomicU64::new(0),
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(c) = lock(&self.postgres).as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!(
                        "the test PostgreSQL server exited ({status}) while starting:\n{}",
                        self.log()
                    );
                }
            }
            let ready = Command::new(self.bin.join("pg_isready"))
                .arg("-h")
                .arg(&self.socket_dir)
                .args(["-U", PG_USER, "-d", "postgres", "-q"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "the test PostgreSQL server did not accept connections within {:?}:\n{}",
                    START_TIMEOUT,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("postgres.log")).unwrap_or_default()
    }

    /// The directory of the server's unix socket (the `host` to connect to).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// Connection URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgresql:///{name}?host={}&user={PG_USER}",
            self.socket_dir.display()
        )
    }

    /// Creates a fresh, empty database for one test.
    pub fn database(&self) -> PgDatabase {
        let name = format!(
            "t_{}_{}",
            std::process::id(),
            self.next_db.fetch_add(1, Ordering::Relaxed)
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        PgDatabase {
            url: self.url(&name),
            key_value: format!(
                "host={} user={PG_USER} dbname={name}",
                self.socket_dir.display()
            ),
            name,
        }
    }

    /// Runs SQL in database `db` with `psql` and returns its unaligned output; panics on
    /// an error.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let mut child = Command::new(self.bin.join("psql"))
            .arg("-h")
            .arg(&self.socket_dir)
            .args(["-U", PG_USER, "-d", db, "-X", "-A", "-t", "-q"])
            .args(["-v", "ON_ERROR_STOP=1", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running psql: {e} ({SETUP_HINT})"));
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(sql.as_bytes())
                .unwrap_or_else(|e| panic!("writing to psql: {e}"));
        }
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for psql: {e}"));
        assert!(
            out.status.success(),
            "psql in {db} failed on {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Stops the server the way `pg_ctl stop -m immediate` does (SIGQUIT: every backend
    /// quits at once, no checkpoint; the next start recovers from the WAL), keeping its
    /// data for [`PgServer::restart`]. Waits until the server has exited.
    pub fn stop_immediate(&self) {
        if let Some(mut c) = lock(&self.postgres).take() {
            let _ = kill(Pid::from_raw(pid_i32(c.id())), Signal::SIGQUIT);
            let deadline = Instant::now() + STOP_TIMEOUT;
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }

    /// Starts the server again on the same data and socket after
    /// [`PgServer::stop_immediate`]; waits until it accepts connections. Does nothing
    /// if it is running.
    pub fn restart(&self) {
        {
            let mut running = lock(&self.postgres);
            if running.is_some() {
                return;
            }
            *running = Some(spawn_postgres(&self.bin, &self.root, server_ids()));
        }
        self.wait_ready();
    }

    /// Stops the server (fast shutdown, then SIGKILL after 10 s) and removes its
    /// directory. Idempotent.
    pub fn stop(&self) {
        if let Some(mut w) = lock(&self.watchdog).take() {
            let _ = kill(Pid::from_raw(pid_i32(w.id())), Signal::SIGKILL);
            let _ = w.wait();
        }
        if let Some(mut c) = lock(&self.postgres).take() {
            let _ = kill(Pid::from_raw(pid_i32(c.id())), Signal::SIGINT);
            let deadline = Instant::now() + STOP_TIMEOUT;
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn pid_i32(pid: u32) -> i32 {
    i32::try_from(pid).unwrap_or(i32::MAX)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_starts_serves_and_cleans_up() {
        let t = Instant::now();
        let s = PgServer::start();
        let started = t.elapsed();
        let db = s.database();
        s.psql(
            &db.name,
            "CREATE TABLE x (v INT); INSERT INTO x VALUES (41);",
        );
        assert_eq!(s.psql(&db.name, "SELECT v + 1 FROM x").trim(), "42");
        let other = s.database();
        assert_ne!(db.name, other.name);
        assert!(db.url.contains(&db.name) && db.key_value.contains(&db.name));
        let root = s.root.clone();
        assert!(root.is_dir());
        drop(s);
        assert!(!root.exists(), "{} left behind", root.display());
        eprintln!("cluster started in {started:?}");
    }

    #[test]
    fn a_server_stopped_immediately_restarts_with_its_data() {
        let s = PgServer::start();
        let db = s.database();
        s.psql(
            &db.name,
            "CREATE TABLE x (v INT); INSERT INTO x VALUES (7); CHECKPOINT;",
        );
        let first = lock(&s.postgres).as_ref().map(Child::id);
        s.stop_immediate();
        assert!(lock(&s.postgres).is_none());
        s.restart();
        assert_ne!(lock(&s.postgres).as_ref().map(Child::id), first);
        assert_eq!(s.psql(&db.name, "SELECT v FROM x").trim(), "7");
        let root = s.root.clone();
        drop(s);
        assert!(!root.exists(), "{} left behind", root.display());
    }

    #[test]
    fn the_shared_server_is_one() {
        let a = PgServer::shared();
        let b = PgServer::shared();
        assert!(std::ptr::eq(a, b));
        let db = a.database();
        assert_eq!(a.psql(&db.name, "SELECT current_user").trim(), PG_USER);
    }
}
