//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a TCP-level reverse proxy
//! writes before the client's bytes, naming the client's address.
//!
//! It is read only from configured trusted proxies, and only when `[proxy] protocol` is
//! on; it is never guessed at. The header is read exactly (nothing past it is consumed,
//! so the TLS handshake that follows sees its bytes untouched), within a time limit, and
//! anything malformed ends the connection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The version 2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// A version 1 header is at most this long, CRLF included.
pub const V1_MAX_LEN: usize = 107;
/// Largest version 2 address block (addresses and TLVs) accepted. The protocol allows
/// 65535; proxies send well under this even with TLVs.
pub const V2_MAX_BLOCK: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    #[error("no PROXY protocol signature")]
    NoSignature,
    #[error("malformed PROXY v1 header")]
    BadV1,
    #[error("unsupported PROXY v2 version or command")]
    BadV2,
    #[error("PROXY v2 address block of {0} bytes is too large")]
    TooLarge(usize),
    #[error("PROXY v2 address block too short for its family")]
    Truncated,
    #[error("connection closed inside the PROXY header")]
    Eof,
    #[error("PROXY header not received in time")]
    Timeout,
    #[error("reading the PROXY header: {0}")]
    Io(std::io::ErrorKind),
}

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The proxy's own connection (health check, `LOCAL`, `UNKNOWN`, or a non-IP
    /// family): the peer's address stands.
    Local,
    /// A proxied connection from this client address.
    Proxied(SocketAddr),
}

/// Parses a header at the start of `buf`. `Ok(None)`: more bytes are needed (and may
/// still make a valid header); otherwise the header and its length in bytes.
pub fn parse(buf: &[u8]) -> Result<Option<(Header, usize)>, ProxyError> {
    let sig_len = buf.len().min(V2_SIGNATURE.len());
    if buf[..sig_len] == V2_SIGNATURE[..sig_len] {
        return if buf.len() < 16 {
            Ok(None)
        } else {
            parse_v2(buf)
        };
    }
    let v1_len = buf.len().min(6);
    if buf[..v1_len] == b"PROXY "[..v1_len] {
        return parse_v1(buf);
    }
    Err(ProxyError::NoSignature)
}

fn parse_v1(buf: &[u8]) -> Result<Option<(Header, usize)>, ProxyError> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX_LEN || buf.contains(&b'\n') {
            Err(ProxyError::BadV1)
        } else {
            Ok(None)
        };
    };
    let len = end + 2;
    if len > V1_MAX_LEN {
        return Err(ProxyError::BadV1);
    }
    let line = std::str::from_utf8(&buf[6..end]).map_err(|_| ProxyError::BadV1)?;
    let fields: Vec<&str> = line.split(' ').collect();
    let header = match fields.as_slice() {
        ["UNKNOWN", ..] => Header::Local,
        [proto @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            // The destination is checked for form only; the source is the client.
            let src = match *proto {
                "TCP4" => {
                    v1_ip::<Ipv4Addr>(dst)?;
                    v1_ip::<Ipv4Addr>(src)?
                }
                _ => {
                    v1_ip::<Ipv6Addr>(dst)?;
                    v1_ip::<Ipv6Addr>(src)?
                }
            };
            let sport = v1_port(sport)?;
            v1_port(dport)?;
            Header::Proxied(SocketAddr::new(src, sport))
        }
        _ => return Err(ProxyError::BadV1),
    };
    Ok(Some((header, len)))
}

fn v1_ip<T: std::str::FromStr + Into<IpAddr>>(s: &str) -> Result<IpAddr, ProxyError> {
    s.parse::<T>()
        .map(Into::into)
        .map_err(|_| ProxyError::BadV1)
}

fn v1_port(s: &str) -> Result<u16, ProxyError> {
    // Decimal without sign or leading zeros, as the specification has it.
    if s.is_empty() || s.len() > 5 || (s.len() > 1 && s.starts_with('0')) {
        return Err(ProxyError::BadV1);
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProxyError::BadV1);
    }
    s.parse().map_err(|_| ProxyError::BadV1)
}

