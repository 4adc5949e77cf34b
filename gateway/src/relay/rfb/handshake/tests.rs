//! Tests of the handshakes and the VNC authentication response, and the replay of the
//! handshake fuzz corpus.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use super::*;
use crate::relay::rfb::fuzz::{self, corpus_files};
use crate::relay::rfb::RfbError;
use std::future::Future;
use tokio::io::duplex;

// ---- DES / VNC authentication -------------------------------------------

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Vectors computed independently with
/// `openssl enc -des-ecb -K <bit-reversed key> -nopad -provider legacy`.
#[test]
fn vnc_auth_response_matches_openssl_vectors() {
    let c1: [u8; 16] = hex("000102030405060708090a0b0c0d0e0f").try_into().unwrap();
    let c2: [u8; 16] = hex("f0e1d2c3b4a5968778695a4b3c2d1e0f").try_into().unwrap();
    // key 0e86ceceeef64e26
    assert_eq!(
        vnc_auth_response(b"password", &c1).to_vec(),
        hex("b866924125c8eebb9debc1db61c538e2")
    );
    // truncated to "secretpa": key cea6c64ea62e0e86
    assert_eq!(
        vnc_auth_response(b"secretpassword", &c2).to_vec(),
        hex("5028d4ad714efed10aa8d60fc1a99e95")
    );
    // zero-padded "pw": key 0eee000000000000
    assert_eq!(
        vnc_auth_response(b"pw", &c2).to_vec(),
        hex("2da98d37db999213775993c7793e4dee")
    );
}

#[test]
fn vnc_auth_response_equals_manual_des() {
    let challenge: [u8; 16] = *b"0123456789abcdef";
    let key = [0x0e, 0x86, 0xce, 0xce, 0xee, 0xf6, 0x4e, 0x26];
    let cipher = Des::new(&key.into());
    let mut expected = challenge;
    for half in expected.chunks_exact_mut(8) {
        let mut b = des::cipher::generic_array::GenericArray::clone_from_slice(half);
        cipher.encrypt_block(&mut b);
        half.copy_from_slice(&b);
    }
    assert_eq!(vnc_auth_response(b"password", &challenge), expected);
    assert_ne!(vnc_auth_response(b"passwore", &challenge), expected);
}

// ---- handshakes ------------------------------------------------------------

/// Fail (rather than hang) when a handshake waits for bytes that never come.
async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(std::time::Duration::from_secs(10), f)
        .await
        .expect("handshake test timed out")
}

#[tokio::test]
async fn handshakes_interoperate() {
    let (mut gw_client_side, mut gw_server_side) = duplex(4096);
    let limits = RfbLimits::default();
    let server = tokio::spawn(async move {
        client_handshake(&mut gw_server_side).await.unwrap();
        // The very next byte is ClientInit.
        let init = gw_server_side.read_u8().await.unwrap();
        (init, gw_server_side)
    });
    within(backend_handshake(&mut gw_client_side, None, &limits))
        .await
        .unwrap();
    gw_client_side.write_all(&[1]).await.unwrap();
    let (init, _keep) = within(server).await.unwrap();
    assert_eq!(init, 1);
}

/// A scripted VNC server: announce `version`, then run `script`.
async fn fake_server<F, Fut>(
    version: &'static [u8; 12],
    script: F,
) -> (Result<(), RfbError>, Vec<u8>)
where
    F: FnOnce(tokio::io::DuplexStream) -> Fut + Send + 'static,
    Fut: Future<Output = Vec<u8>> + Send,
{
    fake_server_pw(version, Some(b"password"), script).await
}

async fn fake_server_pw<F, Fut>(
    version: &'static [u8; 12],
    password: Option<&'static [u8]>,
    script: F,
) -> (Result<(), RfbError>, Vec<u8>)
where
    F: FnOnce(tokio::io::DuplexStream) -> Fut + Send + 'static,
    Fut: Future<Output = Vec<u8>> + Send,
{
    let (mut ours, mut theirs) = duplex(1 << 16);
    let server = tokio::spawn(async move {
        theirs.write_all(version).await.unwrap();
        let mut v = [0u8; 12];
        theirs.read_exact(&mut v).await.unwrap();
        let mut seen = v.to_vec();
        seen.extend(script(theirs).await);
        seen
    });
    let r = within(backend_handshake(
        &mut ours,
        password,
        &RfbLimits::default(),
    ))
    .await;
    drop(ours);
    (r, within(server).await.unwrap())
}

