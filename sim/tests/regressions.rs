//! Seeds of the standard campaign that once failed, kept as named runs.

use crewq_sim::{Scenario, Simulation};

/// Found when priority lanes and slow-downs joined (standard seed 2714): a
/// rate-limited worker held entries it had drained from its own pending
/// list, waiting for permits; the group was destroyed meanwhile. Each
/// attempt, counting its deliveries before running, asked the broker again
/// and again while the group was missing, holding its slot; with every slot
/// so held the worker never read again, so it never saw the group missing
/// nor made it again, and ten tasks stayed unread for good. An attempt that
/// finds the group gone there now gives its entry up, as a settle does.
#[test]
fn a_worker_whose_slots_wait_on_a_destroyed_group_makes_it_again() {
    crewq_sim::silence_injected_panics();
    let report = Simulation::standard(Scenario::default())
        .run(2714)
        .expect("runs");
    assert_eq!(report.hits.get("group_destroyed"), Some(&1), "{report}");
    assert!(report.passed(), "{report}");
}
