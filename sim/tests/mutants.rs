//! The checker catches real bugs: each deliberately broken worker breaks an
//! invariant within a few seeds, while the real worker passes the very
//! same seeds.

use crewq_sim::{FaultRates, Faults, Invariant, Mutant, Report, Scenario, Simulation};

/// Seeds each mutant gets to be caught in.
const SEEDS: u64 = 5;

/// Seeds the mutants of the newer fault classes get: at most 20.
const MORE_SEEDS: u64 = 20;

fn runs(mutant: Option<Mutant>) -> Vec<Report> {
    runs_over(mutant, SEEDS)
}

fn runs_over(mutant: Option<Mutant>, seeds: u64) -> Vec<Report> {
    let simulation = Simulation::standard(Scenario::default().mutant(mutant));
    (1..=seeds)
        .map(|seed| simulation.run(seed).expect("runs"))
        .collect()
}

/// Asserts `mutant` is caught within [`SEEDS`] seeds, breaking `expected`.
fn caught(mutant: Mutant, expected: Invariant) {
    caught_within(mutant, expected, SEEDS);
}

/// Asserts `mutant` is caught within `seeds` seeds, breaking `expected`,
/// while the real worker passes the seed that caught it.
fn caught_within(mutant: Mutant, expected: Invariant, seeds: u64) {
    let simulation = Simulation::standard(Scenario::default());
    for seed in 1..=seeds {
        let report = Simulation::standard(Scenario::default().mutant(Some(mutant)))
            .run(seed)
            .expect("runs");
        if report.passed() {
            continue;
        }
        assert!(
            report.violations.iter().any(|v| v.invariant == expected),
            "{mutant} was caught, but not by {expected}: {report}"
        );
        let real = simulation.run(seed).expect("runs");
        assert!(real.passed(), "the real worker fails seed {seed}: {real}");
        return;
    }
    panic!("{mutant} survived {seeds} seeds");
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

#[test]
fn trust_task_agent_type_is_caught_running_a_poison_task() {
    caught_within(
        Mutant::TrustTaskAgentType,
        Invariant::DeadLetterRouting,
        MORE_SEEDS,
    );
}

/// A rollback makes the broker deliver again an entry whose settle it
/// forgot; the mutant's cache acknowledges it unrun. The entry survived
/// the rollback, so its loss is crewq's, not the rollback's.
#[test]
fn remember_settled_is_caught_losing_a_task_a_rollback_redelivered() {
    caught_within(Mutant::RememberSettled, Invariant::NoLoss, MORE_SEEDS);
}

#[test]
fn ignore_deleted_is_caught_losing_a_trimmed_entry() {
    // Injected trims are off in the standard rates (TrimAt): on here.
    let rates = FaultRates {
        trims: 1,
        ..FaultRates::STANDARD
    };
    let scenario = Scenario::default().faults(Faults::Rates(rates));
    for seed in 1..=MORE_SEEDS {
        let mutant = Simulation::standard(scenario.clone().mutant(Some(Mutant::IgnoreDeleted)));
        let report = mutant.run(seed).expect("runs");
        if report.passed() {
            continue;
        }
        let real = Simulation::standard(scenario.clone())
            .run(seed)
            .expect("runs");
        if !real.passed() {
            // A seed the real worker fails too (a known gap with trims on)
            // proves nothing about the mutant.
            continue;
        }
        assert!(
            report
                .violations
                .iter()
                .any(|v| v.invariant == Invariant::NoLoss),
            "ignore-deleted was caught, but not by no_loss: {report}"
        );
        return;
    }
    panic!("ignore-deleted survived {MORE_SEEDS} seeds");
}
