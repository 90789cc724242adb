//! One stream's entries and counters, with Redis's id, trim and lag rules.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use crewq_core::{
    AddId, Error, Fields, IdRange, Result, StreamEntry, StreamId, Trim, TrimStrategy,
};
use tokio::sync::Notify;

/// A stream's entries by id and the counters Redis keeps with them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Stream {
    pub(crate) entries: BTreeMap<StreamId, Fields>,
    /// The largest id ever added; survives deletion and trimming, as in Redis.
    pub(crate) last_id: StreamId,
    /// The largest id removed by XDEL (not by trimming, as in Redis 7.0).
    pub(crate) max_deleted_id: StreamId,
    pub(crate) entries_added: u64,
    /// Wakes blocked group reads when an entry is appended. A clone (a
    /// [`Snapshot`](crate::Snapshot)) shares it, so reads blocked when a
    /// snapshot is restored are woken by the restore and later appends.
    pub(crate) appended: Arc<Notify>,
}

impl Stream {
    /// Appends an entry whose id came from [`next_id`], then trims.
    pub(crate) fn append(&mut self, id: StreamId, fields: Fields, trim: Option<Trim>) {
        self.entries.insert(id, fields);
        self.last_id = id;
        self.entries_added += 1;
        if let Some(trim) = trim {
            // Redis trims after inserting, so MAXLEN 0 removes the new entry too.
            self.trim(trim);
        }
        self.appended.notify_waiters();
    }

    /// Removes entries per `trim`, returning how many.
    ///
    /// Approximate trims are exact here: Redis may keep more when `~` is
    /// given (it drops whole internal nodes only), never fewer, so an exact
    /// trim is one of the outcomes Redis allows.
    pub(crate) fn trim(&mut self, trim: Trim) -> u64 {
        let before = self.entries.len();
        match trim.strategy {
            TrimStrategy::MaxLen(max) => {
                let max = usize::try_from(max).unwrap_or(usize::MAX);
                while self.entries.len() > max {
                    self.entries.pop_first();
                }
            }
            TrimStrategy::MinId(min) => self.entries = self.entries.split_off(&min),
        }
        (before - self.entries.len()) as u64
    }

    /// Deletes entries, returning how many existed.
    pub(crate) fn delete(&mut self, ids: &[StreamId]) -> u64 {
        let mut deleted = 0;
        for id in ids {
            if self.entries.remove(id).is_some() {
                deleted += 1;
                // Redis remembers the largest deleted id for lag estimation.
                self.max_deleted_id = self.max_deleted_id.max(*id);
            }
        }
        deleted
    }

    /// The entries in `range`, oldest first, at most `count`.
    pub(crate) fn range(&self, range: IdRange, count: Option<usize>) -> Vec<StreamEntry> {
        let limit = count.unwrap_or(usize::MAX);
        match checked_range(range) {
            Some(range) => self
                .entries
                .range(range)
                .take(limit)
                .map(|(id, fields)| StreamEntry {
                    id: *id,
                    fields: fields.clone(),
                })
                .collect(),
            None => Vec::new(),
        }
    }

    /// The id of the first entry, `0-0` when empty (Redis's `first_id`).
    pub(crate) fn first_id(&self) -> StreamId {
        self.entries
            .keys()
            .next()
            .copied()
            .unwrap_or(StreamId::ZERO)
    }

    /// Whether an XDEL tombstone lies in `[start, +inf)`: Redis's
    /// `streamRangeHasTombstones(s, start, NULL)`.
    pub(crate) fn has_tombstones_from(&self, start: StreamId) -> bool {
        if self.entries.is_empty() || self.max_deleted_id.is_zero() {
            return false;
        }
        if self.first_id() > self.max_deleted_id {
            return false;
        }
        start <= self.max_deleted_id
    }

    /// How many entries were ever added up to and including `id`, when it
    /// can be known: Redis's `streamEstimateDistanceFromFirstEverEntry`.
    pub(crate) fn entries_read_at(&self, id: StreamId) -> Option<u64> {
        if self.entries_added == 0 {
            return Some(0);
        }
        if self.entries.is_empty() && id <= self.last_id {
            return Some(self.entries_added);
        }
        if id == self.last_id {
            return Some(self.entries_added);
        }
        if id > self.last_id {
            return None;
        }
        let first = self.first_id();
        if self.max_deleted_id.is_zero() || self.max_deleted_id < first {
            let length = self.entries.len() as u64;
            if id < first {
                return Some(self.entries_added - length);
            }
            if id == first {
                return Some(self.entries_added - length + 1);
            }
        }
        None
    }
}

/// The id an append to a stream whose last id is `last_id` gets, or why it
/// cannot be added.
pub(crate) fn next_id(stream: &str, last_id: StreamId, id: AddId, now_ms: u64) -> Result<StreamId> {
    // Redis's xaddCommand checks `0-0` first, then a stream whose last id is
    // the largest possible, before it looks at the id given.
    if id == AddId::Explicit(StreamId::ZERO) {
        return Err(Error::IdTooSmall {
            stream: stream.to_owned(),
            id: StreamId::ZERO,
            top: last_id,
        });
    }
    if last_id == StreamId::MAX {
        return Err(Error::IdExhausted(stream.to_owned()));
    }
    match id {
        // Redis: `*` uses the clock unless it has not moved past the last id,
        // then bumps the last id (streamIncrID).
        AddId::Auto if now_ms > last_id.ms => Ok(StreamId::new(now_ms, 0)),
        AddId::Auto => last_id
            .successor()
            .ok_or_else(|| Error::IdExhausted(stream.to_owned())),
        AddId::Explicit(id) if id > last_id => Ok(id),
        AddId::Explicit(id) => Err(Error::IdTooSmall {
            stream: stream.to_owned(),
            id,
            top: last_id,
        }),
    }
}

/// `range` as `BTreeMap::range` accepts it, or `None` when it is empty
/// (`BTreeMap::range` panics on start > end or equal excluded bounds).
pub(crate) fn checked_range(range: IdRange) -> Option<IdRange> {
    let start = match range.0 {
        Bound::Included(id) => Some(id),
        Bound::Excluded(id) => Some(id.successor()?),
        Bound::Unbounded => None,
    };
    let end = match range.1 {
        Bound::Included(id) => Some(id),
        Bound::Excluded(id) if id.is_zero() => return None,
        Bound::Excluded(id) => Some(predecessor(id)),
        Bound::Unbounded => None,
    };
    if let (Some(start), Some(end)) = (start, end)
        && start > end
    {
        return None;
    }
    let to_bound = |id: Option<StreamId>| id.map_or(Bound::Unbounded, Bound::Included);
    Some((to_bound(start), to_bound(end)))
}

/// The id just before a non-zero `id`.
fn predecessor(id: StreamId) -> StreamId {
    if id.seq > 0 {
        StreamId::new(id.ms, id.seq - 1)
    } else {
        StreamId::new(id.ms - 1, u64::MAX)
    }
}
