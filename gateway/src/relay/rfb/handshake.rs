//! The RFB security handshakes on both sides of the gateway: as a client towards the
//! VNC server, as a server offering only None towards the browser.

use des::cipher::{BlockEncrypt, KeyInit};
use des::Des;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{
    RfbError, RfbLimits, SECURITY_NONE, SECURITY_VNC_AUTH, VERSION_3_3, VERSION_3_7, VERSION_3_8,
};

/// The three protocol versions RFC 6143 defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Version {
    V3_3,
    V3_7,
    V3_8,
}

impl Version {
    fn wire(self) -> &'static [u8; 12] {
        match self {
            Version::V3_3 => VERSION_3_3,
            Version::V3_7 => VERSION_3_7,
            Version::V3_8 => VERSION_3_8,
        }
    }
}

fn escape_bytes(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// Parse `RFB xxx.yyy\n` into (major, minor).
fn parse_version(buf: &[u8; 12]) -> Result<(u16, u16), RfbError> {
    let malformed = || RfbError::MalformedVersion(escape_bytes(buf));
    let [b'R', b'F', b'B', b' ', a, b, c, b'.', d, e, f, b'\n'] = *buf else {
        return Err(malformed());
    };
    let digits = |x: u8, y: u8, z: u8| -> Option<u16> {
        if x.is_ascii_digit() && y.is_ascii_digit() && z.is_ascii_digit() {
            Some(u16::from(x - b'0') * 100 + u16::from(y - b'0') * 10 + u16::from(z - b'0'))
        } else {
            None
        }
    };
    match (digits(a, b, c), digits(d, e, f)) {
        (Some(major), Some(minor)) => Ok((major, minor)),
        _ => Err(malformed()),
    }
}

/// Map a 3.x minor version as RFC 6143 §7.1.1 asks: 3.7 and 3.8 are
/// themselves, later minors speak 3.8 (as noVNC treats them), and the
/// nonstandard 3.4–3.6 are treated as 3.3.
fn map_minor(major: u16, minor: u16) -> Result<Version, RfbError> {
    match minor {
        3..=6 => Ok(Version::V3_3),
        7 => Ok(Version::V3_7),
        8.. => Ok(Version::V3_8),
        _ => Err(RfbError::UnsupportedVersion { major, minor }),
    }
}

/// Version the gateway speaks with a VNC server that announced `buf`.
fn server_version(buf: &[u8; 12]) -> Result<Version, RfbError> {
    match parse_version(buf)? {
        (3, minor) => map_minor(3, minor),
        // RealVNC 4.x/5.x and Intel AMT announce 4.x/5.x and speak 3.8.
        (4 | 5, _) => Ok(Version::V3_8),
        (major, minor) => Err(RfbError::UnsupportedVersion { major, minor }),
    }
}

/// Version the gateway speaks with a browser that answered `buf` to our 3.8.
fn client_version(buf: &[u8; 12]) -> Result<Version, RfbError> {
    match parse_version(buf)? {
        (3, minor) => map_minor(3, minor),
        (major, minor) => Err(RfbError::UnsupportedVersion { major, minor }),
    }
}

/// Replace control characters so a server-provided string is safe to log.
/// Trailing NULs are dropped: QEMU counts the C string terminator in the
/// length of its "Authentication failed" reason.
fn sanitize(bytes: &[u8]) -> String {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    String::from_utf8_lossy(bytes.get(..end).unwrap_or(bytes))
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// Read an RFB reason string (u32 length + bytes), reading and allocating at
/// most `max` bytes of it. The remainder, if any, is left unread: every caller
/// fails the session right after.
async fn read_reason<S: AsyncRead + Unpin>(s: &mut S, max: usize) -> Result<String, RfbError> {
    let len = s.read_u32().await?;
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    let take = len.min(max);
    let mut bytes = vec![0u8; take];
    s.read_exact(&mut bytes).await?;
    let mut reason = sanitize(&bytes);
    if len > take {
        reason.push_str(" [truncated]");
    }
    Ok(reason)
}

/// The VNC Authentication response to `challenge` (RFC 6143 §7.2.2): DES-ECB
/// of both 8-byte halves with the password, truncated or zero-padded to 8
/// bytes, each byte bit-reversed, as the key.
pub fn vnc_auth_response(password: &[u8], challenge: &[u8; 16]) -> [u8; 16] {
    let mut key = [0u8; 8];
    for (k, p) in key.iter_mut().zip(password) {
        *k = p.reverse_bits();
    }
    let cipher = Des::new(&key.into());
    let mut out = [0u8; 16];
    for (dst, src) in out.chunks_exact_mut(8).zip(challenge.chunks_exact(8)) {
        let mut block = [0u8; 8];
        block.copy_from_slice(src);
        let mut block = block.into();
        cipher.encrypt_block(&mut block);
        dst.copy_from_slice(&block);
    }
    key.fill(0);
    out
}

/// Read SecurityResult; in 3.8 a failure carries a reason string.
async fn read_security_result<S: AsyncRead + Unpin>(
    s: &mut S,
    version: Version,
    limits: &RfbLimits,
) -> Result<(), RfbError> {
    let status = s.read_u32().await?;
    if status == 0 {
        return Ok(());
    }
    let reason = if version >= Version::V3_8 {
        // Best effort: a server that closes without a reason still failed.
        read_reason(s, limits.max_reason_len).await.ok()
    } else {
        None
    };
    Err(RfbError::SecurityFailed { status, reason })
}

async fn vnc_authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    password: &[u8],
) -> Result<(), RfbError> {
    let mut challenge = [0u8; 16];
    s.read_exact(&mut challenge).await?;
    let response = vnc_auth_response(password, &challenge);
    s.write_all(&response).await?;
    s.flush().await?;
    Ok(())
}

/// Act as an RFB client towards the VNC server (QEMU): version exchange and
/// security handshake. Picks None when offered, else VNC Authentication when
/// `password` is set. On success the stream is positioned right before the
/// ClientInit message, which the caller sends (normally the first byte out of
/// the [`ClientFilter`]).
pub async fn backend_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    password: Option<&[u8]>,
    limits: &RfbLimits,
) -> Result<(), RfbError> {
    let mut server = [0u8; 12];
    s.read_exact(&mut server).await?;
    let version = server_version(&server)?;
    s.write_all(version.wire()).await?;
    s.flush().await?;

    if version == Version::V3_3 {
        // RFC 6143 A.1: the server decides and sends a u32 security type.
        return match s.read_u32().await? {
            0 => Err(RfbError::ServerRefused(
                read_reason(s, limits.max_reason_len).await?,
            )),
            // A.1: no SecurityResult for None in 3.3.
            1 => Ok(()),
            2 => {
                let password = password.ok_or(RfbError::PasswordRequired)?;
                vnc_authenticate(s, password).await?;
                read_security_result(s, version, limits).await
            }
            other => Err(RfbError::NoSupportedSecurityType {
                offered: vec![u8::try_from(other).unwrap_or(u8::MAX)],
            }),
        };
    }

    let count = s.read_u8().await?;
    if count == 0 {
        return Err(RfbError::ServerRefused(
            read_reason(s, limits.max_reason_len).await?,
        ));
    }
    let mut offered = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        offered.push(s.read_u8().await?);
    }
    if offered.contains(&SECURITY_NONE) {
        s.write_all(&[SECURITY_NONE]).await?;
        s.flush().await?;
        // RFC 6143 A.2: in 3.7 no SecurityResult follows None.
        if version >= Version::V3_8 {
            read_security_result(s, version, limits).await?;
        }
        return Ok(());
    }
    if offered.contains(&SECURITY_VNC_AUTH) {
        let password = password.ok_or(RfbError::PasswordRequired)?;
        s.write_all(&[SECURITY_VNC_AUTH]).await?;
        s.flush().await?;
        vnc_authenticate(s, password).await?;
        return read_security_result(s, version, limits).await;
    }
    Err(RfbError::NoSupportedSecurityType { offered })
}

