//! [`Invariant::NotBeforeDue`]: no retry, and no task dispatched for
//! later, starts before its due time.
//!
//! A failed run's settle puts its retry in the agent type's delayed set,
//! due after the back-off on the broker's clock (the run's virtual clock);
//! a promote appends it to the task stream once due, and only then can it
//! be delivered and run. Judged from the history: every retry a promote
//! appended ([`Event::Promoted`]) must come no earlier than the earliest due
//! time scheduled for that retry ([`Event::Scheduled`]: the same task and
//! failed-run count; a broker rollback can make a settle, and so its
//! schedule, happen twice), and no settle may append a retry to its task
//! stream at once ([`Event::RequeuedAtOnce`]), skipping its wait.
//!
//! A scheduled dispatch (issue 12) is the same path for a first attempt:
//! the broker's schedule is an [`Event::Scheduled`] with `attempts` 0 and
//! its promotion an [`Event::Promoted`] with `attempts` 0, held to the same
//! rule. And, whatever path its entry took, no handler may start a task
//! dispatched for later ([`Event::DispatchedLater`]) before the delay has
//! passed since its dispatch's first try ([`Event::HandlerStarted`]): a
//! producer that appends it at once is caught there.

use std::collections::BTreeMap;

use crate::history::{Event, History};
use crate::report::{Invariant, Violation};

/// The violations of [`Invariant::NotBeforeDue`] in `history`, one per
/// task at most.
pub(super) fn check(history: &History) -> Vec<Violation> {
    let mut due: BTreeMap<(u32, u32), u64> = BTreeMap::new();
    let mut violations: BTreeMap<u32, Violation> = BTreeMap::new();
    let mut violate = |task: u32, detail: String| {
        violations.entry(task).or_insert(Violation {
            invariant: Invariant::NotBeforeDue,
            task: Some(task),
            detail,
        });
    };
    for stamped in history.events() {
        match &stamped.event {
            Event::Scheduled {
                task,
                attempts,
                due_ms,
                ..
            } => {
                let earliest = due.entry((*task, *attempts)).or_insert(*due_ms);
                *earliest = (*earliest).min(*due_ms);
            }
            Event::Promoted { task, attempts, id } => match due.get(&(*task, *attempts)) {
                Some(&due_ms) if stamped.at_ms < due_ms => violate(
                    *task,
                    format!(
                        "retry {attempts} ({id}) promoted at {} ms, due at {due_ms} ms",
                        stamped.at_ms
                    ),
                ),
                Some(_) => {}
                None => violate(
                    *task,
                    format!(
                        "retry {attempts} ({id}) promoted at {} ms, never scheduled",
                        stamped.at_ms
                    ),
                ),
            },
            Event::RequeuedAtOnce { task, id } => violate(
                *task,
                format!(
                    "a retry ({id}) appended to the task stream at {} ms by a settle, without waiting in the delayed set",
                    stamped.at_ms
                ),
            ),
            _ => {}
        }
    }
    // Tasks dispatched for later, and when each is due at the earliest.
    // Read first: a task due at once may start before its dispatch's
    // reply is back.
    let mut later: BTreeMap<u32, u64> = BTreeMap::new();
    for stamped in history.events() {
        if let Event::DispatchedLater { task, due_ms } = &stamped.event {
            let earliest = later.entry(*task).or_insert(*due_ms);
            *earliest = (*earliest).min(*due_ms);
        }
    }
    for stamped in history.events() {
        if let Event::HandlerStarted { task, call, .. } = &stamped.event
            && let Some(&due_ms) = later.get(task)
            && stamped.at_ms < due_ms
        {
            violate(
                *task,
                format!(
                    "dispatched for later, due at {due_ms} ms, started (call {call}) at {} ms",
                    stamped.at_ms
                ),
            );
        }
    }
    violations.into_values().collect()
}

#[cfg(test)]
mod tests {
    use crewq_core::StreamId;

    use super::*;
    use crate::history::Stamped;

    fn at(at_ms: u64, event: Event) -> Stamped {
        Stamped { at_ms, event }
    }

    fn scheduled(due_ms: u64) -> Event {
        Event::Scheduled {
            task: 3,
            attempts: 1,
            due_ms,
            slowed: 0,
        }
    }

    fn promoted() -> Event {
        Event::Promoted {
            task: 3,
            attempts: 1,
            id: StreamId::new(1, 0),
        }
    }

    #[test]
    fn a_retry_promoted_before_its_due_time_is_a_violation() {
        let early = History::from_events(vec![at(10, scheduled(100)), at(99, promoted())]);
        let found = check(&early);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (found[0].invariant, found[0].task),
            (Invariant::NotBeforeDue, Some(3))
        );
        let on_time = History::from_events(vec![at(10, scheduled(100)), at(100, promoted())]);
        assert!(check(&on_time).is_empty());
        // Scheduled twice (a rollback repeated the settle): the earliest counts.
        let twice = History::from_events(vec![
            at(10, scheduled(100)),
            at(20, scheduled(60)),
            at(70, promoted()),
        ]);
        assert!(check(&twice).is_empty());
        let never = History::from_events(vec![at(70, promoted())]);
        assert_eq!(check(&never).len(), 1);
    }

    fn started() -> Event {
        Event::HandlerStarted {
            task: 3,
            consumer: "w0".to_owned(),
            call: 1,
            entry: None,
        }
    }

    #[test]
    fn a_task_dispatched_for_later_started_before_its_due_time_is_a_violation() {
        let later = Event::DispatchedLater {
            task: 3,
            due_ms: 100,
        };
        let early = History::from_events(vec![at(10, later.clone()), at(99, started())]);
        let found = check(&early);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (found[0].invariant, found[0].task),
            (Invariant::NotBeforeDue, Some(3))
        );
        let on_time = History::from_events(vec![at(10, later.clone()), at(100, started())]);
        assert!(check(&on_time).is_empty());
        // Started before the dispatch's reply came back: still judged.
        let before_reply = History::from_events(vec![at(50, started()), at(60, later)]);
        assert_eq!(check(&before_reply).len(), 1);
        // Its first attempt promoted before the schedule's due time.
        let promoted_early = History::from_events(vec![
            at(
                10,
                Event::Scheduled {
                    task: 3,
                    attempts: 0,
                    due_ms: 100,
                    slowed: 0,
                },
            ),
            at(
                40,
                Event::Promoted {
                    task: 3,
                    attempts: 0,
                    id: StreamId::new(1, 0),
                },
            ),
        ]);
        assert_eq!(check(&promoted_early).len(), 1);
    }
}
