//! Where a task is: waiting in its stream, pending with a consumer,
//! delivered and acknowledged, completed with a result, dead-lettered, what
//! an operator (or `crewq task`) asks when a workflow hangs.
//!
//! [`Locator::find`] reads an agent type's task stream and those of its
//! priority lanes ([`crate::lanes`]; a task dispatched at priority 5 waits
//! in lane 5's), its dead-letter stream and its results stream entry by
//! entry (pages of
//! [`DlqFilter::PAGE_SIZE`](crate::dlq::DlqFilter::PAGE_SIZE)), so it costs
//! a pass over them: an operator's lookup, not a hot path. A task shows up
//! once per place it is in: a replayed task has its old dead letter gone
//! and a new entry in its stream, a retried one a result per attempt that
//! recorded one.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use crewq_core::locate::{Locator, Place, Wanted};
//! use crewq_core::producer::Producer;
//! use crewq_core::{AgentType, Keyspace, Task};
//!
//! let broker = crewq_memory::MemoryBroker::new();
//! let task = Task::new("research", "analyze", serde_json::json!({})).build()?;
//! Producer::new(&broker).dispatch(&task).await?;
//!
//! let locator = Locator::new(&broker, Keyspace::default());
//! let found = locator
//!     .find(&[AgentType::new("research")?], &Wanted::TaskId(task.task_id.clone()))
//!     .await?;
//! assert!(matches!(found[0].place, Place::Waiting { .. }));
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dlq::Pages;
use crate::worker::{
    PROGRESS_AT, PROGRESS_ATTEMPT, PROGRESS_CONSUMER, PROGRESS_TASK_ID, PROGRESS_VALUE,
};
use crate::{
    AgentType, Broker, DATA_FIELD, DLQ_TASK, DeadLetter, ErrorKind, Keyspace, PendingQuery,
    Priority, Result, StreamEntry, StreamId, result_from_fields,
};

/// What to look for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wanted {
    /// One task, by its `task_id`.
    TaskId(String),
    /// Every task of a workflow, by its `trace_id`.
    TraceId(String),
}

/// One place a task was found in.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sighting {
    /// The task's id.
    pub task_id: String,
    /// The agent type whose streams hold it.
    #[serde(serialize_with = "crate::monitor::display")]
    pub agent_type: AgentType,
    /// Where, and in what state.
    pub place: Place,
}

/// A task's state, as one stream entry tells it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Place {
    /// In the task stream, not yet delivered to the group.
    Waiting {
        /// The task stream (its priority lane's).
        stream: String,
        /// The lane's priority; 0 (left out of the JSON) for the task
        /// stream itself.
        #[serde(skip_serializing_if = "is_zero")]
        priority: u8,
        /// Its entry there.
        #[serde(serialize_with = "crate::monitor::display")]
        entry_id: StreamId,
    },
    /// Delivered and not acknowledged: a worker has it (or died with it).
    Pending {
        /// The task stream (its priority lane's).
        stream: String,
        /// The lane's priority; 0 (left out of the JSON) for the task
        /// stream itself.
        #[serde(skip_serializing_if = "is_zero")]
        priority: u8,
        /// Its entry there.
        #[serde(serialize_with = "crate::monitor::display")]
        entry_id: StreamId,
        /// The consumer that holds it.
        consumer: String,
        /// How many times it was delivered.
        deliveries: u64,
        /// Since it was last delivered or claimed, in ms.
        idle_ms: u64,
    },
    /// Delivered and acknowledged: its result or dead letter tells how it
    /// ended.
    Acknowledged {
        /// The task stream (its priority lane's).
        stream: String,
        /// The lane's priority; 0 (left out of the JSON) for the task
        /// stream itself.
        #[serde(skip_serializing_if = "is_zero")]
        priority: u8,
        /// Its entry there.
        #[serde(serialize_with = "crate::monitor::display")]
        entry_id: StreamId,
    },
    /// A result was recorded.
    Completed {
        /// The results stream.
        stream: String,
        /// The result's entry.
        #[serde(serialize_with = "crate::monitor::display")]
        entry_id: StreamId,
        /// `success`, `failure` ...
        status: String,
        /// The handler's output, on success.
        output: Option<Value>,
        /// The error, on failure.
        error: Option<String>,
        /// Handler time, ms.
        duration_ms: u64,
    },
    /// The newest progress its handler reported
    /// ([`Context::progress`](crate::worker::Context::progress)).
    Progress {
        /// The progress stream.
        stream: String,
        /// The report's entry.
        #[serde(serialize_with = "crate::monitor::display")]
        entry_id: StreamId,
        /// The consumer that ran it.
        consumer: String,
        /// The attempt that reported it.
        attempt: u32,
        /// What the handler reported.
        progress: Value,
        /// When.
        at: String,
    },
    /// In the dead-letter stream.
    DeadLettered {
        /// The dead-letter stream.
        stream: String,
        /// The dead letter's entry (what `crewq dlq replay` takes).
        #[serde(serialize_with = "crate::monitor::display")]
        entry_id: StreamId,
        /// Why, when recorded (`max_retries`, `poison:<kind>` ...).
        reason: Option<String>,
        /// The last error.
        error: String,
        /// Attempts that failed.
        retries: u32,
    },
}

