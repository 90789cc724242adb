//! What the history and the final state say about each task: its entries,
//! deliveries, runs and outcomes, gathered before any judgement.

use std::collections::{BTreeMap, BTreeSet};

use crewq_core::{DeadLetter, DeadLetterReason, StreamId, TaskStatus};

use super::rollback::Forgetting;
use crate::Scenario;
use crate::crew::task_index;
use crate::history::Event;
use crate::report::{Invariant, Violation};
use crate::run::RunRecord;

/// Everything known of one task.
#[derive(Clone, Debug, Default)]
pub(super) struct TaskFacts {
    /// Its dispatch was acknowledged.
    pub acked: bool,
    /// Its entries in its task stream (the first, then one per retry).
    pub entries: u32,
    pub deliveries: u32,
    pub first_delivery_ms: Option<u64>,
    pub last_delivery_ms: Option<u64>,
    pub runs: u32,
    /// Runs whose handler said "slow down" with its context not cancelled:
    /// each is retried at most once, burning no retry.
    pub slow_downs: u32,
    pub successes: u32,
    pub failures: u32,
    pub dead_letters: Vec<DeadLetter>,
    /// Its entries still pending after the drain.
    pub pending: u32,
    /// Its entries never delivered.
    pub unread: u32,
    /// Its entries trimmed from the stream before any delivery.
    pub trimmed_unread: u32,
    /// An injected trim cut an entry of it while pending, and its group
    /// was destroyed before any reclaim scan reported the entry deleted:
    /// the trim took the data and the destroy the pending list that named
    /// it, so nothing in the broker knows of it any more. Also when a
    /// rollback forgot that report (and the dead letter written for it):
    /// the entry, cut before the rollback's snapshot, is cut and
    /// unreported again.
    pub cut_then_forgotten: bool,
    /// One of its entries was delivered again after its group was
    /// destroyed and made again below it: the group's memory of what was
    /// done went with it, so this task may run again (see
    /// [`Class::Replayed`](crate::report::Class::Replayed)).
    pub replayed: bool,
    /// An entry of it was found deleted while pending (cut by a trim, or
    /// reported deleted by a reclaim scan), and a broker rollback then
    /// restored it: the worker that held it saw it deleted and may still
    /// dead-letter it as `deleted_while_pending`, while the restored entry
    /// runs again (see [`Class::Replayed`](crate::report::Class::Replayed)).
    pub resurrected: bool,
    /// A dispatch of it was acknowledged, and a broker rollback then
    /// forgot its entry (`acked` says whether another one stayed).
    pub dispatch_rolled_back: bool,
    /// Its deliveries that a broker rollback then undid (they happened
    /// after the restored snapshot), so they may happen again.
    pub rolled_back_deliveries: u32,
    /// An entry of it was in a task stream an operator deleted (`DEL`):
    /// unread, it is lost to the delete; held, its holder dead-letters it
    /// `deleted_while_pending`, which beside a success (a zombie's letter
    /// for an entry a peer had finished) is what the delete costs (see
    /// [`Class::LostToDelete`](crate::report::Class::LostToDelete)).
    pub in_deleted_stream: bool,
    /// A worker dead-lettered an entry of it `deleted_while_pending` after
    /// its own settle of that entry applied (the settle's reply was lost),
    /// or in a run with a rollback, having found the group gone and then
    /// the entry gone from the stream (finished and trimmed since, or
    /// forgotten, as it cannot tell from deleted with its stream). A letter
    /// too many beside its result, never a task lost (see
    /// [`Class::Replayed`](crate::report::Class::Replayed)).
    pub lettered_own_success: bool,
}

/// A span of time in which a task's delivery could be wasted.
#[derive(Clone, Copy, Debug)]
pub(super) struct Disruption {
    pub from_ms: u64,
    pub to_ms: u64,
}

