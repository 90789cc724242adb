//! Replaying dead letters: back to the task stream and out of the
//! dead-letter stream in one atomic step.

use serde_json::Value;
use tracing::Instrument;

use super::{DeadLetters, DlqError, DlqFilter};
use crate::metrics::{self, REPLAYED};
use crate::{
    AckAndAdd, AgentType, Broker, DATA_FIELD, DeadLetter, Delete, Fields, NewEntry, StreamEntry,
    StreamId, utc_isoformat,
};

/// Field of a replayed task entry: where it was replayed from, as
/// `<dead-letter stream>:<entry id>`.
pub const REPLAYED_FROM: &str = "replayed_from";
/// Field of a replayed task entry: when it was replayed, as Python's
/// `isoformat()` of a UTC time.
pub const REPLAYED_AT: &str = "replayed_at";

/// A dead letter put back on its task stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replayed {
    /// The agent type.
    pub agent_type: AgentType,
    /// The dead letter's id in the dead-letter stream (gone from it now).
    pub dlq_entry_id: StreamId,
    /// The task's id, unchanged.
    pub task_id: String,
    /// The task's trace id, unchanged.
    pub trace_id: Option<String>,
    /// The id of the new entry in the task stream.
    pub new_entry_id: StreamId,
    /// The dead letter was already gone when the step deleted it: another
    /// replay of the same entry ran at the same time, so the task is now on
    /// its stream twice (see [`DeadLetters::replay`]).
    pub duplicate: bool,
}

/// A dead letter [`DeadLetters::replay_matching`] did not replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The agent type.
    pub agent_type: AgentType,
    /// The dead letter's id.
    pub entry_id: StreamId,
    /// Why: the task is poison, the entry is unreadable, or a concurrent
    /// replay removed it first.
    pub reason: String,
}

/// What [`DeadLetters::replay_matching`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Replayed and removed from the dead-letter stream, in order.
    pub replayed: Vec<Replayed>,
    /// Left alone (or, for "already gone", replayed twice), in order.
    pub skipped: Vec<Skipped>,
}

impl<B: Broker> DeadLetters<B> {
    /// Puts dead letter `entry_id` of `agent_type` back on the agent type's
    /// task stream and deletes it from the dead-letter stream, in one atomic
    /// step ([`Broker::ack_and_add`]).
    ///
    /// The new task entry holds the original task JSON in `data`, byte for
    /// byte (so `task_id` and `trace_id` are kept), plus [`REPLAYED_FROM`]
    /// and [`REPLAYED_AT`]. It carries no attempt count: workers count
    /// attempts per entry, so the task gets all its attempts again. The
    /// replay is counted in [`metrics::REPLAYED`].
    ///
    /// # Concurrent replays
    ///
    /// The step appends first and deletes after, and the broker has no
    /// conditional delete. Two replays of the same entry at the same time
    /// can therefore both append: the second finds the dead letter gone and
    /// reports [`Replayed::duplicate`]. Workers are at-least-once, so that is
    /// a duplicate run of the task, never a lost one.
    ///
    /// # Errors
    ///
    /// - [`DlqError::NotFound`] when there is no such dead letter;
    /// - [`DlqError::NotReplayable`] when its task is poison (not JSON, not a
    ///   valid task, over the codec's size limit);
    /// - [`DlqError::Decode`] when the entry is not a dead letter;
    /// - [`DlqError::Broker`]; a transient one leaves the outcome unknown:
    ///   [`inspect`](DeadLetters::inspect) tells whether it happened.
    pub async fn replay(
        &self,
        agent_type: &AgentType,
        entry_id: StreamId,
    ) -> Result<Replayed, DlqError> {
        let dlq = self.keyspace.dlq(agent_type);
        let entry = self
            .fetch(&dlq, entry_id)
            .await?
            .ok_or_else(|| DlqError::NotFound {
                stream: dlq.clone(),
                id: entry_id,
            })?;
        self.replay_entry(agent_type, &dlq, &entry).await
    }

