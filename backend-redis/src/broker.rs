//! `RedisBroker`: the `Broker` contract on a Redis server.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use crewq_core::{
    AckAndAdd, AckAndAddReply, AddedOnce, AutoClaim, AutoClaimed, AutoClaimedRecorded, Broker,
    ConsumerInfo, ConsumerPruned, DelayOnce, DelayedOnce, DeletedRecord, DeliveredEntry, Error,
    GroupInfo, GroupStart, IdRange, LanesRead, NewEntry, OnceEntry, PendingEntry, PendingQuery,
    PendingSummary, Promoted, RateAcquire, RateGrant, RateKeys, RateState, ReadFrom, ReadGroup,
    ReadLanes, Result, Settle, Settled, StreamEntry, StreamId, StreamInfo, Trim,
    validate_new_entry,
};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, Value};

use crate::batch::entry_op;
use crate::blocking::{BlockingError, BlockingPool};
use crate::config::RedisConfig;
use crate::error::Op;
use crate::shared::Shared;
use crate::{cluster, commands, parse};

/// A [`Broker`] on a Redis server (7.0 or later), or on a Redis Cluster
/// ([`RedisConfig::cluster`]: what follows is the single-node connection
/// handling; on a cluster redis-rs's cluster client keeps a connection per
/// node and follows the topology).
///
/// Commands share one multiplexed connection, re-opened in the background
/// when it drops (the command that saw the drop fails with a transient
/// [`Error::Connection`]; later ones wait for the new connection), and
/// replaced by a fresh one after a response time-out (the link may be
/// half-open) or a `READONLY` reply (a failover demoted the server). Every
/// connection has TCP keepalive ([`RedisConfig::tcp_keepalive`]). Blocking
/// reads (`ReadGroup::block` on new entries) each get a dedicated connection
/// instead, so they never stall other commands. Appends of
/// [`Broker::xadd_many`] are pipelined in one round trip, and
/// [`Broker::ack_and_add`] runs in `MULTI`/`EXEC`; the ownership-guarded
/// [`Broker::settle`] and [`Broker::renew`] run as Lua scripts, as does
/// the check-then-delete of [`Broker::consumer_delete_if_idle`].
///
/// Cloning is cheap: clones share the connections.
///
/// ```no_run
/// # async fn demo() -> crewq_core::Result<()> {
/// use crewq_core::{Broker, Fields, NewEntry};
/// let broker = crewq_redis::RedisBroker::connect("redis://127.0.0.1:6379/0").await?;
/// broker.xadd(NewEntry::new("agent:tasks:research", Fields::new().with("data", "{}"))).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBroker {
    inner: Arc<Inner>,
}

struct Inner {
    link: Link,
    blocking: BlockingPool,
    config: RedisConfig,
    redacted_url: String,
}

/// The connection the broker's (non-blocking) commands go out on.
pub(crate) enum Link {
    /// One server: a shared multiplexed connection, replaced when it can no
    /// longer be trusted. Boxed: far larger than the cluster's handle.
    Single(Box<Shared>),
    /// A Redis Cluster: redis-rs's cluster connection, which keeps one
    /// multiplexed connection per node and follows the topology.
    Cluster(ClusterConnection),
}

impl RedisBroker {
    /// Connects to `url` with the default [`RedisConfig`].
    ///
    /// # Errors
    ///
    /// As [`RedisConfig::connect`].
    pub async fn connect(url: &str) -> Result<RedisBroker> {
        RedisConfig::new(url).connect().await
    }

    /// A broker on connections [`crate::connect`] opened.
    pub(crate) fn from_parts(
        link: Link,
        blocking: BlockingPool,
        config: RedisConfig,
        redacted_url: String,
    ) -> RedisBroker {
        RedisBroker {
            inner: Arc::new(Inner {
                link,
                blocking,
                config,
                redacted_url,
            }),
        }
    }

    /// The settings this broker was opened with.
    pub(crate) fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// The pool of dedicated connections (blocking reads, appends that
    /// wait for replicas).
    pub(crate) fn blocking(&self) -> &BlockingPool {
        &self.inner.blocking
    }

    /// The server's URL with the password hidden.
    pub fn redacted_url(&self) -> &str {
        &self.inner.redacted_url
    }

    /// How many idle dedicated connections for blocking reads are open.
    pub fn idle_blocking_connections(&self) -> usize {
        self.inner.blocking.idle_count()
    }

    /// How many times the shared connection was replaced after a response
    /// time-out or a `READONLY` reply (for tests and diagnostics).
    pub fn connection_replacements(&self) -> u64 {
        match &self.inner.link {
            Link::Single(shared) => shared.replacements(),
            Link::Cluster(_) => 0,
        }
    }