pub(super) struct Facts {
    pub tasks: BTreeMap<u32, TaskFacts>,
    pub disruptions: Vec<Disruption>,
    /// The first result of each task, in stream order.
    pub first_results: BTreeMap<u32, TaskStatus>,
    pub violations: Vec<Violation>,
    pub deliveries: u64,
    pub handler_calls: u64,
    /// What broker rollbacks forgot.
    pub rollbacks: Forgetting,
    /// (stream, entry, consumer) of every applied settle.
    settled: BTreeSet<(String, StreamId, String)>,
}

impl Facts {
    pub fn gather(scenario: &Scenario, record: &RunRecord) -> Facts {
        let mut facts = Facts {
            tasks: (0..scenario.tasks)
                .map(|t| (t, TaskFacts::default()))
                .collect(),
            disruptions: Vec::new(),
            first_results: BTreeMap::new(),
            violations: Vec::new(),
            deliveries: 0,
            handler_calls: 0,
            rollbacks: Forgetting::gather(record),
            settled: BTreeSet::new(),
        };
        let entries = facts.map_entries(record);
        let delivered = facts.read_history(scenario, record, &entries);
        facts.read_schedules(record);
        facts.read_outcomes(record, &entries);
        facts.read_trims(record, &entries, &delivered);
        facts
    }

    /// Entries trimmed from their stream (appended, gone at the end)
    /// before any delivery: lost to the trim, not to crewq.
    fn read_trims(
        &mut self,
        record: &RunRecord,
        entries: &BTreeMap<(String, StreamId), u32>,
        delivered: &BTreeSet<(String, StreamId)>,
    ) {
        for agent in &record.state.agents {
            for (id, _) in &agent.entries {
                let key = (agent.keys.tasks.clone(), *id);
                if agent.present.contains(id) || delivered.contains(&key) {
                    continue;
                }
                if let Some(facts) = entries.get(&key).and_then(|t| self.tasks.get_mut(t)) {
                    facts.trimmed_unread += 1;
                }
            }
        }
    }

    fn violate(&mut self, invariant: Invariant, task: Option<u32>, detail: String) {
        self.violations.push(Violation {
            invariant,
            task,
            detail,
        });
    }

    fn task(&mut self, task: u32) -> Option<&mut TaskFacts> {
        self.tasks.get_mut(&task)
    }

    /// Which task each task-stream entry is: from its data, or (for an
    /// undecodable one) from its acknowledged dispatch.
    fn map_entries(&mut self, record: &RunRecord) -> BTreeMap<(String, StreamId), u32> {
        let mut map = BTreeMap::new();
        for agent in &record.state.agents {
            for (id, task_id) in &agent.entries {
                if let Some(task) = task_id.as_deref().and_then(task_index) {
                    map.insert((agent.keys.tasks.clone(), *id), task);
                }
            }
        }
        for (index, stamped) in record.history.events().iter().enumerate() {
            if self.rollbacks.forgot(index) {
                continue;
            }
            if let Event::Dispatched { task, entry } = &stamped.event {
                let stream = record.state.task_stream_of(*task);
                match map.insert((stream, *entry), *task) {
                    Some(other) if other != *task => self.violate(
                        Invariant::OutcomesConsistent,
                        Some(*task),
                        format!("its dispatch reported entry {entry}, which is task {other}"),
                    ),
                    _ => {}
                }
            }
        }
        for task in map.values() {
            if let Some(facts) = self.tasks.get_mut(task) {
                facts.entries += 1;
            }
        }
        map
    }

