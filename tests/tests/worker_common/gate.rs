//! A broker wrapper for the worker's tests: forwards every call to the
//! broker it wraps, except calls of the operations told to fail, which fail
//! with the error asked for, before the call (nothing applied) or after it
//! (applied, reply lost). Works over either backend.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use crewq_core::{
    AckAndAdd, AckAndAddReply, AddedOnce, AutoClaimed, Broker, ConsumerInfo, DeliveredEntry, Error,
    GroupInfo, GroupStart, IdRange, NewEntry, OnceEntry, PendingEntry, PendingQuery,
    PendingSummary, ReadFrom, ReadGroup, Result, Settle, Settled, StreamEntry, StreamId,
    StreamInfo, Trim,
};

/// When a gated call fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// Before it reaches the broker: nothing applied.
    Before,
    /// After the broker applied it: the reply is lost.
    After,
}

/// How calls of one operation fail.
type Rule = (When, fn() -> Error);

/// The wrapper; see the module docs.
pub struct Gate {
    inner: Arc<dyn Broker>,
    rules: Mutex<BTreeMap<&'static str, Rule>>,
    failed: Mutex<BTreeMap<&'static str, u64>>,
}

impl Gate {
    pub fn new(inner: Arc<dyn Broker>) -> Arc<Gate> {
        Arc::new(Gate {
            inner,
            rules: Mutex::new(BTreeMap::new()),
            failed: Mutex::new(BTreeMap::new()),
        })
    }

    /// Fails every call of `op` (a `Broker` method's name) `when`, with
    /// `error()`, until [`Gate::heal`].
    pub fn fail(&self, op: &'static str, when: When, error: fn() -> Error) {
        self.rules.lock().expect("rules").insert(op, (when, error));
    }

    /// Lets every call through again.
    pub fn heal(&self) {
        self.rules.lock().expect("rules").clear();
    }

    /// How many calls of `op` were failed.
    pub fn failed(&self, op: &'static str) -> u64 {
        self.failed
            .lock()
            .expect("failed")
            .get(op)
            .copied()
            .unwrap_or(0)
    }

    async fn gate<T>(&self, op: &'static str, call: impl Future<Output = Result<T>>) -> Result<T> {
        let rule = self.rules.lock().expect("rules").get(op).copied();
        let Some((when, error)) = rule else {
            return call.await;
        };
        *self.failed.lock().expect("failed").entry(op).or_default() += 1;
        if when == When::After {
            let _ = call.await;
        }
        Err(error())
    }
}

/// A transient error: the connection dropped.
pub fn dropped() -> Error {
    Error::Connection {
        message: "connection reset (injected)".into(),
        source: None,
    }
}

#[async_trait]
impl Broker for Gate {
    async fn xadd(&self, entry: NewEntry) -> Result<StreamId> {
        self.gate("xadd", self.inner.xadd(entry)).await
    }

    async fn xadd_many(&self, entries: Vec<NewEntry>) -> Result<Vec<Result<StreamId>>> {
        self.gate("xadd_many", self.inner.xadd_many(entries)).await
    }

    async fn xadd_once(&self, entries: Vec<OnceEntry>) -> Result<Vec<Result<AddedOnce>>> {
        self.gate("xadd_once", self.inner.xadd_once(entries)).await
    }

    async fn xlen(&self, stream: &str) -> Result<u64> {
        self.gate("xlen", self.inner.xlen(stream)).await
    }

    async fn xrange(
        &self,
        stream: &str,
        range: IdRange,
        count: Option<usize>,
    ) -> Result<Vec<StreamEntry>> {
        self.gate("xrange", self.inner.xrange(stream, range, count))
            .await
    }

    async fn xdel(&self, stream: &str, ids: &[StreamId]) -> Result<u64> {
        self.gate("xdel", self.inner.xdel(stream, ids)).await
    }

    async fn xtrim(&self, stream: &str, trim: Trim) -> Result<u64> {
        self.gate("xtrim", self.inner.xtrim(stream, trim)).await
    }

    async fn group_create(
        &self,
        stream: &str,
        group: &str,
        start: GroupStart,
        mkstream: bool,
    ) -> Result<()> {
        let call = self.inner.group_create(stream, group, start, mkstream);
        self.gate("group_create", call).await
    }

    async fn group_destroy(&self, stream: &str, group: &str) -> Result<bool> {
        self.gate("group_destroy", self.inner.group_destroy(stream, group))
            .await
    }

    async fn consumer_delete(&self, stream: &str, group: &str, consumer: &str) -> Result<u64> {
        let call = self.inner.consumer_delete(stream, group, consumer);
        self.gate("consumer_delete", call).await
    }

    /// Reads of a consumer's own history are gated as `read_history`, apart
    /// from reads of new entries (`read_group`).
    async fn read_group(&self, read: &ReadGroup) -> Result<Vec<DeliveredEntry>> {
        let op = match read.from {
            ReadFrom::PendingAfter(id) if id != StreamId::MAX => "read_history",
            _ => "read_group",
        };
        self.gate(op, self.inner.read_group(read)).await
    }

    async fn ack(&self, stream: &str, group: &str, ids: &[StreamId]) -> Result<u64> {
        self.gate("ack", self.inner.ack(stream, group, ids)).await
    }

    async fn pending_summary(&self, stream: &str, group: &str) -> Result<PendingSummary> {
        let call = self.inner.pending_summary(stream, group);
        self.gate("pending_summary", call).await
    }

    async fn pending(
        &self,
        stream: &str,
        group: &str,
        query: &PendingQuery,
    ) -> Result<Vec<PendingEntry>> {
        self.gate("pending", self.inner.pending(stream, group, query))
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
        let call = self.inner.claim(stream, group, consumer, min_idle, ids);
        self.gate("claim", call).await
    }

    async fn claim_ids(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        ids: &[StreamId],
    ) -> Result<Vec<StreamId>> {
        let call = self.inner.claim_ids(stream, group, consumer, min_idle, ids);
        self.gate("claim_ids", call).await
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
        let call = self
            .inner
            .autoclaim(stream, group, consumer, min_idle, start, count);
        self.gate("autoclaim", call).await
    }

    async fn info_stream(&self, stream: &str) -> Result<StreamInfo> {
        self.gate("info_stream", self.inner.info_stream(stream))
            .await
    }

    async fn info_groups(&self, stream: &str) -> Result<Vec<GroupInfo>> {
        self.gate("info_groups", self.inner.info_groups(stream))
            .await
    }

    async fn info_consumers(&self, stream: &str, group: &str) -> Result<Vec<ConsumerInfo>> {
        let call = self.inner.info_consumers(stream, group);
        self.gate("info_consumers", call).await
    }

    async fn ack_and_add(&self, step: AckAndAdd) -> Result<AckAndAddReply> {
        self.gate("ack_and_add", self.inner.ack_and_add(step)).await
    }

    async fn settle(&self, settle: Settle) -> Result<Vec<Settled>> {
        self.gate("settle", self.inner.settle(settle)).await
    }

    async fn renew(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[StreamId],
    ) -> Result<Vec<StreamId>> {
        let call = self.inner.renew(stream, group, consumer, ids);
        self.gate("renew", call).await
    }
}