/// Act as the RFB server towards the browser: announce 3.8, accept a 3.3, 3.7
/// or 3.8 answer, offer only security type None. On success the next bytes
/// the browser sends are its ClientInit; nothing beyond the handshake has been
/// read from the stream.
pub async fn client_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
) -> Result<(), RfbError> {
    s.write_all(VERSION_3_8).await?;
    s.flush().await?;
    let mut answer = [0u8; 12];
    s.read_exact(&mut answer).await?;
    let version = client_version(&answer)?;

    if version == Version::V3_3 {
        // RFC 6143 A.1: the server states the type; no SecurityResult for None.
        s.write_all(&u32::from(SECURITY_NONE).to_be_bytes()).await?;
        s.flush().await?;
        return Ok(());
    }

    s.write_all(&[1, SECURITY_NONE]).await?;
    s.flush().await?;
    let choice = s.read_u8().await?;
    if choice != SECURITY_NONE {
        if version >= Version::V3_8 {
            // Best effort courtesy: tell the client why before closing.
            let reason: &[u8] = b"security type not offered";
            let mut msg = Vec::with_capacity(8 + reason.len());
            msg.extend_from_slice(&1u32.to_be_bytes());
            msg.extend_from_slice(&u32::try_from(reason.len()).unwrap_or(0).to_be_bytes());
            msg.extend_from_slice(reason);
            let _ = s.write_all(&msg).await;
            let _ = s.flush().await;
        }
        return Err(RfbError::ClientSecurityType(choice));
    }
    // RFC 6143 §7.1.3 and A.2: SecurityResult follows None only in 3.8.
    if version >= Version::V3_8 {
        s.write_all(&0u32.to_be_bytes()).await?;
        s.flush().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