    fn read_history(
        &mut self,
        scenario: &Scenario,
        record: &RunRecord,
        entries: &BTreeMap<(String, StreamId), u32>,
    ) -> BTreeSet<(String, StreamId)> {
        let mut delivered = BTreeSet::new();
        let mut replays = Replays::default();
        // Entries cut while pending and not yet reported deleted.
        let mut cut: BTreeSet<(String, StreamId)> = BTreeSet::new();
        // Entries seen deleted while pending, and when.
        let mut seen_deleted: BTreeMap<(String, StreamId), u64> = BTreeMap::new();
        // When each entry cut while pending was cut.
        let mut cut_at: BTreeMap<(String, StreamId), u64> = BTreeMap::new();
        let task_streams = record.state.task_streams();
        // A crashed worker's in-flight read may still deliver a little
        // after the crash (on Redis, a command already on the wire).
        let slack = crate::scenario::millis_of(scenario.lease);
        for (index, stamped) in record.history.events().iter().enumerate() {
            let at = stamped.at_ms;
            if self.rollbacks.undone(index, at)
                && let Event::Delivered { stream, id, .. } = &stamped.event
            {
                let task = match self.rollbacks.forgot(index) {
                    true => self.rollbacks.task_of(stream, *id),
                    false => entries.get(&(stream.clone(), *id)).copied(),
                };
                if let Some(facts) = task.and_then(|t| self.tasks.get_mut(&t)) {
                    facts.rolled_back_deliveries += 1;
                }
            }
            if self.rollbacks.forgot(index) {
                self.forgotten_ref(&stamped.event, at);
                continue;
            }
            match &stamped.event {
                Event::Dispatched { task, .. } => {
                    if let Some(facts) = self.task(*task) {
                        facts.acked = true;
                    }
                }
                Event::Delivered { stream, id, .. } if task_streams.contains(stream) => {
                    self.deliveries += 1;
                    delivered.insert((stream.clone(), *id));
                    let replayed = replays.delivered(stream, *id);
                    match entries.get(&(stream.clone(), *id)) {
                        Some(task) => {
                            if let Some(facts) = self.task(*task) {
                                facts.replayed |= replayed;
                                facts.deliveries += 1;
                                facts.first_delivery_ms.get_or_insert(at);
                                facts.last_delivery_ms = Some(at);
                            }
                        }
                        None => self.violate(
                            Invariant::NoPhantom,
                            None,
                            format!("entry {id} of {stream} was delivered but never dispatched"),
                        ),
                    }
                }
                Event::HandlerStarted { task, .. } => {
                    self.handler_calls += 1;
                    match self.task(*task) {
                        Some(facts) => facts.runs += 1,
                        None => self.violate(
                            Invariant::NoPhantom,
                            Some(*task),
                            "a handler ran a task that is not in the workload".into(),
                        ),
                    }
                }
                Event::SlowedDown {
                    task,
                    cancelled: false,
                    ..
                } => {
                    if let Some(facts) = self.task(*task) {
                        facts.slow_downs += 1;
                    }
                }
                Event::Crashed { .. } => self.disruptions.push(Disruption {
                    from_ms: at,
                    to_ms: at + slack,
                }),
                Event::Paused { until_ms, .. } => self.disruptions.push(Disruption {
                    from_ms: at,
                    to_ms: *until_ms,
                }),
                Event::Fault { .. } => self.disruptions.push(Disruption {
                    from_ms: at,
                    to_ms: at,
                }),
                // A graceful stop hands back what its worker holds: attempts
                // still running at the grace's end, cancelled ones that
                // failed, entries waiting for a rate-limit permit. Each is
                // delivered again (swarm seed 1884: a rate-limited entry
                // whose run the stop cancelled, after a rollback had undone
                // its settle).
                Event::StopRequested { grace_ms, .. } => self.disruptions.push(Disruption {
                    from_ms: at,
                    to_ms: at.saturating_add(*grace_ms),
                }),
                Event::GroupDestroyed { stream } => {
                    replays.destroyed(stream);
                    let forgotten: Vec<_> =
                        cut.iter().filter(|(s, _)| s == stream).cloned().collect();
                    for key in forgotten {
                        cut.remove(&key);
                        if let Some(facts) = entries.get(&key).and_then(|t| self.tasks.get_mut(t)) {
                            facts.cut_then_forgotten = true;
                        }
                    }
                }
                Event::Cut {
                    stream,
                    pending,
                    unread,
                } => {
                    cut.extend(pending.iter().map(|id| (stream.clone(), *id)));
                    for id in pending {
                        seen_deleted.insert((stream.clone(), *id), at);
                        cut_at.insert((stream.clone(), *id), at);
                    }
                    for id in unread {
                        let key = (stream.clone(), *id);
                        if let Some(facts) = entries.get(&key).and_then(|t| self.tasks.get_mut(t)) {
                            facts.cut_then_forgotten = true;
                        }
                    }
                }
                Event::Settled {
                    stream,
                    consumer,
                    id,
                    ..
                } => {
                    self.settled.insert((stream.clone(), *id, consumer.clone()));
                }
                Event::StreamDeleted {
                    stream,
                    pending,
                    unread,
                } => {
                    // As a cut of every entry (a rollback to before it
                    // restores them), with the group destroyed just before.
                    for id in pending {
                        seen_deleted.insert((stream.clone(), *id), at);
                        cut_at.insert((stream.clone(), *id), at);
                    }
                    for id in pending.iter().chain(unread) {
                        let key = (stream.clone(), *id);
                        if let Some(facts) = entries.get(&key).and_then(|t| self.tasks.get_mut(t)) {
                            facts.in_deleted_stream = true;
                        }
                    }
                }
                Event::FoundDeleted { stream, id } => {
                    cut.remove(&(stream.clone(), *id));
                    seen_deleted.insert((stream.clone(), *id), at);
                }
                Event::RolledBack {
                    snapshot_ms,
                    forgotten,
                    ..
                } => {
                    // Cut before the snapshot, reported deleted after it:
                    // the restore brought back the pending reference, not
                    // the entry, and forgot the report (and its dead
                    // letter). It is cut and unreported again: a group
                    // destroyed now takes the last trace of it.
                    for (key, _) in seen_deleted.iter().filter(|(_, at)| **at >= *snapshot_ms) {
                        if cut_at.get(key).is_some_and(|cut| *cut < *snapshot_ms) {
                            cut.insert(key.clone());
                        }
                    }
                    // Deleted after the snapshot: the restore brought back
                    // the entry, or (appended after the snapshot too) the
                    // task's entry before it.
                    let restored = seen_deleted.iter().filter(|(key, at)| {
                        **at >= *snapshot_ms
                            && cut_at.get(*key).is_none_or(|cut| *cut >= *snapshot_ms)
                    });
                    for (key, _) in restored {
                        let task = if forgotten.contains(key) {
                            self.rollbacks.task_of(&key.0, key.1)
                        } else {
                            entries.get(key).copied()
                        };
                        if let Some(facts) = task.and_then(|t| self.tasks.get_mut(&t)) {
                            facts.resurrected = true;
                        }
                    }
                    seen_deleted.retain(|_, at| *at < *snapshot_ms);
                }
                _ => {}
            }
        }
        delivered
    }

