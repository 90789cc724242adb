//! Lag, pending work and dead letters at a glance: what an operator (or the
//! `crewq stats` command, or `crewq serve`'s Prometheus gauges and
//! dashboard) looks at to see whether the crews keep up.
//!
//! [`Monitor::stats`] gathers, per agent type: its task stream's length and
//! last id; per consumer group its consumers, pending entries, lag, last
//! delivered id and the idle time of its oldest pending entry; per consumer
//! its pending entries and idle time; the length of its dead-letter
//! stream; and its shared rate limit, if its workers have one (the limit,
//! starts in the current window, running permits, the pause left).
//! [`Monitor::progress`] reads the newest progress report of running
//! tasks. Everything is plain data that serializes with serde (ids as
//! `<ms>-<seq>` text, durations as `*_ms` integers), so the CLI can print it
//! or emit JSON.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use crewq_core::monitor::Monitor;
//! use crewq_core::{AgentType, Broker, Fields, GroupStart, Keyspace, NewEntry, ReadGroup};
//!
//! let broker = crewq_memory::MemoryBroker::new();
//! let keyspace = Keyspace::default();
//! let research = AgentType::new("research")?;
//! let (tasks, group) = (keyspace.tasks(&research), keyspace.group(&research));
//! broker.group_create(&tasks, &group, GroupStart::BEGINNING, true).await?;
//! for _ in 0..3 {
//!     broker.xadd(NewEntry::new(&tasks, Fields::new().with("data", "{}"))).await?;
//! }
//! broker.read_group(&ReadGroup::new(&tasks, &group, "worker-1").count(1)).await?;
//!
//! let stats = Monitor::new(&broker, keyspace).stats(&[research]).await?;
//! let research = &stats[0];
//! assert_eq!(research.tasks.length, 3);
//! assert_eq!(research.groups[0].pending, 1);
//! assert_eq!(research.groups[0].lag, Some(2));
//! assert_eq!(research.groups[0].consumers[0].name, "worker-1");
//! assert_eq!(research.dlq_length, 0);
//! # Ok(()) }
//! ```

use std::fmt::Display;
use std::time::Duration;

mod progress;

pub use progress::Progress;

use serde::{Serialize, Serializer};

use crate::{
    AgentType, Broker, ErrorKind, GroupInfo, Keyspace, PendingQuery, RateState, Result, StreamId,
};

/// Reads the numbers of some agent types' streams, over any [`Broker`].
#[derive(Debug)]
pub struct Monitor<B> {
    broker: B,
    keyspace: Keyspace,
}

/// One agent type: its task stream, the groups reading it, its dead letters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AgentStats {
    /// The agent type.
    #[serde(serialize_with = "display")]
    pub agent_type: AgentType,
    /// Its task stream.
    pub tasks: StreamStats,
    /// The consumer groups on the task stream, by name.
    pub groups: Vec<GroupStats>,
    /// Its dead-letter stream's key.
    pub dlq_stream: String,
    /// Entries in the dead-letter stream.
    pub dlq_length: u64,
    /// Its delayed set's key.
    pub delayed_set: String,
    /// Entries waiting in the delayed set: retries waiting out their
    /// back-off and tasks dispatched for later, due or not yet promoted.
    pub delayed_length: u64,
    /// Its shared rate limit ([`crate::ratelimit`]) as the broker holds it;
    /// `None` (left out of the JSON) when no worker has used one and
    /// nothing is paused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateStats>,
}

/// An agent type's shared rate limit ([`Broker::rate_state`]): the limit
/// its workers last acquired with, and how much of it is in use now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RateStats {
    /// The limit, as text (`5/1000ms, 3 running`); `-` if only a pause is
    /// known.
    pub limit: String,
    /// At most this many starts in any window of `window_ms`.
    pub starts_limit: Option<u32>,
    /// The window of the start limit.
    pub window_ms: Option<u64>,
    /// At most this many running at once.
    pub running_limit: Option<u32>,
    /// Starts in the window ending now.
    pub starts_in_window: u64,
    /// Running permits held (unexpired).
    pub running: u64,
    /// How long the agent type stays paused by a handler's slow-down.
    #[serde(rename = "paused_ms", serialize_with = "millis_option")]
    pub paused: Option<Duration>,
}

