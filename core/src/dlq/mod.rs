//! Dead letters for operators: list them, inspect one, replay them to their
//! task stream, purge them.
//!
//! A worker moves a task to its agent type's dead-letter stream
//! ([`Keyspace::dlq`]) when every attempt failed or when the entry is poison
//! (see [`DeadLetter`]). [`DeadLetters`] is the other side: what an operator
//! (or the `crewq dlq` command) does with them afterwards.
//!
//! - [`DeadLetters::list`] reads the entries a [`DlqFilter`] selects (by
//!   agent type, reason, trace id), page by page.
//! - [`DeadLetters::inspect`] reads one.
//! - [`DeadLetters::replay`] puts one back on its task stream and removes it
//!   from the dead-letter stream in one atomic step;
//!   [`DeadLetters::replay_matching`] does that for every entry a filter
//!   selects, each entry its own step.
//! - [`DeadLetters::purge`] deletes the entries a filter selects,
//!   [`DeadLetters::purge_all`] empties a dead-letter stream.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use crewq_core::dlq::{DeadLetters, DlqFilter};
//! use crewq_core::{AgentType, Broker, DeadLetter, DeadLetterReason, Keyspace, NewEntry};
//!
//! let broker = crewq_memory::MemoryBroker::new();
//! let keyspace = Keyspace::default();
//! let research = AgentType::new("research")?;
//!
//! // A worker dead-lettered a task after three failed attempts.
//! let task = br#"{"task_id":"t-1","agent_type":"research","action":"analyze","trace_id":"wf-7"}"#;
//! let letter = DeadLetter::new(&task[..], "timeout", 3).reason(DeadLetterReason::MaxRetries);
//! let dlq_id = broker.xadd(NewEntry::new(keyspace.dlq(&research), letter.to_fields())).await?;
//!
//! let dead_letters = DeadLetters::new(&broker, keyspace.clone());
//! let listed = dead_letters.list(&DlqFilter::new([research.clone()]).reason("max_retries")).await?;
//! assert_eq!(listed.len(), 1);
//! assert_eq!(listed[0].entry_id, dlq_id);
//!
//! let replayed = dead_letters.replay(&research, dlq_id).await?;
//! assert_eq!(replayed.task_id, "t-1");
//! assert_eq!(broker.xlen(&keyspace.dlq(&research)).await?, 0);
//! assert_eq!(broker.xlen(&keyspace.tasks(&research)).await?, 1);
//! # Ok(()) }
//! ```

mod filter;
mod replay;

use std::ops::Bound;
use std::sync::Arc;

pub use filter::{DeadLetterEntry, DlqFilter};
pub use replay::{REPLAYED_AT, REPLAYED_FROM, ReplayReport, Replayed, Skipped};

use crate::{
    AgentType, Broker, Clock, DeadLetter, ErrorKind, Keyspace, StreamEntry, StreamId, SystemClock,
    Trim, WireCodec, WireError,
};
pub(crate) use filter::Pages;

/// What went wrong with a dead-letter operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DlqError {
    /// The broker failed; see [`crewq_core::Error`](crate::Error) (and
    /// [`DlqError::is_transient`]).
    #[error(transparent)]
    Broker(#[from] crate::Error),
    /// No entry with that id in the dead-letter stream (never there, or
    /// already replayed or purged).
    #[error("no dead letter {id} in '{stream}'")]
    NotFound {
        /// The dead-letter stream.
        stream: String,
        /// The id looked for.
        id: StreamId,
    },
    /// The dead letter holds a task that cannot run: a poison entry (not
    /// JSON, not a valid task, over the size limit). Replaying it would only
    /// dead-letter it again; fix it by hand or purge it.
    #[error("dead letter {id} cannot be replayed: {reason}")]
    NotReplayable {
        /// The dead letter's id.
        id: StreamId,
        /// Why.
        reason: String,
    },
    /// The entry is not a dead letter crewq or the seed can read (no `task`
    /// field, a `retries` that is not a number ...): something else wrote
    /// to the dead-letter stream.
    #[error("entry {id} of '{stream}' is not a readable dead letter: {source}")]
    Decode {
        /// The dead-letter stream.
        stream: String,
        /// The entry's id.
        id: StreamId,
        /// What could not be read.
        #[source]
        source: WireError,
    },
}

impl DlqError {
    /// Whether retrying the same call may succeed: a transient broker error.
    pub fn is_transient(&self) -> bool {
        matches!(self, DlqError::Broker(e) if e.is_transient())
    }
}

/// The dead letters of some agent types, over any [`Broker`].
///
/// Cheap to build; holds the broker (use `&B`, `Arc<B>` or a broker by
/// value), the [`Keyspace`] that names the streams, a [`Clock`] for the
/// `replayed_at` stamp and the [`WireCodec`] whose size limit decides whether
/// a task can be replayed.
#[derive(Debug)]
pub struct DeadLetters<B> {
    broker: B,
    keyspace: Keyspace,
    clock: Arc<dyn Clock>,
    codec: WireCodec,
}

impl<B: Broker> DeadLetters<B> {
    /// Dead letters of `broker`'s streams as `keyspace` names them, stamped
    /// with the system clock, under the default size limit.
    pub fn new(broker: B, keyspace: Keyspace) -> Self {
        DeadLetters {
            broker,
            keyspace,
            clock: Arc::new(SystemClock),
            codec: WireCodec::default(),
        }
    }

    /// Stamps `replayed_at` from `clock` (a virtual one in tests and the
    /// simulator).
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Refuses to replay tasks over `codec`'s size limit, as workers using
    /// that codec would refuse to run them. Use the workers' codec.
    #[must_use]
    pub fn with_codec(mut self, codec: WireCodec) -> Self {
        self.codec = codec;
        self
    }

