//! [`RecordingBroker`]: records what a broker applied into the history.
//!
//! It sits between the fault injection and the real broker, so it sees
//! every call that reached the broker and its true reply, including those
//! whose reply a fault then dropped: an entry delivered by a read whose
//! reply was lost is still a delivery, as Redis's delivery counter says.
//! Queries pass through unrecorded.

use std::time::Duration;

use async_trait::async_trait;
use crewq_core::{
    AckAndAdd, AckAndAddReply, AddedOnce, AutoClaimed, Broker, ConsumerInfo, DeliveredEntry,
    GroupInfo, GroupStart, IdRange, NewEntry, OnceEntry, PendingEntry, PendingQuery,
    PendingSummary, ReadGroup, Result, Settle, Settled, StreamEntry, StreamId, StreamInfo, Trim,
};

use crate::history::{Event, Recorder};

/// A broker that records the writes `B` applied.
#[derive(Clone, Debug)]
pub(crate) struct RecordingBroker<B> {
    inner: B,
    recorder: Recorder,
}

impl<B: Broker> RecordingBroker<B> {
    pub fn new(inner: B, recorder: Recorder) -> Self {
        RecordingBroker { inner, recorder }
    }

    fn appended(&self, stream: &str, id: StreamId) {
        self.recorder.record(Event::Appended {
            stream: stream.to_owned(),
            id,
        });
    }

    fn delivered(&self, stream: &str, consumer: &str, ids: impl Iterator<Item = StreamId>) {
        for id in ids {
            self.recorder.record(Event::Delivered {
                stream: stream.to_owned(),
                consumer: consumer.to_owned(),
                id,
            });
        }
    }

    fn acked(&self, stream: &str, ids: &[StreamId], count: u64) {
        self.recorder.record(Event::Acked {
            stream: stream.to_owned(),
            ids: ids.to_vec(),
            count,
        });
    }
}

#[async_trait]
impl<B: Broker> Broker for RecordingBroker<B> {
    async fn xadd(&self, entry: NewEntry) -> Result<StreamId> {
        let stream = entry.stream.clone();
        let id = self.inner.xadd(entry).await?;
        self.appended(&stream, id);
        Ok(id)
    }

    async fn xadd_many(&self, entries: Vec<NewEntry>) -> Result<Vec<Result<StreamId>>> {
        let streams: Vec<String> = entries.iter().map(|e| e.stream.clone()).collect();
        let replies = self.inner.xadd_many(entries).await?;
        for (stream, reply) in streams.iter().zip(&replies) {
            if let Ok(id) = reply {
                self.appended(stream, *id);
            }
        }
        Ok(replies)
    }

    async fn xadd_once(&self, entries: Vec<OnceEntry>) -> Result<Vec<Result<AddedOnce>>> {
        let streams: Vec<String> = entries.iter().map(|e| e.entry.stream.clone()).collect();
        let replies = self.inner.xadd_once(entries).await?;
        for (stream, reply) in streams.iter().zip(&replies) {
            if let Ok(AddedOnce::Added(id)) = reply {
                self.appended(stream, *id);
            }
        }
        Ok(replies)
    }

    async fn xlen(&self, stream: &str) -> Result<u64> {
        self.inner.xlen(stream).await
    }

    async fn xrange(
        &self,
        stream: &str,
        range: IdRange,
        count: Option<usize>,
    ) -> Result<Vec<StreamEntry>> {
        self.inner.xrange(stream, range, count).await
    }

    async fn xdel(&self, stream: &str, ids: &[StreamId]) -> Result<u64> {
        self.inner.xdel(stream, ids).await
    }

    async fn xtrim(&self, stream: &str, trim: Trim) -> Result<u64> {
        self.inner.xtrim(stream, trim).await
    }

    async fn group_create(
        &self,
        stream: &str,
        group: &str,
        start: GroupStart,
        mkstream: bool,
    ) -> Result<()> {
        self.inner
            .group_create(stream, group, start, mkstream)
            .await
    }

    async fn group_destroy(&self, stream: &str, group: &str) -> Result<bool> {
        self.inner.group_destroy(stream, group).await
    }

