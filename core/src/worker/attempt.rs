//! One attempt at one entry: decode, validate, run the handler, and record
//! the outcome with an ownership-guarded settle.

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use rand::rngs::StdRng;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::Instrument;

use crate::metrics::{COMPLETED, DEAD_LETTERED, FAILED, RETRIED, count};
use crate::{
    Ack, AckAndAdd, AgentKeys, Broker, DATA_FIELD, DeadLetter, DeadLetterReason, DeliveredEntry,
    Fields, NewEntry, Origin, PendingQuery, SettleItem, Settled, StreamId, Task, TaskResult,
    WireError, utc_isoformat,
};

use super::mutant::Mutant;
use super::settler::Settler;
use super::{Handler, WorkerOptions};

/// The field of a retried task entry counting the attempts that failed
/// before it: the durable attempt counter, since Redis's own delivery count
/// is not replicated reliably.
pub const ATTEMPTS_FIELD: &str = "attempts";

/// How often one step of an attempt (a settle, a pending-list read) is
/// tried against transient broker errors before the attempt gives up and
/// leaves its entry pending.
const BROKER_TRIES: u32 = 5;

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
    /// The entry had been deleted from the stream; it was acknowledged.
    Vanished,
    /// The broker kept failing; the entry stays pending for a later try.
    Unsettled,
}

/// What every attempt of one worker shares.
pub(crate) struct Shared<B, H> {
    pub broker: B,
    pub handler: H,
    pub keys: AgentKeys,
    pub agent_type: String,
    pub consumer: String,
    pub options: WorkerOptions,
    pub rng: Mutex<StdRng>,
    /// The entries being worked on, whose leases the worker renews.
    pub held: Mutex<BTreeSet<StreamId>>,
    /// Settles finished attempts in batches.
    pub settler: Settler,
}

impl<B: Broker, H> Shared<B, H> {
    fn origin(&self, id: StreamId) -> Origin {
        Origin {
            stream: self.keys.tasks.clone(),
            entry_id: id,
            group: self.keys.group.clone(),
            consumer: self.consumer.clone(),
        }
    }

    /// A result's append, trimmed per the result retention.
    fn result_entry(&self, fields: Fields) -> NewEntry {
        let entry = NewEntry::new(&self.keys.results, fields);
        match self
            .options
            .result_retention
            .trim(self.options.clock.now_ms())
        {
            Some(trim) => entry.with_trim(trim),
            None => entry,
        }
    }

    fn now(&self) -> String {
        utc_isoformat(self.options.clock.now_ms().saturating_mul(1000))
    }

