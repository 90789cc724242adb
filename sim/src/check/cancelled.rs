//! "A cancelled handler's outcome is never recorded"
//! ([`Invariant::CancelledNotRecorded`]).
//!
//! The simulated handler asks, before it answers, whether its entry is
//! still its worker's ([`Context::extend_lease`]); when a peer has taken it
//! over the context is cancelled, the handler records `HandlerCancelled`
//! and marks its output with its call ([`CANCELLED_CALL`]). The worker's
//! ownership-guarded settle must then refuse that outcome: a marked result
//! in the results streams is a zombie's write. Two things can make the
//! entry this worker's again, and are let through: a rollback of the
//! broker after the cancellation (the takeover forgotten), and a stop of
//! the worker meanwhile (its token fired for the shutdown as well, so the
//! mark may come from a deletion seen while stopping).
//!
//! [`Context::extend_lease`]: crewq_core::worker::Context::extend_lease
//! [`CANCELLED_CALL`]: crate::crew::CANCELLED_CALL

use std::collections::BTreeMap;

use crate::crew::task_index;
use crate::history::Event;
use crate::report::{Invariant, Violation};
use crate::run::RunRecord;

/// The violations of [`Invariant::CancelledNotRecorded`].
pub(super) fn check(record: &RunRecord) -> Vec<Violation> {
    let events = record.history.events();
    // (task, call) -> (consumer, when it found its entry lost).
    let mut cancelled: BTreeMap<(u32, u32), (&str, u64)> = BTreeMap::new();
    for stamped in events {
        if let Event::HandlerCancelled {
            task,
            consumer,
            call,
        } = &stamped.event
        {
            cancelled.insert((*task, *call), (consumer.as_str(), stamped.at_ms));
        }
    }
    let excused = |consumer: &str, since: u64| {
        events.iter().any(|e| {
            e.at_ms >= since
                && match &e.event {
                    Event::RolledBack { .. } => true,
                    Event::StopRequested { consumer: by, .. } => by == consumer,
                    _ => false,
                }
        }) || events.iter().any(|e| {
            // A stop asked for before the cancellation, still under way.
            matches!(&e.event, Event::StopRequested { consumer: by, .. } if by == consumer)
                && e.at_ms <= since && !events.iter().any(|later| {
                later.at_ms >= e.at_ms
                    && later.at_ms <= since
                    && matches!(&later.event, Event::Stopped { consumer: by, .. } if by == consumer)
            })
        })
    };
    let mut violations = Vec::new();
    for entry in &record.state.results {
        let (Some(call), Some((task_id, _))) = (entry.cancelled_call, &entry.result) else {
            continue;
        };
        let Some(task) = task_index(task_id) else {
            continue;
        };
        let Some(&(consumer, at)) = cancelled.get(&(task, call)) else {
            continue;
        };
        if excused(consumer, at) {
            continue;
        }
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
