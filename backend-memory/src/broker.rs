//! `Broker` for `MemoryBroker`: each call takes the lock once and applies whole.

use std::ops::Bound;
use std::pin::pin;
use std::time::Duration;

use async_trait::async_trait;
use crewq_core::{
    AckAndAdd, AckAndAddReply, AddedOnce, AutoClaim, AutoClaimed, AutoClaimedRecorded, Broker,
    ConsumerInfo, ConsumerPruned, DelayOnce, DelayedOnce, DeletedRecord, DeliveredEntry, Error,
    GroupInfo, GroupStart, IdRange, LanesRead, NewEntry, OnceEntry, PendingEntry, PendingQuery,
    PendingSummary, Promoted, RateAcquire, RateGrant, RateKeys, RateState, ReadFrom, ReadGroup,
    ReadLanes, Result, Settle, Settled, StreamEntry, StreamId, StreamInfo, Trim,
    validate_ack_and_add, validate_autoclaim_count, validate_autoclaim_recorded,
    validate_delay_once, validate_new_entry, validate_once_entry, validate_rate_acquire,
    validate_settle,
};

use crate::delayed::{delay_once_locked, promote_locked};
use crate::group::{Count, Group};
use crate::write::{add, add_once, autoclaim_recorded_locked, settle_locked};
use crate::{Key, MemoryBroker, group_mut};

#[async_trait]
impl Broker for MemoryBroker {
    async fn xadd(&self, entry: NewEntry) -> Result<StreamId> {
        validate_new_entry(&entry)?;
        let now = self.now_ms();
        self.with_keys(|keys| add(keys, entry, now))
    }

    async fn xadd_many(&self, entries: Vec<NewEntry>) -> Result<Vec<Result<StreamId>>> {
        let now = self.now_ms();
        Ok(self.with_keys(|keys| {
            entries
                .into_iter()
                .map(|entry| validate_new_entry(&entry).and_then(|()| add(keys, entry, now)))
                .collect()
        }))
    }

    async fn xadd_once(&self, entries: Vec<OnceEntry>) -> Result<Vec<Result<AddedOnce>>> {
        let now = self.now_ms();
        Ok(self.with_state(|state| {
            // Amortised: each marker is dropped once, after its window.
            state.markers.evict_expired(now);
            entries
                .into_iter()
                .map(|once| {
                    validate_once_entry(&once)?;
                    add_once(state, once, now)
                })
                .collect()
        }))
    }

    async fn xlen(&self, stream: &str) -> Result<u64> {
        Ok(self.with_keys(|keys| {
            keys.get(stream)
                .map_or(0, |k| k.stream.entries.len() as u64)
        }))
    }

    async fn xrange(
        &self,
        stream: &str,
        range: IdRange,
        count: Option<usize>,
    ) -> Result<Vec<StreamEntry>> {
        check_interval(range)?;
        Ok(self.with_keys(|keys| {
            keys.get(stream)
                .map(|k| k.stream.range(range, count))
                .unwrap_or_default()
        }))
    }

    async fn xdel(&self, stream: &str, ids: &[StreamId]) -> Result<u64> {
        Ok(self.with_keys(|keys| keys.get_mut(stream).map_or(0, |k| k.stream.delete(ids))))
    }

    async fn xtrim(&self, stream: &str, trim: Trim) -> Result<u64> {
        Ok(self.with_keys(|keys| keys.get_mut(stream).map_or(0, |k| k.stream.trim(trim))))
    }

    async fn group_create(
        &self,
        stream: &str,
        group: &str,
        start: GroupStart,
        mkstream: bool,
    ) -> Result<()> {
        self.with_keys(|keys| {
            if !keys.contains_key(stream) {
                if !mkstream {
                    return Err(Error::NoSuchKey(stream.to_owned()));
                }
                keys.insert(stream.to_owned(), Key::default());
            }
            let key = keys
                .get_mut(stream)
                .ok_or_else(|| Error::NoSuchKey(stream.to_owned()))?;
            if key.groups.contains_key(group) {
                return Err(Error::GroupExists {
                    stream: stream.to_owned(),
                    group: group.to_owned(),
                });
            }
            let after = match start {
                GroupStart::After(id) => id,
                GroupStart::Latest => key.stream.last_id,
            };
            key.groups.insert(group.to_owned(), Group::new(after));
            Ok(())
        })
    }

