//! Broker rollbacks (issue 9, a state-level fault class): the memory
//! broker is snapshotted ahead of each planned rollback, as the last fsync
//! of an `appendfsync everysec` AOF (or a lagging replica) would hold it,
//! and restored at the rollback's time while virtual time goes on. The
//! appends forgotten are cut from the journal the checker accounts from
//! and listed in the history, as are the scheduled dispatches forgotten, so the checker can tell what the rollback
//! cost from what crewq did.

use std::collections::BTreeMap;
use std::ops::Range;

use crewq_core::{AgentKeys, Broker, Fields, StreamId};
use crewq_memory::{MemoryBroker, Snapshot};

use super::{Action, Hits};
use crate::history::{Event, Recorder};
use crate::plan::FaultPlan;
use crate::recorder::RecordingBroker;

/// Hit count class of a broker rollback that fired.
const ROLLBACK: &str = "rollback";

/// The timeline's actions of `plan`'s rollbacks: each one's snapshot, then
/// its restore.
pub(super) fn actions(plan: &FaultPlan) -> impl Iterator<Item = (u64, Action)> + '_ {
    plan.rollbacks.iter().zip(0u32..).flat_map(|(r, rollback)| {
        [
            (r.snapshot_ms(), Action::Snapshot { rollback }),
            (r.at_ms, Action::Restore { rollback }),
        ]
    })
}

/// One appended entry of the journal: stream, id, fields.
pub(crate) type Append = (String, StreamId, Fields);

/// The snapshots of a run's rollbacks, and what the restores forgot.
pub(crate) struct Rollbacks {
    /// The broker to roll back; `None` where it cannot be (Redis): the
    /// rollbacks then do not fire.
    broker: Option<MemoryBroker>,
    /// Snapshots taken, by rollback index in the plan.
    taken: BTreeMap<u32, Taken>,
    /// Restores done so far.
    restores: u32,
    /// The journal's forgotten appends, by index range.
    forgotten: Vec<Range<usize>>,
}

struct Taken {
    snapshot: Snapshot,
    at_ms: u64,
    /// The journal's length when it was taken: the appends from there on
    /// are forgotten by its restore.
    journal_len: usize,
    /// How many scheduled dispatches the broker had applied when it was
    /// taken: those from there on are forgotten by its restore.
    schedules_len: usize,
    /// Restores done before it was taken.
    restores: u32,
}

impl Rollbacks {
    pub fn new(broker: Option<MemoryBroker>) -> Self {
        Rollbacks {
            broker,
            taken: BTreeMap::new(),
            restores: 0,
            forgotten: Vec::new(),
        }
    }

    /// Does `action`, at `at_ms`, if it is a rollback's; returns whether it
    /// was.
    pub async fn act<B: Broker>(
        &mut self,
        action: Action,
        at_ms: u64,
        recorded: &RecordingBroker<B>,
        agents: &[AgentKeys],
        recorder: &Recorder,
        hits: &Hits,
    ) -> bool {
        match action {
            Action::Snapshot { rollback } => {
                // A snapshot from before a worker group existed would
                // destroy the group: a fault class of its own, not this.
                if groups_exist(recorded, agents).await {
                    self.snapshot(rollback, at_ms, recorded);
                }
            }
            Action::Restore { rollback } => {
                if self.restore(rollback, recorded, recorder) {
                    hits.hit(ROLLBACK);
                }
            }
            _ => return false,
        }
        true
    }

    /// Takes rollback `rollback`'s snapshot, at `at_ms`. No await between
    /// the copy and the journal's length: the current-thread runtime runs
    /// nothing else in between, and the memory broker applies each call
    /// in one poll, so the two agree.
    fn snapshot<B: Broker>(&mut self, rollback: u32, at_ms: u64, recorded: &RecordingBroker<B>) {
        let Some(broker) = &self.broker else {
            return;
        };
        let taken = Taken {
            snapshot: broker.snapshot(),
            at_ms,
            journal_len: recorded.journal_len(),
            schedules_len: recorded.schedules_len(),
            restores: self.restores,
        };
        self.taken.insert(rollback, taken);
    }

    /// Restores rollback `rollback`'s snapshot and records what it forgot.
    /// Returns whether it fired. A snapshot taken before another restore
    /// is not restored: it would bring back what that restore forgot.
    fn restore<B: Broker>(
        &mut self,
        rollback: u32,
        recorded: &RecordingBroker<B>,
        recorder: &Recorder,
    ) -> bool {
        let (Some(broker), Some(taken)) = (&self.broker, self.taken.remove(&rollback)) else {
            return false;
        };
        if taken.restores != self.restores {
            return false;
        }
        broker.restore(&taken.snapshot);
        let forgotten = recorded.journal_since(taken.journal_len);
        let end = taken.journal_len + forgotten.len();
        self.forgotten.push(taken.journal_len..end);
        self.restores += 1;
        recorder.record(Event::RolledBack {
            snapshot_ms: taken.at_ms,
            forgotten: forgotten
                .into_iter()
                .map(|(stream, id, _)| (stream, id))
                .collect(),
            unscheduled: recorded.schedules_since(taken.schedules_len),
        });
        true
    }

    /// Splits `journal` (every append of the run, in order) into the
    /// appends the broker kept and those a rollback forgot.
    pub fn split(&self, journal: Vec<Append>) -> (Vec<Append>, Vec<Append>) {
        let (mut kept, mut forgotten) = (Vec::new(), Vec::new());
        for (index, append) in journal.into_iter().enumerate() {
            if self.forgotten.iter().any(|range| range.contains(&index)) {
                forgotten.push(append);
            } else {
                kept.push(append);
            }
        }
        (kept, forgotten)
    }
}

/// Whether every agent type's worker group exists.
async fn groups_exist<B: Broker>(broker: &RecordingBroker<B>, agents: &[AgentKeys]) -> bool {
    for keys in agents {
        let Ok(groups) = broker.info_groups(&keys.tasks).await else {
            return false;
        };
        if !groups.iter().any(|g| g.name == keys.group) {
            return false;
        }
    }
    true
}
