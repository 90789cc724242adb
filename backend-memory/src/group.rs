//! A consumer group: its pending entries list (PEL) and consumers, with the
//! delivery, claim and acknowledgement rules of Redis 7.0.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crewq_core::{
    AutoClaimed, ConsumerPruned, DeliveredEntry, GroupInfo, PendingEntry, PendingQuery,
    PendingSummary, StreamEntry, StreamId,
};

use crate::stream::{Stream, checked_range};

/// One pending entry: delivered to `consumer`, not yet acknowledged.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub(crate) consumer: Arc<str>,
    pub(crate) delivered_ms: u64,
    pub(crate) deliveries: u64,
}

/// A consumer: when it last acted and which pending entries it owns.
#[derive(Clone, Debug, Default)]
pub(crate) struct Consumer {
    pub(crate) seen_ms: u64,
    pub(crate) pending: BTreeSet<StreamId>,
}

/// A consumer group.
#[derive(Clone, Debug)]
pub(crate) struct Group {
    pub(crate) last_delivered: StreamId,
    /// Redis's logical read counter; `None` is its "invalid" value.
    pub(crate) entries_read: Option<u64>,
    pub(crate) pel: BTreeMap<StreamId, Pending>,
    pub(crate) consumers: BTreeMap<Arc<str>, Consumer>,
}

/// How a claim counts deliveries: `XCLAIM` counts one, `JUSTID` does not.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Count {
    Delivery,
    JustId,
}

impl Group {
    /// A group that will deliver entries after `last_delivered`.
    pub(crate) fn new(last_delivered: StreamId) -> Self {
        Group {
            last_delivered,
            // XGROUP CREATE without ENTRIESREAD leaves the counter invalid.
            entries_read: None,
            pel: BTreeMap::new(),
            consumers: BTreeMap::new(),
        }
    }

    /// The consumer called `name`, created if missing, marked seen at `now_ms`.
    pub(crate) fn touch_consumer(&mut self, name: &str, now_ms: u64) -> Arc<str> {
        if let Some(consumer) = self.consumers.get_mut(name) {
            consumer.seen_ms = now_ms;
        }
        if let Some((key, _)) = self.consumers.get_key_value(name) {
            return key.clone();
        }
        let key: Arc<str> = Arc::from(name);
        self.consumers.insert(
            key.clone(),
            Consumer {
                seen_ms: now_ms,
                pending: BTreeSet::new(),
            },
        );
        key
    }

    /// `XREADGROUP ... >`: delivers entries after the last-delivered id.
    pub(crate) fn read_new(
        &mut self,
        stream: &Stream,
        consumer: &str,
        count: usize,
        now_ms: u64,
    ) -> Vec<DeliveredEntry> {
        let after = (
            std::ops::Bound::Excluded(self.last_delivered),
            std::ops::Bound::Unbounded,
        );
        let delivered = stream.range(after, Some(count));
        if delivered.is_empty() {
            // Redis 7.0 creates or refreshes the reader only when `>`
            // delivers something.
            return Vec::new();
        }
        let consumer = self.touch_consumer(consumer, now_ms);
        for entry in &delivered {
            self.advance_read_counter(stream, entry.id);
            self.last_delivered = entry.id;
            self.own(entry.id, &consumer, now_ms, 1);
        }
        delivered.into_iter().map(DeliveredEntry::from).collect()
    }

    /// Redis's update of `entries_read` as `>` delivers `id`
    /// (streamReplyWithRange): count on while the counter is valid and no
    /// tombstone lies ahead, else re-estimate it.
    fn advance_read_counter(&mut self, stream: &Stream, id: StreamId) {
        match self.entries_read {
            Some(read) if !stream.has_tombstones_from(id) => self.entries_read = Some(read + 1),
            _ if stream.entries_added > 0 => self.entries_read = stream.entries_read_at(id),
            _ => {}
        }
    }

    /// Reading one's own history: pending entries after `after`. Unlike
    /// `>`, it creates or refreshes the reader even when it finds nothing.
    pub(crate) fn read_history(
        &mut self,
        stream: &Stream,
        consumer: &str,
        after: StreamId,
        count: usize,
        now_ms: u64,
    ) -> Vec<DeliveredEntry> {
        let consumer = self.touch_consumer(consumer, now_ms);
        let Some(owned) = self.consumers.get(&consumer) else {
            return Vec::new();
        };
        let ids: Vec<StreamId> = owned
            .pending
            .range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
            .take(count)
            .copied()
            .collect();
        let mut delivered = Vec::with_capacity(ids.len());
        for id in ids {
            let fields = stream.entries.get(&id).cloned();
            // Redis counts a delivery only for entries that still exist;
            // deleted ones come back as id with nil fields, untouched.
            if fields.is_some()
                && let Some(pending) = self.pel.get_mut(&id)
            {
                pending.deliveries += 1;
                pending.delivered_ms = now_ms;
            }
            delivered.push(DeliveredEntry { id, fields });
        }
        delivered
    }

