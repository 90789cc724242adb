//! Injected trims of a task stream (issue 9, retention pressure): an
//! operator's `XTRIM`, or an unsafe retention opt-in, racing readers and
//! long tasks. Entries cut while pending must be dead-lettered
//! `deleted_while_pending`; entries cut before any delivery are lost to the
//! trim, which the checker reports apart from crewq's violations.

use crewq_core::{AgentKeys, Broker, Trim};

use crate::plan::TrimCut;
use crate::recorder::RecordingBroker;

/// Applies `cut` to `keys`' task stream, without faults (the history
/// records what it removed). Returns how many entries it removed.
pub(crate) async fn trim<B: Broker>(
    broker: &RecordingBroker<B>,
    keys: &AgentKeys,
    cut: TrimCut,
) -> u64 {
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
