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
    /// to its consumer before it began, or, when one delivery brought
    /// several entries of the task, the first of them no run started on
    /// yet (none if no delivery was seen).
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
    // (consumer, task) -> the entries of the task delivered to the
    // consumer at the moment of the last delivery, each with whether a run
    // started on it (see `Delivered::run_of`).
    let mut delivered: BTreeMap<(String, u32), Delivered> = BTreeMap::new();
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
                    let of = delivered.entry((consumer.clone(), task)).or_default();
                    of.deliver(entry, at);
                }
            }
            Event::HandlerStarted {
                task,
                consumer,
                call,
                entry,
            } => {
                let stream = record.state.task_stream_of(*task);
                let last = delivered
                    .get_mut(&(consumer.clone(), *task))
                    .and_then(|of| of.run_of(entry.map(|id| (stream.clone(), id))));
                let last = last.as_ref();
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
pub(super) fn entry_tasks(record: &RunRecord) -> BTreeMap<(String, StreamId), u32> {
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

/// What one consumer was last delivered of one task: usually one entry; two
/// or more when one read (or claim) delivered several entries of the task
/// at once, as after its group was destroyed and made again (its replayed
/// first entry beside a retry).
#[derive(Debug, Default)]
struct Delivered {
    /// When the last delivery happened.
    at_ms: u64,
    /// The entries delivered then, in order, each with whether a run
    /// started on it.
    entries: Vec<((String, StreamId), bool)>,
}

impl Delivered {
    /// Notes `entry` delivered at `at_ms`: it joins the entries delivered
    /// at that moment, or starts anew.
    fn deliver(&mut self, entry: (String, StreamId), at_ms: u64) {
        if at_ms != self.at_ms || self.entries.is_empty() {
            self.entries.clear();
            self.at_ms = at_ms;
        }
        self.entries.retain(|(e, _)| *e != entry);
        self.entries.push((entry, false));
    }

    /// The entry a run starting now runs, and when it was delivered: the
    /// worker starts the entries of one delivery in order, so the first one
    /// no run started on yet; once each has one, the last (a run again
    /// without a new delivery, as before).
    ///
    /// When the run names its entry (`ran`), that one (a worker with a rate
    /// limit starts entries as permits come, not always in delivery order).
    fn run_of(&mut self, ran: Option<(String, StreamId)>) -> Option<((String, StreamId), u64)> {
        let at = self.at_ms;
        if let Some(ran) = ran {
            if let Some((_, started)) = self.entries.iter_mut().find(|(e, _)| *e == ran) {
                *started = true;
            }
            return Some((ran, at));
        }
        if let Some((entry, started)) = self.entries.iter_mut().find(|(_, started)| !*started) {
            *started = true;
            return Some((entry.clone(), at));
        }
        self.entries.last().map(|(entry, _)| (entry.clone(), at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64) -> (String, StreamId) {
        ("agent:tasks:research".to_owned(), StreamId::new(1, seq))
    }

    /// Two entries of one task in one delivery (its first, replayed after
    /// its group was made again, and its retry): the runs that start on
    /// them take them in order, not both the last one (`crewq sim --seed
    /// 1109 --swarm` once reported a success dropped for it).
    #[test]
    fn entries_of_one_task_delivered_at_once_are_run_in_order() {
        let mut delivered = Delivered::default();
        delivered.deliver(entry(7), 213);
        delivered.deliver(entry(10), 213);
        assert_eq!(delivered.run_of(None), Some((entry(7), 213)));
        assert_eq!(delivered.run_of(None), Some((entry(10), 213)));
        // A run again without a new delivery: the last, as before.
        assert_eq!(delivered.run_of(None), Some((entry(10), 213)));
        // A later delivery starts anew.
        delivered.deliver(entry(12), 300);
        assert_eq!(delivered.run_of(None), Some((entry(12), 300)));
        assert_eq!(delivered.run_of(None), Some((entry(12), 300)));
    }
}