#[tokio::test]
async fn backend_vnc_auth_against_fake_server() {
    let challenge: [u8; 16] = hex("000102030405060708090a0b0c0d0e0f").try_into().unwrap();
    let (r, seen) = fake_server(VERSION_3_8, move |mut s| async move {
        s.write_all(&[2, 16, 2]).await.unwrap(); // Tight (16), VNC auth (2)
        let choice = s.read_u8().await.unwrap();
        s.write_all(&challenge).await.unwrap();
        let mut resp = [0u8; 16];
        s.read_exact(&mut resp).await.unwrap();
        let ok = resp.to_vec() == hex("b866924125c8eebb9debc1db61c538e2");
        s.write_all(&(if ok { 0u32 } else { 1 }).to_be_bytes())
            .await
            .unwrap();
        // ClientInit must follow.
        let init = s.read_u8().await.unwrap_or(0xEE);
        let mut v = vec![choice];
        v.extend_from_slice(&resp);
        v.push(init);
        v
    })
    .await;
    r.unwrap();
    assert_eq!(&seen[..12], VERSION_3_8);
    assert_eq!(seen[12], 2, "must choose VNC auth");
    assert_eq!(
        seen[13..29].to_vec(),
        hex("b866924125c8eebb9debc1db61c538e2")
    );
    // The handshake returned before ClientInit; our `drop` then closed it.
    assert_eq!(seen[29], 0xEE);
}

#[tokio::test]
async fn backend_prefers_none() {
    let (r, seen) = fake_server(VERSION_3_8, |mut s| async move {
        s.write_all(&[2, 2, 1]).await.unwrap();
        let choice = s.read_u8().await.unwrap();
        s.write_all(&0u32.to_be_bytes()).await.unwrap();
        vec![choice]
    })
    .await;
    r.unwrap();
    assert_eq!(seen[12], 1);
}

#[tokio::test]
async fn backend_3_7_none_has_no_security_result() {
    let (r, seen) = fake_server(VERSION_3_7, |mut s| async move {
        s.write_all(&[1, 1]).await.unwrap();
        let choice = s.read_u8().await.unwrap();
        // No SecurityResult: if the client waited for one it would hang;
        // instead it must have returned, closing its side.
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        vec![choice]
    })
    .await;
    r.unwrap();
    assert_eq!(&seen[..12], VERSION_3_7, "3.7 server gets a 3.7 answer");
    assert_eq!(seen[12], 1);
}

