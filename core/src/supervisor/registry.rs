//! Which workflow each result read belongs to: the in-memory routing that
//! lets several workflows of one supervisor share its consumer group.
//!
//! Results carry a task id but no trace id (the seed's `TaskResult`), so a
//! result is routed by the task id a workflow registered. Whoever reads a
//! results stream routes what it read into the inbox of the workflow that
//! awaits it; a gather takes only its own inbox. So a gather never
//! acknowledges, or loses, the result another workflow of the same
//! supervisor waits for.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::time::Instant;

use super::{SupervisorError, Workflow};
use crate::{StreamId, TaskResult};

/// A result read from a results stream and not yet acknowledged.
#[derive(Clone, Debug)]
pub(super) struct Received {
    pub stream: String,
    pub id: StreamId,
    pub result: TaskResult,
}

impl Received {
    fn key(&self) -> (String, StreamId) {
        (self.stream.clone(), self.id)
    }
}

/// One registered workflow.
#[derive(Debug, Default)]
struct Trace {
    /// Its results, read and routed here, not yet taken by its gather.
    inbox: Vec<Received>,
    /// Whether a gather is running for it.
    gathering: bool,
}

/// The routing state of one supervisor.
#[derive(Debug, Default)]
pub(super) struct Registry {
    /// Task id to the trace id of the workflow awaiting it.
    owners: BTreeMap<String, String>,
    /// Registered workflows by trace id.
    traces: BTreeMap<String, Trace>,
    /// Results found in this supervisor's pending list (read before a crash
    /// and never acknowledged) that no workflow awaits yet, with when they
    /// were found: a resumed workflow claims them when it registers.
    unclaimed: Vec<(Instant, Received)>,
    /// Every entry held unacknowledged here (in an inbox, unclaimed, or
    /// recorded by a running gather), so that reading it again (a pending
    /// list drained a second time) routes it once only.
    held: BTreeSet<(String, StreamId)>,
}

/// Locks `state`. Nothing under these locks can panic half way through an
/// update that matters, so a poisoned lock still holds usable state.
pub(super) fn lock<T>(state: &Mutex<T>) -> MutexGuard<'_, T> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Registry {
    /// Makes `workflow`'s results route to it, and hands it the unclaimed
    /// results of its tasks. Registering again adds tasks.
    pub fn register(&mut self, workflow: &Workflow) -> Result<(), SupervisorError> {
        let trace_id = workflow.trace_id();
        for task_id in workflow.task_ids() {
            if let Some(owner) = self.owners.get(task_id)
                && owner != trace_id
            {
                return Err(SupervisorError::TaskInOtherWorkflow {
                    task_id: task_id.to_owned(),
                    trace_id: owner.clone(),
                });
            }
        }
        for task_id in workflow.task_ids() {
            self.owners.insert(task_id.to_owned(), trace_id.to_owned());
        }
        let trace = self.traces.entry(trace_id.to_owned()).or_default();
        let (mine, rest) = std::mem::take(&mut self.unclaimed)
            .into_iter()
            .partition(|(_, received)| workflow.contains(&received.result.task_id));
        self.unclaimed = rest;
        trace
            .inbox
            .extend(mine.into_iter().map(|(_, received)| received));
        Ok(())
    }

    /// Registers `workflow` and marks it gathered.
    pub fn begin_gather(&mut self, workflow: &Workflow) -> Result<(), SupervisorError> {
        let trace_id = workflow.trace_id();
        if self
            .traces
            .get(trace_id)
            .is_some_and(|trace| trace.gathering)
        {
            return Err(SupervisorError::AlreadyGathering(trace_id.to_owned()));
        }
        self.register(workflow)?;
        if let Some(trace) = self.traces.get_mut(trace_id) {
            trace.gathering = true;
        }
        Ok(())
    }

    /// Routes a result read from a stream. Returns it back when no workflow
    /// awaits it and it came from new entries: the caller acknowledges it
    /// (a result of another supervisor's workflow, or a late one).
    pub fn route(
        &mut self,
        received: Received,
        from_pending: bool,
        now: Instant,
    ) -> Option<Received> {
        if self.held.contains(&received.key()) {
            return None;
        }
        let owner = self.owners.get(&received.result.task_id);
        match owner.and_then(|trace_id| self.traces.get_mut(trace_id)) {
            Some(trace) => {
                self.held.insert(received.key());
                trace.inbox.push(received);
                None
            }
            None if from_pending => {
                self.held.insert(received.key());
                self.unclaimed.push((now, received));
                None
            }
            None => Some(received),
        }
    }

    /// Whether `workflow`'s inbox has results of its tasks.
    pub fn has_inbox(&self, workflow: &Workflow) -> bool {
        self.traces.get(workflow.trace_id()).is_some_and(|trace| {
            trace
                .inbox
                .iter()
                .any(|received| workflow.contains(&received.result.task_id))
        })
    }

    /// Takes the results of `workflow`'s tasks from its inbox, in the order
    /// read. Results of other tasks registered under the same trace id (by a
    /// fan-out of more tasks than this gather waits for) stay.
    pub fn take_inbox(&mut self, workflow: &Workflow) -> Vec<Received> {
        let Some(trace) = self.traces.get_mut(workflow.trace_id()) else {
            return Vec::new();
        };
        let (mine, rest) = std::mem::take(&mut trace.inbox)
            .into_iter()
            .partition(|received| workflow.contains(&received.result.task_id));
        trace.inbox = rest;
        mine
    }

    /// A gather that stopped without finishing (an error, or its future
    /// dropped): what it recorded goes back to the front of the inbox, still
    /// held and unacknowledged, for the next gather of the workflow.
    pub fn abandon(&mut self, trace_id: &str, recorded: Vec<Received>) {
        if let Some(trace) = self.traces.get_mut(trace_id) {
            trace.gathering = false;
            let later = std::mem::replace(&mut trace.inbox, recorded);
            trace.inbox.extend(later);
        }
    }

    /// A gather finished and acknowledged what it recorded: forgets the
    /// workflow and those entries. Returns results that reached its inbox
    /// since (late duplicates), for the caller to acknowledge.
    pub fn finish(&mut self, workflow: &Workflow, recorded: &[Received]) -> Vec<Received> {
        let trace_id = workflow.trace_id();
        for task_id in workflow.task_ids() {
            if self
                .owners
                .get(task_id)
                .is_some_and(|owner| owner == trace_id)
            {
                self.owners.remove(task_id);
            }
        }
        let leftovers = self
            .traces
            .remove(trace_id)
            .map(|trace| trace.inbox)
            .unwrap_or_default();
        self.release(recorded);
        self.release(&leftovers);
        leftovers
    }

    /// Takes the unclaimed results found before `cutoff`: no workflow
    /// resumed within the grace period claimed them.
    pub fn expire_unclaimed(&mut self, cutoff: Instant) -> Vec<Received> {
        let (expired, kept) = std::mem::take(&mut self.unclaimed)
            .into_iter()
            .partition(|(found, _)| *found <= cutoff);
        self.unclaimed = kept;
        let expired: Vec<Received> = expired.into_iter().map(|(_, received)| received).collect();
        self.release(&expired);
        expired
    }

    /// Forgets entries that were acknowledged (or given up on).
    fn release(&mut self, entries: &[Received]) {
        for received in entries {
            self.held.remove(&received.key());
        }
    }
}
