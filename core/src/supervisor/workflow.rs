//! What a supervisor's workflow is made of: its trace id and the tasks it
//! waits for ([`Workflow`]), what a fan-out dispatched ([`FanOut`]) and what a
//! gather found ([`Gathered`], [`Pipeline`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::producer::Dispatched;
use crate::{AgentType, Keyspace, TaskResult, TaskStatus};

/// A fresh trace id, `wf-<uuid v4, 32 hex digits>`.
///
/// A trace id names one workflow. Keep it (with the workflow's task ids):
/// a supervisor restarted mid-workflow resumes by gathering the same trace
/// id and task ids again.
///
/// ```
/// let trace_id = crewq_core::supervisor::new_trace_id();
/// assert!(trace_id.starts_with("wf-"));
/// assert_ne!(trace_id, crewq_core::supervisor::new_trace_id());
/// ```
pub fn new_trace_id() -> String {
    format!("wf-{}", uuid::Uuid::new_v4().simple())
}

/// One workflow's trace id and the tasks whose results it waits for.
///
/// [`Supervisor::fan_out`](super::Supervisor::fan_out) makes one; a
/// supervisor that resumes a workflow after a restart can also build it by
/// hand from the trace id and task ids it kept.
///
/// ```
/// use crewq_core::AgentType;
/// use crewq_core::supervisor::Workflow;
/// let workflow = Workflow::new("wf-1")
///     .expect(AgentType::new("research")?, "research-a")
///     .expect(AgentType::new("research")?, "research-b");
/// assert_eq!(workflow.task_ids().collect::<Vec<_>>(), ["research-a", "research-b"]);
/// # Ok::<(), crewq_core::InvalidName>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workflow {
    trace_id: String,
    /// Task id to the agent type that runs it (which decides the results
    /// stream in the cluster layout).
    tasks: BTreeMap<String, AgentType>,
}

impl Workflow {
    /// A workflow that waits for nothing yet.
    pub fn new(trace_id: impl Into<String>) -> Self {
        Workflow {
            trace_id: trace_id.into(),
            tasks: BTreeMap::new(),
        }
    }

    /// Also waits for the result of task `task_id`, run by `agent_type`.
    #[must_use]
    pub fn expect(mut self, agent_type: AgentType, task_id: impl Into<String>) -> Self {
        self.tasks.insert(task_id.into(), agent_type);
        self
    }

    /// The trace id.
    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }

    /// The task ids waited for, sorted.
    pub fn task_ids(&self) -> impl Iterator<Item = &str> {
        self.tasks.keys().map(String::as_str)
    }

    /// How many tasks it waits for.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether it waits for nothing.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The results streams its results arrive on: one in the seed layout,
    /// one per agent type in the cluster layout.
    pub fn results_streams(&self, keyspace: &Keyspace) -> BTreeSet<String> {
        self.tasks
            .values()
            .map(|agent| keyspace.results(agent))
            .collect()
    }

    pub(super) fn contains(&self, task_id: &str) -> bool {
        self.tasks.contains_key(task_id)
    }
}

/// What [`Supervisor::fan_out`](super::Supervisor::fan_out) dispatched.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FanOut {
    /// The workflow to gather.
    pub workflow: Workflow,
    /// One per task, in the order given; `duplicate` for a task that was
    /// already dispatched (a resumed fan-out).
    pub dispatched: Vec<Dispatched>,
}

/// The results one gather found for its workflow.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Gathered {
    /// The workflow's trace id.
    pub trace_id: String,
    /// The first result read for each task, by task id.
    pub results: BTreeMap<String, TaskResult>,
    /// Tasks without a result when the time ran out, by task id.
    pub missing: Vec<String>,
    /// Further results read for tasks that already had one (delivery is at
    /// least once): recorded as read, not kept.
    pub duplicates: u64,
}

impl Gathered {
    /// Whether every task has a result.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }

    /// Whether every task has a result and all of them are successes.
    pub fn all_succeeded(&self) -> bool {
        self.is_complete()
            && self
                .results
                .values()
                .all(|result| result.status == TaskStatus::Success)
    }
}

/// What [`Supervisor::run_pipeline`](super::Supervisor::run_pipeline) did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pipeline {
    /// The first stage's results.
    pub gathered: Gathered,
    /// The downstream tasks dispatched, in the order built.
    pub downstream: Vec<Dispatched>,
}