    /// Whether this broker speaks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.link, Link::Cluster(_))
    }

    /// Deletes `keys` (`DEL`, pipelined a thousand at a time; on a cluster
    /// each key goes to its own slot's master) and returns how many
    /// existed. Not part of the [`Broker`](crewq_core::Broker) contract:
    /// for tools that own a whole key prefix, such as `crewq bench`
    /// emptying what it made.
    ///
    /// # Errors
    ///
    /// The first error of a `DEL`, or a broker error of the pipeline.
    pub async fn delete_keys(&self, keys: &[String]) -> Result<u64> {
        let mut deleted = 0;
        for chunk in keys.chunks(1000) {
            let Some(first) = chunk.first() else {
                continue;
            };
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for key in chunk {
                pipe.cmd("DEL").arg(key);
            }
            let op = Op::new("DEL", first);
            for reply in self.query_pipe(&pipe, op).await? {
                match reply {
                    Value::Int(n) => deleted += u64::try_from(n).unwrap_or(0),
                    Value::ServerError(err) => {
                        return Err(op.error(crate::error::from_server_error(err)));
                    }
                    other => return Err(op.protocol(format_args!("DEL replied {other:?}"))),
                }
            }
        }
        Ok(deleted)
    }

    /// Sends one command, unmapped (the outer `Result` is a call refused
    /// before sending: a script whose keys span cluster slots); on one
    /// server, replaces the shared connection when the error says it cannot
    /// be trusted.
    pub(crate) async fn send(&self, cmd: &Cmd, op: Op<'_>) -> Result<redis::RedisResult<Value>> {
        match &self.inner.link {
            Link::Single(shared) => {
                let mut handle = shared.get();
                let reply = cmd.query_async(&mut handle.conn).await;
                if let Err(err) = &reply {
                    shared.after_error(handle.generation, err);
                }
                Ok(reply)
            }
            Link::Cluster(conn) => cluster::send(conn, cmd, op).await,
        }
    }

    /// Sends one command.
    pub(crate) async fn query(&self, cmd: &Cmd, op: Op<'_>) -> Result<Value> {
        let reply = self.send(cmd, op).await?;
        reply.map_err(|err| self.failed(op, err))
    }

    /// Sends a pipeline (or transaction); with `ignore_errors` its error
    /// replies come back in place. On a cluster a transaction's keys must
    /// share a slot, and a pipeline is split by slot.
    pub(crate) async fn query_pipe(&self, pipe: &Pipeline, op: Op<'_>) -> Result<Vec<Value>> {
        let replies = match &self.inner.link {
            Link::Single(shared) => {
                let mut handle = shared.get();
                let replies = pipe.query_async::<Vec<Value>>(&mut handle.conn).await;
                match &replies {
                    Ok(replies) => shared.after_replies(handle.generation, replies),
                    Err(err) => shared.after_error(handle.generation, err),
                }
                replies
            }
            Link::Cluster(conn) => cluster::send_pipe(conn, pipe, op).await?,
        };
        replies.map_err(|err| self.failed(op, err))
    }

    /// Maps a failure on the shared connection, noting transport trouble.
    pub(crate) fn failed(&self, op: Op<'_>, err: redis::RedisError) -> Error {
        let err = op.error(err);
        if err.is_transient() {
            // redis-rs re-opens a dropped connection in the background.
            tracing::debug!(url = %self.inner.redacted_url, error = %err, "Redis command failed");
        }
        err
    }

    /// Sends one command and reads its reply with `read`.
    async fn fetch<T>(
        &self,
        cmd: &Cmd,
        op: Op<'_>,
        read: fn(Value) -> parse::Parsed<T>,
    ) -> Result<T> {
        let reply = self.query(cmd, op).await?;
        read(reply).map_err(|shape| op.protocol(shape))
    }

    /// Fills in the stream's top id of an [`Error::IdTooSmall`], which
    /// Redis's error reply does not carry. Best effort: `0-0` if the
    /// look-up fails.
    pub(crate) async fn with_top_id(&self, err: Error) -> Error {
        match err {
            Error::IdTooSmall { stream, id, .. } => {
                let top = match self.info_stream(&stream).await {
                    Ok(info) => info.last_generated_id,
                    Err(_) => StreamId::ZERO,
                };
                Error::IdTooSmall { stream, id, top }
            }
            other => other,
        }
    }

    /// A blocking read on a dedicated connection.
    async fn read_blocking(
        &self,
        read: &ReadGroup,
        block: Duration,
    ) -> Result<Vec<DeliveredEntry>> {
        let op = Op::group("XREADGROUP", &read.stream, &read.group);
        let cmd = commands::read_group(read, Some(block));
        // BLOCK 0 waits as long as it takes; anything else gets its BLOCK
        // time plus a margin for the round trip and a loaded server.
        let deadline =
            (!block.is_zero()).then(|| block.saturating_add(self.inner.config.block_margin));
        match self.inner.blocking.run(&cmd, deadline).await {
            Ok(reply) => parse::read_group(reply).map_err(|shape| op.protocol(shape)),
            Err(BlockingError::Redis(err)) => Err(op.error(err)),
            Err(BlockingError::Refused(err)) => Err(err),
            Err(BlockingError::Deadline(deadline)) => Err(Error::Timeout(format!(
                "XREADGROUP BLOCK on '{}': no reply within {deadline:?}",
                read.stream
            ))),
        }
    }
}

