//! Running tasks with at-least-once delivery: the [`Worker`].
//!
//! A worker is one consumer of its agent type's group. It keeps DESIGN.md's
//! promises:
//!
//! - an entry is acknowledged only in the same atomic step that writes its
//!   outcome (a result, a retry, a dead letter), and only while the worker
//!   still owns it ([`Broker::settle`]), so a worker
//!   that stalled past its lease (a zombie) records nothing a second time;
//!   attempts that finish together share one settle call (one Lua script on
//!   Redis), each item still checked and recorded on its own
//!   ([`WorkerOptions::settle_batch`]);
//! - on start it first drains its own pending entries, then reads new ones;
//! - it takes over entries of crashed or stalled peers once they are idle
//!   longer than the lease, and renews the leases of its own running tasks;
//! - a failed attempt (an error, a panic, a time-out) is retried after an
//!   exponential back-off with jitter, without holding its slot meanwhile:
//!   the settle that acknowledges it adds the task, its failed attempts
//!   counted in the entry ([`ATTEMPTS_FIELD`]) so the count survives
//!   crashes and fail-overs, to the agent type's delayed set, due after the
//!   back-off on the broker's clock; every worker moves due entries into the
//!   task stream ([`Broker::promote`], [`WorkerOptions::promote_every`]),
//!   each once; a task runs at most `1 + max_retries` times, then moves to
//!   the dead-letter stream with its last error;
//! - an entry that cannot be run at all (no `data`, bad JSON, a task that
//!   fails validation or is over the size limit, a task of another agent
//!   type than its stream's, an impossible `attempts` count, one whose
//!   decoding or validation panics) is dead-lettered at once;
//! - a handler may take a [`Context`] too ([`with_context`]): its attempt
//!   number, a cancellation token that fires at the start of a shutdown's
//!   grace and when a renewal finds the entry another consumer's (a
//!   handler failing after it fired is handed back, not counted as a failed
//!   run), `extend_lease` and `progress`; a [`NonRetryable`] error
//!   dead-letters at once as `non_retryable`; a task's own time-out
//!   ([`Task::timeout`](crate::Task::timeout)) overrides `task_timeout`;
//! - an entry found deleted from its stream while pending is dead-lettered
//!   as `deleted_while_pending` with what is known of it, and counted;
//! - a consumer group destroyed under the worker is created again just
//!   before the oldest entry it holds (or after the newest it read), never
//!   at `0`, with a warning and a counter;
//! - an outcome, once produced, is retried until it is recorded or the
//!   entry is provably another consumer's; attempts count handler runs that
//!   failed, never deliveries that ended without an outcome (a crash, a lost
//!   reply, a hand-back), which a separate, larger bound
//!   ([`WorkerOptions::max_deliveries`]) keeps from looping for ever;
//! - broker errors are waited out with a back-off capped at a few seconds,
//!   never in a hot loop; an error waiting cannot fix
//!   ([`stops_the_worker`]) stops reading, gives running attempts their
//!   grace, and shows on the handle at once ([`WorkerHandle::health`],
//!   [`WorkerHandle::closed`]); a worker never stops silently.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use crewq_core::worker::{HandlerError, Worker};
//! use crewq_core::{AgentType, Broker, Keyspace, NewEntry, Task, TokioClock};
//! use crewq_memory::MemoryBroker;
//! use serde::Deserialize;
//! use serde_json::{Value, json};
//!
//! #[derive(Deserialize)]
//! struct Search { query: String }
//!
//! let broker = MemoryBroker::with_clock(TokioClock::default());
//! let research = AgentType::new("research")?;
//! let worker = Worker::new(broker.clone(), research, "worker-1", |task: Task<Search>| async move {
//!     Ok::<Value, HandlerError>(json!({ "found": task.payload.query.len() }))
//! })
//! .spawn();
//!
//! let task = Task::new("research", "search", json!({ "query": "redis streams" })).build()?;
//! let stream = Keyspace::default().tasks(&AgentType::new("research")?);
//! broker.xadd(NewEntry::new(stream, task.to_fields()?)).await?;
//! tokio::time::sleep(Duration::from_secs(1)).await;
//! let report = worker.shutdown(Duration::from_secs(5)).await?;
//! assert_eq!(report.completed, 1);
//! # Ok(()) }
//! ```

mod attempt;
mod blocking;
mod context;
mod finished;
mod group;
mod handler_error;
mod health;
mod held;
mod lanes;
mod mutant;
mod options;
mod progress;
mod promote;
mod rate;
mod record;
mod renew;
mod retry_after;
mod run;
mod settler;
mod stop;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::{AgentType, Broker, Error, Result, Task};

pub use blocking::{Blocking, blocking};
pub use context::{Context, WithContext, with_context};
pub use handler_error::{NonRetryable, SlowDown};
pub use health::{Health, stops_the_worker};
#[cfg(feature = "mutants")]
pub use mutant::Mutant;
pub use options::{Backoff, InvalidOptions, WorkerOptions};
pub use progress::{
    PROGRESS_AT, PROGRESS_ATTEMPT, PROGRESS_CONSUMER, PROGRESS_ENTRY_ID, PROGRESS_KEPT,
    PROGRESS_TASK_ID, PROGRESS_VALUE,
};
pub use record::{ATTEMPTS_FIELD, MAX_SLOW_DOWNS, SLOWED_FIELD};
pub use retry_after::RetryAfter;

