//! Why a supervisor step failed.

use crate::producer::DispatchError;
use crate::{BoxError, Error, InvalidName};

/// Why [`Supervisor`](super::Supervisor) could not fan out, gather or run a
/// pipeline.
///
/// Nothing a failed step read is lost: results it had read but not
/// acknowledged are gathered by the next attempt (or, after a crash, by the
/// supervisor restarted under the same name). Dispatch is idempotent by task
/// id, so a fan-out that failed part way can be retried whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SupervisorError {
    /// A task's agent type cannot name a stream.
    #[error("invalid task: {0}")]
    InvalidTask(#[from] InvalidName),
    /// A task was not dispatched (`task_id` is `None` when the whole batch
    /// failed).
    #[error("dispatch of {} failed: {source}", task_id.as_deref().unwrap_or("the batch"))]
    Dispatch {
        /// The task that failed, if one did alone.
        task_id: Option<String>,
        /// Why.
        #[source]
        source: DispatchError,
    },
    /// The broker failed while reading or acknowledging results.
    #[error("supervisor broker call failed: {0}")]
    Broker(#[from] Error),
    /// Task `task_id` is already awaited by another workflow of this
    /// supervisor (`trace_id`): a task's result can only go to one.
    #[error("task {task_id} is already awaited by workflow {trace_id}")]
    TaskInOtherWorkflow {
        /// The task.
        task_id: String,
        /// The workflow awaiting it.
        trace_id: String,
    },
    /// Another gather of the same workflow is running on this supervisor.
    #[error("workflow {0} is already being gathered")]
    AlreadyGathering(String),
    /// The caller's closure could not build the downstream tasks.
    #[error("building the downstream tasks failed: {0}")]
    Downstream(#[source] BoxError),
}

impl SupervisorError {
    /// Whether retrying the same step may succeed (a connection or time-out
    /// failure of the broker).
    pub fn is_transient(&self) -> bool {
        match self {
            SupervisorError::Broker(err) => err.is_transient(),
            SupervisorError::Dispatch { source, .. } => source.is_transient(),
            _ => false,
        }
    }
}
