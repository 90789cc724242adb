//! Gathering one workflow: the loop that waits for its results, and the
//! record that acknowledges them once the gather is done.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::options::MIN_BLOCK;
use super::registry::{self, Received, Registry};
use super::{Gathered, Supervisor, SupervisorError, Workflow};
use crate::{Broker, TaskResult};

impl<B: Broker> Supervisor<B> {
    /// Records `workflow`'s results until all are in or `timeout` passes;
    /// acknowledges nothing (see [`Supervisor::commit`]).
    pub(super) async fn collect<'a>(
        &'a self,
        workflow: &'a Workflow,
        timeout: Duration,
    ) -> Result<Collector<'a>, SupervisorError> {
        let start = Instant::now();
        // A timeout too large for an Instant waits as good as forever.
        let deadline = start
            .checked_add(timeout)
            .unwrap_or_else(|| start + Duration::from_secs(60 * 60 * 24 * 365));
        let mut collector = Collector::begin(&self.inner.registry, workflow)?;
        let streams = workflow.results_streams(self.inner.producer.keyspace());
        loop {
            collector.take_inbox();
            if collector.is_complete() || Instant::now() >= deadline {
                break;
            }
            // Wait for the reader role, no longer than the deadline.
            let Ok(mut reader) = tokio::time::timeout_at(deadline, self.inner.reader.lock()).await
            else {
                continue;
            };
            // The gather that read last may have routed results here.
            if registry::lock(&self.inner.registry).has_inbox(workflow) {
                continue;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                continue;
            }
            let block = remaining.min(self.inner.options.poll).max(MIN_BLOCK);
            match self.inner.read_round(&mut reader, &streams, block).await {
                Ok(()) => {}
                Err(err) if err.is_transient() => {
                    drop(reader);
                    tracing::warn!(error = %err, "reading results failed; retrying");
                    let pause = Instant::now() + self.inner.options.poll;
                    tokio::time::sleep_until(pause.min(deadline)).await;
                }
                Err(err) => return Err(err.into()),
            }
        }
        let gathered = collector.results.len();
        tracing::debug!(
            gathered,
            missing = workflow.len() - gathered,
            duplicates = collector.duplicates,
            elapsed_ms = start.elapsed().as_millis(),
            "gathered"
        );
        Ok(collector)
    }

    /// Acknowledges what `collector` recorded and forgets its workflow.
    pub(super) async fn commit(&self, mut collector: Collector<'_>) {
        self.inner.ack_all(&collector.recorded).await;
        let late = collector.finish();
        if !late.is_empty() {
            self.inner.ack_all(&late).await;
        }
    }
}

/// One gather's record: the first result per task, and every entry read
/// for it, unacknowledged. Dropped unfinished, it hands those entries back
/// to the workflow's inbox.
pub(super) struct Collector<'a> {
    registry: &'a Mutex<Registry>,
    workflow: &'a Workflow,
    results: BTreeMap<String, TaskResult>,
    recorded: Vec<Received>,
    duplicates: u64,
    finished: bool,
}

impl<'a> Collector<'a> {
    fn begin(
        registry: &'a Mutex<Registry>,
        workflow: &'a Workflow,
    ) -> Result<Self, SupervisorError> {
        registry::lock(registry).begin_gather(workflow, Instant::now())?;
        Ok(Collector {
            registry,
            workflow,
            results: BTreeMap::new(),
            recorded: Vec::new(),
            duplicates: 0,
            finished: false,
        })
    }

    fn take_inbox(&mut self) {
        let inbox = registry::lock(self.registry).take_inbox(self.workflow);
        for received in inbox {
            let task_id = &received.result.task_id;
            if self.results.contains_key(task_id) {
                self.duplicates += 1;
            } else {
                self.results
                    .insert(task_id.clone(), received.result.clone());
            }
            self.recorded.push(received);
        }
    }

    fn is_complete(&self) -> bool {
        self.results.len() == self.workflow.len()
    }

    pub(super) fn gathered(&self) -> Gathered {
        Gathered {
            trace_id: self.workflow.trace_id().to_owned(),
            results: self.results.clone(),
            missing: self
                .workflow
                .task_ids()
                .filter(|task_id| !self.results.contains_key(*task_id))
                .map(str::to_owned)
                .collect(),
            duplicates: self.duplicates,
        }
    }

    /// Its entries were acknowledged: forgets the workflow. Returns results
    /// routed to it since its last look, for the caller to acknowledge.
    fn finish(&mut self) -> Vec<Received> {
        self.finished = true;
        registry::lock(self.registry).finish(self.workflow, &self.recorded)
    }
}

impl Drop for Collector<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let recorded = std::mem::take(&mut self.recorded);
            registry::lock(self.registry).abandon(
                self.workflow.trace_id(),
                recorded,
                Instant::now(),
            );
        }
    }
}
