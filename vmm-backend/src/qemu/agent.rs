//! The QEMU guest agent: the guest's own view of its network addresses.

use std::path::Path;
use std::time::Duration;

use qapi::futures::{QapiStream, QgaStreamTokio};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::UnixStream;

use super::error::QemuError;

type QgaRead = QgaStreamTokio<ReadHalf<UnixStream>>;
type QgaWrite = QgaStreamTokio<WriteHalf<UnixStream>>;

/// An IP address the guest agent reported.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GuestAddress {
    pub interface: String,
    pub mac: Option<String>,
    pub address: std::net::IpAddr,
    pub prefix: u8,
}

async fn qga_once(path: &Path) -> Result<Vec<GuestAddress>, QemuError> {
    let stream: QapiStream<QgaRead, QgaWrite> =
        QgaStreamTokio::open_uds(path)
            .await
            .map_err(|source| QemuError::Io {
                op: "connecting to the guest agent socket",
                path: path.to_owned(),
                source,
            })?;
    let (service, events) = stream.into_parts();
    let reader = events.spawn_tokio();
    let result = async {
        service
            .guest_sync(rand::random::<i32>() & 0x7fff_ffff)
            .await
            .map_err(|e| QemuError::GuestAgent(e.to_string()))?;
        service
            .execute(qapi::qga::guest_network_get_interfaces {})
            .await
            .map_err(|e| QemuError::GuestAgent(e.to_string()))
    }
    .await;
    reader.abort();
    let ifaces = result?;
    let mut out = Vec::new();
    for iface in ifaces {
        for ip in iface.ip_addresses.unwrap_or_default() {
            let Ok(address) = ip.ip_address.parse() else {
                continue;
            };
            out.push(GuestAddress {
                interface: iface.name.clone(),
                mac: iface.hardware_address.clone(),
                address,
                prefix: u8::try_from(ip.prefix).unwrap_or(0),
            });
        }
    }
    Ok(out)
}

/// The guest's addresses through the guest agent, or `GuestAgentNotRunning` when it does
/// not answer within `timeout`. Retries once on a garbled exchange (a stale answer to an
/// earlier client's command).
pub async fn guest_addresses(
    path: &Path,
    timeout: Duration,
) -> Result<Vec<GuestAddress>, QemuError> {
    let attempt = async {
        let mut last = None;
        for _ in 0..3 {
            match qga_once(path).await {
                Ok(v) => return Ok(v),
                // The socket is gone or refuses (QEMU exiting): the agent is unreachable.
                Err(QemuError::Io { source, .. }) => {
                    last = Some(QemuError::GuestAgent(format!("unreachable ({source})")))
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(QemuError::GuestAgentNotRunning(timeout)))
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(QemuError::GuestAgentNotRunning(timeout)),
    }
}
