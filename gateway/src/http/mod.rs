//! HTTP: the route tables of both listeners, request helpers, and the security headers.
//!
//! `admin` is the administrator's JSON API (bearer tokens); `share` is the visitor's
//! side (token exchange, console WebSocket). Both route tables are data, so the OpenAPI
//! document can be checked against them.

pub mod admin;
pub mod assets;
pub mod error;
pub mod openapi;
pub mod recordings;
pub mod share;
pub mod upgraded;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

pub use error::{ApiError, Body};

/// What the HTTP layer serves with: the engine and the browser pages.
#[derive(Debug)]
pub struct Site {
    pub app: std::sync::Arc<crate::engine::App>,
    pub assets: assets::Assets,
}

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Public,
    Admin,
}

/// Whatever the server keeps alive while a connection lives, and while a console
/// relayed over it after a WebSocket upgrade lives (its slots under the caps).
pub type Hold = std::sync::Arc<dyn std::any::Any + Send + Sync>;

/// What a handler knows of its connection.
#[derive(Clone)]
pub struct ConnInfo {
    /// The client: the TCP peer, or the address a trusted PROXY header named.
    pub peer: std::net::SocketAddr,
    pub tls: bool,
    pub side: Side,
    /// Held by a relay for as long as its console is open.
    pub hold: Hold,
}

impl std::fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnInfo")
            .field("peer", &self.peer)
            .field("tls", &self.tls)
            .field("side", &self.side)
            .finish_non_exhaustive()
    }
}

/// A route: method, path pattern (`{name}` matches one non-empty segment) and the
/// operation it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<H> {
    pub method: &'static str,
    pub pattern: &'static str,
    pub op: H,
}

impl<H> Route<H> {
    pub const fn new(method: &'static str, pattern: &'static str, op: H) -> Route<H> {
        Route {
            method,
            pattern,
            op,
        }
    }
}

/// Matches `path` against `pattern`, returning the `{…}` segments in order.
pub fn match_path<'a>(pattern: &str, path: &'a str) -> Option<Vec<&'a str>> {
    let mut params = Vec::new();
    let mut p = pattern.split('/');
    let mut s = path.split('/');
    loop {
        match (p.next(), s.next()) {
            (None, None) => return Some(params),
            (Some(pp), Some(ss)) => {
                if pp.starts_with('{') && pp.ends_with('}') {
                    if ss.is_empty() {
                        return None;
                    }
                    params.push(ss);
                } else if pp != ss {
                    return None;
                }
            }
            _ => return None,
        }
    }
}

/// Finds the route for a request: `Ok((operation, params))`, or 404 / 405.
pub fn route<'a, H: Copy>(
    table: &[Route<H>],
    method: &Method,
    path: &'a str,
) -> Result<(H, Vec<&'a str>), ApiError> {
    let mut path_matched = false;
    for r in table {
        if let Some(params) = match_path(r.pattern, path) {
            path_matched = true;
            if r.method == method.as_str() {
                return Ok((r.op, params));
            }
        }
    }
    if path_matched {
        Err(ApiError::MethodNotAllowed)
    } else {
        Err(ApiError::NotFound)
    }
}

/// What a request addresses: an API operation (with its parameters) or a page.
#[derive(Debug)]
pub enum Dispatch<'a, H> {
    Route(H, Vec<&'a str>),
    Page(Response<Body>),
}

/// Routes a request; a GET that matches no route may name a page file (`page` maps the
/// path to a file name of `assets`).
pub fn route_or_page<'a, H: Copy>(
    table: &[Route<H>],
    method: &Method,
    path: &'a str,
    assets: &assets::Assets,
    page: impl Fn(&'a str) -> Option<&'a str>,
) -> Result<Dispatch<'a, H>, ApiError> {
    match route(table, method, path) {
        Ok((op, params)) => Ok(Dispatch::Route(op, params)),
        Err(ApiError::NotFound) if method == Method::GET => page(path)
            .and_then(|name| assets.get(name))
            .map(Dispatch::Page)
            .ok_or(ApiError::NotFound),
        Err(e) => Err(e),
    }
}

/// The response of either listener: errors answered in one shape (server faults logged
/// at warn, refusals at debug), security headers on everything.
pub fn finish(result: Result<Response<Body>, ApiError>, tls: bool) -> Response<Body> {
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            if e.status().is_server_error() {
                tracing::warn!(status = %e.status(), "request failed");
            } else {
                tracing::debug!(status = %e.status(), "request refused");
            }
            e.into_response()
        }
    };
    security_headers(resp.headers_mut(), tls);
    resp
}

/// The answer to a request that was not done within `limits.request_timeout_secs`
/// (a slow body, a stalled handler): 408, and the connection is closed.
pub fn request_timed_out(tls: bool) -> Response<Body> {
    tracing::debug!("request timed out");
    let mut r = error::json_response(
        StatusCode::REQUEST_TIMEOUT,
        &serde_json::json!({"error": "request_timeout"}),
    );
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    security_headers(r.headers_mut(), tls);
    r
}