fn parse_v2(buf: &[u8]) -> Result<Option<(Header, usize)>, ProxyError> {
    let ver_cmd = buf[12];
    let family = buf[13];
    let block = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::BadV2);
    }
    if block > V2_MAX_BLOCK {
        return Err(ProxyError::TooLarge(block));
    }
    let len = 16 + block;
    if buf.len() < len {
        return Ok(None);
    }
    let addrs = &buf[16..len];
    let header = match ver_cmd & 0x0f {
        0x0 => Header::Local,
        0x1 => match family {
            // TCP or UDP over IPv4: src, dst, sport, dport
            0x11 | 0x12 => {
                let a: &[u8; 12] = addrs
                    .get(..12)
                    .and_then(|a| a.try_into().ok())
                    .ok_or(ProxyError::Truncated)?;
                let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
                let port = u16::from_be_bytes([a[8], a[9]]);
                Header::Proxied(SocketAddr::new(ip.into(), port))
            }
            0x21 | 0x22 => {
                let a: &[u8; 36] = addrs
                    .get(..36)
                    .and_then(|a| a.try_into().ok())
                    .ok_or(ProxyError::Truncated)?;
                let mut ip = [0u8; 16];
                ip.copy_from_slice(&a[..16]);
                let port = u16::from_be_bytes([a[32], a[33]]);
                Header::Proxied(SocketAddr::new(Ipv6Addr::from(ip).into(), port))
            }
            // UNSPEC, unix sockets: no IP address to believe.
            0x00 | 0x31 | 0x32 => Header::Local,
            _ => return Err(ProxyError::BadV2),
        },
        _ => return Err(ProxyError::BadV2),
    };
    Ok(Some((header, len)))
}

/// Reads one header from `io` within `timeout`, consuming exactly its bytes.
pub async fn read_header<R: AsyncRead + Unpin>(
    io: &mut R,
    timeout: Duration,
) -> Result<Header, ProxyError> {
    tokio::time::timeout(timeout, read_exact_header(io))
        .await
        .map_err(|_| ProxyError::Timeout)?
}

