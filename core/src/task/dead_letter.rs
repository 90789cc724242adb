//! [`DeadLetter`]: a dead-letter stream entry, readable by the seed's
//! `recovery.py` and carrying crewq's metadata beside it.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::model::Task;
use super::wire::{WireError, WireErrorKind, decode_json};
use crate::{Fields, StreamId};

/// Field: the task's JSON, as it was in the task entry's `data`.
pub const DLQ_TASK: &str = "task";
/// Field: the last error.
pub const DLQ_ERROR: &str = "error";
/// Field: failed attempts, in decimal.
pub const DLQ_RETRIES: &str = "retries";
/// Field: why it was dead-lettered ([`DeadLetterReason`]).
pub const DLQ_REASON: &str = "reason";
/// Field: the task stream the entry came from.
///
/// Not `stream`: the seed's `DLQRecovery.list_dlq` returns each entry as
/// `{"stream": <dlq key>, "msg_id": ..., **fields}`, so a field named
/// `stream` overwrote the dead-letter stream's key, and the seed's
/// `replay(entry["stream"], entry["msg_id"], ...)` then looked in the task
/// stream, found nothing and silently replayed nothing.
pub const DLQ_ORIGIN_STREAM: &str = "origin_stream";
/// The name crewq wrote the origin stream under before
/// [`DLQ_ORIGIN_STREAM`]: still read, never written.
const DLQ_LEGACY_STREAM: &str = "stream";
/// Field: the entry's id in that stream.
pub const DLQ_ENTRY_ID: &str = "entry_id";
/// Field: the consumer group it was read in.
pub const DLQ_GROUP: &str = "group";
/// Field: the consumer that dead-lettered it.
pub const DLQ_CONSUMER: &str = "consumer";
/// Field: when, as Python's `isoformat()` of a UTC time.
pub const DLQ_DEAD_LETTERED_AT: &str = "dead_lettered_at";

const POISON_PREFIX: &str = "poison:";
const REJECTED: &str = "rejected";
const MAX_RETRIES: &str = "max_retries";
const MAX_DELIVERIES: &str = "max_deliveries";
const DELETED_WHILE_PENDING: &str = "deleted_while_pending";
const WRONG_AGENT_TYPE: &str = "wrong_agent_type";
const PANICKED: &str = "panicked";
const INVALID_ATTEMPTS: &str = "invalid_attempts";
const NON_RETRYABLE: &str = "non_retryable";

