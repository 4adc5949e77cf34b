//! Session recordings: a raw console's session is recorded (both directions, as relayed),
//! listed per link and per session, downloaded, deleted, and linked from the audit
//! trail; the audit filters and paging; a VNC session's recording starts with the
//! handshake the visitor read; the size cap ends the session or stops the recording as
//! configured; a recording cut by `kill -9` of the gateway reads up to its last complete
//! record and is marked interrupted at the next start; a recording held by another
//! gateway is refused with the holder's name; SPICE main, display and inputs channels are
//! recorded each, with what passed. VNC recordings have key points whose zlib
//! dictionaries continue QEMU's real ZRLE stream; the folder cap stops a recording and
//! refuses the next, recordings past the retention period are deleted, and a writer
//! queue that fills stops the recording while the relay goes on.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{TestGateway, WsBytes};
use gateway::engine::recordings::format::{self, Kind, Tail};
use serde_json::{json, Value};

/// Waits until the link's recordings (all of them) have left the `recording` state.
async fn finished_recordings(gw: &TestGateway, link: &str) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let (s, v) = gw
            .admin("GET", &format!("/api/v1/recordings?link={link}"), None)
            .await;
        assert_eq!(s, 200, "{v}");
        let list = v.as_array().unwrap().clone();
        if !list.is_empty() && list.iter().all(|r| r["status"] != "recording") {
            return list;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "recordings not finished: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Downloads a recording through the admin API: (status, body).
async fn download(gw: &TestGateway, id: &str) -> (u16, Vec<u8>) {
    let tcp = tokio::net::TcpStream::connect(gw.admin).await.unwrap();
    let auth = format!("Authorization: Bearer {}\r\n", gw.admin_token);
    let (s, _, body) = common::http_call(
        tcp,
        "GET",
        &format!("/api/v1/recordings/{id}/file"),
        &auth,
        None,
    )
    .await;
    (s, body)
}

/// The payloads of one kind, concatenated.
fn stream(file: &[u8], kind: Kind) -> Vec<u8> {
    let (records, _) = format::read(file).unwrap();
    records
        .iter()
        .filter(|r| r.kind == kind)
        .flat_map(|r| r.payload.iter().copied())
        .collect()
}

fn events(file: &[u8]) -> Vec<Value> {
    let (records, _) = format::read(file).unwrap();
    records
        .iter()
        .filter(|r| r.kind == Kind::Event)
        .map(|r| serde_json::from_slice(r.payload).unwrap())
        .collect()
}

#[tokio::test]
async fn a_raw_session_is_recorded_listed_downloaded_deleted_and_linked_from_the_audit() {
    let gw = TestGateway::start_with("[recording]\ngateway_name = \"gw-a\"\n").await;
    let echo = common::echo_console().await;
    let link = gw
        .raw_link("echo", &echo.to_string(), json!({"record": true}))
        .await;
    let link_id = link["id"].as_str().unwrap();
    assert_eq!(link["record"], true);
    // The visitor is told before the console opens.
    let (status, cookie, ex) = gw.exchange(link["token"].as_str().unwrap(), None).await;
    assert_eq!(status, 200, "{ex}");
    assert_eq!(ex["recorded"], true);
    let ws = gw
        .ws(
            ex["ws_path"].as_str().unwrap(),
            cookie.as_deref(),
            Some(&gw.origin()),
        )
        .await
        .unwrap();
    let mut ws = WsBytes::new(ws);
    ws.send(b"hello ").await;
    assert_eq!(ws.read_exact(6).await, b"hello ");
    ws.send(b"world").await;
    assert_eq!(ws.read_exact(5).await, b"world");
    // Live: listed as being recorded.
    let (_, live) = gw
        .admin("GET", &format!("/api/v1/recordings?link={link_id}"), None)
        .await;
    assert_eq!(live[0]["status"], "recording", "{live}");
    futures::SinkExt::close(&mut ws.ws).await.unwrap();

    let recs = finished_recordings(&gw, link_id).await;
    assert_eq!(recs.len(), 1, "{recs:?}");
    let rec = &recs[0];
    let (id, session) = (
        rec["id"].as_str().unwrap(),
        rec["session_id"].as_str().unwrap(),
    );
    assert_eq!(rec["status"], "complete", "{rec}");
    assert_eq!(rec["gateway"], "gw-a");
    assert_eq!(rec["console"], "raw");
    assert_eq!(rec["detail"], "client_closed");

    // The file: metadata, both directions as relayed, the end.
    let (s, file) = download(&gw, id).await;
    assert_eq!(s, 200);
    assert_eq!(file.len() as u64, rec["bytes"].as_u64().unwrap());
    let (records, tail) = format::read(&file).unwrap();
    assert_eq!(tail, Tail::Clean);
    assert_eq!(records[0].kind, Kind::Meta);
    let meta: Value = serde_json::from_slice(records[0].payload).unwrap();
    assert_eq!(meta["session_id"], session);
    assert_eq!(meta["link_id"], link_id);
    assert_eq!(stream(&file, Kind::ToConsole), b"hello world");
    assert_eq!(stream(&file, Kind::ToClient), b"hello world");
    let times: Vec<u64> = records.iter().map(|r| r.t_us).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert_eq!(
        events(&file).last().unwrap(),
        &json!({"event": "end", "reason": "client_closed"})
    );

    // Per session, per link, one.
    let (_, by_session) = gw
        .admin(
            "GET",
            &format!("/api/v1/recordings?session={session}"),
            None,
        )
        .await;
    assert_eq!(by_session.as_array().unwrap().len(), 1);
    assert_eq!(by_session[0]["id"], id);
    let (s, one) = gw
        .admin("GET", &format!("/api/v1/recordings/{id}"), None)
        .await;
    assert_eq!((s, &one["id"]), (200, &json!(id)));

    // The audit entries of the session link to the recording; the filters.
    let (_, started) = gw
        .admin(
            "GET",
            &format!("/api/v1/audit?link={link_id}&kind=session_started"),
            None,
        )
        .await;
    assert_eq!(started.as_array().unwrap().len(), 1, "{started}");
    assert_eq!(started[0]["recording_id"], id);
    assert_eq!(started[0]["session_id"], session);
    let (_, by_vm) = gw
        .admin(
            "GET",
            "/api/v1/audit?vm=echo&kind=session_ended&client=127.0.0.1",
            None,
        )
        .await;
    assert_eq!(by_vm.as_array().unwrap().len(), 1, "{by_vm}");
    assert_eq!(by_vm[0]["recording_id"], id);
    let (_, none) = gw.admin("GET", "/api/v1/audit?vm=nope", None).await;
    assert_eq!(none, json!([]));
    let (_, future) = gw
        .admin("GET", "/api/v1/audit?since=2999-01-01T00%3A00%3A00Z", None)
        .await;
    assert_eq!(future, json!([]));
    let (_, past) = gw
        .admin("GET", "/api/v1/audit?until=2000-01-01T00%3A00%3A00Z", None)
        .await;
    assert_eq!(past, json!([]));
    let (s, bad) = gw.admin("GET", "/api/v1/audit?kind=nope", None).await;
    assert_eq!(s, 400, "{bad}");
    // Paging: one at a time, older each page, nothing repeated.
    let (_, all) = gw
        .admin("GET", &format!("/api/v1/audit?link={link_id}"), None)
        .await;
    let all = all.as_array().unwrap().clone();
    assert!(all.len() >= 3, "{all:?}");
    let mut before: Option<i64> = None;
    let mut paged = Vec::new();
    loop {
        let q = match before {
            Some(b) => format!("/api/v1/audit?link={link_id}&limit=1&before={b}"),
            None => format!("/api/v1/audit?link={link_id}&limit=1"),
        };
        let (_, page) = gw.admin("GET", &q, None).await;
        let page = page.as_array().unwrap().clone();
        if page.is_empty() {
            break;
        }
        assert_eq!(page.len(), 1);
        before = page[0]["id"].as_i64();
        paged.push(page[0].clone());
    }
    assert_eq!(paged, all);
    // JSON lines.
    let tcp = tokio::net::TcpStream::connect(gw.admin).await.unwrap();
    let auth = format!("Authorization: Bearer {}\r\n", gw.admin_token);
    let (s, head, body) = common::http_call(
        tcp,
        "GET",
        &format!("/api/v1/audit?link={link_id}&format=jsonl"),
        &auth,
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert!(
        head.to_ascii_lowercase().contains("application/x-ndjson"),
        "{head}"
    );
    let lines: Vec<Value> = String::from_utf8(body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, all);

    // Delete: the file and the entry go, audited.
    let path = gw.dir.path().join("recordings").join(format!("{id}.vmrec"));
    assert!(path.exists());
    let (s, _) = gw
        .admin("DELETE", &format!("/api/v1/recordings/{id}"), None)
        .await;
    assert_eq!(s, 204);
    assert!(!path.exists());
    let (s, _) = gw
        .admin("GET", &format!("/api/v1/recordings/{id}"), None)
        .await;
    assert_eq!(s, 404);
    assert_eq!(download(&gw, id).await.0, 404);
    let (_, deleted) = gw
        .admin("GET", "/api/v1/audit?kind=recording_deleted", None)
        .await;
    assert_eq!(deleted[0]["link_id"], link_id, "{deleted}");
}

#[tokio::test]
async fn links_follow_the_gateway_default_unless_they_say() {
    let gw = TestGateway::start_with("[recording]\ndefault = true\n").await;
    let echo = common::echo_console().await.to_string();
    let unset = gw.raw_link("a", &echo, json!({})).await;
    let off = gw.raw_link("b", &echo, json!({"record": false})).await;
    for (link, recorded) in [(&unset, true), (&off, false)] {
        let (_, _, ex) = gw.exchange(link["token"].as_str().unwrap(), None).await;
        assert_eq!(ex["recorded"], recorded, "{link}");
        let mut ws = WsBytes::new(gw.open_console(link, None).await);
        ws.send(b"x").await;
        assert_eq!(ws.read_exact(1).await, b"x");
        futures::SinkExt::close(&mut ws.ws).await.unwrap();
    }
    assert_eq!(
        finished_recordings(&gw, unset["id"].as_str().unwrap())
            .await
            .len(),
        1
    );
    let (_, none) = gw
        .admin(
            "GET",
            &format!("/api/v1/recordings?link={}", off["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(none, json!([]));
}

/// Sends 500-byte chunks (and reads their echo) until the session closes; returns the
/// close (code, reason) and the bytes echoed.
async fn push_until_closed(ws: &mut WsBytes, max_chunks: usize) -> (Option<(u16, String)>, usize) {
    let chunk = [b'z'; 500];
    let mut echoed = 0;
    for _ in 0..max_chunks {
        use futures::{SinkExt, StreamExt};
        if ws
            .ws
            .send(tokio_tungstenite::tungstenite::Message::Binary(
                chunk.to_vec().into(),
            ))
            .await
            .is_err()
        {
            return (ws.closed.clone(), echoed);
        }
        let mut got = 0;
        while got < chunk.len() {
            match tokio::time::timeout(Duration::from_secs(10), ws.ws.next()).await {
                Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(b)))) => got += b.len(),
                Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f)))) => {
                    let f = f.map(|f| (u16::from(f.code), f.reason.to_string()));
                    return (f, echoed + got);
                }
                Ok(Some(Ok(_))) => {}
                other => panic!("{other:?}"),
            }
        }
        echoed += got;
    }
    (None, echoed)
}