async fn read_exact_header<R: AsyncRead + Unpin>(io: &mut R) -> Result<Header, ProxyError> {
    let mut buf = Vec::with_capacity(232);
    // Sixteen bytes are safe to read whichever the version: a v2 header has at least
    // that, and the shortest v1 header ("PROXY UNKNOWN\r\n") is fifteen, so a v1 header
    // is read a byte at a time past its first fifteen.
    let mut want = 15;
    loop {
        let at = buf.len();
        buf.resize(want, 0);
        let mut filled = at;
        while filled < want {
            let n = io
                .read(&mut buf[filled..want])
                .await
                .map_err(|e| ProxyError::Io(e.kind()))?;
            if n == 0 {
                return Err(ProxyError::Eof);
            }
            filled += n;
        }
        match parse(&buf)? {
            Some((h, len)) if len == buf.len() => return Ok(h),
            // Parsing stops at the header's end, so a complete parse is of all of it.
            Some(_) => return Err(ProxyError::BadV1),
            None if buf.starts_with(&V2_SIGNATURE[..12]) && buf.len() >= 16 => {
                want = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
            }
            None if buf.starts_with(&V2_SIGNATURE[..12]) => want = 16,
            None => want = buf.len() + 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(cmd: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | cmd);
        h.push(family);
        h.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
        h.extend_from_slice(block);
        h
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        let h = b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\n";
        assert_eq!(
            parse(h).unwrap(),
            Some((Header::Proxied(sa("203.0.113.7:56324")), h.len()))
        );
        let h = b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 443\r\nTLS";
        assert_eq!(
            parse(h).unwrap(),
            Some((Header::Proxied(sa("[2001:db8::7]:4000")), h.len() - 3))
        );
        let h = b"PROXY UNKNOWN ffff:f...f:ffff 1 2\r\n";
        assert_eq!(parse(h).unwrap(), Some((Header::Local, h.len())));
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap().0,
            Header::Local
        );
    }

    #[test]
    fn v1_incomplete_then_malformed() {
        assert_eq!(parse(b"PRO").unwrap(), None);
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4").unwrap(), None);
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"[..],
            b"PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 2001:db8::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        ] {
            assert_eq!(
                parse(bad),
                Err(ProxyError::BadV1),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // no CRLF within the 107 bytes the specification allows
        let long = [b"PROXY TCP6 ".as_slice(), &[b'1'; 100]].concat();
        assert_eq!(parse(&long), Err(ProxyError::BadV1));
        assert_eq!(parse(b"\x16\x03\x01\x02\x00"), Err(ProxyError::NoSignature));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ProxyError::NoSignature));
    }

    #[test]
    fn v2_families_commands_and_tlvs() {
        let mut b = vec![203, 0, 113, 7, 192, 0, 2, 1];
        b.extend_from_slice(&56324u16.to_be_bytes());
        b.extend_from_slice(&443u16.to_be_bytes());
        let h = v2(1, 0x11, &b);
        assert_eq!(
            parse(&h).unwrap(),
            Some((Header::Proxied(sa("203.0.113.7:56324")), 28))
        );
        // TLVs after the addresses are skipped
        let mut with_tlv = b.clone();
        with_tlv.extend_from_slice(&[0x04, 0x00, 0x03, b'a', b'b', b'c']);
        let h = v2(1, 0x11, &with_tlv);
        assert_eq!(parse(&h).unwrap().unwrap().1, h.len());

        let mut b6 = Vec::new();
        b6.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        b6.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        b6.extend_from_slice(&4000u16.to_be_bytes());
        b6.extend_from_slice(&443u16.to_be_bytes());
        assert_eq!(
            parse(&v2(1, 0x21, &b6)).unwrap().unwrap().0,
            Header::Proxied(sa("[2001:db8::7]:4000"))
        );
        assert_eq!(parse(&v2(0, 0x00, &[])).unwrap().unwrap().0, Header::Local);
        assert_eq!(parse(&v2(0, 0x11, &b)).unwrap().unwrap().0, Header::Local);
        assert_eq!(
            parse(&v2(1, 0x31, &[0; 216])).unwrap().unwrap().0,
            Header::Local
        );
    }

    #[test]
    fn v2_malformed() {
        assert_eq!(parse(&v2(1, 0x11, &[1, 2, 3])), Err(ProxyError::Truncated));
        assert_eq!(parse(&v2(1, 0x21, &[0; 12])), Err(ProxyError::Truncated));
        assert_eq!(parse(&v2(2, 0x11, &[0; 12])), Err(ProxyError::BadV2));
        assert_eq!(parse(&v2(1, 0x41, &[0; 12])), Err(ProxyError::BadV2));
        let mut h = v2(1, 0x11, &[0; 12]);
        h[12] = 0x11; // version 1 in the binary form
        assert_eq!(parse(&h), Err(ProxyError::BadV2));
        let mut h = v2(1, 0x11, &[]);
        h[14..16].copy_from_slice(&0xffffu16.to_be_bytes());
        assert_eq!(parse(&h), Err(ProxyError::TooLarge(65535)));
        // incomplete: signature prefix, fixed part, block
        assert_eq!(parse(&V2_SIGNATURE[..5]).unwrap(), None);
        assert_eq!(parse(&v2(1, 0x11, &[0; 12])[..20]).unwrap(), None);
    }

    #[tokio::test]
    async fn reads_exactly_the_header() {
        for (header, want) in [
            (
                b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\n".to_vec(),
                Header::Proxied(sa("203.0.113.7:56324")),
            ),
            (b"PROXY UNKNOWN\r\n".to_vec(), Header::Local),
            (v2(0, 0, &[]), Header::Local),
            (
                v2(
                    1,
                    0x11,
                    &[203, 0, 113, 7, 192, 0, 2, 1, 0, 80, 1, 187, 9, 9],
                ),
                Header::Proxied(sa("203.0.113.7:80")),
            ),
        ] {
            let mut input = header.clone();
            input.extend_from_slice(b"\x16\x03\x01rest");
            let mut r = input.as_slice();
            let got = read_header(&mut r, Duration::from_secs(1)).await.unwrap();
            assert_eq!(got, want);
            assert_eq!(
                r, b"\x16\x03\x01rest",
                "bytes past the header are untouched"
            );
        }
    }

    #[tokio::test]
    async fn eof_garbage_and_timeout() {
        let mut r = &b"PROXY TCP4 1.2"[..];
        assert_eq!(
            read_header(&mut r, Duration::from_secs(1)).await,
            Err(ProxyError::Eof)
        );
        let mut r = &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03aaaaaaaaaa"[..];
        assert_eq!(
            read_header(&mut r, Duration::from_secs(1)).await,
            Err(ProxyError::NoSignature)
        );
        let (mut a, _b) = tokio::io::duplex(64);
        assert_eq!(
            read_header(&mut a, Duration::from_millis(50)).await,
            Err(ProxyError::Timeout)
        );
    }
}
