//! The checker is shown to catch each kind of breakage: a real run's
//! record, which passes, is broken in one way, and exactly the invariant
//! that this breaks must fire.

use std::time::Duration;

use crewq_core::{PendingEntry, StreamId, TaskStatus};

use super::check;
use crate::history::{Event, Stamped};
use crate::run::state::ResultEntry;
use crate::run::{GatherOutcome, RunRecord};
use crate::{FaultRates, Faults, Invariant, Scenario, Simulation};

/// A scenario with failing and poison tasks but no disruptions, so that
/// every bound is as tight as it gets.
fn scenario() -> Scenario {
    let rates = FaultRates {
        failing: 0.1,
        poison: 0.1,
        ..FaultRates::NONE
    };
    Scenario::default().tasks(40).faults(Faults::Rates(rates))
}

fn record() -> RunRecord {
    let record = Simulation::standard(scenario()).record(5).expect("runs");
    let report = check(&scenario(), 5, &record);
    assert!(report.passed(), "the unbroken run passes: {report}");
    assert!(
        report.counts.dead_lettered > 0,
        "it has dead letters: {report}"
    );
    record
}

/// The invariants `record` breaks.
fn broken(record: &RunRecord) -> Vec<Invariant> {
    let mut invariants: Vec<_> = check(&scenario(), 5, record)
        .violations
        .iter()
        .map(|v| v.invariant)
        .collect();
    invariants.sort();
    invariants.dedup();
    invariants
}

/// A task that succeeded, its result's index, and its first entry.
fn an_ok_task(record: &RunRecord) -> (u32, usize, StreamId) {
    let (index, task) = record
        .state
        .results
        .iter()
        .enumerate()
        .find_map(|(i, r)| match &r.result {
            Some((id, TaskStatus::Success)) => Some((i, crate::task_index(id)?)),
            _ => None,
        })
        .expect("a success");
    let entry = record
        .history
        .events()
        .iter()
        .find_map(|e| match e.event {
            Event::Dispatched { task: t, entry } if t == task => Some(entry),
            _ => None,
        })
        .expect("its dispatch");
    (task, index, entry)
}

#[test]
fn a_lost_result_breaks_no_loss() {
    let mut record = record();
    let (_, index, _) = an_ok_task(&record);
    record.state.results.remove(index);
    assert_eq!(broken(&record), [Invariant::NoLoss]);
}

#[test]
fn an_entry_left_pending_breaks_nothing_pending_and_liveness() {
    let mut record = record();
    let (_, index, entry) = an_ok_task(&record);
    record.state.results.remove(index);
    record.state.agents[0].pending.push(PendingEntry {
        id: entry,
        consumer: "research-0".into(),
        idle: Duration::ZERO,
        deliveries: 1,
    });
    assert_eq!(
        broken(&record),
        [Invariant::Liveness, Invariant::NothingPending]
    );
}

#[test]
fn a_result_of_no_dispatched_task_breaks_no_phantom() {
    let mut record = record();
    record.state.results.push(ResultEntry {
        cancelled_call: None,
        id: StreamId::new(1, 0),
        result: Some(("sim-4000".into(), TaskStatus::Success)),
    });
    assert_eq!(broken(&record), [Invariant::NoPhantom]);
}

#[test]
fn a_delivery_of_an_entry_never_dispatched_breaks_no_phantom() {
    let mut record = record();
    let stream = record.state.agents[0].keys.tasks.clone();
    push(
        &mut record,
        Event::Delivered {
            stream,
            consumer: "research-0".into(),
            id: StreamId::new(1, 7),
        },
    );
    assert_eq!(broken(&record), [Invariant::NoPhantom]);
}

/// Adds a dead letter of `entry` (a copy of another, pointed at it).
fn dead_letter_entry(record: &mut RunRecord, entry: StreamId) {
    let agent = &mut record.state.agents[0];
    let (id, mut letter) = agent
        .dead_letters
        .iter()
        .find_map(|(id, l)| Some((*id, l.clone().ok()?)))
        .expect("a dead letter");
    if let Some(origin) = letter.origin.as_mut() {
        origin.entry_id = entry;
    }
    // The letter's data is another task's; point it at this one only.
    letter.task = Default::default();
    agent.dead_letters.push((id, Ok(letter)));
}

