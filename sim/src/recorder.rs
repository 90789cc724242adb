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
    AckAndAdd, AckAndAddReply, AddedOnce, AutoClaimed, Broker, BrokerLayer, DeliveredEntry,
    NewEntry, OnceEntry, ReadGroup, Result, Settle, Settled, StreamEntry, StreamId,
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

/// Writes are recorded; `claim_ids` (JUSTID counts no delivery), `renew`,
/// the deletions and the queries pass through.
#[async_trait]
impl<B: Broker> BrokerLayer for RecordingBroker<B> {
    type Inner = B;

    fn inner(&self) -> &B {
        &self.inner
    }

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
                // Not acknowledged: the entry stays pending, as after a
                // failed call; nothing to record (the simulated broker's
                // streams cannot fail an append).
                Settled::Failed(_) => continue,
            };
            self.recorder.record(event);
        }
        Ok(outcomes)
    }
}
