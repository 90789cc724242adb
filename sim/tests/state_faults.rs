//! The simulator's state-level fault classes (issue 9): each is reached by a
//! plain plan, and the real crew keeps every invariant under it.

use crewq_sim::{FaultPlan, FaultRates, Faults, Poison, PoisonKind, Scenario, Simulation};

/// Tasks of the plans below.
const TASKS: u32 = 40;

/// A plan with two poison tasks of each of `kinds`, nothing else wrong.
fn poisoned(kinds: &[PoisonKind]) -> FaultPlan {
    let mut plan = FaultPlan::none();
    for (k, &kind) in kinds.iter().enumerate() {
        for task in [k as u32 * 3 + 1, TASKS - 1 - k as u32 * 3] {
            plan.poison.push(Poison { task, kind });
        }
    }
    plan
}

#[test]
fn malformed_peer_entries_and_panicking_validators_are_dead_lettered_never_run() {
    let kinds = [
        PoisonKind::PanickingValidator,
        PoisonKind::AttemptsOverflow,
        PoisonKind::AttemptsGarbage,
        PoisonKind::WrongAgentType,
    ];
    let scenario = Scenario::default()
        .tasks(TASKS)
        .faults(Faults::Plan(poisoned(&kinds)));
    crewq_sim::silence_injected_panics();
    for seed in 1..=3 {
        let report = Simulation::standard(scenario.clone())
            .run(seed)
            .expect("runs");
        // The checker holds each dead letter to the worker's poison reason
        // (panicked, invalid_attempts, wrong_agent_type) and no run.
        assert!(report.passed(), "{report}");
        assert_eq!(
            report.counts.dead_lettered,
            2 * kinds.len() as u64,
            "{report}"
        );
        assert_eq!(report.counts.ok, u64::from(TASKS) - 2 * kinds.len() as u64);
    }
}

/// The standard rates with one injected trim of the task stream per run.
fn with_trims() -> Scenario {
    let rates = FaultRates {
        trims: 1,
        ..FaultRates::STANDARD
    };
    Scenario::default()
        .faults(Faults::Rates(rates))
        .safe_retention(true)
}

/// Seeds 1 and 5 found two worker bugs (issue 9): an entry found deleted
/// by two paths (or whose dead-letter write lost its reply) was
/// dead-lettered twice (seed 1); a settle retried after a failed try took
/// "no longer pending" for its own applied write although a renewal had
/// seen the entry deleted, and the task vanished silently (seed 5).
#[test]
fn an_entry_trimmed_while_pending_gets_one_dead_letter_never_silence() {
    crewq_sim::silence_injected_panics();
    for seed in [1, 5] {
        let report = Simulation::standard(with_trims()).run(seed).expect("runs");
        assert!(report.passed(), "{report}");
    }
}

/// Seed 30 (the standard rates, one trim, no retention) lost a task
/// silently (issue 9): `XAUTOCLAIM` dropped an entry trimmed while pending
/// from the pending list and the dead letter written after it was lost to a
/// fault. The reclaim now writes it in the same atomic step
/// (`Broker::autoclaim_recorded`).
#[test]
fn an_entry_reclaimed_after_a_trim_is_dead_lettered_in_the_same_step() {
    let scenario = Scenario::default().safe_retention(false);
    let report = Simulation::standard(scenario).run(30).expect("runs");
    assert!(report.passed(), "{report}");
}

/// Found by the campaign once trims went on (seed 635): a running task's
/// entry trimmed while pending stays pending for its worker, whose settle
/// applied and lost its reply; the retry found it no longer pending and,
/// since a renewal had seen it deleted, dead-lettered it beside its own
/// recorded outcome. Either its own try applied or a peer's reclaim
/// dead-lettered it in the claim: the worker writes nothing more.
#[test]
fn a_settle_retried_after_a_trim_does_not_dead_letter_its_own_outcome() {
    // As found: before stream deletions joined the standard rates (the one
    // drawn now would change the run).
    let rates = FaultRates {
        stream_delete: 0.0,
        ..FaultRates::STANDARD
    };
    let scenario = Scenario::default().faults(Faults::Rates(rates));
    let report = Simulation::standard(scenario).run(635).expect("runs");
    assert!(report.passed(), "{report}");
}

