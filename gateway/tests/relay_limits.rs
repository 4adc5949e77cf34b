//! The relay's idle bound: a silent visitor is pinged, timed out, and still reads the
//! close code (the gateway waits for its answering close before ending the connection).
//! The memory bound for a visitor who stops reading is in `relay_backpressure.rs`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{TestGateway, WsBytes};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_visitor_is_timed_out() {
    let gw =
        TestGateway::start_with("[limits]\nws_ping_interval_secs = 1\nws_idle_timeout_secs = 2\n")
            .await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _keep = s;
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
        }
    });
    let link = gw.raw_link("quiet", &addr.to_string(), json!({})).await;
    let mut c = WsBytes::new(gw.open_console(&link, None).await);
    // not reading means not answering pings
    tokio::time::sleep(Duration::from_secs(4)).await;
    let closed = c.closed_within(Duration::from_secs(2)).await;
    assert_eq!(closed, Some((4008, "idle_timeout".to_owned())));

    // a visitor who answers pings (by reading) stays connected
    let mut d = WsBytes::new(gw.open_console(&link, None).await);
    assert_eq!(d.closed_within(Duration::from_secs(4)).await, None);
}
