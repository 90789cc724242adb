//! One attempt at one entry: decode, check, run the handler, and record
//! the outcome (see `record.rs`) with an ownership-guarded settle.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use rand::rngs::StdRng;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::Instrument;

use crate::metrics::{self, COMPLETED, FAILED, FAILURE, RETRIED, SUCCESS, count};
use crate::{
    AgentKeys, Broker, DATA_FIELD, DeadLetterReason, Delay, DeliveredEntry, Fields, SettleItem,
    StreamId, Task, TaskResult, WireError,
};

use super::context::{Context, Lease};
use super::health::Reporter;
use super::held::Holding;
use super::mutant::Mutant;
use super::promote::Wake;
use super::record::{
    ATTEMPTS_FIELD, BadAttempts, MAX_SLOW_DOWNS, Prior, SLOWED_FIELD, stored_failures,
    stored_slow_downs,
};
use super::settler::Settler;
use super::{Handler, NonRetryable, SlowDown, WorkerOptions};

/// How the entry reached this worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// Read as new (`>`): delivered once.
    New,
    /// This consumer's own pending entry, left by a previous run.
    Drained,
    /// Taken over from a stalled or crashed consumer.
    Reclaimed,
}

/// What an attempt ended in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Completed,
    Retried,
    DeadLettered,
    /// Another consumer took the entry over first; nothing was recorded.
    Zombie,
    /// The entry had been deleted from the stream while pending; it was
    /// dead-lettered as `deleted_while_pending`.
    Vanished,
    /// Only a mutant's unguarded write ends so: the entry stays pending.
    Unsettled,
    /// The handler was cancelled (a shutdown, the entry lost) and failed:
    /// nothing was recorded; the entry stays pending.
    Cancelled,
    /// The handler asked to slow down: the agent type was paused and the
    /// task retried after the pause, no failed run counted.
    SlowedDown,
}

/// What every attempt of one worker shares.
pub(crate) struct Shared<B, H> {
    pub broker: B,
    /// Shared by the worker's lanes.
    pub handler: Arc<H>,
    pub keys: AgentKeys,
    /// The agent type's progress stream.
    pub progress: String,
    pub agent_type: String,
    pub consumer: String,
    pub options: WorkerOptions,
    pub rng: Mutex<StdRng>,
    /// The entries being worked on, whose leases the worker renews, each
    /// with its attempt's cancellation token.
    pub held: Mutex<BTreeMap<StreamId, Holding>>,
    /// Set when the worker begins to stop ([`Shared::cancel_all`]).
    pub stopping: std::sync::atomic::AtomicBool,
    /// Held entries a renewal found deleted from the stream: their attempts
    /// dead-letter them as `deleted_while_pending` instead of settling.
    pub deleted: Mutex<BTreeSet<StreamId>>,
    /// Settles finished attempts in batches.
    pub settler: Settler,
    /// Tells the handle when broker calls fail.
    pub reporter: Reporter,
    /// Attempts whose settle is failing now: the worker shows as degraded
    /// until none is left, even while its reads succeed.
    pub failing: AtomicUsize,
    /// The `remember-settled` mutant's cache; unused by the real worker.
    pub settled_ids: super::mutant::SettledIds,
    /// Wakes the promoter when a retry is due before its next turn.
    pub wake: Wake,
    /// The shared rate limit's link, if the worker has a limit.
    pub rate: Option<Arc<super::rate::RateGate>>,
    /// The agent type's rate-limit keys, where a [`SlowDown`] pauses it.
    pub rate_keys: crate::RateKeys,
}

impl<B: Broker, H> Shared<B, H> {
    /// Pauses the agent type for `pause` ([`SlowDown`]). Best effort: should
    /// the broker refuse, the task's retry still waits the pause.
    async fn pause_agent_type(&self, pause: Duration) {
        match self.broker.rate_pause(&self.rate_keys, pause).await {
            Ok(left) => tracing::info!(?left, "agent type paused"),
            Err(err) => tracing::warn!(error = %err, ?pause, "could not pause the agent type"),
        }
    }
}

