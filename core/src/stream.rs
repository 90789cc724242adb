//! Entries, appends and trimming: the types of the stream half of the contract.

use std::ops::Bound;

use crate::{Fields, StreamId};

/// An entry as stored in a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamEntry {
    /// Its id.
    pub id: StreamId,
    /// Its field-value pairs, in insertion order.
    pub fields: Fields,
}

/// An entry delivered by a group read.
///
/// Reading a consumer's own pending history can name entries that were
/// deleted from the stream after delivery; Redis replies with the id and a
/// nil field list, and so `fields` is `None` for those.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveredEntry {
    /// Its id.
    pub id: StreamId,
    /// Its fields, or `None` when the entry was deleted while pending.
    pub fields: Option<Fields>,
}

impl From<StreamEntry> for DeliveredEntry {
    fn from(entry: StreamEntry) -> Self {
        DeliveredEntry {
            id: entry.id,
            fields: Some(entry.fields),
        }
    }
}

/// How the id of an appended entry is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AddId {
    /// `*`: the broker's clock in ms, with the sequence bumped when the clock
    /// has not moved past the stream's last id.
    #[default]
    Auto,
    /// An explicit id, which must be greater than the stream's last id.
    Explicit(StreamId),
}

/// One entry to append with `XADD`.
///
/// ```
/// use crewq_core::{Fields, NewEntry, Trim};
/// let entry = NewEntry::new("agent:tasks:research", Fields::new().with("data", "{}"))
///     .with_trim(Trim::max_len(10_000).approximate());
/// assert_eq!(entry.stream, "agent:tasks:research");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEntry {
    /// The stream key; created when missing.
    pub stream: String,
    /// How its id is chosen.
    pub id: AddId,
    /// Its fields; at least one.
    pub fields: Fields,
    /// Trimming applied by the same `XADD`.
    pub trim: Option<Trim>,
}

impl NewEntry {
    /// An entry with an automatic id and no trimming.
    pub fn new(stream: impl Into<String>, fields: Fields) -> Self {
        NewEntry {
            stream: stream.into(),
            id: AddId::Auto,
            fields,
            trim: None,
        }
    }

    /// Uses an explicit id instead of `*`.
    #[must_use]
    pub fn with_id(mut self, id: StreamId) -> Self {
        self.id = AddId::Explicit(id);
        self
    }

    /// Trims the stream in the same command.
    #[must_use]
    pub fn with_trim(mut self, trim: Trim) -> Self {
        self.trim = Some(trim);
        self
    }
}

/// What a trim keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrimStrategy {
    /// `MAXLEN n`: keep the newest `n` entries.
    MaxLen(u64),
    /// `MINID id`: drop entries whose id is smaller than `id`.
    MinId(StreamId),
}

/// A trim, on `XADD` or `XTRIM`.
///
/// With [`Trim::approximate`] (`~`) Redis trims only whole internal nodes, so
/// it may keep more entries than asked, never fewer; the cost is much lower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trim {
    /// What to keep.
    pub strategy: TrimStrategy,
    /// `~` rather than `=`.
    pub approximate: bool,
}

impl Trim {
    /// Keep the newest `n` entries, exactly.
    pub const fn max_len(n: u64) -> Self {
        Trim {
            strategy: TrimStrategy::MaxLen(n),
            approximate: false,
        }
    }

    /// Drop entries with ids below `id`, exactly.
    pub const fn min_id(id: StreamId) -> Self {
        Trim {
            strategy: TrimStrategy::MinId(id),
            approximate: false,
        }
    }

    /// Lets the broker keep more than asked when that is cheaper (`~`).
    #[must_use]
    pub const fn approximate(mut self) -> Self {
        self.approximate = true;
        self
    }
}

/// An id range, as `XRANGE` and `XPENDING` take it: `Unbounded` is `-` or
/// `+`, `Excluded(id)` is `(id`.
pub type IdRange = (Bound<StreamId>, Bound<StreamId>);

/// The whole id space, `- +`.
pub const ALL_IDS: IdRange = (Bound::Unbounded, Bound::Unbounded);

/// An entry appended at most once per marker within a time window: the way
/// to make a retried dispatch (after a time-out left its outcome unknown)
/// add nothing the second time.
///
/// ```
/// use std::time::Duration;
/// use crewq_core::{Fields, NewEntry, OnceEntry};
/// let once = OnceEntry::new(
///     NewEntry::new("agent:tasks:research", Fields::new().with("data", "{}")),
///     "agent:dispatched:research:task-1",
///     Duration::from_secs(3600),
/// );
/// assert_eq!(once.marker, "agent:dispatched:research:task-1");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnceEntry {
    /// The entry to append.
    pub entry: NewEntry,
    /// The key remembering that it was appended (on Redis Cluster, in the
    /// stream's hash slot).
    pub marker: String,
    /// How long the marker is remembered; at least 1 ms.
    pub window: std::time::Duration,
}

impl OnceEntry {
    /// Appends `entry` unless `marker` was set within `window`.
    pub fn new(entry: NewEntry, marker: impl Into<String>, window: std::time::Duration) -> Self {
        OnceEntry {
            entry,
            marker: marker.into(),
            window,
        }
    }
}

/// What [`OnceEntry`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddedOnce {
    /// Appended with this id; the marker now remembers it.
    Added(StreamId),
    /// The marker was set: nothing was appended; this is the id it recorded.
    Duplicate(StreamId),
}

impl AddedOnce {
    /// The entry's id, whether appended now or before.
    pub fn id(&self) -> StreamId {
        match self {
            AddedOnce::Added(id) | AddedOnce::Duplicate(id) => *id,
        }
    }
}
