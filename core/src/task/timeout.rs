//! A task's own time-out: the optional `timeout_ms` field, which overrides
//! the worker's `task_timeout` for that task.
//!
//! The seed's Python workers ignore the field (pydantic drops unknown
//! fields), and a task they retry is written again without it.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// The task JSON's field: the time-out in whole milliseconds.
pub const TIMEOUT_FIELD: &str = "timeout_ms";

/// The longest time-out a task may ask for: a day. Leases are renewed while
/// it runs, so this bounds only a hung handler's hold on a slot.
pub const MAX_TASK_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// A task time-out outside `1 ms ..= 24 h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a task time-out of {0:?} is out of range: at least 1 ms, at most 24 h")]
pub struct TimeoutOutOfRange(pub Duration);

/// `timeout` if it is a task's valid time-out: whole milliseconds, at
/// least one, at most [`MAX_TASK_TIMEOUT`].
///
/// # Errors
///
/// [`TimeoutOutOfRange`] for zero, under a millisecond, or over a day.
pub fn check_timeout(timeout: Duration) -> Result<Duration, TimeoutOutOfRange> {
    if timeout < Duration::from_millis(1) || timeout > MAX_TASK_TIMEOUT {
        return Err(TimeoutOutOfRange(timeout));
    }
    Ok(timeout)
}

pub(crate) fn serialize<S: Serializer>(
    timeout: &Option<Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match timeout {
        Some(timeout) => s.serialize_u64(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
        None => s.serialize_none(),
    }
}

/// Reads `timeout_ms`, refusing what [`check_timeout`] refuses: a peer's
/// task asking for no time at all is poison, not a task without a limit.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let Some(ms) = Option::<u64>::deserialize(d)? else {
        return Ok(None);
    };
    check_timeout(Duration::from_millis(ms))
        .map(Some)
        .map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Task, TaskBuildError, WireErrorKind, task_from_fields, task_to_fields};
    use serde_json::{Value, json};

    #[test]
    fn a_task_timeout_is_written_in_ms_and_read_back() {
        let task = Task::new("research", "x", json!({}))
            .timeout(Duration::from_secs(90))
            .build()
            .expect("ok");
        let json = serde_json::to_value(&task).expect("json");
        assert_eq!(json[TIMEOUT_FIELD], json!(90_000));
        let back: Task = task_from_fields(&task_to_fields(&task).expect("fields")).expect("task");
        assert_eq!(back.timeout, Some(Duration::from_secs(90)));
    }

    #[test]
    fn a_task_without_a_timeout_writes_the_seeds_json_unchanged() {
        let task = Task::new("research", "x", json!({})).build().expect("ok");
        let json = serde_json::to_value(&task).expect("json");
        assert!(json.get(TIMEOUT_FIELD).is_none(), "{json}");
        let seed = r#"{"task_id":"t","agent_type":"a","action":"x"}"#;
        let task: Task = serde_json::from_str(seed).expect("seed task");
        assert_eq!(task.timeout, None);
    }

    #[test]
    fn timeouts_out_of_range_are_refused_on_build_and_decode() {
        for bad in [
            Duration::ZERO,
            Duration::from_micros(999),
            MAX_TASK_TIMEOUT + Duration::from_millis(1),
        ] {
            let err = Task::new("research", "x", json!({}))
                .timeout(bad)
                .build()
                .expect_err("out of range");
            assert_eq!(err, TaskBuildError::Timeout(TimeoutOutOfRange(bad)));
        }
        assert!(check_timeout(MAX_TASK_TIMEOUT).is_ok());
        assert!(check_timeout(Duration::from_millis(1)).is_ok());
        for ms in ["0", "86400001", "-5", "\"1s\""] {
            let json =
                format!(r#"{{"task_id":"t","agent_type":"a","action":"x","timeout_ms":{ms}}}"#);
            let fields = crate::Fields::new().with(crate::DATA_FIELD, json);
            let err = task_from_fields::<Value>(&fields).expect_err(ms);
            assert_eq!(err.kind(), WireErrorKind::InvalidTask, "{ms}: {err}");
        }
    }
}
