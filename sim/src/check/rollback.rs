//! What broker rollbacks did, read before any judgement: which dispatches
//! and deliveries were of entries a rollback then forgot, and which tasks
//! those entries were, and the first result it forgot of each task. (The
//! results, acknowledgements and dead letters it forgot are left out of the
//! journal the final state is read from: their tasks run again and are
//! judged on what the broker kept; only a gather may have seen a forgotten
//! result first.)
//!
//! A rollback forgets every append since its snapshot, and the ids it
//! handed out can be handed out again (Redis's `*` follows the restored
//! last id), so an id alone does not name an entry across a rollback. Two
//! entries of one stream never share an id while both exist, so a delivery
//! names a forgotten entry exactly when the next rollback forgot its id; a
//! dispatch also when the rollback just before it forgot its id and that
//! entry was the same task (its reply came back after the rollback).

use std::collections::{BTreeMap, BTreeSet};

use crewq_core::{StreamId, TaskStatus, WireCodec};
use serde_json::Value;

use crate::crew::task_index;
use crate::history::Event;
use crate::run::RunRecord;

type Key = (String, StreamId);

/// The rollbacks of one run, as the checker needs them.
#[derive(Debug, Default)]
pub(super) struct Forgetting {
    /// Indexes of the history's `Dispatched` and `Delivered` events whose
    /// entry a rollback forgot.
    forgotten_refs: BTreeSet<usize>,
    /// The task of each forgotten task-stream entry.
    tasks: BTreeMap<Key, u32>,
    /// The first forgotten result of each task: a supervisor may have
    /// gathered it before the rollback.
    pub first_results: BTreeMap<u32, TaskStatus>,
    /// Each rollback: when its snapshot was taken, and its event's index.
    windows: Vec<(u64, usize)>,
}

impl Forgetting {
    pub fn gather(record: &RunRecord) -> Forgetting {
        let mut forgetting = Forgetting::default();
        let codec = WireCodec::with_max_bytes(usize::MAX);
        let task_streams = record.state.task_streams();
        for (stream, id, fields) in &record.forgotten {
            if task_streams.contains(stream) {
                let task = codec.decode_task::<Value>(fields).ok();
                if let Some(task) = task.and_then(|t| task_index(&t.task_id)) {
                    forgetting.tasks.insert((stream.clone(), *id), task);
                }
            } else if let Ok(result) = codec.decode_result(fields)
                && let Some(task) = task_index(&result.task_id)
            {
                let first = forgetting.first_results.entry(task);
                first.or_insert(result.status);
            }
        }
        let events = record.history.events();
        let rollbacks: Vec<(usize, BTreeSet<Key>)> = events
            .iter()
            .enumerate()
            .filter_map(|(index, stamped)| match &stamped.event {
                Event::RolledBack {
                    snapshot_ms,
                    forgotten,
                    ..
                } => {
                    forgetting.windows.push((*snapshot_ms, index));
                    Some((index, forgotten.iter().cloned().collect()))
                }
                _ => None,
            })
            .collect();
        for (index, stamped) in events.iter().enumerate() {
            // The rollbacks just before and just after this event.
            let next = rollbacks.iter().find(|(at, _)| *at > index);
            let previous = rollbacks.iter().rev().find(|(at, _)| *at < index);
            let forgot = |key: &Key| next.is_some_and(|(_, keys)| keys.contains(key));
            let forgotten = match &stamped.event {
                Event::Delivered { stream, id, .. } => forgot(&(stream.clone(), *id)),
                Event::Dispatched { task, entry } => {
                    let key = (record.state.task_stream_of(*task), *entry);
                    // Its reply may arrive after the rollback that forgot
                    // it; a later entry under the same id is another task's.
                    let forgotten = forgot(&key)
                        || previous.is_some_and(|(_, keys)| {
                            keys.contains(&key)
                                && forgetting.tasks.get(&key).is_none_or(|t| t == task)
                        });
                    if forgotten {
                        // Undecodable entries are known by their dispatch.
                        forgetting.tasks.entry(key).or_insert(*task);
                    }
                    forgotten
                }
                _ => false,
            };
            if forgotten {
                forgetting.forgotten_refs.insert(index);
            }
        }
        forgetting
    }

    /// Whether the event at `index` (a dispatch or a delivery) names an
    /// entry a rollback forgot.
    pub fn forgot(&self, index: usize) -> bool {
        self.forgotten_refs.contains(&index)
    }

    /// Whether the event at `index`, at `at_ms`, happened in a rollback's
    /// window: after its snapshot, before its restore. The broker forgot
    /// what it did, so it may happen again.
    pub fn undone(&self, index: usize, at_ms: u64) -> bool {
        self.windows
            .iter()
            .any(|&(snapshot_ms, restored)| snapshot_ms <= at_ms && index < restored)
    }

    /// The task of forgotten entry `id` of `stream`.
    pub fn task_of(&self, stream: &str, id: StreamId) -> Option<u32> {
        self.tasks.get(&(stream.to_owned(), id)).copied()
    }
}