/// Why an entry was dead-lettered: the `reason` field.
///
/// ```
/// use crewq_core::{DeadLetterReason, WireErrorKind};
/// assert_eq!(DeadLetterReason::MaxRetries.to_string(), "max_retries");
/// let poison = DeadLetterReason::Poison(WireErrorKind::InvalidJson);
/// assert_eq!(poison.to_string(), "poison:invalid_json");
/// assert_eq!("poison:invalid_json".parse::<DeadLetterReason>(), Ok(poison));
/// assert_eq!(DeadLetterReason::Rejected.to_string(), "poison:rejected");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadLetterReason {
    /// `max_retries`: every attempt failed.
    MaxRetries,
    /// `poison:<kind>`: the entry could not be decoded, so it was never run.
    Poison(WireErrorKind),
    /// `poison:rejected`: the agent type's validator refused the task.
    Rejected,
    /// `max_deliveries`: the entry was delivered more often than the
    /// worker's `max_deliveries` without any delivery ending in an outcome
    /// (each took its worker down, or was handed back): a crash loop. Not
    /// failed runs, which [`DeadLetterReason::MaxRetries`] counts.
    MaxDeliveries,
    /// `deleted_while_pending`: the entry was removed from its stream (a
    /// trim, an `XDEL`) while a consumer held it; the dead letter keeps what
    /// was known of it.
    DeletedWhilePending,
    /// `poison:wrong_agent_type`: the task's `agent_type` is not the agent
    /// type of the stream it was read from (or not a valid name at all).
    WrongAgentType,
    /// `poison:panicked`: reading or checking the entry panicked outside the
    /// handler (a validator, the payload's decoding).
    Panicked,
    /// `poison:invalid_attempts`: the entry's `attempts` field is not a count
    /// of failed runs.
    InvalidAttempts,
    /// `non_retryable`: the handler failed with an error no retry can fix
    /// ([`NonRetryable`](crate::worker::NonRetryable)), dead-lettered at
    /// its first failure.
    NonRetryable,
    /// Any other text, kept as it was.
    Other(String),
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeadLetterReason::MaxRetries => f.write_str(MAX_RETRIES),
            DeadLetterReason::Poison(kind) => write!(f, "{POISON_PREFIX}{kind}"),
            DeadLetterReason::Rejected => write!(f, "{POISON_PREFIX}{REJECTED}"),
            DeadLetterReason::MaxDeliveries => f.write_str(MAX_DELIVERIES),
            DeadLetterReason::DeletedWhilePending => f.write_str(DELETED_WHILE_PENDING),
            DeadLetterReason::WrongAgentType => write!(f, "{POISON_PREFIX}{WRONG_AGENT_TYPE}"),
            DeadLetterReason::Panicked => write!(f, "{POISON_PREFIX}{PANICKED}"),
            DeadLetterReason::InvalidAttempts => write!(f, "{POISON_PREFIX}{INVALID_ATTEMPTS}"),
            DeadLetterReason::NonRetryable => f.write_str(NON_RETRYABLE),
            DeadLetterReason::Other(text) => f.write_str(text),
        }
    }
}

impl FromStr for DeadLetterReason {
    type Err = std::convert::Infallible;
    /// Never fails: unknown text reads as [`DeadLetterReason::Other`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            MAX_RETRIES => DeadLetterReason::MaxRetries,
            MAX_DELIVERIES => DeadLetterReason::MaxDeliveries,
            DELETED_WHILE_PENDING => DeadLetterReason::DeletedWhilePending,
            NON_RETRYABLE => DeadLetterReason::NonRetryable,
            _ => match s.strip_prefix(POISON_PREFIX) {
                Some(REJECTED) => DeadLetterReason::Rejected,
                Some(WRONG_AGENT_TYPE) => DeadLetterReason::WrongAgentType,
                Some(PANICKED) => DeadLetterReason::Panicked,
                Some(INVALID_ATTEMPTS) => DeadLetterReason::InvalidAttempts,
                Some(kind) => match kind.parse() {
                    Ok(kind) => DeadLetterReason::Poison(kind),
                    Err(()) => DeadLetterReason::Other(s.to_owned()),
                },
                None => DeadLetterReason::Other(s.to_owned()),
            },
        })
    }
}

/// Where a dead-lettered entry was read: its stream, id, group and consumer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The task stream.
    pub stream: String,
    /// The entry's id in it.
    pub entry_id: StreamId,
    /// The consumer group it was read in.
    pub group: String,
    /// The consumer that dead-lettered it.
    pub consumer: String,
}

