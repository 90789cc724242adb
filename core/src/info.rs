//! The replies of `XINFO STREAM`, `XINFO GROUPS` and `XINFO CONSUMERS`, and
//! of the conditional consumer deletion that reads the last.

use std::time::Duration;

use crate::{StreamEntry, StreamId};

/// `XINFO STREAM`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    /// Entries in the stream.
    pub length: u64,
    /// The largest id ever added (kept when entries are deleted or trimmed).
    pub last_generated_id: StreamId,
    /// The largest id ever removed by `XDEL` (`0-0` if none).
    pub max_deleted_entry_id: StreamId,
    /// How many entries were ever added.
    pub entries_added: u64,
    /// The id of the first entry, `0-0` when empty.
    pub recorded_first_entry_id: StreamId,
    /// How many consumer groups.
    pub groups: u64,
    /// The first entry.
    pub first_entry: Option<StreamEntry>,
    /// The last entry.
    pub last_entry: Option<StreamEntry>,
}

/// One group of `XINFO GROUPS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupInfo {
    /// Group name.
    pub name: String,
    /// Consumers in the group.
    pub consumers: u64,
    /// Entries delivered and not yet acknowledged.
    pub pending: u64,
    /// The last id delivered to the group.
    pub last_delivered_id: StreamId,
    /// The logical read counter, `None` when Redis cannot know it.
    pub entries_read: Option<u64>,
    /// Entries not yet delivered to the group, `None` when Redis cannot
    /// tell: an `XDEL` in the unread part of the stream, or a read counter
    /// that is unknown (a group created without `ENTRIESREAD`) and cannot be
    /// estimated. Either way it is known again once the group has read the
    /// stream's last entry.
    pub lag: Option<u64>,
}

/// One consumer of `XINFO CONSUMERS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// Consumer name.
    pub name: String,
    /// Entries it owns in the pending list.
    pub pending: u64,
    /// Time since it last read or claimed, at ms resolution.
    pub idle: Duration,
}

/// What [`Broker::consumer_delete_if_idle`](crate::Broker::consumer_delete_if_idle)
/// found the consumer to be, in the same atomic step as the deletion it
/// did or did not make. Idle times are as [`ConsumerInfo::idle`] reports
/// them: since the consumer last read or claimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsumerPruned {
    /// It held nothing and had been idle at least the time asked: deleted.
    Deleted {
        /// How long it had been idle.
        idle: Duration,
    },
    /// It holds entries: kept, however long it has been idle, since
    /// deleting it would drop them from the pending list.
    Busy {
        /// Entries it owns in the pending list.
        pending: u64,
    },
    /// It holds nothing but read or claimed more recently than asked: kept.
    Active {
        /// How long it has been idle.
        idle: Duration,
    },
    /// The group has no consumer of that name (never created, or already
    /// deleted): nothing to do.
    Missing,
}

impl ConsumerPruned {
    /// Whether the consumer was deleted.
    pub fn is_deleted(self) -> bool {
        matches!(self, ConsumerPruned::Deleted { .. })
    }
}
