//! A small fixed pool of PostgreSQL connections, made lazily and replaced when the
//! server closed one.

use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::{Client, NoTls};

use super::{error_chain, PgError, PgSettings};
use crate::store::StoreError;

/// A bounded pool: at most `size` connections, each checked out by one caller at a time.
pub(super) struct Pool {
    pub(super) settings: PgSettings,
    idle: Mutex<Vec<Client>>,
    permits: Semaphore,
    /// The runtime the pool was made on (the gateway's main one): connections are opened
    /// and driven there, whichever runtime asks for one (requests are answered on the
    /// lower-priority setup runtime; the relays' revocation checks must not wait on it).
    runtime: Option<tokio::runtime::Handle>,
}

/// A checked-out connection; goes back to the pool when dropped (unless it closed).
pub(super) struct Conn<'a> {
    pool: &'a Pool,
    client: Option<Client>,
    _permit: SemaphorePermit<'a>,
}

impl Deref for Conn<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        match &self.client {
            Some(c) => c,
            None => unreachable!("a pooled connection is emptied only when dropped"),
        }
    }
}

impl DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        match &mut self.client {
            Some(c) => c,
            None => unreachable!("a pooled connection is emptied only when dropped"),
        }
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            // A connection dropped inside a transaction has already been told to roll
            // back (tokio-postgres queues ROLLBACK on drop), so it is clean to reuse.
            if !c.is_closed() {
                self.pool.idle().push(c);
            }
        }
    }
}

impl Pool {
    /// An empty pool of at most `settings.pool_size` connections.
    pub(super) fn new(settings: PgSettings) -> Pool {
        let size = settings.pool_size;
        Pool {
            settings,
            idle: Mutex::new(Vec::with_capacity(size)),
            permits: Semaphore::new(size),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Client>> {
        // Only pushes and pops happen under this lock: a panic cannot leave it torn.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) async fn get(&self) -> Result<Conn<'_>, StoreError> {
        let wait = self.settings.connect_timeout;
        let permit = tokio::time::timeout(wait, self.permits.acquire())
            .await
            .map_err(|_| PgError::PoolBusy {
                size: self.settings.pool_size,
                secs: wait.as_secs(),
            })?
            .map_err(|_| StoreError::Task)?;
        let reused = loop {
            match self.idle().pop() {
                Some(c) if c.is_closed() => continue,
                other => break other,
            }
        };
        let client = match reused {
            Some(c) => c,
            None => self.connect().await?,
        };
        Ok(Conn {
            pool: self,
            client: Some(client),
            _permit: permit,
        })
    }

    async fn connect(&self) -> Result<Client, PgError> {
        let Some(rt) = &self.runtime else {
            return connect(self.settings.clone()).await;
        };
        let task = rt.spawn(connect(self.settings.clone()));
        tokio_util::task::AbortOnDropHandle::new(task)
            .await
            .map_err(|_| PgError::ConnectTask)?
    }
}

/// Opens a connection and spawns its driver on the current runtime.
async fn connect(s: PgSettings) -> Result<Client, PgError> {
    let mut config = s.config.clone();
    config.connect_timeout(s.connect_timeout);
    let connecting = config.connect(NoTls);
    let (client, connection) = match tokio::time::timeout(s.connect_timeout, connecting).await {
        Err(_) => {
            return Err(PgError::ConnectTimeout {
                target: s.describe(),
                secs: s.connect_timeout.as_secs(),
            })
        }
        Ok(Err(e)) => {
            return Err(PgError::Connect {
                target: s.describe(),
                reason: error_chain(&e),
            })
        }
        Ok(Ok(pair)) => pair,
    };
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "a PostgreSQL store connection ended");
        }
    });
    Ok(client)
}