impl fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBroker")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for RedisBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redis at {}", self.inner.redacted_url)
    }
}

/// The ids to send with `XCLAIM`, which needs at least one.
///
/// For none, `0-0`: never pending, so nothing is claimed (and no consumer
/// created), but a missing group still fails with `NOGROUP`.
fn claimable(ids: &[StreamId]) -> &[StreamId] {
    const NOTHING: &[StreamId] = &[StreamId::ZERO];
    if ids.is_empty() { NOTHING } else { ids }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn xadd(&self, entry: NewEntry) -> Result<StreamId> {
        validate_new_entry(&entry)?;
        if self.waits_for_replicas() {
            // The append and its WAIT go out together, as a batch of one.
            let mut ids = self.add_pipelined(vec![entry]).await?;
            return match (ids.pop(), ids.is_empty()) {
                (Some(id), true) => id,
                _ => Err(Error::Protocol("one append got no single reply".to_owned())),
            };
        }
        match self
            .fetch(&commands::xadd(&entry), entry_op(&entry), parse::id)
            .await
        {
            Ok(id) => Ok(id),
            Err(err) => Err(self.with_top_id(err).await),
        }
    }

    async fn xadd_many(&self, entries: Vec<NewEntry>) -> Result<Vec<Result<StreamId>>> {
        self.add_pipelined(entries).await
    }

    async fn xadd_once(&self, entries: Vec<OnceEntry>) -> Result<Vec<Result<AddedOnce>>> {
        self.add_once_pipelined(entries).await
    }

    async fn xlen(&self, stream: &str) -> Result<u64> {
        self.fetch(
            &commands::xlen(stream),
            Op::new("XLEN", stream),
            parse::uint,
        )
        .await
    }

    async fn xrange(
        &self,
        stream: &str,
        range: IdRange,
        count: Option<usize>,
    ) -> Result<Vec<StreamEntry>> {
        let ends = commands::range_args(&range);
        let cmd = commands::xrange(stream, ends, count);
        self.fetch(&cmd, Op::new("XRANGE", stream), parse::entries)
            .await
    }

    async fn xdel(&self, stream: &str, ids: &[StreamId]) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.fetch(
            &commands::xdel(stream, ids),
            Op::new("XDEL", stream),
            parse::uint,
        )
        .await
    }

    async fn xtrim(&self, stream: &str, trim: Trim) -> Result<u64> {
        self.fetch(
            &commands::xtrim(stream, &trim),
            Op::new("XTRIM", stream),
            parse::uint,
        )
        .await
    }

    async fn group_create(
        &self,
        stream: &str,
        group: &str,
        start: GroupStart,
        mkstream: bool,
    ) -> Result<()> {
        let cmd = commands::group_create(stream, group, start, mkstream);
        self.query(&cmd, Op::group("XGROUP CREATE", stream, group))
            .await
            .map(drop)
    }

    async fn group_destroy(&self, stream: &str, group: &str) -> Result<bool> {
        let cmd = commands::group_destroy(stream, group);
        let destroyed = self
            .fetch(
                &cmd,
                Op::group("XGROUP DESTROY", stream, group),
                parse::uint,
            )
            .await?;
        Ok(destroyed > 0)
    }

    async fn consumer_delete(&self, stream: &str, group: &str, consumer: &str) -> Result<u64> {
        let cmd = commands::consumer_delete(stream, group, consumer);
        self.fetch(
            &cmd,
            Op::group("XGROUP DELCONSUMER", stream, group),
            parse::uint,
        )
        .await
    }

    async fn consumer_delete_if_idle(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
    ) -> Result<ConsumerPruned> {
        self.consumer_delete_if_idle_in_script(stream, group, consumer, min_idle)
            .await
    }

    async fn read_group(&self, read: &ReadGroup) -> Result<Vec<DeliveredEntry>> {
        match (read.from, read.block) {
            (ReadFrom::New, Some(block)) => self.read_blocking(read, block).await,
            _ => {
                let cmd = commands::read_group(read, None);
                let op = Op::group("XREADGROUP", &read.stream, &read.group);
                self.fetch(&cmd, op, parse::read_group).await
            }
        }
    }

    async fn read_lanes(&self, read: &ReadLanes) -> Result<LanesRead> {
        self.read_lanes_in_script(read).await
    }

    async fn ack(&self, stream: &str, group: &str, ids: &[StreamId]) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let cmd = commands::ack(stream, group, ids);
        self.fetch(&cmd, Op::group("XACK", stream, group), parse::uint)
            .await
    }

    async fn pending_summary(&self, stream: &str, group: &str) -> Result<PendingSummary> {
        let cmd = commands::pending_summary(stream, group);
        self.fetch(
            &cmd,
            Op::group("XPENDING", stream, group),
            parse::pending_summary,
        )
        .await
    }

    async fn pending(
        &self,
        stream: &str,
        group: &str,
        query: &PendingQuery,
    ) -> Result<Vec<PendingEntry>> {
        let op = Op::group("XPENDING", stream, group);
        let ends = commands::range_args(&query.range);
        self.fetch(
            &commands::pending(stream, group, query, ends),
            op,
            parse::pending,
        )
        .await
    }

    async fn claim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        ids: &[StreamId],
    ) -> Result<Vec<StreamEntry>> {
        let cmd = commands::claim(stream, group, consumer, min_idle, claimable(ids), false);
        self.fetch(&cmd, Op::group("XCLAIM", stream, group), parse::claimed)
            .await
    }

    async fn claim_ids(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        ids: &[StreamId],
    ) -> Result<Vec<StreamId>> {
        let cmd = commands::claim(stream, group, consumer, min_idle, claimable(ids), true);
        self.fetch(&cmd, Op::group("XCLAIM", stream, group), parse::ids)
            .await
    }

    async fn autoclaim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        start: StreamId,
        count: usize,
    ) -> Result<AutoClaimed> {
        let cmd = commands::autoclaim(stream, group, consumer, min_idle, start, count);
        self.fetch(
            &cmd,
            Op::group("XAUTOCLAIM", stream, group),
            parse::autoclaim,
        )
        .await
    }

    async fn autoclaim_recorded(
        &self,
        claim: &AutoClaim,
        record: &DeletedRecord,
    ) -> Result<AutoClaimedRecorded> {
        self.autoclaim_recorded_in_script(claim, record).await
    }

    async fn info_stream(&self, stream: &str) -> Result<StreamInfo> {
        let cmd = commands::info_stream(stream);
        self.fetch(&cmd, Op::new("XINFO STREAM", stream), parse::info_stream)
            .await
    }

    async fn info_groups(&self, stream: &str) -> Result<Vec<GroupInfo>> {
        let cmd = commands::info_groups(stream);
        self.fetch(&cmd, Op::new("XINFO GROUPS", stream), parse::info_groups)
            .await
    }

    async fn info_consumers(&self, stream: &str, group: &str) -> Result<Vec<ConsumerInfo>> {
        let cmd = commands::info_consumers(stream, group);
        let op = Op::group("XINFO CONSUMERS", stream, group);
        self.fetch(&cmd, op, parse::info_consumers).await
    }

    async fn ack_and_add(&self, step: AckAndAdd) -> Result<AckAndAddReply> {
        self.ack_and_add_in_multi(step).await
    }

    async fn settle(&self, settle: Settle) -> Result<Vec<Settled>> {
        self.settle_in_script(settle).await
    }

    async fn renew(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[StreamId],
    ) -> Result<Vec<StreamId>> {
        self.renew_in_script(stream, group, consumer, ids).await
    }

    async fn promote(&self, set: &str, stream: &str, count: usize) -> Result<Promoted> {
        self.promote_in_script(set, stream, count).await
    }

    async fn delay_once(&self, entries: Vec<DelayOnce>) -> Result<Vec<Result<DelayedOnce>>> {
        self.delay_once_pipelined(entries).await
    }

    async fn delayed_len(&self, set: &str) -> Result<u64> {
        self.zcard(set).await
    }

    async fn rate_acquire(&self, acquire: RateAcquire) -> Result<RateGrant> {
        self.rate_acquire_in_script(acquire).await
    }

    async fn rate_renew(
        &self,
        keys: &RateKeys,
        permits: &[String],
        lease: Duration,
    ) -> Result<Vec<String>> {
        self.rate_renew_in_script(keys, permits, lease).await
    }

    async fn rate_release(
        &self,
        keys: &RateKeys,
        finished: &[String],
        unused: &[String],
    ) -> Result<u64> {
        self.rate_release_in_script(keys, finished, unused).await
    }

    async fn rate_pause(&self, keys: &RateKeys, pause: Duration) -> Result<Duration> {
        self.rate_pause_in_script(keys, pause).await
    }

    async fn rate_state(&self, keys: &RateKeys) -> Result<RateState> {
        self.rate_state_in_script(keys).await
    }
}
