//! A small connection pool: a semaphore bounds the open connections, idle ones wait in
//! a stack (most recently used first, so a quiet period lets the rest age out).
//!
//! bb8-tiberius and deadpool-tiberius only support tiberius 0.12, and a pool this size
//! needs no more than this.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use escr_connector::{ConnectorError, ErrorKind};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

pub(crate) type TdsClient = tiberius::Client<Compat<TcpStream>>;

struct Idle {
    client: TdsClient,
    since: Instant,
}

pub(crate) struct Pool {
    config: tiberius::Config,
    permits: Semaphore,
    idle: Mutex<Vec<Idle>>,
    connect_timeout: Duration,
    acquire_timeout: Duration,
    idle_timeout: Duration,
}

impl Pool {
    pub(crate) fn new(
        config: tiberius::Config,
        size: usize,
        connect_timeout: Duration,
        acquire_timeout: Duration,
        idle_timeout: Duration,
    ) -> Pool {
        Pool {
            config,
            permits: Semaphore::new(size.max(1)),
            idle: Mutex::new(Vec::new()),
            connect_timeout,
            acquire_timeout,
            idle_timeout,
        }
    }

    /// An idle connection if one is fresh enough, else a new one.
    pub(crate) async fn acquire(&self) -> Result<PooledClient<'_>, ConnectorError> {
        let permit = self.permit().await?;
        while let Some(idle) = self.pop_idle() {
            if idle.since.elapsed() < self.idle_timeout {
                return Ok(PooledClient {
                    client: Some(idle.client),
                    reused: true,
                    pool: self,
                    _permit: permit,
                });
            }
        }
        self.connected(permit).await
    }

    /// Always a new connection (after an idle one turned out to be dead).
    pub(crate) async fn acquire_fresh(&self) -> Result<PooledClient<'_>, ConnectorError> {
        let permit = self.permit().await?;
        self.connected(permit).await
    }

    /// Closes every idle connection.
    pub(crate) fn clear_idle(&self) {
        let dropped = std::mem::take(&mut *self.lock_idle());
        drop(dropped);
    }

    async fn permit(&self) -> Result<SemaphorePermit<'_>, ConnectorError> {
        match tokio::time::timeout(self.acquire_timeout, self.permits.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(ConnectorError::unavailable("connection pool closed")),
            Err(_) => Err(ConnectorError::timeout(
                "no connection within the acquire time limit",
            )),
        }
    }

    async fn connected<'a>(
        &'a self,
        permit: SemaphorePermit<'a>,
    ) -> Result<PooledClient<'a>, ConnectorError> {
        let client = self.connect().await?;
        Ok(PooledClient {
            client: Some(client),
            reused: false,
            pool: self,
            _permit: permit,
        })
    }

    async fn connect(&self) -> Result<TdsClient, ConnectorError> {
        let connect = async {
            let tcp = TcpStream::connect(self.config.get_addr())
                .await
                .map_err(|e| {
                    ConnectorError::unavailable(format!("cannot connect: {}", e.kind()))
                })?;
            // Requests are single small messages: no reason to wait for more bytes.
            let _ = tcp.set_nodelay(true);
            tiberius::Client::connect(self.config.clone(), tcp.compat_write())
                .await
                .map_err(|e| {
                    let mut error = crate::map_error(&e);
                    if error.kind == ErrorKind::Timeout || error.kind == ErrorKind::Query {
                        // At login any other failure means the source is not usable.
                        error.kind = ErrorKind::Unavailable;
                    }
                    error
                })
        };
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(result) => result,
            Err(_) => Err(ConnectorError::unavailable(
                "cannot connect and log in within the connect time limit",
            )),
        }
    }

    fn pop_idle(&self) -> Option<Idle> {
        self.lock_idle().pop()
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // A panic elsewhere cannot leave the Vec half-changed: push and pop are atomic.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A connection lent out by the pool. Dropped without [`PooledClient::release`], its
/// connection is closed (the safe default for any error path).
pub(crate) struct PooledClient<'a> {
    client: Option<TdsClient>,
    reused: bool,
    pool: &'a Pool,
    _permit: SemaphorePermit<'a>,
}

impl PooledClient<'_> {
    pub(crate) fn client(&mut self) -> &mut TdsClient {
        // Only `release` takes the client out, and it consumes `self`.
        self.client.as_mut().expect("client present until released")
    }

    /// Whether this connection served statements before (and so may have died since).
    pub(crate) fn reused(&self) -> bool {
        self.reused
    }

    /// Back to the pool for the next statement.
    pub(crate) fn release(mut self) {
        if let Some(client) = self.client.take() {
            self.pool.lock_idle().push(Idle {
                client,
                since: Instant::now(),
            });
        }
    }
}
