//! [`Task`]: a unit of work for an agent, with the JSON shape of the seed's
//! pydantic `AgentTask`.

use std::fmt;
use std::time::Duration;

use serde::de::value::MapDeserializer;
use serde::de::{DeserializeOwned, Error as _};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::keyspace::{AgentType, InvalidName};
use super::shape::{check_object, deserialize_object};
use super::time::now_isoformat;
use super::timeout::{TimeoutOutOfRange, check_timeout};
use super::wire::WireError;

/// A task's priority, `0..=10` (the seed's `Field(default=0, ge=0, le=10)`).
///
/// Out-of-range values cannot be built, so a [`Task`] always carries a
/// priority the seed's Python workers accept.
///
/// ```
/// use crewq_core::Priority;
/// assert_eq!(Priority::new(10)?.get(), 10);
/// assert_eq!(Priority::new(11).unwrap_err().to_string(), "priority 11 is out of range 0..=10");
/// # Ok::<(), crewq_core::PriorityOutOfRange>(())
/// ```
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(try_from = "i64", into = "u8")]
pub struct Priority(u8);

/// A priority outside `0..=10`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("priority {0} is out of range 0..=10")]
pub struct PriorityOutOfRange(pub i64);

impl Priority {
    /// The lowest priority, and the default.
    pub const MIN: Priority = Priority(0);
    /// The highest priority.
    pub const MAX: Priority = Priority(10);

    /// `value` as a priority.
    ///
    /// # Errors
    ///
    /// [`PriorityOutOfRange`] above 10.
    pub const fn new(value: u8) -> Result<Self, PriorityOutOfRange> {
        if value <= Self::MAX.0 {
            Ok(Priority(value))
        } else {
            Err(PriorityOutOfRange(value as i64))
        }
    }

    /// The value, `0..=10`.
    pub const fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<i64> for Priority {
    type Error = PriorityOutOfRange;
    fn try_from(value: i64) -> Result<Self, PriorityOutOfRange> {
        u8::try_from(value)
            .ok()
            .and_then(|v| Priority::new(v).ok())
            .ok_or(PriorityOutOfRange(value))
    }
}

impl From<Priority> for u8 {
    fn from(priority: Priority) -> u8 {
        priority.0
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The seed's default `max_retries`.
pub const DEFAULT_MAX_RETRIES: u32 = 3;

/// A unit of work for an agent: the seed's `AgentTask`, field for field.
///
/// Its JSON is exactly what the seed's pydantic model reads and writes:
/// `task_id, agent_type, action, payload, priority, max_retries, created_at,
/// trace_id`, in that order. Decoding applies the seed's defaults (`payload`
/// `{}`, `priority` 0, `max_retries` 3, `trace_id` null, `created_at` now)
/// and its rules: `payload` must be a JSON object, `priority` in `0..=10`,
/// the task itself an object. Unknown fields are ignored, as pydantic does.
///
/// `P` is the payload: [`Value`] (the default) keeps it as raw JSON; any
/// serde type reads it into the caller's struct. Encoding checks that the
/// payload is written as a JSON object, since the seed would refuse anything
/// else.
///
/// ```
/// use crewq_core::{Task, Fields};
/// use serde_json::json;
///
/// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
/// struct Analyze { repo: String }
///
/// let task = Task::new("research", "analyze", Analyze { repo: "r".into() })
///     .priority(5)
///     .trace_id("wf-1")
///     .build()?;
/// let fields: Fields = task.to_fields()?;
///
/// // A worker reads it back typed, or raw.
/// let typed: Task<Analyze> = Task::from_fields(&fields)?;
/// assert_eq!(typed.payload, Analyze { repo: "r".into() });
/// let raw: Task = Task::from_fields(&fields)?;
/// assert_eq!(raw.payload, json!({"repo": "r"}));
/// assert_eq!(raw.priority.get(), 5);
/// assert_eq!(raw.max_retries, 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(bound(serialize = "P: Serialize"))]
pub struct Task<P = Value> {
    /// Unique id, for deduplication.
    pub task_id: String,
    /// The agent type that runs it: `research`, `review` ...
    pub agent_type: String,
    /// What to do: `analyze`, `search` ...
    pub action: String,
    /// The task's data; written as a JSON object.
    #[serde(serialize_with = "serialize_payload")]
    pub payload: P,
    /// `0..=10`; the seed records it but does not order by it.
    pub priority: Priority,
    /// How many times a failed task is retried before it is dead-lettered:
    /// it runs at most `1 + max_retries` times.
    pub max_retries: u32,
    /// When it was created: Python's `isoformat()` of a UTC time.
    pub created_at: String,
    /// A correlation id across the tasks of one workflow.
    pub trace_id: Option<String>,
    /// How long one run may take, overriding the worker's `task_timeout`;
    /// `timeout_ms` in the JSON, left out when `None` (crewq's own field:
    /// the seed's workers ignore it).
    #[serde(
        rename = "timeout_ms",
        skip_serializing_if = "Option::is_none",
        serialize_with = "super::timeout::serialize"
    )]
    pub timeout: Option<Duration>,
}

fn serialize_payload<P: Serialize, S: Serializer>(payload: &P, s: S) -> Result<S::Ok, S::Error> {
    check_object(payload).map_err(|e| S::Error::custom(format!("payload must be {e}")))?;
    payload.serialize(s)
}

/// The task as it arrives: the seed's defaults not yet applied.
#[derive(Deserialize)]
#[serde(bound(deserialize = "P: Deserialize<'de>"))]
struct RawTask<P> {
    task_id: String,
    agent_type: String,
    action: String,
    #[serde(default, deserialize_with = "deserialize_payload")]
    payload: Option<P>,
    #[serde(default)]
    priority: Priority,
    #[serde(default = "default_max_retries")]
    max_retries: u32,
    #[serde(default = "now_isoformat")]
    created_at: String,
    #[serde(default)]
    trace_id: Option<String>,
    #[serde(
        default,
        rename = "timeout_ms",
        deserialize_with = "super::timeout::deserialize"
    )]
    timeout: Option<Duration>,
}

