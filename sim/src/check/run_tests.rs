//! The invariants about runs (`overlap.rs`, `success.rs`) catch what they
//! are for and only that: a real run's record, which passes, is tampered
//! with one way at a time.

use crewq_core::StreamId;

use super::check;
use crate::history::{Event, History, Stamped};
use crate::run::RunRecord;
use crate::{Faults, Invariant, Scenario, Simulation};

fn scenario() -> Scenario {
    Scenario::default().tasks(20).faults(Faults::None)
}

fn record() -> RunRecord {
    let record = Simulation::standard(scenario()).record(3).expect("runs");
    let report = check(&scenario(), 3, &record);
    assert!(report.passed(), "the unbroken run passes: {report}");
    record
}

fn broken(record: &RunRecord) -> Vec<Invariant> {
    let mut invariants: Vec<_> = check(&scenario(), 3, record)
        .violations
        .iter()
        .map(|v| v.invariant)
        .collect();
    invariants.sort();
    invariants.dedup();
    invariants
}

/// A successful run: its task, consumer, start and end (as event indexes),
/// and its entry (the one its consumer settled).
struct OkRun {
    task: u32,
    consumer: String,
    started: usize,
    ended: usize,
    settled: usize,
    entry: StreamId,
}

fn an_ok_run(record: &RunRecord) -> OkRun {
    let events = record.history.events();
    for (ended, e) in events.iter().enumerate() {
        let Event::HandlerEnded {
            task,
            consumer,
            call,
            ok: true,
        } = &e.event
        else {
            continue;
        };
        let started = events[..ended].iter().rposition(|s| {
            matches!(&s.event, Event::HandlerStarted { task: t, call: c, .. } if t == task && c == call)
        });
        let settled = events
            .iter()
            .enumerate()
            .skip(ended)
            .find_map(|(n, s)| match &s.event {
                Event::Settled {
                    consumer: by, id, ..
                } if by == consumer => Some((n, *id)),
                _ => None,
            });
        if let (Some(started), Some((settled, entry))) = (started, settled) {
            return OkRun {
                task: *task,
                consumer: consumer.clone(),
                started,
                ended,
                settled,
                entry,
            };
        }
    }
    panic!("no successful run was settled");
}

fn with_history(record: &mut RunRecord, edit: impl FnOnce(&mut Vec<Stamped>)) {
    let mut events = record.history.events().to_vec();
    edit(&mut events);
    record.history = History::from_events(events);
}

/// Inserts, right after the run's start, a takeover of its entry by
/// another consumer and a run there.
fn second_run_meanwhile(record: &mut RunRecord, run: &OkRun) {
    let stream = record.state.task_stream_of(run.task);
    with_history(record, |events| {
        let at_ms = events[run.started].at_ms;
        let consumer = "intruder".to_owned();
        events.insert(
            run.started + 1,
            Stamped {
                at_ms,
                event: Event::HandlerStarted {
                    task: run.task,
                    consumer: consumer.clone(),
                    call: 99,
                    entry: None,
                },
            },
        );
        events.insert(
            run.started + 1,
            Stamped {
                at_ms,
                event: Event::Delivered {
                    stream,
                    consumer,
                    id: run.entry,
                },
            },
        );
    });
}

#[test]
fn a_second_run_while_the_first_holds_its_lease_is_caught() {
    let mut record = record();
    let run = an_ok_run(&record);
    second_run_meanwhile(&mut record, &run);
    assert!(
        broken(&record).contains(&Invariant::NoConcurrentRuns),
        "{:?}",
        broken(&record)
    );
}