/// Reads a request body of at most `max` bytes (413 past it, before reading it all).
pub async fn read_body(req: Request<Incoming>, max: usize) -> Result<Bytes, ApiError> {
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > u64::try_from(max).unwrap_or(u64::MAX) {
            return Err(ApiError::TooLarge);
        }
    }
    match Limited::new(req.into_body(), max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::TooLarge),
        Err(_) => Err(ApiError::BadRequest(
            "could not read the request body".into(),
        )),
    }
}

/// Parses a JSON body into `T` (400 with serde's message on failure).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid JSON: {e}")))
}

/// A JSON 200/201 response from a serializable value.
pub fn json_ok<T: serde::Serialize>(status: StatusCode, v: &T) -> Result<Response<Body>, ApiError> {
    let value = serde_json::to_value(v).map_err(|e| ApiError::Internal(Box::new(e)))?;
    Ok(error::json_response(status, &value))
}

pub fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(error::full(Bytes::new()));
    *r.status_mut() = status;
    r
}

/// Headers every response carries. Pages are never cached, never framed, never leak a
/// Referer, and only talk back to this origin.
pub fn security_headers(h: &mut HeaderMap, tls: bool) {
    let set = |h: &mut HeaderMap, k: header::HeaderName, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(h, header::CACHE_CONTROL, "no-store");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    );
    set(
        h,
        header::HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    if tls {
        set(
            h,
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=63072000; includeSubDomains",
        );
    }
}

/// Rejects request shapes used for smuggling: several Content-Length headers, a
/// Content-Length that is not plain digits, any Transfer-Encoding other than a lone
/// `chunked`, and both together. (hyper rejects most of these itself; this is the belt.)
pub fn check_framing(h: &HeaderMap) -> Result<(), ApiError> {
    let cls: Vec<&HeaderValue> = h.get_all(header::CONTENT_LENGTH).iter().collect();
    let tes: Vec<&HeaderValue> = h.get_all(header::TRANSFER_ENCODING).iter().collect();
    let bad = || ApiError::BadRequest("ambiguous message framing".into());
    if cls.len() > 1 || (!cls.is_empty() && !tes.is_empty()) {
        return Err(bad());
    }
    if let Some(cl) = cls.first() {
        let b = cl.as_bytes();
        if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
    }
    if tes.len() > 1
        || tes
            .first()
            .is_some_and(|te| !te.as_bytes().eq_ignore_ascii_case(b"chunked"))
    {
        return Err(bad());
    }
    Ok(())
}

/// The client's address: the peer, or — only when the peer is a trusted proxy — the
/// right-most address in the configured header (`X-Forwarded-For` or RFC 7239
/// `Forwarded`) that is not itself a trusted proxy. Never auto-detected; a malformed,
/// obfuscated or `unknown` hop stops the walk at the last address believed.
pub fn forwarded_client<'a>(
    peer: std::net::IpAddr,
    which: crate::config::ClientHeader,
    values: impl Iterator<Item = &'a str>,
    trusted: &[crate::config::Cidr],
) -> std::net::IpAddr {
    use crate::config::ClientHeader;
    let is_trusted = |ip: std::net::IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<Option<std::net::IpAddr>> = match which {
        ClientHeader::None => return peer,
        ClientHeader::XForwardedFor => values
            .flat_map(|v| v.split(','))
            .take(64)
            .map(hop_address)
            .collect(),
        ClientHeader::Forwarded => values
            .flat_map(|v| v.split(','))
            .take(64)
            .map(|element| {
                element
                    .split(';')
                    .filter_map(|pair| pair.trim().split_once('='))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                    .and_then(|(_, v)| hop_address(v.trim().trim_matches('"')))
            })
            .collect(),
    };
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = *hop else {
            break;
        };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    client
}

/// One hop's address: `192.0.2.1`, `2001:db8::1`, `192.0.2.1:4711`, `[2001:db8::1]` or
/// `[2001:db8::1]:4711`. Anything else (`unknown`, `_hidden`, garbage) is `None`.
fn hop_address(hop: &str) -> Option<std::net::IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Ok(sa) = hop.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    hop.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse::<std::net::Ipv6Addr>().ok())
        .map(std::net::IpAddr::V6)
}