    /// Makes `consumer` the owner of `id` with a fresh delivery time.
    fn own(&mut self, id: StreamId, consumer: &Arc<str>, now_ms: u64, deliveries: u64) {
        let previous = self.pel.insert(
            id,
            Pending {
                consumer: consumer.clone(),
                delivered_ms: now_ms,
                deliveries,
            },
        );
        if let Some(previous) = previous {
            self.disown(&previous.consumer, id);
        }
        if let Some(owner) = self.consumers.get_mut(consumer) {
            owner.pending.insert(id);
        }
    }

    fn disown(&mut self, consumer: &str, id: StreamId) {
        if let Some(owner) = self.consumers.get_mut(consumer) {
            owner.pending.remove(&id);
        }
    }

    /// Removes `id` from the PEL and its owner's list; whether it was there.
    pub(crate) fn remove_pending(&mut self, id: StreamId) -> bool {
        match self.pel.remove(&id) {
            Some(pending) => {
                self.disown(&pending.consumer, id);
                true
            }
            None => false,
        }
    }

    /// `XACK`: how many of `ids` left the PEL.
    pub(crate) fn ack(&mut self, ids: &[StreamId]) -> u64 {
        ids.iter().filter(|id| self.remove_pending(**id)).count() as u64
    }

    /// `XPENDING` summary.
    pub(crate) fn summary(&self) -> PendingSummary {
        PendingSummary {
            count: self.pel.len() as u64,
            min_id: self.pel.keys().next().copied(),
            max_id: self.pel.keys().next_back().copied(),
            consumers: self
                .consumers
                .iter()
                .filter(|(_, c)| !c.pending.is_empty())
                .map(|(name, c)| (name.to_string(), c.pending.len() as u64))
                .collect(),
        }
    }

    /// `XPENDING` extended form.
    pub(crate) fn pending(&self, query: &PendingQuery, now_ms: u64) -> Vec<PendingEntry> {
        let Some(range) = checked_range(query.range) else {
            return Vec::new();
        };
        let min_idle = query.min_idle.map_or(0, duration_ms);
        let row = |id: &StreamId| {
            let pending = self.pel.get(id)?;
            let idle_ms = now_ms.saturating_sub(pending.delivered_ms);
            // Redis: `IDLE 0` is no filter; otherwise idle must reach it.
            (idle_ms >= min_idle).then(|| PendingEntry {
                id: *id,
                consumer: pending.consumer.to_string(),
                idle: Duration::from_millis(idle_ms),
                deliveries: pending.deliveries,
            })
        };
        match &query.consumer {
            Some(name) => match self.consumers.get(name.as_str()) {
                Some(consumer) => consumer
                    .pending
                    .range(range)
                    .filter_map(row)
                    .take(query.count)
                    .collect(),
                None => Vec::new(),
            },
            None => self
                .pel
                .range(range)
                .filter_map(|(id, _)| row(id))
                .take(query.count)
                .collect(),
        }
    }

    /// Whether `id` is pending and owned by `consumer`.
    pub(crate) fn owns(&self, consumer: &str, id: StreamId) -> bool {
        self.pel
            .get(&id)
            .is_some_and(|pending| &*pending.consumer == consumer)
    }

    /// `XCLAIM`, one id at a time in the order given, as Redis does.
    pub(crate) fn claim(
        &mut self,
        stream: &Stream,
        consumer: &str,
        min_idle: Duration,
        ids: &[StreamId],
        count: Count,
        now_ms: u64,
    ) -> Vec<StreamEntry> {
        let min_idle = duration_ms(min_idle);
        let mut claimed = Vec::new();
        let mut owner: Option<Arc<str>> = None;
        for id in ids {
            let Some(pending) = self.pel.get(id) else {
                continue;
            };
            let Some(fields) = stream.entries.get(id) else {
                // Redis 7: a deleted entry leaves the PEL instead of moving.
                self.remove_pending(*id);
                continue;
            };
            if now_ms.saturating_sub(pending.delivered_ms) < min_idle {
                continue;
            }
            // Redis creates (and refreshes) the claimer only once it claims.
            let owner = owner.get_or_insert_with(|| self.touch_consumer(consumer, now_ms));
            self.transfer(*id, owner, count, now_ms);
            claimed.push(StreamEntry {
                id: *id,
                fields: fields.clone(),
            });
        }
        claimed
    }

    /// Hands a pending `id` to `owner`, counting a delivery unless `JustId`.
    fn transfer(&mut self, id: StreamId, owner: &Arc<str>, count: Count, now_ms: u64) {
        let Some(pending) = self.pel.get_mut(&id) else {
            return;
        };
        pending.delivered_ms = now_ms;
        if count == Count::Delivery {
            pending.deliveries += 1;
        }
        if pending.consumer != *owner {
            let previous = std::mem::replace(&mut pending.consumer, owner.clone());
            self.disown(&previous, id);
            if let Some(consumer) = self.consumers.get_mut(owner) {
                consumer.pending.insert(id);
            }
        }
    }