    /// The keyspace the streams are named by.
    pub fn keyspace(&self) -> &Keyspace {
        &self.keyspace
    }

    /// The entries `filter` selects, oldest first, agent type by agent type
    /// in the filter's order.
    ///
    /// Reads each dead-letter stream in pages of [`DlqFilter::PAGE_SIZE`] up
    /// to the last entry it had when the read began, so entries dead-lettered
    /// meanwhile are not listed; stops as soon as `filter.limit` entries
    /// matched. A missing stream has no entries.
    ///
    /// # Errors
    ///
    /// [`DlqError::Broker`]; [`DlqError::Decode`] for a selected entry that
    /// is not a dead letter (a filter on `reason` or `trace_id` skips
    /// entries without a matching field before decoding them).
    pub async fn list(&self, filter: &DlqFilter) -> Result<Vec<DeadLetterEntry>, DlqError> {
        let mut listed = Vec::new();
        let mut budget = filter.limit.unwrap_or(usize::MAX);
        for agent in &filter.agent_types {
            let dlq = self.keyspace.dlq(agent);
            let Some(mut pages) = self.pages(&dlq).await? else {
                continue;
            };
            while budget > 0
                && let Some(page) = pages.next(&self.broker).await?
            {
                for entry in page.into_iter().filter(|e| filter.matches(&e.fields)) {
                    listed.push(DeadLetterEntry::read(agent, &dlq, entry)?);
                    budget -= 1;
                    if budget == 0 {
                        break;
                    }
                }
            }
        }
        Ok(listed)
    }

    /// The dead letter `entry_id` of `agent_type`, or `None` when there is no
    /// such entry.
    ///
    /// # Errors
    ///
    /// [`DlqError::Broker`]; [`DlqError::Decode`] when the entry is not a
    /// dead letter.
    pub async fn inspect(
        &self,
        agent_type: &AgentType,
        entry_id: StreamId,
    ) -> Result<Option<DeadLetterEntry>, DlqError> {
        let dlq = self.keyspace.dlq(agent_type);
        self.fetch(&dlq, entry_id)
            .await?
            .map(|entry| DeadLetterEntry::read(agent_type, &dlq, entry))
            .transpose()
    }

    /// Deletes the entries `filter` selects (with `XDEL`, one call per page
    /// read), returning how many were deleted.
    ///
    /// Selects as [`DeadLetters::list`] does, `limit` included, but never
    /// decodes an entry: unreadable ones are purged too when the filter
    /// has no `reason` or `trace_id`.
    ///
    /// # Errors
    ///
    /// [`DlqError::Broker`]; what was deleted before the error stays deleted.
    pub async fn purge(&self, filter: &DlqFilter) -> Result<u64, DlqError> {
        let mut deleted = 0;
        let mut budget = filter.limit.unwrap_or(usize::MAX);
        for agent in &filter.agent_types {
            let dlq = self.keyspace.dlq(agent);
            let Some(mut pages) = self.pages(&dlq).await? else {
                continue;
            };
            while budget > 0
                && let Some(page) = pages.next(&self.broker).await?
            {
                let ids: Vec<StreamId> = page
                    .iter()
                    .filter(|e| filter.matches(&e.fields))
                    .map(|e| e.id)
                    .take(budget)
                    .collect();
                budget -= ids.len();
                if !ids.is_empty() {
                    deleted += self.broker.xdel(&dlq, &ids).await?;
                }
            }
        }
        Ok(deleted)
    }

    /// Empties `agent_type`'s dead-letter stream (`XTRIM MAXLEN 0`),
    /// returning how many entries it removed, 0 for a missing stream.
    /// Entries dead-lettered while it runs may go too: it is one command.
    ///
    /// # Errors
    ///
    /// [`DlqError::Broker`].
    pub async fn purge_all(&self, agent_type: &AgentType) -> Result<u64, DlqError> {
        let dlq = self.keyspace.dlq(agent_type);
        Ok(self.broker.xtrim(&dlq, Trim::max_len(0)).await?)
    }

    /// One entry by id.
    async fn fetch(&self, stream: &str, id: StreamId) -> Result<Option<StreamEntry>, DlqError> {
        let range = (Bound::Included(id), Bound::Included(id));
        let entries = self.broker.xrange(stream, range, Some(1)).await?;
        Ok(entries.into_iter().find(|entry| entry.id == id))
    }

    /// Pages over `stream` up to its current last id; `None` when the stream
    /// does not exist.
    async fn pages<'s>(&self, stream: &'s str) -> Result<Option<Pages<'s>>, DlqError> {
        match self.broker.info_stream(stream).await {
            Ok(info) => Ok(Some(Pages::new(stream, info.last_generated_id))),
            Err(err) if err.kind() == ErrorKind::NoSuchKey => Ok(None),
            Err(err) => Err(err.into()),
        }
    }
}

impl DeadLetterEntry {
    /// Reads a dead-letter stream entry.
    fn read(agent: &AgentType, dlq: &str, entry: StreamEntry) -> Result<Self, DlqError> {
        let dead_letter =
            DeadLetter::from_fields(&entry.fields).map_err(|source| DlqError::Decode {
                stream: dlq.to_owned(),
                id: entry.id,
                source,
            })?;
        Ok(DeadLetterEntry {
            agent_type: agent.clone(),
            dlq_stream: dlq.to_owned(),
            entry_id: entry.id,
            task: dead_letter.decode_task().ok(),
            dead_letter,
        })
    }
}