    /// Attempts that failed before this delivery: the durable counter of the
    /// entry, plus deliveries that never got an outcome (a crash, a lost
    /// reply), read from the entry's delivery count.
    ///
    /// The count must be known before the handler runs, or a task whose
    /// every delivery crashes its worker would run for ever: when the
    /// pending list cannot be read, the attempt is given up
    /// ([`Outcome::Unsettled`]) and the entry is delivered again after the
    /// lease. An entry no longer pending for this consumer was taken over
    /// or settled by another: it is not run ([`Outcome::Zombie`]).
    async fn prior_attempts(
        &self,
        id: StreamId,
        fields: &Fields,
        source: Source,
    ) -> Result<u32, Outcome> {
        let stored = fields
            .get_str(ATTEMPTS_FIELD)
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0);
        if source == Source::New {
            // Read as new: this is its first delivery.
            return Ok(stored);
        }
        let query = PendingQuery::new(1)
            .range((std::ops::Bound::Included(id), std::ops::Bound::Included(id)));
        let mut tries = 1;
        let rows = loop {
            match self
                .broker
                .pending(&self.keys.tasks, &self.keys.group, &query)
                .await
            {
                Ok(rows) => break rows,
                Err(err) if err.is_transient() && tries < BROKER_TRIES => {
                    tokio::time::sleep(self.backoff_wait(tries)).await;
                    tries += 1;
                }
                Err(err) => {
                    tracing::warn!(%id, error = %err, "cannot count the deliveries; the entry stays pending");
                    return Err(Outcome::Unsettled);
                }
            }
        };
        match rows.first() {
            Some(row) if row.consumer == self.consumer => {
                let crashed = u32::try_from(row.deliveries.saturating_sub(1)).unwrap_or(u32::MAX);
                Ok(stored.saturating_add(crashed))
            }
            _ => {
                tracing::debug!(%id, "no longer pending for this consumer; not running it");
                Err(Outcome::Zombie)
            }
        }
    }

    /// Settles one item, retrying transient broker errors with back-off.
    ///
    /// A settle can apply and lose its reply (a time-out, a dropped
    /// connection); its retry then finds the entry no longer pending. Right
    /// after such an error that is this worker's own write, not a zombie: no
    /// other consumer can have taken the entry over within the retry back-off,
    /// which is far shorter than the lease.
    async fn settle(&self, item: SettleItem) -> Outcome {
        if self.options.is_mutant(Mutant::AckBeforeHandle) {
            // No ownership guard: the outcome is written blindly.
            return self.write_unguarded(item, true).await;
        }
        let id = item.id;
        let mut reply_lost = false;
        for attempt in 1..=BROKER_TRIES {
            match self.settler.settle(item.clone()).await {
                Ok(Settled::Failed(why)) => {
                    // This item's write failed and it was not acknowledged:
                    // waited out like a transient error.
                    let wait = self.backoff_wait(attempt);
                    tracing::warn!(%id, error = %why, ?wait, "settle failed for this entry; retrying");
                    tokio::time::sleep(wait).await;
                }
                Ok(outcome) => {
                    return match outcome {
                        Settled::Done(_) => Outcome::Completed,
                        Settled::NotOwned if reply_lost => {
                            tracing::debug!(%id, "an earlier settle applied; its reply was lost");
                            Outcome::Completed
                        }
                        Settled::NotOwned => {
                            tracing::warn!(%id, "entry was taken over by another consumer; not recording an outcome");
                            Outcome::Zombie
                        }
                        Settled::Failed(_) => Outcome::Unsettled,
                    };
                }
                Err(err) if err.is_transient() => {
                    reply_lost = true;
                    let wait = self.backoff_wait(attempt);
                    tracing::debug!(%id, error = %err, ?wait, "settle failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(err) => {
                    tracing::error!(%id, error = %err, "settle failed; the entry stays pending");
                    return Outcome::Unsettled;
                }
            }
        }
        Outcome::Unsettled
    }

    /// The mutants' way to record an outcome: its appends (and its ack if
    /// `ack`), with no ownership check.
    async fn write_unguarded(&self, item: SettleItem, ack: bool) -> Outcome {
        let mut step = item
            .appends
            .into_iter()
            .fold(AckAndAdd::new(), AckAndAdd::append);
        if ack {
            step = step.ack(Ack::new(&self.keys.tasks, &self.keys.group, vec![item.id]));
        }
        match self.broker.ack_and_add(step).await {
            Ok(_) => Outcome::Completed,
            Err(_) => Outcome::Unsettled,
        }
    }

    pub(crate) fn backoff_wait(&self, attempt: u32) -> Duration {
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        self.options.backoff.wait(attempt, &mut *rng)
    }

    /// Moves the entry to the dead-letter stream (and, for a task that could
    /// be read, publishes its failure so a supervisor stops waiting).
    async fn dead_letter<P: Sync>(
        &self,
        id: StreamId,
        data: Bytes,
        task: Option<&Task<P>>,
        reason: DeadLetterReason,
        error: String,
        failed: u32,
    ) -> Outcome {
        tracing::warn!(%id, %reason, %error, failed, "dead-lettering");
        let letter = DeadLetter::new(data, error.clone(), failed)
            .reason(reason)
            .origin(self.origin(id))
            .dead_lettered_at(self.now());
        let mut item =
            SettleItem::new(id).append(NewEntry::new(&self.keys.dlq, letter.to_fields()));
        if let Some(task) = task {
            let result = TaskResult::failure(task, error).completed_at(self.now());
            if let Ok(fields) = self.options.codec.encode_result(&result) {
                item = item.append(self.result_entry(fields));
            }
        }
        let task_id = task.map_or("", |t| t.task_id.as_str());
        let trace_id = task.and_then(|t| t.trace_id.as_deref()).unwrap_or("");
        let span = tracing::info_span!("dead_letter", task_id, trace_id, %id);
        let settled = if self.options.is_mutant(Mutant::DlqWithoutAck) {
            self.write_unguarded(item, false).instrument(span).await
        } else {
            self.settle(item).instrument(span).await
        };
        match settled {
            Outcome::Completed => {
                count(DEAD_LETTERED, &self.agent_type, 1);
                Outcome::DeadLettered
            }
            other => other,
        }
    }
}