    /// `XAUTOCLAIM` (Redis 7.0's xautoclaimCommand): scans at most
    /// `count * 10` PEL entries from `start`; deleted entries are dropped,
    /// reported, and count towards `count`.
    pub(crate) fn autoclaim(
        &mut self,
        stream: &Stream,
        consumer: &str,
        min_idle: Duration,
        start: StreamId,
        count: usize,
        now_ms: u64,
    ) -> AutoClaimed {
        let min_idle = duration_ms(min_idle);
        let mut attempts = count.saturating_mul(10);
        let mut remaining = count;
        let mut claimed = Vec::new();
        let mut deleted = Vec::new();
        let mut owner: Option<Arc<str>> = None;
        let mut cursor = start;
        let mut exhausted = false;
        while attempts > 0 && remaining > 0 {
            attempts -= 1;
            let Some((&id, pending)) = self.pel.range(cursor..).next() else {
                exhausted = true;
                break;
            };
            cursor = match id.successor() {
                Some(next) => next,
                None => {
                    // The last possible id: nothing can follow it.
                    exhausted = true;
                    StreamId::MAX
                }
            };
            match stream.entries.get(&id) {
                None => {
                    self.remove_pending(id);
                    deleted.push(id);
                    remaining -= 1;
                }
                Some(_) if now_ms.saturating_sub(pending.delivered_ms) < min_idle => {}
                Some(fields) => {
                    let fields = fields.clone();
                    let owner = owner.get_or_insert_with(|| self.touch_consumer(consumer, now_ms));
                    self.transfer(id, owner, Count::Delivery, now_ms);
                    claimed.push(StreamEntry { id, fields });
                    remaining -= 1;
                }
            }
            if exhausted {
                break;
            }
        }
        // The cursor is the next PEL entry not examined, 0-0 at the end.
        let next = if exhausted {
            StreamId::ZERO
        } else {
            self.pel
                .range(cursor..)
                .next()
                .map_or(StreamId::ZERO, |(id, _)| *id)
        };
        AutoClaimed {
            next,
            claimed,
            deleted,
        }
    }

    /// `XGROUP DELCONSUMER`: removes the consumer and its pending entries.
    pub(crate) fn delete_consumer(&mut self, name: &str) -> u64 {
        let Some(consumer) = self.consumers.remove(name) else {
            return 0;
        };
        for id in &consumer.pending {
            self.pel.remove(id);
        }
        consumer.pending.len() as u64
    }

    /// The check and the `XGROUP DELCONSUMER` of
    /// `consumer_delete_if_idle`, under the broker's one lock as the Redis
    /// backend's script runs them: idle is `XINFO CONSUMERS`'s, since the
    /// last read or claim.
    pub(crate) fn delete_consumer_if_idle(
        &mut self,
        name: &str,
        min_idle: Duration,
        now_ms: u64,
    ) -> ConsumerPruned {
        let Some(consumer) = self.consumers.get(name) else {
            return ConsumerPruned::Missing;
        };
        let idle = Duration::from_millis(now_ms.saturating_sub(consumer.seen_ms));
        if !consumer.pending.is_empty() {
            return ConsumerPruned::Busy {
                pending: consumer.pending.len() as u64,
            };
        }
        // Whole ms against the exact `min_idle`: 1.5 ms needs 2, as the
        // Redis backend rounds `min_idle` up.
        if idle < min_idle {
            return ConsumerPruned::Active { idle };
        }
        self.consumers.remove(name);
        ConsumerPruned::Deleted { idle }
    }

    /// One row of `XINFO GROUPS`.
    pub(crate) fn info(&self, name: &str, stream: &Stream) -> GroupInfo {
        GroupInfo {
            name: name.to_owned(),
            consumers: self.consumers.len() as u64,
            pending: self.pel.len() as u64,
            last_delivered_id: self.last_delivered,
            entries_read: self.entries_read,
            lag: self.lag(stream),
        }
    }

    /// Redis 7.0's lag (streamReplyWithCGLag): exact while the read counter
    /// is valid and no tombstone lies in the unread part, else estimated from
    /// the last-delivered id, else unknown.
    fn lag(&self, stream: &Stream) -> Option<u64> {
        if stream.entries_added == 0 {
            return Some(0);
        }
        if let Some(read) = self.entries_read
            && !stream.has_tombstones_from(self.last_delivered)
        {
            return Some(stream.entries_added.saturating_sub(read));
        }
        stream
            .entries_read_at(self.last_delivered)
            .map(|read| stream.entries_added.saturating_sub(read))
    }
}

/// A duration in whole ms, as Redis takes idle times.
pub(crate) fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