fn default_max_retries() -> u32 {
    DEFAULT_MAX_RETRIES
}

/// A present `payload` must be an object (`null` too is refused, as by
/// pydantic's `dict`); an absent one becomes the default.
fn deserialize_payload<'de, D, P>(d: D) -> Result<Option<P>, D::Error>
where
    D: Deserializer<'de>,
    P: Deserialize<'de>,
{
    deserialize_object(d, "the payload as a JSON object").map(Some)
}

impl<'de, P: Deserialize<'de>> Deserialize<'de> for Task<P> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: RawTask<P> = deserialize_object(d, "a task as a JSON object")?;
        let payload = match raw.payload {
            Some(payload) => payload,
            // The seed's `default_factory=dict`: the payload read from `{}`,
            // so a typed payload with required fields is refused here.
            None => P::deserialize(MapDeserializer::<_, D::Error>::new(std::iter::empty::<(
                &'de str,
                &'de str,
            )>()))
            .map_err(|e| D::Error::custom(format!("payload missing and {{}} does not fit: {e}")))?,
        };
        Ok(Task {
            task_id: raw.task_id,
            agent_type: raw.agent_type,
            action: raw.action,
            payload,
            priority: raw.priority,
            max_retries: raw.max_retries,
            created_at: raw.created_at,
            trace_id: raw.trace_id,
            timeout: raw.timeout,
        })
    }
}

impl<P> Task<P> {
    /// Starts a task for `agent_type` to do `action` with `payload`; the
    /// builder fills in a fresh `task_id` and `created_at`.
    ///
    /// The generated id is `<agent_type>-<uuid v4, 32 hex digits>`: the
    /// seed's `research-1a2b3c4d` shape, with the whole uuid rather than the
    /// seed's 8 hex digits (which collide after some tens of thousands of
    /// tasks).
    #[allow(
        clippy::new_ret_no_self,
        reason = "a task has required parts and checks; `Task::new(..).build()` reads as one step"
    )]
    pub fn new(
        agent_type: impl Into<String>,
        action: impl Into<String>,
        payload: P,
    ) -> TaskBuilder<P> {
        TaskBuilder {
            agent_type: agent_type.into(),
            action: action.into(),
            payload,
            priority: 0,
            max_retries: DEFAULT_MAX_RETRIES,
            task_id: None,
            created_at: None,
            trace_id: None,
            timeout: None,
        }
    }
}