impl<B, H> Shared<B, H>
where
    B: Broker,
{
    /// Runs one attempt at `entry` and records its outcome.
    pub(crate) async fn attempt<P>(&self, entry: DeliveredEntry, source: Source) -> Outcome
    where
        H: Handler<P>,
        P: DeserializeOwned + Send + 'static,
    {
        let id = entry.id;
        let Some(fields) = entry.fields else {
            // Deleted from the stream while pending: nothing to run.
            return match self.settle(SettleItem::new(id)).await {
                Outcome::Completed => Outcome::Vanished,
                other => other,
            };
        };
        let data = fields.get(DATA_FIELD).cloned().unwrap_or_default();
        let prior = match self.prior_attempts(id, &fields, source).await {
            Ok(prior) => prior,
            Err(outcome) => return outcome,
        };
        // With no validator to run, decode straight into the handler's
        // payload type, skipping the raw JSON tree. What does not decode
        // takes the general path, which tells why.
        if self.options.validators.is_empty()
            && let Ok(typed) = self.options.codec.decode_task::<P>(&fields)
        {
            let span = handle_span(id, &typed, prior);
            return self.run(id, data, prior, typed).instrument(span).await;
        }
        let task: Task<Value> = match self.options.codec.decode_task(&fields) {
            Ok(task) => task,
            Err(err) => {
                let reason = DeadLetterReason::Poison(err.kind());
                return self
                    .dead_letter(id, data, None::<&Task>, reason, err.to_string(), prior)
                    .await;
            }
        };
        let span = handle_span(id, &task, prior);
        self.check_and_run(id, data, prior, task)
            .instrument(span)
            .await
    }

    /// Runs the validator, then reads the payload into `P` and runs.
    async fn check_and_run<P>(
        &self,
        id: StreamId,
        data: Bytes,
        prior: u32,
        task: Task<Value>,
    ) -> Outcome
    where
        H: Handler<P>,
        P: DeserializeOwned + Send + 'static,
    {
        if let Err(rejected) = self.options.validators.validate(&task) {
            let reason = DeadLetterReason::Rejected;
            let error = rejected.reason.clone();
            return self
                .dead_letter(id, data, Some(&task), reason, error, prior)
                .await;
        }
        if prior > task.max_retries {
            return self.exhausted(id, data, &task, prior).await;
        }
        match P::deserialize(&task.payload) {
            Ok(payload) => self.run(id, data, prior, with_payload(task, payload)).await,
            Err(err) => {
                let err = WireError::InvalidTask {
                    message: format!("payload: {err}"),
                };
                let reason = DeadLetterReason::Poison(err.kind());
                self.dead_letter(id, data, Some(&task), reason, err.to_string(), prior)
                    .await
            }
        }
    }

    /// Dead-letters a task delivered and never settled more often than it
    /// may fail: it takes its workers down with it.
    async fn exhausted<P: Sync>(
        &self,
        id: StreamId,
        data: Bytes,
        task: &Task<P>,
        prior: u32,
    ) -> Outcome {
        let error = format!("{prior} deliveries ended without an outcome");
        let reason = DeadLetterReason::MaxRetries;
        self.dead_letter(id, data, Some(task), reason, error, prior)
            .await
    }

    /// Runs the handler on a decoded task and records the outcome.
    async fn run<P>(&self, id: StreamId, data: Bytes, prior: u32, typed: Task<P>) -> Outcome
    where
        H: Handler<P>,
        P: DeserializeOwned + Send + 'static,
    {
        // What recording the outcome needs once the handler has the task.
        let task = header(&typed);
        if prior > task.max_retries {
            return self.exhausted(id, data, &task, prior).await;
        }
        if self.options.is_mutant(Mutant::AckBeforeHandle) {
            let _ = self
                .broker
                .ack(&self.keys.tasks, &self.keys.group, &[id])
                .await;
        }
        let started = tokio::time::Instant::now();
        let failure = match self.call(typed).await {
            Ok(output) => {
                let elapsed = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                return self.complete(id, data, &task, output, elapsed).await;
            }
            Err(failure) => failure,
        };
        count(FAILED, &self.agent_type, 1);
        let failed = prior + 1;
        if failed > task.max_retries || self.options.is_mutant(Mutant::DlqOnFirstFailure) {
            return self
                .dead_letter(
                    id,
                    data,
                    Some(&task),
                    DeadLetterReason::MaxRetries,
                    failure,
                    failed,
                )
                .await;
        }
        let wait = self.backoff_wait(failed);
        tracing::info!(%failure, failed, ?wait, "attempt failed; retrying after back-off");
        // The lease of a held entry is renewed meanwhile by the worker.
        tokio::time::sleep(wait).await;
        let retry = Fields::new()
            .with(DATA_FIELD, data)
            .with(ATTEMPTS_FIELD, failed.to_string());
        let item = SettleItem::new(id).append(NewEntry::new(&self.keys.tasks, retry));
        let span = tracing::info_span!("retry", task_id = %task.task_id, trace_id = task.trace_id.as_deref().unwrap_or(""), %id, failed);
        match self.settle(item).instrument(span).await {
            Outcome::Completed => {
                count(RETRIED, &self.agent_type, 1);
                Outcome::Retried
            }
            other => other,
        }
    }

    /// The handler's output, or why the attempt failed: an error, a panic or
    /// the time-out.
    async fn call<P>(&self, task: Task<P>) -> std::result::Result<Value, String>
    where
        H: Handler<P>,
        P: Send + 'static,
    {
        let run = AssertUnwindSafe(self.handler.handle(task)).catch_unwind();
        let outcome = match self.options.task_timeout {
            Some(limit) => match tokio::time::timeout(limit, run).await {
                Ok(outcome) => outcome,
                Err(_) => return Err(format!("timed out after {limit:?}")),
            },
            None => run.await,
        };
        match outcome {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(err)) => Err(err.to_string()),
            Err(panic) => Err(format!("handler panicked: {}", panic_message(&panic))),
        }
    }

    async fn complete(
        &self,
        id: StreamId,
        data: Bytes,
        task: &Task<()>,
        output: Value,
        ms: u64,
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
        match self.settle(item).instrument(span).await {
            Outcome::Completed => {
                count(COMPLETED, &self.agent_type, 1);
                Outcome::Completed
            }
            other => other,
        }
    }
}

/// The span an attempt at `task` runs in.
fn handle_span<P>(id: StreamId, task: &Task<P>, prior: u32) -> tracing::Span {
    tracing::info_span!(
        "handle",
        task_id = %task.task_id,
        trace_id = task.trace_id.as_deref().unwrap_or(""),
        %id,
        attempt = prior + 1,
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
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "non-text panic".to_owned()
    }
}
