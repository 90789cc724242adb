//! "A handler's success is never dropped" ([`Invariant::SuccessRecorded`]).
//!
//! Once a handler returned success, its worker retries the settle until
//! the outcome is recorded or the entry is provably another consumer's, so
//! after every successful run the history shows that worker's settle of the
//! entry (`settled`) or its refusal (`refused`: the lease was lost, to a
//! pause, a link or an outage, and a peer owns the entry). Only a crash,
//! the end of a stop's grace, or its group destroyed while it ran or
//! before its settle may cut it short. A success dropped instead is
//! what dead-lettered succeeded tasks after an outage (issue 9, finding 3):
//! the entry is delivered again and counts as a delivery without outcome.

use std::collections::BTreeMap;

use crate::crew::task_index;
use crate::history::Event;
use crate::report::{Invariant, Violation};
use crate::run::RunRecord;

use super::runs::Run;

/// The violations of [`Invariant::SuccessRecorded`] in `runs`.
pub(super) fn check(record: &RunRecord, runs: &[Run]) -> Vec<Violation> {
    let events = record.history.events();
    let mut violations = Vec::new();
    for run in runs.iter().filter(|run| run.ok) {
        let (Some((stream, entry)), Some(ended)) = (&run.entry, run.end_ms) else {
            continue;
        };
        let consumer = run.consumer.as_str();
        let kept = events
            .iter()
            .filter(|e| {
                e.at_ms >= ended
                    || (e.at_ms >= run.start_ms && matches!(e.event, Event::GroupDestroyed { .. }))
            })
            .any(|e| match &e.event {
                Event::Settled {
                    stream: of,
                    consumer: by,
                    id,
                    ..
                }
                | Event::Refused {
                    stream: of,
                    consumer: by,
                    id,
                } => by == consumer && id == entry && of == stream,
                Event::Crashed { consumer: by, .. } => by == consumer,
                // The group destroyed under the run took its pending entry
                // along: the settle finds no group (or, once it is made
                // again, the entry not this consumer's) and the re-created
                // group delivers the entry again, so the outcome may go.
                Event::GroupDestroyed { stream: of } => of == stream,
                // A stop cut off only the attempts it handed back.
                Event::Stopped {
                    consumer: by,
                    handed_back,
                    ..
                } => by == consumer && *handed_back > 0,
                _ => false,
            });
        if kept {
            continue;
        }
        let later = runs
            .iter()
            .filter(|r| r.task == run.task && r.start_ms >= ended && r.call != run.call)
            .count();
        let dead = dead_letters(record).get(&run.task).copied().unwrap_or(0);
        violations.push(Violation {
            invariant: Invariant::SuccessRecorded,
            task: Some(run.task),
            detail: format!(
                "its handler succeeded on {consumer} (call {}, entry {entry}) at {ended} ms, and \
                 {consumer} neither recorded that outcome nor found the entry another's, though \
                 it was not crashed or stopped; the task ran {later} more time(s) and has \
                 {dead} dead letter(s)",
                run.call
            ),
        });
    }
    violations
}

/// Dead letters per task.
fn dead_letters(record: &RunRecord) -> BTreeMap<u32, u32> {
    let mut per_task = BTreeMap::new();
    for agent in &record.state.agents {
        for (_, letter) in &agent.dead_letters {
            let task = letter
                .as_ref()
                .ok()
                .and_then(|l| l.decode_task::<serde_json::Value>().ok())
                .and_then(|t| task_index(&t.task_id));
            if let Some(task) = task {
                *per_task.entry(task).or_default() += 1;
            }
        }
    }
    per_task
}
