//! Consumer-group reads, pending entries, claims: the group half of the contract.

use std::time::Duration;

use crate::{IdRange, StreamEntry, StreamId, stream::ALL_IDS};

/// Where a consumer-group read starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFrom {
    /// `>`: entries never delivered to the group.
    New,
    /// The caller's own pending entries with ids greater than this one
    /// (`0-0` for all of them). [`StreamId::MAX`] is special: Redis encodes
    /// `>` as the largest id, so `PendingAfter(StreamId::MAX)` reads like
    /// [`ReadFrom::New`].
    PendingAfter(StreamId),
}

/// An `XREADGROUP` on one stream.
///
/// ```
/// use std::time::Duration;
/// use crewq_core::{ReadFrom, ReadGroup, StreamId};
/// let fresh = ReadGroup::new("agent:tasks:research", "research", "worker-1")
///     .count(64)
///     .block(Duration::from_secs(2));
/// assert_eq!(fresh.from, ReadFrom::New);
/// let own = ReadGroup::new("agent:tasks:research", "research", "worker-1")
///     .pending_after(StreamId::ZERO);
/// assert_eq!(own.from, ReadFrom::PendingAfter(StreamId::ZERO));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadGroup {
    /// The stream key.
    pub stream: String,
    /// The group.
    pub group: String,
    /// The reading consumer; created in the group when missing.
    pub consumer: String,
    /// New entries or own history.
    pub from: ReadFrom,
    /// `COUNT`: at most this many entries; `None` or `Some(0)` for no limit.
    pub count: Option<usize>,
    /// `BLOCK`: wait this long for new entries when there are none.
    /// `Some(Duration::ZERO)` waits forever, as `BLOCK 0` does.
    pub block: Option<Duration>,
}

impl ReadGroup {
    /// A non-blocking read of new entries with no count limit.
    pub fn new(
        stream: impl Into<String>,
        group: impl Into<String>,
        consumer: impl Into<String>,
    ) -> Self {
        ReadGroup {
            stream: stream.into(),
            group: group.into(),
            consumer: consumer.into(),
            from: ReadFrom::New,
            count: None,
            block: None,
        }
    }

    /// Reads the caller's own pending entries after `id` instead.
    #[must_use]
    pub fn pending_after(mut self, id: StreamId) -> Self {
        self.from = ReadFrom::PendingAfter(id);
        self
    }

    /// Limits the number of entries.
    #[must_use]
    pub fn count(mut self, count: usize) -> Self {
        self.count = Some(count);
        self
    }

    /// Waits up to `timeout` for new entries.
    #[must_use]
    pub fn block(mut self, timeout: Duration) -> Self {
        self.block = Some(timeout);
        self
    }
}

/// Where a group starts reading when it is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupStart {
    /// After this id: `0-0` delivers the whole stream.
    After(StreamId),
    /// `$`: after the stream's current last id.
    Latest,
}

impl GroupStart {
    /// The whole stream (`0`).
    pub const BEGINNING: GroupStart = GroupStart::After(StreamId::ZERO);
}

/// The `XPENDING` summary form.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PendingSummary {
    /// How many entries are pending in the group.
    pub count: u64,
    /// The smallest pending id, `None` when nothing is pending.
    pub min_id: Option<StreamId>,
    /// The largest pending id, `None` when nothing is pending.
    pub max_id: Option<StreamId>,
    /// Pending count per consumer with at least one, ordered by name.
    pub consumers: Vec<(String, u64)>,
}

/// One row of the extended `XPENDING` form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingEntry {
    /// The entry id.
    pub id: StreamId,
    /// The consumer that owns it.
    pub consumer: String,
    /// Time since it was last delivered (or claimed), at ms resolution.
    pub idle: Duration,
    /// How many times it was delivered.
    pub deliveries: u64,
}

/// The extended `XPENDING` query.
///
/// ```
/// use std::time::Duration;
/// use crewq_core::PendingQuery;
/// let stale = PendingQuery::new(100).min_idle(Duration::from_secs(30)).consumer("worker-1");
/// assert_eq!(stale.count, 100);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingQuery {
    /// The id range, both ends as in `XRANGE`.
    pub range: IdRange,
    /// At most this many rows.
    pub count: usize,
    /// Only this consumer's entries.
    pub consumer: Option<String>,
    /// `IDLE`: only entries idle at least this long.
    pub min_idle: Option<Duration>,
}

impl PendingQuery {
    /// Up to `count` rows over all ids, all consumers.
    pub fn new(count: usize) -> Self {
        PendingQuery {
            range: ALL_IDS,
            count,
            consumer: None,
            min_idle: None,
        }
    }

    /// Restricts the id range.
    #[must_use]
    pub fn range(mut self, range: IdRange) -> Self {
        self.range = range;
        self
    }

    /// Restricts to one consumer.
    #[must_use]
    pub fn consumer(mut self, consumer: impl Into<String>) -> Self {
        self.consumer = Some(consumer.into());
        self
    }

    /// Restricts to entries idle at least this long.
    #[must_use]
    pub fn min_idle(mut self, idle: Duration) -> Self {
        self.min_idle = Some(idle);
        self
    }
}

/// The reply of `XAUTOCLAIM`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoClaimed {
    /// The cursor for the next call; `0-0` when the scan reached the end.
    pub next: StreamId,
    /// The entries now owned by the claiming consumer.
    pub claimed: Vec<StreamEntry>,
    /// Pending ids whose entries were deleted from the stream; they were
    /// removed from the pending list.
    pub deleted: Vec<StreamId>,
}
