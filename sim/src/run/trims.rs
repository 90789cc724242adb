//! Injected trims of a task stream (issue 9, retention pressure): an
//! operator's `XTRIM`, or an unsafe retention opt-in, racing readers and
//! long tasks. Entries cut while pending must be dead-lettered
//! `deleted_while_pending`; entries cut before any delivery are lost to the
//! trim, which the checker reports apart from crewq's violations.

use std::ops::Bound;

use crewq_core::{ALL_IDS, AgentKeys, Broker, PendingQuery, Trim};

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
    let removed = apply(broker, keys, cut).await;
    if removed == 0 {
        return 0;
    }
    // The pending entries now gone from the stream: what the pending list
    // alone still names (a group destroyed next takes that along too).
    let query = PendingQuery::new(100_000).range(ALL_IDS);
    let pending = broker.pending(&keys.tasks, &keys.group, &query).await;
    let mut cut_ids = Vec::new();
    for entry in pending.into_iter().flatten() {
        let gone = broker
            .xrange(
                &keys.tasks,
                (Bound::Included(entry.id), Bound::Included(entry.id)),
                Some(1),
            )
            .await
            .is_ok_and(|found| found.is_empty());
        if gone {
            cut_ids.push(entry.id);
        }
    }
    if !cut_ids.is_empty() {
        recorder.record(Event::CutWhilePending {
            stream: keys.tasks.clone(),
            ids: cut_ids,
        });
    }
    removed
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
