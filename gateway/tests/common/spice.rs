//! A raw SPICE client over the gateway's WebSocket, enough for tests: the link message,
//! the ticket, and messages with mini headers (what spice-html5 negotiates).

use std::time::Duration;

use super::WsBytes;

pub const MAIN: u8 = 1;
pub const DISPLAY: u8 = 2;
pub const INPUTS: u8 = 3;
/// AUTH_SELECTION | MINI_HEADER, as spice-html5 announces.
pub const COMMON_CAPS: u32 = (1 << 0) | (1 << 3);

pub fn link_message(channel: u8, connection_id: u32) -> Vec<u8> {
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

pub fn mini(msg_type: u16, body: &[u8]) -> Vec<u8> {
    let mut m = msg_type.to_le_bytes().to_vec();
    m.extend_from_slice(&(body.len() as u32).to_le_bytes());
    m.extend_from_slice(body);
    m
}

pub fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// One SPICE channel as a client sees it, counting the bytes it sent that the
/// gateway must pass to the console.
pub struct Chan {
    pub c: WsBytes,
    ack_window: u32,
    until_ack: u32,
    pub passing_sent: u64,
}

impl Chan {
    /// Link + ticket; returns the channel once the server said SPICE_LINK_ERR_OK.
    pub async fn link(c: WsBytes, channel: u8, connection_id: u32) -> Chan {
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
        // ticket the server can decrypt would do.
        let mut auth = 1u32.to_le_bytes().to_vec();
        auth.extend_from_slice(&ticket(&reply[4..166]));
        ch.send(&auth, true).await;
        let result = ch.c.read_exact(4).await;
        assert_eq!(le32(&result, 0), 0, "link result (SPICE_LINK_ERR_OK)");
        ch
    }

    pub async fn send(&mut self, bytes: &[u8], passes: bool) {
        if passes {
            self.passing_sent += bytes.len() as u64;
        }
        self.c.send(bytes).await;
    }

    /// The next message (type, body), answering SET_ACK, PING and the ack window as a
    /// client must.
    pub async fn next(&mut self) -> (u16, Vec<u8>) {
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

    pub async fn wait_for(&mut self, what: &str, want: impl Fn(u16) -> bool) -> (u16, Vec<u8>) {
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
pub fn ticket(pub_key_der: &[u8]) -> Vec<u8> {
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
