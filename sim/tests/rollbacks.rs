//! Broker rollbacks (issue 9): the memory broker restored to a snapshot
//! taken some milliseconds earlier, as Redis restarted from an AOF written
//! with `appendfsync everysec` or a failover to a lagging replica does. The
//! checker reports the tasks the rollback lost apart from crewq's
//! violations; every other task still ends as the invariants say.

use std::time::Duration;

use crewq_sim::{
    Crash, FaultPlan, FaultRates, Faults, HandlerFault, HandlerFaultAt, Poison, PoisonKind,
    Rollback, Scenario, Simulation,
};

/// One rollback at `at_ms` losing `lag_ms`, nothing else wrong.
fn rolled_back(at_ms: u64, lag_ms: u64) -> Scenario {
    let plan = FaultPlan {
        rollbacks: vec![Rollback { at_ms, lag_ms }],
        ..FaultPlan::none()
    };
    Scenario::default().faults(Faults::Plan(plan))
}

/// Tasks are dispatched over 2.5 s: a second lost in the middle of it
/// forgets dispatches, deliveries, results and acknowledgements. The
/// dispatches are lost to the rollback; everything else is re-run.
#[test]
fn dispatches_a_rollback_forgot_are_lost_to_it_and_everything_else_completes() {
    for seed in 1..=3 {
        let report = Simulation::standard(rolled_back(1_500, 1_000))
            .run(seed)
            .expect("runs");
        assert!(report.passed(), "{report}");
        assert_eq!(report.hits.get("rollback"), Some(&1), "{report}");
        let c = report.counts;
        assert!(c.lost_to_rollback > 0, "nothing forgotten: {report}");
        assert_eq!(c.lost, 0);
        assert_eq!(
            c.ok + c.duplicated + c.dead_lettered + c.lost_to_rollback,
            u64::from(Scenario::default().tasks),
            "{report}"
        );
    }
}

/// A rollback after the last dispatch forgets only what workers did: every
/// task is re-run and completes; none is lost.
#[test]
fn a_rollback_after_the_last_dispatch_loses_nothing_and_reruns_what_it_forgot() {
    for seed in 1..=3 {
        let report = Simulation::standard(rolled_back(2_900, 300))
            .run(seed)
            .expect("runs");
        assert!(report.passed(), "{report}");
        assert_eq!(report.hits.get("rollback"), Some(&1), "{report}");
        assert_eq!(report.counts.lost_to_rollback, 0, "{report}");
        assert_eq!(
            report.counts.ok + report.counts.duplicated,
            u64::from(Scenario::default().tasks),
            "{report}"
        );
    }
}

/// Found by the simulator (seed 65 of the standard campaign): a rollback
/// forgot the supervisor's group on the results stream, which it had
/// created after the snapshot; its next drain of its own pending results
/// failed with `NOGROUP`, and so did every gather after it. The supervisor
/// now forgets the group and creates it again, as its reads already did.
#[test]
fn a_supervisor_whose_group_a_rollback_forgot_creates_it_again() {
    standard_seed_passes_through_its_rollback(65);
}

/// Runs `seed` at the rollback-only rates: its rollback fires and every
/// invariant holds.
fn standard_seed_passes_through_its_rollback(seed: u64) {
    seed_passes_through_its_rollback(seed, FaultRates::ROLLBACK);
}

fn seed_passes_through_its_rollback(seed: u64, rates: FaultRates) {
    crewq_sim::silence_injected_panics();
    let scenario = Scenario::default().faults(Faults::Rates(rates));
    let report = Simulation::standard(scenario).run(seed).expect("runs");
    assert_eq!(report.hits.get("rollback"), Some(&1), "{report}");
    assert!(report.passed(), "{report}");
}

/// Found when rollbacks joined the standard campaign (seed 266): a
/// rollback made the group's last-delivered id go backwards, which the
/// worker took for a peer having made the group again, and it acknowledged
/// unrun the entries its sample from before showed finished. The rollback
/// had forgotten those acknowledgements: the tasks were lost with their
/// entries still there. A last-delivered id going backwards now makes the
/// worker forget what it knew finished.
#[test]
fn a_rollback_that_moves_the_group_back_makes_the_worker_forget_what_it_knew_finished() {
    seed_passes_through_its_rollback(266, FaultRates::STANDARD);
}

/// Found when rollbacks joined the standard campaign (seed 272): a worker
/// holding an entry saw it trimmed; a rollback restored it and another
/// worker completed it; the first worker then dead-lettered it as
/// `deleted_while_pending` though it was back in the stream. The worker
/// now checks the entry is still gone before (and between tries of) that
/// dead letter.
#[test]
fn an_entry_a_rollback_restored_is_not_dead_lettered_as_deleted() {
    seed_passes_through_its_rollback(272, FaultRates::STANDARD);
}

