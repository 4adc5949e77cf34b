//! The per-link clipboard policy, enforced by the gateway against a real QEMU guest that
//! runs the test guest's clipboard agent (`vmgw-clip` on `com.redhat.spice.0`, QEMU's
//! `qemu-vdagent`), with raw WebSocket RFB clients that ignore the page and try
//! everything a modified client could.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine as _;
use common::{TestGateway, WsBytes};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use vmm_backend::PowerAction;

const EXT_CLIPBOARD: i32 = -1_063_131_698;
const CAPS: u32 = 1 << 24;
const REQUEST: u32 = 1 << 25;
const NOTIFY: u32 = 1 << 27;
const PROVIDE: u32 = 1 << 28;
const TEXT: u32 = 1;

// ---- the guest, through qemu-ga's guest-exec ---------------------------

/// Runs `path args` in the guest: (exit code, stdout). Retries until the agent answers.
async fn guest_exec(qga: &Path, path: &str, args: &[&str]) -> (i64, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        match tokio::time::timeout(Duration::from_secs(20), guest_exec_once(qga, path, args)).await
        {
            Ok(Some(r)) => return r,
            _ => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the guest agent did not run {path}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

async fn qga_call(
    r: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    w: &mut tokio::net::unix::OwnedWriteHalf,
    cmd: Value,
) -> Option<Value> {
    w.write_all(format!("{cmd}\n").as_bytes()).await.ok()?;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let v: Value = match serde_json::from_str(line.trim_start_matches('\u{ff}')) {
            Ok(v) => v,
            Err(_) => continue,
        };
        if let Some(ret) = v.get("return") {
            return Some(ret.clone());
        }
        if v.get("error").is_some() {
            return None;
        }
    }
}

async fn guest_exec_once(qga: &Path, path: &str, args: &[&str]) -> Option<(i64, String)> {
    let s = UnixStream::connect(qga).await.ok()?;
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    let id: u32 = rand::random::<u32>() >> 1;
    // guest-sync discards whatever an earlier client left in the channel.
    loop {
        let ret = qga_call(
            &mut r,
            &mut w,
            json!({"execute": "guest-sync", "arguments": {"id": id}}),
        )
        .await?;
        if ret == json!(id) {
            break;
        }
    }
    let ret = qga_call(
        &mut r,
        &mut w,
        json!({"execute": "guest-exec", "arguments": {"path": path, "arg": args, "capture-output": true}}),
    )
    .await?;
    let pid = ret["pid"].as_i64()?;
    loop {
        let st = qga_call(
            &mut r,
            &mut w,
            json!({"execute": "guest-exec-status", "arguments": {"pid": pid}}),
        )
        .await?;
        if st["exited"] == json!(true) {
            let out = st["out-data"]
                .as_str()
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .unwrap_or_default();
            return Some((
                st["exitcode"].as_i64().unwrap_or(-1),
                String::from_utf8_lossy(&out).into_owned(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn guest_file(qga: &Path, file: &str) -> String {
    guest_exec(qga, "/bin/cat", &[file]).await.1
}

/// Waits until `file` in the guest satisfies `ok`; returns its content.
async fn wait_guest_file(qga: &Path, file: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = guest_file(qga, file).await;
        if ok(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{file} in the guest never became right; it holds:\n{s}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

// ---- a raw RFB visitor ---------------------------------------------------

/// One server message as the test sees it.
#[derive(Debug)]
enum ServerMsg {
    Update,
    Bell,
    Cut { flags: Option<u32>, data: Vec<u8> },
}

struct Visitor {
    ws: WsBytes,
    w: u16,
    h: u16,
}

impl Visitor {
    /// Opens a VNC session on `link` and asks for raw pixels and the extended clipboard
    /// only (so the test's own parser stays small).
    async fn open(gw: &TestGateway, link: &Value) -> Visitor {
        let mut ws = WsBytes::new(gw.open_console(link, None).await);
        let (w, h, _) = ws.rfb_connect().await;
        let mut m = vec![2u8, 0, 0, 2];
        m.extend_from_slice(&0i32.to_be_bytes());
        m.extend_from_slice(&EXT_CLIPBOARD.to_be_bytes());
        ws.send(&m).await;
        Visitor { ws, w, h }
    }

    async fn read_msg(&mut self) -> ServerMsg {
        let t = self.ws.read_exact(1).await[0];
        match t {
            0 => {
                let hdr = self.ws.read_exact(3).await;
                let n = u16::from_be_bytes([hdr[1], hdr[2]]);
                for _ in 0..n {
                    let r = self.ws.read_exact(12).await;
                    let w = u16::from_be_bytes([r[4], r[5]]) as usize;
                    let h = u16::from_be_bytes([r[6], r[7]]) as usize;
                    let enc = i32::from_be_bytes([r[8], r[9], r[10], r[11]]);
                    assert_eq!(enc, 0, "only raw rectangles were asked for");
                    self.ws.read_exact(w * h * 4).await;
                }
                ServerMsg::Update
            }
            2 => ServerMsg::Bell,
            3 => {
                let hdr = self.ws.read_exact(7).await;
                let len = i32::from_be_bytes([hdr[3], hdr[4], hdr[5], hdr[6]]);
                if len >= 0 {
                    let data = self.ws.read_exact(len as usize).await;
                    return ServerMsg::Cut { flags: None, data };
                }
                let body = self.ws.read_exact(len.unsigned_abs() as usize).await;
                let flags = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                ServerMsg::Cut {
                    flags: Some(flags),
                    data: body[4..].to_vec(),
                }
            }
            other => panic!("unexpected server message type {other}"),
        }
    }

    /// Asks for a full frame and returns every clipboard message that came before it.
    /// QEMU answers the request after everything it queued for this visitor earlier.
    async fn clipboard_until_frame(&mut self) -> Vec<(Option<u32>, Vec<u8>)> {
        let mut req = vec![3u8, 0];
        for v in [0u16, 0, self.w, self.h] {
            req.extend_from_slice(&v.to_be_bytes());
        }
        self.ws.send(&req).await;
        let mut clips = Vec::new();
        loop {
            match self.read_msg().await {
                ServerMsg::Update => return clips,
                ServerMsg::Bell => {}
                ServerMsg::Cut { flags, data } => clips.push((flags, data)),
            }
        }
    }

    /// Reads until an extended clipboard message with one of `want`'s action bits.
    async fn wait_ext(&mut self, want: u32) -> (u32, Vec<u8>) {
        loop {
            if let ServerMsg::Cut {
                flags: Some(f),
                data,
            } = self.read_msg().await
            {
                if f & want != 0 {
                    return (f, data);
                }
            }
        }
    }

    async fn send_ext(&mut self, flags: u32, data: &[u8]) {
        let mut m = vec![6u8, 0, 0, 0];
        m.extend_from_slice(&(-(4 + data.len() as i32)).to_be_bytes());
        m.extend_from_slice(&flags.to_be_bytes());
        m.extend_from_slice(data);
        self.ws.send(&m).await;
    }

    async fn send_classic(&mut self, text: &[u8]) {
        let mut m = vec![6u8, 0, 0, 0];
        m.extend_from_slice(&(text.len() as u32).to_be_bytes());
        m.extend_from_slice(text);
        self.ws.send(&m).await;
    }

    /// Everything a client can do to put `text` into the guest's clipboard, unasked:
    /// notify, provide (extended) and the classic cut text.
    async fn paste_everything(&mut self, text: &str) {
        self.send_ext(NOTIFY | TEXT, &[]).await;
        self.send_ext(PROVIDE | TEXT, &provide_body(text)).await;
        self.send_classic(text.as_bytes()).await;
    }
}

/// The zlib data of an extended clipboard `provide` of UTF-8 `text` (NUL-terminated, as
/// clients send it): the length-prefixed text in one stored deflate block.
fn provide_body(text: &str) -> Vec<u8> {
    let mut raw = Vec::new();
    let t = [text.as_bytes(), &[0]].concat();
    raw.extend_from_slice(&(t.len() as u32).to_be_bytes());
    raw.extend_from_slice(&t);
    let mut z = vec![0x78, 0x01, 0x01];
    let n = raw.len() as u16;
    z.extend_from_slice(&n.to_le_bytes());
    z.extend_from_slice(&(!n).to_le_bytes());
    z.extend_from_slice(&raw);
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    z
}

/// The text of an extended clipboard `provide` from QEMU.
fn provided_text(data: &[u8]) -> String {
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(data)
        .read_to_end(&mut raw)
        .unwrap();
    let len = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize;
    String::from_utf8_lossy(&raw[4..4 + len])
        .trim_end_matches('\0')
        .to_owned()
}

fn link(vm: &str, clipboard: Option<&str>, view_only: bool) -> Value {
    let mut l = json!({"vm": vm, "ttl_seconds": 600, "view_only": view_only});
    if let Some(c) = clipboard {
        l["clipboard"] = json!(c);
    }
    l
}

fn qga_path(gw: &TestGateway, vm: &str) -> PathBuf {
    gw.dir.path().join("run").join(vm).join("qga.sock")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clipboard_policy_holds_both_ways_against_a_real_guest() {
    let gw = TestGateway::start().await;
    let vm = "clip";
    gw.app
        .backend()
        .define(test_support::linux_vm(vm, "", &[]))
        .await
        .unwrap();
    gw.app
        .backend()
        .power(vm, PowerAction::Start)
        .await
        .unwrap();
    let qga = qga_path(&gw, vm);
    wait_guest_file(&qga, "/run/vmgw/clip.log", |s| s.contains("caps from host")).await;

    // The links: the default (to_guest), none, from_guest, both, and a view-only link
    // that asks for both (it may read, never write).
    let l_default = gw.create_link(link(vm, None, false)).await;
    assert_eq!(l_default["clipboard"], "to_guest", "the default policy");
    let l_none = gw.create_link(link(vm, Some("none"), false)).await;
    let l_from = gw.create_link(link(vm, Some("from_guest"), false)).await;
    let l_both = gw.create_link(link(vm, Some("both"), false)).await;
    let l_view = gw.create_link(link(vm, Some("both"), true)).await;
    let mut v_default = Visitor::open(&gw, &l_default).await;
    let mut v_none = Visitor::open(&gw, &l_none).await;
    let mut v_from = Visitor::open(&gw, &l_from).await;
    let mut v_both = Visitor::open(&gw, &l_both).await;
    let mut v_view = Visitor::open(&gw, &l_view).await;
    for v in [
        &mut v_default,
        &mut v_none,
        &mut v_from,
        &mut v_both,
        &mut v_view,
    ] {
        // Every visitor gets QEMU's capabilities (they carry no text).
        let (f, _) = v.wait_ext(CAPS).await;
        assert_ne!(f & TEXT, 0);
    }

    // ---- from the guest ----
    let secret = format!("guest-secret-{}", rand::random::<u32>());
    let (rc, _) = guest_exec(&qga, "/usr/bin/vmgw-clip", &["set", &secret]).await;
    assert_eq!(rc, 0);
    // Allowed: notified, asks, gets the text.
    for v in [&mut v_both, &mut v_from, &mut v_view] {
        v.wait_ext(NOTIFY).await;
        v.send_ext(REQUEST | TEXT, &[]).await;
        let (_, data) = v.wait_ext(PROVIDE).await;
        assert_eq!(provided_text(&data), secret);
    }
    // Refused: a client that asks anyway (as a modified page would) gets nothing, and
    // QEMU's notification never reaches it either. The allowed visitors above were
    // notified, so QEMU has queued its notification for these too, before the frame.
    for v in [&mut v_default, &mut v_none] {
        v.send_ext(REQUEST | TEXT, &[]).await;
        let clips = v.clipboard_until_frame().await;
        assert!(
            clips.is_empty(),
            "a visitor without from_guest got clipboard messages: {clips:?}"
        );
    }

    // ---- to the guest ----
    // Refused first: none, from_guest and view-only push everything they can.
    for (v, tag) in [
        (&mut v_none, "none"),
        (&mut v_from, "from"),
        (&mut v_view, "view"),
    ] {
        v.paste_everything(&format!("refused-{tag}")).await;
        // QEMU has handled all of it once it answers this frame request.
        v.clipboard_until_frame().await;
    }
    // Allowed: the default link's visitor pastes; QEMU asks it for the text when the
    // guest requests it.
    let pasted = format!("visitor-paste-{}", rand::random::<u32>());
    v_default.send_ext(NOTIFY | TEXT, &[]).await;
    v_default.wait_ext(REQUEST).await;
    v_default
        .send_ext(PROVIDE | TEXT, &provide_body(&pasted))
        .await;
    let got = wait_guest_file(&qga, "/run/vmgw/clip.pasted", |s| s.contains(&pasted)).await;
    assert_eq!(got.trim_end_matches('\0'), pasted);
    let log = guest_file(&qga, "/run/vmgw/clip.log").await;
    assert_eq!(
        log.matches("host pasted").count(),
        1,
        "only the allowed paste reached the guest:\n{log}"
    );
    assert_eq!(
        log.matches("host grabbed").count(),
        1,
        "only the allowed visitor took the guest's clipboard:\n{log}"
    );

    // The drops are counted (sessions add theirs when they end).
    drop((v_default, v_none, v_from, v_both, v_view));
    let m = gw.app.metrics();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while m.clipboard_dropped_from_console.load(Ordering::Relaxed) == 0
        || m.clipboard_dropped_from_visitor.load(Ordering::Relaxed) == 0
    {
        assert!(tokio::time::Instant::now() < deadline, "drops not counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.app
        .backend()
        .power(vm, PowerAction::Poweroff)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_policy_is_in_the_api_and_the_exchange() {
    let gw = TestGateway::start().await;
    gw.start_firmware_vm("fw").await;
    // Unknown spellings are refused.
    let (s, v) = gw
        .admin(
            "POST",
            "/api/v1/links",
            Some(json!({"vm": "fw", "ttl_seconds": 60, "clipboard": "all"})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    for (asked, view_only, effective) in [
        (None, false, "to_guest"),
        (Some("both"), false, "both"),
        (Some("both"), true, "from_guest"),
        (Some("to_guest"), true, "none"),
        (Some("none"), false, "none"),
    ] {
        let l = gw.create_link(link("fw", asked, view_only)).await;
        assert_eq!(l["clipboard"], asked.unwrap_or("to_guest"));
        let (_, shown) = gw
            .admin(
                "GET",
                &format!("/api/v1/links/{}", l["id"].as_str().unwrap()),
                None,
            )
            .await;
        assert_eq!(shown["clipboard"], l["clipboard"]);
        // The visitor learns what is in force (view-only never writes to the guest).
        let (status, _, ex) = gw.exchange(l["token"].as_str().unwrap(), None).await;
        assert_eq!(status, 200);
        assert_eq!(
            ex["clipboard"], effective,
            "{asked:?} view_only={view_only}"
        );
    }
}

// ---- SPICE: the guest agent's clipboard through the main channel -------------

mod spice_agent {
    //! A raw SPICE main channel that speaks the VDAgent clipboard itself, as a modified
    //! client would: it asks, grabs and pastes whatever the policy says.

    use super::common::spice::{le32, mini, Chan, MAIN};
    use super::common::{TestGateway, WsBytes};
    use serde_json::Value;

    pub const CLIPBOARD: u32 = 4;
    pub const CAPS: u32 = 6;
    pub const GRAB: u32 = 7;
    pub const REQUEST: u32 = 8;
    const BY_DEMAND: u32 = 1 << 5;
    const UTF8: u32 = 1;

    pub fn vd(t: u32, data: &[u8]) -> Vec<u8> {
        let mut m = 1u32.to_le_bytes().to_vec();
        m.extend_from_slice(&t.to_le_bytes());
        m.extend_from_slice(&0u64.to_le_bytes());
        m.extend_from_slice(&(data.len() as u32).to_le_bytes());
        m.extend_from_slice(data);
        m
    }

    /// One visitor's main channel with the agent started.
    pub struct Agent {
        pub ch: Chan,
        /// Agent tokens the server gave us (each AGENT_DATA we send takes one).
        tokens: u32,
        /// A VDAgent message being reassembled.
        partial: Option<(u32, u32, Vec<u8>)>,
        /// Every byte of agent data that reached us.
        pub seen: Vec<u8>,
        /// Fillers (type 0) received: messages the gateway refused.
        pub fillers: u32,
        /// The type of every whole message received.
        pub types: Vec<u32>,
    }

    impl Agent {
        /// Links the main channel, starts the agent (giving the server `give` tokens) and
        /// exchanges capabilities with the guest's agent.
        pub async fn open(gw: &TestGateway, link: &Value, give: u32) -> Agent {
            let (status, cookie, v) = gw.exchange(link["token"].as_str().unwrap(), None).await;
            assert_eq!(status, 200, "{v}");
            let ws = gw
                .ws(
                    v["ws_path"].as_str().unwrap(),
                    cookie.as_deref(),
                    Some(&gw.origin()),
                )
                .await
                .unwrap();
            let mut ch = Chan::link(WsBytes::new(ws), MAIN, 0).await;
            let (_, init) = ch.wait_for("MAIN_INIT", |t| t == 103).await;
            assert_eq!(le32(&init, 16), 1, "the guest's agent is connected");
            let tokens = le32(&init, 20);
            ch.send(&mini(106, &give.to_le_bytes()), true).await; // AGENT_START
            let mut a = Agent {
                ch,
                tokens,
                partial: None,
                seen: Vec::new(),
                fillers: 0,
                types: Vec::new(),
            };
            a.send(CAPS, &[1, 0, 0, 0, BY_DEMAND as u8, 0, 0, 0]).await;
            a.wait(CAPS).await;
            a
        }

        /// Sends one VDAgent message (in 2048-byte chunks), waiting for tokens as a
        /// client must: if the gateway removed AGENT_DATA messages, the server would
        /// never give their tokens back and this would stall.
        pub async fn send(&mut self, t: u32, data: &[u8]) {
            for chunk in vd(t, data).chunks(2048) {
                while self.tokens == 0 {
                    self.next().await;
                }
                self.tokens -= 1;
                self.ch.c.send(&mini(107, chunk)).await;
            }
        }

        pub async fn send_text(&mut self, t: u32, text: &str) {
            let mut d = UTF8.to_le_bytes().to_vec();
            d.extend_from_slice(text.as_bytes());
            self.send(t, &d).await;
        }

        pub async fn grab(&mut self) {
            self.send(GRAB, &UTF8.to_le_bytes()).await;
        }

        pub async fn request(&mut self) {
            self.send(REQUEST, &UTF8.to_le_bytes()).await;
        }

        /// The next whole VDAgent message (type, data), handling the rest of the main
        /// channel (tokens both ways).
        pub async fn next(&mut self) -> Option<(u32, Vec<u8>)> {
            let (t, body) = self.ch.next().await;
            match t {
                // SPICE_MSG_MAIN_AGENT_TOKEN
                110 => self.tokens += le32(&body, 0),
                // SPICE_MSG_MAIN_AGENT_DATA: give its token back at once.
                109 => {
                    self.ch.send(&mini(108, &1u32.to_le_bytes()), true).await;
                    self.seen.extend_from_slice(&body);
                    let (mt, size, mut data, from) = match self.partial.take() {
                        Some((mt, size, data)) => (mt, size, data, 0),
                        None => (le32(&body, 4), le32(&body, 16), Vec::new(), 20),
                    };
                    data.extend_from_slice(&body[from..]);
                    if data.len() < size as usize {
                        self.partial = Some((mt, size, data));
                        return None;
                    }
                    self.types.push(mt);
                    if mt == 0 {
                        self.fillers += 1;
                    }
                    return Some((mt, data));
                }
                _ => {}
            }
            None
        }

        /// Reads until a VDAgent message of type `want`; returns its data.
        pub async fn wait(&mut self, want: u32) -> Vec<u8> {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                let m = tokio::time::timeout_at(deadline, self.next())
                    .await
                    .unwrap_or_else(|_| panic!("no agent message of type {want} within 60 s"));
                if let Some((t, d)) = m {
                    if t == want {
                        return d;
                    }
                }
            }
        }

        /// A barrier: asks the guest's agent for its capabilities and reads until they
        /// come; everything the agent sent before has arrived. Returns the types seen.
        pub async fn sync(&mut self) -> Vec<u32> {
            self.send(CAPS, &[1, 0, 0, 0, BY_DEMAND as u8, 0, 0, 0])
                .await;
            let mut types = Vec::new();
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                let m = tokio::time::timeout_at(deadline, self.next())
                    .await
                    .expect("the guest's agent answered its capabilities within 60 s");
                if let Some((t, _)) = m {
                    if t == CAPS {
                        return types;
                    }
                    types.push(t);
                }
            }
        }
    }
}

fn spice_link(vm: &str, clipboard: Option<&str>, view_only: bool) -> Value {
    let mut l = link(vm, clipboard, view_only);
    l["console"] = json!("spice");
    l
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clipboard_policy_holds_both_ways_on_spice_links() {
    use spice_agent::{Agent, CLIPBOARD, GRAB, REQUEST};
    let gw = TestGateway::start().await;
    let vm = "spclip";
    let mut def = test_support::linux_vm(vm, "", &[]);
    def.console = vmm_backend::ConsoleConfig::Spice;
    gw.app.backend().define(def).await.unwrap();
    gw.app
        .backend()
        .power(vm, PowerAction::Start)
        .await
        .unwrap();
    let qga = qga_path(&gw, vm);
    wait_guest_file(&qga, "/run/vmgw/clip.log", |s| s.contains("agent started")).await;

    // One visitor at a time (a SPICE server serves one client).
    let mut pasted_ok = Vec::new();
    for (policy, view_only) in [
        (None, false), // the default: to_guest
        (Some("none"), false),
        (Some("from_guest"), false),
        (Some("both"), false),
        (Some("both"), true), // view-only: reads, never writes
    ] {
        let l = gw.create_link(spice_link(vm, policy, view_only)).await;
        let eff = match (l["clipboard"].as_str().unwrap(), view_only) {
            ("both", true) => "from_guest",
            ("to_guest", true) => "none",
            (p, _) => p,
        };
        let (from, to) = (
            eff == "from_guest" || eff == "both",
            eff == "to_guest" || eff == "both",
        );
        let tag = format!("{}{}", eff, if view_only { "-view" } else { "" });
        // Few tokens for the server (10): the many refused messages below must not
        // stall the agent's flow control either way.
        let mut a = Agent::open(&gw, &l, 10).await;

        // ---- from the guest ----
        let secret = format!("guest-secret-{tag}-{}", rand::random::<u32>());
        // Fifteen copies first (more grabs than the server's tokens), then the secret.
        let script = format!(
            "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do vmgw-clip set noise-$i; done; vmgw-clip set {secret}"
        );
        let (rc, _) = guest_exec(&qga, "/bin/sh", &["-c", &script]).await;
        assert_eq!(rc, 0);
        if from {
            // Allowed: the guest's grab arrives; asked, it sends the text.
            loop {
                a.wait(GRAB).await;
                a.request().await;
                let d = a.wait(CLIPBOARD).await;
                if contains(&d, &secret) {
                    break;
                }
            }
        } else {
            // Refused: the guest's sixteen grabs arrive as fillers, and asking anyway
            // gets nothing out.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while a.fillers < 16 {
                tokio::time::timeout_at(deadline, a.next())
                    .await
                    .unwrap_or_else(|_| panic!("{tag}: fillers {}", a.fillers));
            }
            a.request().await;
            a.sync().await;
            assert!(
                !a.types.contains(&GRAB) && !a.types.contains(&CLIPBOARD),
                "{tag}: the guest's clipboard messages reached the visitor: {:?}",
                a.types
            );
        }
        assert_eq!(contains(&a.seen, &secret), from, "{tag}: the guest's text");

        // ---- to the guest ----
        let text = format!("visitor-paste-{tag}-{}", rand::random::<u32>());
        if to {
            a.grab().await;
            a.wait(REQUEST).await;
            a.send_text(CLIPBOARD, &text).await;
            wait_guest_file(&qga, "/run/vmgw/clip.pasted", |s| s.contains(&text)).await;
            pasted_ok.push(text);
        } else {
            // Refused: many grabs and pastes, unasked (more than the server's tokens).
            for _ in 0..12 {
                a.grab().await;
                a.send_text(CLIPBOARD, &text).await;
            }
            // The guest's agent handled all of it once it answers this.
            a.sync().await;
            assert!(
                !a.types.contains(&REQUEST),
                "{tag}: the guest asked: {:?}",
                a.types
            );
            let pasted = guest_file(&qga, "/run/vmgw/clip.pasted").await;
            assert!(
                !pasted.contains(&text),
                "{tag}: refused text reached the guest"
            );
        }
        drop(a);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let log = guest_file(&qga, "/run/vmgw/clip.log").await;
    assert_eq!(
        log.matches("host pasted").count(),
        pasted_ok.len(),
        "only the allowed pastes reached the guest:\n{log}"
    );
    assert!(log.contains("ignored message type 0"), "{log}");

    // The refusals are counted (sessions add theirs when they end).
    let m = gw.app.metrics();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while m.clipboard_dropped_from_console.load(Ordering::Relaxed) < 16
        || m.clipboard_dropped_from_visitor.load(Ordering::Relaxed) < 24
    {
        assert!(tokio::time::Instant::now() < deadline, "drops not counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.app
        .backend()
        .power(vm, PowerAction::Poweroff)
        .await
        .unwrap();
}