    /// Scheduled dispatches (issue 12): a task dispatched for later has no
    /// entry until a promote appends one, so its acknowledged dispatch
    /// ([`Event::DispatchedLater`]) counts as acknowledged unless a broker
    /// rollback forgot every schedule of it the broker applied (each
    /// [`Event::Scheduled`] with `attempts` 0 less those a
    /// [`Event::RolledBack`] lists as unscheduled): then it is lost to the
    /// rollback, as an immediate dispatch whose entry a rollback forgot.
    /// A schedule kept makes a task without an outcome lost to crewq,
    /// whether it was promoted or not.
    fn read_schedules(&mut self, record: &RunRecord) {
        let mut dispatched_later = BTreeSet::new();
        // Per task: schedules applied, and those forgotten.
        let mut schedules: BTreeMap<u32, (u32, u32)> = BTreeMap::new();
        for stamped in record.history.events() {
            match &stamped.event {
                Event::DispatchedLater { task, .. } => {
                    dispatched_later.insert(*task);
                }
                // Not a first attempt's retry after a slow-down (its
                // attempts are 0 too).
                Event::Scheduled {
                    task,
                    attempts: 0,
                    slowed: 0,
                    ..
                } => schedules.entry(*task).or_default().0 += 1,
                Event::RolledBack { unscheduled, .. } => {
                    for task in unscheduled {
                        schedules.entry(*task).or_default().1 += 1;
                    }
                }
                _ => {}
            }
        }
        for task in dispatched_later {
            let (applied, forgotten) = schedules.get(&task).copied().unwrap_or_default();
            let Some(facts) = self.task(task) else {
                continue;
            };
            if forgotten > 0 && applied <= forgotten {
                facts.dispatch_rolled_back = true;
            } else {
                // Kept, or (a producer's `schedule-at-once` mutant)
                // appended at once: its entry is accounted as any other.
                facts.acked = true;
            }
        }
    }