/// What a handler returns when its attempt failed: any error.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// Runs one task. Implemented for every
/// `Fn(Task<P>) -> impl Future<Output = Result<Value, HandlerError>>`, and,
/// through [`with_context`], for every `Fn(Task<P>, Context) -> ...`.
///
/// The output becomes the result's `output` (a JSON object; anything else is
/// wrapped as `{"value": ...}`). An error, a panic or running past the
/// worker's `task_timeout` fails the attempt; a [`NonRetryable`] error
/// dead-letters the task at once.
///
/// A handler must not block its thread (a synchronous sleep, blocking I/O, a
/// long computation): write such a handler as synchronous code and wrap it
/// in [`blocking`], or wrap the blocking part in
/// [`tokio::task::spawn_blocking`] (or `tokio::task::block_in_place` on a
/// multi-thread runtime). The worker
/// renews its running tasks' leases from a task of its own, so on a
/// multi-thread runtime a blocked thread does not stop renewals; but on a
/// current-thread runtime, or with every thread blocked, nothing else runs:
/// leases lapse, peers take the tasks over and run them a second time, and
/// the time-out cannot fire.
#[async_trait]
pub trait Handler<P>: Send + Sync + 'static {
    /// Runs `task`; `ctx` tells which attempt this is and when to stop.
    async fn handle(&self, task: Task<P>, ctx: Context)
    -> std::result::Result<Value, HandlerError>;
}

#[async_trait]
impl<P, F, Fut> Handler<P> for F
where
    P: Send + 'static,
    F: Fn(Task<P>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<Value, HandlerError>> + Send + 'static,
{
    async fn handle(&self, task: Task<P>, _: Context) -> std::result::Result<Value, HandlerError> {
        (self)(task).await
    }
}

/// What a worker did, counted when it stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Tasks whose result it recorded.
    pub completed: u64,
    /// Failed attempts it put back for another try.
    pub retried: u64,
    /// Entries it moved to the dead-letter stream.
    pub dead_lettered: u64,
    /// Entries it took over from other consumers.
    pub reclaimed: u64,
    /// Attempts whose entry another consumer had taken over by the time
    /// they finished: nothing was recorded for them.
    pub zombies: u64,
    /// Entries found deleted from the stream while pending, each
    /// dead-lettered as `deleted_while_pending` (not counted in
    /// `dead_lettered`).
    pub vanished: u64,
    /// Attempts that ended without recording an outcome for a reason other
    /// than the ones above (an attempt that ended abnormally; a mutant's
    /// failed write); their entries stay pending and are retried after the
    /// lease.
    pub unsettled: u64,
    /// Attempts still running at the shutdown deadline, left pending for
    /// another worker to take over after the lease.
    pub handed_back: u64,
    /// Attempts whose handler failed after its [`Context`] was cancelled (a
    /// shutdown, the entry lost): left pending as well, no failed run
    /// counted.
    pub cancelled: u64,
    /// Attempts whose handler asked to slow down ([`SlowDown`]): the agent
    /// type was paused and the task retried after the pause, no failed
    /// run counted.
    pub slowed_down: u64,
}

impl std::ops::AddAssign for WorkerReport {
    /// Adds `other`'s counts: the report of a crew.
    fn add_assign(&mut self, other: WorkerReport) {
        self.completed += other.completed;
        self.retried += other.retried;
        self.dead_lettered += other.dead_lettered;
        self.reclaimed += other.reclaimed;
        self.zombies += other.zombies;
        self.vanished += other.vanished;
        self.unsettled += other.unsettled;
        self.handed_back += other.handed_back;
        self.cancelled += other.cancelled;
        self.slowed_down += other.slowed_down;
    }
}

impl std::iter::Sum for WorkerReport {
    /// The report of a crew, from its workers' reports.
    ///
    /// ```
    /// use crewq_core::worker::WorkerReport;
    /// let one = WorkerReport { completed: 2, retried: 1, ..WorkerReport::default() };
    /// let crew: WorkerReport = [one, one].into_iter().sum();
    /// assert_eq!((crew.completed, crew.retried), (4, 2));
    /// ```
    fn sum<I: Iterator<Item = WorkerReport>>(reports: I) -> Self {
        reports.fold(WorkerReport::default(), |mut total, report| {
            total += report;
            total
        })
    }
}

/// A worker: one consumer of its agent type's group running `H`.
pub struct Worker<B, P, H> {
    broker: B,
    agent: AgentType,
    consumer: String,
    handler: H,
    options: WorkerOptions,
    payload: std::marker::PhantomData<fn() -> P>,
}