/// Finds tasks in some agent types' streams, over any [`Broker`].
#[derive(Debug)]
pub struct Locator<B> {
    broker: B,
    keyspace: Keyspace,
}

/// The ids of a task's JSON, whatever else is wrong with it.
#[derive(Deserialize)]
struct Ids {
    task_id: Option<String>,
    trace_id: Option<String>,
}

impl Wanted {
    /// The task id of the task JSON `json` when it is wanted.
    fn task_id_of(&self, json: Option<&[u8]>) -> Option<String> {
        let ids: Ids = serde_json::from_slice(json?).ok()?;
        let task_id = ids.task_id?;
        let wanted = match self {
            Wanted::TaskId(id) => *id == task_id,
            Wanted::TraceId(trace) => ids.trace_id.as_deref() == Some(trace.as_str()),
        };
        wanted.then_some(task_id)
    }
}

impl<B: Broker> Locator<B> {
    /// Looks in `broker`'s streams as `keyspace` names them.
    pub fn new(broker: B, keyspace: Keyspace) -> Self {
        Locator { broker, keyspace }
    }

    /// Every place the wanted task(s) are in, agent type by agent type in
    /// the order given: task stream entries first (lane 0's, then each
    /// priority lane's, lowest priority first), then dead letters, then
    /// results, each oldest first. Empty when nothing matched.
    ///
    /// Results carry no trace id: with [`Wanted::TraceId`] they are matched
    /// by the ids of the tasks found in the task and dead-letter streams.
    ///
    /// # Errors
    ///
    /// A broker error; missing streams and groups are empty.
    pub async fn find(&self, agent_types: &[AgentType], wanted: &Wanted) -> Result<Vec<Sighting>> {
        let mut found = Vec::new();
        let mut results_read = BTreeSet::new();
        for agent in agent_types {
            let mut task_ids = BTreeSet::new();
            if let Wanted::TaskId(id) = wanted {
                task_ids.insert(id.clone());
            }
            for priority in (0..=10u8).filter_map(|p| Priority::new(p).ok()) {
                let stream = self.keyspace.lane(agent, priority);
                let mut acknowledged_up_to = None;
                for entry in self.entries(&stream).await? {
                    let Some(task_id) =
                        wanted.task_id_of(entry.fields.get(DATA_FIELD).map(|b| &b[..]))
                    else {
                        continue;
                    };
                    // Read once, and only for a stream that holds the task.
                    let last = match acknowledged_up_to {
                        Some(last) => last,
                        None => {
                            *acknowledged_up_to.insert(self.last_delivered(&stream, agent).await?)
                        }
                    };
                    let place = self
                        .task_place(agent, &stream, priority, entry.id, last)
                        .await?;
                    task_ids.insert(task_id.clone());
                    found.push(sighting(agent, task_id, place));
                }
            }
            let dlq = self.keyspace.dlq(agent);
            for entry in self.entries(&dlq).await? {
                if let Some(task_id) = wanted.task_id_of(entry.fields.get(DLQ_TASK).map(|b| &b[..]))
                    && let Ok(letter) = DeadLetter::from_fields(&entry.fields)
                {
                    task_ids.insert(task_id.clone());
                    let place = Place::DeadLettered {
                        stream: dlq.clone(),
                        entry_id: entry.id,
                        reason: letter.reason.map(|r| r.to_string()),
                        error: letter.error,
                        retries: letter.retries,
                    };
                    found.push(sighting(agent, task_id, place));
                }
            }
            if !task_ids.is_empty() {
                found.extend(self.progress(agent, &task_ids).await?);
            }
            // The seed layout shares one results stream: read it once.
            let results = self.keyspace.results(agent);
            if !task_ids.is_empty() && results_read.insert(results.clone()) {
                found.extend(self.results(agent, &results, &task_ids).await?);
            }
        }
        Ok(found)
    }

