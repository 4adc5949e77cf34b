//! Entry points for the fuzz targets in `fuzz/` (and their corpus replay in the unit
//! tests): every parser that sees untrusted bytes. Each must return without panicking,
//! whatever the input. Compiled only for the unit tests and with the `fuzzing` feature
//! (which the fuzz crate turns on): no production build carries it.
#![doc(hidden)]

use std::sync::OnceLock;

use time::OffsetDateTime;

use crate::model::tokens::{SigningKey, TokenConfig, TokenKeys};

fn keys() -> &'static TokenKeys {
    static KEYS: OnceLock<TokenKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let key = SigningKey {
            kid: "fuzz-key".into(),
            secret: vec![7u8; 32],
            created_at: OffsetDateTime::UNIX_EPOCH,
            retired: false,
        };
        match TokenKeys::new(&[key], TokenConfig::default()) {
            Ok(k) => k,
            Err(e) => panic!("fuzz keys: {e}"),
        }
    })
}

/// A link token as a visitor posts it.
pub fn token(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = keys().verify(s, OffsetDateTime::UNIX_EPOCH);
    }
}

/// X-Forwarded-For and Forwarded values behind a trusted proxy.
pub fn forwarded_for(data: &[u8]) {
    let trusted = [crate::config::Cidr {
        addr: [127, 0, 0, 1].into(),
        prefix: 8,
    }];
    if let Ok(s) = std::str::from_utf8(data) {
        for which in [
            crate::config::ClientHeader::XForwardedFor,
            crate::config::ClientHeader::Forwarded,
        ] {
            let _ = crate::http::forwarded_client(
                [127, 0, 0, 1].into(),
                which,
                s.split('\n'),
                &trusted,
            );
        }
    }
}

/// A PROXY protocol header from a trusted proxy.
pub fn proxy_header(data: &[u8]) {
    let _ = crate::server::proxy_protocol::parse(data);
}

/// Admin JSON bodies: link requests (validated too) and exchange bodies.
pub fn admin_json(data: &[u8]) {
    if let Ok(req) = serde_json::from_slice::<crate::model::links::LinkRequest>(data) {
        let _ = req.validate(
            OffsetDateTime::UNIX_EPOCH,
            &crate::model::links::LinkPolicy::default(),
        );
    }
    let _ = serde_json::from_slice::<crate::store::TargetRequest>(data);
    // The admin API's own target body (`POST /targets`), with its socket-path rules.
    if let Ok(t) = serde_json::from_slice::<crate::engine::TargetSpec>(data) {
        if let Some(p) = &t.socket {
            let _ = crate::config::is_normal(p);
        }
    }
}

/// The RFB client→server filter. Byte 0 selects the mode (bit 0: view-only) and a chunk
/// size (bits 1..8, plus one); the rest is the browser's byte stream after the handshake
/// (ClientInit first). The stream is filtered in one push and again in chunks; both runs
/// must agree exactly, the output is never longer than the input, the buffer stays within
/// `max_buffered()`, and interactive mode drops nothing.
pub fn rfb_client_filter(data: &[u8]) {
    let Some((&sel, input)) = data.split_first() else {
        return;
    };
    let view_only = sel & 1 == 1;
    let chunk = usize::from(sel >> 1) + 1;
    let whole = filter_run(view_only, input, input.len());
    let pieces = filter_run(view_only, input, chunk);
    assert_eq!(whole, pieces, "output depends on how the input is split");
    if !view_only {
        assert_eq!(whole.2, 0, "interactive mode dropped a message");
    }
}

type FilterOutcome = (Result<(), String>, Vec<u8>, u64, u64);

