//! The simulator's state-level fault classes (issue 9): each is reached by a
//! plain plan, and the real crew keeps every invariant under it.

use crewq_sim::{FaultPlan, Faults, Poison, PoisonKind, Scenario, Simulation};

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
