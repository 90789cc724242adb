//! The broker's state after the drain, read without faults, and every
//! entry ever appended (the recorder's journal): what the checker holds the
//! history against. Outcomes are taken from the journal, not the final
//! streams, so retention may trim what is finished.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use crewq_core::{
    AgentKeys, Broker, DeadLetter, Error, Fields, PendingEntry, PendingQuery, StreamId, TaskStatus,
    WireCodec,
};
use serde_json::Value;

/// One priority lane of one agent type (issue 12): its keys are
/// [`Keyspace::lane_keys`](crewq_core::Keyspace::lane_keys), so `tasks` is
/// the lane's stream and `delayed` its delayed set; lane 0's are the agent
/// type's plain keys.
#[derive(Clone, Debug)]
pub(crate) struct LaneKeys {
    /// The agent type's index in the scenario.
    pub agent: usize,
    /// The lane's priority.
    pub priority: u8,
    /// Its keys.
    pub keys: AgentKeys,
}

/// One priority lane of one agent type: its task stream (lane 0 is the
/// agent type's plain task stream), and, on lane 0 only, the agent type's
/// dead letters (shared by its lanes).
#[derive(Clone, Debug)]
pub(crate) struct AgentState {
    /// The agent type's index in the scenario.
    pub agent: usize,
    /// The lane's priority.
    pub priority: u8,
    /// Its keys (`tasks`: the lane's stream).
    pub keys: AgentKeys,
    /// Every task-stream entry ever appended, with its task id when it
    /// decodes.
    pub entries: Vec<(StreamId, Option<String>)>,
    /// The task-stream entries still in the stream after the drain; the
    /// others were trimmed (by retention, or an injected trim).
    pub present: BTreeSet<StreamId>,
    /// Every dead letter ever appended, decoded (or why not): on lane 0
    /// only (the agent type's lanes share one dead-letter stream).
    pub dead_letters: Vec<(StreamId, Result<DeadLetter, String>)>,
    /// The group's pending entries.
    pub pending: Vec<PendingEntry>,
    /// Entries the group never delivered.
    pub unread: Vec<StreamId>,
}

/// One entry of a results stream.
#[derive(Clone, Debug)]
pub(crate) struct ResultEntry {
    pub id: StreamId,
    /// Task id and status, when it decodes.
    pub result: Option<(String, TaskStatus)>,
    /// The call whose handler found its entry another's, if the output
    /// carries the mark ([`CANCELLED_CALL`](crate::crew::CANCELLED_CALL)).
    pub cancelled_call: Option<u32>,
}

/// The lanes of every agent type (agent types in the scenario's order,
/// each's lanes lowest first: lane 0 of agent type 0 comes first) and the
/// results.
#[derive(Clone, Debug, Default)]
pub(crate) struct FinalState {
    pub agents: Vec<AgentState>,
    pub results: Vec<ResultEntry>,
    /// The tasks dispatched at a priority above 0, and it.
    pub priorities: BTreeMap<u32, u8>,
}

impl FinalState {
    /// The task stream of task `index` (task `i` goes to agent type
    /// `i % n`, in its priority's lane).
    pub fn task_stream_of(&self, index: u32) -> String {
        let n = self
            .agents
            .iter()
            .filter(|a| a.priority == 0)
            .count()
            .max(1);
        let agent = index as usize % n;
        let priority = self.priorities.get(&index).copied().unwrap_or(0);
        self.agents
            .iter()
            .find(|a| a.agent == agent && a.priority == priority)
            .or_else(|| self.agents.iter().find(|a| a.agent == agent))
            .map(|a| a.keys.tasks.clone())
            .unwrap_or_default()
    }

    /// The lane whose task stream is `stream`.
    pub fn lane_of(&self, stream: &str) -> Option<&AgentState> {
        self.agents.iter().find(|a| a.keys.tasks == stream)
    }

    /// Every task stream.
    pub fn task_streams(&self) -> BTreeSet<String> {
        self.agents.iter().map(|a| a.keys.tasks.clone()).collect()
    }
}