#[test]
fn a_dead_letter_for_a_task_that_succeeded_breaks_not_ok_and_dead_lettered() {
    let mut record = record();
    let (_, _, entry) = an_ok_task(&record);
    dead_letter_entry(&mut record, entry);
    assert!(broken(&record).contains(&Invariant::NotOkAndDeadLettered));
}

#[test]
fn outcomes_of_an_entry_delivered_again_after_its_group_was_destroyed_are_counted_apart() {
    let mut record = record();
    let (_, _, entry) = an_ok_task(&record);
    // Run again from its entry, it failed every time this once, and was
    // dead-lettered after its retries: a success and a dead letter.
    dead_letter_entry(&mut record, entry);
    if let Some((_, Ok(letter))) = record.state.agents[0].dead_letters.last_mut() {
        letter.reason = Some(crewq_core::DeadLetterReason::MaxRetries);
    }
    let stream = record.state.agents[0].keys.tasks.clone();
    push(
        &mut record,
        Event::GroupDestroyed {
            stream: stream.clone(),
        },
    );
    for _ in 0..4 {
        push(
            &mut record,
            Event::Delivered {
                stream: stream.clone(),
                consumer: "research-1".into(),
                id: entry,
            },
        );
    }
    let report = check(&scenario(), 5, &record);
    assert!(report.passed(), "{report}");
    assert_eq!(report.counts.replayed, 1, "{report}");
}

#[test]
fn a_second_dead_letter_breaks_one_dead_letter() {
    let mut record = record();
    let agent = &mut record.state.agents[0];
    let copy = agent.dead_letters[0].clone();
    agent.dead_letters.push(copy);
    assert_eq!(broken(&record), [Invariant::OneDeadLetter]);
}

#[test]
fn a_wrong_reason_breaks_dead_letter_routing() {
    let mut record = record();
    let agent = &mut record.state.agents[0];
    for (_, letter) in &mut agent.dead_letters {
        if let Ok(letter) = letter {
            letter.reason = Some(crewq_core::DeadLetterReason::Other("because".into()));
        }
    }
    assert_eq!(broken(&record), [Invariant::DeadLetterRouting]);
}

#[test]
fn a_task_put_back_too_often_breaks_retries_bounded() {
    let mut record = record();
    let (task, _, _) = an_ok_task(&record);
    let agent = &mut record.state.agents[0];
    for n in 0..4 {
        agent
            .entries
            .push((StreamId::new(u64::MAX - 10, n), Some(crate::task_id(task))));
    }
    assert_eq!(broken(&record), [Invariant::RetriesBounded]);
}

#[test]
fn deliveries_with_no_disruption_to_explain_them_break_redeliveries_bounded() {
    let mut record = record();
    let (_, _, entry) = an_ok_task(&record);
    let stream = record.state.agents[0].keys.tasks.clone();
    for _ in 0..5 {
        push(
            &mut record,
            Event::Delivered {
                stream: stream.clone(),
                consumer: "research-1".into(),
                id: entry,
            },
        );
    }
    assert_eq!(broken(&record), [Invariant::RedeliveriesBounded]);
}

#[test]
fn a_failure_result_without_a_dead_letter_breaks_outcomes_consistent() {
    let mut record = record();
    let (task, _, _) = an_ok_task(&record);
    record.state.results.push(ResultEntry {
        cancelled_call: None,
        id: StreamId::new(2, 0),
        result: Some((crate::task_id(task), TaskStatus::Failure)),
    });
    assert_eq!(broken(&record), [Invariant::OutcomesConsistent]);
}

#[test]
fn a_gather_that_missed_a_result_breaks_supervisor_gathers() {
    let mut record = record();
    let gather = record
        .gathers
        .iter_mut()
        .find_map(|g| match &mut g.outcome {
            GatherOutcome::Gathered(gathered) => Some(gathered),
            _ => None,
        })
        .expect("a gather");
    let first = gather.results.keys().next().cloned().expect("a result");
    gather.results.remove(&first);
    assert_eq!(broken(&record), [Invariant::SupervisorGathers]);
}

