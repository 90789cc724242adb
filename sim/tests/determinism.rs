//! The same seed gives the same history, byte for byte: 50 seeds run twice
//! each (the double-run check), in both fault modes; other seeds differ.

use crewq_sim::{Campaign, Faults, Scenario, Simulation, double_run_campaign};

fn assert_repeatable(simulation: &Simulation, first_seed: u64, seeds: u64) {
    let repeats = double_run_campaign(simulation, &Campaign::new(first_seed, seeds), |_| {});
    assert_eq!(repeats.len() as u64, seeds);
    for (seed, repeat) in &repeats {
        match repeat {
            Ok(run) if run.repeat.is_ok() => {}
            other => panic!("seed {seed} is not repeatable: {other:?}"),
        }
    }
    let hashes: std::collections::BTreeSet<_> = repeats
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok()?.repeat.as_ref().ok().copied())
        .collect();
    assert_eq!(
        hashes.len() as u64,
        seeds,
        "every seed has a history of its own"
    );
}

#[test]
fn fifty_seeds_run_twice_give_the_same_histories() {
    assert_repeatable(&Simulation::standard(Scenario::default()), 1, 50);
}

#[test]
fn swarm_seeds_run_twice_give_the_same_histories() {
    let scenario = Scenario::default().tasks(40).faults(Faults::Swarm);
    assert_repeatable(&Simulation::standard(scenario), 1_000, 20);
}

#[test]
fn a_seed_gives_the_same_report_and_encoded_history() {
    let simulation = Simulation::standard(Scenario::default().tasks(30));
    let (first, history) = simulation.run_recorded(9).expect("runs");
    let (second, again) = simulation.run_recorded(9).expect("runs");
    assert_eq!(first, second);
    assert_eq!(history.encode(), again.encode());
    assert_eq!(first.trace_hash, history.hash());
    assert!(
        history.len() > 100,
        "a run records its events: {}",
        history.len()
    );
}