    /// A dispatch or delivery of an entry a rollback forgot: it counts for
    /// its task, but names no entry the broker still knows.
    fn forgotten_ref(&mut self, event: &Event, at: u64) {
        match event {
            Event::Dispatched { task, .. } => {
                if let Some(facts) = self.task(*task) {
                    facts.dispatch_rolled_back = true;
                }
            }
            Event::Delivered { stream, id, .. } => {
                self.deliveries += 1;
                let task = self.rollbacks.task_of(stream, *id);
                if let Some(facts) = task.and_then(|t| self.tasks.get_mut(&t)) {
                    facts.deliveries += 1;
                    facts.first_delivery_ms.get_or_insert(at);
                    facts.last_delivery_ms = Some(at);
                }
            }
            _ => {}
        }
    }

    fn read_outcomes(&mut self, record: &RunRecord, entries: &BTreeMap<(String, StreamId), u32>) {
        let rolled_back = record
            .history
            .events()
            .iter()
            .any(|e| matches!(e.event, Event::RolledBack { .. }));
        for result in &record.state.results {
            let Some((task_id, status)) = &result.result else {
                self.violate(
                    Invariant::OutcomesConsistent,
                    None,
                    format!("result entry {} does not decode", result.id),
                );
                continue;
            };
            let Some(task) = task_index(task_id).filter(|t| self.tasks.contains_key(t)) else {
                self.violate(
                    Invariant::NoPhantom,
                    None,
                    format!("a result for '{task_id}', which was never dispatched"),
                );
                continue;
            };
            self.first_results.entry(task).or_insert(*status);
            let Some(facts) = self.task(task) else {
                continue;
            };
            match status {
                TaskStatus::Success => facts.successes += 1,
                TaskStatus::Failure => facts.failures += 1,
                TaskStatus::Skipped => self.violate(
                    Invariant::OutcomesConsistent,
                    Some(task),
                    "a result with status skipped, which no worker writes".into(),
                ),
            }
        }
        for agent in &record.state.agents {
            for (id, letter) in &agent.dead_letters {
                let letter = match letter {
                    Ok(letter) => letter,
                    Err(err) => {
                        let detail = format!("dead letter {id} does not decode: {err}");
                        self.violate(Invariant::OutcomesConsistent, None, detail);
                        continue;
                    }
                };
                let by_origin = letter
                    .origin
                    .as_ref()
                    .and_then(|o| entries.get(&(o.stream.clone(), o.entry_id)).copied());
                let by_data = letter
                    .decode_task::<serde_json::Value>()
                    .ok()
                    .and_then(|t| task_index(&t.task_id));
                let task = match (by_origin, by_data) {
                    (Some(a), Some(b)) if a != b => {
                        let detail = format!("dead letter {id} holds task {b}'s data");
                        self.violate(Invariant::OutcomesConsistent, Some(a), detail);
                        a
                    }
                    (Some(task), _) | (None, Some(task)) => task,
                    (None, None) => {
                        let detail = format!("dead letter {id} is of no dispatched entry");
                        self.violate(Invariant::NoPhantom, None, detail);
                        continue;
                    }
                };
                // A rollback restored an entry its holder had seen deleted:
                // the holder may still write the letter (unsure whether the
                // entry is back, it writes it rather than lose the task),
                // and the restored entry runs again. Beside a success the
                // letter covers nothing.
                let restored_and_done = self
                    .tasks
                    .get(&task)
                    .is_some_and(|facts| facts.resurrected && facts.successes > 0);
                // Its origin's lane: one of this agent type's (issue 12).
                let origin_lane = letter.origin.as_ref().and_then(|origin| {
                    record
                        .state
                        .lane_of(&origin.stream)
                        .filter(|lane| lane.agent == agent.agent)
                });
                if letter.reason == Some(DeadLetterReason::DeletedWhilePending)
                    && let Some(origin) = &letter.origin
                    && origin_lane.is_none_or(|lane| {
                        lane.present.contains(&origin.entry_id) && !restored_and_done
                    })
                {
                    // Never a cover for losing an entry that is still there.
                    let detail = format!(
                        "dead letter {id} says entry {} was deleted while pending, but it is in {}",
                        origin.entry_id, origin.stream
                    );
                    self.violate(Invariant::DeadLetterRouting, Some(task), detail);
                }
                // Its own applied settle (reply lost), or a run with a
                // rollback (which can forget the entry's append, or hand the
                // entry to a peer while its holder's lease looks fresh to
                // the holder): the worker found the entry gone after its
                // group was, and wrote what it had; a letter too many beside
                // the result the task got otherwise.
                let own_success = letter.reason == Some(DeadLetterReason::DeletedWhilePending)
                    && letter.origin.as_ref().is_some_and(|origin| {
                        rolled_back
                            || self.settled.contains(&(
                                origin.stream.clone(),
                                origin.entry_id,
                                origin.consumer.clone(),
                            ))
                    });
                match self.task(task) {
                    Some(facts) => {
                        facts.lettered_own_success |= own_success;
                        facts.dead_letters.push(letter.clone());
                    }
                    None => self.violate(
                        Invariant::NoPhantom,
                        Some(task),
                        "dead-lettered, but not in the workload".into(),
                    ),
                }
            }
            for pending in &agent.pending {
                let task = entries
                    .get(&(agent.keys.tasks.clone(), pending.id))
                    .copied();
                if let Some(facts) = task.and_then(|t| self.tasks.get_mut(&t)) {
                    facts.pending += 1;
                }
                self.violate(
                    Invariant::NothingPending,
                    task,
                    format!(
                        "entry {} still pending under {} after the drain ({} deliveries)",
                        pending.id, pending.consumer, pending.deliveries
                    ),
                );
            }
            for id in &agent.unread {
                match entries.get(&(agent.keys.tasks.clone(), *id)) {
                    Some(task) => {
                        if let Some(facts) = self.tasks.get_mut(task) {
                            facts.unread += 1;
                        }
                    }
                    None => {
                        let detail = format!("entry {id} in the task stream was never dispatched");
                        self.violate(Invariant::NoPhantom, None, detail);
                    }
                }
            }
        }
    }

    /// Disruptions that overlap `task`'s deliveries.
    pub fn disruptions_during(&self, facts: &TaskFacts) -> u32 {
        let (Some(first), Some(last)) = (facts.first_delivery_ms, facts.last_delivery_ms) else {
            return 0;
        };
        self.disruptions
            .iter()
            .filter(|d| d.from_ms <= last && d.to_ms >= first)
            .count() as u32
    }
}

/// Which deliveries replay an entry: delivered before its stream's group was
/// destroyed, and again after.
#[derive(Default)]
struct Replays {
    /// Destructions so far, by stream.
    generation: BTreeMap<String, u32>,
    /// The generation of each entry's first delivery.
    first: BTreeMap<(String, StreamId), u32>,
}

impl Replays {
    fn destroyed(&mut self, stream: &str) {
        *self.generation.entry(stream.to_owned()).or_default() += 1;
    }

    /// Notes a delivery; whether it replays the entry.
    fn delivered(&mut self, stream: &str, id: StreamId) -> bool {
        let now = self.generation.get(stream).copied().unwrap_or(0);
        let first = *self.first.entry((stream.to_owned(), id)).or_insert(now);
        first < now
    }
}
