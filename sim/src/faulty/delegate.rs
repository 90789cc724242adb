//! `Broker` for [`FaultyBroker`]: every method goes through
//! [`FaultyBroker::inject`], blocking reads through the same
//! [`FaultyBroker::apply`] with their `BLOCK` time shortened by the delay.

use std::time::Duration;

use async_trait::async_trait;
use crewq_core::{
    AckAndAdd, AckAndAddReply, AddedOnce, AutoClaimed, Broker, ConsumerInfo, DeliveredEntry,
    GroupInfo, GroupStart, IdRange, NewEntry, OnceEntry, PendingEntry, PendingQuery,
    PendingSummary, ReadFrom, ReadGroup, Result, Settle, Settled, StreamEntry, StreamId,
    StreamInfo, Trim,
};

use super::{FaultyBroker, Op};

#[async_trait]
impl<B: Broker> Broker for FaultyBroker<B> {
    async fn xadd(&self, entry: NewEntry) -> Result<StreamId> {
        self.inject(Op::Xadd, self.inner.xadd(entry)).await
    }

    async fn xadd_many(&self, entries: Vec<NewEntry>) -> Result<Vec<Result<StreamId>>> {
        self.inject(Op::XaddMany, self.inner.xadd_many(entries))
            .await
    }

    async fn xadd_once(&self, entries: Vec<OnceEntry>) -> Result<Vec<Result<AddedOnce>>> {
        self.inject(Op::XaddOnce, self.inner.xadd_once(entries))
            .await
    }

    async fn xlen(&self, stream: &str) -> Result<u64> {
        self.inject(Op::Xlen, self.inner.xlen(stream)).await
    }

    async fn xrange(
        &self,
        stream: &str,
        range: IdRange,
        count: Option<usize>,
    ) -> Result<Vec<StreamEntry>> {
        self.inject(Op::Xrange, self.inner.xrange(stream, range, count))
            .await
    }

    async fn xdel(&self, stream: &str, ids: &[StreamId]) -> Result<u64> {
        self.inject(Op::Xdel, self.inner.xdel(stream, ids)).await
    }

    async fn xtrim(&self, stream: &str, trim: Trim) -> Result<u64> {
        self.inject(Op::Xtrim, self.inner.xtrim(stream, trim)).await
    }

    async fn group_create(
        &self,
        stream: &str,
        group: &str,
        start: GroupStart,
        mkstream: bool,
    ) -> Result<()> {
        let call = self.inner.group_create(stream, group, start, mkstream);
        self.inject(Op::GroupCreate, call).await
    }

    async fn group_destroy(&self, stream: &str, group: &str) -> Result<bool> {
        self.inject(Op::GroupDestroy, self.inner.group_destroy(stream, group))
            .await
    }

    async fn consumer_delete(&self, stream: &str, group: &str, consumer: &str) -> Result<u64> {
        let call = self.inner.consumer_delete(stream, group, consumer);
        self.inject(Op::ConsumerDelete, call).await
    }

    async fn read_group(&self, read: &ReadGroup) -> Result<Vec<DeliveredEntry>> {
        self.wait_while_paused().await;
        let mut plan = self.plan(Op::ReadGroup);
        match blocks_for(read) {
            // Not blocking, or blocking forever: the delay is plain latency.
            None | Some(Duration::ZERO) => self.apply(plan, self.inner.read_group(read)).await,
            Some(block) => {
                // The delay is spent out of the BLOCK time, so the read
                // never takes longer than asked; what is left of it (none:
                // a non-blocking read, since BLOCK 0 would wait forever)
                // goes to the inner broker.
                plan.delay = plan.delay.min(block);
                let left = block - plan.delay;
                let read = ReadGroup {
                    block: (!left.is_zero()).then_some(left),
                    ..read.clone()
                };
                self.apply(plan, self.inner.read_group(&read)).await
            }
        }
    }

    async fn ack(&self, stream: &str, group: &str, ids: &[StreamId]) -> Result<u64> {
        self.inject(Op::Ack, self.inner.ack(stream, group, ids))
            .await
    }

    async fn pending_summary(&self, stream: &str, group: &str) -> Result<PendingSummary> {
        let call = self.inner.pending_summary(stream, group);
        self.inject(Op::PendingSummary, call).await
    }

    async fn pending(
        &self,
        stream: &str,
        group: &str,
        query: &PendingQuery,
    ) -> Result<Vec<PendingEntry>> {
        self.inject(Op::Pending, self.inner.pending(stream, group, query))
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
        self.inject(Op::Claim, call).await
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
        self.inject(Op::ClaimIds, call).await
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
        self.inject(Op::Autoclaim, call).await
    }

    async fn info_stream(&self, stream: &str) -> Result<StreamInfo> {
        self.inject(Op::InfoStream, self.inner.info_stream(stream))
            .await
    }

    async fn info_groups(&self, stream: &str) -> Result<Vec<GroupInfo>> {
        self.inject(Op::InfoGroups, self.inner.info_groups(stream))
            .await
    }

    async fn info_consumers(&self, stream: &str, group: &str) -> Result<Vec<ConsumerInfo>> {
        let call = self.inner.info_consumers(stream, group);
        self.inject(Op::InfoConsumers, call).await
    }

    async fn ack_and_add(&self, step: AckAndAdd) -> Result<AckAndAddReply> {
        self.inject(Op::AckAndAdd, self.inner.ack_and_add(step))
            .await
    }

    async fn settle(&self, settle: Settle) -> Result<Vec<Settled>> {
        self.inject(Op::Settle, self.inner.settle(settle)).await
    }

    async fn renew(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[StreamId],
    ) -> Result<Vec<StreamId>> {
        let call = self.inner.renew(stream, group, consumer, ids);
        self.inject(Op::Renew, call).await
    }
}

/// How long `read` may block: `None` for a read that returns at once
/// (no `BLOCK`, or a history read, which ignores it), `Some(ZERO)` forever.
fn blocks_for(read: &ReadGroup) -> Option<Duration> {
    match read.from {
        // `PendingAfter(MAX)` is how Redis spells `>`, BLOCK included.
        ReadFrom::New | ReadFrom::PendingAfter(StreamId::MAX) => read.block,
        ReadFrom::PendingAfter(_) => None,
    }
}