fn filter_run(view_only: bool, input: &[u8], chunk: usize) -> FilterOutcome {
    use crate::relay::rfb::{ClientFilter, RfbError, RfbLimits};
    // A small cut-text limit so the fuzzer reaches the boundary.
    let limits = RfbLimits {
        max_cut_text: 4096,
        ..RfbLimits::default()
    };
    let mut f = ClientFilter::with_limits(view_only, limits);
    let mut out = Vec::new();
    let mut result = Ok(());
    for piece in input.chunks(chunk.max(1)) {
        if let Err(e) = f.push(piece, &mut out) {
            assert!(!matches!(e, RfbError::Internal), "internal error: {e:?}");
            result = Err(format!("{e:?}"));
            // A failed filter stays failed.
            assert!(matches!(
                f.push(b"\x03", &mut out),
                Err(RfbError::FilterFailed)
            ));
            break;
        }
        assert!(f.buffered() <= f.max_buffered());
    }
    assert!(out.len() <= input.len(), "output longer than input");
    (result, out, f.dropped(), f.passed())
}

/// The clipboard policy a fuzz input's selector byte names in its bits 0-1.
fn policy_bits(sel: u8) -> crate::model::clipboard::ClipboardPolicy {
    use crate::model::clipboard::ClipboardPolicy;
    match sel & 3 {
        0 => ClipboardPolicy::None,
        1 => ClipboardPolicy::ToGuest,
        2 => ClipboardPolicy::FromGuest,
        _ => ClipboardPolicy::Both,
    }
}

/// The RFB server→visitor parser (QEMU's stream from ServerInit on). Byte 0 selects the
/// clipboard policy (bits 0-1), the pixel size the visitor chose (bits 2-3: none, 8, 16,
/// 32 bits) and a chunk size (bits 4-7, plus one). The stream is parsed in one push and
/// again in chunks: both runs must agree exactly, the output is never longer than the
/// input, the held header stays bounded, `both` removes nothing, and the output parses
/// again unchanged under the same policy (so nothing the policy forbids is left in it).
pub fn rfb_server_filter(data: &[u8]) {
    use crate::model::clipboard::ClipboardPolicy;
    let Some((&sel, input)) = data.split_first() else {
        return;
    };
    let policy = policy_bits(sel);
    let bpp = match (sel >> 2) & 3 {
        0 => None,
        1 => Some(8),
        2 => Some(16),
        _ => Some(32),
    };
    let chunk = usize::from(sel >> 4) + 1;
    let whole = server_run(policy, bpp, input, input.len());
    let pieces = server_run(policy, bpp, input, chunk);
    assert_eq!(whole, pieces, "output depends on how the input is split");
    let (_, out, dropped) = whole;
    if policy == ClipboardPolicy::Both {
        assert_eq!(dropped, 0, "policy `both` dropped a message");
        assert_eq!(out.as_slice(), input.get(..out.len()).unwrap_or_default());
    }
    let (again, out2, dropped2) = server_run(policy, bpp, &out, out.len());
    assert_eq!(again, Ok(()), "the output does not parse again");
    assert_eq!(out2, out);
    assert_eq!(dropped2, 0, "the output still holds a forbidden message");
}

fn server_run(
    policy: crate::model::clipboard::ClipboardPolicy,
    bpp: Option<u8>,
    input: &[u8],
    chunk: usize,
) -> (Result<(), String>, Vec<u8>, u64) {
    use crate::relay::rfb::{PixelFormatShare, RfbError, ServerFilter};
    let share = PixelFormatShare::new();
    if let Some(b) = bpp {
        share.set_bits_per_pixel_for_fuzzing(b);
    }
    let mut f = ServerFilter::new(policy, share);
    let mut out = Vec::new();
    let mut result = Ok(());
    for piece in input.chunks(chunk.max(1)) {
        if let Err(e) = f.push(piece, &mut out) {
            assert!(!matches!(e, RfbError::Internal), "internal error: {e:?}");
            result = Err(format!("{e:?}"));
            assert!(matches!(
                f.push(b"\x02", &mut out),
                Err(RfbError::FilterFailed)
            ));
            break;
        }
        assert!(f.buffered() <= ServerFilter::max_buffered());
    }
    assert!(out.len() <= input.len(), "output longer than input");
    (result, out, f.clipboard_dropped())
}