/// A dead-letter stream entry.
///
/// Its first fields are the seed's own, which the seed's `recovery.py`
/// replays from (`json.loads(msg_data["task"])`): `task` (the task JSON),
/// `error`, `retries`. crewq adds `reason`, `origin_stream`, `entry_id`, `group`,
/// `consumer` and `dead_lettered_at`. Entries written by the seed have only
/// the first three, so the rest read as `None`; fields crewq does not know
/// are ignored.
///
/// `task` holds the bytes of the original entry's `data` exactly, re-encoded
/// by nobody: a poison entry (bad JSON, a priority of 11 ...) is kept as it
/// arrived, for an operator to inspect or fix; it is empty when the entry
/// had no `data` at all.
///
/// ```
/// use crewq_core::{DeadLetter, DeadLetterReason, Origin, StreamId, Task};
/// use serde_json::json;
///
/// let task = Task::new("research", "analyze", json!({})).build()?;
/// let data = task.to_fields()?.get("data").cloned().unwrap_or_default();
/// let letter = DeadLetter::new(data, "handler failed 3 times", 3)
///     .reason(DeadLetterReason::MaxRetries)
///     .origin(Origin {
///         stream: "agent:tasks:research".into(),
///         entry_id: StreamId::new(1_700_000_000_000, 0),
///         group: "research-workers".into(),
///         consumer: "worker-1".into(),
///     })
///     .dead_lettered_at("2026-11-22T08:00:00.123456+00:00");
/// let fields = letter.to_fields();
/// assert_eq!(fields.get_str("retries"), Some("3"));
/// assert_eq!(fields.get_str("reason"), Some("max_retries"));
///
/// let back = DeadLetter::from_fields(&fields)?;
/// assert_eq!(back, letter);
/// assert_eq!(back.decode_task::<serde_json::Value>()?.task_id, task.task_id);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The task's JSON, verbatim (field `task`).
    pub task: Bytes,
    /// The last error (field `error`).
    pub error: String,
    /// Failed attempts (field `retries`).
    pub retries: u32,
    /// Why (field `reason`); `None` in entries the seed wrote.
    pub reason: Option<DeadLetterReason>,
    /// Where it was read (fields `origin_stream`, `entry_id`, `group`, `consumer`);
    /// `None` unless all four are present.
    pub origin: Option<Origin>,
    /// When (field `dead_lettered_at`).
    pub dead_lettered_at: Option<String>,
}

impl DeadLetter {
    /// A dead letter with the seed's three fields and no metadata yet.
    pub fn new(task: impl Into<Bytes>, error: impl Into<String>, retries: u32) -> Self {
        DeadLetter {
            task: task.into(),
            error: error.into(),
            retries,
            reason: None,
            origin: None,
            dead_lettered_at: None,
        }
    }

    /// Sets the reason.
    #[must_use]
    pub fn reason(mut self, reason: DeadLetterReason) -> Self {
        self.reason = Some(reason);
        self
    }

    /// Sets where the entry was read.
    #[must_use]
    pub fn origin(mut self, origin: Origin) -> Self {
        self.origin = Some(origin);
        self
    }

    /// Sets when it was dead-lettered (see [`utc_isoformat`](crate::utc_isoformat)).
    #[must_use]
    pub fn dead_lettered_at(mut self, at: impl Into<String>) -> Self {
        self.dead_lettered_at = Some(at.into());
        self
    }

    /// The entry fields: `task`, `error`, `retries`, then whichever of
    /// `reason`, `origin_stream`, `entry_id`, `group`, `consumer`,
    /// `dead_lettered_at` are set.
    ///
    /// There is no size limit here: an oversized task must still be
    /// dead-lettered.
    pub fn to_fields(&self) -> Fields {
        let mut fields = Fields::new()
            .with(DLQ_TASK, self.task.clone())
            .with(DLQ_ERROR, self.error.clone())
            // redis-py writes the seed's int `retry_count` as decimal text.
            .with(DLQ_RETRIES, self.retries.to_string());
        if let Some(reason) = &self.reason {
            fields.push(DLQ_REASON, reason.to_string());
        }
        if let Some(origin) = &self.origin {
            fields.push(DLQ_ORIGIN_STREAM, origin.stream.clone());
            fields.push(DLQ_ENTRY_ID, origin.entry_id.to_string());
            fields.push(DLQ_GROUP, origin.group.clone());
            fields.push(DLQ_CONSUMER, origin.consumer.clone());
        }
        if let Some(at) = &self.dead_lettered_at {
            fields.push(DLQ_DEAD_LETTERED_AT, at.clone());
        }
        fields
    }

