//! proptest shrinks a failing fault plan to a minimal one: with a worker
//! that dead-letters on the first failure, the minimal plan is one task
//! failing once, nothing else going wrong.

use crewq_sim::{FaultPlan, Faults, Mutant, Scenario, Simulation, strategy};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};

fn failing_plan_shrinks(scenario: Scenario) -> FaultPlan {
    let config = Config {
        cases: 64,
        max_shrink_iters: 4096,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let outcome = runner.run(&strategy::fault_plan(&scenario), |plan| {
        let scenario = scenario.clone().faults(Faults::Plan(plan));
        let report = Simulation::standard(scenario).run(1).expect("runs");
        prop_assert!(report.passed(), "{report}");
        Ok(())
    });
    match outcome {
        Err(TestError::Fail(_, minimal)) => minimal,
        other => panic!("the mutant should fail some plan: {other:?}"),
    }
}

#[test]
fn a_failing_plan_shrinks_to_one_failure() {
    let scenario = Scenario::default()
        .tasks(20)
        .workers(2)
        .mutant(Some(Mutant::DlqOnFirstFailure));
    let minimal = failing_plan_shrinks(scenario.clone());
    assert!(
        minimal.crashes.is_empty() && minimal.pauses.is_empty() && minimal.poison.is_empty(),
        "{minimal}"
    );
    assert_eq!(
        minimal.handler.len() + minimal.failing.len(),
        1,
        "{minimal}"
    );
    assert_eq!(
        (
            minimal.broker.error_before,
            minimal.broker.error_after,
            minimal.broker.latency_ms
        ),
        (0.0, 0.0, 0),
        "{minimal}"
    );
    // And it still fails, while nothing at all passes.
    let fails = scenario.clone().faults(Faults::Plan(minimal));
    assert!(!Simulation::standard(fails).run(1).expect("runs").passed());
    let none = scenario.faults(Faults::Plan(FaultPlan::none()));
    assert!(Simulation::standard(none).run(1).expect("runs").passed());
}