    /// Replays every dead letter `filter` selects, each in its own atomic
    /// step as [`DeadLetters::replay`] does, and reports what it did.
    ///
    /// Reads as [`DeadLetters::list`] does, up to each stream's last entry
    /// when the call began, so a task that fails again and is dead-lettered
    /// meanwhile is not replayed a second time by the same call. `limit`
    /// counts the entries selected, replayed or skipped.
    ///
    /// Poison and unreadable entries are [`Skipped`] and stay; so is an
    /// entry a concurrent replay removed first (it was then replayed twice,
    /// see [`DeadLetters::replay`]).
    ///
    /// # Errors
    ///
    /// [`DlqError::Broker`], at the first broker failure: what was replayed
    /// before it stays replayed; list again to see what is left.
    pub async fn replay_matching(&self, filter: &DlqFilter) -> Result<ReplayReport, DlqError> {
        let mut report = ReplayReport::default();
        let mut budget = filter.limit.unwrap_or(usize::MAX);
        for agent in &filter.agent_types {
            let dlq = self.keyspace.dlq(agent);
            let Some(mut pages) = self.pages(&dlq).await? else {
                continue;
            };
            while budget > 0
                && let Some(page) = pages.next(&self.broker).await?
            {
                for entry in page.iter().filter(|e| filter.matches(&e.fields)) {
                    let skip = |reason: String| Skipped {
                        agent_type: agent.clone(),
                        entry_id: entry.id,
                        reason,
                    };
                    match self.replay_entry(agent, &dlq, entry).await {
                        Ok(replayed) if replayed.duplicate => report.skipped.push(skip(format!(
                            "already gone: replayed concurrently; dispatched again as {}",
                            replayed.new_entry_id
                        ))),
                        Ok(replayed) => report.replayed.push(replayed),
                        Err(err @ (DlqError::NotReplayable { .. } | DlqError::Decode { .. })) => {
                            report.skipped.push(skip(err.to_string()));
                        }
                        Err(err) => return Err(err),
                    }
                    budget -= 1;
                    if budget == 0 {
                        break;
                    }
                }
            }
        }
        Ok(report)
    }

    /// Replays one entry read from `dlq`.
    async fn replay_entry(
        &self,
        agent: &AgentType,
        dlq: &str,
        entry: &StreamEntry,
    ) -> Result<Replayed, DlqError> {
        let letter = DeadLetter::from_fields(&entry.fields).map_err(|source| DlqError::Decode {
            stream: dlq.to_owned(),
            id: entry.id,
            source,
        })?;
        let not_replayable = |reason: String| DlqError::NotReplayable {
            id: entry.id,
            reason,
        };
        let task = letter
            .decode_task::<Value>()
            .map_err(|err| not_replayable(err.to_string()))?;
        if letter.task.len() > self.codec.max_bytes() {
            return Err(not_replayable(format!(
                "the task is {} bytes, over the limit of {} bytes",
                letter.task.len(),
                self.codec.max_bytes()
            )));
        }
        let span = tracing::info_span!(
            "dlq_replay",
            agent_type = %agent,
            dlq_entry_id = %entry.id,
            task_id = %task.task_id,
            trace_id = task.trace_id.as_deref().unwrap_or_default(),
        );
        async {
            let fields = Fields::new()
                // The bytes as they were dead-lettered, not re-encoded, so
                // the task reads back exactly as it was dispatched.
                .with(DATA_FIELD, letter.task.clone())
                .with(REPLAYED_FROM, format!("{dlq}:{}", entry.id))
                .with(
                    REPLAYED_AT,
                    utc_isoformat(self.clock.now_ms().saturating_mul(1000)),
                );
            let step = AckAndAdd::new()
                .append(NewEntry::new(self.keyspace.lane(agent, task.priority), fields))
                .delete(Delete::new(dlq, vec![entry.id]));
            let reply = self.broker.ack_and_add(step).await?;
            let new_entry_id = reply.ids.first().copied().ok_or_else(|| {
                crate::Error::Protocol("ack_and_add replied without the appended id".to_owned())
            })?;
            let duplicate = reply.deleted.first().copied().unwrap_or(0) == 0;
            if duplicate {
                tracing::warn!(
                    %new_entry_id,
                    "dead letter already gone: a concurrent replay ran, the task is dispatched twice"
                );
            } else {
                // Counts dead letters replayed, so a duplicate is not counted twice.
                metrics::count(REPLAYED, agent.as_str(), 1);
                tracing::info!(%new_entry_id, "dead letter replayed");
            }
            Ok(Replayed {
                agent_type: agent.clone(),
                dlq_entry_id: entry.id,
                task_id: task.task_id.clone(),
                trace_id: task.trace_id.clone(),
                new_entry_id,
                duplicate,
            })
        }
        .instrument(span)
        .await
    }
}