    /// Reads a dead-letter entry, the seed's or crewq's.
    ///
    /// # Errors
    ///
    /// [`WireError::MissingData`] without `task`;
    /// [`WireError::InvalidDeadLetter`] when `error` or `retries` is missing,
    /// `retries` is not a non-negative integer, `entry_id` is not a stream
    /// id, or a text field is not UTF-8.
    pub fn from_fields(fields: &Fields) -> Result<Self, WireError> {
        let task = fields
            .get(DLQ_TASK)
            .cloned()
            .ok_or(WireError::MissingData { field: DLQ_TASK })?;
        let error = text(fields, DLQ_ERROR)?.ok_or_else(|| missing(DLQ_ERROR))?;
        let retries = text(fields, DLQ_RETRIES)?.ok_or_else(|| missing(DLQ_RETRIES))?;
        let retries = retries.parse().map_err(|_| WireError::InvalidDeadLetter {
            message: format!("`{DLQ_RETRIES}` is not a count of attempts: {retries:?}"),
        })?;
        let reason = text(fields, DLQ_REASON)?.map(|r| match r.parse() {
            Ok(reason) => reason,
            Err(never) => match never {},
        });
        let origin = match (
            match text(fields, DLQ_ORIGIN_STREAM)? {
                Some(stream) => Some(stream),
                None => text(fields, DLQ_LEGACY_STREAM)?,
            },
            text(fields, DLQ_ENTRY_ID)?,
            text(fields, DLQ_GROUP)?,
            text(fields, DLQ_CONSUMER)?,
        ) {
            (Some(stream), Some(id), Some(group), Some(consumer)) => Some(Origin {
                stream: stream.to_owned(),
                entry_id: id.parse().map_err(|_| WireError::InvalidDeadLetter {
                    message: format!("`{DLQ_ENTRY_ID}` is not a stream id: {id:?}"),
                })?,
                group: group.to_owned(),
                consumer: consumer.to_owned(),
            }),
            _ => None,
        };
        Ok(DeadLetter {
            task,
            error: error.to_owned(),
            retries,
            reason,
            origin,
            dead_lettered_at: text(fields, DLQ_DEAD_LETTERED_AT)?.map(str::to_owned),
        })
    }

    /// Decodes the dead-lettered task (for a replay).
    ///
    /// # Errors
    ///
    /// [`WireError::InvalidJson`] or [`WireError::InvalidTask`] as for a task
    /// entry (a poison task stays poison); no size limit applies.
    pub fn decode_task<P: DeserializeOwned>(&self) -> Result<Task<P>, WireError> {
        decode_json(DLQ_TASK, &self.task, |message| WireError::InvalidTask {
            message,
        })
    }
}

fn missing(field: &str) -> WireError {
    WireError::InvalidDeadLetter {
        message: format!("no `{field}` field"),
    }
}

