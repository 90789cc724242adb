//! Dispatching the workload: workflows fanned out by the real
//! [`Supervisor`] (and gathered by it), poison tasks through the real
//! [`Producer`] or, for undecodable ones, written raw as a foreign producer
//! would. Transient failures are retried, as an application would.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crewq_core::producer::Producer;
use crewq_core::supervisor::{Gathered, Supervisor, Workflow};
use crewq_core::worker::ATTEMPTS_FIELD;
use crewq_core::{Broker, DATA_FIELD, Fields, Keyspace, NewEntry, StreamId, Task, task_to_fields};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::brokers::Handle;
use super::hits::Hits;
use super::slots::{OTHER_AGENT_TYPE, POISON_FIELD};
use crate::crew::{Crew, task_id};
use crate::history::{Event, Recorder};
use crate::plan::{FaultPlan, PoisonKind};
use crate::recorder::RecordingBroker;
use crate::{Scenario, SimError};

/// Every task's `created_at`: runs must not read the wall clock.
const CREATED_AT: &str = "2024-01-01T00:00:00+00:00";

/// Hit count class of a task dispatched for later (issue 12).
const SCHEDULED_DISPATCH: &str = "scheduled_dispatch";

/// One dispatch: a workflow of tasks, a single poison task, or a single
/// task dispatched for later.
#[derive(Clone, Debug)]
enum Unit {
    Workflow { index: u32, tasks: Vec<u32> },
    Poison { task: u32, kind: PoisonKind },
    Scheduled { task: u32, delay_ms: u64 },
}

/// What became of one workflow's gather.
#[derive(Clone, Debug)]
pub(crate) struct GatherRecord {
    pub workflow: u32,
    pub tasks: Vec<u32>,
    pub outcome: GatherOutcome,
}

#[derive(Clone, Debug)]
pub(crate) enum GatherOutcome {
    Gathered(Gathered),
    Failed(String),
    Abandoned,
}

/// The gathers under way or done, shared with the dispatcher.
pub(crate) type Gathers = Arc<Mutex<Vec<(u32, Vec<u32>, JoinHandle<GatherOutcome>)>>>;

pub(crate) struct Dispatcher<B> {
    pub scenario: Scenario,
    pub crew: Crew,
    pub plan: FaultPlan,
    pub keyspace: Keyspace,
    pub producer: Producer<Handle<B>>,
    pub supervisor: Supervisor<Handle<B>>,
    pub raw: RecordingBroker<B>,
    pub recorder: Recorder,
    pub hits: Hits,
    pub gathers: Gathers,
    pub gather_timeout: Duration,
}