/// Reads the final state of `agents`' streams; outcomes and entries from
/// `journal`, every append of the run in order, and from what the streams
/// hold that the journal lacks.
///
/// On Redis a call can be applied and still fail for its caller (a reply
/// lost to a time-out or a dropped connection, not an injected fault), so
/// the recorder never saw its appends: a settle whose result was written
/// that way, retried, finds the entry settled already. Nothing else writes
/// under a run's keys, so every entry in a stream at the end that the
/// journal lacks is such an append, and counts. On the memory backend the
/// journal holds every append, and the union changes nothing.
pub(crate) async fn read<B: Broker>(
    broker: &B,
    lanes: &[LaneKeys],
    journal: &[(String, StreamId, Fields)],
) -> crewq_core::Result<FinalState> {
    let mut unjournaled = Vec::new();
    for keys in lanes.iter().map(|l| &l.keys) {
        for stream in [&keys.tasks, &keys.dlq, &keys.results] {
            let known: BTreeSet<StreamId> = appended(journal, stream).map(|(id, _)| id).collect();
            for entry in broker.xrange(stream, crewq_core::ALL_IDS, None).await? {
                if !known.contains(&entry.id) {
                    unjournaled.push((stream.clone(), entry.id, entry.fields));
                }
            }
        }
    }
    // Results streams may be shared by agent types: each entry once.
    unjournaled.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    unjournaled.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    let journal: Vec<(String, StreamId, Fields)> =
        journal.iter().cloned().chain(unjournaled).collect();
    let journal = journal.as_slice();
    // Decoding is not the workers' job here: no size limit.
    let codec = WireCodec::with_max_bytes(usize::MAX);
    let mut state = FinalState::default();
    let mut results_streams = BTreeSet::new();
    for lane in lanes {
        let keys = &lane.keys;
        results_streams.insert(keys.results.clone());
        let entries = appended(journal, &keys.tasks)
            .map(|(id, fields)| {
                let task = codec.decode_task::<Value>(fields).ok().map(|t| t.task_id);
                (id, task)
            })
            .collect();
        let dead_letters = appended(journal, &keys.dlq)
            // Lanes share the agent type's dead letters: lane 0 holds them.
            .filter(|_| lane.priority == 0)
            .map(|(id, fields)| {
                (
                    id,
                    DeadLetter::from_fields(fields).map_err(|e| e.to_string()),
                )
            })
            .collect();
        let present: BTreeSet<StreamId> = broker
            .xrange(&keys.tasks, crewq_core::ALL_IDS, None)
            .await?
            .into_iter()
            .map(|e| e.id)
            .collect();
        let (pending, unread) = match group_state(broker, keys).await {
            Ok(state) => state,
            // Never read by any worker: everything in it is unread.
            Err(Error::NoGroup { .. } | Error::NoSuchKey(_)) => {
                (Vec::new(), present.iter().copied().collect())
            }
            Err(err) => return Err(err),
        };
        state.agents.push(AgentState {
            agent: lane.agent,
            priority: lane.priority,
            keys: keys.clone(),
            entries,
            present,
            dead_letters,
            pending,
            unread,
        });
    }
    for stream in results_streams {
        for (id, fields) in appended(journal, &stream) {
            let decoded = codec.decode_result(fields).ok();
            let cancelled_call = decoded
                .as_ref()
                .and_then(|r| r.output.as_ref())
                .and_then(|output| output.get(crate::crew::CANCELLED_CALL))
                .and_then(Value::as_u64)
                .and_then(|call| u32::try_from(call).ok());
            let result = decoded.map(|r| (r.task_id, r.status));
            state.results.push(ResultEntry {
                id,
                result,
                cancelled_call,
            });
        }
    }
    Ok(state)
}

/// The entries appended to `stream`, in order.
fn appended<'a>(
    journal: &'a [(String, StreamId, Fields)],
    stream: &'a str,
) -> impl Iterator<Item = (StreamId, &'a Fields)> + 'a {
    journal
        .iter()
        .filter(move |(s, _, _)| s == stream)
        .map(|(_, id, fields)| (*id, fields))
}

async fn group_state<B: Broker>(
    broker: &B,
    keys: &AgentKeys,
) -> crewq_core::Result<(Vec<PendingEntry>, Vec<StreamId>)> {
    let pending = broker
        .pending(
            &keys.tasks,
            &keys.group,
            &PendingQuery::new(usize::MAX >> 1),
        )
        .await?;
    let groups = broker.info_groups(&keys.tasks).await?;
    let last_delivered = groups
        .iter()
        .find(|g| g.name == keys.group)
        .map_or(StreamId::ZERO, |g| g.last_delivered_id);
    let unread = broker
        .xrange(
            &keys.tasks,
            (Bound::Excluded(last_delivered), Bound::Unbounded),
            None,
        )
        .await?
        .into_iter()
        .map(|e| e.id)
        .collect();
    Ok((pending, unread))
}

/// Whether nothing is pending or unread in any of `agents`' groups, and
/// nothing waits in their delayed sets (a retry due later is still to
/// run): no worker holds anything, so no outcome can come any more.
pub(crate) async fn quiescent<B: Broker>(broker: &B, lanes: &[LaneKeys]) -> bool {
    for keys in lanes.iter().map(|l| &l.keys) {
        match broker.delayed_len(&keys.delayed).await {
            Ok(0) => {}
            _ => return false,
        }
        match broker.pending_summary(&keys.tasks, &keys.group).await {
            Ok(summary) if summary.count == 0 => {}
            Ok(_) => return false,
            // No group: quiescent only if nothing was ever appended.
            Err(_) => match broker.xlen(&keys.tasks).await {
                Ok(0) => continue,
                _ => return false,
            },
        }
        let (Ok(stream), Ok(groups)) = (
            broker.info_stream(&keys.tasks).await,
            broker.info_groups(&keys.tasks).await,
        ) else {
            return false;
        };
        let delivered = groups
            .iter()
            .find(|g| g.name == keys.group)
            .map_or(StreamId::ZERO, |g| g.last_delivered_id);
        // Unread: an entry past the group's last-delivered id. Not
        // `last_generated_id`: entries trimmed before delivery (lost to the
        // trim, reported apart) can never be delivered, so they must not
        // hold the drain up.
        if stream.last_entry.is_some_and(|entry| entry.id > delivered) {
            return false;
        }
    }
    true
}
