//! The checker: classifies every task from the history and the final state,
//! and holds the run to DESIGN.md's invariants.
//!
//! It trusts neither the workers' reports nor their logs: only what the
//! broker applied (recorded under the fault injection), the handler calls,
//! and the streams after the drain.

mod cancelled;
mod deleted;
mod due;
mod facts;
mod overlap;
mod priority;
mod rate;
mod reads;
mod rollback;
#[cfg(test)]
mod run_tests;
mod runs;
mod slowdown;
mod success;
#[cfg(test)]
mod tests;

use crewq_core::{DeadLetterReason, WireErrorKind};

use crate::Scenario;
use crate::crew::{fails_for_good, task_id};
use crate::plan::PoisonKind;
use crate::report::{Class, Counts, Invariant, Report, RunStats, Violation};
use crate::run::{GatherOutcome, RunRecord};
use facts::{Facts, TaskFacts};

/// Judges one run.
pub(crate) fn check(scenario: &Scenario, seed: u64, record: &RunRecord) -> Report {
    let mut facts = Facts::gather(scenario, record);
    let mut verdict = Verdict {
        violations: std::mem::take(&mut facts.violations),
        counts: Counts::default(),
    };
    for (&task, task_facts) in &facts.tasks {
        let class = classify(task_facts);
        verdict.counts.add(class);
        verdict.judge(scenario, record, &facts, task, task_facts, class);
    }
    verdict.gathers(record, &facts);
    if record.plan.priorities.is_empty() {
        // See `reads.rs`: lanes read in loops of their own.
        verdict.violations.extend(reads::starved(&record.history));
    }
    verdict.violations.extend(due::check(&record.history));
    verdict
        .violations
        .extend(deleted::check(record, &facts.tasks, scenario.lease));
    verdict
        .violations
        .extend(rate::check(scenario, seed, record));
    verdict.violations.extend(slowdown::check(scenario, record));
    // Priorities (issue 12).
    verdict.violations.extend(priority::check(record));
    // Invariants about handler runs: no second run while the first holds
    // its lease; no success dropped.
    let runs = runs::runs(record, &facts.rollbacks);
    verdict
        .violations
        .extend(overlap::check(scenario, record, &runs));
    verdict.violations.extend(success::check(record, &runs));
    verdict.violations.extend(cancelled::check(record, &runs));
    for problem in &record.problems {
        verdict.violate(Invariant::RunCompletes, None, problem.clone());
    }
    let liveness = verdict
        .violations
        .iter()
        .any(|v| v.invariant == Invariant::Liveness);
    if !record.drained && !liveness {
        let detail = "work was still pending or unread when the drain gave up".to_owned();
        verdict.violate(Invariant::Liveness, None, detail);
    }
    let stats = RunStats {
        events: record.history.len() as u64,
        elapsed_ms: record.history.events().last().map_or(0, |e| e.at_ms),
        broker_faults: record.injected,
        deliveries: facts.deliveries,
        handler_calls: facts.handler_calls,
        drained: record.drained,
    };
    Report {
        seed,
        trace_hash: record.history.hash(),
        counts: verdict.counts,
        violations: verdict.violations,
        plan: record.plan.clone(),
        stats,
        hits: {
            // Broker faults, crashes and pauses from the history; the
            // state-level classes (poison kinds, trims) as the run counted
            // them.
            let mut hits = crate::hits::count(&record.history);
            for (class, n) in &record.hits {
                *hits.entry((*class).to_owned()).or_default() += n;
            }
            // Priorities (issue 12): a run that drew them, and its reads
            // across lanes that took entries (what `priority_order_kept`
            // judges).
            if !record.plan.priorities.is_empty() {
                hits.insert("priorities".to_owned(), 1);
                let reads = priority::lanes_reads(&record.history);
                if reads > 0 {
                    hits.insert("lanes_read".to_owned(), reads);
                }
            }
            let stopped_running = overlap::running_at_stops(record, &runs);
            if stopped_running > 0 {
                hits.insert("graceful_stop_running_tasks".to_owned(), stopped_running);
            }
            hits
        },
        workers: record.reports.iter().copied().sum(),
    }
}