/// Found when rollbacks joined the standard campaign (seed 606): the
/// checker tied a handler run to the task's last entry the final state
/// holds, not to the entry (appended after the snapshot, then forgotten)
/// it ran, so its settle went unseen and `success_recorded` failed.
#[test]
fn a_run_of_an_entry_a_rollback_forgot_is_tied_to_that_entry() {
    seed_passes_through_its_rollback(606, FaultRates::STANDARD);
}

/// Found when rollbacks joined the standard campaign (seed 124): an entry
/// trimmed while pending was dead-lettered as `deleted_while_pending`; a
/// rollback forgot the letter and restored the entry, which ran again and
/// succeeded; the worker that had held it wrote the letter again (the
/// entry trimmed anew). A success beside a dead letter, reported apart as
/// replayed, not a crewq violation.
#[test]
fn an_entry_found_deleted_then_restored_by_a_rollback_counts_as_replayed() {
    seed_passes_through_its_rollback(124, FaultRates::STANDARD);
}

/// Found by the proptest of generated scenarios: task 0 hangs, its only
/// run times out and it is dead-lettered with a failure result, which the
/// supervisor gathers; 1 ms later a rollback forgets result and dead
/// letter, and the task runs again and succeeds. The gather's failure is
/// the first result the broker acknowledged, not a crewq violation.
#[test]
fn a_gather_may_hold_a_result_a_rollback_then_forgot() {
    let plan = FaultPlan {
        handler: vec![HandlerFaultAt {
            task: 0,
            call: 1,
            fault: HandlerFault::Hang,
        }],
        rollbacks: vec![Rollback {
            at_ms: 1_357,
            lag_ms: 1,
        }],
        ..FaultPlan::none()
    };
    let scenario = Scenario::default()
        .tasks(9)
        .agent_types(["research", "report"])
        .workers(1)
        .max_retries(0)
        .lease(Duration::from_millis(678))
        .faults(Faults::Plan(plan));
    let report = Simulation::standard(scenario).run(110).expect("runs");
    assert_eq!(report.hits.get("rollback"), Some(&1), "{report}");
    assert!(report.passed(), "{report}");
    assert_eq!(report.counts.ok, 9, "task 0 ran again and succeeded");
}

/// Found by the scenario proptest: the only worker crashed at the start,
/// so its group did not exist at the snapshot's time; the rollback
/// destroyed it, and the worker made it again after what it had read,
/// leaving every task unread. That is a destroyed group, a fault class of
/// its own: such a rollback does not fire.
#[test]
fn a_rollback_to_before_the_worker_group_existed_does_not_fire() {
    let plan = FaultPlan {
        crashes: vec![Crash {
            worker: 0,
            at_ms: 0,
            down_ms: 189,
            rename: false,
        }],
        rollbacks: vec![Rollback {
            at_ms: 192,
            lag_ms: 3,
        }],
        ..FaultPlan::none()
    };
    let scenario = Scenario::default()
        .tasks(9)
        .workers(1)
        .max_retries(0)
        .lease(Duration::from_millis(596))
        .faults(Faults::Plan(plan));
    let report = Simulation::standard(scenario).run(376).expect("runs");
    assert_eq!(report.hits.get("rollback"), None, "{report}");
    assert!(report.passed(), "{report}");
}

/// Found by the scenario proptest: task 1 always fails; the deliveries of
/// its runs after the snapshot were undone by the rollback (the retries it
/// had put back forgotten), so they happened again. The redelivery bound
/// counts undone deliveries as disruptions.
#[test]
fn deliveries_a_rollback_undid_may_happen_again() {
    let plan = FaultPlan {
        crashes: vec![Crash {
            worker: 0,
            at_ms: 393,
            down_ms: 578,
            rename: false,
        }],
        failing: vec![0, 1],
        poison: vec![Poison {
            task: 2,
            kind: PoisonKind::Undecodable,
        }],
        rollbacks: vec![Rollback {
            at_ms: 1_457,
            lag_ms: 453,
        }],
        ..FaultPlan::none()
    };
    let scenario = Scenario::default()
        .tasks(17)
        .workers(1)
        .max_retries(3)
        .lease(Duration::from_millis(815))
        .faults(Faults::Plan(plan));
    let report = Simulation::standard(scenario).run(295).expect("runs");
    assert_eq!(report.hits.get("rollback"), Some(&1), "{report}");
    assert!(report.passed(), "{report}");
}
