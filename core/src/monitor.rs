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
//! tasks.
//!
//! Priority lanes ([`crate::lanes`]): an agent type whose tasks are
//! dispatched at priorities above 0 has a task stream and a delayed set
//! per priority in use. Its figures then add up every lane (the task
//! stream's length, each group's pending entries and lag, the delayed
//! entries, the oldest pending entry of all lanes, consumers merged by
//! name), and [`AgentStats::lanes`] breaks them down lane by lane. An agent
//! type with no lane above 0 in use reads exactly as before: its figures
//! are lane 0's and `lanes` is empty (left out of the JSON). Everything is plain data that serializes with serde (ids as
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

use std::collections::BTreeMap;

use crate::{
    AgentType, Broker, ErrorKind, GroupInfo, Keyspace, PendingQuery, Priority, RateState, Result,
    StreamId,
};

/// Reads the numbers of some agent types' streams, over any [`Broker`].
#[derive(Debug)]
pub struct Monitor<B> {
    broker: B,
    keyspace: Keyspace,
}

/// One agent type: its task stream, the groups reading it, its dead letters.
///
/// With priority lanes in use (`lanes` not empty), `tasks`, `groups` and
/// `delayed_length` add up every lane; see [`LaneStats`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AgentStats {
    /// The agent type.
    #[serde(serialize_with = "display")]
    pub agent_type: AgentType,
    /// Its task stream (lane 0's key). With lanes in use: `exists` if any
    /// lane's stream does, `length` and `entries_added` summed over the
    /// lanes, `last_id` the largest of their last ids.
    pub tasks: StreamStats,
    /// The consumer groups on the task stream, by name. With lanes in use,
    /// each group summed over the lanes it reads: see [`merge_groups`].
    pub groups: Vec<GroupStats>,
    /// Its dead-letter stream's key.
    pub dlq_stream: String,
    /// Entries in the dead-letter stream.
    pub dlq_length: u64,
    /// Its delayed set's key.
    pub delayed_set: String,
    /// Entries waiting in the delayed set: retries waiting out their
    /// back-off and tasks dispatched for later, due or not yet promoted.
    /// With lanes in use, summed over every lane's delayed set.
    pub delayed_length: u64,
    /// The priority lanes in use (a lane's stream or delayed set exists),
    /// highest priority first, lane 0 among them when it is in use; empty
    /// (and left out of the JSON) while no lane above 0 is in use.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lanes: Vec<LaneStats>,
    /// Its shared rate limit ([`crate::ratelimit`]) as the broker holds it;
    /// `None` (left out of the JSON) when no worker has used one and
    /// nothing is paused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateStats>,
}

/// One priority lane of an agent type ([`crate::lanes`]): its task stream
/// ([`Keyspace::lane`]), the groups reading it and its delayed set
/// ([`Keyspace::lane_delayed`]). Lane 0 is the agent type's task stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LaneStats {
    /// The lane's priority, `0..=10`.
    pub priority: u8,
    /// Its task stream.
    pub tasks: StreamStats,
    /// The consumer groups on it, by name (a crew's group has the same
    /// name on every lane).
    pub groups: Vec<GroupStats>,
    /// Its delayed set's key.
    pub delayed_set: String,
    /// Entries waiting in its delayed set.
    pub delayed_length: u64,
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
        let dlq_stream = self.keyspace.dlq(agent_type);
        let zero = self.lane_stats(agent_type, Priority::MIN).await?;
        let mut lanes = Vec::new();
        for priority in (1..=10u8).rev().filter_map(|p| Priority::new(p).ok()) {
            let lane = self.lane_stats(agent_type, priority).await?;
            if lane.tasks.exists || lane.delayed_length > 0 {
                lanes.push(lane);
            }
        }
        if !lanes.is_empty() && (zero.tasks.exists || zero.delayed_length > 0) {
            lanes.push(zero.clone());
        }
        let (tasks, groups, delayed_length) = if lanes.is_empty() {
            (zero.tasks, zero.groups, zero.delayed_length)
        } else {
            (
                lanes.iter().fold(
                    StreamStats {
                        stream: zero.tasks.stream,
                        exists: false,
                        length: 0,
                        last_id: StreamId::ZERO,
                        entries_added: 0,
                    },
                    |sum, lane| add_stream(sum, &lane.tasks),
                ),
                merge_groups(lanes.iter().flat_map(|lane| lane.groups.iter().cloned())),
                lanes.iter().map(|lane| lane.delayed_length).sum(),
            )
        };
        Ok(AgentStats {
            agent_type: agent_type.clone(),
            tasks,
            groups,
            dlq_length: self.broker.xlen(&dlq_stream).await?,
            dlq_stream,
            delayed_length,
            delayed_set: zero.delayed_set,
            lanes,
            rate: RateStats::of(
                self.broker
                    .rate_state(&self.keyspace.rate(agent_type))
                    .await?,
            ),
        })
    }

    /// The numbers of one lane of `agent_type`.
    ///
    /// # Errors
    ///
    /// As [`Monitor::stats`].
    pub async fn lane_stats(
        &self,
        agent_type: &AgentType,
        priority: Priority,
    ) -> Result<LaneStats> {
        let stream = self.keyspace.lane(agent_type, priority);
        let delayed_set = self.keyspace.lane_delayed(agent_type, priority);
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
        Ok(LaneStats {
            priority: u8::from(priority),
            tasks,
            groups,
            delayed_length: self.broker.delayed_len(&delayed_set).await?,
            delayed_set,
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

/// `sum` with one more lane's stream added.
fn add_stream(sum: StreamStats, lane: &StreamStats) -> StreamStats {
    StreamStats {
        stream: sum.stream,
        exists: sum.exists || lane.exists,
        length: sum.length.saturating_add(lane.length),
        last_id: sum.last_id.max(lane.last_id),
        entries_added: sum.entries_added.saturating_add(lane.entries_added),
    }
}

/// The groups of several lanes summed by name, in name order: pending
/// entries added up; lag added up (unknown if any lane's is); the largest
/// last delivered id; the oldest pending entry of all (the smallest id:
/// ids are times) with its idle time; consumers merged by name, their
/// pending entries added up, their idle time the shortest (a worker reads
/// every lane under one name).
pub fn merge_groups(groups: impl IntoIterator<Item = GroupStats>) -> Vec<GroupStats> {
    let mut merged: BTreeMap<String, GroupStats> = BTreeMap::new();
    for group in groups {
        let Some(sum) = merged.get_mut(&group.name) else {
            merged.insert(group.name.clone(), group);
            continue;
        };
        sum.pending = sum.pending.saturating_add(group.pending);
        sum.lag = sum.lag.zip(group.lag).map(|(a, b)| a.saturating_add(b));
        sum.last_delivered_id = sum.last_delivered_id.max(group.last_delivered_id);
        let older = match (sum.oldest_pending_id, group.oldest_pending_id) {
            (None, Some(_)) => true,
            (Some(ours), Some(theirs)) => theirs < ours,
            _ => false,
        };
        if older {
            sum.oldest_pending_id = group.oldest_pending_id;
            sum.oldest_pending_idle = group.oldest_pending_idle;
        }
        for consumer in group.consumers {
            match sum.consumers.iter_mut().find(|c| c.name == consumer.name) {
                Some(ours) => {
                    ours.pending = ours.pending.saturating_add(consumer.pending);
                    ours.idle = ours.idle.min(consumer.idle);
                }
                None => sum.consumers.push(consumer),
            }
        }
        sum.consumers.sort_by(|a, b| a.name.cmp(&b.name));
    }
    merged.into_values().collect()
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
            lanes: Vec::new(),
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
