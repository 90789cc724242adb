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
    BrokerLayer, DelayOnce, DelayedOnce, DeletedRecord, DeliveredEntry, Fields, LanesRead,
    NewEntry, OnceEntry, Promoted, RateAcquire, RateGrant, RateKeys, ReadGroup, ReadLanes, Result,
    Settle, Settled, StreamEntry, StreamId, Trim,
};

use crewq_core::worker::{ATTEMPTS_FIELD, SLOWED_FIELD};

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
    /// The task of every scheduled dispatch the broker applied (a first
    /// attempt added to a delayed set), in order: what a rollback forgets
    /// of them.
    schedules: Arc<Mutex<Vec<u32>>>,
}

impl<B: Broker> RecordingBroker<B> {
    pub fn new(inner: B, recorder: Recorder) -> Self {
        RecordingBroker {
            inner,
            recorder,
            journal: Journal::default(),
            schedules: Arc::default(),
        }
    }

    /// How many scheduled dispatches the broker applied so far.
    pub fn schedules_len(&self) -> usize {
        self.schedules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The tasks of the scheduled dispatches from the `from`th on.
    pub fn schedules_since(&self, from: usize) -> Vec<u32> {
        let schedules = self
            .schedules
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        schedules.get(from..).unwrap_or_default().to_vec()
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

    async fn read_lanes(&self, read: &ReadLanes) -> Result<LanesRead> {
        let read_all = self.inner.read_lanes(read).await?;
        let stream_of = |lane: usize| read.lanes.get(lane).map(|l| l.stream.clone());
        if !read_all.entries.is_empty() {
            // What the priority checker replays the read against: no await
            // since the broker applied it, so on the memory backend this
            // comes in the order the broker applied things.
            self.recorder.record(Event::LanesRead {
                consumer: read.consumer.clone(),
                now_ms: read_all.now_ms,
                lanes: (0..read.lanes.len())
                    .filter(|i| !read_all.no_group.contains(i))
                    .filter_map(stream_of)
                    .collect(),
                taken: read_all
                    .entries
                    .iter()
                    .filter_map(|(lane, entry)| stream_of(*lane).map(|s| (s, entry.id)))
                    .collect(),
            });
        }
        for &lane in &read_all.no_group {
            if let Some(stream) = stream_of(lane) {
                self.no_group(&stream, &read.consumer, "read_lanes");
            }
        }
        for (lane, entry) in &read_all.entries {
            if let Some(stream) = stream_of(*lane) {
                self.delivered(&stream, &read.consumer, std::iter::once(entry.id));
            }
        }
        Ok(read_all)
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

    /// Grants are recorded as applied, with the broker's time of each.
    async fn rate_acquire(&self, acquire: RateAcquire) -> Result<RateGrant> {
        let (starts, permits, lease) = (
            acquire.keys.starts.clone(),
            acquire.permits.clone(),
            acquire.lease,
        );
        let sent_us = self.recorder.now_us();
        let grant = self.inner.rate_acquire(acquire).await?;
        if grant.granted > 0 {
            self.recorder.record(Event::RateGranted {
                starts,
                broker_ms: grant.at_ms,
                lease_ms: u64::try_from(lease.as_millis()).unwrap_or(u64::MAX),
                permits: permits.into_iter().take(grant.granted).collect(),
                sent_us,
                replied_us: self.recorder.now_us(),
            });
        }
        Ok(grant)
    }

    async fn rate_release(
        &self,
        keys: &RateKeys,
        finished: &[String],
        unused: &[String],
    ) -> Result<u64> {
        let dropped = self.inner.rate_release(keys, finished, unused).await?;
        if !finished.is_empty() || !unused.is_empty() {
            self.recorder.record(Event::RateReleased {
                starts: keys.starts.clone(),
                finished: finished.to_vec(),
                unused: unused.to_vec(),
            });
        }
        Ok(dropped)
    }

    /// A pause is recorded as applied, with when it was sent: the broker
    /// applied it in between.
    async fn rate_pause(&self, keys: &RateKeys, pause: Duration) -> Result<Duration> {
        let sent_us = self.recorder.now_us();
        let left = self.inner.rate_pause(keys, pause).await?;
        self.recorder.record(Event::RatePaused {
            starts: keys.starts.clone(),
            sent_us,
            replied_us: self.recorder.now_us(),
            pause_ms: crate::scenario::millis_of(pause),
            left_ms: crate::scenario::millis_of(left),
        });
        Ok(left)
    }

    /// Each promoted entry is an append to the task stream, like any other;
    /// a retry's or a scheduled first attempt's is also a promotion, for
    /// "not before due".
    async fn promote(&self, set: &str, stream: &str, count: usize) -> Result<Promoted> {
        let promoted = self.inner.promote(set, stream, count).await?;
        for entry in &promoted.entries {
            self.appended(stream, entry.id, entry.fields.clone());
            if let Some((task, attempts)) = attempt_of(&entry.fields) {
                self.recorder.record(Event::Promoted {
                    task,
                    attempts,
                    id: entry.id,
                });
            }
        }
        Ok(promoted)
    }

    /// A scheduled dispatch the broker applied is a first attempt put in
    /// a delayed set, due its delay after now (the broker's clock is the
    /// run's virtual clock).
    async fn delay_once(&self, entries: Vec<DelayOnce>) -> Result<Vec<Result<DelayedOnce>>> {
        let firsts: Vec<Option<(u32, u64)>> = entries
            .iter()
            .map(|e| {
                let (task, attempts) = attempt_of(&e.delay.fields)?;
                (attempts == 0).then(|| (task, e.delay.after_ms()))
            })
            .collect();
        let replies = self.inner.delay_once(entries).await?;
        let now = self.recorder.now_ms();
        for (first, reply) in firsts.into_iter().zip(&replies) {
            if let (Some((task, after_ms)), Ok(DelayedOnce::Scheduled)) = (first, reply) {
                self.schedules
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(task);
                self.recorder.record(Event::Scheduled {
                    task,
                    attempts: 0,
                    slowed: 0,
                    due_ms: now.saturating_add(after_ms),
                });
            }
        }
        Ok(replies)
    }

    async fn settle(&self, settle: Settle) -> Result<Vec<Settled>> {
        let items: Vec<StreamId> = settle.items.iter().map(|item| item.id).collect();
        // Per item: its retries scheduled (task, attempts, delay in ms).
        let delays: Vec<Vec<(u32, u32, u64, u32)>> = settle
            .items
            .iter()
            .map(|item| {
                item.delays
                    .iter()
                    .filter_map(|d| {
                        let slowed = d
                            .fields
                            .get_str(SLOWED_FIELD)
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(0);
                        retry_of(&d.fields).map(|(t, a)| (t, a, d.after_ms(), slowed))
                    })
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
                    for (task, attempts, after_ms, slowed) in delays {
                        self.recorder.record(Event::Scheduled {
                            task,
                            attempts,
                            due_ms: now.saturating_add(after_ms),
                            slowed,
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
    fields.get_str(ATTEMPTS_FIELD)?;
    attempt_of(fields)
}

/// The task and failed-run count of an entry's fields, 0 for a first
/// attempt (no attempts count): `None` for an entry not of a simulated
/// task, or with an attempts count that is not one.
fn attempt_of(fields: &Fields) -> Option<(u32, u32)> {
    let attempts = match fields.get_str(ATTEMPTS_FIELD) {
        Some(count) => count.parse().ok()?,
        None => 0,
    };
    let task: crewq_core::Task<serde_json::Value> = crewq_core::task_from_fields(fields).ok()?;
    Some((crate::crew::task_index(&task.task_id)?, attempts))
}