impl Task<Value> {
    /// Reads the raw payload into `P`, keeping everything else.
    ///
    /// A worker can decode once as `Task<Value>`, run the agent type's
    /// validator on it, then convert.
    ///
    /// # Errors
    ///
    /// [`WireError::InvalidTask`] when the payload does not fit `P`.
    pub fn into_typed<P: DeserializeOwned>(self) -> Result<Task<P>, WireError> {
        let payload = serde_json::from_value(self.payload).map_err(|e| WireError::InvalidTask {
            message: format!("payload: {e}"),
        })?;
        Ok(Task {
            task_id: self.task_id,
            agent_type: self.agent_type,
            action: self.action,
            payload,
            priority: self.priority,
            max_retries: self.max_retries,
            created_at: self.created_at,
            trace_id: self.trace_id,
            timeout: self.timeout,
        })
    }
}

/// Builds a [`Task`]; made by [`Task::new`].
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until .build()"]
pub struct TaskBuilder<P> {
    agent_type: String,
    action: String,
    payload: P,
    priority: u8,
    max_retries: u32,
    task_id: Option<String>,
    created_at: Option<String>,
    trace_id: Option<String>,
    timeout: Option<Duration>,
}

impl<P> TaskBuilder<P> {
    /// `0..=10` (default 0); checked by [`build`](Self::build).
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// Failed attempts before dead-lettering (default 3).
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// A correlation id (default none).
    pub fn trace_id(mut self, trace_id: impl Into<String>) -> Self {
        self.trace_id = Some(trace_id.into());
        self
    }

    /// How long one run may take, overriding the worker's `task_timeout`
    /// (default: the worker's); checked by [`build`](Self::build): at least
    /// 1 ms, at most [`MAX_TASK_TIMEOUT`](crate::MAX_TASK_TIMEOUT), whole
    /// milliseconds (a finer part is dropped on the wire).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// This id instead of a generated one (for replays, or reproducible runs).
    pub fn task_id(mut self, task_id: impl Into<String>) -> Self {
        self.task_id = Some(task_id.into());
        self
    }

    /// This creation time instead of the wall clock now, for reproducible
    /// runs; see [`utc_isoformat`](crate::utc_isoformat) for the format.
    pub fn created_at(mut self, created_at: impl Into<String>) -> Self {
        self.created_at = Some(created_at.into());
        self
    }

    /// The task.
    ///
    /// # Errors
    ///
    /// [`TaskBuildError`] for a priority above 10, an agent type that cannot
    /// name a stream (see [`AgentType`]), or a payload that is not written
    /// as a JSON object.
    pub fn build(self) -> Result<Task<P>, TaskBuildError>
    where
        P: Serialize,
    {
        let priority = Priority::new(self.priority)?;
        let timeout = self.timeout.map(check_timeout).transpose()?;
        AgentType::new(self.agent_type.as_str())?;
        check_object(&self.payload).map_err(TaskBuildError::Payload)?;
        let task_id = self
            .task_id
            .unwrap_or_else(|| format!("{}-{}", self.agent_type, uuid::Uuid::new_v4().simple()));
        Ok(Task {
            task_id,
            agent_type: self.agent_type,
            action: self.action,
            payload: self.payload,
            priority,
            max_retries: self.max_retries,
            created_at: self.created_at.unwrap_or_else(now_isoformat),
            trace_id: self.trace_id,
            timeout,
        })
    }
}

