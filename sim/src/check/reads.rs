//! [`Invariant::ReadingNotStarved`]: a failing scan never keeps a worker
//! from new work.
//!
//! A worker reads in turns: its own pending entries after a start (a
//! drain), peers' stale entries now and then (a reclaim scan), new entries
//! otherwise. When a drain or a scan fails, the next turn must read new
//! entries: otherwise a scan that keeps failing (its connection silent,
//! while blocking reads work on theirs) keeps the worker from new work for
//! as long as it fails, as crewq once did for two minutes (issue 9,
//! finding 2). Judged from the history's [`Event::Read`]s of each worker
//! life, in the order they returned (a worker makes one read at a time).
//!
//! A read across priority lanes (`read_lanes`, issue 12) is a read of new
//! entries. A run whose plan dispatches at priorities above 0 is not
//! judged: its workers serve each lane in a loop of its own, each loop
//! draining and scanning its own stream under the worker's one consumer
//! name, so one worker's reads are no longer one at a time and the order
//! of its `Read`s says nothing about one loop's turns.

use std::collections::{BTreeMap, BTreeSet};

use crate::history::{Event, History};
use crate::report::{Invariant, Violation};
use crate::{Conn, Op};

/// A violation for each worker life that, after a failed drain or scan,
/// read something else than new entries first (one per consumer name).
pub(super) fn starved(history: &History) -> Vec<Violation> {
    // The failed read each consumer's current life owes a read of new
    // entries for: (when, what).
    let mut owed: BTreeMap<&str, (u64, Op)> = BTreeMap::new();
    let mut reported = BTreeSet::new();
    let mut violations = Vec::new();
    for stamped in history.events() {
        match &stamped.event {
            // A new life starts with a drain, whatever the last one owed.
            Event::Started { consumer, .. } | Event::Crashed { consumer, .. } => {
                owed.remove(consumer.as_str());
            }
            Event::Read {
                consumer,
                op,
                conn,
                ok,
            } => {
                let reads_new =
                    (*op == Op::ReadGroup && *conn == Conn::Blocking) || *op == Op::ReadLanes;
                if let Some((failed_at, failed)) = owed.remove(consumer.as_str())
                    && !reads_new
                    && reported.insert(consumer.as_str())
                {
                    violations.push(Violation {
                        invariant: Invariant::ReadingNotStarved,
                        task: None,
                        detail: format!(
                            "{consumer}'s {failed} failed at {failed_at} ms; its next read, \
                             at {} ms, was a {op} on the {conn:?} connection, not a read \
                             of new entries",
                            stamped.at_ms
                        ),
                    });
                }
                if !ok && !reads_new {
                    owed.insert(consumer.as_str(), (stamped.at_ms, *op));
                }
            }
            _ => {}
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Stamped;

    fn read(op: Op, conn: Conn, ok: bool) -> Event {
        Event::Read {
            consumer: "w0".to_owned(),
            op,
            conn,
            ok,
        }
    }

    fn scan(ok: bool) -> Event {
        read(Op::AutoclaimRecorded, Conn::Shared, ok)
    }

    fn read_new(ok: bool) -> Event {
        read(Op::ReadGroup, Conn::Blocking, ok)
    }

    fn drain(ok: bool) -> Event {
        read(Op::ReadGroup, Conn::Shared, ok)
    }

    fn judged(events: Vec<Event>) -> Vec<Violation> {
        let mut history = History::default();
        for (at_ms, event) in (0..).zip(events) {
            history.push(Stamped { at_ms, event });
        }
        starved(&history)
    }

    #[test]
    fn a_failed_scan_followed_by_another_scan_starves_reading() {
        let violations = judged(vec![read_new(true), scan(false), scan(true)]);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].invariant, Invariant::ReadingNotStarved);
        assert!(
            violations[0]
                .detail
                .contains("autoclaim_recorded failed at 1 ms")
        );
        // A failed drain owes a read of new entries too.
        assert_eq!(judged(vec![drain(false), scan(false)]).len(), 1);
    }

    #[test]
    fn a_read_of_new_entries_after_a_failed_scan_pays_it_off() {
        let events = vec![
            scan(false),
            read_new(false),
            scan(false),
            read_new(true),
            scan(true),
            // Failed reads of new entries owe nothing.
            read_new(false),
            drain(true),
        ];
        assert_eq!(judged(events), []);
    }

    #[test]
    fn a_new_life_starts_with_a_drain_whatever_the_last_one_owed() {
        let crashed = Event::Crashed {
            worker: 0,
            consumer: "w0".to_owned(),
        };
        let started = Event::Started {
            worker: 0,
            consumer: "w0".to_owned(),
        };
        assert_eq!(judged(vec![scan(false), crashed, started, drain(true)]), []);
        // Another consumer's failure is not this one's.
        let other = Event::Read {
            consumer: "w1".to_owned(),
            op: Op::Autoclaim,
            conn: Conn::Shared,
            ok: false,
        };
        assert_eq!(judged(vec![other, scan(true)]), []);
    }
}
