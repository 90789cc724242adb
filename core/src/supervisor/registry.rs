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
use std::time::Duration;

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
#[derive(Debug)]
struct Trace {
    /// Its results, read and routed here, not yet taken by its gather.
    inbox: Vec<Received>,
    /// Whether a gather is running for it.
    gathering: bool,
    /// When it was last registered or a gather of it stopped: it expires
    /// this long after, unless a gather is running.
    touched: Instant,
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
    /// Results this supervisor's codec could not decode: left pending, never
    /// acknowledged, noted once each.
    undecodable: BTreeSet<(String, StreamId)>,
    /// When workflows were last looked at for expiry: at most once per
    /// interval, since each look walks every workflow.
    expiry_checked: Option<Instant>,
}

/// Locks `state`. Nothing under these locks can panic half way through an
/// update that matters, so a poisoned lock still holds usable state.
pub(super) fn lock<T>(state: &Mutex<T>) -> MutexGuard<'_, T> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Registry {
    /// Makes `workflow`'s results route to it, and hands it the unclaimed
    /// results of its tasks. Registering again adds tasks.
    pub fn register(&mut self, workflow: &Workflow, now: Instant) -> Result<(), SupervisorError> {
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
        let trace = self
            .traces
            .entry(trace_id.to_owned())
            .or_insert_with(|| Trace {
                inbox: Vec::new(),
                gathering: false,
                touched: now,
            });
        trace.touched = now;
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
    pub fn begin_gather(
        &mut self,
        workflow: &Workflow,
        now: Instant,
    ) -> Result<(), SupervisorError> {
        let trace_id = workflow.trace_id();
        if self
            .traces
            .get(trace_id)
            .is_some_and(|trace| trace.gathering)
        {
            return Err(SupervisorError::AlreadyGathering(trace_id.to_owned()));
        }
        self.register(workflow, now)?;
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
    pub fn abandon(&mut self, trace_id: &str, recorded: Vec<Received>, now: Instant) {
        if let Some(trace) = self.traces.get_mut(trace_id) {
            trace.gathering = false;
            trace.touched = now;
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

    /// Forgets workflow `trace_id` unless a gather of it is running: its
    /// task ids route nowhere any more. Returns whether it was registered
    /// and the results in its inbox, released for the caller to
    /// acknowledge.
    pub fn forget(&mut self, trace_id: &str) -> Result<(bool, Vec<Received>), SupervisorError> {
        match self.traces.get(trace_id) {
            None => return Ok((false, Vec::new())),
            Some(trace) if trace.gathering => {
                return Err(SupervisorError::AlreadyGathering(trace_id.to_owned()));
            }
            Some(_) => {}
        }
        let inbox = self.drop_trace(trace_id);
        self.release(&inbox);
        Ok((true, inbox))
    }

    /// Forgets the workflows untouched since `cutoff` and not being
    /// gathered; the results in their inboxes become unclaimed (found
    /// `now`), still held. Returns the expired trace ids.
    /// Does nothing when the last look was less than `every` ago.
    pub fn expire_workflows(
        &mut self,
        cutoff: Instant,
        now: Instant,
        every: Duration,
    ) -> Vec<String> {
        if self
            .expiry_checked
            .is_some_and(|checked| now.saturating_duration_since(checked) < every)
        {
            return Vec::new();
        }
        self.expiry_checked = Some(now);
        let expired: Vec<String> = self
            .traces
            .iter()
            .filter(|(_, trace)| !trace.gathering && trace.touched <= cutoff)
            .map(|(trace_id, _)| trace_id.clone())
            .collect();
        for trace_id in &expired {
            let inbox = self.drop_trace(trace_id);
            self.unclaimed
                .extend(inbox.into_iter().map(|received| (now, received)));
        }
        expired
    }

    /// How many workflows are registered.
    pub fn workflows(&self) -> usize {
        self.traces.len()
    }

    /// Notes an undecodable result; returns whether it is new.
    pub fn undecodable(&mut self, stream: &str, id: StreamId) -> bool {
        self.undecodable.insert((stream.to_owned(), id))
    }

    /// How many distinct undecodable results this supervisor left pending.
    pub fn undecodable_count(&self) -> usize {
        self.undecodable.len()
    }

    /// Removes a workflow and its task ids' routes; returns its inbox.
    fn drop_trace(&mut self, trace_id: &str) -> Vec<Received> {
        self.owners.retain(|_, owner| owner != trace_id);
        self.traces
            .remove(trace_id)
            .map(|trace| trace.inbox)
            .unwrap_or_default()
    }

    /// Forgets entries that were acknowledged (or given up on).
    fn release(&mut self, entries: &[Received]) {
        for received in entries {
            self.held.remove(&received.key());
        }
    }
}
