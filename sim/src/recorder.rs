//! [`RecordingBroker`]: records what a broker applied into the history.
//!
//! It sits between the fault injection and the real broker, so it sees
//! every call that reached the broker and its true reply, including those
//! whose reply a fault then dropped: an entry delivered by a read whose
//! reply was lost is still a delivery, as Redis's delivery counter says.
//! Queries pass through unrecorded.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use crewq_core::{
    AckAndAdd, AckAndAddReply, AddedOnce, AutoClaim, AutoClaimed, AutoClaimedRecorded, Broker,
    BrokerLayer, DeletedRecord, DeliveredEntry, Fields, NewEntry, OnceEntry, Promoted, ReadGroup,
    Result, Settle, Settled, StreamEntry, StreamId, Trim,
};

use crewq_core::worker::ATTEMPTS_FIELD;

use crate::history::{Event, Recorder};

/// Every entry the broker appended, with its fields, in order: what the
/// checker accounts from, since retention (and injected trims) remove
/// entries from the streams before the run ends.
pub(crate) type Journal = Arc<Mutex<Vec<(String, StreamId, Fields)>>>;

/// A broker that records the writes `B` applied.
#[derive(Clone, Debug)]
pub(crate) struct RecordingBroker<B> {
    inner: B,
    recorder: Recorder,
    journal: Journal,
}

impl<B: Broker> RecordingBroker<B> {
    pub fn new(inner: B, recorder: Recorder) -> Self {
        RecordingBroker {
            inner,
            recorder,
            journal: Journal::default(),
        }
    }