impl RateStats {
    /// The stats of `state`; `None` for a limit never used and no pause.
    pub fn of(state: RateState) -> Option<RateStats> {
        if state.limit.is_none() && state.paused_for.is_none() && state.running == 0 {
            return None;
        }
        let limit = state.limit.unwrap_or_default();
        Some(RateStats {
            limit: state
                .limit
                .map_or_else(|| "-".to_owned(), |l| l.to_string()),
            starts_limit: limit.starts.map(|(n, _)| n),
            window_ms: limit.window_ms(),
            running_limit: limit.running,
            starts_in_window: state.starts_in_window,
            running: state.running,
            paused: state.paused_for,
        })
    }
}

/// A task stream (`XINFO STREAM`); all zeros when it does not exist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StreamStats {
    /// The stream's key.
    pub stream: String,
    /// Whether the key exists.
    pub exists: bool,
    /// Entries in the stream.
    pub length: u64,
    /// The largest id ever added (kept when entries are deleted or
    /// trimmed), `0-0` when none.
    #[serde(serialize_with = "display")]
    pub last_id: StreamId,
    /// Entries ever added.
    pub entries_added: u64,
}

/// A consumer group (`XINFO GROUPS`, `XPENDING`, `XINFO CONSUMERS`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupStats {
    /// The group's name.
    pub name: String,
    /// Entries delivered and not yet acknowledged.
    pub pending: u64,
    /// Entries not yet delivered to the group; `None` when Redis cannot
    /// tell (see [`GroupInfo::lag`]).
    pub lag: Option<u64>,
    /// The last id delivered to the group.
    #[serde(serialize_with = "display")]
    pub last_delivered_id: StreamId,
    /// The group's oldest pending entry (smallest id), if any.
    #[serde(serialize_with = "display_option")]
    pub oldest_pending_id: Option<StreamId>,
    /// How long since that entry was last delivered (its `XPENDING` idle
    /// time): a worker stuck on it, or dead with it, shows here. It is the
    /// oldest entry's idle time, not the largest idle time of all: an entry
    /// reclaimed after it may have waited longer.
    #[serde(rename = "oldest_pending_idle_ms", serialize_with = "millis_option")]
    pub oldest_pending_idle: Option<Duration>,
    /// The group's consumers, by name.
    pub consumers: Vec<ConsumerStats>,
}

/// A consumer of a group (`XINFO CONSUMERS`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConsumerStats {
    /// The consumer's name.
    pub name: String,
    /// Entries it holds in the pending list.
    pub pending: u64,
    /// Time since it last read or claimed.
    #[serde(rename = "idle_ms", serialize_with = "millis")]
    pub idle: Duration,
}

impl<B: Broker> Monitor<B> {
    /// Reads `broker`'s streams as `keyspace` names them.
    pub fn new(broker: B, keyspace: Keyspace) -> Self {
        Monitor { broker, keyspace }
    }

    /// The keyspace the streams are named by.
    pub fn keyspace(&self) -> &Keyspace {
        &self.keyspace
    }

    /// The numbers of each of `agent_types`, in that order.
    ///
    /// Not a snapshot: each number is read by its own command, so under load
    /// they may disagree a little (a group's pending count and its
    /// consumers' sum, say).
    ///
    /// # Errors
    ///
    /// A broker error other than a missing stream or group (a stream or
    /// group that is missing, or vanishes while being read, reads as empty).
    pub async fn stats(&self, agent_types: &[AgentType]) -> Result<Vec<AgentStats>> {
        let mut stats = Vec::with_capacity(agent_types.len());
        for agent in agent_types {
            stats.push(self.agent_stats(agent).await?);
        }
        Ok(stats)
    }

