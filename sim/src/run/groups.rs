//! Injected destructions of a worker group (issue 9, a group destroyed
//! mid-run): an operator's `XGROUP DESTROY` under a running crew. The
//! workers must make the group again where nothing it still needed is lost;
//! what they had finished may run again, which the checker reports apart.
//! And deletions of a whole task stream (`DEL`), its group with it: what
//! the workers held must be dead-lettered, what was unread is lost to the
//! delete (reported apart).

use std::collections::BTreeSet;
use std::time::Duration;

use crewq_core::{ALL_IDS, AgentKeys, Broker, Clock, PendingQuery, StreamId};
use crewq_memory::MemoryBroker;

use crate::history::{Event, Recorder};
use crate::recorder::RecordingBroker;

/// Destroys `keys`' worker group, without faults, and records it in the
/// history. Returns whether there was a group to destroy.
pub(crate) async fn destroy<B: Broker>(
    broker: &RecordingBroker<B>,
    keys: &AgentKeys,
    recorder: &Recorder,
) -> bool {
    let destroyed = broker
        .group_destroy(&keys.tasks, &keys.group)
        .await
        .unwrap_or(false);
    if destroyed {
        recorder.record(Event::GroupDestroyed {
            stream: keys.tasks.clone(),
        });
    }
    destroyed
}

/// The most 1 ms steps a stream deletion waits for a millisecond in which
/// nothing was appended to the stream yet.
const FRESH_MS_TRIES: u32 = 1_000;

/// Deletes `keys`' task stream (`DEL`) on `memory`, without faults, and
/// records what went with it: its group (`GroupDestroyed`), its entries
/// split by whether the group's pending list named them
/// (`StreamDeleted`). Returns whether there was a stream to delete.
///
/// It waits (1 ms at a time) for a millisecond of `clock` in which nothing
/// was appended to the stream yet: the stream made again then never hands
/// out an id of the deleted one (see
/// [`StreamDeleteAt`](crate::plan::StreamDeleteAt)). The reads and the
/// deletion that follow never yield (the memory broker answers at once),
/// so nothing happens in between.
pub(crate) async fn delete_stream<B: Broker>(
    memory: &MemoryBroker,
    broker: &RecordingBroker<B>,
    keys: &AgentKeys,
    clock: &dyn Clock,
    recorder: &Recorder,
) -> bool {
    let mut fresh = false;
    for _ in 0..FRESH_MS_TRIES {
        let Ok(info) = broker.info_stream(&keys.tasks).await else {
            // No stream (yet): nothing to delete.
            return false;
        };
        if info.last_generated_id.ms < clock.now_ms() {
            fresh = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    if !fresh {
        return false;
    }
    let entries: BTreeSet<StreamId> = match broker.xrange(&keys.tasks, ALL_IDS, None).await {
        Ok(entries) => entries.into_iter().map(|e| e.id).collect(),
        Err(_) => return false,
    };
    let query = PendingQuery::new(100_000).range(ALL_IDS);
    let pending: BTreeSet<StreamId> = match broker.pending(&keys.tasks, &keys.group, &query).await {
        Ok(rows) => rows.into_iter().map(|row| row.id).collect(),
        Err(_) => BTreeSet::new(),
    };
    if !memory.delete_stream(&keys.tasks) {
        return false;
    }
    let (pending, unread): (Vec<StreamId>, Vec<StreamId>) =
        entries.into_iter().partition(|id| pending.contains(id));
    recorder.record(Event::GroupDestroyed {
        stream: keys.tasks.clone(),
    });
    recorder.record(Event::StreamDeleted {
        stream: keys.tasks.clone(),
        pending,
        unread,
    });
    true
}
