//! View-only SPICE links against QEMU's real SPICE server: the main and display channels
//! link, authenticate and run (the display draws), the inputs channel is refused, and
//! the main channel's messages that act on the guest (mouse mode, agent) never reach
//! the console.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{TestGateway, WsBytes};
use serde_json::json;

const MAIN: u8 = 1;
const DISPLAY: u8 = 2;
const INPUTS: u8 = 3;
/// AUTH_SELECTION | MINI_HEADER, as spice-html5 announces.
const COMMON_CAPS: u32 = (1 << 0) | (1 << 3);

fn link_message(channel: u8, connection_id: u32) -> Vec<u8> {
    let mut m = b"REDQ".to_vec();
    for v in [2u32, 2, 22] {
        m.extend_from_slice(&v.to_le_bytes());
    }
    m.extend_from_slice(&connection_id.to_le_bytes());
    m.extend_from_slice(&[channel, 0]);
    for v in [1u32, 0, 18, COMMON_CAPS] {
        m.extend_from_slice(&v.to_le_bytes());
    }
    m
}

fn mini(msg_type: u16, body: &[u8]) -> Vec<u8> {
    let mut m = msg_type.to_le_bytes().to_vec();
    m.extend_from_slice(&(body.len() as u32).to_le_bytes());
    m.extend_from_slice(body);
    m
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// One SPICE channel as a client sees it, counting the bytes it sent that the
/// gateway must pass to the console.
struct Chan {
    c: WsBytes,
    ack_window: u32,
    until_ack: u32,
    passing_sent: u64,
}

impl Chan {
    /// Link + ticket; returns the channel once the server said SPICE_LINK_ERR_OK.
    async fn link(c: WsBytes, channel: u8, connection_id: u32) -> Chan {
        let mut ch = Chan {
            c,
            ack_window: 0,
            until_ack: 0,
            passing_sent: 0,
        };
        ch.c.send(&link_message(channel, connection_id)).await;
        let hdr = ch.c.read_exact(16).await;
        assert_eq!(&hdr[..4], b"REDQ");
        let reply = ch.c.read_exact(le32(&hdr, 12) as usize).await;
        assert_eq!(le32(&reply, 0), 0, "SpiceLinkReply.error");
        // Auth mechanism SPICE + a ticket. QEMU runs with disable-ticketing=on, so any
        // ticket the server can decrypt would do; an all-zero one is what we can send
        // without RSA here.
        let mut auth = 1u32.to_le_bytes().to_vec();
        auth.extend_from_slice(&ticket(&reply[4..166]));
        ch.send(&auth, true).await;
        let result = ch.c.read_exact(4).await;
        assert_eq!(le32(&result, 0), 0, "link result (SPICE_LINK_ERR_OK)");
        ch
    }

    async fn send(&mut self, bytes: &[u8], passes: bool) {
        if passes {
            self.passing_sent += bytes.len() as u64;
        }
        self.c.send(bytes).await;
    }

    /// The next message (type, body), answering SET_ACK, PING and the ack window as a
    /// client must.
    async fn next(&mut self) -> (u16, Vec<u8>) {
        let h = self.c.read_exact(6).await;
        let t = u16::from_le_bytes([h[0], h[1]]);
        let body = self.c.read_exact(le32(&h, 2) as usize).await;
        match t {
            // SPICE_MSG_SET_ACK { generation, window } → SPICE_MSGC_ACK_SYNC
            3 => {
                self.ack_window = le32(&body, 4);
                self.until_ack = self.ack_window;
                self.send(&mini(1, &body[..4]), true).await;
                return (t, body);
            }
            // SPICE_MSG_PING { id, timestamp, ... } → SPICE_MSGC_PONG
            4 => self.send(&mini(3, &body[..12]), true).await,
            _ => {}
        }
        if self.ack_window > 0 {
            self.until_ack -= 1;
            if self.until_ack == 0 {
                self.send(&mini(2, &[]), true).await;
                self.until_ack = self.ack_window;
            }
        }
        (t, body)
    }

    async fn wait_for(&mut self, what: &str, want: impl Fn(u16) -> bool) -> (u16, Vec<u8>) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let m = tokio::time::timeout_at(deadline, self.next())
                .await
                .unwrap_or_else(|_| panic!("no {what} within 30 s"));
            if want(m.0) {
                return m;
            }
        }
    }
}

