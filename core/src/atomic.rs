//! The one atomic step: acknowledge entries and append entries together.

use crate::{Delay, NewEntry, StreamId};

/// Acknowledgements of some entries of one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The stream key.
    pub stream: String,
    /// The group.
    pub group: String,
    /// The ids to acknowledge.
    pub ids: Vec<StreamId>,
}

impl Ack {
    /// Acknowledges `ids` in `group` of `stream`.
    pub fn new(stream: impl Into<String>, group: impl Into<String>, ids: Vec<StreamId>) -> Self {
        Ack {
            stream: stream.into(),
            group: group.into(),
            ids,
        }
    }
}

/// Entries to delete from one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delete {
    /// The stream key.
    pub stream: String,
    /// The ids to delete.
    pub ids: Vec<StreamId>,
}

impl Delete {
    /// Deletes `ids` from `stream`.
    pub fn new(stream: impl Into<String>, ids: Vec<StreamId>) -> Self {
        Delete {
            stream: stream.into(),
            ids,
        }
    }
}

/// Appends, acknowledgements and deletions applied as one step, so "publish
/// the result and ack the task", "move to the dead-letter stream and ack" or
/// "replay a dead letter and delete it" is never seen half done and never
/// left half done by a crash or a dropped connection.
///
/// They apply in that order: appends, then acks, then deletes. Should
/// something fail inside the step (which Redis does not roll back), an
/// outcome is then written twice rather than lost.
///
/// The step is checked before anything is applied: appends must use
/// [`AddId::Auto`](crate::AddId::Auto) and have fields, because an explicit id
/// could fail inside the step and Redis does not roll a transaction back. What
/// no check can catch beforehand still fails after the rest applied on Redis:
/// a key of another type than a stream (`WRONGTYPE`), or a stream whose last
/// id is the largest possible. crewq's own keys are always streams with
/// automatic ids, so neither happens to them. The memory backend does as
/// Redis does there: the other commands apply and the step fails.
///
/// ```
/// use crewq_core::{Ack, AckAndAdd, Fields, NewEntry, StreamId};
/// let step = AckAndAdd::new()
///     .ack(Ack::new("agent:tasks:research", "research", vec![StreamId::new(1, 0)]))
///     .append(NewEntry::new("agent:results", Fields::new().with("data", "{}")));
/// assert_eq!((step.acks.len(), step.adds.len()), (1, 1));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AckAndAdd {
    /// Acknowledgements, applied after the appends, in order.
    pub acks: Vec<Ack>,
    /// Appends, applied first, in order.
    pub adds: Vec<NewEntry>,
    /// Deletions, applied last, in order.
    pub deletes: Vec<Delete>,
}

impl AckAndAdd {
    /// An empty step.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds acknowledgements.
    #[must_use]
    pub fn ack(mut self, ack: Ack) -> Self {
        self.acks.push(ack);
        self
    }

    /// Adds an append.
    #[must_use]
    pub fn append(mut self, entry: NewEntry) -> Self {
        self.adds.push(entry);
        self
    }

    /// Adds a deletion.
    #[must_use]
    pub fn delete(mut self, delete: Delete) -> Self {
        self.deletes.push(delete);
        self
    }
}

/// What an [`AckAndAdd`] did.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AckAndAddReply {
    /// For each [`Ack`] in order, how many of its ids were removed from the
    /// pending list (as `XACK` replies).
    pub acked: Vec<u64>,
    /// For each append in order, the id it got.
    pub ids: Vec<StreamId>,
    /// For each [`Delete`] in order, how many entries existed and were
    /// deleted (as `XDEL` replies).
    pub deleted: Vec<u64>,
}

/// Settles entries a consumer holds, guarded by ownership: each item whose
/// id is still pending **and owned by** `consumer` has its appends written
/// and is then acknowledged; an item the consumer no longer owns (reclaimed
/// by another consumer after its lease ran out, or already acknowledged) is
/// left untouched. Each item is one atomic step (its ownership check, its
/// writes and its acknowledgement), and succeeds or fails alone
/// ([`Settled::Failed`]); a backend may run a large call as several atomic
/// chunks (Redis: 128 items per script call).
///
/// This is how a worker records an outcome without ever recording a second
/// one after it turned into a zombie: the ownership check and the writes
/// cannot be separated by another consumer's claim.
///
/// ```
/// use crewq_core::{Fields, NewEntry, Settle, SettleItem, StreamId};
/// let settle = Settle::new("agent:tasks:research", "research", "worker-1").item(
///     SettleItem::new(StreamId::new(1, 0))
///         .append(NewEntry::new("agent:results", Fields::new().with("data", "{}"))),
/// );
/// assert_eq!(settle.items.len(), 1);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settle {
    /// The stream the entries were read from.
    pub stream: String,
    /// The group they were read in.
    pub group: String,
    /// The consumer that must still own them.
    pub consumer: String,
    /// What to settle, in order.
    pub items: Vec<SettleItem>,
}

impl Settle {
    /// Nothing to settle yet.
    pub fn new(
        stream: impl Into<String>,
        group: impl Into<String>,
        consumer: impl Into<String>,
    ) -> Self {
        Settle {
            stream: stream.into(),
            group: group.into(),
            consumer: consumer.into(),
            items: Vec::new(),
        }
    }

    /// Adds an item.
    #[must_use]
    pub fn item(mut self, item: SettleItem) -> Self {
        self.items.push(item);
        self
    }
}

/// One entry to settle and the entries that record its outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettleItem {
    /// The pending entry.
    pub id: StreamId,
    /// Appended (with automatic ids) before the entry is acknowledged.
    pub appends: Vec<NewEntry>,
    /// Added to delayed sets, after the appends and before the
    /// acknowledgement, in the same atomic step: a retry scheduled for
    /// later, so it waits without holding a worker's slot and no crash
    /// between acknowledging the entry and scheduling its retry loses it.
    pub delays: Vec<Delay>,
}

impl SettleItem {
    /// Acknowledges `id` with nothing appended.
    pub fn new(id: StreamId) -> Self {
        SettleItem {
            id,
            appends: Vec::new(),
            delays: Vec::new(),
        }
    }

    /// Appends `entry` when the item is settled.
    #[must_use]
    pub fn append(mut self, entry: NewEntry) -> Self {
        self.appends.push(entry);
        self
    }

    /// Adds `delay` to its delayed set when the item is settled.
    #[must_use]
    pub fn delay(mut self, delay: Delay) -> Self {
        self.delays.push(delay);
        self
    }
}

/// What [`Settle`] did with one item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settled {
    /// It was owned: its appends got these ids and it was acknowledged.
    Done(Vec<StreamId>),
    /// It was not pending for the consumer any more; nothing was written.
    NotOwned,
    /// Writing this item's appends failed (the server's error text, such as
    /// a `WRONGTYPE` destination or `OOM`): it was not acknowledged and stays
    /// pending; the other items of the call are unaffected. An item with
    /// several appends may have had its earlier appends written.
    Failed(String),
}
