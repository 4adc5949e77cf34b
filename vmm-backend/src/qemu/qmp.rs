//! QMP, QEMU's control protocol: short command sessions and the event monitor.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use qapi::futures::{QapiStream, QmpStreamTokio};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::UnixStream;

use super::error::QemuError;

type QmpRead = QmpStreamTokio<ReadHalf<UnixStream>>;
type QmpWrite = QmpStreamTokio<WriteHalf<UnixStream>>;

/// One short-lived QMP session: connect, negotiate, run commands, close. Sessions are
/// short so that the CLI, the gateway and tests can all drive the same VM.
pub struct Qmp {
    stream: QapiStream<QmpRead, QmpWrite>,
    timeout: Duration,
}

impl std::fmt::Debug for Qmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qmp").finish_non_exhaustive()
    }
}

impl Qmp {
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QemuError> {
        let fut = async {
            let neg =
                QmpStreamTokio::open_uds(path)
                    .await
                    .map_err(|source| QemuError::QmpConnect {
                        path: path.to_owned(),
                        source,
                    })?;
            neg.negotiate()
                .await
                .map_err(|source| QemuError::QmpConnect {
                    path: path.to_owned(),
                    source,
                })
        };
        let stream = tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| QemuError::QmpTimeout(timeout))??;
        Ok(Qmp { stream, timeout })
    }

    pub async fn execute<C>(&mut self, command: C) -> Result<C::Ok, QemuError>
    where
        C: qapi::qmp::QmpCommand + 'static,
    {
        let name = <C as qapi::Command>::NAME;
        match tokio::time::timeout(self.timeout, self.stream.execute(command)).await {
            Err(_) => Err(QemuError::QmpTimeout(self.timeout)),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(QemuError::Qmp {
                command: name,
                message: e.to_string(),
            }),
        }
    }
}

/// Listens to a VM's event monitor until QEMU goes away; calls `on_event` per event.
pub async fn watch_events<F>(
    path: &Path,
    timeout: Duration,
    mut on_event: F,
) -> Result<(), QemuError>
where
    F: FnMut(qapi::qmp::Event),
{
    let qmp = Qmp::connect(path, timeout).await?;
    let (_service, mut events) = qmp.stream.into_parts();
    while let Some(ev) = events.next().await {
        match ev {
            Ok(ev) => on_event(ev),
            Err(_) => break,
        }
    }
    Ok(())
}
