//! Dispatching tasks: checked, encoded in the seed's wire format, appended to
//! their agent type's stream at most once per task id, with retention.
//!
//! A [`Producer`] turns a [`Task`] into a task-stream entry and appends it:
//!
//! 1. the agent type must name a stream ([`DispatchError::InvalidAgentType`]);
//! 2. the task is encoded with the producer's [`WireCodec`], whose size limit
//!    (512 KiB by default) refuses a payload too large for a worker
//!    ([`DispatchError::Encode`] with [`WireError::Oversized`]);
//! 3. the agent type's validator, if [`Validators`] has one, may refuse it
//!    ([`DispatchError::Rejected`]);
//! 4. the entry is appended, guarded by a marker key ([`Keyspace::dispatched_marker`]) so that a
//!    retried dispatch of the same `task_id` within the dedupe window appends
//!    nothing and reports the first entry's id ([`Dispatched::duplicate`]).
//!
//! After appends, the producer's [`Retention`] trims the task stream: by
//! default only entries every consumer group on it has delivered and
//! acknowledged, checked once per 1000 appends or 10 s per stream (see
//! [`crate::retention`]), so a backlog of any size waits for its workers.
//!
//! [`Producer::dispatch_in`] and [`Producer::dispatch_at`] dispatch for
//! later: the same checks, then the task waits in its agent type's delayed
//! set, guarded by the same marker, until a worker promotes it when due.
//!
//! Nothing is written for a task refused in steps 1 to 3. Each dispatch runs
//! in a `dispatch` tracing span carrying `task_id`, `trace_id` and
//! `agent_type`; each real append adds 1 to
//! [`metrics::DISPATCHED`].

mod scheduled;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tracing::{Instrument, Span, debug, info_span};

use crate::metrics::{self, DISPATCHED};
pub use crate::retention::Retention;
use crate::retention::Trimmer;
use crate::{
    AddedOnce, AgentType, Broker, Clock, Error, InvalidName, Keyspace, NewEntry, OnceEntry,
    Rejected, StreamId, SystemClock, Task, Validators, WireCodec, WireError,
};

/// How long a producer remembers dispatched task ids by default: 24 hours.
///
/// The cost on Redis: one marker key per dispatched task, kept for the
/// window (a key of about 100 bytes with its expiry): at 1,000 tasks/s that
/// is 86.4 million keys, several GiB, at any time. Size the window to how
/// long a retry of a dispatch can come late (minutes, usually), not to a
/// day, when the rate is high; see [`Producer::with_dedupe_window`].
pub const DEFAULT_DEDUPE_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// A task that is in its stream: appended now, or found already appended
/// within the dedupe window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dispatched {
    /// The task's id.
    pub task_id: String,
    /// Its agent type.
    pub agent_type: String,
    /// The task stream it is in.
    pub stream: String,
    /// Its entry's id; for a duplicate, the id of the first append.
    pub entry_id: StreamId,
    /// Whether this dispatch appended nothing because the task id was
    /// dispatched within the dedupe window.
    pub duplicate: bool,
}