/// The value of one cookie from the request's Cookie headers.
pub fn cookie<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &[Route<u8>] = &[
        Route::new("GET", "/api/v1/links", 0),
        Route::new("POST", "/api/v1/links", 1),
        Route::new("GET", "/api/v1/links/{id}", 2),
        Route::new("POST", "/api/v1/vms/{name}/actions/{action}", 3),
    ];

    #[test]
    fn routing() {
        assert_eq!(route(TABLE, &Method::GET, "/api/v1/links").expect("r").0, 0);
        assert_eq!(
            route(TABLE, &Method::POST, "/api/v1/links").expect("r").0,
            1
        );
        let (i, p) = route(TABLE, &Method::GET, "/api/v1/links/abc").expect("r");
        assert_eq!((i, p), (2, vec!["abc"]));
        let (_, p) = route(TABLE, &Method::POST, "/api/v1/vms/web/actions/start").expect("r");
        assert_eq!(p, vec!["web", "start"]);
        assert!(matches!(
            route(TABLE, &Method::DELETE, "/api/v1/links"),
            Err(ApiError::MethodNotAllowed)
        ));
        assert!(matches!(
            route(TABLE, &Method::GET, "/api/v1/links/"),
            Err(ApiError::NotFound)
        ));
        assert!(matches!(
            route(TABLE, &Method::GET, "/api/v1/links/a/b"),
            Err(ApiError::NotFound)
        ));
        assert!(matches!(
            route(TABLE, &Method::GET, "/api/v1//links"),
            Err(ApiError::NotFound)
        ));
    }

    #[test]
    fn framing() {
        let mut h = HeaderMap::new();
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("+5"));
        assert!(check_framing(&h).is_err());
        let mut h = HeaderMap::new();
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert!(check_framing(&h).is_err());
        let mut h = HeaderMap::new();
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        h.append(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert!(check_framing(&h).is_err());
        let mut h = HeaderMap::new();
        h.append(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("gzip, chunked"),
        );
        assert!(check_framing(&h).is_err());
        let mut h = HeaderMap::new();
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        assert!(check_framing(&h).is_ok());
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = [crate::config::Cidr::parse("10.0.0.0/8").expect("cidr")];
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
        let xff = |peer, values: std::array::IntoIter<&str, 1>, t: &[crate::config::Cidr]| {
            forwarded_client(peer, crate::config::ClientHeader::XForwardedFor, values, t)
        };
        // an untrusted peer's header is ignored
        assert_eq!(
            xff(ip("192.0.2.9"), ["1.2.3.4"].into_iter(), &trusted),
            ip("192.0.2.9")
        );
        // right-most untrusted hop wins; a spoofed left-most entry does not
        assert_eq!(
            xff(
                ip("10.0.0.1"),
                ["6.6.6.6, 198.51.100.7, 10.0.0.2"].into_iter(),
                &trusted
            ),
            ip("198.51.100.7")
        );
        // several headers are one list
        assert_eq!(
            forwarded_client(
                ip("10.0.0.1"),
                crate::config::ClientHeader::XForwardedFor,
                ["6.6.6.6", "198.51.100.7"].into_iter(),
                &trusted
            ),
            ip("198.51.100.7")
        );
        // garbage stops the walk at the last believed address
        assert_eq!(
            xff(ip("10.0.0.1"), ["1.1.1.1, junk"].into_iter(), &trusted),
            ip("10.0.0.1")
        );
        // all trusted: the left-most
        assert_eq!(
            xff(ip("10.0.0.1"), ["10.9.9.9"].into_iter(), &trusted),
            ip("10.9.9.9")
        );
    }

    #[test]
    fn forwarded_rfc7239_and_the_configured_header_only() {
        use crate::config::ClientHeader;
        let trusted = [crate::config::Cidr::parse("10.0.0.0/8").expect("cidr")];
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
        let fwd = |v: &str| {
            forwarded_client(
                ip("10.0.0.1"),
                ClientHeader::Forwarded,
                [v].into_iter(),
                &trusted,
            )
        };
        assert_eq!(
            fwd("for=192.0.2.60;proto=https;by=203.0.113.43"),
            ip("192.0.2.60")
        );
        assert_eq!(
            fwd(r#"for=6.6.6.6, For="[2001:db8:cafe::17]:4711", for=10.1.1.1"#),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(fwd(r#"for="192.0.2.43:47011""#), ip("192.0.2.43"));
        assert_eq!(fwd(r#"for="[2001:db8::1]""#), ip("2001:db8::1"));
        // obfuscated or unknown hops stop the walk
        assert_eq!(fwd("for=198.51.100.1, for=_hidden"), ip("10.0.0.1"));
        assert_eq!(fwd("for=unknown"), ip("10.0.0.1"));
        assert_eq!(fwd("proto=https"), ip("10.0.0.1"));
        // the other header is not read, whatever it says
        assert_eq!(
            forwarded_client(
                ip("10.0.0.1"),
                ClientHeader::None,
                ["1.2.3.4"].into_iter(),
                &trusted
            ),
            ip("10.0.0.1")
        );
        // an untrusted peer is the client
        assert_eq!(
            forwarded_client(
                ip("192.0.2.9"),
                ClientHeader::Forwarded,
                ["for=1.2.3.4"].into_iter(),
                &trusted
            ),
            ip("192.0.2.9")
        );
        // XFF entries with ports
        assert_eq!(
            forwarded_client(
                ip("10.0.0.1"),
                ClientHeader::XForwardedFor,
                ["198.51.100.7:1234, [2001:db8::2]:80"].into_iter(),
                &trusted
            ),
            ip("2001:db8::2")
        );
    }

    #[test]
    fn cookies() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-vmgw-x=secret"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&h, "__Host-vmgw-x"), Some("secret"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