    /// Every append so far, in order.
    pub fn journal(&self) -> Vec<(String, StreamId, Fields)> {
        self.journal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many appends the journal holds: where a snapshot of the broker
    /// taken now would cut it.
    pub fn journal_len(&self) -> usize {
        self.journal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The appends from the `from`th on, in order.
    pub fn journal_since(&self, from: usize) -> Vec<(String, StreamId, Fields)> {
        let journal = self.journal.lock().unwrap_or_else(PoisonError::into_inner);
        journal.get(from..).unwrap_or_default().to_vec()
    }

    fn appended(&self, stream: &str, id: StreamId, fields: Fields) {
        self.journal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((stream.to_owned(), id, fields));
        self.recorder.record(Event::Appended {
            stream: stream.to_owned(),
            id,
        });
    }

    fn trimmed(&self, stream: &str, removed: u64) {
        if removed > 0 {
            self.recorder.record(Event::Trimmed {
                stream: stream.to_owned(),
                removed,
            });
        }
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

    /// A reclaim scan's report of pending entries deleted from the stream.
    fn found_deleted(&self, stream: &str, ids: &[StreamId]) {
        for &id in ids {
            self.recorder.record(Event::FoundDeleted {
                stream: stream.to_owned(),
                id,
            });
        }
    }

    /// A worker's call `op` found the group of `stream` gone.
    fn no_group(&self, stream: &str, consumer: &str, op: &'static str) {
        self.recorder.record(Event::NoGroupSeen {
            stream: stream.to_owned(),
            consumer: consumer.to_owned(),
            op,
        });
    }

    /// Passes `reply` on, recording a `NoGroupSeen` if it is `NOGROUP`.
    fn seen<T>(
        &self,
        reply: Result<T>,
        stream: &str,
        consumer: &str,
        op: &'static str,
    ) -> Result<T> {
        if let Err(crewq_core::Error::NoGroup { .. }) = &reply {
            self.no_group(stream, consumer, op);
        }
        reply
    }

    fn acked(&self, stream: &str, ids: &[StreamId], count: u64) {
        self.recorder.record(Event::Acked {
            stream: stream.to_owned(),
            ids: ids.to_vec(),
            count,
        });
    }
}

/// Writes are recorded, and calls that find a group gone; `claim_ids`
/// (JUSTID counts no delivery), the deletions and the queries pass through.
#[async_trait]
impl<B: Broker> BrokerLayer for RecordingBroker<B> {
    type Inner = B;

    fn inner(&self) -> &B {
        &self.inner
    }

    async fn xadd(&self, entry: NewEntry) -> Result<StreamId> {
        let (stream, fields) = (entry.stream.clone(), entry.fields.clone());
        let id = self.inner.xadd(entry).await?;
        self.appended(&stream, id, fields);
        Ok(id)
    }

    async fn xadd_many(&self, entries: Vec<NewEntry>) -> Result<Vec<Result<StreamId>>> {
        let adds: Vec<(String, Fields)> = entries
            .iter()
            .map(|e| (e.stream.clone(), e.fields.clone()))
            .collect();
        let replies = self.inner.xadd_many(entries).await?;
        for ((stream, fields), reply) in adds.into_iter().zip(&replies) {
            if let Ok(id) = reply {
                self.appended(&stream, *id, fields);
            }
        }
        Ok(replies)
    }

    async fn xadd_once(&self, entries: Vec<OnceEntry>) -> Result<Vec<Result<AddedOnce>>> {
        let adds: Vec<(String, Fields)> = entries
            .iter()
            .map(|e| (e.entry.stream.clone(), e.entry.fields.clone()))
            .collect();
        let replies = self.inner.xadd_once(entries).await?;
        for ((stream, fields), reply) in adds.into_iter().zip(&replies) {
            if let Ok(AddedOnce::Added(id)) = reply {
                self.appended(&stream, *id, fields);
            }
        }
        Ok(replies)
    }

    async fn xtrim(&self, stream: &str, trim: Trim) -> Result<u64> {
        let removed = self.inner.xtrim(stream, trim).await?;
        self.trimmed(stream, removed);
        Ok(removed)
    }

    async fn xdel(&self, stream: &str, ids: &[StreamId]) -> Result<u64> {
        let removed = self.inner.xdel(stream, ids).await?;
        self.trimmed(stream, removed);
        Ok(removed)
    }

    async fn read_group(&self, read: &ReadGroup) -> Result<Vec<DeliveredEntry>> {
        let reply = self.inner.read_group(read).await;
        let delivered = self.seen(reply, &read.stream, &read.consumer, "read_group")?;
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
        let reply = self
            .inner
            .autoclaim(stream, group, consumer, min_idle, start, count)
            .await;
        let claimed = self.seen(reply, stream, consumer, "autoclaim")?;
        self.delivered(stream, consumer, claimed.claimed.iter().map(|e| e.id));
        self.found_deleted(stream, &claimed.deleted);
        Ok(claimed)
    }

    async fn autoclaim_recorded(
        &self,
        claim: &AutoClaim,
        record: &DeletedRecord,
    ) -> Result<AutoClaimedRecorded> {
        let reply = self.inner.autoclaim_recorded(claim, record).await;
        let reply = self.seen(reply, &claim.stream, &claim.consumer, "autoclaim_recorded")?;
        let ids = reply.claim.claimed.iter().map(|e| e.id);
        self.delivered(&claim.stream, &claim.consumer, ids);
        self.found_deleted(&claim.stream, &reply.claim.deleted);
        for (&deleted, written) in reply.claim.deleted.iter().zip(&reply.records) {
            if let Ok(AddedOnce::Added(id)) = written {
                let once = record.for_id(deleted);
                self.appended(&once.entry.stream, *id, once.entry.fields);
            }
        }
        Ok(reply)
    }

    async fn renew(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[StreamId],
    ) -> Result<Vec<StreamId>> {
        let reply = self.inner.renew(stream, group, consumer, ids).await;
        let renewed = self.seen(reply, stream, consumer, "renew")?;
        if !renewed.is_empty() {
            self.recorder.record(Event::Renewed {
                stream: stream.to_owned(),
                consumer: consumer.to_owned(),
                ids: renewed.clone(),
            });
        }
        Ok(renewed)
    }

    async fn ack_and_add(&self, step: AckAndAdd) -> Result<AckAndAddReply> {
        let adds: Vec<(String, Fields)> = step
            .adds
            .iter()
            .map(|e| (e.stream.clone(), e.fields.clone()))
            .collect();
        let acks: Vec<(String, Vec<StreamId>)> = step
            .acks
            .iter()
            .map(|a| (a.stream.clone(), a.ids.clone()))
            .collect();
        let reply = self.inner.ack_and_add(step).await?;
        for ((stream, fields), id) in adds.into_iter().zip(&reply.ids) {
            self.appended(&stream, *id, fields);
        }
        for ((stream, ids), count) in acks.iter().zip(&reply.acked) {
            self.acked(stream, ids, *count);
        }
        Ok(reply)
    }

    /// Each promoted entry is an append to the task stream, like any other;
    /// a retry's is also a promotion, for "not before due".
    async fn promote(&self, set: &str, stream: &str, count: usize) -> Result<Promoted> {
        let promoted = self.inner.promote(set, stream, count).await?;
        for entry in &promoted.entries {
            self.appended(stream, entry.id, entry.fields.clone());
            if let Some((task, attempts)) = retry_of(&entry.fields) {
                self.recorder.record(Event::Promoted {
                    task,
                    attempts,
                    id: entry.id,
                });
            }
        }
        Ok(promoted)
    }

    async fn settle(&self, settle: Settle) -> Result<Vec<Settled>> {
        let items: Vec<StreamId> = settle.items.iter().map(|item| item.id).collect();
        // Per item: its retries scheduled (task, attempts, delay in ms).
        let delays: Vec<Vec<(u32, u32, u64)>> = settle
            .items
            .iter()
            .map(|item| {
                item.delays
                    .iter()
                    .filter_map(|d| retry_of(&d.fields).map(|(t, a)| (t, a, d.after_ms())))
                    .collect()
            })
            .collect();
        let appends: Vec<Vec<(String, Fields)>> = settle
            .items
            .iter()
            .map(|item| {
                item.appends
                    .iter()
                    .map(|e| (e.stream.clone(), e.fields.clone()))
                    .collect()
            })
            .collect();
        let (stream, consumer) = (settle.stream.clone(), settle.consumer.clone());
        let outcomes = match self.inner.settle(settle).await {
            Ok(outcomes) => outcomes,
            Err(err) => {
                if matches!(err, crewq_core::Error::NoGroup { .. }) {
                    // The group is gone, and its pending list with it: no
                    // item is this consumer's any more (refused, as when a
                    // peer owns it; the re-created group delivers it again).
                    self.no_group(&stream, &consumer, "settle");
                    for id in items {
                        self.recorder.record(Event::Refused {
                            stream: stream.clone(),
                            consumer: consumer.clone(),
                            id,
                        });
                    }
                }
                return Err(err);
            }
        };
        let items = items.into_iter().zip(appends).zip(delays);
        for (((id, adds), delays), outcome) in items.zip(&outcomes) {
            let event = match outcome {
                Settled::Done(appended) => {
                    let mut requeued = Vec::new();
                    let mut journal = self.journal.lock().unwrap_or_else(PoisonError::into_inner);
                    for ((to, fields), new) in adds.into_iter().zip(appended) {
                        if to == stream
                            && let Some((task, _)) = retry_of(&fields)
                        {
                            requeued.push(Event::RequeuedAtOnce { task, id: *new });
                        }
                        journal.push((to, *new, fields));
                    }
                    drop(journal);
                    self.recorder.record(Event::Settled {
                        stream: stream.clone(),
                        consumer: consumer.clone(),
                        id,
                        appended: appended.clone(),
                    });
                    // The broker's clock is the run's virtual clock: the
                    // due time is now plus the delay.
                    let now = self.recorder.now_ms();
                    for (task, attempts, after_ms) in delays {
                        self.recorder.record(Event::Scheduled {
                            task,
                            attempts,
                            due_ms: now.saturating_add(after_ms),
                        });
                    }
                    for event in requeued {
                        self.recorder.record(event);
                    }
                    continue;
                }
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

/// The task and failed-run count of a retry entry's fields: `None` for an
/// entry without an attempts count (a first attempt) or not of a
/// simulated task.
fn retry_of(fields: &Fields) -> Option<(u32, u32)> {
    let attempts = fields.get_str(ATTEMPTS_FIELD)?.parse().ok()?;
    let task: crewq_core::Task<serde_json::Value> = crewq_core::task_from_fields(fields).ok()?;
    Some((crate::crew::task_index(&task.task_id)?, attempts))
}
