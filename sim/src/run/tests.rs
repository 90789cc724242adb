//! The run's own bookkeeping: hit counts of the fault classes.

use crate::plan::{FaultPlan, Poison, PoisonKind};
use crate::{Faults, Scenario, Simulation};

#[test]
fn every_poison_kind_dispatched_is_counted_as_a_hit() {
    let mut plan = FaultPlan::none();
    for (task, kind) in PoisonKind::ALL.into_iter().enumerate() {
        plan.poison.push(Poison {
            task: task as u32 * 2,
            kind,
        });
    }
    let scenario = Scenario::default().tasks(20).faults(Faults::Plan(plan));
    crate::silence_injected_panics();
    let record = Simulation::standard(scenario).record(3).expect("runs");
    for kind in PoisonKind::ALL {
        assert_eq!(
            record.hits.get(kind.class()),
            Some(&1),
            "{kind:?}: {:?}",
            record.hits
        );
    }
}