    /// The numbers of one agent type.
    ///
    /// # Errors
    ///
    /// As [`Monitor::stats`].
    pub async fn agent_stats(&self, agent_type: &AgentType) -> Result<AgentStats> {
        let stream = self.keyspace.tasks(agent_type);
        let dlq_stream = self.keyspace.dlq(agent_type);
        let delayed_set = self.keyspace.delayed(agent_type);
        let tasks = match missing_as_none(self.broker.info_stream(&stream).await)? {
            Some(info) => StreamStats {
                stream: stream.clone(),
                exists: true,
                length: info.length,
                last_id: info.last_generated_id,
                entries_added: info.entries_added,
            },
            None => StreamStats {
                stream: stream.clone(),
                exists: false,
                length: 0,
                last_id: StreamId::ZERO,
                entries_added: 0,
            },
        };
        let mut groups = Vec::new();
        if tasks.exists {
            let infos = missing_as_none(self.broker.info_groups(&stream).await)?;
            for info in infos.unwrap_or_default() {
                groups.push(self.group_stats(&stream, info).await?);
            }
        }
        Ok(AgentStats {
            agent_type: agent_type.clone(),
            tasks,
            groups,
            dlq_length: self.broker.xlen(&dlq_stream).await?,
            dlq_stream,
            delayed_length: self.broker.delayed_len(&delayed_set).await?,
            delayed_set,
            rate: RateStats::of(
                self.broker
                    .rate_state(&self.keyspace.rate(agent_type))
                    .await?,
            ),
        })
    }

    async fn group_stats(&self, stream: &str, info: GroupInfo) -> Result<GroupStats> {
        let oldest = missing_as_none(
            self.broker
                .pending(stream, &info.name, &PendingQuery::new(1))
                .await,
        )?
        .and_then(|rows| rows.into_iter().next());
        let consumers = missing_as_none(self.broker.info_consumers(stream, &info.name).await)?
            .unwrap_or_default()
            .into_iter()
            .map(|consumer| ConsumerStats {
                name: consumer.name,
                pending: consumer.pending,
                idle: consumer.idle,
            })
            .collect();
        Ok(GroupStats {
            pending: info.pending,
            lag: info.lag,
            last_delivered_id: info.last_delivered_id,
            oldest_pending_id: oldest.as_ref().map(|row| row.id),
            oldest_pending_idle: oldest.map(|row| row.idle),
            consumers,
            name: info.name,
        })
    }
}

/// A stream or group that does not exist (or was deleted between two
/// commands) as `None`.
fn missing_as_none<T>(result: Result<T>) -> Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(err) if matches!(err.kind(), ErrorKind::NoSuchKey | ErrorKind::NoGroup) => Ok(None),
        Err(err) => Err(err),
    }
}

pub(crate) fn display<T: Display, S: Serializer>(
    value: &T,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(value)
}

fn display_option<T: Display, S: Serializer>(
    value: &Option<T>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match value {
        Some(value) => s.collect_str(value),
        None => s.serialize_none(),
    }
}

fn millis<S: Serializer>(value: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
}

fn millis_option<S: Serializer>(
    value: &Option<Duration>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match value {
        Some(value) => millis(value, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stats_serialize_with_ids_as_text_and_durations_in_ms() {
        let stats = AgentStats {
            agent_type: AgentType::new("research").expect("valid"),
            tasks: StreamStats {
                stream: "agent:tasks:research".into(),
                exists: true,
                length: 5,
                last_id: StreamId::new(1_700_000_000_000, 4),
                entries_added: 5,
            },
            groups: vec![GroupStats {
                name: "research-workers".into(),
                pending: 2,
                lag: None,
                last_delivered_id: StreamId::new(1_700_000_000_000, 2),
                oldest_pending_id: Some(StreamId::new(1_700_000_000_000, 1)),
                oldest_pending_idle: Some(Duration::from_millis(1500)),
                consumers: vec![ConsumerStats {
                    name: "w1".into(),
                    pending: 2,
                    idle: Duration::from_millis(20),
                }],
            }],
            dlq_stream: "agent:dlq:research".into(),
            dlq_length: 1,
            delayed_set: "agent:delayed:research".into(),
            delayed_length: 3,
            rate: None,
        };
        let value = serde_json::to_value(&stats).expect("serializes");
        assert_eq!(
            value,
            json!({
                "agent_type": "research",
                "tasks": {"stream": "agent:tasks:research", "exists": true, "length": 5,
                          "last_id": "1700000000000-4", "entries_added": 5},
                "groups": [{
                    "name": "research-workers", "pending": 2, "lag": null,
                    "last_delivered_id": "1700000000000-2",
                    "oldest_pending_id": "1700000000000-1",
                    "oldest_pending_idle_ms": 1500,
                    "consumers": [{"name": "w1", "pending": 2, "idle_ms": 20}],
                }],
                "dlq_stream": "agent:dlq:research",
                "dlq_length": 1,
                "delayed_set": "agent:delayed:research",
                "delayed_length": 3,
            })
        );
    }
}
