//! "A task never runs on two consumers at once while the first still
//! holds its lease" ([`Invariant::NoConcurrentRuns`]).
//!
//! A peer takes an entry over only once it has been idle for a lease, and a
//! worker renews the leases of what it runs, also through a shutdown's
//! grace. So a run of an entry may begin on consumer B while a run of the
//! same entry is under way on consumer A only if A's lease could have
//! lapsed by the time B took the entry over, for a reason the history or
//! the plan shows in the lease before the takeover: A was paused, A's
//! broker calls failed (injected errors, refusals, an outage), or A's link
//! was half-open (a call hung on a link is seen only when it times out, and
//! not at all if its caller is gone by then, so the plan's windows count,
//! up to a time-out past their end, when the silent connection is
//! replaced). A crash or the end of a stop's grace ends A's run there and
//! then. And the broker may forget A's lease outright: its group destroyed
//! (and made again below the entry), or a rollback to before A's delivery.

use std::collections::{BTreeMap, BTreeSet};

use crate::Scenario;
use crate::history::Event;
use crate::report::{Invariant, Violation};
use crate::run::RunRecord;
use crate::scenario::millis_of;

use super::runs::Run;

/// When a consumer's lease could have lapsed: its pauses and half-open
/// links, and the times its calls failed.
#[derive(Default)]
struct Lapses {
    /// Pause and half-open windows per consumer.
    paused: BTreeMap<String, Vec<(u64, u64)>>,
    /// Times of failed calls per consumer.
    faults: BTreeMap<String, Vec<u64>>,
    /// When the broker forgot leases: a stream's group destroyed (`Some`
    /// stream), or a rollback (`None`: every stream).
    forgotten: Vec<(Option<String>, u64)>,
}

impl Lapses {
    fn gather(record: &RunRecord) -> Lapses {
        let mut lapses = Lapses::default();
        // Worker slot -> consumer names it ran under.
        let mut names: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
        for stamped in record.history.events() {
            let at = stamped.at_ms;
            match &stamped.event {
                Event::Started { worker, consumer } => {
                    names.entry(*worker).or_default().insert(consumer.clone());
                }
                Event::Paused { worker, until_ms } => {
                    for name in names.get(worker).into_iter().flatten() {
                        let windows = lapses.paused.entry(name.clone()).or_default();
                        windows.push((at, *until_ms));
                    }
                }
                Event::Fault { actor, .. } => {
                    lapses.faults.entry(actor.clone()).or_default().push(at);
                }
                Event::GroupDestroyed { stream } => {
                    lapses.forgotten.push((Some(stream.clone()), at));
                }
                Event::RolledBack { .. } => lapses.forgotten.push((None, at)),
                _ => {}
            }
        }
        for link in &record.plan.half_open {
            for name in names.get(&link.worker).into_iter().flatten() {
                let windows = lapses.paused.entry(name.clone()).or_default();
                let end = link.at_ms.saturating_add(link.for_ms);
                windows.push((link.at_ms, end.saturating_add(link.timeout_ms)));
            }
        }
        lapses
    }

    /// Whether `consumer`'s lease could have lapsed around `from..=to`.
    fn explained(&self, consumer: &str, from: u64, to: u64) -> bool {
        let mut windows = self.paused.get(consumer).into_iter().flatten();
        let mut faults = self.faults.get(consumer).into_iter().flatten();
        windows.any(|&(p, until)| p <= to && until >= from)
            || faults.any(|&at| from <= at && at <= to)
    }

    /// Whether the broker forgot leases of `stream` within `from..=to`.
    fn forgot(&self, stream: &str, from: u64, to: u64) -> bool {
        self.forgotten
            .iter()
            .any(|(of, at)| of.as_deref().is_none_or(|of| of == stream) && from <= *at && *at <= to)
    }
}

/// The violations of [`Invariant::NoConcurrentRuns`] in `runs`.
pub(super) fn check(scenario: &Scenario, record: &RunRecord, runs: &[Run]) -> Vec<Violation> {
    let lease = millis_of(scenario.lease);
    let timeout = millis_of(scenario.task_timeout);
    let lapses = Lapses::gather(record);
    let mut violations = Vec::new();
    for (n, second) in runs.iter().enumerate() {
        let Some((stream, entry)) = &second.entry else {
            continue;
        };
        let first = runs[..n].iter().find(|first| {
            first.entry == second.entry
                && first.consumer != second.consumer
                // A run ended at its time-out at the latest: one that never
                // returned (a hang) was cut off there, whenever its
                // worker ended later.
                && second.start_ms < first.end_ms.unwrap_or(u64::MAX).min(first.start_ms + timeout)
        });
        let Some(first) = first else { continue };
        // The takeover needed the entry idle for the lease before it. A
        // second run whose delivery is the older one is a zombie's: the
        // first took the entry over from it (it began late, frozen between
        // its delivery and its start), so it is its lease that lapsed.
        let (holder, claimed) = if second.delivered_ms < first.delivered_ms {
            (&second.consumer, first.delivered_ms)
        } else {
            (&first.consumer, second.delivered_ms)
        };
        if lapses.explained(holder, claimed.saturating_sub(lease), claimed)
            || lapses.forgot(stream, first.delivered_ms.min(second.delivered_ms), claimed)
        {
            continue;
        }
        violations.push(Violation {
            invariant: Invariant::NoConcurrentRuns,
            task: Some(second.task),
            detail: format!(
                "entry {entry} of {stream} began running on {} at {} ms (delivered at {} ms) \
                 while {} had run it since {} ms (delivered at {} ms): \
                 no pause, half-open link or failed call of {holder} in the lease before {claimed} ms",
                second.consumer,
                second.start_ms,
                second.delivered_ms,
                first.consumer,
                first.start_ms,
                first.delivered_ms
            ),
        });
    }
    violations
}

/// How many runs were under way on a worker when it was asked to stop:
/// the graceful-stop class reached what it is for.
pub(super) fn running_at_stops(record: &RunRecord, runs: &[Run]) -> u64 {
    let mut n = 0;
    for stamped in record.history.events() {
        if let Event::StopRequested { consumer, .. } = &stamped.event {
            let at = stamped.at_ms;
            n += runs
                .iter()
                .filter(|run| {
                    run.consumer == *consumer
                        && run.start_ms <= at
                        && run.end_ms.is_none_or(|end| end > at)
                })
                .count() as u64;
        }
    }
    n
}