#[tokio::test]
async fn the_size_cap_ends_the_session_when_so_configured() {
    let gw = TestGateway::start_with(
        "[recording]\nmax_bytes_per_recording = 4000\non_limit = \"end_session\"\n",
    )
    .await;
    let echo = common::echo_console().await;
    let link = gw
        .raw_link("echo", &echo.to_string(), json!({"record": true}))
        .await;
    let mut ws = WsBytes::new(gw.open_console(&link, None).await);
    let (closed, echoed) = push_until_closed(&mut ws, 100).await;
    assert_eq!(closed, Some((4012, "recording_failed".to_owned())));
    // The session ends once the writer has acted (it runs behind the relay, so some
    // more may pass than the file holds): what matters is that it ends.
    assert!(echoed > 0);
    let recs = finished_recordings(&gw, link["id"].as_str().unwrap()).await;
    assert_eq!(recs[0]["status"], "stopped", "{recs:?}");
    assert_eq!(recs[0]["detail"], "size_cap");
    let (_, file) = download(&gw, recs[0]["id"].as_str().unwrap()).await;
    let (_, tail) = format::read(&file).unwrap();
    assert_eq!(tail, Tail::Clean);
    assert!(file.len() <= 4000 + 200, "{}", file.len());
    assert_eq!(
        events(&file),
        vec![json!({"event": "stopped", "reason": "size_cap", "action": "end_session"})]
    );
    let (_, audit) = gw
        .admin("GET", "/api/v1/audit?kind=recording_stopped", None)
        .await;
    let detail = audit[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("reason=size_cap") && detail.contains("action=end_session"),
        "{detail}"
    );
    let (_, ended) = gw
        .admin("GET", "/api/v1/audit?kind=session_ended", None)
        .await;
    assert!(
        ended[0]["detail"]
            .as_str()
            .unwrap()
            .contains("reason=recording_failed"),
        "{ended}"
    );
}

