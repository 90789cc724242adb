//! Injected trims of a task stream (issue 9, retention pressure): an
//! operator's `XTRIM`, or an unsafe retention opt-in, racing readers and
//! long tasks. Entries cut while pending must be dead-lettered
//! `deleted_while_pending`; entries cut before any delivery are lost to the
//! trim, which the checker reports apart from crewq's violations.

use std::collections::BTreeSet;

use crewq_core::{ALL_IDS, AgentKeys, Broker, PendingQuery, StreamId, Trim};

use crate::history::{Event, Recorder};
use crate::plan::TrimCut;
use crate::recorder::RecordingBroker;

/// Applies `cut` to `keys`' task stream, without faults (the history
/// records what it removed, and which pending entries it cut). Returns how
/// many entries it removed.
pub(crate) async fn trim<B: Broker>(
    broker: &RecordingBroker<B>,
    keys: &AgentKeys,
    cut: TrimCut,
    recorder: &Recorder,
) -> u64 {
    let before = ids(broker, keys).await;
    let removed = apply(broker, keys, cut).await;
    if removed == 0 {
        return 0;
    }
    // What the cut removed, split by whether the group's pending list still
    // names it (crewq must then report it) or not (finished, or unread by
    // the group's current life: lost to the trim if it had no outcome).
    let after = ids(broker, keys).await;
    let query = PendingQuery::new(100_000).range(ALL_IDS);
    let pending: BTreeSet<StreamId> = match broker.pending(&keys.tasks, &keys.group, &query).await {
        Ok(entries) => entries.into_iter().map(|e| e.id).collect(),
        Err(_) => BTreeSet::new(),
    };
    let (pending, unread): (Vec<StreamId>, Vec<StreamId>) = before
        .difference(&after)
        .partition(|id| pending.contains(id));
    recorder.record(Event::Cut {
        stream: keys.tasks.clone(),
        pending,
        unread,
    });
    removed
}

/// The ids in `keys`' task stream.
async fn ids<B: Broker>(broker: &RecordingBroker<B>, keys: &AgentKeys) -> BTreeSet<StreamId> {
    match broker.xrange(&keys.tasks, ALL_IDS, None).await {
        Ok(entries) => entries.into_iter().map(|e| e.id).collect(),
        Err(_) => BTreeSet::new(),
    }
}

async fn apply<B: Broker>(broker: &RecordingBroker<B>, keys: &AgentKeys, cut: TrimCut) -> u64 {
    let trim = match cut {
        TrimCut::MaxLen(len) => Trim::max_len(len),
        TrimCut::Delivered => {
            let Ok(groups) = broker.info_groups(&keys.tasks).await else {
                // No stream or no group yet: nothing delivered to cut.
                return 0;
            };
            let Some(next) = groups
                .iter()
                .find(|g| g.name == keys.group)
                .and_then(|g| g.last_delivered_id.successor())
            else {
                return 0;
            };
            Trim::min_id(next)
        }
    };
    broker.xtrim(&keys.tasks, trim).await.unwrap_or(0)
}
