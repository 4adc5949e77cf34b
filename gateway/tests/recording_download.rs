//! A recording's download is streamed: the gateway's memory does not grow with the file
//! (a 64 MiB recording is served while the live heap grows by far less), and the bytes
//! are the file's. Its own test binary: the heap is measured process-wide (live bytes
//! from a counting allocator), so no other test may run beside it.

#![allow(clippy::unwrap_used)]

mod common;

use std::alloc::System;
use std::io::{Read, Seek, SeekFrom, Write};

use common::TestGateway;
use gateway::engine::recordings::format::{self, Kind};
use gateway::store::{RecordingInfo, RecordingStatus};
use serde_json::json;
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[global_allocator]
static HEAP: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn live_heap_bytes() -> i64 {
    let s = HEAP.stats();
    s.bytes_allocated as i64 - s.bytes_deallocated as i64 + s.bytes_reallocated as i64
}

#[tokio::test]
async fn a_large_recording_is_downloaded_without_holding_it_in_memory() {
    let gw = TestGateway::start().await;
    let link = gw
        .raw_link("echo", "127.0.0.1:9", json!({"record": true}))
        .await;
    // A 64 MiB recording of this gateway: in its folder and its index.
    let id = "bigrecording0001";
    let dir = gw.dir.path().join("recordings");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{id}.vmrec"));
    let mut f = std::fs::File::create(&path).unwrap();
    let mut rec = format::MAGIC.to_vec();
    format::encode(&mut rec, Kind::Meta, 0, br#"{"format":2,"console":"raw"}"#);
    f.write_all(&rec).unwrap();
    let payload: Vec<u8> = (0..format::MAX_PAYLOAD).map(|i| (i % 251) as u8).collect();
    for i in 0..64u64 {
        rec.clear();
        format::encode(&mut rec, Kind::ToClient, i * 1000, &payload);
        f.write_all(&rec).unwrap();
    }
    drop(f);
    drop(payload);
    let len = std::fs::metadata(&path).unwrap().len();
    let store = gw.app.store();
    store
        .put_recording(&RecordingInfo {
            id: id.into(),
            session_id: "s".into(),
            link_id: link["id"].as_str().unwrap().into(),
            vm: "echo".into(),
            console: "raw".into(),
            channel: None,
            gateway: gw.app.config().recording.gateway_name.clone(),
            file: format!("{id}.vmrec"),
            started_at: time::OffsetDateTime::now_utc(),
            ended_at: Some(time::OffsetDateTime::now_utc()),
            bytes: len,
            status: RecordingStatus::Complete,
            detail: None,
        })
        .await
        .unwrap();

    // Read it slowly, a small buffer at a time, comparing with the file on disk.
    let before = live_heap_bytes();
    let mut peak = 0i64;
    let mut tcp = tokio::net::TcpStream::connect(gw.admin).await.unwrap();
    let req = format!(
        "GET /api/v1/recordings/{id}/file HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        gw.admin_token
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut disk = std::fs::File::open(&path).unwrap();
    let mut buf = vec![0u8; 16 * 1024];
    let mut want = vec![0u8; 16 * 1024];
    let mut head = Vec::new();
    let mut body = 0u64;
    loop {
        let n = tcp.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        let mut got = &buf[..n];
        if head.len() < 4 || !head.ends_with(b"\r\n\r\n") {
            // The status line and headers, byte by byte to their end.
            while let Some((&b, rest)) = got.split_first() {
                head.push(b);
                got = rest;
                if head.ends_with(b"\r\n\r\n") {
                    break;
                }
            }
        }
        if !got.is_empty() {
            disk.seek(SeekFrom::Start(body)).unwrap();
            disk.read_exact(&mut want[..got.len()]).unwrap();
            assert!(got == &want[..got.len()], "bytes differ at {body}");
            body += got.len() as u64;
        }
        peak = peak.max(live_heap_bytes() - before);
        tokio::time::sleep(std::time::Duration::from_micros(200)).await;
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains(&format!("content-length: {len}")), "{head}");
    assert_eq!(body, len);
    println!("download of {len} bytes: live heap grew by at most {peak} bytes");
    assert!(
        peak < 8 << 20,
        "the live heap grew by {peak} bytes serving a {len}-byte file"
    );
}