fn text<'f>(fields: &'f Fields, field: &str) -> Result<Option<&'f str>, WireError> {
    fields
        .get(field)
        .map(|v| {
            std::str::from_utf8(v).map_err(|_| WireError::InvalidDeadLetter {
                message: format!("`{field}` is not UTF-8"),
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_back_from_their_text() {
        let reasons = [
            DeadLetterReason::MaxRetries,
            DeadLetterReason::Rejected,
            DeadLetterReason::MaxDeliveries,
            DeadLetterReason::DeletedWhilePending,
            DeadLetterReason::WrongAgentType,
            DeadLetterReason::Panicked,
            DeadLetterReason::InvalidAttempts,
            DeadLetterReason::NonRetryable,
            DeadLetterReason::Poison(WireErrorKind::MissingData),
            DeadLetterReason::Poison(WireErrorKind::InvalidJson),
            DeadLetterReason::Poison(WireErrorKind::InvalidTask),
            DeadLetterReason::Poison(WireErrorKind::Oversized),
            DeadLetterReason::Other("shutdown".into()),
            DeadLetterReason::Other("poison:unheard_of".into()),
        ];
        for reason in reasons {
            assert_eq!(reason.to_string().parse::<DeadLetterReason>(), Ok(reason));
        }
    }

    #[test]
    fn a_seed_entry_reads_without_metadata() {
        let fields = Fields::new()
            .with("task", "{}")
            .with("error", "boom")
            .with("retries", "3");
        let letter = DeadLetter::from_fields(&fields).expect("ok");
        assert_eq!(letter, DeadLetter::new("{}", "boom", 3));
        assert_eq!(letter.to_fields(), fields);
    }

    #[test]
    fn a_poison_task_is_kept_verbatim_even_when_it_is_not_json() {
        let letter = DeadLetter::new("{not json", "bad", 0)
            .reason(DeadLetterReason::Poison(WireErrorKind::InvalidJson));
        let back = DeadLetter::from_fields(&letter.to_fields()).expect("ok");
        assert_eq!(&back.task[..], b"{not json");
        let err = back
            .decode_task::<serde_json::Value>()
            .expect_err("poison stays poison");
        assert_eq!(err.kind(), WireErrorKind::InvalidJson);
    }

    #[test]
    fn unreadable_fields_are_invalid_dead_letters() {
        let base = || Fields::new().with("task", "{}").with("error", "e");
        let kind = |f: &Fields| DeadLetter::from_fields(f).err().map(|e| e.kind());
        assert_eq!(
            kind(&Fields::new().with("error", "e").with("retries", "1")),
            Some(WireErrorKind::MissingData)
        );
        assert_eq!(kind(&base()), Some(WireErrorKind::InvalidDeadLetter));
        assert_eq!(
            kind(&base().with("retries", "-1")),
            Some(WireErrorKind::InvalidDeadLetter)
        );
        assert_eq!(
            kind(&base().with("retries", "x")),
            Some(WireErrorKind::InvalidDeadLetter)
        );
        let bad_id = base()
            .with("retries", "1")
            .with("origin_stream", "s")
            .with("entry_id", "nope")
            .with("group", "g")
            .with("consumer", "c");
        assert_eq!(kind(&bad_id), Some(WireErrorKind::InvalidDeadLetter));
        let not_utf8 = base().with("retries", "1").with("reason", &b"\xff"[..]);
        assert_eq!(kind(&not_utf8), Some(WireErrorKind::InvalidDeadLetter));
    }

    #[test]
    fn the_origin_stream_field_does_not_collide_with_the_seeds_list_dlq() {
        let letter = DeadLetter::new("{}", "e", 1).origin(Origin {
            stream: "agent:tasks:research".into(),
            entry_id: StreamId::new(1, 2),
            group: "research-workers".into(),
            consumer: "w1".into(),
        });
        let fields = letter.to_fields();
        // What the seed's list_dlq builds: {"stream": key, "msg_id": id, **fields}.
        let mut seed_view = std::collections::BTreeMap::new();
        seed_view.insert("stream".to_owned(), "agent:dlq:research".to_owned());
        seed_view.insert("msg_id".to_owned(), "5-0".to_owned());
        for (name, value) in fields.iter() {
            let name = String::from_utf8_lossy(name).into_owned();
            seed_view.insert(name, String::from_utf8_lossy(value).into_owned());
        }
        assert_eq!(
            seed_view["stream"], "agent:dlq:research",
            "still the DLQ key"
        );
        assert_eq!(seed_view["msg_id"], "5-0");
        assert_eq!(seed_view["origin_stream"], "agent:tasks:research");
    }

    #[test]
    fn a_letter_with_the_old_stream_field_still_reads_its_origin() {
        let fields = Fields::new()
            .with("task", "{}")
            .with("error", "e")
            .with("retries", "1")
            .with("stream", "agent:tasks:research")
            .with("entry_id", "1-2")
            .with("group", "g")
            .with("consumer", "c");
        let letter = DeadLetter::from_fields(&fields).expect("reads");
        let origin = letter.origin.expect("an origin");
        assert_eq!(origin.stream, "agent:tasks:research");
        assert_eq!(origin.entry_id, StreamId::new(1, 2));
    }
}
