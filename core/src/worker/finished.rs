//! What a consumer group's pending list proves finished: the worker's
//! knowledge, kept across the group's destruction, of entries not to run
//! again when a re-created group delivers them again (see `group.rs`).

use std::collections::BTreeSet;

use crate::StreamId;

/// Entries known finished from one pending list: those between its oldest
/// and its newest entry that are not on it. Pending ids never exceed the
/// group's last-delivered id, so each of them was delivered; no longer
/// pending, it was acknowledged, its outcome recorded for good. One
/// `XPENDING` call, so no race with the group's life.
#[derive(Clone, Debug, Default)]
pub(crate) struct Finished {
    /// The oldest and the newest pending id (both excluded).
    span: Option<(StreamId, StreamId)>,
    pending: BTreeSet<StreamId>,
}

impl Finished {
    /// `pending`: one pending list, in id order (a truncated one spans less).
    pub fn from_pending(pending: BTreeSet<StreamId>) -> Finished {
        let span = pending.first().zip(pending.last()).map(|(a, b)| (*a, *b));
        Finished { span, pending }
    }

    pub fn contains(&self, id: StreamId) -> bool {
        self.span
            .is_some_and(|(oldest, newest)| oldest < id && id < newest)
            && !self.pending.contains(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_between_pending_ones_and_not_pending_are_finished() {
        let id = |ms| StreamId::new(ms, 0);
        let finished = Finished::from_pending([id(2), id(5), id(9)].into());
        let known: Vec<u64> = (0..12).filter(|ms| finished.contains(id(*ms))).collect();
        // Not the pending ones, nothing at or below the oldest (below the
        // floor: never delivered again), nothing at or above the newest
        // (maybe not yet delivered).
        assert_eq!(known, [3, 4, 6, 7, 8]);
        // One pending entry, or none, spans nothing.
        let one = Finished::from_pending([id(4)].into());
        assert!((0..12).all(|ms| !one.contains(id(ms))));
        let none = Finished::from_pending(BTreeSet::new());
        assert!((0..12).all(|ms| !none.contains(id(ms))));
    }
}
