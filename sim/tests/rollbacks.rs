//! Broker rollbacks (issue 9): the memory broker restored to a snapshot
//! taken some milliseconds earlier, as Redis restarted from an AOF written
//! with `appendfsync everysec` or a failover to a lagging replica does. The
//! checker reports the tasks the rollback lost apart from crewq's
//! violations; every other task still ends as the invariants say.

use std::time::Duration;

use crewq_sim::{
    Crash, FaultPlan, FaultRates, Faults, GroupDestroyAt, HandlerFault, HandlerFaultAt, Invariant,
    Mutant, Poison, PoisonKind, Rollback, Scenario, Simulation,
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
    // As found: before stream deletions and priorities joined the
    // standard rates (a deletion or priorities drawn now would change the
    // run the seed names).
    let rates = FaultRates {
        stream_delete: 0.0,
        priorities: 0.0,
        ..rates
    };
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

/// A rollback and a group destroy in one run (issue 9; before, a run drew
/// one or the other). A rollback back 1 s forgets the acknowledgements of
/// that second, whose entries are pending again; the samples of the
/// group's floor taken in that second saw them finished. The group,
/// destroyed 200 ms after the rollback, is made again before a sample
/// sees it: from the newest sample alone (the `trust-newest-sample` mutant)
/// it comes back above those entries, which are never delivered again.
/// The real worker keeps the samples of its rollback window (the plan's
/// lag here) and trusts only what all of them agree on: nothing is lost.
#[test]
fn a_group_destroyed_just_after_a_rollback_comes_back_below_what_it_forgot() {
    let scenario = |mutant: Option<Mutant>| {
        // Slow first runs, ending in the second the rollback forgets.
        let handler = (16..=24)
            .map(|task| HandlerFaultAt {
                task,
                call: 1,
                fault: HandlerFault::Slow { ms: 800 },
            })
            .collect();
        let plan = FaultPlan {
            handler,
            rollbacks: vec![Rollback {
                at_ms: 1_600,
                lag_ms: 1_000,
            }],
            // After a few appends (which hide the rollback from the
            // stream's top), and before most workers sample the group again.
            group_destroys: vec![GroupDestroyAt {
                agent: 0,
                at_ms: 1_800,
            }],
            ..FaultPlan::none()
        };
        Scenario::default()
            .faults(Faults::Plan(plan))
            .mutant(mutant)
    };
    // The plan has no random part: one seed shows it.
    let report = Simulation::standard(scenario(None)).run(1).expect("runs");
    assert_eq!(report.hits.get("rollback"), Some(&1), "{report}");
    assert_eq!(report.hits.get("group_destroyed"), Some(&1), "{report}");
    assert!(report.passed(), "{report}");
    assert_eq!(report.counts.lost, 0, "{report}");
    let mutated = Simulation::standard(scenario(Some(Mutant::TrustNewestSample)))
        .run(1)
        .expect("runs");
    assert!(
        mutated
            .violations
            .iter()
            .any(|v| v.invariant == Invariant::NoLoss),
        "trust-newest-sample lost nothing: {mutated}"
    );
}

/// Found when a rollback and a group destroy joined in one run (seed 814):
/// an entry trimmed while pending was reported deleted and dead-lettered;
/// a rollback to before the report forgot the letter and put the entry
/// back on the pending list (not in the stream: the trim came before the
/// snapshot), and the group destroy then took that last trace of it. The
/// checker now counts it lost to the trim (reported apart), not to crewq.
#[test]
fn an_entry_cut_before_a_rollback_that_forgot_its_letter_is_lost_to_the_trim() {
    seed_passes_through_its_rollback(814, FaultRates::STANDARD);
}

/// Found when a rollback and a group destroy joined in one run (seed 404):
/// an entry trimmed while pending was found deleted; a rollback restored
/// it, and its holder, unsure whether it was back (the check failed),
/// wrote the `deleted_while_pending` letter rather than risk losing it,
/// while the task had completed. Beside a success such a letter covers no
/// loss: the checker no longer calls it a routing violation.
#[test]
fn a_deleted_letter_beside_a_success_of_a_restored_entry_is_no_violation() {
    seed_passes_through_its_rollback(404, FaultRates::STANDARD);
}

/// Found when a rollback and a group destroy joined in one run (seed 2803):
/// a successful run's settle went out with another item in one call, just
/// after the group was destroyed; the fault layer refused its item and sent
/// the other alone, which found no group. The worker rightly took its own
/// item's outcome for lost with the group, but only the other item reached
/// the history, so its success looked dropped. On Redis a missing group
/// fails the whole call before any item is refused: the fault layer now
/// sends the refused items too, and the history sees both find no group.
#[test]
fn a_settle_item_refused_in_a_call_that_found_no_group_finds_no_group_too() {
    seed_passes_through_its_rollback(2803, FaultRates::STANDARD);
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

/// Swarm seed 346 rolls the broker back to a snapshot taken in the same ms
/// as a rate-limit grant the snapshot did not see: the broker granted again
/// in its place, and `rate_limit_kept` must not count both.
#[test]
fn a_grant_in_the_snapshots_own_ms_is_taken_back_with_it() {
    let simulation = crewq_sim::Simulation::standard(
        crewq_sim::Scenario::default().faults(crewq_sim::Faults::Swarm),
    );
    let report = simulation.run(346).expect("runs");
    assert!(report.passed(), "{report}");
}
