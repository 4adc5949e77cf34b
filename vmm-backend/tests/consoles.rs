//! Each VM's VNC and SPICE servers listen on private unix sockets and speak their
//! protocols there; a running VM's screen can be captured as a PNG.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;

use common::Harness;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use vmm_backend::{BackendError, ConsoleConfig, ConsoleKind, PowerAction, VmBackend};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vnc_and_spice_answer_on_private_sockets() {
    let h = Harness::new();
    let b = &h.backend;
    b.define(h.firmware("screens")).await.unwrap();
    let err = b.console("screens", ConsoleKind::Vnc).await.unwrap_err();
    assert!(matches!(err, BackendError::NotRunning(_)), "{err}");
    b.power("screens", PowerAction::Start).await.unwrap();

    let run = h.run_dir("screens");
    assert_eq!(
        std::fs::metadata(&run).unwrap().permissions().mode() & 0o777,
        0o700
    );

    let vnc = b.console("screens", ConsoleKind::Vnc).await.unwrap();
    assert_eq!(
        std::fs::metadata(&vnc.socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let mut s = UnixStream::connect(&vnc.socket).await.unwrap();
    let mut version = [0u8; 12];
    s.read_exact(&mut version).await.unwrap();
    assert_eq!(&version, b"RFB 003.008\n");

    let spice = b.console("screens", ConsoleKind::Spice).await.unwrap();
    assert_eq!(
        std::fs::metadata(&spice.socket)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let mut s = UnixStream::connect(&spice.socket).await.unwrap();
    // SpiceLinkHeader (magic, major 2, minor 2, size) + SpiceLinkMess for the main channel.
    let mut msg = Vec::new();
    msg.extend_from_slice(b"REDQ");
    msg.extend_from_slice(&2u32.to_le_bytes());
    msg.extend_from_slice(&2u32.to_le_bytes());
    msg.extend_from_slice(&18u32.to_le_bytes());
    msg.extend_from_slice(&0u32.to_le_bytes()); // connection id
    msg.push(1); // channel type: main
    msg.push(0); // channel id
    msg.extend_from_slice(&0u32.to_le_bytes()); // common caps
    msg.extend_from_slice(&0u32.to_le_bytes()); // channel caps
    msg.extend_from_slice(&18u32.to_le_bytes()); // caps offset
    s.write_all(&msg).await.unwrap();
    let mut magic = [0u8; 4];
    s.read_exact(&mut magic).await.unwrap();
    assert_eq!(&magic, b"REDQ");

    for sock in ["qmp.sock", "qga.sock", "events.sock", "serial.sock"] {
        let mode = std::fs::metadata(run.join(sock))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{sock}");
    }

    // The serial port is a console too, with its log beside it.
    let serial = b.console("screens", ConsoleKind::Serial).await.unwrap();
    assert_eq!(serial.socket, run.join("serial.sock"));
    assert_eq!(
        serial.log.as_deref(),
        Some(run.join("serial.log").as_path())
    );
    UnixStream::connect(&serial.socket).await.unwrap();
    assert!(run.join("serial.log").exists());

    // A screenshot is a PNG of the screen, and leaves no file behind.
    let png = b.screenshot("screens").await.unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert!(width >= 320 && height >= 200, "{width}x{height}");
    let left: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("screendump"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    b.power("screens", PowerAction::Poweroff).await.unwrap();
    let err = b.screenshot("screens").await.unwrap_err();
    assert!(matches!(err, BackendError::NotRunning(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_without_spice_has_no_spice_console() {
    let h = Harness::new();
    let mut def = h.firmware("vnconly");
    def.console = ConsoleConfig::Vnc;
    h.backend.define(def).await.unwrap();
    h.backend
        .power("vnconly", PowerAction::Start)
        .await
        .unwrap();
    let err = h
        .backend
        .console("vnconly", ConsoleKind::Spice)
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::NoConsole { .. }), "{err}");
    assert!(!h.run_dir("vnconly").join("spice.sock").exists());
    h.backend
        .power("vnconly", PowerAction::Poweroff)
        .await
        .unwrap();
}
