//! `limits.compact_heap`: `gateway serve` runs with glibc's per-thread caches off and a
//! fixed trim threshold (so that a crowd's memory comes back when it leaves; measured in
//! `loadtests/`), by executing itself once more at start: same process id, same
//! arguments, still serving. Off when the setting says so, and an administrator's own
//! `glibc.malloc.*` tunables win.

#![allow(clippy::unwrap_used)]

mod common;

/// Starts `gateway serve` with `limits` appended to its configuration and `tunables` as
/// its `GLIBC_TUNABLES`; returns the environment its process runs with once it serves.
async fn serve_environment(limits: &str, tunables: Option<&str>) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"data\"\n[public]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[limits]\n{limits}"
        ),
    )
    .unwrap();
    let mut gw = common::spawn_serve_with(&config, |cmd| {
        cmd.env_remove("GLIBC_TUNABLES")
            .env_remove("VMGW_SAVED_GLIBC_TUNABLES");
        if let Some(t) = tunables {
            cmd.env("GLIBC_TUNABLES", t);
        }
    })
    .await;
    let pid = gw.child.id().unwrap();
    tokio::net::TcpStream::connect(&gw.public).await.unwrap();
    // The process that serves is the one started (an exec, not a fork), with its
    // arguments, and it is still running.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    assert_eq!(
        args[1..],
        [
            b"serve".as_slice(),
            b"--config",
            config.as_os_str().as_encoded_bytes(),
            b""
        ],
        "{cmdline:?}"
    );
    // The environment the process was executed with (glibc splits GLIBC_TUNABLES at
    // its colons in place, so each tunable reads as an entry of its own).
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(gw.child.try_wait().unwrap().is_none());
    gw.child.kill().await.unwrap();
    environ
        .split(|b| *b == 0)
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .collect()
}

/// Whether `tunable` is among the environment's `GLIBC_TUNABLES` (as glibc left them).
fn has(env: &[String], tunable: &str) -> bool {
    env.iter()
        .filter(|e| !e.starts_with("VMGW_"))
        .flat_map(|e| e.trim_start_matches("GLIBC_TUNABLES=").split(':'))
        .any(|t| t == tunable)
}

#[tokio::test]
async fn gateway_serve_runs_with_a_compact_heap_by_default() {
    let env = serve_environment("", None).await;
    assert!(has(&env, "glibc.malloc.tcache_count=0"), "{env:?}");
    assert!(has(&env, "glibc.malloc.trim_threshold=131072"), "{env:?}");
    assert!(has(&env, "glibc.malloc.mxfast=0"), "{env:?}");
    // What the gateway was given travels along, for the programs it starts.
    assert!(
        env.iter().any(|e| e == "VMGW_SAVED_GLIBC_TUNABLES="),
        "{env:?}"
    );
}

#[tokio::test]
async fn other_tunables_are_kept_beside_the_compact_heap() {
    let env = serve_environment("", Some("glibc.rtld.optional_static_tls=4096")).await;
    assert!(has(&env, "glibc.malloc.tcache_count=0"), "{env:?}");
    assert!(
        env.iter()
            .any(|e| e == "VMGW_SAVED_GLIBC_TUNABLES=glibc.rtld.optional_static_tls=4096"),
        "{env:?}"
    );
}

#[tokio::test]
async fn compact_heap_false_and_the_administrators_malloc_tunables_are_obeyed() {
    let env = serve_environment("compact_heap = false\n", None).await;
    assert!(!env.iter().any(|e| e.contains("GLIBC_TUNABLES")), "{env:?}");
    let env = serve_environment("", Some("glibc.malloc.arena_max=4")).await;
    assert!(has(&env, "glibc.malloc.arena_max=4"), "{env:?}");
    assert!(!has(&env, "glibc.malloc.tcache_count=0"), "{env:?}");
    assert!(
        !env.iter()
            .any(|e| e.starts_with("VMGW_SAVED_GLIBC_TUNABLES")),
        "{env:?}"
    );
}