#[test]
fn a_second_run_after_the_first_failed_calls_is_explained() {
    let mut record = record();
    let run = an_ok_run(&record);
    second_run_meanwhile(&mut record, &run);
    let consumer = run.consumer.clone();
    with_history(&mut record, |events| {
        let at_ms = events[run.started].at_ms;
        events.insert(
            run.started,
            Stamped {
                at_ms,
                event: Event::Fault {
                    actor: consumer,
                    seq: 0,
                    op: crate::Op::Renew,
                    fault: crate::Fault::Outage,
                },
            },
        );
    });
    assert!(
        !broken(&record).contains(&Invariant::NoConcurrentRuns),
        "{:?}",
        broken(&record)
    );
}

#[test]
fn a_second_run_once_the_first_was_cut_off_is_not_concurrent() {
    let mut record = record();
    let run = an_ok_run(&record);
    second_run_meanwhile(&mut record, &run);
    let consumer = run.consumer.clone();
    with_history(&mut record, |events| {
        let at_ms = events[run.started].at_ms;
        events.insert(
            run.started + 1,
            Stamped {
                at_ms,
                event: Event::Stopped {
                    worker: 0,
                    consumer,
                    handed_back: 1,
                },
            },
        );
    });
    assert!(
        !broken(&record).contains(&Invariant::NoConcurrentRuns),
        "{:?}",
        broken(&record)
    );
}

#[test]
fn a_dropped_success_is_caught() {
    let mut record = record();
    let run = an_ok_run(&record);
    with_history(&mut record, |events| {
        events.remove(run.settled);
    });
    assert_eq!(broken(&record), vec![Invariant::SuccessRecorded]);
}

#[test]
fn a_success_cut_off_by_a_crash_is_not_dropped() {
    let mut record = record();
    let run = an_ok_run(&record);
    let consumer = run.consumer.clone();
    with_history(&mut record, |events| {
        let at_ms = events[run.ended].at_ms;
        events[run.settled] = Stamped {
            at_ms,
            event: Event::Crashed {
                worker: 0,
                consumer,
            },
        };
    });
    assert!(
        !broken(&record).contains(&Invariant::SuccessRecorded),
        "{:?}",
        broken(&record)
    );
}

#[test]
fn a_stop_that_handed_nothing_back_does_not_excuse_a_dropped_success() {
    let mut record = record();
    let run = an_ok_run(&record);
    let consumer = run.consumer.clone();
    with_history(&mut record, |events| {
        let at_ms = events[run.ended].at_ms;
        events[run.settled] = Stamped {
            at_ms,
            event: Event::Stopped {
                worker: 0,
                consumer,
                handed_back: 0,
            },
        };
    });
    assert_eq!(broken(&record), vec![Invariant::SuccessRecorded]);
}

#[test]
fn a_run_that_never_returned_ends_at_its_time_out() {
    let mut record = record();
    let run = an_ok_run(&record);
    let stream = record.state.task_stream_of(run.task);
    let consumer = run.consumer.clone();
    let timeout = crate::scenario::millis_of(scenario().task_timeout);
    with_history(&mut record, |events| {
        // It hangs (no end); a peer runs its entry just after its time-out;
        // its worker is stopped (at the end of the run) after that.
        events.remove(run.ended);
        let after = events[run.started].at_ms + timeout + 1;
        let at = events
            .iter()
            .position(|e| e.at_ms > after)
            .expect("the run goes on past the time-out");
        let intruder = || "intruder".to_owned();
        let peer_runs = [
            Event::Delivered {
                stream,
                consumer: intruder(),
                id: run.entry,
            },
            Event::HandlerStarted {
                task: run.task,
                consumer: intruder(),
                call: 99,
                entry: None,
            },
        ];
        for (n, event) in peer_runs.into_iter().enumerate() {
            events.insert(
                at + n,
                Stamped {
                    at_ms: after,
                    event,
                },
            );
        }
        assert!(
            events[at..].iter().any(|e| matches!(&e.event,
                Event::Stopped { consumer: by, .. } if *by == consumer)),
            "its worker is stopped later"
        );
    });
    assert!(
        !broken(&record).contains(&Invariant::NoConcurrentRuns),
        "{:?}",
        broken(&record)
    );
}
