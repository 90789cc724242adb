//! "An entry deleted with its stream is reported"
//! ([`Invariant::DeletedWithStreamReported`]).
//!
//! A `DEL` of a task stream takes its entries and its group: nothing will
//! deliver a held entry again. A worker that learns the group went (a call
//! of it finds no group: `NoGroupSeen` in the history, its reply not
//! dropped by a fault) while it holds such an entry, its lease still its
//! own (renewed or delivered within a lease), must dead-letter it
//! `deleted_while_pending` with its data, whatever its run ended in. An
//! entry pending to a worker when the stream went is held by it if it
//! started a handler of its task since the delivery (the read's reply
//! reached it) and neither crashed nor stopped.
//!
//! Let through: the entry's task has an outcome anyway, the worker crashed
//! or was stopped (its attempts handed back) after the deletion, or a
//! rollback brought the stream back (the entry is then delivered again). A
//! worker that never learns of it (it holds nothing when it calls again,
//! or a peer made the group again first) records nothing, and the task is
//! lost to the delete, which the checker reports apart.

use std::collections::BTreeMap;
use std::time::Duration;

use crewq_core::{BrokerOp, StreamId};

use crate::history::{Event, Stamped};
use crate::report::{Invariant, Violation};
use crate::run::RunRecord;

use super::facts::TaskFacts;
use super::runs::entry_tasks;

