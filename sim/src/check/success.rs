//! "A handler's success is never dropped" ([`Invariant::SuccessRecorded`]).
//!
//! Once a handler returned success, its worker retries the settle until
//! the outcome is recorded or the entry is provably another consumer's, so
//! after every successful run the history shows that worker's settle of the
//! entry (`settled`) or its refusal (`refused`: the lease was lost, to a
//! pause, a link or an outage, and a peer owns the entry; or the group is
//! gone, destroyed with its pending list). Only a crash, the end of a
//! stop's grace, the group destroyed while the run went on, or the entry
//! trimmed and dead-lettered by a reclaim scan may cut it short. A success dropped instead is
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
                // The group destroyed while the run went on took the
                // entry's pending record along: the worker may learn it
                // only as a settle that fails or finds nothing.
                // So did an acknowledgement of the entry meanwhile (one
                // delivered twice after its group was made again, taken
                // for finished): nothing is left to settle.
                if matches!(e.event, Event::GroupDestroyed { .. } | Event::Acked { .. }) {
                    return run.start_ms <= e.at_ms && e.at_ms <= ended;
                }
                e.at_ms >= ended
                    // A settle of the entry by another run of the same
                    // consumer (an entry delivered to it twice after its
                    // group was made again), or a reclaim scan finding it
                    // deleted, while this run went on.
                    || (e.at_ms >= run.start_ms
                        && matches!(e.event, Event::Settled { .. } | Event::FoundDeleted { .. }))
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
                Event::GroupDestroyed { stream: of } => of == stream,
                Event::Acked {
                    stream: of,
                    ids,
                    count,
                } => of == stream && *count > 0 && ids.contains(entry),
                // Trimmed under the run, and a reclaim scan took the entry
                // off the pending list and dead-lettered it in the same
                // step (`deleted_while_pending`): no entry is left to
                // settle.
                Event::FoundDeleted { stream: of, id } => of == stream && id == entry,
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