#[tokio::test]
async fn the_size_cap_stops_the_recording_and_the_session_goes_on_when_so_configured() {
    let gw = TestGateway::start_with(
        "[recording]\nmax_bytes_per_recording = 4000\non_limit = \"stop_recording\"\n",
    )
    .await;
    let echo = common::echo_console().await;
    let link = gw
        .raw_link("echo", &echo.to_string(), json!({"record": true}))
        .await;
    let mut ws = WsBytes::new(gw.open_console(&link, None).await);
    let (closed, echoed) = push_until_closed(&mut ws, 30).await;
    assert_eq!(closed, None);
    assert_eq!(echoed, 30 * 500);
    // Stopped while the session goes on.
    let link_id = link["id"].as_str().unwrap();
    let start = Instant::now();
    loop {
        let (_, v) = gw
            .admin("GET", &format!("/api/v1/recordings?link={link_id}"), None)
            .await;
        if v[0]["status"] == "stopped" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    futures::SinkExt::close(&mut ws.ws).await.unwrap();
    let recs = finished_recordings(&gw, link_id).await;
    assert_eq!(
        (&recs[0]["status"], &recs[0]["detail"]),
        (&json!("stopped"), &json!("size_cap"))
    );
    let (_, file) = download(&gw, recs[0]["id"].as_str().unwrap()).await;
    assert_eq!(format::read(&file).unwrap().1, Tail::Clean);
    assert!(file.len() <= 4000 + 200);
    // What it holds is the start of what passed, with no gap.
    let sent = stream(&file, Kind::ToConsole);
    assert!(!sent.is_empty() && sent.iter().all(|b| *b == b'z'));
    assert_eq!(
        events(&file),
        vec![json!({"event": "stopped", "reason": "size_cap", "action": "stop_recording"})]
    );
}

#[tokio::test]
async fn a_vnc_recording_starts_with_the_handshake_the_visitor_read() {
    let gw = TestGateway::start().await;
    gw.start_firmware_vm("fw").await;
    let link = gw
        .create_link(json!({"vm": "fw", "console": "vnc", "ttl_seconds": 600, "record": true}))
        .await;
    let mut ws = WsBytes::new(gw.open_console(&link, None).await);
    let (w, h, _) = ws.rfb_connect().await;
    ws.request_frame(w, h).await;
    futures::SinkExt::close(&mut ws.ws).await.unwrap();
    let recs = finished_recordings(&gw, link["id"].as_str().unwrap()).await;
    assert_eq!(recs[0]["console"], "vnc");
    let (_, file) = download(&gw, recs[0]["id"].as_str().unwrap()).await;
    let to_client = stream(&file, Kind::ToClient);
    let pre = gateway::engine::recordings::VNC_PREAMBLE;
    assert_eq!(&to_client[..pre.len()], pre);
    // ServerInit follows: the screen size the visitor was told.
    let init = &to_client[pre.len()..];
    assert_eq!(u16::from_be_bytes([init[0], init[1]]), w);
    assert_eq!(u16::from_be_bytes([init[2], init[3]]), h);
    // The visitor's ClientInit (shared) and its FramebufferUpdateRequest reached the
    // console and are recorded.
    let to_console = stream(&file, Kind::ToConsole);
    assert_eq!(to_console[0], 1);
    assert!(to_console[1..].contains(&3), "{to_console:?}");
}

#[tokio::test]
async fn a_recording_held_by_another_gateway_names_its_holder() {
    let gw = TestGateway::start_with("[recording]\ngateway_name = \"gw-a\"\n").await;
    let now = time::OffsetDateTime::now_utc();
    let rec = gateway::store::RecordingInfo {
        id: "rec-elsewhere".into(),
        session_id: "s1".into(),
        link_id: "l1".into(),
        vm: "vm".into(),
        console: "vnc".into(),
        channel: None,
        gateway: "gw-b".into(),
        file: "rec-elsewhere.vmrec".into(),
        started_at: now,
        ended_at: Some(now),
        bytes: 10,
        status: gateway::store::RecordingStatus::Complete,
        detail: None,
    };
    gw.app.store().put_recording(&rec).await.unwrap();
    let (s, list) = gw.admin("GET", "/api/v1/recordings", None).await;
    assert_eq!(s, 200);
    assert_eq!(list[0]["gateway"], "gw-b");
    let (s, body) = download(&gw, "rec-elsewhere").await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (s, &v["error"], &v["gateway"]),
        (409, &json!("recording_elsewhere"), &json!("gw-b"))
    );
    let (s, v) = gw
        .admin("DELETE", "/api/v1/recordings/rec-elsewhere", None)
        .await;
    assert_eq!((s, &v["gateway"]), (409, &json!("gw-b")));
}

