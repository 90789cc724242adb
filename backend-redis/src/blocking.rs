//! Dedicated connections for `XREADGROUP ... BLOCK`.
//!
//! A blocked command holds its connection on the server until it returns:
//! on the shared multiplexed connection it would stall every command queued
//! behind it, and redis-rs's response time-out would cut it short. So each
//! blocking read borrows a connection of its own from this pool, with no
//! response time-out of redis-rs's; the read sets its own deadline
//! (`BLOCK` + margin, none for `BLOCK 0`).
//!
//! A connection goes back to the pool only after its reply arrived. When a
//! read is cancelled (its future dropped) or times out, the server is still
//! blocked on that connection and would hold the next command behind it; the
//! connection is then closed instead, which also unblocks it on the server.
//!
//! On a Redis Cluster each pooled connection is a cluster connection of its
//! own (one socket per master), so a blocked read holds no other command's
//! socket on any node, and redirects are followed as for other commands.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Client, Cmd, RedisError, Value};

use crate::error::breaks_connection;

/// How the pool opens a connection.
pub(crate) enum Opener {
    /// A connection to one server.
    Single {
        client: Client,
        config: AsyncConnectionConfig,
    },
    /// A cluster connection (one connection per master, following the
    /// topology) with no response time-out of its own.
    Cluster(ClusterClient),
}

/// One pooled connection: a clone shares it.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn query(&mut self, cmd: &Cmd) -> Result<Value, RedisError> {
        match self {
            Conn::Single(conn) => cmd.query_async(conn).await,
            Conn::Cluster(conn) => cmd.query_async(conn).await,
        }
    }
}

/// A pool of idle connections for blocking reads.
#[derive(Clone)]
pub(crate) struct BlockingPool {
    inner: Arc<Inner>,
}

struct Inner {
    opener: Opener,
    idle: Mutex<Vec<Conn>>,
    max_idle: usize,
    redacted_url: String,
}

/// Why a blocking read failed.
pub(crate) enum BlockingError {
    /// Redis (or the transport) failed.
    Redis(RedisError),
    /// No reply by the deadline.
    Deadline(Duration),
    /// Refused or mapped by crewq before or after sending (a script whose
    /// keys span cluster slots, a redirect that outlasted the retries); the
    /// connection is still in step.
    Refused(crewq_core::Error),
}

impl BlockingPool {
    /// A pool opening connections to `client`'s server; keeps at most
    /// `max_idle` of them open between reads.
    pub fn new(
        client: Client,
        connection_timeout: Duration,
        max_idle: usize,
        redacted_url: String,
    ) -> Self {
        // No response time-out: the caller's deadline covers the BLOCK time.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connection_timeout))
            .set_response_timeout(None);
        Self::with_opener(Opener::Single { client, config }, max_idle, redacted_url)
    }

    /// A pool opening connections with `opener`.
    pub fn with_opener(opener: Opener, max_idle: usize, redacted_url: String) -> Self {
        BlockingPool {
            inner: Arc::new(Inner {
                opener,
                idle: Mutex::new(Vec::new()),
                max_idle,
                redacted_url,
            }),
        }
    }

    /// How many connections wait in the pool (for tests and diagnostics).
    pub fn idle_count(&self) -> usize {
        self.lock_idle().len()
    }

    /// Runs one blocking command on a connection of its own, giving up
    /// after `deadline` (`None`: wait as long as the server does).
    pub async fn run(&self, cmd: &Cmd, deadline: Option<Duration>) -> Result<Value, BlockingError> {
        self.run_on(deadline, |mut conn| async move {
            conn.query(cmd).await.map_err(BlockingError::Redis)
        })
        .await
    }

    /// Runs `work` on a connection of its own (a clone of the leased one),
    /// giving up after `deadline` (`None`: wait as long as the server
    /// does). The connection goes back to the pool only when `work`
    /// finished and its error, if any, leaves the connection in step.
    pub async fn run_on<T, F, Fut>(
        &self,
        deadline: Option<Duration>,
        work: F,
    ) -> Result<T, BlockingError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = Result<T, BlockingError>>,
    {
        let (conn, reused) = self.checkout().await.map_err(BlockingError::Redis)?;
        let mut lease = Lease {
            pool: self,
            conn,
            healthy: false,
        };
        let running = work(lease.conn.clone());
        let reply = match deadline {
            Some(deadline) => match tokio::time::timeout(deadline, running).await {
                Ok(reply) => reply,
                Err(_) => {
                    if reused {
                        // No reply past the BLOCK time: the link may be
                        // half-open, and its pooled siblings with it.
                        self.close_idle("a pooled blocking-read connection gave no reply in time");
                    }
                    return Err(BlockingError::Deadline(deadline));
                }
            },
            None => running.await,
        };
        // An error reply (NOGROUP ...) leaves the connection in step; a
        // transport failure does not. `READONLY` says a failover demoted
        // the server: its connections go, so that later reads reconnect
        // (behind a failover's DNS name or proxy, to the new primary).
        let demoted =
            matches!(&reply, Err(BlockingError::Redis(err)) if err.code() == Some("READONLY"));
        lease.healthy = match &reply {
            Ok(_) | Err(BlockingError::Refused(_)) => true,
            Err(BlockingError::Redis(err)) => !breaks_connection(err) && !demoted,
            Err(BlockingError::Deadline(_)) => false,
        };
        if demoted {
            self.close_idle("the server is a replica now (READONLY)");
        }
        if reused && !lease.healthy {
            // A pooled connection found dead was most likely closed with
            // its siblings (server restart, CLIENT KILL, idle time-out):
            // drop them all rather than fail one read per stale connection.
            self.close_idle("a pooled blocking-read connection failed");
        }
        reply
    }

    /// Closes every idle connection, after `why`.
    fn close_idle(&self, why: &str) {
        let stale = std::mem::take(&mut *self.lock_idle());
        tracing::debug!(
            url = %self.inner.redacted_url,
            closed = stale.len(),
            reason = why,
            "closing the idle blocking-read connections"
        );
    }

    /// An idle connection (`true`: reused) or a new one (`false`).
    async fn checkout(&self) -> Result<(Conn, bool), RedisError> {
        if let Some(conn) = self.lock_idle().pop() {
            return Ok((conn, true));
        }
        tracing::debug!(url = %self.inner.redacted_url, "opening a connection for blocking reads");
        let conn = match &self.inner.opener {
            Opener::Single { client, config } => Conn::Single(
                client
                    .get_multiplexed_async_connection_with_config(config)
                    .await?,
            ),
            Opener::Cluster(client) => Conn::Cluster(client.get_async_connection().await?),
        };
        Ok((conn, false))
    }

    fn give_back(&self, conn: Conn) {
        let mut idle = self.lock_idle();
        if idle.len() < self.inner.max_idle {
            idle.push(conn);
        } else {
            drop(idle);
            tracing::debug!(url = %self.inner.redacted_url, "closing a surplus blocking-read connection");
        }
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        // The list stays valid whatever panicked while it was locked.
        self.inner
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A borrowed connection: back to the pool when its reply arrived, closed
/// otherwise (cancelled, timed out, broken).
struct Lease<'a> {
    pool: &'a BlockingPool,
    conn: Conn,
    healthy: bool,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.healthy {
            // A clone shares the connection; this one goes with the lease.
            self.pool.give_back(self.conn.clone());
        } else {
            // Dropping the only handle stops its driver task and closes the
            // socket, so the server stops blocking on it.
            tracing::debug!(
                url = %self.pool.inner.redacted_url,
                "closing a blocking-read connection whose reply is still due or broken"
            );
        }
    }
}