    /// The newest progress report of each of `task_ids` in `agent`'s
    /// progress stream.
    async fn progress(
        &self,
        agent: &AgentType,
        task_ids: &BTreeSet<String>,
    ) -> Result<Vec<Sighting>> {
        let stream = self.keyspace.progress(agent);
        let mut newest = BTreeMap::new();
        for entry in self.entries(&stream).await? {
            let text = |field| {
                entry
                    .fields
                    .get(field)
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            let task_id = text(PROGRESS_TASK_ID);
            if !task_ids.contains(&task_id) {
                continue;
            }
            // A report that is not JSON (a peer's) is shown as text.
            let raw = text(PROGRESS_VALUE);
            let progress = serde_json::from_str(&raw).unwrap_or(Value::String(raw));
            let place = Place::Progress {
                stream: stream.clone(),
                entry_id: entry.id,
                consumer: text(PROGRESS_CONSUMER),
                attempt: text(PROGRESS_ATTEMPT).parse().unwrap_or(0),
                progress,
                at: text(PROGRESS_AT),
            };
            // Entries come oldest first: the last one stays.
            newest.insert(task_id, place);
        }
        Ok(newest
            .into_iter()
            .map(|(task_id, place)| sighting(agent, task_id, place))
            .collect())
    }

    /// Waiting, pending or acknowledged: the group's pending list and last
    /// delivered id tell.
    async fn task_place(
        &self,
        agent: &AgentType,
        stream: &str,
        priority: Priority,
        entry_id: StreamId,
        last_delivered: Option<StreamId>,
    ) -> Result<Place> {
        let stream = stream.to_owned();
        let priority = u8::from(priority);
        if last_delivered.is_none_or(|last| entry_id > last) {
            return Ok(Place::Waiting {
                stream,
                priority,
                entry_id,
            });
        }
        let query =
            PendingQuery::new(1).range((Bound::Included(entry_id), Bound::Included(entry_id)));
        let group = self.keyspace.group(agent);
        let pending = missing_as_empty(self.broker.pending(&stream, &group, &query).await)?;
        Ok(match pending.into_iter().find(|p| p.id == entry_id) {
            Some(p) => Place::Pending {
                stream,
                priority,
                entry_id,
                consumer: p.consumer,
                deliveries: p.deliveries,
                idle_ms: u64::try_from(p.idle.as_millis()).unwrap_or(u64::MAX),
            },
            None => Place::Acknowledged {
                stream,
                priority,
                entry_id,
            },
        })
    }

    /// The results of `task_ids` in `stream`.
    async fn results(
        &self,
        agent: &AgentType,
        stream: &str,
        task_ids: &BTreeSet<String>,
    ) -> Result<Vec<Sighting>> {
        let mut found = Vec::new();
        for entry in self.entries(stream).await? {
            let Ok(result) = result_from_fields(&entry.fields) else {
                continue;
            };
            if task_ids.contains(&result.task_id) {
                let place = Place::Completed {
                    stream: stream.to_owned(),
                    entry_id: entry.id,
                    status: result.status.as_str().to_owned(),
                    output: result.output,
                    error: result.error,
                    duration_ms: result.duration_ms,
                };
                found.push(sighting(agent, result.task_id, place));
            }
        }
        Ok(found)
    }

    /// The group's last delivered id; `None` without a stream or group.
    async fn last_delivered(&self, stream: &str, agent: &AgentType) -> Result<Option<StreamId>> {
        let group = self.keyspace.group(agent);
        let groups = missing_as_empty(self.broker.info_groups(stream).await)?;
        Ok(groups
            .into_iter()
            .find(|g| g.name == group)
            .map(|g| g.last_delivered_id))
    }

    /// Every entry of `stream` up to its last one when the read began.
    async fn entries(&self, stream: &str) -> Result<Vec<StreamEntry>> {
        let last = match self.broker.info_stream(stream).await {
            Ok(info) => info.last_generated_id,
            Err(err) if err.kind() == ErrorKind::NoSuchKey => return Ok(Vec::new()),
            Err(err) => return Err(err),
        };
        let mut pages = Pages::new(stream, last);
        let mut entries = Vec::new();
        while let Some(page) = pages.next(&self.broker).await? {
            entries.extend(page);
        }
        Ok(entries)
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(priority: &u8) -> bool {
    *priority == 0
}

fn sighting(agent: &AgentType, task_id: String, place: Place) -> Sighting {
    Sighting {
        task_id,
        agent_type: agent.clone(),
        place,
    }
}

/// A missing stream or group as nothing.
fn missing_as_empty<T>(result: Result<Vec<T>>) -> Result<Vec<T>> {
    match result {
        Err(err) if matches!(err.kind(), ErrorKind::NoSuchKey | ErrorKind::NoGroup) => {
            Ok(Vec::new())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_matches_by_task_id_or_trace_id_in_any_json() {
        let json = br#"{"task_id":"t-1","trace_id":"wf-1","priority":99}"#;
        let by_id = Wanted::TaskId("t-1".into());
        assert_eq!(by_id.task_id_of(Some(json)), Some("t-1".into()));
        assert_eq!(Wanted::TaskId("t-2".into()).task_id_of(Some(json)), None);
        let by_trace = Wanted::TraceId("wf-1".into());
        assert_eq!(by_trace.task_id_of(Some(json)), Some("t-1".into()));
        assert_eq!(Wanted::TraceId("wf-2".into()).task_id_of(Some(json)), None);
        assert_eq!(by_id.task_id_of(Some(b"{not json")), None);
        assert_eq!(by_id.task_id_of(None), None);
    }
}
