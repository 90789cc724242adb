//! Accounting: what became of every task, judged from what Redis holds.
//!
//! A scenario ends with a [`Snapshot`] read from Redis itself (the task
//! stream, its group's pending list and last-delivered id, the results and
//! dead-letter streams) plus the handlers' own log of the runs that
//! succeeded or failed. [`classify`] turns it into a [`Tally`]; this module
//! does no I/O, so the rules are unit-tested on small hand-made snapshots.

use std::collections::{BTreeMap, BTreeSet};

use crewq_core::StreamId;
use serde::Serialize;

/// One entry of the task stream: its id and, when its `data` decodes, the
/// task id it carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskEntry {
    /// The entry's id.
    pub id: StreamId,
    /// `task_id` of its `data`, if that is a JSON object with one.
    pub task_id: Option<String>,
}

/// One result-stream entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultRow {
    /// The result's `task_id`.
    pub task_id: String,
    /// Whether its status is `success`.
    pub success: bool,
}

/// One dead-letter-stream entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterRow {
    /// `task_id` of the dead-lettered task's JSON, if it decodes.
    pub task_id: Option<String>,
    /// The task entry it came from (field `entry_id`).
    pub entry_id: Option<StreamId>,
    /// Field `reason` (`max_retries`, `poison:...`).
    pub reason: String,
}

/// Everything the accounting looks at, gathered after the workers stopped.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Task ids the producer got an acknowledgement for, with their
    /// `max_retries`.
    pub dispatched: BTreeMap<String, u32>,
    /// Ids of the poison entries written behind crewq's back.
    pub poison: BTreeSet<StreamId>,
    /// What the task stream holds now.
    pub entries: Vec<TaskEntry>,
    /// The group's last-delivered id; `None` when the group does not exist
    /// (then every entry is unread).
    pub last_delivered: Option<StreamId>,
    /// The group's pending list (every consumer).
    pub pending: BTreeSet<StreamId>,
    /// The results stream.
    pub results: Vec<ResultRow>,
    /// The dead-letter stream.
    pub dead_letters: Vec<DeadLetterRow>,
    /// Handler runs that returned success, per task id (from the handlers'
    /// own log, written before the handler returns).
    pub handler_successes: BTreeMap<String, u64>,
    /// Handler runs that returned an error, per task id.
    pub handler_failures: BTreeMap<String, u64>,
}

/// A scenario's figures. `lost`, `stuck`, `successes_dead_lettered`,
/// `dead_lettered_early` and `poison_completed` must be 0 (see
/// [`Tally::failures`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Tasks acknowledged to the producer.
    pub dispatched: u64,
    /// Dispatched tasks with at least one success result.
    pub completed: u64,
    /// Dispatched tasks with at least one dead letter.
    pub dead_lettered: u64,
    /// Dispatched tasks with more than one success result (allowed: delivery
    /// is at least once; reported so its rate is seen).
    pub duplicated: u64,
    /// Dispatched tasks with no success and no dead letter, and no entry
    /// pending or waiting in the stream: gone without a trace. Poison
    /// entries acknowledged without a dead letter or a result count too.
    pub lost: u64,
    /// Tasks (and poison entries) with an entry still pending or unread
    /// after the drain deadline, plus pending ids whose entry is gone from
    /// the stream (deleted while pending and never settled).
    pub stuck: u64,
    /// Dispatched tasks dead-lettered although a handler run succeeded: a
    /// success result beside the dead letter, or a success in the handlers'
    /// log without the `1 + max_retries` failed runs that earn a dead
    /// letter (the success was counted as a failure: issue 9, finding 3).
    pub successes_dead_lettered: u64,
    /// Dispatched tasks with a success in the handlers' log, no success
    /// result, and a dead letter earned by `1 + max_retries` failed runs:
    /// the successful run lost its lease (a link stalled past it) before
    /// it could record the outcome, a peer took the entry over, and the
    /// peer's runs failed. crewq keeps an outcome until it is recorded or
    /// the entry is provably another consumer's, so this is allowed;
    /// reported so that its rate is seen.
    pub successes_taken_over: u64,
    /// Dispatched tasks dead-lettered as `max_retries` with fewer failed
    /// handler runs than `1 + max_retries` and no success: deliveries that
    /// never ran to an outcome were counted as failures.
    pub dead_lettered_early: u64,
    /// Poison entries written behind crewq's back.
    pub poison: u64,
    /// Poison entries that ended in the dead-letter stream.
    pub poison_dead_lettered: u64,
    /// Poison entries that ran and published a success (a task naming
    /// another agent type, say): DESIGN.md wants those dead-lettered at once.
    pub poison_completed: u64,
    /// Up to [`EXAMPLES`] task ids (or poison entry ids) per failing
    /// figure, to start an investigation from.
    pub examples: BTreeMap<String, Vec<String>>,
}