impl<B, H> Shared<B, H> {
    pub(crate) fn backoff_wait(&self, attempt: u32) -> Duration {
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        self.options.backoff.wait(attempt, &mut *rng)
    }
}

impl<B, H> Shared<B, H>
where
    B: Broker,
{
    /// Runs one attempt at `entry` and records its outcome.
    pub(crate) async fn attempt<P>(
        &self,
        entry: DeliveredEntry,
        source: Source,
        lease: Lease,
    ) -> Outcome
    where
        H: Handler<P>,
        P: DeserializeOwned + Send + 'static,
    {
        let id = entry.id;
        let Some(fields) = entry.fields else {
            // Deleted from the stream while pending (it is still in this
            // consumer's pending list): nothing to run, never silent.
            return self.deleted_while_pending(id, Bytes::new(), true).await;
        };
        let data = fields.get(DATA_FIELD).cloned().unwrap_or_default();
        let failed = match stored_failures(&fields) {
            Ok(failed) => failed,
            Err(BadAttempts(error)) => {
                let reason = DeadLetterReason::InvalidAttempts;
                return self
                    .dead_letter(id, data, None::<&Task>, reason, error, 0)
                    .await;
            }
        };
        let mut prior = match self.prior(id, failed, source).await {
            Ok(prior) => prior,
            Err(outcome) => return outcome,
        };
        prior.slowed = stored_slow_downs(&fields);
        // With no validator to run, decode straight into the handler's
        // payload type, skipping the raw JSON tree. What does not decode
        // takes the general path, which tells why.
        if self.options.validators.is_empty()
            && let Ok(typed) = self.options.codec.decode_task::<P>(&fields)
            && typed.agent_type == self.agent_type
        {
            let span = handle_span(id, &typed, prior);
            return self
                .run(id, data, prior, typed, lease)
                .instrument(span)
                .await;
        }
        let task: Task<Value> = match self.options.codec.decode_task(&fields) {
            Ok(task) => task,
            Err(err) => {
                let reason = DeadLetterReason::Poison(err.kind());
                return self
                    .dead_letter(
                        id,
                        data,
                        None::<&Task>,
                        reason,
                        err.to_string(),
                        prior.failed,
                    )
                    .await;
            }
        };
        if task.agent_type != self.agent_type && !self.options.is_mutant(Mutant::TrustTaskAgentType)
        {
            // Checked (and published) as the stream's agent type, never as
            // whatever the entry claims to be.
            let error = format!(
                "a task of agent type {:?} in the stream of '{}'",
                task.agent_type, self.agent_type
            );
            return self
                .dead_letter(
                    id,
                    data,
                    None::<&Task>,
                    DeadLetterReason::WrongAgentType,
                    error,
                    prior.failed,
                )
                .await;
        }
        let span = handle_span(id, &task, prior);
        // Boxed: the general path (validators, or a payload the typed decode
        // refused) would otherwise size every attempt's state for itself.
        Box::pin(self.check_and_run(id, data, prior, task, lease))
            .instrument(span)
            .await
    }

    /// Runs the validator, then reads the payload into `P` and runs.
    async fn check_and_run<P>(
        &self,
        id: StreamId,
        data: Bytes,
        prior: Prior,
        task: Task<Value>,
        lease: Lease,
    ) -> Outcome
    where
        H: Handler<P>,
        P: DeserializeOwned + Send + 'static,
    {
        if let Err(rejected) = self.options.validators.validate(&task) {
            let reason = DeadLetterReason::Rejected;
            let error = rejected.reason.clone();
            return self
                .dead_letter(id, data, Some(&task), reason, error, prior.failed)
                .await;
        }
        if let Some(outcome) = self.exhausted(id, &data, &task, prior).await {
            return outcome;
        }
        match P::deserialize(&task.payload) {
            Ok(payload) => {
                self.run(id, data, prior, with_payload(task, payload), lease)
                    .await
            }
            Err(err) => {
                let err = WireError::InvalidTask {
                    message: format!("payload: {err}"),
                };
                let reason = DeadLetterReason::Poison(err.kind());
                self.dead_letter(id, data, Some(&task), reason, err.to_string(), prior.failed)
                    .await
            }
        }
    }

    /// Dead-letters, instead of running, a task whose entry records more
    /// failed runs than it may have (poison: a peer wrote it so), or one
    /// delivered [`WorkerOptions::max_deliveries`] times with no outcome: it
    /// takes its workers down with it (a crash loop). `None`: run it.
    async fn exhausted<P: Sync>(
        &self,
        id: StreamId,
        data: &Bytes,
        task: &Task<P>,
        prior: Prior,
    ) -> Option<Outcome> {
        let (reason, error) = if prior.failed > task.max_retries {
            // No worker appends a retry past max_retries: a peer wrote it.
            let error = format!(
                "the entry records {} failed runs; its max_retries of {} allows no more than that many",
                prior.failed, task.max_retries
            );
            (DeadLetterReason::InvalidAttempts, error)
        } else if prior.unsettled() >= u64::from(self.options.max_deliveries) {
            let error = format!("{} deliveries ended without an outcome", prior.unsettled());
            (DeadLetterReason::MaxDeliveries, error)
        } else {
            return None;
        };
        let outcome = self
            .dead_letter(id, data.clone(), Some(task), reason, error, prior.failed)
            .await;
        Some(outcome)
    }

    /// Runs the handler on a decoded task and records the outcome.
    async fn run<P>(
        &self,
        id: StreamId,
        data: Bytes,
        prior: Prior,
        typed: Task<P>,
        lease: Lease,
    ) -> Outcome
    where
        H: Handler<P>,
        P: DeserializeOwned + Send + 'static,
    {
        // What recording the outcome needs once the handler has the task.
        let task = header(&typed);
        if let Some(outcome) = self.exhausted(id, &data, &task, prior).await {
            return outcome;
        }
        if self.options.is_mutant(Mutant::AckBeforeHandle) {
            let _ = self
                .broker
                .ack(&self.keys.tasks, &self.keys.group, &[id])
                .await;
        }
        // Dispatch (the entry's append) to start: see metrics::QUEUE_WAIT.
        metrics::queue_wait(&self.agent_type, id.ms, self.options.clock.now_ms());
        let started = tokio::time::Instant::now();
        let cancel = lease.cancel.clone();
        let failure = match self
            .call(typed, Context::new(prior, &task.task_id, lease))
            .await
        {
            Ok(output) => {
                let elapsed = started.elapsed();
                metrics::handler_duration(&self.agent_type, SUCCESS, elapsed);
                let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
                // The real worker settles under the ownership guard, which
                // refuses the outcome of an entry lost meanwhile; the
                // mutant trusts its finished handler instead.
                let unguarded =
                    cancel.is_cancelled() && self.options.is_mutant(Mutant::RecordCancelled);
                return self.complete(id, data, &task, output, ms, unguarded).await;
            }
            Err(failure) => {
                metrics::handler_duration(&self.agent_type, FAILURE, started.elapsed());
                failure
            }
        };
        if cancel.is_cancelled() {
            // Told to stop (a shutdown, or the entry lost to another
            // consumer): a handler that wound down has not failed. The entry
            // stays pending and is delivered again; that delivery counts
            // towards max_deliveries, as a crash's does.
            tracing::info!(%failure.message, "cancelled attempt ended with an error; handing the entry back");
            return Outcome::Cancelled;
        }
        let slowed = prior.slowed;
        if let Some(pause) = failure.slow_down {
            let pause = pause.min(self.options.backoff.max);
            if !self.options.is_mutant(Mutant::IgnoreSlowDown) {
                self.pause_agent_type(pause).await;
            }
            if prior.slowed < MAX_SLOW_DOWNS && !failure.non_retryable {
                // The upstream's budget, not the task's fault: no retry
                // burnt; retried once the pause is over.
                let retry = Fields::new()
                    .with(DATA_FIELD, data)
                    .with(ATTEMPTS_FIELD, prior.failed.to_string())
                    .with(SLOWED_FIELD, (prior.slowed + 1).to_string());
                let delay = Delay::new(&self.keys.delayed, pause, id.to_string(), retry);
                tracing::info!(failure = %failure.message, ?pause, "the upstream asked to slow down; agent type paused, task retried after the pause");
                return match self.settle(SettleItem::new(id).delay(delay)).await {
                    Outcome::Completed => {
                        self.wake.at(tokio::time::Instant::now() + pause);
                        Outcome::SlowedDown
                    }
                    other => other,
                };
            }
        }
        count(FAILED, &self.agent_type, 1);
        // At most `max_retries + 1` (exhausted() checked `prior`): no overflow.
        let failed = prior.failed.saturating_add(1);
        let last = u64::from(prior.failed) + 1 > u64::from(task.max_retries)
            || self.options.is_mutant(Mutant::DlqOnFirstFailure);
        let reason = if failure.non_retryable && !self.options.is_mutant(Mutant::RetryNonRetryable)
        {
            Some(DeadLetterReason::NonRetryable)
        } else if last {
            Some(DeadLetterReason::MaxRetries)
        } else {
            None
        };
        let retry_after = failure.retry_after;
        let slow_down = failure.slow_down;
        let failure = failure.message;
        if let Some(reason) = reason {
            return self
                .dead_letter(id, data, Some(&task), reason, failure, failed)
                .await;
        }
        // A handler's retry-after (or slow-down past its count) replaces the
        // back-off, up to its max.
        let wait = match retry_after.or(slow_down) {
            Some(after) => after.min(self.options.backoff.max),
            None => self.backoff_wait(failed),
        };
        tracing::info!(%failure, failed, ?wait, "attempt failed; retrying after back-off");
        let mut retry = Fields::new()
            .with(DATA_FIELD, data)
            .with(ATTEMPTS_FIELD, failed.to_string());
        if slowed > 0 {
            retry.push(SLOWED_FIELD, slowed.to_string());
        }
        // The retry waits in the delayed set, not in this slot. The entry's
        // id makes its member unique: an entry is settled once, so one
        // retry is scheduled per failed run.
        let item = if self.options.is_mutant(Mutant::RetryAtOnce) {
            SettleItem::new(id).append(crate::NewEntry::new(&self.keys.tasks, retry))
        } else {
            let delay = Delay::new(&self.keys.delayed, wait, id.to_string(), retry);
            SettleItem::new(id).delay(delay)
        };
        let span = tracing::info_span!("retry", task_id = %task.task_id, trace_id = task.trace_id.as_deref().unwrap_or(""), %id, failed);
        match self.settle(item).instrument(span).await {
            Outcome::Completed => {
                count(RETRIED, &self.agent_type, 1);
                // Due at `wait` on the broker's clock; look then, not only
                // at the promoter's next turn.
                self.wake.at(tokio::time::Instant::now() + wait);
                Outcome::Retried
            }
            other => other,
        }
    }

    /// The handler's output, or why the attempt failed: an error, a panic or
    /// the time-out. A [`RetryAfter`](super::RetryAfter) error's wait goes
    /// with the failure.
    async fn call<P>(&self, task: Task<P>, ctx: Context) -> std::result::Result<Value, Failure>
    where
        H: Handler<P>,
        P: Send + 'static,
    {
        // The task's own time-out, if it has one, overrides the worker's.
        let limit = task.timeout.or(self.options.task_timeout);
        let run = AssertUnwindSafe(self.handler.handle(task, ctx)).catch_unwind();
        let outcome = match limit {
            Some(limit) => match tokio::time::timeout(limit, run).await {
                Ok(outcome) => outcome,
                Err(_) => return Err(Failure::retryable(format!("timed out after {limit:?}"))),
            },
            None => run.await,
        };
        match outcome {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(err)) => Err(Failure {
                non_retryable: NonRetryable::find(&*err).is_some(),
                retry_after: super::RetryAfter::of(&err),
                slow_down: SlowDown::find(&*err).map(SlowDown::pause),
                message: err.to_string(),
            }),
            Err(panic) => Err(Failure::retryable(format!(
                "handler panicked: {}",
                panic_message(&panic)
            ))),
        }
    }

    async fn complete(
        &self,
        id: StreamId,
        data: Bytes,
        task: &Task<()>,
        output: Value,
        ms: u64,
        unguarded: bool,
    ) -> Outcome {
        // A result's output is a JSON object (the seed's model); anything
        // else is wrapped.
        let output = match output {
            Value::Object(_) => output,
            Value::Null => Value::Object(Default::default()),
            other => serde_json::json!({ "value": other }),
        };
        let result = TaskResult::success(task, output)
            .duration_ms(ms)
            .completed_at(self.now());
        let item = match self.options.codec.encode_result(&result) {
            Ok(fields) => SettleItem::new(id).append(self.result_entry(fields)),
            Err(err) => {
                // An output over the size limit fails the task for good:
                // running it again gives the same output.
                let error = format!("result not recordable: {err}");
                let reason = DeadLetterReason::Other("result_too_large".into());
                return self
                    .dead_letter(id, data, Some(task), reason, error, 1)
                    .await;
            }
        };
        let span = tracing::info_span!("ack", task_id = %task.task_id, trace_id = task.trace_id.as_deref().unwrap_or(""), %id);
        let settled = if unguarded {
            self.write_unguarded(item, true).instrument(span).await
        } else {
            self.settle(item).instrument(span).await
        };
        match settled {
            Outcome::Completed => {
                count(COMPLETED, &self.agent_type, 1);
                Outcome::Completed
            }
            other => other,
        }
    }
}