/// Both RFB handshakes with an untrusted peer (see [`crate::relay::rfb::fuzz::handshake`]
/// for the input layout and the checks).
pub fn rfb_handshake(data: &[u8]) {
    crate::relay::rfb::fuzz::handshake(data);
}

/// The SPICE link header check: the whole input is the first bytes a SPICE client sends on
/// a channel. The result must be consistent with every prefix: a prefix may need more
/// bytes or fail with the same error, never succeed differently.
pub fn spice_link(data: &[u8]) {
    use crate::relay::spice::{parse_link_header, LINK_HEADER_LEN, LINK_MESS_MAX_LEN};
    let max = LINK_HEADER_LEN + LINK_MESS_MAX_LEN as usize;
    let whole = parse_link_header(data);
    match &whole {
        Ok(Some(h)) => {
            assert!(h.total_len <= data.len());
            assert!(h.total_len <= max);
            assert_eq!(
                parse_link_header(data.get(..h.total_len).unwrap_or(data)),
                whole
            );
        }
        Ok(None) => assert!(data.len() < max),
        Err(_) => {}
    }
    // A few prefixes: they need more bytes, or fail exactly like the whole.
    for cut in [0, 3, 4, 7, 8, 15, 16, 20, 33, data.len() / 2] {
        let Some(prefix) = data.get(..cut) else {
            continue;
        };
        match parse_link_header(prefix) {
            Ok(None) => {}
            Ok(Some(h)) => assert_eq!(Ok(Some(h)), whole),
            Err(e) => assert_eq!(Err(e), whole),
        }
    }
}

/// The SPICE main channel's console→visitor filter (the clipboard policy's guest side).
/// Byte 0 selects the clipboard policy (bits 0-1: none, to_guest, from_guest, both),
/// the header form (bit 2: mini), view-only (bit 3) and a chunk size (bits 4-7, plus
/// one); the rest is the console's stream after its link reply (the 4-byte link result
/// first). The stream is filtered in one push and again in chunks: both runs must agree
/// exactly; the output stays within 5× the input (a refused agent chunk, even an empty
/// one, becomes a 20-byte filler); and the output filtered again under the same policy
/// passes unchanged with no clipboard message refused (nothing the policy forbids is
/// left in it).
pub fn spice_server_filter(data: &[u8]) {
    let Some((&sel, input)) = data.split_first() else {
        return;
    };
    let policy = policy_bits(sel).effective(sel & 8 != 0);
    let (mini, view_only) = (sel & 4 != 0, sel & 8 != 0);
    let chunk = usize::from(sel >> 4) + 1;
    let run = |bytes: &[u8], step: usize| {
        // A small clipboard limit so the fuzzer reaches the boundary.
        let mut f = crate::relay::spice::ServerFilter::new(mini, policy, view_only, 3000);
        let mut out = Vec::new();
        let mut result = Ok(());
        for piece in bytes.chunks(step.max(1)) {
            if let Err(e) = f.push(piece, &mut out) {
                result = Err(e);
                assert_eq!(
                    f.push(b"\0", &mut out),
                    Err(crate::relay::spice::SpiceError::Failed),
                    "a failed filter passes nothing more"
                );
                break;
            }
        }
        (result, out, f.clipboard_dropped())
    };
    let whole = run(input, input.len());
    let pieces = run(input, chunk);
    assert_eq!(whole, pieces, "output depends on how the input is split");
    let (_, out, _) = whole;
    assert!(
        out.len() <= input.len().saturating_mul(5) + 4,
        "output too long"
    );
    let (again, out2, dropped2) = run(&out, out.len());
    assert_eq!(again, Ok(()), "the output does not parse again");
    assert_eq!(out2, out);
    assert_eq!(dropped2, 0, "the output still holds a forbidden message");
}