/// The violations of [`Invariant::DeletedWithStreamReported`] in `record`;
/// `tasks` says which tasks have an outcome.
pub(super) fn check(
    record: &RunRecord,
    tasks: &BTreeMap<u32, TaskFacts>,
    lease: Duration,
) -> Vec<Violation> {
    let lease_ms = crate::scenario::millis_of(lease);
    // The longest a half-open link hangs a call before its time-out.
    let hang_ms = record
        .plan
        .half_open
        .iter()
        .map(|link| link.timeout_ms)
        .max()
        .unwrap_or(0);
    let entries = entry_tasks(record);
    // A result or a dead letter (its own `deleted_while_pending` one among
    // them): whatever became of the entry, the task is not lost (an entry
    // of a task finished before its group was destroyed, delivered again
    // to be acknowledged unrun, is held by no attempt).
    let has_outcome = |task: u32| {
        tasks.get(&task).is_some_and(|facts| {
            facts.successes + facts.failures > 0 || !facts.dead_letters.is_empty()
        })
    };
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
            let Some(task) = entries.get(&(stream.clone(), *id)).copied() else {
                continue;
            };
            if has_outcome(task) {
                continue;
            }
            let Some(holder) = holder(&events[..deletion], stream, *id, task) else {
                continue;
            };
            // While it still held it: before its attempt's settle of it
            // was refused (or applied: a rollback).
            let ended = after
                .iter()
                .position(|e| match &e.event {
                    Event::Refused {
                        stream: of,
                        consumer,
                        id: settled,
                    }
                    | Event::Settled {
                        stream: of,
                        consumer,
                        id: settled,
                        ..
                    } => of == stream && consumer == holder && settled == id,
                    _ => false,
                })
                .unwrap_or(after.len());
            // And of this deletion: before the group's next destruction
            // (the deletion's own `GroupDestroyed` comes just before it).
            let ended = after[1..]
                .iter()
                .position(
                    |e| matches!(&e.event, Event::GroupDestroyed { stream: of } if of == stream),
                )
                .map_or(ended, |next| ended.min(next + 1));
            let learned = after[..ended]
                .iter()
                .enumerate()
                .find_map(|(at, e)| match &e.event {
                    Event::NoGroupSeen {
                        stream: of,
                        consumer,
                        op,
                    } if of == stream
                        && consumer == holder
                        && !reply_dropped(events, deletion + at, holder, op, hang_ms) =>
                    {
                        Some(e)
                    }
                    _ => None,
                });
            let Some(learned) = learned else {
                continue;
            };
            // Frozen then, it reads the reply only when it wakes, its lease
            // long lapsed; or its renewals failed within the lease before
            // (the recorder cannot tell which renewal's reply reached it).
            if paused_at(events, holder, learned.at_ms)
                || renewal_failed(events, holder, learned.at_ms, lease_ms)
            {
                continue;
            }
            // Its lease still the holder's when it learned (renewed or
            // delivered within a lease, less the calls' latency both ways):
            // a lapsed one may have been taken over and finished by a peer,
            // and the worker leaves it be.
            // In ms: a lease start at or after this.
            let since = (learned.at_ms + 3 * MAX_LATENCY_MS).checked_sub(lease_ms);
            if !leased_since(events, stream, *id, holder, since, learned.at_ms, hang_ms) {
                continue;
            }
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

/// Whether the reply of the call recorded at `events[at]` (a
/// `NoGroupSeen` or `Renewed` of `actor`'s `op`) was dropped by a fault
/// (the recorder sits below the fault injection): a fault on the same
/// actor's same operation within the injected latency before, or within
/// it and `hang_ms` after (a half-open link records its fault when the
/// hung call times out), up to the neighbouring calls of that operation.
/// The worker then saw the fault's error, not this reply.
fn reply_dropped(events: &[Stamped], at: usize, actor: &str, op: &str, hang_ms: u64) -> bool {
    let Some(call) = events.get(at) else {
        return false;
    };
    let before = |e: &&Stamped| e.at_ms + MAX_LATENCY_MS >= call.at_ms;
    let after = |e: &&Stamped| e.at_ms <= call.at_ms + MAX_LATENCY_MS + hang_ms;
    let sides = [
        events[..at]
            .iter()
            .rev()
            .take_while(before)
            .collect::<Vec<_>>(),
        events[at + 1..].iter().take_while(after).collect(),
    ];
    sides.iter().any(|side| {
        for e in side {
            match &e.event {
                Event::Fault {
                    actor: by, op: of, ..
                } if by == actor && of.name() == op => return true,
                Event::NoGroupSeen {
                    consumer, op: of, ..
                } if consumer == actor && *of == op => return false,
                Event::Renewed { consumer, .. } if consumer == actor && op == "renew" => {
                    return false;
                }
                _ => {}
            }
        }
        false
    })
}

/// The most latency a fault plan injects into one call, in ms (swarms go up
/// to 8).
pub(super) const MAX_LATENCY_MS: u64 = 10;

/// Whether `holder`'s lease of entry `id` of `stream` was taken or renewed
/// from `since` (`None`: the run's start) to `until` ms, the reply reaching
/// it.
fn leased_since(
    events: &[Stamped],
    stream: &str,
    id: StreamId,
    holder: &str,
    since: Option<u64>,
    until: u64,
    hang_ms: u64,
) -> bool {
    events.iter().enumerate().any(|(at, e)| {
        since.is_none_or(|since| e.at_ms >= since)
            && e.at_ms <= until
            && match &e.event {
                Event::Renewed {
                    stream: of,
                    consumer,
                    ids,
                } => {
                    of == stream
                        && consumer == holder
                        && ids.contains(&id)
                        && !reply_dropped(events, at, holder, "renew", hang_ms)
                }
                Event::Delivered {
                    stream: of,
                    consumer,
                    id: delivered,
                } => of == stream && consumer == holder && *delivered == id,
                _ => false,
            }
    })
}

/// Whether a renewal of `actor` failed (a fault on it) in the lease up to
/// `at_ms`.
fn renewal_failed(events: &[Stamped], actor: &str, at_ms: u64, lease_ms: u64) -> bool {
    events.iter().any(|e| {
        e.at_ms <= at_ms
            && e.at_ms + lease_ms >= at_ms
            && matches!(&e.event, Event::Fault { actor: by, op: BrokerOp::Renew, .. } if by == actor)
    })
}

/// Whether `consumer`'s worker was frozen (a pause) at `at_ms`.
pub(super) fn paused_at(events: &[Stamped], consumer: &str, at_ms: u64) -> bool {
    frozen_until(events, consumer, at_ms, at_ms).is_some()
}

/// The end of the latest freeze of `consumer`'s worker that began by `to`
/// and ended after `from` (ms), if any.
pub(super) fn frozen_until(events: &[Stamped], consumer: &str, from: u64, to: u64) -> Option<u64> {
    let mut slot = None;
    let mut until = None;
    for e in events.iter().take_while(|e| e.at_ms <= to) {
        match &e.event {
            Event::Started {
                worker,
                consumer: by,
            } if by == consumer => slot = Some(*worker),
            Event::Paused { worker, until_ms } if Some(*worker) == slot && *until_ms > from => {
                until = until.max(Some(*until_ms));
            }
            _ => {}
        }
    }
    until
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
