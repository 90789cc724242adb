//! "An entry deleted with its stream is reported"
//! ([`Invariant::DeletedWithStreamReported`]).
//!
//! A `DEL` of a task stream takes its entries and its group: nothing will
//! deliver a held entry again. A worker that learns the group went (a call
//! of it finds no group: `NoGroupSeen` in the history) while it holds such
//! an entry must dead-letter it `deleted_while_pending`, with its data,
//! whatever its run ended in. An entry pending to a worker when the stream
//! went is held by it if it started a handler of its task since the
//! delivery (the read's reply reached it) and neither crashed nor stopped.
//! Let through: the entry's task has an outcome anyway, the worker
//! crashed or was stopped (its attempts handed back) after the deletion, or
//! a rollback brought the stream back (the entry is then delivered again). A worker that never learns of it (it
//! holds nothing when it calls again, or a peer made the group again
//! first) records nothing, and the task is lost to the delete, which the
//! checker reports apart.

use std::collections::{BTreeMap, BTreeSet};

use crewq_core::{DeadLetterReason, StreamId};

use crate::crew::task_index;
use crate::history::{Event, Stamped};
use crate::report::{Invariant, Violation};
use crate::run::RunRecord;

/// The violations of [`Invariant::DeletedWithStreamReported`] in `record`.
pub(super) fn check(record: &RunRecord) -> Vec<Violation> {
    let letters = deleted_letters(record);
    let finished = finished_entries(record);
    let tasks: BTreeMap<(String, StreamId), u32> = record
        .state
        .agents
        .iter()
        .flat_map(|agent| {
            agent.entries.iter().filter_map(|(id, task)| {
                let task = task.as_deref().and_then(task_index)?;
                Some(((agent.keys.tasks.clone(), *id), task))
            })
        })
        .collect();
    let events = record.history.events();
    let mut violations = Vec::new();
    for (deletion, stamped) in events.iter().enumerate() {
        let Event::StreamDeleted {
            stream, pending, ..
        } = &stamped.event
        else {
            continue;
        };
        let after = &events[deletion..];
        if after
            .iter()
            .any(|e| matches!(e.event, Event::RolledBack { .. }))
        {
            continue;
        }
        for id in pending {
            let key = (stream.clone(), *id);
            if letters.contains(&key) || finished.contains(&key) {
                continue;
            }
            let Some(task) = tasks.get(&key).copied() else {
                continue;
            };
            let Some(holder) = holder(&events[..deletion], stream, *id, task) else {
                continue;
            };
            let learned = after.iter().find(|e| {
                matches!(&e.event, Event::NoGroupSeen { stream: of, consumer, .. }
                    if of == stream && consumer == holder)
            });
            let Some(learned) = learned else {
                continue;
            };
            if after.iter().any(|e| cut_short(&e.event, holder)) {
                continue;
            }
            violations.push(Violation {
                invariant: Invariant::DeletedWithStreamReported,
                task: None,
                detail: format!(
                    "entry {id} of {stream} went with its stream's DEL at {} ms while {holder} \
                     held it; {holder} found the group gone at {} ms ({}), and no \
                     deleted_while_pending dead letter of it was written",
                    stamped.at_ms, learned.at_ms, learned.event
                ),
            });
        }
    }
    violations
}

/// The consumer entry `id` (of `task`) of `stream` was last delivered to
/// in `before`, if it holds it: it started a handler of `task` since (so
/// the read's reply reached it), and neither crashed nor stopped after.
fn holder<'a>(before: &'a [Stamped], stream: &str, id: StreamId, task: u32) -> Option<&'a str> {
    let (at, consumer) = before
        .iter()
        .enumerate()
        .rev()
        .find_map(|(at, e)| match &e.event {
            Event::Delivered {
                stream: of,
                consumer,
                id: delivered,
            } if of == stream && *delivered == id => Some((at, consumer.as_str())),
            _ => None,
        })?;
    let since = &before[at..];
    let started = since.iter().any(|e| {
        matches!(&e.event, Event::HandlerStarted { task: of, consumer: by, .. }
            if *of == task && by == consumer)
    });
    (started && !since.iter().any(|e| ends(&e.event, consumer))).then_some(consumer)
}

/// Whether `event` ends what `consumer` holds: a crash, or a stop.
fn ends(event: &Event, consumer: &str) -> bool {
    match event {
        Event::Crashed { consumer: by, .. } | Event::Stopped { consumer: by, .. } => by == consumer,
        _ => false,
    }
}

/// Whether `event` may have cut `consumer`'s letter short: a crash, or a
/// stop that handed attempts back.
fn cut_short(event: &Event, consumer: &str) -> bool {
    match event {
        Event::Crashed { consumer: by, .. } => by == consumer,
        Event::Stopped {
            consumer: by,
            handed_back,
            ..
        } => by == consumer && *handed_back > 0,
        _ => false,
    }
}

/// The (stream, entry) of every task-stream entry whose task has an
/// outcome (a result or a dead letter): whatever became of the entry, its
/// task is not lost (an entry of a task finished before its group was
/// destroyed, delivered again to be acknowledged unrun, is held by no
/// attempt).
fn finished_entries(record: &RunRecord) -> BTreeSet<(String, StreamId)> {
    let mut done: BTreeSet<&str> = record
        .state
        .results
        .iter()
        .filter_map(|result| result.result.as_ref().map(|(task, _)| task.as_str()))
        .collect();
    let lettered: Vec<String> = record
        .state
        .agents
        .iter()
        .flat_map(|agent| &agent.dead_letters)
        .filter_map(|(_, letter)| letter.as_ref().ok())
        .filter_map(|letter| letter.decode_task::<serde_json::Value>().ok())
        .map(|task| task.task_id)
        .collect();
    done.extend(lettered.iter().map(String::as_str));
    record
        .state
        .agents
        .iter()
        .flat_map(|agent| {
            agent.entries.iter().filter_map(|(id, task)| {
                task.as_deref()
                    .filter(|task| done.contains(task))
                    .map(|_| (agent.keys.tasks.clone(), *id))
            })
        })
        .collect()
}

/// The (stream, entry) of every `deleted_while_pending` dead letter.
fn deleted_letters(record: &RunRecord) -> BTreeSet<(String, StreamId)> {
    record
        .state
        .agents
        .iter()
        .flat_map(|agent| &agent.dead_letters)
        .filter_map(|(_, letter)| letter.as_ref().ok())
        .filter(|letter| letter.reason == Some(DeadLetterReason::DeletedWhilePending))
        .filter_map(|letter| letter.origin.as_ref())
        .map(|origin| (origin.stream.clone(), origin.entry_id))
        .collect()
}
