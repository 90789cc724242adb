//! Handler runs as the history shows them, each tied to the entry it ran
//! and to how it ended: what the invariants about runs (`overlap.rs`,
//! `success.rs`) judge.

use std::collections::BTreeMap;

use crewq_core::StreamId;

use crate::crew::task_index;
use crate::history::Event;
use crate::run::RunRecord;

use super::rollback::Forgetting;

/// One handler call.
#[derive(Clone, Debug)]
pub(super) struct Run {
    pub task: u32,
    pub consumer: String,
    pub call: u32,
    /// The entry it ran (stream and id): the last one of its task delivered
    /// to its consumer before it began (none if no delivery was seen).
    pub entry: Option<(String, StreamId)>,
    /// When that entry was delivered (read or claimed) to its consumer.
    pub delivered_ms: u64,
    pub start_ms: u64,
    /// When it ended: returned, or cut off by a crash or the end of a stop's
    /// grace; `None` while it never ended in the history.
    pub end_ms: Option<u64>,
    /// Whether it returned success.
    pub ok: bool,
}

/// Every handler run of a history, in start order.
///
/// A delivery of an entry a rollback then forgot is tied to the task that
/// entry was: the final state's journal no longer holds it, and a later
/// entry may hold its id.
pub(super) fn runs(record: &RunRecord, rollbacks: &Forgetting) -> Vec<Run> {
    let entries = entry_tasks(record);
    let task_streams = record.state.task_streams();
    // (consumer, task) -> the entry last delivered, and when.
    let mut delivered: BTreeMap<(String, u32), ((String, StreamId), u64)> = BTreeMap::new();
    let mut runs: Vec<Run> = Vec::new();
    // (task, call) -> index in `runs`, while under way.
    let mut open: BTreeMap<(u32, u32), usize> = BTreeMap::new();
    for (index, stamped) in record.history.events().iter().enumerate() {
        let at = stamped.at_ms;
        match &stamped.event {
            Event::Delivered {
                stream,
                consumer,
                id,
            } if task_streams.contains(stream) => {
                let entry = (stream.clone(), *id);
                let task = if rollbacks.forgot(index) {
                    rollbacks.task_of(stream, *id)
                } else {
                    entries.get(&entry).copied()
                };
                if let Some(task) = task {
                    delivered.insert((consumer.clone(), task), (entry, at));
                }
            }
            Event::HandlerStarted {
                task,
                consumer,
                call,
            } => {
                let last = delivered.get(&(consumer.clone(), *task));
                open.insert((*task, *call), runs.len());
                runs.push(Run {
                    task: *task,
                    consumer: consumer.clone(),
                    call: *call,
                    entry: last.map(|(entry, _)| entry.clone()),
                    delivered_ms: last.map_or(at, |(_, ms)| *ms),
                    start_ms: at,
                    end_ms: None,
                    ok: false,
                });
            }
            Event::HandlerEnded { task, call, ok, .. } => {
                if let Some(run) = open.remove(&(*task, *call)).and_then(|n| runs.get_mut(n)) {
                    run.end_ms = Some(at);
                    run.ok = *ok;
                }
            }
            Event::Crashed { consumer, .. } | Event::Stopped { consumer, .. } => {
                // Its attempts were cut off with it.
                open.retain(|_, n| match runs.get_mut(*n) {
                    Some(run) if run.consumer == *consumer => {
                        run.end_ms = Some(at);
                        false
                    }
                    _ => true,
                });
            }
            _ => {}
        }
    }
    runs
}

/// Which task each task-stream entry is, from the final state's journal
/// of appends.
fn entry_tasks(record: &RunRecord) -> BTreeMap<(String, StreamId), u32> {
    let mut map = BTreeMap::new();
    for agent in &record.state.agents {
        for (id, task_id) in &agent.entries {
            if let Some(task) = task_id.as_deref().and_then(task_index) {
                map.insert((agent.keys.tasks.clone(), *id), task);
            }
        }
    }
    map
}