impl<B, P, H> Worker<B, P, H>
where
    B: Broker + Clone + 'static,
    P: serde::de::DeserializeOwned + Send + 'static,
    H: Handler<P>,
{
    /// A worker for `agent` named `consumer` (unique within the group, and
    /// stable across restarts so it drains its own pending entries).
    pub fn new(broker: B, agent: AgentType, consumer: impl Into<String>, handler: H) -> Self {
        Worker {
            broker,
            agent,
            consumer: consumer.into(),
            handler,
            options: WorkerOptions::default(),
            payload: std::marker::PhantomData,
        }
    }

    /// Replaces the options.
    #[must_use]
    pub fn options(mut self, options: WorkerOptions) -> Self {
        self.options = options;
        self
    }

    /// Runs the worker in a tokio task until [`WorkerHandle::shutdown`]
    /// (dropping the handle stops it too, with no grace), or until an error
    /// it cannot wait out stops it, which the handle shows at once
    /// ([`WorkerHandle::health`], [`WorkerHandle::closed`]).
    ///
    /// Options that cannot work ([`WorkerOptions::validate`]) stop it at
    /// once with [`Error::InvalidArgument`]; [`Worker::try_spawn`] refuses
    /// them up front instead.
    #[must_use = "dropping the handle stops the worker"]
    pub fn spawn(self) -> WorkerHandle {
        let (stop, stopped) = oneshot::channel::<Duration>();
        let (reporter, health) = health::Reporter::new();
        let stopped = async move { stopped.await.unwrap_or(Duration::ZERO) };
        let lanes = Arc::new(lanes::LaneTasks::default());
        let join = tokio::spawn(run::run(self, stopped, reporter, Arc::clone(&lanes)));
        WorkerHandle {
            stop,
            join,
            health,
            lanes,
        }
    }

    /// [`Worker::spawn`], after checking the options.
    ///
    /// # Errors
    ///
    /// [`InvalidOptions`] when they cannot work ([`WorkerOptions::validate`]);
    /// nothing is spawned.
    pub fn try_spawn(self) -> std::result::Result<WorkerHandle, InvalidOptions> {
        self.options.validate()?;
        Ok(self.spawn())
    }

    /// Runs the worker until `stop` resolves to a grace period; then it reads
    /// no more, lets running attempts finish within the grace period, and
    /// hands back (leaves pending) those still running after it.
    ///
    /// # Errors
    ///
    /// A broker error that waiting cannot fix ([`stops_the_worker`]: an ACL
    /// refusing the commands, say), returned once running attempts had
    /// their `stop_grace`; [`Error::InvalidArgument`] for options that
    /// cannot work. Every other error is waited out.
    pub async fn run(self, stop: impl Future<Output = Duration> + Send) -> Result<WorkerReport> {
        let (reporter, _health) = health::Reporter::new();
        run::run(self, stop, reporter, Arc::default()).await
    }
}

/// Controls a spawned worker; dropping it stops the worker with no grace.
#[derive(Debug)]
#[must_use = "dropping the handle stops the worker"]
pub struct WorkerHandle {
    stop: oneshot::Sender<Duration>,
    join: JoinHandle<Result<WorkerReport>>,
    health: watch::Receiver<Health>,
    /// Its lanes' tasks, aborted with it.
    lanes: Arc<lanes::LaneTasks>,
}

impl WorkerHandle {
    /// Stops reading, lets running attempts finish for up to `deadline`,
    /// and returns the report. Attempts still running then are cut off at
    /// their next await point; their entries stay pending and another
    /// worker takes them over after the lease: nothing is lost or half done.
    ///
    /// # Errors
    ///
    /// The worker's own error, or [`Error::Backend`] if it panicked.
    pub async fn shutdown(self, deadline: Duration) -> Result<WorkerReport> {
        // A receiver gone means the worker already ended; its result says how.
        let _ = self.stop.send(deadline);
        self.join.await.map_err(|e| Error::Backend {
            message: format!("worker task failed: {e}"),
            source: None,
        })?
    }

    /// The worker's state now: running, waiting out broker errors (with the
    /// last one), stopping or stopped on an error it cannot wait out.
    pub fn health(&self) -> Health {
        self.health.borrow().clone()
    }

    /// Resolves when the worker has ended by itself, with the error that
    /// stopped it (see [`stops_the_worker`]); then [`WorkerHandle::shutdown`]
    /// returns its report at once. A worker never ends by itself otherwise,
    /// so an application can `select!` on this beside its own work.
    pub async fn closed(&self) -> Arc<Error> {
        let mut health = self.health.clone();
        let ended = health.wait_for(Health::is_stopped).await.map(|h| h.clone());
        match ended {
            Ok(Health::Stopped { error: Some(error) }) => error,
            // Ended with no error recorded: only a worker task that panicked
            // or was aborted drops its side without saying why.
            _ => Arc::new(Error::Backend {
                message: "the worker ended abnormally".to_owned(),
                source: None,
            }),
        }
    }

    /// Kills the worker at once, as a crash would: its running attempts stop
    /// at their next await point and their entries stay pending.
    pub fn abort(self) {
        self.lanes.abort_all();
        self.join.abort();
    }
}