/// Why [`TaskBuilder::build`] refused a task.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskBuildError {
    /// The priority is above 10.
    #[error(transparent)]
    Priority(#[from] PriorityOutOfRange),
    /// The agent type cannot name a stream.
    #[error(transparent)]
    AgentType(#[from] InvalidName),
    /// The payload is not written as a JSON object.
    #[error("payload must be {0}")]
    Payload(String),
    /// The time-out is zero or longer than a day.
    #[error(transparent)]
    Timeout(#[from] TimeoutOutOfRange),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode<P: DeserializeOwned>(json: &str) -> Result<Task<P>, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn decoding_applies_the_seed_defaults() {
        let task: Task = decode(r#"{"task_id":"t","agent_type":"a","action":"x"}"#).expect("ok");
        assert_eq!(task.payload, json!({}));
        assert_eq!(task.priority, Priority::MIN);
        assert_eq!(task.max_retries, 3);
        assert_eq!(task.trace_id, None);
        assert!(task.created_at.ends_with("+00:00"));
    }

    #[test]
    fn priority_out_of_range_is_refused_on_decode_and_build() {
        let err = decode::<Value>(r#"{"task_id":"t","agent_type":"a","action":"x","priority":11}"#)
            .expect_err("11");
        assert!(err.contains("priority 11 is out of range 0..=10"), "{err}");
        let err = decode::<Value>(r#"{"task_id":"t","agent_type":"a","action":"x","priority":-1}"#)
            .expect_err("-1");
        assert!(err.contains("priority -1 is out of range 0..=10"), "{err}");
        let err = Task::new("a", "x", json!({}))
            .priority(11)
            .build()
            .expect_err("11");
        assert_eq!(err, TaskBuildError::Priority(PriorityOutOfRange(11)));
        assert_eq!(err.to_string(), "priority 11 is out of range 0..=10");
    }

    #[test]
    fn payload_must_be_an_object_both_ways() {
        for payload in ["null", "[1]", "\"x\"", "3"] {
            let json =
                format!(r#"{{"task_id":"t","agent_type":"a","action":"x","payload":{payload}}}"#);
            let err = decode::<Value>(&json).expect_err(payload);
            assert!(
                err.contains("expected the payload as a JSON object"),
                "{err}"
            );
        }
        let err = Task::new("a", "x", json!([1])).build().expect_err("array");
        assert_eq!(
            err.to_string(),
            "payload must be a JSON object, not an array"
        );
        let task = Task {
            payload: json!("x"),
            ..Task::new("a", "x", json!({})).build().expect("ok")
        };
        let err = serde_json::to_string(&task).expect_err("string");
        assert!(
            err.to_string()
                .contains("payload must be a JSON object, not a string")
        );
    }

    #[test]
    fn a_task_is_an_object_not_an_array() {
        let err = decode::<Value>(r#"["t","a","x"]"#).expect_err("array");
        assert!(err.contains("expected a task as a JSON object"), "{err}");
    }

    #[test]
    fn typed_payloads_decode_into_the_callers_struct() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Search {
            query: String,
            #[serde(default)]
            limit: u32,
        }
        #[derive(Debug, PartialEq, Deserialize)]
        struct Empty {}
        let task: Task<Search> =
            decode(r#"{"task_id":"t","agent_type":"a","action":"x","payload":{"query":"q"}}"#)
                .expect("ok");
        assert_eq!(
            task.payload,
            Search {
                query: "q".into(),
                limit: 0
            }
        );
        // A missing payload is `{}`: fine for a struct without required fields ...
        let task: Task<Empty> =
            decode(r#"{"task_id":"t","agent_type":"a","action":"x"}"#).expect("ok");
        assert_eq!(task.payload, Empty {});
        // ... and refused for one with them.
        let err = decode::<Search>(r#"{"task_id":"t","agent_type":"a","action":"x"}"#)
            .expect_err("missing query");
        assert!(err.contains("missing field `query`"), "{err}");
    }

    #[test]
    fn builder_generates_an_id_and_a_time_and_checks_the_agent_type() {
        let a = Task::new("research", "x", json!({})).build().expect("ok");
        let b = Task::new("research", "x", json!({})).build().expect("ok");
        assert_ne!(a.task_id, b.task_id);
        assert!(a.task_id.starts_with("research-"), "{}", a.task_id);
        assert_eq!(a.task_id.len(), "research-".len() + 32);
        assert!(a.created_at.ends_with("+00:00"));
        let fixed = Task::new("research", "x", json!({}))
            .task_id("t-1")
            .created_at("2026-11-22T08:00:00+00:00")
            .max_retries(0)
            .build()
            .expect("ok");
        assert_eq!((fixed.task_id.as_str(), fixed.max_retries), ("t-1", 0));
        assert_eq!(fixed.created_at, "2026-11-22T08:00:00+00:00");
        let err = Task::new("re search", "x", json!({}))
            .build()
            .expect_err("space");
        assert!(matches!(err, TaskBuildError::AgentType(_)), "{err}");
    }

    #[test]
    fn into_typed_reads_the_raw_payload() {
        let raw = Task::new("a", "x", json!({"n": 1})).build().expect("ok");
        let typed: Task<std::collections::BTreeMap<String, u8>> =
            raw.clone().into_typed().expect("ok");
        assert_eq!(typed.payload.get("n"), Some(&1));
        let err = raw.into_typed::<Vec<u8>>().expect_err("not a list");
        assert!(matches!(err, WireError::InvalidTask { .. }), "{err}");
    }
}