/// Why a task was not dispatched.
///
/// Every kind but [`DispatchError::Broker`] is decided before anything is
/// written. A transient broker error ([`DispatchError::is_transient`])
/// leaves the outcome unknown: dispatch the same task again; with a dedupe
/// window that cannot append it twice.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// The task's agent type cannot name a stream.
    #[error("cannot dispatch: {0}")]
    InvalidAgentType(#[from] InvalidName),
    /// The task cannot be encoded: over the codec's size limit
    /// ([`WireError::Oversized`]), or a payload that is not a JSON object.
    #[error("cannot dispatch: {0}")]
    Encode(#[from] WireError),
    /// The agent type's validator refused the task.
    #[error("cannot dispatch: {0}")]
    Rejected(#[from] Rejected),
    /// The broker failed.
    #[error("dispatch failed: {0}")]
    Broker(#[from] Error),
}

impl DispatchError {
    /// Whether the broker failed in a way that retrying may fix (see
    /// [`Error::is_transient`]).
    pub fn is_transient(&self) -> bool {
        matches!(self, DispatchError::Broker(err) if err.is_transient())
    }
}

/// Dispatches tasks to their agent type's stream.
///
/// Built with [`Producer::new`] and configured with the `with_*` methods:
/// the defaults are the seed's keys ([`Keyspace::default`]), the 512 KiB
/// [`WireCodec`], no validators, [`Retention::DEFAULT`] (trims only what
/// every group has finished), a dedupe window of 24 hours
/// ([`DEFAULT_DEDUPE_WINDOW`]: one marker key per task on Redis, see its
/// cost there) and the system clock. Cloning is cheap when the broker's clone is (`Arc<dyn Broker>`, a
/// Redis connection).
///
/// # Idempotence
///
/// With a dedupe window (the default) each append sets a marker key
/// ([`Keyspace::dispatched_marker`]) in the same atomic step
/// ([`Broker::xadd_once`]); dispatching the same `task_id` again within the
/// window appends nothing and returns the first entry's id with
/// [`Dispatched::duplicate`] set. So a dispatch whose outcome a time-out
/// left unknown can simply be retried. Without a window
/// ([`Producer::with_dedupe_window`]`(None)`) a dispatch is a plain `XADD`.
///
/// # Errors
///
/// See [`DispatchError`]: a refused task writes nothing.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use crewq_core::producer::{DispatchError, Producer, Retention};
/// use crewq_core::{AgentType, Broker, Task, Validators};
/// use crewq_memory::MemoryBroker;
/// use serde_json::json;
///
/// let validators = Validators::new().with(AgentType::new("research")?, |task| {
///     task.payload.get("repo").map(|_| ()).ok_or_else(|| "needs a repo".to_owned())
/// });
/// let producer = Producer::new(MemoryBroker::new())
///     .with_validators(validators)
///     .with_retention(Retention::DEFAULT);
///
/// let task = Task::new("research", "analyze", json!({"repo": "r"})).build()?;
/// let first = producer.dispatch(&task).await?;
/// assert_eq!(first.stream, "agent:tasks:research");
///
/// // A retry appends nothing and reports the first entry.
/// let again = producer.dispatch(&task).await?;
/// assert!(again.duplicate);
/// assert_eq!(again.entry_id, first.entry_id);
/// assert_eq!(producer.broker().xlen("agent:tasks:research").await?, 1);
///
/// let bad = Task::new("research", "analyze", json!({})).build()?;
/// assert!(matches!(producer.dispatch(&bad).await, Err(DispatchError::Rejected(_))));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Producer<B> {
    broker: B,
    keyspace: Keyspace,
    codec: WireCodec,
    validators: Validators,
    retention: Retention,
    trimmer: Trimmer,
    dedupe_window: Option<Duration>,
    clock: Arc<dyn Clock>,
    /// A deliberate bug (feature `mutants`; see
    /// [`Mutant`](crate::worker::Mutant)): only
    /// [`Mutant::ScheduleAtOnce`](crate::worker::Mutant::ScheduleAtOnce)
    /// changes a producer.
    #[cfg(feature = "mutants")]
    mutant: Option<crate::worker::Mutant>,
}

/// A task that passed every check, ready to append.
struct Prepared {
    task_id: String,
    agent: AgentType,
    priority: crate::Priority,
    entry: NewEntry,
}

impl<B: Broker> Producer<B> {
    /// A producer over `broker` with the defaults (see [`Producer`]).
    pub fn new(broker: B) -> Self {
        Producer {
            broker,
            keyspace: Keyspace::default(),
            codec: WireCodec::default(),
            validators: Validators::new(),
            retention: Retention::DEFAULT,
            trimmer: Trimmer::new(Retention::DEFAULT),
            dedupe_window: Some(DEFAULT_DEDUPE_WINDOW),
            clock: Arc::new(SystemClock),
            #[cfg(feature = "mutants")]
            mutant: None,
        }
    }

    /// Switches a deliberate bug on, for testing a checker (feature
    /// `mutants`): only
    /// [`Mutant::ScheduleAtOnce`](crate::worker::Mutant::ScheduleAtOnce)
    /// changes a producer. Never outside a test.
    #[cfg(feature = "mutants")]
    #[must_use]
    pub fn with_mutant(mut self, mutant: Option<crate::worker::Mutant>) -> Self {
        self.mutant = mutant;
        self
    }

    /// Uses these keys.
    #[must_use]
    pub fn with_keyspace(mut self, keyspace: Keyspace) -> Self {
        self.keyspace = keyspace;
        self
    }

    /// Encodes with this codec (and its size limit).
    #[must_use]
    pub fn with_codec(mut self, codec: WireCodec) -> Self {
        self.codec = codec;
        self
    }

    /// Runs these validators before dispatching.
    #[must_use]
    pub fn with_validators(mut self, validators: Validators) -> Self {
        self.validators = validators;
        self
    }

    /// Keeps this much of the task streams (see [`Retention`]; the
    /// default, [`Retention::DEFAULT`], never cuts a task a worker has not
    /// finished).
    #[must_use]
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self.trimmer = Trimmer::new(retention);
        self
    }

    /// Remembers dispatched task ids this long (`None`: not at all, every
    /// dispatch appends). A window under 1 ms makes every dispatch fail with
    /// [`Error::InvalidArgument`].
    ///
    /// Each remembered id is a key on Redis for the whole window: the
    /// default 24 h keeps one key per task dispatched in the last day (86.4
    /// million at 1,000 tasks/s). A window of a few minutes covers retries
    /// of a dispatch whose reply was lost at a fraction of that memory.
    #[must_use]
    pub fn with_dedupe_window(mut self, window: Option<Duration>) -> Self {
        self.dedupe_window = window;
        self
    }

    /// Takes "now" for age-based retention and the trim schedule from this clock (for example
    /// the [`TokioClock`](crate::TokioClock) of a test on paused time).
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The keys it dispatches to.
    pub fn keyspace(&self) -> &Keyspace {
        &self.keyspace
    }

    /// The broker it dispatches through.
    pub fn broker(&self) -> &B {
        &self.broker
    }

    /// "Now" on its clock, in ms since the epoch.
    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Dispatches one task.
    ///
    /// # Errors
    ///
    /// [`DispatchError`]; nothing is written unless it is
    /// [`DispatchError::Broker`], and then only maybe.
    pub async fn dispatch<P: Serialize + Sync>(
        &self,
        task: &Task<P>,
    ) -> Result<Dispatched, DispatchError> {
        let span = dispatch_span(task);
        async {
            let result = self.dispatch_one(task).await;
            if let Err(err) = &result {
                debug!(error = %err, "not dispatched");
            }
            result
        }
        .instrument(span)
        .await
    }

    /// Dispatches many tasks in one round trip to the broker (pipelined on
    /// Redis): one result per task, in order. Tasks are appended in order;
    /// a refused task fails alone. A task id twice in one batch is appended
    /// once, the second reported as a duplicate (with a dedupe window).
    ///
    /// # Errors
    ///
    /// The outer error when the round trip failed as a whole (a lost
    /// connection): then any of the tasks may or may not be in their
    /// streams, and dispatching the batch again is safe with a dedupe
    /// window. Each task's own [`DispatchError`] is in its result.
    pub async fn dispatch_batch<P: Serialize + Sync>(
        &self,
        tasks: &[Task<P>],
    ) -> Result<Vec<Result<Dispatched, DispatchError>>, DispatchError> {
        let span = info_span!("dispatch_batch", tasks = tasks.len());
        async {
            let now_ms = self.clock.now_ms();
            let spans: Vec<Span> = tasks.iter().map(dispatch_span).collect();
            let mut results: Vec<Option<Result<Dispatched, DispatchError>>> =
                Vec::with_capacity(tasks.len());
            let mut sent: Vec<(usize, Prepared)> = Vec::new();
            for (index, (task, span)) in tasks.iter().zip(&spans).enumerate() {
                match span.in_scope(|| self.prepare(task, now_ms)) {
                    Ok(prepared) => {
                        sent.push((index, prepared));
                        results.push(None);
                    }
                    Err(err) => {
                        span.in_scope(|| debug!(error = %err, "not dispatched"));
                        results.push(Some(Err(err)));
                    }
                }
            }
            if !sent.is_empty() {
                let replies = self.append_many(&sent).await?;
                self.trim_after(&sent, &replies).await;
                for ((index, prepared), reply) in sent.into_iter().zip(replies) {
                    let result = spans[index].in_scope(|| match reply {
                        Ok(added) => Ok(finish(prepared, added)),
                        Err(err) => {
                            debug!(error = %err, "not dispatched");
                            Err(DispatchError::Broker(err))
                        }
                    });
                    results[index] = Some(result);
                }
            }
            debug!(tasks = tasks.len(), "batch dispatched");
            Ok(results
                .into_iter()
                .map(|result| result.unwrap_or_else(|| Err(no_reply().into())))
                .collect())
        }
        .instrument(span)
        .await
    }

    async fn dispatch_one<P: Serialize + Sync>(
        &self,
        task: &Task<P>,
    ) -> Result<Dispatched, DispatchError> {
        let prepared = self.prepare(task, self.clock.now_ms())?;
        let added = match self.dedupe_window {
            Some(window) => {
                let once = self.once(&prepared, window);
                let mut replies = self.broker.xadd_once(vec![once]).await?;
                match (replies.pop(), replies.is_empty()) {
                    (Some(reply), true) => reply?,
                    _ => return Err(no_reply().into()),
                }
            }
            None => AddedOnce::Added(self.broker.xadd(prepared.entry.clone()).await?),
        };
        if let AddedOnce::Added(_) = added {
            self.trimmer
                .appended(&self.broker, &prepared.entry.stream, 1, self.clock.now_ms())
                .await;
        }
        Ok(finish(prepared, added))
    }

    /// Checks and encodes a task, in the order cheapest-first that leaves
    /// the validator a well-formed task.
    fn prepare<P: Serialize>(
        &self,
        task: &Task<P>,
        now_ms: u64,
    ) -> Result<Prepared, DispatchError> {
        let agent = AgentType::new(task.agent_type.as_str())?;
        let fields = self.codec.encode_task(task)?;
        // The raw copy a validator needs costs a serialization: only make
        // it when there is a validator to run.
        if self.validators.get(agent.as_str()).is_some() {
            self.validators.validate(&raw_task(task)?)?;
        }
        // Its priority's lane (lane 0, the seed's stream, for priority 0).
        let mut entry = NewEntry::new(self.keyspace.lane(&agent, task.priority), fields);
        if let Some(trim) = self.retention.trim(now_ms) {
            entry = entry.with_trim(trim);
        }
        Ok(Prepared {
            task_id: task.task_id.clone(),
            agent,
            priority: task.priority,
            entry,
        })
    }

    /// Tells the trimmer what a batch appended, stream by stream.
    async fn trim_after(&self, sent: &[(usize, Prepared)], replies: &[crate::Result<AddedOnce>]) {
        let mut appended: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
        for ((_, prepared), reply) in sent.iter().zip(replies) {
            if let Ok(AddedOnce::Added(_)) = reply {
                *appended.entry(prepared.entry.stream.as_str()).or_default() += 1;
            }
        }
        let now_ms = self.clock.now_ms();
        for (stream, count) in appended {
            self.trimmer
                .appended(&self.broker, stream, count, now_ms)
                .await;
        }
    }

    fn once(&self, prepared: &Prepared, window: Duration) -> OnceEntry {
        let marker = self
            .keyspace
            .dispatched_marker(&prepared.agent, &prepared.task_id);
        OnceEntry::new(prepared.entry.clone(), marker, window)
    }

    /// Appends every prepared entry in one broker call.
    async fn append_many(
        &self,
        sent: &[(usize, Prepared)],
    ) -> Result<Vec<crate::Result<AddedOnce>>, Error> {
        let replies: Vec<crate::Result<AddedOnce>> = match self.dedupe_window {
            Some(window) => {
                let onces = sent.iter().map(|(_, p)| self.once(p, window)).collect();
                self.broker.xadd_once(onces).await?
            }
            None => {
                let entries = sent.iter().map(|(_, p)| p.entry.clone()).collect();
                self.broker
                    .xadd_many(entries)
                    .await?
                    .into_iter()
                    .map(|reply| reply.map(AddedOnce::Added))
                    .collect()
            }
        };
        if replies.len() != sent.len() {
            return Err(Error::Protocol(format!(
                "{} replies to {} appends",
                replies.len(),
                sent.len()
            )));
        }
        Ok(replies)
    }
}

impl<B> fmt::Debug for Producer<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("keyspace", &self.keyspace)
            .field("codec", &self.codec)
            .field("validators", &self.validators)
            .field("retention", &self.retention)
            .field("dedupe_window", &self.dedupe_window)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// The span every dispatch of `task` runs in.
fn dispatch_span<P>(task: &Task<P>) -> Span {
    info_span!(
        "dispatch",
        task_id = %task.task_id,
        trace_id = task.trace_id.as_deref(),
        agent_type = %task.agent_type,
    )
}

/// Reports an append and counts it if it was a real one.
fn finish(prepared: Prepared, added: AddedOnce) -> Dispatched {
    let duplicate = matches!(added, AddedOnce::Duplicate(_));
    if duplicate {
        debug!(entry_id = %added.id(), "already dispatched within the dedupe window");
    } else {
        debug!(entry_id = %added.id(), stream = %prepared.entry.stream, "dispatched");
        metrics::count(DISPATCHED, prepared.agent.as_str(), 1);
    }
    Dispatched {
        task_id: prepared.task_id,
        agent_type: prepared.agent.as_str().to_owned(),
        stream: prepared.entry.stream,
        entry_id: added.id(),
        duplicate,
    }
}

/// The task with its payload as raw JSON, as validators take it.
fn raw_task<P: Serialize>(task: &Task<P>) -> Result<Task, WireError> {
    let payload = serde_json::to_value(&task.payload).map_err(|e| WireError::InvalidTask {
        message: format!("payload: {e}"),
    })?;
    Ok(Task {
        task_id: task.task_id.clone(),
        agent_type: task.agent_type.clone(),
        action: task.action.clone(),
        payload,
        priority: task.priority,
        max_retries: task.max_retries,
        created_at: task.created_at.clone(),
        trace_id: task.trace_id.clone(),
        timeout: task.timeout,
    })
}

fn no_reply() -> Error {
    Error::Protocol("an append got no reply".to_owned())
}
