//! What a handler knows of its attempt beside the task: the [`Context`],
//! and [`with_context`], which makes a handler of a two-argument closure.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::{Result, StreamId, Task};

#[cfg(doc)]
use super::WorkerReport;
use super::progress::Report;
use super::record::Prior;
use super::{Handler, HandlerError};

/// An attempt's view of its running task, passed to every [`Handler`].
///
/// Cheap to clone: a handler may hand it to tasks of its own.
///
/// - [`Context::attempt`]: which run of the task this is, counting failed
///   runs (not deliveries that ended with no outcome, a crash say; those are
///   [`Context::deliveries`]);
/// - [`Context::cancelled`]: fires when the worker begins its shutdown (at
///   the start of the grace period, so the handler can wind down) and when
///   the worker finds that another consumer has taken the entry over (its
///   outcome would not be recorded). An error a handler returns after it
///   fired is not counted as a failed run ([`WorkerReport::cancelled`]):
///   the entry is left pending, and
///   is delivered again (to this worker's successor, or already to the
///   peer that took it over);
/// - [`Context::extend_lease`]: renews the entry's lease now, beside the
///   worker's own periodic renewal, before a long step;
/// - [`Context::progress`]: records how far the handler got, for `crewq
///   task` and [`Locator`](crate::locate::Locator) to show.
#[derive(Clone)]
pub struct Context {
    attempt: u32,
    deliveries: u64,
    task_id: Arc<str>,
    lease: Lease,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("attempt", &self.attempt)
            .field("deliveries", &self.deliveries)
            .field("entry", &self.lease.id)
            .field("cancelled", &self.lease.cancel.is_cancelled())
            .finish()
    }
}

impl Context {
    pub(crate) fn new(prior: Prior, task_id: &str, lease: Lease) -> Self {
        Context {
            attempt: prior.failed.saturating_add(1),
            deliveries: prior.deliveries,
            task_id: task_id.into(),
            lease,
        }
    }

    /// Which run this is: 1 for the first, then failed runs so far + 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// How often the entry was delivered, this delivery included: more
    /// than the attempt when earlier deliveries ended with no outcome (a
    /// crash, a shutdown's hand-back, a lease lost).
    pub fn deliveries(&self) -> u64 {
        self.deliveries
    }

    /// The task entry's id in its stream.
    pub fn entry_id(&self) -> StreamId {
        self.lease.id
    }

    /// The shared rate limit's permit this run holds
    /// ([`WorkerOptions::rate_limit`](super::WorkerOptions::rate_limit)),
    /// `None` without a limit: for logs, and for tests that tie a run to
    /// the broker's grant.
    pub fn rate_permit(&self) -> Option<&str> {
        self.lease.permit.as_deref()
    }

    /// Whether the handler should stop: the worker is shutting down, or the
    /// entry is no longer this worker's.
    pub fn is_cancelled(&self) -> bool {
        self.lease.cancel.is_cancelled()
    }

    /// Resolves when the handler should stop (see [`Context::is_cancelled`]):
    /// `select!` on it beside a long step.
    pub async fn cancelled(&self) {
        self.lease.cancel.cancelled().await;
    }

    /// The cancellation token itself, for APIs that take one.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.lease.cancel.clone()
    }

    /// Records how far the handler got: any JSON (`{"done": 3, "of": 10}`),
    /// appended with the task id, entry, consumer, attempt and time to the
    /// agent type's progress stream ([`Keyspace::progress`]), whose newest
    /// report per task `crewq task` shows. One append per call: report at
    /// step boundaries, not in a tight loop.
    ///
    /// # Errors
    ///
    /// The broker's error, or [`Error::InvalidArgument`] for a value that
    /// does not serialize. The attempt goes on either way.
    ///
    /// [`Keyspace::progress`]: crate::Keyspace::progress
    /// [`Error::InvalidArgument`]: crate::Error::InvalidArgument
    pub async fn progress(&self, value: impl serde::Serialize) -> Result<()> {
        let value = serde_json::to_value(value).map_err(|e| {
            crate::Error::InvalidArgument(format!("a progress report that is not JSON: {e}"))
        })?;
        let report = Report {
            id: self.lease.id,
            task_id: &self.task_id,
            attempt: self.attempt,
            value: &value,
        };
        self.lease.worker.report(report).await
    }

    /// Renews the entry's lease now. `Ok(true)`: it is still this worker's
    /// and its lease starts again; `Ok(false)`: it is not renewed: another
    /// consumer took it over (the context is then cancelled) or it was
    /// deleted from the stream.
    ///
    /// # Errors
    ///
    /// The broker's error; the worker's periodic renewal goes on.
    pub async fn extend_lease(&self) -> Result<bool> {
        self.lease
            .worker
            .extend(self.lease.id, &self.lease.cancel)
            .await
    }
}

/// What an attempt holds of its entry: its id, its cancellation token, and
/// the worker's way to renew it and record its progress.
#[derive(Clone)]
pub(crate) struct Lease {
    pub id: StreamId,
    pub cancel: CancellationToken,
    pub worker: Arc<dyn WorkerLink>,
    /// The rate-limit permit the attempt holds, if the worker has a limit.
    pub permit: Option<Arc<str>>,
}

/// What a handler's context asks of its worker, type-erased.
#[async_trait]
pub(crate) trait WorkerLink: Send + Sync {
    /// Renews `id`; cancels `cancel` when it is provably another's.
    async fn extend(&self, id: StreamId, cancel: &CancellationToken) -> Result<bool>;
    /// Appends a progress report.
    async fn report(&self, report: Report<'_>) -> Result<()>;
}

/// Makes a [`Handler`] of a closure that takes the [`Context`] too.
///
/// A closure of the task alone is a handler as it is; one of the task and
/// its context goes through this adapter (one blanket impl cannot cover both
/// arities: they would overlap).
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use crewq_core::worker::{Context, HandlerError, Worker, with_context};
/// use crewq_core::{AgentType, Task, TokioClock};
/// use crewq_memory::MemoryBroker;
/// use serde_json::{Value, json};
///
/// let broker = MemoryBroker::with_clock(TokioClock::default());
/// let handler = with_context(|task: Task<Value>, ctx: Context| async move {
///     tokio::select! {
///         biased;
///         () = ctx.cancelled() => Err::<Value, HandlerError>("stopping".into()),
///         () = tokio::time::sleep(Duration::from_millis(10)) => {
///             Ok(json!({ "task": task.task_id, "attempt": ctx.attempt() }))
///         }
///     }
/// });
/// let worker = Worker::new(broker, AgentType::new("research")?, "worker-1", handler).spawn();
/// worker.shutdown(Duration::from_secs(1)).await?;
/// # Ok(()) }
/// ```
pub fn with_context<P, F, Fut>(handler: F) -> WithContext<P, F>
where
    F: Fn(Task<P>, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<Value, HandlerError>> + Send + 'static,
{
    WithContext {
        handler,
        payload: PhantomData,
    }
}

/// A handler of the task and its [`Context`]; made by [`with_context`].
pub struct WithContext<P, F> {
    handler: F,
    payload: PhantomData<fn() -> P>,
}

#[async_trait]
impl<P, F, Fut> Handler<P> for WithContext<P, F>
where
    P: Send + 'static,
    F: Fn(Task<P>, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<Value, HandlerError>> + Send + 'static,
{
    async fn handle(
        &self,
        task: Task<P>,
        ctx: Context,
    ) -> std::result::Result<Value, HandlerError> {
        (self.handler)(task, ctx).await
    }
}
