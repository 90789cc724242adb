//! [`TaskResult`]: the outcome of a task, with the JSON shape of the seed's
//! pydantic `TaskResult`.

use std::fmt;

use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::model::Task;
use super::shape::{check_object, deserialize_object};
use super::time::now_isoformat;

/// How a task ended; written `"success"`, `"failure"` or `"skipped"` (the
/// seed's `pattern="^(success|failure|skipped)$"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// The handler did the work.
    Success,
    /// The handler failed; `error` says why.
    Failure,
    /// The handler chose not to do the work.
    Skipped,
}

impl TaskStatus {
    /// The wire text: `success`, `failure` or `skipped`.
    pub const fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Success => "success",
            TaskStatus::Failure => "failure",
            TaskStatus::Skipped => "skipped",
        }
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one task: the seed's `TaskResult`, field for field.
///
/// Its JSON is `task_id, agent_type, status, output, error, duration_ms,
/// completed_at`, in that order, with the seed's defaults when decoding
/// (`output` and `error` null, `duration_ms` 0, `completed_at` now).
/// `output` is a JSON object or null, both ways, as the seed's
/// `Optional[dict]` requires.
///
/// ```
/// use crewq_core::{Task, TaskResult, TaskStatus};
/// use serde_json::json;
///
/// let task = Task::new("research", "analyze", json!({})).build()?;
/// let result = TaskResult::success(&task, json!({"files_analyzed": 47})).duration_ms(2003);
/// let fields = result.to_fields()?;
/// let back = TaskResult::from_fields(&fields)?;
/// assert_eq!(back.status, TaskStatus::Success);
/// assert_eq!(back.task_id, task.task_id);
/// assert_eq!(back.output, Some(json!({"files_analyzed": 47})));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TaskResult {
    /// The task's id.
    pub task_id: String,
    /// The task's agent type.
    pub agent_type: String,
    /// How it ended.
    pub status: TaskStatus,
    /// What the handler produced: a JSON object, or none.
    #[serde(serialize_with = "serialize_output")]
    pub output: Option<Value>,
    /// Why it failed.
    pub error: Option<String>,
    /// How long the handler ran, in milliseconds.
    pub duration_ms: u64,
    /// When it finished: Python's `isoformat()` of a UTC time.
    pub completed_at: String,
}

fn serialize_output<S: Serializer>(output: &Option<Value>, s: S) -> Result<S::Ok, S::Error> {
    if let Some(output) = output {
        check_object(output).map_err(|e| S::Error::custom(format!("output must be {e}")))?;
    }
    output.serialize(s)
}

/// The result as it arrives: the seed's defaults not yet applied.
#[derive(Deserialize)]
struct RawResult {
    task_id: String,
    agent_type: String,
    status: TaskStatus,
    #[serde(default, deserialize_with = "deserialize_output")]
    output: Option<Value>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    duration_ms: u64,
    #[serde(default = "now_isoformat")]
    completed_at: String,
}

fn deserialize_output<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    struct ObjectOrNull(Option<Value>);
    impl<'de> Deserialize<'de> for ObjectOrNull {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            deserialize_object(d, "the output as a JSON object").map(|v| ObjectOrNull(Some(v)))
        }
    }
    // `Option` maps null to `None` and hands anything else to ObjectOrNull.
    Ok(Option::<ObjectOrNull>::deserialize(d)?.and_then(|o| o.0))
}

impl<'de> Deserialize<'de> for TaskResult {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: RawResult = deserialize_object(d, "a task result as a JSON object")?;
        Ok(TaskResult {
            task_id: raw.task_id,
            agent_type: raw.agent_type,
            status: raw.status,
            output: raw.output,
            error: raw.error,
            duration_ms: raw.duration_ms,
            completed_at: raw.completed_at,
        })
    }
}

impl TaskResult {
    /// A result of `task` with `status`, completed now, nothing else set.
    pub fn new<P>(task: &Task<P>, status: TaskStatus) -> Self {
        TaskResult {
            task_id: task.task_id.clone(),
            agent_type: task.agent_type.clone(),
            status,
            output: None,
            error: None,
            duration_ms: 0,
            completed_at: now_isoformat(),
        }
    }

    /// `task` succeeded with `output` (a JSON object).
    pub fn success<P>(task: &Task<P>, output: Value) -> Self {
        TaskResult {
            output: Some(output),
            ..TaskResult::new(task, TaskStatus::Success)
        }
    }

    /// `task` failed with `error`.
    pub fn failure<P>(task: &Task<P>, error: impl Into<String>) -> Self {
        TaskResult {
            error: Some(error.into()),
            ..TaskResult::new(task, TaskStatus::Failure)
        }
    }

    /// `task` was skipped.
    pub fn skipped<P>(task: &Task<P>) -> Self {
        TaskResult::new(task, TaskStatus::Skipped)
    }

    /// Sets how long the handler ran.
    #[must_use]
    pub fn duration_ms(mut self, duration_ms: u64) -> Self {
        self.duration_ms = duration_ms;
        self
    }

    /// Sets when it finished (instead of the wall clock at creation).
    #[must_use]
    pub fn completed_at(mut self, completed_at: impl Into<String>) -> Self {
        self.completed_at = completed_at.into();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode(json: &str) -> Result<TaskResult, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn status_is_lowercase_text_and_nothing_else() {
        let json = serde_json::to_string(&[
            TaskStatus::Success,
            TaskStatus::Failure,
            TaskStatus::Skipped,
        ]);
        assert_eq!(
            json.ok().as_deref(),
            Some(r#"["success","failure","skipped"]"#)
        );
        for bad in ["SUCCESS", "done", "success\n"] {
            let json = format!(r#"{{"task_id":"t","agent_type":"a","status":{bad:?}}}"#);
            assert!(decode(&json).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn decoding_applies_the_seed_defaults() {
        let r = decode(r#"{"task_id":"t","agent_type":"a","status":"skipped"}"#).expect("ok");
        assert_eq!((r.output, r.error, r.duration_ms), (None, None, 0));
        assert!(r.completed_at.ends_with("+00:00"));
    }

    #[test]
    fn output_is_an_object_or_null_both_ways() {
        let ok = decode(r#"{"task_id":"t","agent_type":"a","status":"success","output":null}"#);
        assert_eq!(ok.expect("null").output, None);
        let err = decode(r#"{"task_id":"t","agent_type":"a","status":"success","output":[1]}"#)
            .expect_err("list");
        assert!(
            err.contains("expected the output as a JSON object"),
            "{err}"
        );
        let task = Task::new("a", "x", json!({})).build().expect("ok");
        let bad = TaskResult::success(&task, json!([1]));
        let err = serde_json::to_string(&bad).expect_err("list");
        assert!(
            err.to_string()
                .contains("output must be a JSON object, not an array")
        );
    }

    #[test]
    fn constructors_copy_the_task_identity() {
        let task = Task::new("review", "x", json!({})).build().expect("ok");
        let r = TaskResult::failure(&task, "boom")
            .duration_ms(7)
            .completed_at("t");
        assert_eq!(
            (r.task_id.as_str(), r.agent_type.as_str()),
            (task.task_id.as_str(), "review")
        );
        assert_eq!(
            (r.status, r.error.as_deref(), r.duration_ms),
            (TaskStatus::Failure, Some("boom"), 7)
        );
        assert_eq!(TaskResult::skipped(&task).status, TaskStatus::Skipped);
    }
}
