//! Which dead letters an operation selects, what a listed one looks like,
//! and reading a stream page by page.

use std::ops::Bound;

use serde::Deserialize;
use serde_json::Value;

use crate::{
    AgentType, Broker, DLQ_REASON, DLQ_TASK, DeadLetter, Fields, StreamEntry, StreamId, Task,
};

/// Selects dead letters: which agent types' streams to read, and optionally
/// a reason, a trace id and a limit.
///
/// The agent types are required because the [`Broker`] cannot list keys:
/// each names one dead-letter stream.
///
/// ```
/// use crewq_core::AgentType;
/// use crewq_core::dlq::DlqFilter;
/// let filter = DlqFilter::new([AgentType::new("research")?, AgentType::new("review")?])
///     .reason("poison")
///     .trace_id("wf-7")
///     .limit(100);
/// assert_eq!(filter.agent_types.len(), 2);
/// assert_eq!(filter.reason.as_deref(), Some("poison"));
/// # Ok::<(), crewq_core::InvalidName>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DlqFilter {
    /// The agent types whose dead-letter streams are read, in this order.
    pub agent_types: Vec<AgentType>,
    /// Only entries whose `reason` field starts with this text: `poison`
    /// selects every `poison:<kind>`, `max_retries` the exhausted ones.
    /// Entries without a `reason` (the seed's) never match.
    pub reason: Option<String>,
    /// Only entries whose task JSON has this `trace_id`. Read from the JSON
    /// even when the task is not otherwise valid, so the poison entries of a
    /// workflow are found too.
    pub trace_id: Option<String>,
    /// At most this many entries.
    pub limit: Option<usize>,
}

impl DlqFilter {
    /// How many entries one `XRANGE` reads.
    pub const PAGE_SIZE: usize = 500;

    /// Every dead letter of `agent_types`.
    pub fn new(agent_types: impl IntoIterator<Item = AgentType>) -> Self {
        DlqFilter {
            agent_types: agent_types.into_iter().collect(),
            ..DlqFilter::default()
        }
    }

    /// Only entries whose reason starts with `prefix`.
    #[must_use]
    pub fn reason(mut self, prefix: impl Into<String>) -> Self {
        self.reason = Some(prefix.into());
        self
    }

    /// Only entries whose task has trace id `trace_id`.
    #[must_use]
    pub fn trace_id(mut self, trace_id: impl Into<String>) -> Self {
        self.trace_id = Some(trace_id.into());
        self
    }

    /// At most `limit` entries.
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Whether a dead-letter entry's fields pass the reason and trace id
    /// tests. Reads only the fields it needs, so an entry that is not a
    /// readable dead letter can still be selected (and purged).
    pub(super) fn matches(&self, fields: &Fields) -> bool {
        if let Some(prefix) = &self.reason
            && !fields
                .get_str(DLQ_REASON)
                .is_some_and(|reason| reason.starts_with(prefix.as_str()))
        {
            return false;
        }
        if let Some(wanted) = &self.trace_id {
            let task = fields.get(DLQ_TASK).map_or(&[][..], |task| &task[..]);
            return trace_id_of(task).as_deref() == Some(wanted.as_str());
        }
        true
    }
}

/// The `trace_id` of a task's JSON, whatever else is wrong with it.
fn trace_id_of(task: &[u8]) -> Option<String> {
    /// Just the trace id; serde skips the other fields.
    #[derive(Deserialize)]
    struct TraceOnly {
        trace_id: Option<String>,
    }
    serde_json::from_slice::<TraceOnly>(task).ok()?.trace_id
}

/// One dead letter as [`DeadLetters::list`](super::DeadLetters::list) and
/// [`DeadLetters::inspect`](super::DeadLetters::inspect) return it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterEntry {
    /// The agent type whose dead-letter stream holds it.
    pub agent_type: AgentType,
    /// That stream's key.
    pub dlq_stream: String,
    /// The entry's id in it (what [`replay`](super::DeadLetters::replay)
    /// takes).
    pub entry_id: StreamId,
    /// The entry, read.
    pub dead_letter: DeadLetter,
    /// The dead-lettered task, decoded; `None` when its bytes are not a
    /// valid task (a poison entry, which cannot be replayed).
    pub task: Option<Task<Value>>,
}

/// Reads one stream, oldest first, a page at a time, up to a fixed last id.
#[derive(Debug)]
pub(crate) struct Pages<'s> {
    stream: &'s str,
    start: Bound<StreamId>,
    end: StreamId,
    done: bool,
}

impl<'s> Pages<'s> {
    /// Pages over `stream` up to and including `end`.
    pub(crate) fn new(stream: &'s str, end: StreamId) -> Self {
        Pages {
            stream,
            start: Bound::Unbounded,
            end,
            done: false,
        }
    }

    /// The next page, `None` after the last.
    ///
    /// Each page continues after the last id of the one before, so entries
    /// deleted between pages (a purge, a replay) do not shift it.
    pub(crate) async fn next<B: Broker + ?Sized>(
        &mut self,
        broker: &B,
    ) -> crate::Result<Option<Vec<StreamEntry>>> {
        if self.done {
            return Ok(None);
        }
        let range = (self.start, Bound::Included(self.end));
        let page = broker
            .xrange(self.stream, range, Some(DlqFilter::PAGE_SIZE))
            .await?;
        self.done = page.len() < DlqFilter::PAGE_SIZE;
        match page.last() {
            Some(last) => self.start = Bound::Excluded(last.id),
            None => return Ok(None),
        }
        Ok(Some(page))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeadLetterReason;

    fn letter(task: &str, reason: Option<&str>) -> Fields {
        let mut letter = DeadLetter::new(task.to_owned(), "e", 1);
        if let Some(reason) = reason {
            letter = letter.reason(DeadLetterReason::Other(reason.to_owned()));
        }
        letter.to_fields()
    }

    #[test]
    fn reason_matches_by_prefix_and_never_without_a_reason() {
        let filter = DlqFilter::default().reason("poison");
        assert!(filter.matches(&letter("{}", Some("poison:invalid_json"))));
        assert!(!filter.matches(&letter("{}", Some("max_retries"))));
        assert!(!filter.matches(&letter("{}", None)));
        assert!(DlqFilter::default().matches(&letter("{}", None)));
    }

    #[test]
    fn trace_id_is_read_from_invalid_tasks_too() {
        let filter = DlqFilter::default().trace_id("wf-1");
        assert!(filter.matches(&letter(r#"{"priority":11,"trace_id":"wf-1"}"#, None)));
        assert!(!filter.matches(&letter(r#"{"trace_id":"wf-2"}"#, None)));
        assert!(!filter.matches(&letter(r#"{"trace_id":null}"#, None)));
        assert!(!filter.matches(&letter("{not json", None)));
        assert!(!filter.matches(&Fields::new().with("error", "no task")));
    }
}
