//! [`Validators`]: an optional check per agent type that producers run
//! before dispatching a task and workers before running one.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use super::keyspace::AgentType;
use super::model::Task;

/// A validator: `Ok(())` to accept a task, `Err(reason)` to refuse it.
pub type ValidateFn = dyn Fn(&Task<Value>) -> Result<(), String> + Send + Sync;

/// A task that its agent type's validator refused.
///
/// A producer returns it instead of dispatching; a worker dead-letters the
/// task with reason [`Rejected`](crate::DeadLetterReason::Rejected), since
/// running it again would be refused again.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("task {task_id} rejected by the {agent_type} validator: {reason}")]
pub struct Rejected {
    /// The task's id.
    pub task_id: String,
    /// Its agent type.
    pub agent_type: String,
    /// What the validator said.
    pub reason: String,
}

/// The validators of some agent types; agent types without one accept every
/// task.
///
/// Validators see the task with its raw payload (`Task<Value>`), so one
/// registry serves every payload type. Cloning is cheap (validators are
/// shared), so each worker can hold its own copy.
///
/// ```
/// use crewq_core::{AgentType, Task, Validators};
/// use serde_json::json;
///
/// let validators = Validators::new().with(AgentType::new("research")?, |task| {
///     match task.payload.get("repo") {
///         Some(_) => Ok(()),
///         None => Err("payload needs a repo".to_owned()),
///     }
/// });
///
/// let good = Task::new("research", "analyze", json!({"repo": "r"})).build()?;
/// assert!(validators.validate(&good).is_ok());
/// let bad = Task::new("research", "analyze", json!({})).build()?;
/// assert_eq!(validators.validate(&bad).unwrap_err().reason, "payload needs a repo");
/// // No validator for `review`: everything passes.
/// assert!(validators.validate(&Task::new("review", "x", json!({})).build()?).is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct Validators {
    by_agent: BTreeMap<AgentType, Arc<ValidateFn>>,
}

impl Validators {
    /// No validators.
    pub fn new() -> Self {
        Validators::default()
    }

    /// Adds (or replaces) the validator of `agent`, returning `self`.
    #[must_use]
    pub fn with(
        mut self,
        agent: AgentType,
        validate: impl Fn(&Task<Value>) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.insert(agent, validate);
        self
    }

    /// Adds (or replaces) the validator of `agent`.
    pub fn insert(
        &mut self,
        agent: AgentType,
        validate: impl Fn(&Task<Value>) -> Result<(), String> + Send + Sync + 'static,
    ) {
        self.by_agent.insert(agent, Arc::new(validate));
    }

    /// Removes the validator of `agent`; whether there was one.
    pub fn remove(&mut self, agent: &str) -> bool {
        self.by_agent.remove(agent).is_some()
    }

    /// The validator of `agent`, if it has one.
    pub fn get(&self, agent: &str) -> Option<&Arc<ValidateFn>> {
        self.by_agent.get(agent)
    }

    /// Runs the validator of the task's agent type, if any.
    ///
    /// # Errors
    ///
    /// [`Rejected`] with the validator's reason.
    pub fn validate(&self, task: &Task<Value>) -> Result<(), Rejected> {
        let Some(validate) = self.get(&task.agent_type) else {
            return Ok(());
        };
        validate(task).map_err(|reason| Rejected {
            task_id: task.task_id.clone(),
            agent_type: task.agent_type.clone(),
            reason,
        })
    }

    /// How many agent types have a validator.
    pub fn len(&self) -> usize {
        self.by_agent.len()
    }

    /// Whether no agent type has one.
    pub fn is_empty(&self) -> bool {
        self.by_agent.is_empty()
    }
}

impl fmt::Debug for Validators {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.by_agent.keys()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn agent(name: &str) -> AgentType {
        AgentType::new(name).expect("valid")
    }

    fn task(agent_type: &str, payload: Value) -> Task {
        Task::new(agent_type, "x", payload)
            .task_id("t-1")
            .build()
            .expect("valid")
    }

    #[test]
    fn agent_types_without_a_validator_accept_everything() {
        let validators = Validators::new();
        assert!(validators.is_empty());
        assert_eq!(validators.validate(&task("research", json!({}))), Ok(()));
    }

    #[test]
    fn a_refusal_names_the_task_the_agent_type_and_the_reason() {
        let validators = Validators::new()
            .with(agent("research"), |t| {
                if t.action == "x" {
                    Err("no x".into())
                } else {
                    Ok(())
                }
            })
            .with(agent("review"), |_| Ok(()));
        assert_eq!(validators.len(), 2);
        let err = validators
            .validate(&task("research", json!({})))
            .expect_err("refused");
        assert_eq!(
            err,
            Rejected {
                task_id: "t-1".into(),
                agent_type: "research".into(),
                reason: "no x".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "task t-1 rejected by the research validator: no x"
        );
        assert_eq!(validators.validate(&task("review", json!({}))), Ok(()));
        assert_eq!(
            format!("{validators:?}"),
            r#"{AgentType("research"), AgentType("review")}"#
        );
    }

    #[test]
    fn validators_can_be_replaced_removed_and_shared_across_threads() {
        let mut validators = Validators::new().with(agent("a"), |_| Err("first".into()));
        validators.insert(agent("a"), |_| Err("second".into()));
        let shared = validators.clone();
        let reason = std::thread::spawn(move || shared.validate(&task("a", json!({}))))
            .join()
            .expect("thread")
            .map_err(|e| e.reason);
        assert_eq!(reason, Err("second".into()));
        assert!(validators.remove("a"));
        assert!(!validators.remove("a"));
        assert!(validators.get("a").is_none());
    }
}
