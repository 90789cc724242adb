//! The checker catches real bugs: each deliberately broken worker breaks an
//! invariant within a few seeds, while the real worker passes the very
//! same seeds.

use crewq_sim::{Invariant, Mutant, Report, Scenario, Simulation};

/// Seeds each mutant gets to be caught in.
const SEEDS: u64 = 5;

fn runs(mutant: Option<Mutant>) -> Vec<Report> {
    let simulation = Simulation::standard(Scenario::default().mutant(mutant));
    (1..=SEEDS)
        .map(|seed| simulation.run(seed).expect("runs"))
        .collect()
}

/// Asserts `mutant` is caught within [`SEEDS`] seeds, breaking `expected`.
fn caught(mutant: Mutant, expected: Invariant) {
    let reports = runs(Some(mutant));
    let first = reports
        .iter()
        .find(|r| !r.passed())
        .unwrap_or_else(|| panic!("{mutant} survived {SEEDS} seeds"));
    assert!(
        first.violations.iter().any(|v| v.invariant == expected),
        "{mutant} was caught, but not by {expected}: {first}"
    );
}

#[test]
fn the_real_worker_passes_the_seeds_the_mutants_fail() {
    for report in runs(None) {
        assert!(report.passed(), "{report}");
    }
}

#[test]
fn ack_before_handle_is_caught_losing_tasks() {
    caught(Mutant::AckBeforeHandle, Invariant::NoLoss);
}

#[test]
fn no_reclaim_is_caught_leaving_tasks_pending() {
    caught(Mutant::NoReclaim, Invariant::NothingPending);
}

#[test]
fn dlq_without_ack_is_caught_dead_lettering_twice() {
    caught(Mutant::DlqWithoutAck, Invariant::OneDeadLetter);
}

#[test]
fn dlq_on_first_failure_is_caught_dead_lettering_early() {
    caught(Mutant::DlqOnFirstFailure, Invariant::DeadLetterRouting);
}

// Broker-level fault classes (issue 9): failover refusals and refused
// settle items.

#[test]
fn fatal_on_unavailable_is_caught_stopping_the_worker() {
    caught(Mutant::FatalOnUnavailable, Invariant::RunCompletes);
}

#[test]
fn failed_item_acked_is_caught_losing_outcomes() {
    caught(Mutant::FailedItemAcked, Invariant::NoLoss);
}