/// How many examples a failing figure keeps.
pub const EXAMPLES: usize = 3;

impl Tally {
    fn example(&mut self, figure: &str, what: impl ToString) {
        let list = self.examples.entry(figure.to_owned()).or_default();
        if list.len() < EXAMPLES {
            list.push(what.to_string());
        }
    }
}

impl Tally {
    /// The figures that make a scenario fail, by name, when non-zero.
    pub fn failures(&self) -> Vec<(&'static str, u64)> {
        [
            ("lost", self.lost),
            ("stuck", self.stuck),
            ("successes_dead_lettered", self.successes_dead_lettered),
            ("dead_lettered_early", self.dead_lettered_early),
            ("poison_completed", self.poison_completed),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect()
    }
}

/// The `reason` of a dead letter for a task whose runs all failed.
const MAX_RETRIES_REASON: &str = "max_retries";

/// Judges every dispatched task and every poison entry.
pub fn classify(snap: &Snapshot) -> Tally {
    let is_open = |id: &StreamId| {
        snap.pending.contains(id) || snap.last_delivered.is_none_or(|last| *id > last)
    };
    // Task ids with some entry pending or unread (a retry of a poison
    // entry that decodes carries its task id too).
    let mut open: BTreeSet<&str> = BTreeSet::new();
    let mut in_stream: BTreeSet<StreamId> = BTreeSet::new();
    for entry in &snap.entries {
        in_stream.insert(entry.id);
        if let Some(task_id) = entry.task_id.as_deref()
            && is_open(&entry.id)
        {
            open.insert(task_id);
        }
    }
    let mut successes: BTreeMap<&str, u64> = BTreeMap::new();
    for row in snap.results.iter().filter(|r| r.success) {
        *successes.entry(row.task_id.as_str()).or_default() += 1;
    }
    let mut letters: BTreeMap<&str, Vec<&DeadLetterRow>> = BTreeMap::new();
    let mut letter_entries: BTreeSet<StreamId> = BTreeSet::new();
    for row in &snap.dead_letters {
        if let Some(task_id) = row.task_id.as_deref() {
            letters.entry(task_id).or_default().push(row);
        }
        if let Some(id) = row.entry_id {
            letter_entries.insert(id);
        }
    }

    let mut tally = Tally {
        dispatched: snap.dispatched.len() as u64,
        ..Tally::default()
    };
    for (task_id, max_retries) in &snap.dispatched {
        let task_id = task_id.as_str();
        let succeeded = successes.get(task_id).copied().unwrap_or(0);
        let dead = letters.get(task_id).map_or(&[][..], Vec::as_slice);
        let ran_ok = snap.handler_successes.get(task_id).copied().unwrap_or(0) > 0;
        let failed_runs = snap.handler_failures.get(task_id).copied().unwrap_or(0);
        if succeeded > 0 {
            tally.completed += 1;
        }
        if succeeded > 1 {
            tally.duplicated += 1;
        }
        if !dead.is_empty() {
            tally.dead_lettered += 1;
            let earned = failed_runs > u64::from(*max_retries);
            if succeeded > 0 || (ran_ok && !earned) {
                tally.successes_dead_lettered += 1;
                tally.example("successes_dead_lettered", task_id);
            } else if ran_ok {
                tally.successes_taken_over += 1;
            } else if dead.iter().any(|d| d.reason == MAX_RETRIES_REASON)
                && failed_runs < u64::from(*max_retries) + 1
            {
                tally.dead_lettered_early += 1;
                tally.example(
                    "dead_lettered_early",
                    format!("{task_id} ({failed_runs} failed runs)"),
                );
            }
        }
        if open.contains(task_id) {
            tally.stuck += 1;
            tally.example("stuck", task_id);
        } else if succeeded == 0 && dead.is_empty() {
            tally.lost += 1;
            tally.example("lost", task_id);
        }
    }

    tally.poison = snap.poison.len() as u64;
    let poison_tasks: BTreeMap<StreamId, Option<&str>> = snap
        .entries
        .iter()
        .filter(|e| snap.poison.contains(&e.id))
        .map(|e| (e.id, e.task_id.as_deref()))
        .collect();
    for id in &snap.poison {
        let task_id = poison_tasks.get(id).copied().flatten();
        let completed = task_id.is_some_and(|t| successes.contains_key(t));
        // Dead-lettered itself, or a retry of it was.
        let dead = letter_entries.contains(id) || task_id.is_some_and(|t| letters.contains_key(t));
        let retry_open = task_id.is_some_and(|t| open.contains(t));
        if dead {
            tally.poison_dead_lettered += 1;
        }
        if completed {
            tally.poison_completed += 1;
            tally.example("poison_completed", task_id.unwrap_or_default());
        }
        if (in_stream.contains(id) && is_open(id)) || retry_open {
            tally.stuck += 1;
            tally.example("stuck", format!("poison entry {id}"));
        } else if !dead && !completed {
            tally.lost += 1;
            tally.example("lost", format!("poison entry {id}"));
        }
    }

    // Pending ids with no entry behind them: deleted while pending, and
    // nobody settled them.
    for id in snap.pending.iter().filter(|id| !in_stream.contains(id)) {
        tally.stuck += 1;
        tally.example("stuck", format!("pending id {id} with no entry"));
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64) -> StreamId {
        StreamId::new(ms, 0)
    }

    fn entry(ms: u64, task: &str) -> TaskEntry {
        TaskEntry {
            id: id(ms),
            task_id: Some(task.to_owned()),
        }
    }

    fn ok(task: &str) -> ResultRow {
        ResultRow {
            task_id: task.to_owned(),
            success: true,
        }
    }

    fn letter(task: &str, ms: u64, reason: &str) -> DeadLetterRow {
        DeadLetterRow {
            task_id: Some(task.to_owned()),
            entry_id: Some(id(ms)),
            reason: reason.to_owned(),
        }
    }

    /// Tasks `t1..=tn` with 3 retries, each with one entry read and acked.
    fn snapshot(n: u64) -> Snapshot {
        Snapshot {
            dispatched: (1..=n).map(|i| (format!("t{i}"), 3)).collect(),
            entries: (1..=n).map(|i| entry(i, &format!("t{i}"))).collect(),
            last_delivered: Some(id(n)),
            ..Snapshot::default()
        }
    }

    #[test]
    fn a_task_with_one_success_is_completed_and_nothing_else() {
        let mut snap = snapshot(1);
        snap.results.push(ok("t1"));
        let tally = classify(&snap);
        assert_eq!((tally.dispatched, tally.completed), (1, 1));
        assert!(tally.failures().is_empty(), "{tally:?}");
        assert_eq!(tally.duplicated, 0);
    }

    #[test]
    fn two_successes_are_a_duplicate_not_a_failure() {
        let mut snap = snapshot(1);
        snap.results.extend([ok("t1"), ok("t1")]);
        let tally = classify(&snap);
        assert_eq!((tally.completed, tally.duplicated), (1, 1));
        assert!(tally.failures().is_empty());
    }

    #[test]
    fn a_task_without_outcome_and_without_entry_is_lost() {
        let mut snap = snapshot(2);
        snap.results.push(ok("t1"));
        // t2's entry was trimmed away before anyone read it.
        snap.entries.retain(|e| e.id != id(2));
        snap.last_delivered = Some(id(1));
        let tally = classify(&snap);
        assert_eq!((tally.lost, tally.stuck), (1, 0));
        assert_eq!(tally.failures(), vec![("lost", 1)]);
    }

    #[test]
    fn an_acknowledged_task_without_outcome_is_lost() {
        // Read, acknowledged, but no result and no dead letter.
        let tally = classify(&snapshot(1));
        assert_eq!(tally.lost, 1);
    }

    #[test]
    fn pending_or_unread_entries_are_stuck_not_lost() {
        let mut snap = snapshot(3);
        snap.results.push(ok("t1"));
        snap.pending.insert(id(2));
        snap.last_delivered = Some(id(2)); // t3 never read
        let tally = classify(&snap);
        assert_eq!((tally.stuck, tally.lost), (2, 0));
    }

    #[test]
    fn without_a_group_every_entry_is_unread() {
        let mut snap = snapshot(2);
        snap.last_delivered = None;
        assert_eq!(classify(&snap).stuck, 2);
    }

    #[test]
    fn a_completed_task_with_an_entry_still_pending_is_stuck() {
        let mut snap = snapshot(1);
        snap.results.push(ok("t1"));
        snap.pending.insert(id(1));
        let tally = classify(&snap);
        assert_eq!((tally.completed, tally.stuck), (1, 1));
    }

    #[test]
    fn a_pending_id_whose_entry_is_gone_is_stuck() {
        let mut snap = snapshot(1);
        snap.results.push(ok("t1"));
        snap.pending.insert(id(99));
        assert_eq!(classify(&snap).stuck, 1);
    }

    #[test]
    fn dead_lettered_after_its_failed_runs_is_fine() {
        let mut snap = snapshot(1);
        snap.dead_letters.push(letter("t1", 1, "max_retries"));
        snap.handler_failures.insert("t1".into(), 4);
        let tally = classify(&snap);
        assert_eq!((tally.dead_lettered, tally.lost), (1, 0));
        assert!(tally.failures().is_empty(), "{tally:?}");
    }

    #[test]
    fn a_dead_letter_after_a_success_result_counts() {
        let mut snap = snapshot(1);
        snap.results.push(ok("t1"));
        snap.dead_letters.push(letter("t1", 1, "max_retries"));
        let tally = classify(&snap);
        assert_eq!(tally.successes_dead_lettered, 1);
    }

    #[test]
    fn a_dead_letter_after_a_logged_handler_success_counts() {
        // The handler succeeded but its outcome never reached Redis.
        let mut snap = snapshot(1);
        snap.handler_successes.insert("t1".into(), 1);
        snap.dead_letters.push(letter("t1", 1, "max_retries"));
        let tally = classify(&snap);
        assert_eq!(tally.successes_dead_lettered, 1);
        assert_eq!(tally.dead_lettered_early, 0, "counted once");
    }

    #[test]
    fn a_success_taken_over_then_failed_for_good_is_reported_not_failed() {
        // The successful run lost its lease; the peer's runs earned the
        // dead letter: 1 + max_retries (3) failed runs.
        let mut snap = snapshot(1);
        snap.handler_successes.insert("t1".into(), 1);
        snap.handler_failures.insert("t1".into(), 4);
        snap.dead_letters.push(letter("t1", 2, "max_retries"));
        let tally = classify(&snap);
        assert_eq!(tally.successes_dead_lettered, 0);
        assert_eq!(tally.successes_taken_over, 1);
        assert!(tally.failures().is_empty(), "{tally:?}");
    }

    #[test]
    fn max_retries_with_too_few_failed_runs_is_early() {
        // max_retries 3: four failed runs are needed, three are not enough.
        for (failed, early) in [(1, 1), (3, 1), (4, 0)] {
            let mut snap = snapshot(1);
            snap.handler_failures.insert("t1".into(), failed);
            snap.dead_letters.push(letter("t1", 1, "max_retries"));
            assert_eq!(classify(&snap).dead_lettered_early, early, "{failed}");
        }
    }

    #[test]
    fn a_failure_result_is_not_a_completion() {
        let mut snap = snapshot(1);
        snap.results.push(ResultRow {
            task_id: "t1".into(),
            success: false,
        });
        snap.dead_letters.push(letter("t1", 1, "max_retries"));
        snap.handler_failures.insert("t1".into(), 4);
        let tally = classify(&snap);
        assert_eq!((tally.completed, tally.dead_lettered), (0, 1));
        assert!(tally.failures().is_empty());
    }

    #[test]
    fn a_retried_task_is_judged_by_its_last_entry() {
        // t1 failed once: its first entry was acked and a retry appended.
        let mut snap = snapshot(1);
        snap.entries.push(entry(5, "t1"));
        snap.last_delivered = Some(id(5));
        snap.results.push(ok("t1"));
        let tally = classify(&snap);
        assert_eq!((tally.completed, tally.lost, tally.stuck), (1, 0, 0));
    }

    #[test]
    fn a_poison_entry_retried_for_ever_is_stuck_and_one_retried_then_dead_is_not() {
        let mut snap = snapshot(0);
        snap.poison = [id(10), id(11)].into();
        snap.entries = vec![
            entry(10, "p-loop"),
            entry(11, "p-retried"),
            entry(20, "p-loop"),
            entry(21, "p-retried"),
            entry(30, "p-loop"),
        ];
        snap.last_delivered = Some(id(21)); // p-loop's latest retry unread
        snap.dead_letters
            .push(letter("p-retried", 21, "max_retries"));
        let tally = classify(&snap);
        assert_eq!((tally.stuck, tally.lost), (1, 0));
        assert_eq!(tally.poison_dead_lettered, 1);
        assert_eq!(tally.examples["stuck"], ["poison entry 10-0"]);
    }

    #[test]
    fn poison_is_judged_by_entry_id() {
        let mut snap = snapshot(0);
        snap.poison = [id(10), id(11), id(12), id(13)].into();
        snap.entries = vec![
            TaskEntry {
                id: id(10),
                task_id: None,
            },
            entry(11, "p-wrong-type"),
            entry(12, "p-huge-attempts"),
            entry(13, "p-lost"),
        ];
        snap.last_delivered = Some(id(13));
        snap.dead_letters.push(DeadLetterRow {
            task_id: None,
            entry_id: Some(id(10)),
            reason: "poison:invalid_json".into(),
        });
        snap.results.push(ok("p-wrong-type"));
        snap.pending.insert(id(12));
        let tally = classify(&snap);
        assert_eq!(tally.poison, 4);
        assert_eq!(tally.poison_dead_lettered, 1);
        assert_eq!(tally.poison_completed, 1);
        assert_eq!((tally.stuck, tally.lost), (1, 1));
        assert_eq!(tally.dispatched, 0);
    }
}
