//! "A cancelled handler's outcome is never recorded"
//! ([`Invariant::CancelledNotRecorded`]).
//!
//! The simulated handler asks, before it answers, whether its entry is
//! still its worker's ([`Context::extend_lease`]); when a peer has taken it
//! over the context is cancelled, the handler records `HandlerCancelled`
//! and marks its output with its call ([`CANCELLED_CALL`]). The worker's
//! ownership-guarded settle must then refuse that outcome: a marked result
//! in the results streams is a zombie's write. Two things can make the
//! entry this worker's again, and are let through: while the run went on
//! (the token fired at a renewal before the handler saw it), a rollback of
//! the broker (the takeover forgotten), the group destroyed (made again
//! below the entry, which is delivered again) or the entry delivered to
//! the same consumer again; and a stop of the worker under
//! way (its token fired for the shutdown as well: the mark may then come
//! from a renewal that found nothing to renew for another reason).
//!
//! [`Context::extend_lease`]: crewq_core::worker::Context::extend_lease
//! [`CANCELLED_CALL`]: crate::crew::CANCELLED_CALL

use std::collections::BTreeMap;

use crate::crew::task_index;
use crate::history::Event;
use crate::report::{Invariant, Violation};
use crate::run::RunRecord;

use super::runs::Run;

/// The violations of [`Invariant::CancelledNotRecorded`] in `runs`.
pub(super) fn check(record: &RunRecord, runs: &[Run]) -> Vec<Violation> {
    let events = record.history.events();
    // (task, call) -> (consumer, the index of its cancellation).
    let mut cancelled: BTreeMap<(u32, u32), (&str, usize)> = BTreeMap::new();
    // (task, call) -> the index of its start.
    let mut started: BTreeMap<(u32, u32), usize> = BTreeMap::new();
    for (index, stamped) in events.iter().enumerate() {
        match &stamped.event {
            Event::HandlerCancelled {
                task,
                consumer,
                call,
            } => {
                cancelled.insert((*task, *call), (consumer.as_str(), index));
            }
            Event::HandlerStarted { task, call, .. } => {
                started.insert((*task, *call), index);
            }
            _ => {}
        }
    }
    let entry_of = |task: u32, call: u32| {
        runs.iter()
            .find(|run| run.task == task && run.call == call)
            .and_then(|run| run.entry.as_ref())
    };
    // Whether the entry may be this consumer's again after it was lost, or
    // the cancellation (recorded at `since`) may have been the shutdown's.
    // The token fired at a renewal some time before the handler saw it: what
    // happened since the run began counts.
    let excused = |consumer: &str,
                   since: usize,
                   began: usize,
                   entry: Option<&(String, crewq_core::StreamId)>| {
        let after = events
            .iter()
            .skip(began.min(since))
            .any(|e| match &e.event {
                Event::RolledBack { .. } => true,
                Event::GroupDestroyed { stream } => entry.is_none_or(|(of, _)| of == stream),
                Event::StopRequested { consumer: by, .. } => by == consumer,
                Event::Delivered {
                    stream,
                    consumer: by,
                    id,
                } => by == consumer && entry.is_none_or(|(of, entry)| of == stream && entry == id),
                _ => false,
            });
        // A stop asked for before the cancellation and not over yet.
        let mut stopping = false;
        for e in events.iter().take(since) {
            match &e.event {
                Event::StopRequested { consumer: by, .. } if by == consumer => stopping = true,
                Event::Stopped { consumer: by, .. } if by == consumer => stopping = false,
                _ => {}
            }
        }
        after || stopping
    };
    let mut violations = Vec::new();
    for entry in &record.state.results {
        let (Some(call), Some((task_id, _))) = (entry.cancelled_call, &entry.result) else {
            continue;
        };
        let Some(task) = task_index(task_id) else {
            continue;
        };
        let Some(&(consumer, index)) = cancelled.get(&(task, call)) else {
            continue;
        };
        let began = started.get(&(task, call)).copied().unwrap_or(index);
        if excused(consumer, index, began, entry_of(task, call)) {
            continue;
        }
        let at = events.get(index).map_or(0, |e| e.at_ms);
        violations.push(Violation {
            invariant: Invariant::CancelledNotRecorded,
            task: Some(task),
            detail: format!(
                "call {call} on {consumer} found its entry taken over at {at} ms (its context \
                 cancelled), yet its result was recorded (result entry {})",
                entry.id
            ),
        });
    }
    violations
}
