//! [`Broker::autoclaim_recorded`](crate::Broker::autoclaim_recorded): an
//! `XAUTOCLAIM` that records each pending entry it finds deleted in the same
//! atomic step, so that a crash or a lost reply right after the claim cannot
//! make the deletion silent.

use std::time::Duration;

use crate::{AddedOnce, AutoClaimed, Error, NewEntry, OnceEntry, Result, StreamId};

/// An `XAUTOCLAIM` call: claim pending entries of `group` on `stream` idle at
/// least `min_idle`, scanning from `start` (inclusive), up to `count`.
///
/// ```
/// use std::time::Duration;
/// use crewq_core::{AutoClaim, StreamId};
/// let scan = AutoClaim::new("agent:tasks:research", "research", "worker-1")
///     .min_idle(Duration::from_secs(30))
///     .count(16);
/// assert_eq!((scan.start, scan.count), (StreamId::ZERO, 16));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoClaim {
    /// The stream key.
    pub stream: String,
    /// The group.
    pub group: String,
    /// The claiming consumer; created in the group when it claims.
    pub consumer: String,
    /// Entries idle less than this are skipped.
    pub min_idle: Duration,
    /// Where the scan of the pending list starts (inclusive).
    pub start: StreamId,
    /// `COUNT`: at most this many entries claimed or found deleted.
    pub count: usize,
}

impl AutoClaim {
    /// A scan from `0-0` of entries idle any time, `COUNT` 100 (Redis's
    /// default).
    pub fn new(
        stream: impl Into<String>,
        group: impl Into<String>,
        consumer: impl Into<String>,
    ) -> Self {
        AutoClaim {
            stream: stream.into(),
            group: group.into(),
            consumer: consumer.into(),
            min_idle: Duration::ZERO,
            start: StreamId::ZERO,
            count: 100,
        }
    }

    /// Sets [`min_idle`](Self::min_idle).
    #[must_use]
    pub fn min_idle(mut self, min_idle: Duration) -> Self {
        self.min_idle = min_idle;
        self
    }

    /// Sets [`start`](Self::start).
    #[must_use]
    pub fn start(mut self, start: StreamId) -> Self {
        self.start = start;
        self
    }

    /// Sets [`count`](Self::count).
    #[must_use]
    pub fn count(mut self, count: usize) -> Self {
        self.count = count;
        self
    }
}

/// What [`Broker::autoclaim_recorded`](crate::Broker::autoclaim_recorded)
/// appends for each pending id it finds deleted: a copy of `entry` whose
/// field `id_field` holds that id, at most once per id within `window`
/// (as [`OnceEntry`], under the marker `marker_prefix` + id).
///
/// ```
/// use std::time::Duration;
/// use crewq_core::{DeletedRecord, Fields, NewEntry, StreamId};
/// let template = NewEntry::new("dlq", Fields::new().with("reason", "deleted"));
/// let record = DeletedRecord::new(template, "entry_id", "dlq:gone:", Duration::from_secs(60));
/// let once = record.for_id(StreamId::new(7, 0));
/// assert_eq!(once.marker, "dlq:gone:7-0");
/// assert_eq!(once.entry.fields.get_str("entry_id"), Some("7-0"));
/// assert_eq!(once.entry.fields.get_str("reason"), Some("deleted"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeletedRecord {
    /// The entry appended per deleted id; its first field named
    /// [`id_field`](Self::id_field) is where the id goes.
    pub entry: NewEntry,
    /// The field that holds the deleted id.
    pub id_field: String,
    /// The marker of a record is this followed by the deleted id (on Redis
    /// Cluster, in the claimed stream's hash slot, as crewq's keyspace puts
    /// its dead-letter keys).
    pub marker_prefix: String,
    /// How long a record's marker is remembered; at least 1 ms.
    pub window: Duration,
}

impl DeletedRecord {
    /// Records `entry` per deleted id, the id in `id_field` (appended to
    /// the entry's fields when it has no such field).
    pub fn new(
        mut entry: NewEntry,
        id_field: impl Into<String>,
        marker_prefix: impl Into<String>,
        window: Duration,
    ) -> Self {
        let id_field = id_field.into();
        if entry.fields.get(&id_field).is_none() {
            entry.fields.push(id_field.clone(), "");
        }
        DeletedRecord {
            entry,
            id_field,
            marker_prefix: marker_prefix.into(),
            window,
        }
    }

    /// The index, among the entry's fields, of the one holding the id.
    pub fn id_slot(&self) -> Option<usize> {
        self.entry
            .fields
            .iter()
            .position(|(name, _)| name.as_ref() == self.id_field.as_bytes())
    }

    /// The append-once that records `id`.
    pub fn for_id(&self, id: StreamId) -> OnceEntry {
        let slot = self.id_slot();
        let mut entry = self.entry.clone();
        entry.fields = crate::Fields::new();
        for (index, (name, value)) in self.entry.fields.iter().enumerate() {
            if Some(index) == slot {
                entry.fields.push(name.clone(), id.to_string());
            } else {
                entry.fields.push(name.clone(), value.clone());
            }
        }
        OnceEntry::new(entry, format!("{}{id}", self.marker_prefix), self.window)
    }
}

/// The reply of [`Broker::autoclaim_recorded`](crate::Broker::autoclaim_recorded):
/// the claim, and one record per deleted id, in the order of
/// [`AutoClaimed::deleted`].
#[derive(Debug)]
pub struct AutoClaimedRecorded {
    /// What `XAUTOCLAIM` replied.
    pub claim: AutoClaimed,
    /// Per deleted id: its record's id (appended now, or by an earlier call
    /// whose marker is still set), or why the append failed.
    pub records: Vec<Result<AddedOnce>>,
}

/// Checks what every backend rejects before an `autoclaim_recorded` applies
/// anything: a `count` out of Redis's range, and a malformed record.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for a `count` of 0 or above `LONG_MAX / 16`
/// (with Redis's text), a record with an explicit id, without fields, or
/// with a window under 1 ms.
pub fn validate_autoclaim_recorded(claim: &AutoClaim, record: &DeletedRecord) -> Result<()> {
    validate_autoclaim_count(&claim.stream, claim.count)?;
    if record.entry.id != crate::AddId::Auto {
        return Err(Error::InvalidArgument(format!(
            "a deleted-entry record needs an automatic id; got {:?} for '{}'",
            record.entry.id, record.entry.stream
        )));
    }
    crate::validate_once_entry(&record.for_id(StreamId::ZERO))
}

/// The largest `XAUTOCLAIM` COUNT Redis 7.0 accepts: `LONG_MAX / 16`.
const MAX_AUTOCLAIM_COUNT: u64 = i64::MAX.unsigned_abs() / 16;

/// Checks an `XAUTOCLAIM` COUNT as Redis 7.0 does.
///
/// # Errors
///
/// [`Error::InvalidArgument`] with Redis's text, `ERR COUNT must be > 0`,
/// for 0 or anything above `LONG_MAX / 16`.
pub fn validate_autoclaim_count(stream: &str, count: usize) -> Result<()> {
    // Redis 7.0 takes COUNT in 1..=LONG_MAX / 16 (16: the size of a stream
    // id, the larger of it and the attempts factor 10) and answers
    // anything else, even a number too large to parse, so.
    let in_range = u64::try_from(count).is_ok_and(|n| (1..=MAX_AUTOCLAIM_COUNT).contains(&n));
    if in_range {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "ERR COUNT must be > 0 (XAUTOCLAIM on '{stream}')"
        )))
    }
}