async fn admin_call(
    addr: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = format!("Authorization: Bearer {token}\r\n");
    let (s, _, b) = common::http_call(tcp, method, path, &auth, body.map(|b| b.to_string())).await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_recording_cut_by_kill_9_reads_up_to_its_last_complete_record() {
    let dir = tempfile::Builder::new()
        .prefix("vmgw-rec")
        .tempdir_in("/tmp")
        .unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        "data_dir = \"data\"\n[public]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[recording]\ngateway_name = \"gw-k\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--config"])
        .arg(&config)
        .args(["admin-token", "create", "rec", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token: Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    let mut gw = common::spawn_serve(&config).await;
    let echo = common::echo_console().await;
    let (s, v) = admin_call(
        &gw.admin,
        &token,
        "POST",
        "/api/v1/targets",
        Some(json!({"name": "echo", "kind": "raw", "address": echo.to_string()})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, link) = admin_call(
        &gw.admin,
        &token,
        "POST",
        "/api/v1/links",
        Some(json!({"vm": "echo", "console": "raw", "ttl_seconds": 600, "record": true})),
    )
    .await;
    assert_eq!(s, 201, "{link}");

    // A visitor sends numbered lines and reads their echo, until the kill.
    let tls =
        common::tls_trusting(&std::fs::read(dir.path().join("data/tls/self-signed.crt")).unwrap());
    let tcp = tokio::net::TcpStream::connect(&gw.public).await.unwrap();
    let s = tls
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let body = json!({"token": link["token"]}).to_string();
    let (status, head, _) = common::http_call(
        s,
        "POST",
        "/s/session",
        "Content-Type: application/json\r\n",
        Some(body),
    )
    .await;
    assert_eq!(status, 200);
    let cookie = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().split(';').next().unwrap().to_owned())
        .unwrap();
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!(
        "wss://localhost{}",
        format_args!("/s/ws/{}", link["id"].as_str().unwrap())
    )
    .into_client_request()
    .unwrap();
    let port = gw.public.rsplit(':').next().unwrap();
    req.headers_mut().insert("Cookie", cookie.parse().unwrap());
    req.headers_mut().insert(
        "Origin",
        format!("https://127.0.0.1:{port}").parse().unwrap(),
    );
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "binary".parse().unwrap());
    let tcp = tokio::net::TcpStream::connect(&gw.public).await.unwrap();
    let tls_stream = tls
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let (ws, _) = tokio_tungstenite::client_async(req, tls_stream)
        .await
        .unwrap();
    let mut ws = WsBytes::new(ws);
    let mut sent = Vec::new();
    for i in 0..200 {
        let line = format!("line {i:05}\n");
        ws.send(line.as_bytes()).await;
        assert_eq!(ws.read_exact(line.len()).await, line.as_bytes());
        sent.extend_from_slice(line.as_bytes());
    }
    // Keep typing (briskly, not a flood that would outrun the recording's queue and
    // end the session as writer_behind) while the gateway is killed.
    let writer = tokio::spawn(async move {
        use futures::SinkExt;
        for i in 200.. {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let line = format!("line {i:05}\n");
            if ws
                .ws
                .send(tokio_tungstenite::tungstenite::Message::Binary(
                    line.into_bytes().into(),
                ))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.child.start_kill().unwrap();
    gw.child.wait().await.unwrap();
    let _ = writer.await;

    let files: Vec<_> = std::fs::read_dir(dir.path().join("data/recordings"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let file = std::fs::read(&files[0]).unwrap();
    let (records, tail) = format::read(&file).unwrap();
    assert!(matches!(tail, Tail::Clean | Tail::Truncated), "{tail:?}");
    assert!(
        !records.iter().any(|r| r.kind == Kind::Event),
        "no end was written"
    );
    // Everything the visitor had sent and seen echoed before the kill is there, and the
    // rest is a prefix of what it sent after.
    let to_console = stream(&file, Kind::ToConsole);
    assert!(
        to_console.len() >= sent.len(),
        "{} < {}",
        to_console.len(),
        sent.len()
    );
    assert_eq!(&to_console[..sent.len()], &sent[..]);
    let expected: Vec<u8> = (0..to_console.len() / 11 + 1)
        .flat_map(|i| format!("line {i:05}\n").into_bytes())
        .collect();
    assert_eq!(&to_console[..], &expected[..to_console.len()]);

    // The next start marks it interrupted; it still downloads and reads the same.
    let gw = common::spawn_serve(&config).await;
    let start = Instant::now();
    let rec = loop {
        let (_, v) = admin_call(&gw.admin, &token, "GET", "/api/v1/recordings", None).await;
        if v[0]["status"] == "interrupted" {
            break v[0].clone();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(rec["bytes"].as_u64().unwrap(), file.len() as u64);
    let id = rec["id"].as_str().unwrap();
    let tcp = tokio::net::TcpStream::connect(&gw.admin).await.unwrap();
    let auth = format!("Authorization: Bearer {token}\r\n");
    let (s, _, body) = common::http_call(
        tcp,
        "GET",
        &format!("/api/v1/recordings/{id}/file"),
        &auth,
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(body, file);
    // The CLI lists and downloads it too.
    let out_file = dir.path().join("copy.vmrec");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--config"])
        .arg(&config)
        .args(["recording", "download", id, "-o"])
        .arg(&out_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&out_file).unwrap(), file);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--config"])
        .arg(&config)
        .args(["recording", "list", "--json"])
        .output()
        .unwrap();
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["id"], id);
    assert_eq!(list[0]["gateway"], "gw-k");
    drop(gw);
}

/// SPICE: every channel is a session of its own, recorded with its channel name.
mod spice {
    use super::*;

    const MAIN: u8 = 1;
    const DISPLAY: u8 = 2;
    const INPUTS: u8 = 3;
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

    /// RSA-OAEP of an empty password under the server's key (openssl CLI).
    fn ticket(pub_key_der: &[u8]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let (key, pw, out) = (
            dir.path().join("key.der"),
            dir.path().join("pw"),
            dir.path().join("t"),
        );
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
        assert!(st.success());
        std::fs::read(&out).unwrap()
    }

    /// Link + ticket on a channel.
    async fn link_channel(c: &mut WsBytes, channel: u8, connection_id: u32) {
        c.send(&link_message(channel, connection_id)).await;
        let hdr = c.read_exact(16).await;
        let reply = c.read_exact(le32(&hdr, 12) as usize).await;
        assert_eq!(le32(&reply, 0), 0, "SpiceLinkReply.error");
        let mut auth = 1u32.to_le_bytes().to_vec();
        auth.extend_from_slice(&ticket(&reply[4..166]));
        c.send(&auth).await;
        assert_eq!(le32(&c.read_exact(4).await, 0), 0, "link result");
    }

    /// The next message of a channel: (type, body).
    async fn next(c: &mut WsBytes) -> (u16, Vec<u8>) {
        let h = c.read_exact(6).await;
        let body = c.read_exact(le32(&h, 2) as usize).await;
        (u16::from_le_bytes([h[0], h[1]]), body)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spice_display_and_inputs_channels_are_recorded_each() {
        let gw = TestGateway::start().await;
        gw.start_firmware_vm("spr").await;
        let link = gw
            .create_link(
                json!({"vm": "spr", "console": "spice", "ttl_seconds": 600, "record": true}),
            )
            .await;
        let (status, cookie, v) = gw.exchange(link["token"].as_str().unwrap(), None).await;
        assert_eq!((status, &v["recorded"]), (200, &json!(true)));
        let ws_path = v["ws_path"].as_str().unwrap().to_owned();
        let open = || gw.ws_bytes(&ws_path, cookie.as_deref());
        let mut main = open().await;
        link_channel(&mut main, MAIN, 0).await;
        let session_id = loop {
            let (t, body) = next(&mut main).await;
            if t == 103 {
                break le32(&body, 0);
            }
        };
        let mut display = open().await;
        link_channel(&mut display, DISPLAY, session_id).await;
        let mut dinit = vec![0u8];
        dinit.extend_from_slice(&(10i64 * 1024 * 1024).to_le_bytes());
        dinit.push(0);
        dinit.extend_from_slice(&(1i32 << 20).to_le_bytes());
        display.send(&mini(101, &dinit)).await;
        loop {
            if next(&mut display).await.0 == 314 {
                break; // DISPLAY_SURFACE_CREATE
            }
        }
        let mut inputs = open().await;
        link_channel(&mut inputs, INPUTS, session_id).await;
        // SPICE_MSGC_INPUTS_KEY_DOWN (scancode of 'a') and KEY_UP.
        let keys = [
            mini(101, &0x1eu32.to_le_bytes()),
            mini(102, &0x9eu32.to_le_bytes()),
        ]
        .concat();
        inputs.send(&keys).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        for c in [&mut inputs, &mut display, &mut main] {
            futures::SinkExt::close(&mut c.ws).await.unwrap();
        }
        let recs = finished_recordings(&gw, link["id"].as_str().unwrap()).await;
        let mut channels: Vec<String> = recs
            .iter()
            .map(|r| r["channel"].as_str().unwrap().to_owned())
            .collect();
        channels.sort();
        assert_eq!(channels, ["display", "inputs", "main"], "{recs:?}");
        for r in &recs {
            assert_eq!(r["console"], "spice");
            let (_, file) = download(&gw, r["id"].as_str().unwrap()).await;
            assert_eq!(format::read(&file).unwrap().1, Tail::Clean);
            match r["channel"].as_str().unwrap() {
                "display" => assert!(!stream(&file, Kind::ToClient).is_empty()),
                "inputs" => {
                    // The ticket, then the key events, as they reached the console.
                    let sent = stream(&file, Kind::ToConsole);
                    assert!(sent.ends_with(&keys), "{sent:?}");
                }
                _ => {}
            }
        }
    }
}

// ---- key points of VNC recordings --------------------------------------------------

/// The rectangles of ZRLE data in a recorded server stream (from ServerInit on), in
/// order: (stream offset of the rectangle's header, compressed bytes).
#[derive(Default)]
struct ZrleRects {
    rects: Vec<(u64, Vec<u8>)>,
    in_zrle: bool,
    /// Screen size changes: (stream offset, width, height).
    sizes: Vec<(u64, [u8; 4])>,
}

impl gateway::relay::rfb::server::Observer for ZrleRects {
    fn header(&mut self, at: u64, kind: gateway::relay::rfb::server::HeaderKind, bytes: &[u8]) {
        use gateway::relay::rfb::server::HeaderKind;
        self.in_zrle = kind == HeaderKind::Rect && bytes[8..12] == 16i32.to_be_bytes();
        let resize = [(-223i32).to_be_bytes(), (-308i32).to_be_bytes()];
        if kind == HeaderKind::Rect && resize.iter().any(|e| bytes[8..12] == e[..]) {
            self.sizes.push((at, bytes[4..8].try_into().unwrap()));
        }
        if self.in_zrle {
            self.rects.push((at, Vec::new()));
        }
    }
    fn payload(&mut self, bytes: &[u8]) {
        if self.in_zrle {
            self.rects.last_mut().unwrap().1.extend_from_slice(bytes);
        }
    }
}

/// Inflates with a raw inflater primed with `dict` (as a stored block, which fills the
/// window exactly as a dictionary does): what a player continuing at a key point gets.
fn raw_inflate_with(dict: &[u8], data: &[u8]) -> Option<Vec<u8>> {
    let mut raw = Vec::new();
    for part in dict.chunks(65_535) {
        let n = part.len() as u16;
        raw.push(0);
        raw.extend_from_slice(&n.to_le_bytes());
        raw.extend_from_slice(&(!n).to_le_bytes());
        raw.extend_from_slice(part);
    }
    raw.extend_from_slice(data);
    let mut d = flate2::Decompress::new(false);
    let mut out = Vec::with_capacity(dict.len() + (16 << 20));
    d.decompress_vec(&raw, &mut out, flate2::FlushDecompress::Sync)
        .ok()?;
    Some(out.split_off(dict.len()))
}

#[tokio::test]
async fn a_vnc_recording_has_key_points_that_continue_qemus_zlib_stream() {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let gw = TestGateway::start_with("[recording]\nkey_point_interval_secs = 1\n").await;
    gw.start_firmware_vm("fw").await;
    let link = gw
        .create_link(json!({"vm": "fw", "console": "vnc", "ttl_seconds": 600, "record": true}))
        .await;
    let mut ws = WsBytes::new(gw.open_console(&link, None).await);
    let (w, h, _) = ws.rfb_connect().await;
    // ZRLE (one zlib stream for the whole connection in QEMU) and the screen size
    // changes, then update requests as noVNC makes them, for a few seconds: the gateway
    // adds its full refreshes.
    let mut enc = vec![2u8, 0, 0, 4];
    for e in [16i32, 0, -223, -308] {
        enc.extend_from_slice(&e.to_be_bytes());
    }
    ws.send(&enc).await;
    let fbur = |incremental: u8| {
        let mut m = vec![3u8, incremental];
        for v in [0u16, 0, w, h] {
            m.extend_from_slice(&v.to_be_bytes());
        }
        m
    };
    ws.send(&fbur(0)).await;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(6) {
        ws.send(&fbur(1)).await;
        while let Ok(m) = tokio::time::timeout(Duration::from_millis(200), ws.ws.next()).await {
            match m {
                Some(Ok(Message::Binary(_) | Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("{other:?}"),
            }
        }
    }
    futures::SinkExt::close(&mut ws.ws).await.unwrap();
    let recs = finished_recordings(&gw, link["id"].as_str().unwrap()).await;
    assert_eq!(recs[0]["status"], "complete", "{recs:?}");
    let (_, file) = download(&gw, recs[0]["id"].as_str().unwrap()).await;
    assert_eq!(&file[..8], format::MAGIC);
    let (records, tail) = format::read(&file).unwrap();
    assert_eq!(tail, Tail::Clean);
    let keys: Vec<(u64, format::KeyPoint)> = records
        .iter()
        .filter(|r| r.kind == Kind::Key)
        .map(|r| (r.t_us, format::KeyPoint::decode(r.payload).unwrap()))
        .collect();
    let to_client = stream(&file, Kind::ToClient);
    assert!(keys.len() >= 3, "{} key points", keys.len());
    let pre = gateway::engine::recordings::VNC_PREAMBLE;
    // Follow the stream as a decoder from the start would.
    let mut parser = gateway::relay::rfb::ServerFilter::new(
        gateway::model::clipboard::ClipboardPolicy::Both,
        gateway::relay::rfb::PixelFormatShare::new(),
    );
    let mut zrle = ZrleRects::default();
    let mut sink = Vec::new();
    parser
        .push_observed(&to_client[pre.len()..], &mut sink, &mut zrle)
        .unwrap();
    let mut inflater = flate2::Decompress::new(true);
    let mut inflated = Vec::new();
    for (_, data) in &zrle.rects {
        let mut out = Vec::with_capacity(16 << 20);
        inflater
            .decompress_vec(data, &mut out, flate2::FlushDecompress::Sync)
            .unwrap();
        inflated.push(out);
    }
    let mut continued = 0;
    let mut times = Vec::new();
    for (t, k) in &keys {
        times.push(*t);
        // It points at a FramebufferUpdate, after a prefix of the handshake and a
        // ServerInit of the screen's size.
        assert_eq!(to_client[k.offset as usize], 0, "{k:?}");
        assert_eq!(&k.prefix[..pre.len()], pre);
        // The ServerInit as received, with the screen size in effect there (QEMU's
        // firmware screen changes size after the connection).
        let init = &k.prefix[pre.len()..];
        assert_eq!(init[4..], to_client[pre.len() + 4..pre.len() + init.len()]);
        let size = zrle
            .sizes
            .iter()
            .filter(|(at, _)| *at + (pre.len() as u64) < k.offset)
            .map(|(_, s)| &s[..])
            .next_back()
            .unwrap_or(&to_client[pre.len()..pre.len() + 4]);
        assert_eq!(&init[..4], size, "{k:?}");
        // The first ZRLE rectangle after it decodes from the dictionary alone as it did
        // in the whole stream.
        let Some(i) = zrle
            .rects
            .iter()
            .position(|(at, _)| *at + pre.len() as u64 > k.offset)
        else {
            continue;
        };
        match k.dictionaries.as_slice() {
            [] => assert_eq!(i, 0, "a dictionary is missing: {k:?}"),
            [(16, dict)] => {
                assert!(i > 0);
                let data = &zrle.rects[i].1;
                assert_eq!(raw_inflate_with(dict, data).as_ref(), Some(&inflated[i]));
                // The dictionary is needed: without it the rectangle does not decode
                // (QEMU's stream refers back to what it sent before).
                assert_ne!(raw_inflate_with(&[], data).as_ref(), Some(&inflated[i]));
                continued += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(
        continued >= 2,
        "key points continuing the stream: {continued}"
    );
    assert!(times.windows(2).all(|p| p[0] < p[1]), "{times:?}");
    // The gateway's refresh requests are in the recording of what reached the console.
    let sent = stream(&file, Kind::ToConsole);
    let refresh = gateway::relay::rfb::FULL_REFRESH;
    assert!(
        sent.windows(refresh.len())
            .filter(|m| m[..] == refresh[..])
            .count()
            >= 3
    );
}

// ---- the caps: folder total, retention, writer queue --------------------------------

#[tokio::test]
async fn a_full_recordings_folder_stops_the_recording_and_refuses_the_next() {
    // 100 bytes: the first recording's header alone fills the folder.
    let gw =
        TestGateway::start_with("[recording]\nmax_total_bytes = 100\non_limit = \"end_session\"\n")
            .await;
    let echo = common::echo_console().await;
    let link = gw
        .raw_link("echo", &echo.to_string(), json!({"record": true}))
        .await;
    let link_id = link["id"].as_str().unwrap();
    let mut ws = WsBytes::new(gw.open_console(&link, None).await);
    let (closed, _) = push_until_closed(&mut ws, 100).await;
    assert_eq!(closed, Some((4012, "recording_failed".to_owned())));
    let recs = finished_recordings(&gw, link_id).await;
    assert_eq!(recs.len(), 1);
    assert_eq!(
        (&recs[0]["status"], &recs[0]["detail"]),
        (&json!("stopped"), &json!("total_cap"))
    );
    let first = recs[0]["id"].as_str().unwrap().to_owned();
    // The next session of a recorded link: refused at once, nothing deleted to make room.
    let mut ws = WsBytes::new(gw.open_console(&link, None).await);
    assert_eq!(
        ws.closed_within(Duration::from_secs(10)).await,
        Some((4012, "recording_failed".to_owned()))
    );
    let (_, v) = gw
        .admin("GET", &format!("/api/v1/recordings?link={link_id}"), None)
        .await;
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [first.as_str()]);
    assert_eq!(download(&gw, &first).await.0, 200);
    let (_, audit) = gw
        .admin("GET", "/api/v1/audit?kind=recording_stopped", None)
        .await;
    let details: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    assert!(
        details.contains(&"recording=none reason=total_cap action=end_session"),
        "{details:?}"
    );
    assert!(
        details
            .contains(&format!("recording={first} reason=total_cap action=end_session").as_str()),
        "{details:?}"
    );
    // An unrecorded link is not concerned.
    let free = gw
        .raw_link("echo2", &echo.to_string(), json!({"record": false}))
        .await;
    let mut ws = WsBytes::new(gw.open_console(&free, None).await);
    ws.send(b"hi").await;
    assert_eq!(ws.read_exact(2).await, b"hi");
}

#[tokio::test]
async fn recordings_past_the_retention_period_are_deleted_newer_ones_kept() {
    let gw = TestGateway::start_with("[recording]\nretention_days = 2\n").await;
    let echo = common::echo_console().await;
    let link = gw
        .raw_link("echo", &echo.to_string(), json!({"record": true}))
        .await;
    for _ in 0..2 {
        let mut ws = WsBytes::new(gw.open_console(&link, None).await);
        ws.send(b"x").await;
        assert_eq!(ws.read_exact(1).await, b"x");
        futures::SinkExt::close(&mut ws.ws).await.unwrap();
        let _ = ws.closed_within(Duration::from_secs(5)).await;
    }
    let link_id = link["id"].as_str().unwrap();
    let start = Instant::now();
    let recs = loop {
        let r = finished_recordings(&gw, link_id).await;
        if r.len() == 2 {
            break r;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Age is judged by the index's start time: one recording started 3 days ago, one
    // 1 day ago (their files stay where they are).
    let store = gw.app.store();
    let mut paths = Vec::new();
    for (rec, days) in recs.iter().zip([3, 1]) {
        let id = rec["id"].as_str().unwrap();
        let mut info = store.get_recording(id).await.unwrap().unwrap();
        paths.push(gw.dir.path().join("recordings").join(&info.file));
        assert!(store.delete_recording(id).await.unwrap());
        info.started_at -= time::Duration::days(days);
        store.put_recording(&info).await.unwrap();
    }
    assert!(paths.iter().all(|p| p.exists()));
    // The housekeeping the gateway runs every minute.
    gw.app.recordings_housekeeping(false).await;
    let (_, v) = gw
        .admin("GET", &format!("/api/v1/recordings?link={link_id}"), None)
        .await;
    let left: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(left, [recs[1]["id"].as_str().unwrap()]);
    assert!(!paths[0].exists(), "the old file is deleted");
    assert!(paths[1].exists(), "the newer file is kept");
}

#[tokio::test]
async fn a_writer_queue_that_fills_stops_the_recording_and_never_holds_the_relay() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    // One chunk of queue: a burst of the visitor's messages (and their echo) overtakes
    // the writer at once.
    let gw =
        TestGateway::start_with("[recording]\nqueue_chunks = 1\non_limit = \"stop_recording\"\n")
            .await;
    let echo = common::echo_console().await;
    let link = gw
        .raw_link("echo", &echo.to_string(), json!({"record": true}))
        .await;
    let link_id = link["id"].as_str().unwrap();
    let mut ws = WsBytes::new(gw.open_console(&link, None).await);
    let (n, size) = (2000usize, 1000usize);
    {
        let (mut tx, mut rx) = StreamExt::split(&mut ws.ws);
        let send = async {
            for i in 0..n {
                let chunk = vec![b'a' + (i % 26) as u8; size];
                tx.feed(Message::Binary(chunk.into())).await.unwrap();
            }
            tx.flush().await.unwrap();
        };
        // Everything comes back: the relay went on at its own pace.
        let read = async {
            let mut echoed = 0;
            while echoed < n * size {
                match tokio::time::timeout(Duration::from_secs(30), rx.next()).await {
                    Ok(Some(Ok(Message::Binary(b)))) => echoed += b.len(),
                    Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
                    other => panic!("after {echoed} bytes: {other:?}"),
                }
            }
        };
        tokio::join!(send, read);
    }
    ws.send(b"still here").await;
    assert_eq!(ws.read_exact(10).await, b"still here");
    ws.ws.close(None).await.unwrap();
    let recs = finished_recordings(&gw, link_id).await;
    assert_eq!(
        (&recs[0]["status"], &recs[0]["detail"]),
        (&json!("stopped"), &json!("writer_behind")),
        "{recs:?}"
    );
    let (_, file) = download(&gw, recs[0]["id"].as_str().unwrap()).await;
    assert_eq!(format::read(&file).unwrap().1, Tail::Clean);
    assert_eq!(
        events(&file),
        vec![json!({"event": "stopped", "reason": "writer_behind", "action": "stop_recording"})]
    );
    // What it holds is the start of what passed, with no gap.
    let sent = stream(&file, Kind::ToConsole);
    assert!(sent.len() < n * size);
    let mut want = Vec::new();
    for i in 0..n {
        want.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, size));
    }
    assert_eq!(sent[..], want[..sent.len()]);
}