#[tokio::test]
async fn backend_3_3_none_and_vnc_auth() {
    let (r, seen) = fake_server(VERSION_3_3, |mut s| async move {
        s.write_all(&1u32.to_be_bytes()).await.unwrap();
        Vec::new()
    })
    .await;
    r.unwrap();
    assert_eq!(&seen[..12], VERSION_3_3);

    let challenge: [u8; 16] = hex("f0e1d2c3b4a5968778695a4b3c2d1e0f").try_into().unwrap();
    let (r, seen) = fake_server(VERSION_3_3, move |mut s| async move {
        s.write_all(&2u32.to_be_bytes()).await.unwrap();
        s.write_all(&challenge).await.unwrap();
        let mut resp = [0u8; 16];
        s.read_exact(&mut resp).await.unwrap();
        // 3.3 failure: status only, no reason string.
        s.write_all(&1u32.to_be_bytes()).await.unwrap();
        resp.to_vec()
    })
    .await;
    match r {
        Err(RfbError::SecurityFailed {
            status: 1,
            reason: None,
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(
        seen[12..].to_vec(),
        vnc_auth_response(b"password", &challenge).to_vec()
    );
}

#[tokio::test]
async fn backend_auth_failure_reason_3_8() {
    let (r, _) = fake_server(VERSION_3_8, |mut s| async move {
        s.write_all(&[1, 2]).await.unwrap();
        s.read_u8().await.unwrap();
        s.write_all(&[0; 16]).await.unwrap();
        let mut resp = [0u8; 16];
        s.read_exact(&mut resp).await.unwrap();
        let reason = b"Authentication failed\n\x1b[31m";
        s.write_all(&1u32.to_be_bytes()).await.unwrap();
        s.write_all(&(reason.len() as u32).to_be_bytes())
            .await
            .unwrap();
        s.write_all(reason).await.unwrap();
        Vec::new()
    })
    .await;
    match r {
        Err(RfbError::SecurityFailed {
            status: 1,
            reason: Some(reason),
        }) => {
            assert!(reason.starts_with("Authentication failed"));
            assert!(!reason.chars().any(char::is_control), "{reason:?}");
        }
        other => panic!("{other:?}"),
    }
}

/// QEMU 7.2 sends `sizeof("Authentication failed")`, NUL included.
#[tokio::test]
async fn backend_auth_failure_reason_qemu_style() {
    let (r, _) = fake_server(VERSION_3_8, |mut s| async move {
        s.write_all(&[1, 2]).await.unwrap();
        s.read_u8().await.unwrap();
        s.write_all(&[7; 16]).await.unwrap();
        let mut resp = [0u8; 16];
        s.read_exact(&mut resp).await.unwrap();
        s.write_all(&1u32.to_be_bytes()).await.unwrap();
        s.write_all(&22u32.to_be_bytes()).await.unwrap();
        s.write_all(b"Authentication failed\0").await.unwrap();
        Vec::new()
    })
    .await;
    match r {
        Err(RfbError::SecurityFailed {
            status: 1,
            reason: Some(reason),
        }) => assert_eq!(reason, "Authentication failed"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn backend_refusal_with_huge_reason_is_capped() {
    let (r, _) = fake_server(VERSION_3_8, |mut s| async move {
        s.write_all(&[0]).await.unwrap();
        s.write_all(&0xFFFF_FFFFu32.to_be_bytes()).await.unwrap();
        let _ = s.write_all(&[b'z'; 5000]).await;
        Vec::new()
    })
    .await;
    match r {
        Err(RfbError::ServerRefused(reason)) => {
            assert!(reason.ends_with("[truncated]"));
            assert_eq!(reason.len(), 1024 + " [truncated]".len());
        }
        other => panic!("{other:?}"),
    }
    let (r, _) = fake_server(VERSION_3_3, |mut s| async move {
        s.write_all(&0u32.to_be_bytes()).await.unwrap();
        s.write_all(&7u32.to_be_bytes()).await.unwrap();
        s.write_all(b"too bad").await.unwrap();
        Vec::new()
    })
    .await;
    assert!(
        matches!(r, Err(RfbError::ServerRefused(ref s)) if s == "too bad"),
        "{r:?}"
    );
}

#[tokio::test]
async fn backend_without_password_or_usable_type_fails() {
    let (r, _) = fake_server_pw(VERSION_3_8, None, |mut s| async move {
        s.write_all(&[1, 2]).await.unwrap();
        Vec::new()
    })
    .await;
    assert!(matches!(r, Err(RfbError::PasswordRequired)), "{r:?}");
    let (r, _) = fake_server(VERSION_3_8, |mut s| async move {
        s.write_all(&[2, 19, 16]).await.unwrap();
        Vec::new()
    })
    .await;
    match r {
        Err(RfbError::NoSupportedSecurityType { offered }) => assert_eq!(offered, vec![19, 16]),
        other => panic!("{other:?}"),
    }
    let (r, _) = fake_server(VERSION_3_3, |mut s| async move {
        s.write_all(&16u32.to_be_bytes()).await.unwrap();
        Vec::new()
    })
    .await;
    assert!(
        matches!(r, Err(RfbError::NoSupportedSecurityType { .. })),
        "{r:?}"
    );
}

#[tokio::test]
async fn backend_rejects_bad_server_versions() {
    for v in [
        b"RFB 003.002\n",
        b"RFB 002.008\n",
        b"RFB 03.0008\n",
        b"HTTP/1.1 200",
        b"RFB 003.008\r",
    ] {
        let (mut ours, mut theirs) = duplex(1024);
        theirs.write_all(v).await.unwrap();
        let r = backend_handshake(&mut ours, None, &RfbLimits::default()).await;
        assert!(
            matches!(
                r,
                Err(RfbError::MalformedVersion(_) | RfbError::UnsupportedVersion { .. })
            ),
            "{v:?}: {r:?}"
        );
    }
    // RealVNC 5 speaks 3.8.
    assert_eq!(server_version(b"RFB 005.000\n").unwrap(), Version::V3_8);
    assert_eq!(server_version(b"RFB 003.889\n").unwrap(), Version::V3_8);
}

/// A scripted browser: send `answer` after reading our version, then run
/// `script`; returns the handshake result and everything the browser read.
async fn fake_browser(
    answer: &'static [u8],
    tail: &'static [u8],
) -> (Result<(), RfbError>, Vec<u8>, Vec<u8>) {
    let (mut ours, mut theirs) = duplex(1 << 16);
    let browser = tokio::spawn(async move {
        let mut v = [0u8; 12];
        theirs.read_exact(&mut v).await.unwrap();
        assert_eq!(&v, VERSION_3_8);
        theirs.write_all(answer).await.unwrap();
        theirs.write_all(tail).await.unwrap();
        theirs.shutdown().await.unwrap();
        let mut got = Vec::new();
        theirs.read_to_end(&mut got).await.unwrap();
        got
    });
    let r = within(client_handshake(&mut ours)).await;
    // Whatever the handshake left unread.
    let mut rest = Vec::new();
    within(ours.read_to_end(&mut rest)).await.unwrap();
    drop(ours);
    (r, within(browser).await.unwrap(), rest)
}

#[tokio::test]
async fn client_handshake_3_8_3_7_3_3() {
    // 3.8: types [1] then SecurityResult 0; ClientInit (0x01) stays unread.
    let (r, got, rest) = fake_browser(b"RFB 003.008\n", &[1, 1]).await;
    r.unwrap();
    assert_eq!(got, vec![1, 1, 0, 0, 0, 0]);
    assert_eq!(rest, vec![1]);
    // 3.7: no SecurityResult after None.
    let (r, got, rest) = fake_browser(b"RFB 003.007\n", &[1, 0]).await;
    r.unwrap();
    assert_eq!(got, vec![1, 1]);
    assert_eq!(rest, vec![0]);
    // 3.3: u32 security type 1, nothing read from the client.
    let (r, got, rest) = fake_browser(b"RFB 003.003\n", &[1]).await;
    r.unwrap();
    assert_eq!(got, vec![0, 0, 0, 1]);
    assert_eq!(rest, vec![1]);
    // Later 3.x minors are treated as 3.8.
    let (r, got, _) = fake_browser(b"RFB 003.889\n", &[1, 1]).await;
    r.unwrap();
    assert_eq!(got, vec![1, 1, 0, 0, 0, 0]);
}

#[tokio::test]
async fn client_handshake_rejects_bad_input() {
    for answer in [
        &b"RFB 003.00\n\n"[..],
        b"RFB 004.000\n",
        b"RFB 003.002\n",
        b"rfb 003.008\n",
        b"RFB 003.0a8\n",
        b"GET / HTTP/1",
    ] {
        let (r, got, _) = fake_browser(answer, &[]).await;
        assert!(
            matches!(
                r,
                Err(RfbError::MalformedVersion(_) | RfbError::UnsupportedVersion { .. })
            ),
            "{answer:?}: {r:?}"
        );
        assert!(got.is_empty(), "no security types for a bad version");
    }
    // Choosing VNC auth (2) when only None was offered.
    let (r, got, _) = fake_browser(b"RFB 003.008\n", &[2]).await;
    assert!(matches!(r, Err(RfbError::ClientSecurityType(2))), "{r:?}");
    assert_eq!(&got[..6], &[1, 1, 0, 0, 0, 1], "3.8 failure result");
    // Truncated: EOF before the choice.
    let (r, _, _) = fake_browser(b"RFB 003.008\n", &[]).await;
    assert!(matches!(r, Err(RfbError::Io(_))), "{r:?}");
}

/// Mirrors `fuzz_targets/rfb_handshake.rs`.
#[test]
fn replay_rfb_handshake_corpus() {
    for (_path, data) in corpus_files("rfb_handshake") {
        fuzz::handshake(&data);
    }
}

#[test]
fn mem_stream_handshake_smoke() {
    let mut input = b"RFB 003.008\n".to_vec();
    input.push(1);
    let mut s = fuzz::MemStream::new(&input);
    fuzz::poll_once(client_handshake(&mut s)).unwrap();
    assert_eq!(s.written, 12 + 2 + 4);
    let mut input = b"RFB 003.008\n".to_vec();
    input.extend_from_slice(&[1, 1, 0, 0, 0, 0]);
    let mut s = fuzz::MemStream::new(&input);
    fuzz::poll_once(backend_handshake(&mut s, None, &RfbLimits::default())).unwrap();
    assert_eq!(s.written, 13);
}
