//! [`Invariant::NotBeforeDue`]: no retry starts before its due time.
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
}
