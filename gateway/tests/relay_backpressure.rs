//! The relay's memory bound: a visitor who stops reading cannot grow the gateway's memory;
//! the console is throttled instead, and the relay goes on when the visitor reads again.
//!
//! This is the only test in its binary: the heap is measured with a counting allocator
//! (live bytes, not RSS, which allocator retention and other tests would blur).

#![allow(clippy::unwrap_used)]

mod common;

use std::alloc::System;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{TestGateway, WsBytes};
use serde_json::json;
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};
use tokio::io::AsyncWriteExt;

#[global_allocator]
static HEAP: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes allocated and not yet freed, in the whole process.
fn live_heap_bytes() -> i64 {
    let s = HEAP.stats();
    let total = i128::try_from(s.bytes_allocated).unwrap()
        - i128::try_from(s.bytes_deallocated).unwrap()
        + i128::try_from(s.bytes_reallocated).unwrap();
    i64::try_from(total).unwrap()
}

/// A raw "console" that writes as fast as it can, counting what the gateway accepted.
async fn flooding_target() -> (std::net::SocketAddr, Arc<AtomicU64>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let s2 = sent.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let sent = s2.clone();
            tokio::spawn(async move {
                let chunk = vec![0x5au8; 64 * 1024];
                while s.write_all(&chunk).await.is_ok() {
                    sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                }
            });
        }
    });
    (addr, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_who_stops_reading_throttles_the_console() {
    let gw = TestGateway::start().await;
    let (addr, sent) = flooding_target().await;
    let link = gw.raw_link("flood", &addr.to_string(), json!({})).await;
    let mut c = WsBytes::new(gw.open_console(&link, None).await);
    // read a little, then stop reading altogether
    c.read_exact(1024).await;
    let heap_before = live_heap_bytes();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let at_3s = sent.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let at_5s = sent.load(Ordering::SeqCst);
    let grew = live_heap_bytes() - heap_before;
    eprintln!("console wrote {at_3s} bytes by 3 s, {at_5s} by 5 s; heap grew {grew} bytes");
    assert!(
        at_5s - at_3s <= 256 * 1024,
        "the console was not throttled: {at_3s} -> {at_5s}"
    );
    assert!(
        at_5s < 64 << 20,
        "{at_5s} bytes were accepted from the console"
    );
    // the relay holds at most a buffer or two per direction; the rest waits in the kernel
    assert!(grew < 2 << 20, "the heap grew by {grew} bytes");
    // reading again drains it and the relay goes on
    c.read_exact(4 << 20).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sent.load(Ordering::SeqCst) > at_5s, "the relay resumed");
}