/// The encrypted ticket: RSA-OAEP of an empty password under the server's key, by the
/// openssl command-line tool (the gateway has no RSA code, on purpose).
fn ticket(pub_key_der: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.der");
    let pw = dir.path().join("pw");
    let out = dir.path().join("ticket");
    std::fs::write(&key, pub_key_der).unwrap();
    std::fs::write(&pw, b"\0").unwrap();
    let st = std::process::Command::new("openssl")
        .args(["pkeyutl", "-encrypt", "-pubin", "-keyform", "DER", "-inkey"])
        .arg(&key)
        .args(["-pkeyopt", "rsa_padding_mode:oaep", "-in"])
        .arg(&pw)
        .arg("-out")
        .arg(&out)
        .status()
        .expect("openssl");
    assert!(st.success(), "openssl pkeyutl");
    let t = std::fs::read(&out).unwrap();
    assert_eq!(t.len(), 128);
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_only_spice_links_authenticate_draw_and_drop_guest_input() {
    let gw = TestGateway::start().await;
    gw.start_firmware_vm("spv").await;
    let link = gw
        .create_link(json!({
            "vm": "spv", "console": "spice", "view_only": true, "ttl_seconds": 600
        }))
        .await;
    let (status, cookie, v) = gw.exchange(link["token"].as_str().unwrap(), None).await;
    assert_eq!(status, 200, "{v}");
    let ws_path = v["ws_path"].as_str().unwrap().to_owned();
    let open = || async {
        WsBytes::new(
            gw.ws(&ws_path, cookie.as_deref(), Some(&gw.origin()))
                .await
                .unwrap(),
        )
    };
    let to_console = || gw.app.metrics().bytes_to_console.load(Ordering::Relaxed);
    let base = to_console();

    // Main channel: link, ticket, SPICE_MSG_MAIN_INIT with the session id.
    let mut main = Chan::link(open().await, MAIN, 0).await;
    let (_, init) = main.wait_for("MAIN_INIT", |t| t == 103).await;
    let session_id = le32(&init, 0);

    // Guest-affecting requests are dropped; ATTACH_CHANNELS in the same frame passes
    // (the server answers it with SPICE_MSG_MAIN_CHANNELS_LIST).
    let mut frame = mini(105, &2u16.to_le_bytes()); // MOUSE_MODE_REQUEST: client mode
    frame.extend(mini(106, &10u32.to_le_bytes())); // AGENT_START
                                                   // AGENT_DATA whose body looks like more messages: skipped whole, not parsed.
    let fake = [mini(104, &[]), mini(105, &1u16.to_le_bytes())].concat();
    frame.extend(mini(107, &fake));
    let attach = mini(104, &[]);
    frame.extend(&attach);
    main.passing_sent += attach.len() as u64;
    main.c.send(&frame).await;
    let (_, list) = main.wait_for("MAIN_CHANNELS_LIST", |t| t == 104).await;
    let channels: Vec<u8> = (0..le32(&list, 0) as usize)
        .map(|i| list[4 + 2 * i])
        .collect();
    assert!(channels.contains(&DISPLAY), "channels {channels:?}");

    // Display channel: links with the session id and draws.
    let mut display = Chan::link(open().await, DISPLAY, session_id).await;
    // SPICE_MSGC_DISPLAY_INIT: cache id/size, glz dictionary id/window.
    let mut dinit = vec![0u8];
    dinit.extend_from_slice(&(10i64 * 1024 * 1024).to_le_bytes());
    dinit.push(0);
    dinit.extend_from_slice(&(1i32 << 20).to_le_bytes());
    display.send(&mini(101, &dinit), true).await;
    let (_, surface) = display
        .wait_for("DISPLAY_SURFACE_CREATE", |t| t == 314)
        .await;
    let (w, h) = (le32(&surface, 4), le32(&surface, 8));
    assert!(w >= 320 && h >= 200, "surface {w}x{h}");
    // A drawing operation (DRAW_FILL .. DRAW_COMPOSITE).
    display
        .wait_for("a draw message", |t| (302..=318).contains(&t) && t != 314)
        .await;

    // The inputs channel is refused before it reaches QEMU.
    let mut inputs = open().await;
    inputs.send(&link_message(INPUTS, session_id)).await;
    assert_eq!(
        inputs.closed_within(Duration::from_secs(10)).await,
        Some((4011, "view_only".into()))
    );

    // Exactly what the filter must pass reached the console: the link messages are
    // written before the relay counts, the rest is tickets, acks, pongs, attach and
    // display init — none of the dropped bytes.
    let want = main.passing_sent + display.passing_sent;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while to_console() - base < want && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(to_console() - base, want, "bytes that reached the console");

    // Both channels still run; at the end the three dropped messages are counted.
    drop(display);
    main.c.send(&mini(6, &[])).await; // SPICE_MSGC_DISCONNECTING
    drop(main);
    let dropped = &gw.app.metrics().input_messages_dropped;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while dropped.load(Ordering::Relaxed) < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dropped.load(Ordering::Relaxed), 3);
}
