//! View-only is enforced by the gateway: input never reaches the console, display
//! requests do, and malformed or oversized RFB messages close the session. Checked at a
//! recording VNC server registered as an external target (with a VNC password that the
//! gateway answers for the visitor).

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestGateway, WsBytes};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A minimal RFB 3.8 server: VNC authentication (accepts any response), a 64x48
/// ServerInit, then records every byte the client sends after ClientInit (ClientInit
/// itself is read, not recorded).
async fn recording_vnc() -> (
    std::net::SocketAddr,
    Arc<Mutex<Vec<u8>>>,
    Arc<Mutex<Vec<u8>>>,
) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let rec = Arc::new(Mutex::new(Vec::new()));
    let auth = Arc::new(Mutex::new(Vec::new()));
    let (rec2, auth2) = (rec.clone(), auth.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (rec, auth) = (rec2.clone(), auth2.clone());
            tokio::spawn(async move {
                s.write_all(b"RFB 003.008\n").await.unwrap();
                let mut v = [0u8; 12];
                s.read_exact(&mut v).await.unwrap();
                s.write_all(&[1, 2]).await.unwrap(); // VNC authentication only
                let mut choice = [0u8; 1];
                s.read_exact(&mut choice).await.unwrap();
                assert_eq!(choice[0], 2);
                s.write_all(&[7u8; 16]).await.unwrap(); // challenge
                let mut resp = [0u8; 16];
                s.read_exact(&mut resp).await.unwrap();
                auth.lock().unwrap().extend_from_slice(&resp);
                s.write_all(&0u32.to_be_bytes()).await.unwrap();
                let mut init = [0u8; 1];
                s.read_exact(&mut init).await.unwrap();
                let mut si = Vec::new();
                si.extend_from_slice(&64u16.to_be_bytes());
                si.extend_from_slice(&48u16.to_be_bytes());
                si.extend_from_slice(&[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
                si.extend_from_slice(&4u32.to_be_bytes());
                si.extend_from_slice(b"fake");
                s.write_all(&si).await.unwrap();
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => rec.lock().unwrap().extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
    (addr, rec, auth)
}

fn key_event() -> Vec<u8> {
    vec![4, 1, 0, 0, 0, 0, 0, 0x61]
}
fn pointer_event() -> Vec<u8> {
    vec![5, 1, 0, 10, 0, 10]
}
fn cut_text(text: &[u8]) -> Vec<u8> {
    let mut m = vec![6, 0, 0, 0];
    m.extend_from_slice(&(text.len() as u32).to_be_bytes());
    m.extend_from_slice(text);
    m
}
fn qemu_key() -> Vec<u8> {
    vec![255, 0, 0, 1, 0, 0, 0, 0x61, 0, 0, 0, 0x1e]
}
fn fb_request() -> Vec<u8> {
    vec![3, 0, 0, 0, 0, 0, 0, 64, 0, 48]
}
fn set_encodings() -> Vec<u8> {
    vec![2, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1]
}

async fn setup(
    view_only: bool,
) -> (
    TestGateway,
    serde_json::Value,
    Arc<Mutex<Vec<u8>>>,
    Arc<Mutex<Vec<u8>>>,
) {
    let gw = TestGateway::start().await;
    let (addr, rec, auth) = recording_vnc().await;
    let (s, v) = gw
        .admin(
            "POST",
            "/api/v1/targets",
            Some(json!({"name": "rec", "kind": "vnc", "address": addr.to_string(), "vnc_password": "hunter2"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let link = gw
        .create_link(json!({"vm": "rec", "ttl_seconds": 600, "view_only": view_only}))
        .await;
    (gw, link, rec, auth)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_only_drops_input_and_passes_display_requests() {
    let (gw, link, rec, auth) = setup(true).await;
    let mut c = WsBytes::new(gw.open_console(&link, None).await);
    let (w, h, name) = c.rfb_connect().await;
    assert_eq!((w, h, name.as_str()), (64, 48, "fake"));
    assert_eq!(
        auth.lock().unwrap().len(),
        16,
        "the gateway answered the VNC challenge"
    );
    // a mix, sent split across frames in odd places
    let mut stream = Vec::new();
    for m in [
        set_encodings(),
        key_event(),
        pointer_event(),
        cut_text(b"rm -rf /"),
        qemu_key(),
        fb_request(),
    ] {
        stream.extend_from_slice(&m);
    }
    for chunk in stream.chunks(5) {
        c.send(chunk).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = rec.lock().unwrap().clone();
    let mut want = set_encodings();
    want.extend_from_slice(&fb_request());
    assert_eq!(
        got, want,
        "only ClientInit and display messages reach the console"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_links_pass_input_unchanged() {
    let (gw, link, rec, _) = setup(false).await;
    let mut c = WsBytes::new(gw.open_console(&link, None).await);
    c.rfb_connect().await;
    let mut stream = Vec::new();
    for m in [
        key_event(),
        pointer_event(),
        cut_text(b"hello"),
        fb_request(),
    ] {
        stream.extend_from_slice(&m);
    }
    c.send(&stream).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = rec.lock().unwrap().clone();
    assert_eq!(got, stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_cut_text_length_closes_the_session() {
    let (gw, link, rec, _) = setup(false).await;
    let mut c = WsBytes::new(gw.open_console(&link, None).await);
    c.rfb_connect().await;
    c.send(&[6, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, b'x']).await;
    let closed = c.closed_within(Duration::from_secs(2)).await;
    assert_eq!(closed, Some((1008, "protocol_error".to_owned())));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        rec.lock().unwrap().is_empty(),
        "nothing after ClientInit reached the console"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_messages_and_huge_encoding_lists_close_the_session() {
    for bad in [vec![77u8, 1, 2, 3], vec![2, 0, 0xff, 0xff]] {
        let (gw, link, _, _) = setup(true).await;
        let mut c = WsBytes::new(gw.open_console(&link, None).await);
        c.rfb_connect().await;
        c.send(&bad).await;
        let closed = c.closed_within(Duration::from_secs(2)).await;
        assert_eq!(closed.map(|c| c.0), Some(1008), "{bad:?}");
    }
}