/// Why a handler's run failed.
struct Failure {
    /// The error's text, as recorded.
    message: String,
    /// The handler said no retry can help ([`NonRetryable`]).
    non_retryable: bool,
    /// The handler said when to try again ([`RetryAfter`](super::RetryAfter)).
    retry_after: Option<Duration>,
    /// The handler said the upstream wants a pause ([`SlowDown`]).
    slow_down: Option<Duration>,
}

impl Failure {
    fn retryable(message: String) -> Self {
        Failure {
            message,
            non_retryable: false,
            retry_after: None,
            slow_down: None,
        }
    }
}

/// The span an attempt at `task` runs in.
fn handle_span<P>(id: StreamId, task: &Task<P>, prior: Prior) -> tracing::Span {
    tracing::info_span!(
        "handle",
        task_id = %task.task_id,
        trace_id = task.trace_id.as_deref().unwrap_or(""),
        %id,
        attempt = u64::from(prior.failed) + 1,
    )
}

/// `task` without its payload: what recording its outcome needs.
fn header<P>(task: &Task<P>) -> Task<()> {
    Task {
        task_id: task.task_id.clone(),
        agent_type: task.agent_type.clone(),
        action: String::new(),
        payload: (),
        priority: task.priority,
        max_retries: task.max_retries,
        created_at: String::new(),
        trace_id: task.trace_id.clone(),
        timeout: task.timeout,
    }
}

/// `task` with another payload.
fn with_payload<P, Q>(task: Task<P>, payload: Q) -> Task<Q> {
    Task {
        task_id: task.task_id,
        agent_type: task.agent_type,
        action: task.action,
        payload,
        priority: task.priority,
        max_retries: task.max_retries,
        created_at: task.created_at,
        trace_id: task.trace_id,
        timeout: task.timeout,
    }
}

pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "non-text panic".to_owned()
    }
}