fn classify(facts: &TaskFacts) -> Class {
    let dead = facts.dead_letters.len();
    match (facts.successes, dead) {
        (s, d)
            if (facts.replayed
                || facts.resurrected
                || facts.in_deleted_stream
                || facts.lettered_own_success)
                && (d > 1 || (s > 0 && d > 0)) =>
        {
            Class::Replayed
        }
        (s, d) if s > 0 && d > 0 => Class::Unexpected,
        (_, d) if d > 1 => Class::Unexpected,
        (s, _) if s > 1 => Class::Duplicated,
        (1, _) => Class::Ok,
        (_, 1) => Class::DeadLettered,
        _ if facts.pending > 0 || facts.unread > 0 => Class::Stuck,
        // Every acknowledged dispatch of it was forgotten by a rollback.
        _ if !facts.acked && facts.dispatch_rolled_back => Class::LostToRollback,
        _ if !facts.acked => Class::Stuck,
        _ if facts.in_deleted_stream => Class::LostToDelete,
        _ if facts.trimmed_unread > 0 || facts.cut_then_forgotten => Class::LostToTrim,
        _ => Class::Lost,
    }
}

/// What `letters` say: reason, entry and consumer of each.
fn letters(letters: &[crewq_core::DeadLetter]) -> String {
    letters
        .iter()
        .map(|d| {
            let reason = d.reason.as_ref().map(ToString::to_string);
            let entry = d.origin.as_ref().map(|o| o.entry_id.to_string());
            format!(
                "{} of entry {} by {}",
                reason.unwrap_or_default(),
                entry.unwrap_or_default(),
                d.origin.as_ref().map_or("?", |o| o.consumer.as_str())
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The reason a dead letter of a task should give.
fn expected_reason(poison: Option<PoisonKind>) -> DeadLetterReason {
    match poison {
        None => DeadLetterReason::MaxRetries,
        Some(PoisonKind::Undecodable) => DeadLetterReason::Poison(WireErrorKind::InvalidJson),
        Some(PoisonKind::Rejected) => DeadLetterReason::Rejected,
        Some(PoisonKind::Oversized) => DeadLetterReason::Poison(WireErrorKind::Oversized),
        Some(PoisonKind::PanickingValidator) => DeadLetterReason::Panicked,
        Some(PoisonKind::AttemptsOverflow | PoisonKind::AttemptsGarbage) => {
            DeadLetterReason::InvalidAttempts
        }
        Some(PoisonKind::WrongAgentType) => DeadLetterReason::WrongAgentType,
    }
}

struct Verdict {
    violations: Vec<Violation>,
    counts: Counts,
}

impl Verdict {
    fn violate(&mut self, invariant: Invariant, task: Option<u32>, detail: String) {
        self.violations.push(Violation {
            invariant,
            task,
            detail,
        });
    }

    fn judge(
        &mut self,
        scenario: &Scenario,
        record: &RunRecord,
        facts: &Facts,
        task: u32,
        f: &TaskFacts,
        class: Class,
    ) {
        let t = Some(task);
        let max_retries = scenario.max_retries;
        match class {
            Class::Unexpected if f.successes > 0 => self.violate(
                Invariant::NotOkAndDeadLettered,
                t,
                format!(
                    "{} success result(s) and {} dead letter(s) ({})",
                    f.successes,
                    f.dead_letters.len(),
                    letters(&f.dead_letters)
                ),
            ),
            Class::Unexpected => self.violate(
                Invariant::OneDeadLetter,
                t,
                format!(
                    "{} dead letters ({})",
                    f.dead_letters.len(),
                    letters(&f.dead_letters)
                ),
            ),
            Class::Lost => self.violate(
                Invariant::NoLoss,
                t,
                format!(
                    "dispatch acknowledged; no result, no dead letter, nothing pending \
                     ({} deliveries, {} runs)",
                    f.deliveries, f.runs
                ),
            ),
            Class::Stuck => self.violate(
                Invariant::Liveness,
                t,
                if f.acked {
                    format!(
                        "no outcome after the drain: {} pending, {} unread",
                        f.pending, f.unread
                    )
                } else {
                    "never acknowledged as dispatched".to_owned()
                },
            ),
            Class::Ok
            | Class::Duplicated
            | Class::DeadLettered
            | Class::LostToTrim
            | Class::Replayed
            | Class::LostToRollback
            | Class::LostToDelete => {}
        }
        let poison = record.plan.poison_kind(task);
        // A task whose handler fails for good: dead-lettered at its first
        // failure, as non_retryable.
        let for_good =
            poison.is_none() && record.plan.failing.contains(&task) && fails_for_good(task);
        let expected = if for_good {
            DeadLetterReason::NonRetryable
        } else {
            expected_reason(poison)
        };
        let routing = if for_good {
            Invariant::NonRetryableAtOnce
        } else {
            Invariant::DeadLetterRouting
        };
        for letter in &f.dead_letters {
            let reason = letter.reason.clone();
            if reason == Some(DeadLetterReason::DeletedWhilePending) {
                // Its entry was trimmed while pending: what is known of it
                // is dead-lettered, whatever it was (facts.rs checked the
                // entry is indeed gone).
                continue;
            }
            if reason.as_ref() != Some(&expected) {
                let got = reason.map_or_else(|| "none".to_owned(), |r| r.to_string());
                let detail = format!("dead-lettered as {got}, expected {expected}");
                self.violate(routing, t, detail);
            } else if poison.is_none()
                && !for_good
                && f.deliveries.saturating_sub(f.slow_downs) < max_retries + 1
            {
                // A slow-down's retry burns no retry: its delivery is not a
                // failed attempt.
                let detail = format!(
                    "dead-lettered after {} deliveries, {} of them slowed down; max_retries {max_retries} allows {} failed ones",
                    f.deliveries,
                    f.slow_downs,
                    max_retries + 1
                );
                self.violate(Invariant::DeadLetterRouting, t, detail);
            }
        }
        if let Some(kind) = poison
            && (f.runs > 0 || f.successes > 0)
        {
            let detail = format!("a poison task ({kind:?}) was run {} time(s)", f.runs);
            self.violate(Invariant::DeadLetterRouting, t, detail);
        }
        if f.failures > 0 && f.dead_letters.is_empty() {
            let detail = format!("{} failure result(s) but no dead letter", f.failures);
            self.violate(Invariant::OutcomesConsistent, t, detail);
        }
        if f.replayed {
            // Its group was destroyed and made again below an entry of it
            // that had been delivered: the attempts it had run are run
            // again, so retries and deliveries start over (at-least-once).
            return;
        }
        // Retries after a slow-down burn none of max_retries.
        let retries = f.entries.saturating_sub(1).saturating_sub(f.slow_downs);
        if for_good && retries > 0 {
            let detail = format!("failed for good, yet put back {retries} time(s)");
            self.violate(Invariant::NonRetryableAtOnce, t, detail);
        }
        if retries > max_retries {
            let detail = format!("put back {retries} times; max_retries is {max_retries}");
            self.violate(Invariant::RetriesBounded, t, detail);
        }
        let disruptions = facts.disruptions_during(f);
        // Deliveries a rollback undid may all happen again.
        let undone = f.rolled_back_deliveries;
        let slowed = f.slow_downs;
        let bound = max_retries + 2 + disruptions + undone + slowed;
        if f.deliveries > bound {
            let detail = format!(
                "{} deliveries; at most {bound} ({max_retries} retries + 2 + {disruptions} disruptions + {undone} rolled back + {slowed} slowed down)",
                f.deliveries
            );
            self.violate(Invariant::RedeliveriesBounded, t, detail);
        }
    }

    /// Every gather returned each task's first result.
    fn gathers(&mut self, record: &RunRecord, facts: &Facts) {
        for gather in &record.gathers {
            let workflow = gather.workflow;
            match &gather.outcome {
                GatherOutcome::Gathered(gathered) => {
                    for &task in &gather.tasks {
                        let expected = facts.first_results.get(&task);
                        let got = gathered.results.get(&task_id(task)).map(|r| r.status);
                        // Or the first result a rollback then forgot: the
                        // supervisor may have read it before the rollback.
                        let forgotten = facts.rollbacks.first_results.get(&task);
                        if let Some(status) = expected
                            && got != Some(*status)
                            && (got.is_none() || got.as_ref() != forgotten)
                        {
                            let detail = format!(
                                "workflow {workflow}'s gather got {got:?}, the first result is {status:?}"
                            );
                            self.violate(Invariant::SupervisorGathers, Some(task), detail);
                        }
                    }
                }
                GatherOutcome::Failed(err) => {
                    let detail = format!("workflow {workflow}'s gather failed: {err}");
                    self.violate(Invariant::SupervisorGathers, None, detail);
                }
                GatherOutcome::Abandoned => {
                    if gather
                        .tasks
                        .iter()
                        .all(|t| facts.first_results.contains_key(t))
                    {
                        let detail = format!(
                            "workflow {workflow}'s gather was still waiting with every result in"
                        );
                        self.violate(Invariant::SupervisorGathers, None, detail);
                    }
                }
            }
        }
    }
}