/// The SPICE visitor→console filter. Byte 0 picks the channel (bits 0-1: main, display,
/// cursor, playback), the negotiated capabilities (bit 2: auth selection, bit 3: mini
/// headers), the clipboard policy (bits 4-5: none, to_guest, from_guest, both) and
/// whether the link is interactive (bit 6; else view-only); byte 1 says where to split;
/// the rest is what a visitor sends after its link message. The output stays within 5×
/// the input (a refused agent chunk becomes a 20-byte filler), and feeding it in two
/// pieces gives the same output, errors and drop counts as feeding it whole.
pub fn spice_client_filter(data: &[u8]) {
    use crate::relay::spice::{ChannelType, ClientFilter};
    let [mode, cut, input @ ..] = data else {
        return;
    };
    let channel = match mode & 3 {
        0 => ChannelType::Main,
        1 => ChannelType::Display,
        2 => ChannelType::Cursor,
        _ => ChannelType::Playback,
    };
    let (sel, mini) = (mode & 4 != 0, mode & 8 != 0);
    let view_only = mode & 0x40 == 0;
    let policy = policy_bits(mode >> 4).effective(view_only);
    let run = |chunks: &[&[u8]]| {
        let mut f = ClientFilter::with_policy(channel, sel, mini, view_only, policy, 3000);
        let mut out = Vec::new();
        for c in chunks {
            if f.push(c, &mut out).is_err() {
                return (out, true, f.dropped(), f.clipboard_dropped());
            }
        }
        (out, false, f.dropped(), f.clipboard_dropped())
    };
    let whole = run(&[input]);
    assert!(
        whole.0.len() <= input.len().saturating_mul(5),
        "output too long"
    );
    let (a, b) = input.split_at(usize::from(*cut).min(input.len()));
    let split = run(&[a, b]);
    assert_eq!(
        whole.1, split.1,
        "an error depends on how the input is split"
    );
    if !whole.1 {
        assert_eq!(whole, split, "output depends on how the input is split");
    }
}

/// Request lines against both route tables: `METHOD PATH`.
pub fn routes(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (m, path) = s.split_once(' ').unwrap_or(("GET", s));
    let Ok(method) = http::Method::from_bytes(m.as_bytes()) else {
        return;
    };
    fn check<H: Copy>(table: &[crate::http::Route<H>], method: &http::Method, path: &str) {
        if let Ok((_, params)) = crate::http::route(table, method, path) {
            assert!(params.iter().all(|p| !p.is_empty() && !p.contains('/')));
        }
    }
    check(crate::http::admin::ROUTES, &method, path);
    check(crate::http::share::ROUTES, &method, path);
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// Replays `fuzz/corpus/<target>` (or `$GATEWAY_FUZZ_CORPUS/<target>`) through `f`.
    fn replay(target: &str, f: fn(&[u8])) {
        let dir = std::env::var_os("GATEWAY_FUZZ_CORPUS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus"))
            .join(target);
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let p = e.expect("entry").path();
            f(&std::fs::read(&p).expect("read"));
            n += 1;
        }
        assert!(n > 0, "corpus {} is empty", dir.display());
    }

    #[test]
    fn replay_token_corpus() {
        replay("token", super::token);
    }

    #[test]
    fn replay_forwarded_for_corpus() {
        replay("forwarded_for", super::forwarded_for);
    }

    #[test]
    fn replay_proxy_header_corpus() {
        replay("proxy_header", super::proxy_header);
    }

    #[test]
    fn replay_admin_json_corpus() {
        replay("admin_json", super::admin_json);
    }

    #[test]
    fn replay_rfb_client_filter_target() {
        replay("rfb_client_filter", super::rfb_client_filter);
    }

    #[test]
    fn replay_rfb_server_filter_target() {
        replay("rfb_server_filter", super::rfb_server_filter);
    }

    #[test]
    fn replay_rfb_handshake_target() {
        replay("rfb_handshake", super::rfb_handshake);
    }

    #[test]
    fn replay_spice_link_target() {
        replay("spice_link", super::spice_link);
    }

    #[test]
    fn replay_spice_server_filter_target() {
        replay("spice_server_filter", super::spice_server_filter);
    }

    #[test]
    fn replay_spice_client_filter_target() {
        replay("spice_client_filter", super::spice_client_filter);
    }

    #[test]
    fn replay_routes_corpus() {
        replay("routes", super::routes);
    }
}
