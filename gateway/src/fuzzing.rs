//! Entry points for the fuzz targets in `fuzz/` (and their corpus replay in the unit
//! tests): every parser that sees untrusted bytes and is not in `relay` (whose own
//! targets include those modules directly). Each must return without panicking, whatever
//! the input.
#![doc(hidden)]

use std::sync::OnceLock;

use time::OffsetDateTime;

use crate::tokens::{SigningKey, TokenConfig, TokenKeys};

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
    if let Ok(req) = serde_json::from_slice::<crate::links::LinkRequest>(data) {
        let _ = req.validate(
            OffsetDateTime::UNIX_EPOCH,
            &crate::links::LinkPolicy::default(),
        );
    }
    let _ = serde_json::from_slice::<crate::store::TargetRequest>(data);
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

    /// Replays `fuzz/corpus/<target>` through `f`.
    fn replay(target: &str, f: fn(&[u8])) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
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
    fn replay_routes_corpus() {
        replay("routes", super::routes);
    }
}