/// Found by the simulator (issue 9): a zombie (paused past its lease) whose
/// entry a peer completed and safe retention then trimmed took the entry for
/// deleted while pending and dead-lettered it beside the peer's success. A
/// renewal now counts an entry as deleted only while it is still pending for
/// this consumer.
#[test]
fn a_zombie_does_not_dead_letter_an_entry_a_peer_completed_and_retention_trimmed() {
    let scenario = Scenario::default().safe_retention(true);
    let report = Simulation::standard(scenario).run(49).expect("runs");
    assert!(report.passed(), "{report}");
}

/// A swarm seed whose crew got two entries of one task in one read (its
/// first, replayed after its group was destroyed and made again, and its
/// promoted retry) and ran both: each run is judged on its own entry.
#[test]
fn two_entries_of_one_task_in_one_read_are_judged_each_on_its_own() {
    // As found: before priorities joined the swarms (the plan the seed
    // draws now dispatches at priorities, a different run).
    let mut plan = Scenario::default().faults(Faults::Swarm).plan_for(1109);
    plan.priorities.clear();
    plan.lanes = None;
    let scenario = Scenario::default().faults(Faults::Plan(plan));
    let report = Simulation::standard(scenario).run(1109).expect("runs");
    assert!(report.passed(), "{report}");
}

/// A small standard campaign dispatches some tasks for later (issue 12's
/// scheduled dispatch, a tenth of the tasks), and every invariant holds:
/// none started before its due time, none lost.
#[test]
fn a_standard_campaign_dispatches_tasks_for_later_and_keeps_every_invariant() {
    use crewq_sim::{Campaign, run_campaign};

    let simulation = Simulation::standard(Scenario::default());
    let report = run_campaign(&simulation, &Campaign::new(1, 10).jobs(1), |_| {});
    assert!(report.passed(), "{:?}", report.failures);
    let scheduled = report.hits.get("scheduled_dispatch").copied().unwrap_or(0);
    assert!(
        scheduled > 50,
        "scheduled_dispatch fired {scheduled} times: {:?}",
        report.hits
    );
}

/// A task stream deleted (`DEL`) under running tasks (issue 9): slow first
/// runs hold every slot of the one worker when it goes. It finds the group
/// gone (a renewal) and dead-letters them `deleted_while_pending` with
/// their data; what was unread is lost to the delete, reported apart, never
/// a violation. The `drop-deleted-with-group` mutant drops the held ones
/// silently. (With peers, one that makes the group again before a busy
/// holder learns it was gone leaves the holder unable to tell its entries
/// from ones a peer finished: those are lost to the delete too.)
#[test]
fn a_stream_deleted_under_running_tasks_is_reported_and_costs_only_its_unread() {
    use crewq_sim::{HandlerFault, HandlerFaultAt, Invariant, Mutant, StreamDeleteAt};
    crewq_sim::silence_injected_panics();
    let scenario = |mutant: Option<Mutant>| {
        let handler = (0..4)
            .map(|task| HandlerFaultAt {
                task,
                call: 1,
                fault: HandlerFault::Slow { ms: 900 },
            })
            .collect();
        let plan = FaultPlan {
            handler,
            stream_deletes: vec![StreamDeleteAt {
                agent: 0,
                at_ms: 300,
            }],
            ..FaultPlan::none()
        };
        Scenario::default()
            .agent_types(["research"])
            .workers(1)
            .faults(Faults::Plan(plan))
            .mutant(mutant)
    };
    let report = Simulation::standard(scenario(None)).run(1).expect("runs");
    assert_eq!(report.hits.get("stream_deleted"), Some(&1), "{report}");
    assert!(report.passed(), "{report}");
    assert_eq!(report.counts.lost, 0, "{report}");
    // The four held: dead-lettered, not lost.
    assert_eq!(report.counts.dead_lettered, 4, "{report}");
    let mutated = Simulation::standard(scenario(Some(Mutant::DropDeletedWithGroup)))
        .run(1)
        .expect("runs");
    assert!(
        mutated
            .violations
            .iter()
            .any(|v| v.invariant == Invariant::DeletedWithStreamReported),
        "drop-deleted-with-group was not caught: {mutated}"
    );
}