impl<B: Broker + Clone + 'static> Dispatcher<B> {
    /// Dispatches every unit at its time.
    pub async fn run(self) -> Result<(), SimError> {
        let units = self.units();
        let window = crate::scenario::millis_of(self.scenario.dispatch_window);
        let count = units.len().max(1) as u64;
        for (k, unit) in units.into_iter().enumerate() {
            let at = window * k as u64 / count;
            tokio::time::sleep_until(self.recorder.at(at)).await;
            match unit {
                Unit::Workflow { index, tasks } => self.fan_out(index, tasks).await?,
                Unit::Poison { task, kind } => self.poison(task, kind).await?,
                Unit::Scheduled { task, delay_ms } => self.schedule(task, delay_ms).await?,
            }
        }
        Ok(())
    }

    fn units(&self) -> Vec<Unit> {
        let size = self.scenario.workflow_size.max(1) as usize;
        let mut units = Vec::new();
        let mut workflow = Vec::new();
        for task in 0..self.scenario.tasks {
            match (self.plan.poison_kind(task), self.plan.scheduled_delay(task)) {
                (Some(kind), _) => units.push(Unit::Poison { task, kind }),
                (None, Some(delay_ms)) => units.push(Unit::Scheduled { task, delay_ms }),
                (None, None) => workflow.push(task),
            }
            if workflow.len() == size {
                let index = units.len() as u32;
                units.push(Unit::Workflow {
                    index,
                    tasks: std::mem::take(&mut workflow),
                });
            }
        }
        if !workflow.is_empty() {
            let index = units.len() as u32;
            units.push(Unit::Workflow {
                index,
                tasks: workflow,
            });
        }
        units
    }

    fn task(&self, index: u32, payload: Value, action: String) -> Result<Task<Value>, SimError> {
        Task::new(self.scenario.agent_of(index), action, payload)
            .task_id(task_id(index))
            .max_retries(self.scenario.max_retries)
            .created_at(CREATED_AT)
            // Its priority's lane (issue 12), if the plan gives it one.
            .priority(self.plan.priority_of(index))
            .build()
            .map_err(|e| SimError::Scenario(format!("task {index}: {e}")))
    }

    async fn fan_out(&self, workflow: u32, indexes: Vec<u32>) -> Result<(), SimError> {
        let tasks = indexes
            .iter()
            .map(|&i| {
                let (action, payload) = self.crew.task_input(i, self.scenario.agent_of(i));
                self.task(i, payload, action)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let trace_id = format!("sim-workflow-{workflow}");
        let fanned = retry(
            || self.supervisor.fan_out(&trace_id, tasks.clone()),
            |e| e.is_transient(),
        )
        .await
        .map_err(|e| SimError::Run(format!("fan-out of workflow {workflow}: {e}")))?;
        for (&task, dispatched) in indexes.iter().zip(&fanned.dispatched) {
            self.dispatched(task, dispatched.entry_id);
        }
        let gather = gather(
            self.supervisor.clone(),
            fanned.workflow,
            workflow,
            self.gather_timeout,
            self.recorder.clone(),
        );
        self.gathers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((workflow, indexes, tokio::spawn(gather)));
        Ok(())
    }

    async fn poison(&self, index: u32, kind: PoisonKind) -> Result<(), SimError> {
        let agent = self.scenario.agent_of(index);
        // In its priority's lane, as the producer would put it.
        let priority = crewq_core::Priority::new(self.plan.priority_of(index))
            .map_err(|e| SimError::Scenario(format!("task {index}: {e}")))?;
        let stream = self.keyspace.lane(
            &crewq_core::AgentType::new(agent).map_err(|e| SimError::Scenario(e.to_string()))?,
            priority,
        );
        let raw = match kind {
            PoisonKind::Undecodable => {
                let data = format!("{{\"task_id\": \"{}\", this is not JSON", task_id(index));
                Some(Fields::new().with(DATA_FIELD, data))
            }
            PoisonKind::AttemptsOverflow | PoisonKind::AttemptsGarbage => {
                let task = self.task(index, json!({ "n": index }), "poison".to_owned())?;
                let attempts = match kind {
                    PoisonKind::AttemptsOverflow => u32::MAX.to_string(),
                    _ => "abc".to_owned(),
                };
                Some(self.fields(index, &task)?.with(ATTEMPTS_FIELD, attempts))
            }
            PoisonKind::WrongAgentType => {
                // A task claiming another (valid, unserved) agent type, in
                // this agent type's stream.
                let task = Task::new(OTHER_AGENT_TYPE, "poison", json!({ "n": index }))
                    .task_id(task_id(index))
                    .max_retries(self.scenario.max_retries)
                    .created_at(CREATED_AT)
                    .build()
                    .map_err(|e| SimError::Scenario(format!("task {index}: {e}")))?;
                Some(self.fields(index, &task)?)
            }
            PoisonKind::Rejected | PoisonKind::Oversized | PoisonKind::PanickingValidator => None,
        };
        let entry = match raw {
            Some(fields) => {
                // Written once, without faults: a foreign producer's entry.
                self.raw
                    .xadd(NewEntry::new(stream, fields))
                    .await
                    .map_err(|e| SimError::Run(format!("poison task {index}: {e}")))?
            }
            None => {
                let mut payload = json!({ "n": index, POISON_FIELD: format!("{kind:?}") });
                if kind == PoisonKind::Oversized {
                    payload["padding"] = json!("x".repeat(self.scenario.worker_max_bytes + 1));
                }
                let task = self.task(index, payload, "poison".to_owned())?;
                retry(|| self.producer.dispatch(&task), |e| e.is_transient())
                    .await
                    .map_err(|e| SimError::Run(format!("poison task {index}: {e}")))?
                    .entry_id
            }
        };
        self.hits.hit(kind.class());
        self.dispatched(index, entry);
        Ok(())
    }

    /// Dispatches task `index` for `delay_ms` later through the real
    /// [`Producer::dispatch_in`], and records when it is due at the
    /// earliest: the delay after the first try (each try schedules it
    /// anew after its own call, if an earlier one did not apply).
    async fn schedule(&self, index: u32, delay_ms: u64) -> Result<(), SimError> {
        let agent = self.scenario.agent_of(index);
        let (action, payload) = self.crew.task_input(index, agent);
        let task = self.task(index, payload, action)?;
        let due_ms = self.recorder.now_ms().saturating_add(delay_ms);
        let delay = Duration::from_millis(delay_ms);
        retry(
            || self.producer.dispatch_in(&task, delay),
            |e| e.is_transient(),
        )
        .await
        .map_err(|e| SimError::Run(format!("scheduled task {index}: {e}")))?;
        self.hits.hit(SCHEDULED_DISPATCH);
        self.recorder.record(Event::DispatchedLater {
            task: index,
            due_ms,
        });
        Ok(())
    }

    /// `task` as a task entry's fields.
    fn fields(&self, index: u32, task: &Task<Value>) -> Result<Fields, SimError> {
        task_to_fields(task).map_err(|e| SimError::Scenario(format!("task {index}: {e}")))
    }

    fn dispatched(&self, task: u32, entry: StreamId) {
        self.recorder.record(Event::Dispatched { task, entry });
    }
}

/// Gathers one workflow, recording what it got.
async fn gather<B: Broker + Clone + 'static>(
    supervisor: Supervisor<Handle<B>>,
    workflow: Workflow,
    index: u32,
    timeout: Duration,
    recorder: Recorder,
) -> GatherOutcome {
    match supervisor.gather(&workflow, timeout).await {
        Ok(gathered) => {
            recorder.record(Event::Gathered {
                workflow: index,
                results: gathered.results.len(),
                missing: gathered.missing.len(),
                duplicates: gathered.duplicates,
            });
            GatherOutcome::Gathered(gathered)
        }
        Err(err) => GatherOutcome::Failed(err.to_string()),
    }
}

/// Runs `op` until it succeeds or fails for good, waiting a little longer
/// after each transient failure.
async fn retry<T, E, F, Fut>(mut op: F, transient: impl Fn(&E) -> bool) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut wait = Duration::from_millis(5);
    loop {
        match op().await {
            Err(err) if transient(&err) => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}
