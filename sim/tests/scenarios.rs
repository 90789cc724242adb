//! Random scenarios (agent types, workers, retries, leases) with random
//! fault plans: the real crew keeps every invariant in all of them.

use crewq_sim::{Simulation, strategy};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn every_generated_scenario_keeps_the_invariants(scenario in strategy::scenario(), seed in 0..1_000u64) {
        let report = Simulation::standard(scenario.clone()).run(seed).expect("runs");
        prop_assert!(report.passed(), "{report}\nplan: {}", report.plan);
        let c = report.counts;
        prop_assert_eq!(
            c.ok + c.duplicated + c.dead_lettered + c.lost_to_trim + c.replayed + c.lost_to_rollback,
            u64::from(scenario.tasks)
        );
    }
}