#[test]
fn a_run_that_did_not_complete_breaks_run_completes() {
    let mut record = record();
    record
        .problems
        .push("a worker stopped with an error".into());
    assert_eq!(broken(&record), [Invariant::RunCompletes]);
}

fn push(record: &mut RunRecord, event: Event) {
    let at_ms = record.history.events().last().map_or(0, |e| e.at_ms);
    record.history.push(Stamped { at_ms, event });
}

/// A scenario with a third of its tasks dispatched for later, and no
/// faults.
fn scheduled_scenario() -> Scenario {
    let rates = FaultRates {
        scheduled: 0.3,
        ..FaultRates::NONE
    };
    Scenario::default().tasks(30).faults(Faults::Rates(rates))
}

/// A passing run of [`scheduled_scenario`], and a task of it dispatched
/// for later that succeeded, with its result's index.
fn scheduled_record() -> (RunRecord, u32, usize) {
    let scenario = scheduled_scenario();
    let record = Simulation::standard(scenario.clone())
        .record(5)
        .expect("runs");
    let report = check(&scenario, 5, &record);
    assert!(report.passed(), "the unbroken run passes: {report}");
    assert!(
        report
            .hits
            .get("scheduled_dispatch")
            .is_some_and(|n| *n > 0),
        "some tasks were dispatched for later: {report}"
    );
    let later: Vec<u32> = record
        .history
        .events()
        .iter()
        .filter_map(|e| match e.event {
            Event::DispatchedLater { task, .. } => Some(task),
            _ => None,
        })
        .collect();
    let (index, task) = record
        .state
        .results
        .iter()
        .enumerate()
        .find_map(|(i, r)| match &r.result {
            Some((id, TaskStatus::Success)) => {
                Some((i, crate::task_index(id).filter(|t| later.contains(t))?))
            }
            _ => None,
        })
        .expect("a task dispatched for later succeeded");
    (record, task, index)
}

#[test]
fn a_scheduled_task_without_an_outcome_breaks_no_loss() {
    let (mut record, task, index) = scheduled_record();
    record.state.results.remove(index);
    let report = check(&scheduled_scenario(), 5, &record);
    let broken: Vec<_> = report.violations.iter().map(|v| v.invariant).collect();
    assert_eq!(broken, [Invariant::NoLoss], "{report}");
    assert_eq!(report.violations[0].task, Some(task));
}

#[test]
fn a_scheduled_dispatch_a_rollback_forgot_is_lost_to_the_rollback() {
    let (mut record, task, index) = scheduled_record();
    record.state.results.remove(index);
    let end = record.history.events().last().map_or(0, |e| e.at_ms);
    push(
        &mut record,
        Event::RolledBack {
            snapshot_ms: end,
            forgotten: Vec::new(),
            unscheduled: vec![task],
        },
    );
    let report = check(&scheduled_scenario(), 5, &record);
    assert!(report.passed(), "{report}");
    assert_eq!(report.counts.lost_to_rollback, 1, "{report}");
}

#[test]
fn a_scheduled_task_started_before_its_due_time_breaks_not_before_due() {
    let (mut record, task, _) = scheduled_record();
    let first_start = record
        .history
        .events()
        .iter()
        .find_map(|e| match &e.event {
            Event::HandlerStarted { task: t, .. } if *t == task => Some(e.at_ms),
            _ => None,
        })
        .expect("it ran");
    // Its dispatch said it was due later than it ran.
    let mut events = record.history.events().to_vec();
    for stamped in &mut events {
        if let Event::DispatchedLater { task: t, due_ms } = &mut stamped.event
            && *t == task
        {
            *due_ms = first_start + 1;
        }
    }
    record.history = crate::history::History::from_events(events);
    let report = check(&scheduled_scenario(), 5, &record);
    let broken: Vec<_> = report.violations.iter().map(|v| v.invariant).collect();
    assert_eq!(broken, [Invariant::NotBeforeDue], "{report}");
}