    async fn group_destroy(&self, stream: &str, group: &str) -> Result<bool> {
        self.with_keys(|keys| {
            let key = keys
                .get_mut(stream)
                .ok_or_else(|| Error::NoSuchKey(stream.to_owned()))?;
            Ok(key.groups.remove(group).is_some())
        })
    }

    async fn consumer_delete(&self, stream: &str, group: &str, consumer: &str) -> Result<u64> {
        self.with_keys(|keys| {
            // XGROUP subcommands want the key first, then the group.
            if !keys.contains_key(stream) {
                return Err(Error::NoSuchKey(stream.to_owned()));
            }
            let (_, group) = group_mut(keys, stream, group)?;
            Ok(group.delete_consumer(consumer))
        })
    }

    async fn consumer_delete_if_idle(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
    ) -> Result<ConsumerPruned> {
        let now = self.now_ms();
        self.with_keys(|keys| {
            // The Redis script starts with XINFO CONSUMERS: no such key
            // first, then NOGROUP.
            if !keys.contains_key(stream) {
                return Err(Error::NoSuchKey(stream.to_owned()));
            }
            let (_, group) = group_mut(keys, stream, group)?;
            Ok(group.delete_consumer_if_idle(consumer, min_idle, now))
        })
    }

    async fn read_group(&self, read: &ReadGroup) -> Result<Vec<DeliveredEntry>> {
        if read.from == ReadFrom::PendingAfter(StreamId::MAX) {
            // Redis encodes `>` as the largest id, so reading "after" it is a
            // `>` read, BLOCK included.
            let as_new = ReadGroup {
                from: ReadFrom::New,
                ..read.clone()
            };
            return self.read_group(&as_new).await;
        }
        let block = match read.from {
            ReadFrom::New => read.block,
            // Redis ignores BLOCK when reading a consumer's own history.
            ReadFrom::PendingAfter(_) => None,
        };
        let Some(timeout) = block else {
            return self.read_once(read);
        };
        // BLOCK 0 waits forever.
        let deadline = (!timeout.is_zero()).then(|| tokio::time::Instant::now() + timeout);
        loop {
            let Some(appended) =
                self.with_keys(|keys| keys.get(&read.stream).map(|k| k.stream.appended.clone()))
            else {
                return self.read_once(read);
            };
            // Register for the wake-up before looking, so an append between
            // the look and the wait is not missed.
            let mut woken = pin!(appended.notified());
            woken.as_mut().enable();
            let delivered = self.read_once(read)?;
            if !delivered.is_empty() {
                return Ok(delivered);
            }
            let expired = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = woken => {}
                () = expired => return Ok(Vec::new()),
            }
        }
    }

    async fn read_lanes(&self, read: &ReadLanes) -> Result<LanesRead> {
        self.read_lanes_locked(read)
    }

    async fn ack(&self, stream: &str, group: &str, ids: &[StreamId]) -> Result<u64> {
        // XACK on a missing key or group acknowledges nothing; no error.
        Ok(self.with_keys(|keys| group_mut(keys, stream, group).map_or(0, |(_, g)| g.ack(ids))))
    }

    async fn pending_summary(&self, stream: &str, group: &str) -> Result<PendingSummary> {
        self.with_keys(|keys| Ok(group_mut(keys, stream, group)?.1.summary()))
    }

    async fn pending(
        &self,
        stream: &str,
        group: &str,
        query: &PendingQuery,
    ) -> Result<Vec<PendingEntry>> {
        check_interval(query.range)?;
        let now = self.now_ms();
        self.with_keys(|keys| Ok(group_mut(keys, stream, group)?.1.pending(query, now)))
    }

    async fn claim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        ids: &[StreamId],
    ) -> Result<Vec<StreamEntry>> {
        let now = self.now_ms();
        self.with_keys(|keys| {
            let (stream, group) = group_mut(keys, stream, group)?;
            Ok(group.claim(stream, consumer, min_idle, ids, Count::Delivery, now))
        })
    }

    async fn claim_ids(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        ids: &[StreamId],
    ) -> Result<Vec<StreamId>> {
        let now = self.now_ms();
        self.with_keys(|keys| {
            let (stream, group) = group_mut(keys, stream, group)?;
            let claimed = group.claim(stream, consumer, min_idle, ids, Count::JustId, now);
            Ok(claimed.into_iter().map(|entry| entry.id).collect())
        })
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
        validate_autoclaim_count(stream, count)?;
        let now = self.now_ms();
        self.with_keys(|keys| {
            let (stream, group) = group_mut(keys, stream, group)?;
            Ok(group.autoclaim(stream, consumer, min_idle, start, count, now))
        })
    }

    async fn autoclaim_recorded(
        &self,
        claim: &AutoClaim,
        record: &DeletedRecord,
    ) -> Result<AutoClaimedRecorded> {
        validate_autoclaim_recorded(claim, record)?;
        let now = self.now_ms();
        self.with_state(|state| autoclaim_recorded_locked(state, claim, record, now))
    }

    async fn info_stream(&self, stream: &str) -> Result<StreamInfo> {
        self.with_keys(|keys| {
            let key = keys
                .get(stream)
                .ok_or_else(|| Error::NoSuchKey(stream.to_owned()))?;
            let entries = &key.stream.entries;
            let edge = |(id, fields): (&StreamId, &crewq_core::Fields)| StreamEntry {
                id: *id,
                fields: fields.clone(),
            };
            Ok(StreamInfo {
                length: entries.len() as u64,
                last_generated_id: key.stream.last_id,
                max_deleted_entry_id: key.stream.max_deleted_id,
                entries_added: key.stream.entries_added,
                recorded_first_entry_id: key.stream.first_id(),
                groups: key.groups.len() as u64,
                first_entry: entries.iter().next().map(edge),
                last_entry: entries.iter().next_back().map(edge),
            })
        })
    }

    async fn info_groups(&self, stream: &str) -> Result<Vec<GroupInfo>> {
        self.with_keys(|keys| {
            let key = keys
                .get(stream)
                .ok_or_else(|| Error::NoSuchKey(stream.to_owned()))?;
            Ok(key
                .groups
                .iter()
                .map(|(name, group)| group.info(name, &key.stream))
                .collect())
        })
    }

    async fn info_consumers(&self, stream: &str, group: &str) -> Result<Vec<ConsumerInfo>> {
        let now = self.now_ms();
        self.with_keys(|keys| {
            if !keys.contains_key(stream) {
                return Err(Error::NoSuchKey(stream.to_owned()));
            }
            let (_, group) = group_mut(keys, stream, group)?;
            Ok(group
                .consumers
                .iter()
                .map(|(name, consumer)| ConsumerInfo {
                    name: name.to_string(),
                    pending: consumer.pending.len() as u64,
                    idle: Duration::from_millis(now.saturating_sub(consumer.seen_ms)),
                })
                .collect())
        })
    }

    async fn ack_and_add(&self, step: AckAndAdd) -> Result<AckAndAddReply> {
        validate_ack_and_add(&step)?;
        let now = self.now_ms();
        self.with_keys(|keys| {
            // Like EXEC, every command runs even when one before it failed
            // (only an append to an exhausted stream can fail here), and the
            // step reports the first failure: Redis does not roll back.
            let added: Vec<Result<StreamId>> = step
                .adds
                .into_iter()
                .map(|entry| add(keys, entry, now))
                .collect();
            let acked = step
                .acks
                .iter()
                .map(|ack| {
                    group_mut(keys, &ack.stream, &ack.group).map_or(0, |(_, g)| g.ack(&ack.ids))
                })
                .collect();
            let deleted = step
                .deletes
                .iter()
                .map(|delete| {
                    keys.get_mut(&delete.stream)
                        .map_or(0, |k| k.stream.delete(&delete.ids))
                })
                .collect();
            let ids = added.into_iter().collect::<Result<_>>()?;
            Ok(AckAndAddReply {
                acked,
                ids,
                deleted,
            })
        })
    }

    async fn settle(&self, settle: Settle) -> Result<Vec<Settled>> {
        validate_settle(&settle)?;
        let now = self.now_ms();
        self.with_state(|state| settle_locked(state, settle, now))
    }

    async fn renew(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[StreamId],
    ) -> Result<Vec<StreamId>> {
        let now = self.now_ms();
        self.with_keys(|keys| {
            let (stream, group) = group_mut(keys, stream, group)?;
            let own: Vec<StreamId> = ids
                .iter()
                .copied()
                .filter(|id| group.owns(consumer, *id))
                // A deleted entry stays pending, unrenewed (see the Redis
                // backend's renew script): claiming it would drop it.
                .filter(|id| stream.entries.contains_key(id))
                .collect();
            let renewed = group.claim(stream, consumer, Duration::ZERO, &own, Count::JustId, now);
            Ok(renewed.into_iter().map(|entry| entry.id).collect())
        })
    }

    async fn promote(&self, set: &str, stream: &str, count: usize) -> Result<Promoted> {
        let now = self.now_ms();
        self.with_state(|state| promote_locked(state, set, stream, count, now))
    }

    async fn delay_once(&self, entries: Vec<DelayOnce>) -> Result<Vec<Result<DelayedOnce>>> {
        let now = self.now_ms();
        Ok(self.with_state(|state| {
            state.markers.evict_expired(now);
            entries
                .into_iter()
                .map(|once| {
                    validate_delay_once(&once)?;
                    Ok(delay_once_locked(state, once, now))
                })
                .collect()
        }))
    }

    async fn delayed_len(&self, set: &str) -> Result<u64> {
        Ok(self.with_state(|state| state.delayed.get(set).map_or(0, |m| m.len() as u64)))
    }

    async fn rate_acquire(&self, acquire: RateAcquire) -> Result<RateGrant> {
        validate_rate_acquire(&acquire)?;
        let now = self.now_ms();
        Ok(self.with_state(|state| state.rates.acquire(acquire, now)))
    }

    async fn rate_renew(
        &self,
        keys: &RateKeys,
        permits: &[String],
        lease: Duration,
    ) -> Result<Vec<String>> {
        let now = self.now_ms();
        Ok(self.with_state(|state| state.rates.renew(keys, permits, lease, now)))
    }

    async fn rate_release(
        &self,
        keys: &RateKeys,
        finished: &[String],
        unused: &[String],
    ) -> Result<u64> {
        let now = self.now_ms();
        Ok(self.with_state(|state| state.rates.release(keys, finished, unused, now)))
    }

    async fn rate_pause(&self, keys: &RateKeys, pause: Duration) -> Result<Duration> {
        let now = self.now_ms();
        Ok(self.with_state(|state| state.rates.pause(keys, pause, now)))
    }

    async fn rate_state(&self, keys: &RateKeys) -> Result<RateState> {
        let now = self.now_ms();
        Ok(self.with_state(|state| state.rates.state(keys, now)))
    }
}

impl MemoryBroker {
    /// One non-blocking `XREADGROUP`.
    fn read_once(&self, read: &ReadGroup) -> Result<Vec<DeliveredEntry>> {
        let now = self.now_ms();
        // COUNT 0 is no limit, as in Redis.
        let count = match read.count {
            None | Some(0) => usize::MAX,
            Some(count) => count,
        };
        self.with_keys(|keys| {
            let (stream, group) = group_mut(keys, &read.stream, &read.group)?;
            Ok(match read.from {
                ReadFrom::New => group.read_new(stream, &read.consumer, count, now),
                ReadFrom::PendingAfter(after) => {
                    group.read_history(stream, &read.consumer, after, count, now)
                }
            })
        })
    }
}

/// Redis rejects the two exclusive bounds that leave nothing to range over.
fn check_interval(range: IdRange) -> Result<()> {
    if range.0 == Bound::Excluded(StreamId::MAX) {
        return Err(Error::InvalidId("invalid start ID for the interval".into()));
    }
    if range.1 == Bound::Excluded(StreamId::ZERO) {
        return Err(Error::InvalidId("invalid end ID for the interval".into()));
    }
    Ok(())
}