    async fn consumer_delete(&self, stream: &str, group: &str, consumer: &str) -> Result<u64> {
        self.inner.consumer_delete(stream, group, consumer).await
    }

    async fn read_group(&self, read: &ReadGroup) -> Result<Vec<DeliveredEntry>> {
        let delivered = self.inner.read_group(read).await?;
        self.delivered(&read.stream, &read.consumer, delivered.iter().map(|e| e.id));
        Ok(delivered)
    }

    async fn ack(&self, stream: &str, group: &str, ids: &[StreamId]) -> Result<u64> {
        let count = self.inner.ack(stream, group, ids).await?;
        self.acked(stream, ids, count);
        Ok(count)
    }

    async fn pending_summary(&self, stream: &str, group: &str) -> Result<PendingSummary> {
        self.inner.pending_summary(stream, group).await
    }

    async fn pending(
        &self,
        stream: &str,
        group: &str,
        query: &PendingQuery,
    ) -> Result<Vec<PendingEntry>> {
        self.inner.pending(stream, group, query).await
    }

    async fn claim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        ids: &[StreamId],
    ) -> Result<Vec<StreamEntry>> {
        let claimed = self
            .inner
            .claim(stream, group, consumer, min_idle, ids)
            .await?;
        self.delivered(stream, consumer, claimed.iter().map(|e| e.id));
        Ok(claimed)
    }

    async fn claim_ids(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        ids: &[StreamId],
    ) -> Result<Vec<StreamId>> {
        // JUSTID counts no delivery.
        self.inner
            .claim_ids(stream, group, consumer, min_idle, ids)
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
        let claimed = self
            .inner
            .autoclaim(stream, group, consumer, min_idle, start, count)
            .await?;
        self.delivered(stream, consumer, claimed.claimed.iter().map(|e| e.id));
        Ok(claimed)
    }

    async fn info_stream(&self, stream: &str) -> Result<StreamInfo> {
        self.inner.info_stream(stream).await
    }

    async fn info_groups(&self, stream: &str) -> Result<Vec<GroupInfo>> {
        self.inner.info_groups(stream).await
    }

    async fn info_consumers(&self, stream: &str, group: &str) -> Result<Vec<ConsumerInfo>> {
        self.inner.info_consumers(stream, group).await
    }

    async fn ack_and_add(&self, step: AckAndAdd) -> Result<AckAndAddReply> {
        let streams: Vec<String> = step.adds.iter().map(|e| e.stream.clone()).collect();
        let acks: Vec<(String, Vec<StreamId>)> = step
            .acks
            .iter()
            .map(|a| (a.stream.clone(), a.ids.clone()))
            .collect();
        let reply = self.inner.ack_and_add(step).await?;
        for (stream, id) in streams.iter().zip(&reply.ids) {
            self.appended(stream, *id);
        }
        for ((stream, ids), count) in acks.iter().zip(&reply.acked) {
            self.acked(stream, ids, *count);
        }
        Ok(reply)
    }

    async fn settle(&self, settle: Settle) -> Result<Vec<Settled>> {
        let items: Vec<StreamId> = settle.items.iter().map(|item| item.id).collect();
        let (stream, consumer) = (settle.stream.clone(), settle.consumer.clone());
        let outcomes = self.inner.settle(settle).await?;
        for (id, outcome) in items.into_iter().zip(&outcomes) {
            let event = match outcome {
                Settled::Done(appended) => Event::Settled {
                    stream: stream.clone(),
                    consumer: consumer.clone(),
                    id,
                    appended: appended.clone(),
                },
                Settled::NotOwned => Event::Refused {
                    stream: stream.clone(),
                    consumer: consumer.clone(),
                    id,
                },
                // Nothing acknowledged: the entry stays pending.
                Settled::Failed(_) => continue,
            };
            self.recorder.record(event);
        }
        Ok(outcomes)
    }

    async fn renew(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[StreamId],
    ) -> Result<Vec<StreamId>> {
        self.inner.renew(stream, group, consumer, ids).await
    }
}
