//! Priorities in the simulator (issue 12): tasks dispatched at drawn
//! priorities, each to its priority's lane, read across lanes highest
//! first; the checker holds every read to `priority_order_kept`.

use crewq_sim::{
    FaultPlan, FaultRates, Faults, HandlerFault, HandlerFaultAt, Invariant, LaneSettings, Mutant,
    Scenario, Simulation, TaskPriority,
};

/// One worker whose four slots are held by slow first runs for the first
/// second, while the workload piles up in lane 0 and in lane 7 (every
/// third task); a starvation bound far longer than the run, so no entry
/// starves and every read with both lanes backlogged must take lane 7's
/// first.
fn backlog(mutant: Option<Mutant>) -> Scenario {
    let handler = (0..4)
        .map(|task| HandlerFaultAt {
            task,
            call: 1,
            fault: HandlerFault::Slow { ms: 900 },
        })
        .collect();
    let plan = FaultPlan {
        handler,
        priorities: (4..100)
            .filter(|task| task % 3 == 0)
            .map(|task| TaskPriority { task, priority: 7 })
            .collect(),
        lanes: Some(LaneSettings {
            starvation_ms: 60_000,
            lane_poll_ms: 20,
        }),
        ..FaultPlan::none()
    };
    Scenario::default()
        .agent_types(["research"])
        .workers(1)
        .rate_limits(false)
        .faults(Faults::Plan(plan))
        .mutant(mutant)
}

#[test]
fn a_backlog_is_read_highest_priority_first() {
    let report = Simulation::standard(backlog(None)).run(1).expect("runs");
    assert!(report.passed(), "{report}");
    assert_eq!(report.counts.ok, 100, "{report}");
    let reads = report.hits.get("lanes_read").copied().unwrap_or(0);
    assert!(reads > 5, "only {reads} reads across lanes: {report}");
}

/// `ignore-priority` reads the lanes lowest first: lane 0's backlog goes
/// before lane 7's, which the checker sees at the first such read.
#[test]
fn ignore_priority_is_caught_taking_a_lower_priority_first() {
    let report = Simulation::standard(backlog(Some(Mutant::IgnorePriority)))
        .run(1)
        .expect("runs");
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.invariant == Invariant::PriorityOrderKept),
        "ignore-priority was not caught: {report}"
    );
}

/// Aging: with a starvation bound of 100 ms, lane 0's backlog, older than
/// the bound, is taken before lane 7's younger entries, and that is no
/// violation.
#[test]
fn a_starving_lower_priority_goes_first_without_a_violation() {
    let mut scenario = backlog(None);
    if let Faults::Plan(plan) = &mut scenario.faults {
        plan.lanes = Some(LaneSettings {
            starvation_ms: 100,
            lane_poll_ms: 20,
        });
    }
    let report = Simulation::standard(scenario).run(1).expect("runs");
    assert!(report.passed(), "{report}");
}

/// The standard rates draw priorities in about a quarter of the runs, and
/// those runs keep every invariant.
#[test]
fn standard_runs_with_priorities_keep_every_invariant() {
    crewq_sim::silence_injected_panics();
    let simulation =
        Simulation::standard(Scenario::default().faults(Faults::Rates(FaultRates::STANDARD)));
    let mut with = 0;
    for seed in 1..=24 {
        let report = simulation.run(seed).expect("runs");
        assert!(report.passed(), "{report}");
        if report.hits.contains_key("priorities") {
            with += 1;
        }
    }
    assert!(with >= 2, "only {with} of 24 runs drew priorities");
}
