//! Recording an attempt's outcome: the ownership-guarded settle, retried
//! until it is recorded or provably another consumer's; dead letters; and
//! the counts an attempt needs before it runs.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tracing::Instrument;

use crate::metrics::{DEAD_LETTERED, DELETED_WHILE_PENDING, count};
use crate::{
    Ack, AckAndAdd, Broker, DLQ_ENTRY_ID, DeadLetter, DeadLetterReason, DeletedRecord, Error,
    Fields, NewEntry, OnceEntry, Origin, PendingQuery, SettleItem, Settled, StreamId, Task,
    TaskResult, utc_isoformat,
};

use super::attempt::{Outcome, Shared, Source};
use super::health::duplicate;
use super::mutant::{Mutant, SETTLE_TRIES};

/// The field of a retried task entry counting the handler runs that failed
/// before it: the durable attempt counter, since Redis's own delivery count
/// is not replicated reliably, and counts deliveries, not failed runs.
pub const ATTEMPTS_FIELD: &str = "attempts";

/// The field of a task entry retried after a [`SlowDown`](super::SlowDown)
/// counting the slow-downs before it, which do not count as failed runs
/// (up to [`MAX_SLOW_DOWNS`]).
pub const SLOWED_FIELD: &str = "slowed_down";

/// Slow-downs of one task that do not burn a retry; the ones after count
/// as failed runs, so a task cannot loop for ever on an upstream that
/// always says "slow down".
pub const MAX_SLOW_DOWNS: u32 = 20;

/// The longest wait between two tries of one settle (or of one read of the
/// pending list an attempt needs): an outcome is retried for as long as it
/// takes, and should land within seconds of the broker coming back.
pub(crate) const RETRY_CAP: Duration = Duration::from_secs(5);

/// How long the marker of a `deleted_while_pending` dead letter written
/// outside a settle is kept: long past any retry of that write.
const DELETED_MARKER_WINDOW: Duration = Duration::from_secs(3600);

/// What is known of an entry before it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Prior {
    /// Handler runs that failed before this delivery ([`ATTEMPTS_FIELD`]).
    pub failed: u32,
    /// Deliveries of this entry, this one included.
    pub deliveries: u64,
    /// Slow-downs before this delivery that burnt no retry
    /// ([`SLOWED_FIELD`]).
    pub slowed: u32,
}

impl Prior {
    /// Deliveries of this entry that ended with no outcome recorded: a
    /// crash, a hand-back at shutdown, a lease lost.
    pub(crate) fn unsettled(&self) -> u64 {
        self.deliveries.saturating_sub(1)
    }
}

/// Why an entry's `attempts` field cannot be read: a peer wrote something
/// that is not a count of failed runs.
pub(crate) struct BadAttempts(pub String);

/// Reads the durable count of failed runs; missing means none.
pub(crate) fn stored_failures(fields: &Fields) -> Result<u32, BadAttempts> {
    match fields.get(ATTEMPTS_FIELD) {
        None => Ok(0),
        Some(raw) => std::str::from_utf8(raw)
            .ok()
            .and_then(|text| text.parse::<u32>().ok())
            .ok_or_else(|| {
                BadAttempts(format!(
                    "the '{ATTEMPTS_FIELD}' field is not a count of failed runs: {:?}",
                    String::from_utf8_lossy(raw)
                ))
            }),
    }
}

/// Reads the count of slow-downs; missing or unreadable means none (it
/// only bounds how many more slow-downs burn no retry).
pub(crate) fn stored_slow_downs(fields: &Fields) -> u32 {
    fields
        .get(SLOWED_FIELD)
        .and_then(|raw| std::str::from_utf8(raw).ok()?.parse().ok())
        .unwrap_or(0)
}

impl<B: Broker, H> Shared<B, H> {
    pub(crate) fn origin(&self, id: StreamId) -> Origin {
        Origin {
            stream: self.keys.tasks.clone(),
            entry_id: id,
            group: self.keys.group.clone(),
            consumer: self.consumer.clone(),
        }
    }

    /// A result's append, trimmed per the result retention.
    pub(crate) fn result_entry(&self, fields: Fields) -> NewEntry {
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

    pub(crate) fn now(&self) -> String {
        utc_isoformat(self.options.clock.now_ms().saturating_mul(1000))
    }

    /// The wait before the `tries`th retry of one step of an attempt.
    fn retry_wait(&self, tries: u32) -> Duration {
        self.backoff_wait(tries).min(RETRY_CAP)
    }

    /// This delivery's place in the entry's history: failed runs recorded in
    /// the entry, and how often it was delivered.
    ///
    /// An entry read as new was delivered once. Otherwise the pending list
    /// says, read until it answers (the entry is held and its lease renewed
    /// meanwhile): the count must be known before the handler runs, or a
    /// task whose every delivery crashes its worker would run for ever. An
    /// entry no longer pending for this consumer was taken over or settled by
    /// another: it is not run ([`Outcome::Zombie`]).
    pub(crate) async fn prior(
        &self,
        id: StreamId,
        failed: u32,
        source: Source,
    ) -> Result<Prior, Outcome> {
        if source == Source::New {
            return Ok(Prior {
                failed,
                deliveries: 1,
                slowed: 0,
            });
        }
        let query = PendingQuery::new(1)
            .range((std::ops::Bound::Included(id), std::ops::Bound::Included(id)));
        let mut tries = 0u32;
        let rows = loop {
            match self
                .broker
                .pending(&self.keys.tasks, &self.keys.group, &query)
                .await
            {
                Ok(rows) => break rows,
                Err(Error::NoGroup { .. }) => {
                    // As a settle that finds the group gone: not run here
                    // (the group is made again below it and delivers it
                    // again, or it went with its stream: the attempt's end
                    // looks). Asking again would hold the slot until the
                    // group is back, and with every slot so held the worker
                    // would never read, never see it missing, never make it
                    // again (simulator seed 2714: a rate-limited worker's
                    // drained entries, the group destroyed as they waited).
                    self.saw_group_gone();
                    tracing::warn!(%id, "the consumer group is gone; not running the entry: it runs again once the group is made again");
                    return Err(Outcome::Zombie);
                }
                Err(err) => {
                    tries = tries.saturating_add(1);
                    let wait = self.retry_wait(tries);
                    tracing::warn!(%id, error = %err, ?wait, "cannot count the deliveries; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        };
        match rows.first() {
            Some(row) if row.consumer == self.consumer => Ok(Prior {
                failed,
                deliveries: row.deliveries.max(1),
                slowed: 0,
            }),
            _ => {
                tracing::debug!(%id, "no longer pending for this consumer; not running it");
                Err(Outcome::Zombie)
            }
        }
    }

    /// Settles one item: retried, with back-off capped at [`RETRY_CAP`],
    /// until the outcome is recorded or the entry is provably another
    /// consumer's. An outcome, once produced, is never dropped: broker errors
    /// of any kind and items the broker refused to write
    /// ([`Settled::Failed`]) are logged and tried again, while the entry
    /// stays held and its lease renewed.
    ///
    /// A settle can apply and lose its reply (a time-out, a dropped
    /// connection); its retry then finds the entry no longer pending. After
    /// such an error that is this worker's own write, not a zombie: the lease
    /// kept being renewed, so no other consumer could take the entry over.
    pub(crate) async fn settle(&self, item: SettleItem) -> Outcome {
        if self.options.is_mutant(Mutant::AckBeforeHandle) {
            // No ownership guard: the outcome is written blindly.
            return self.write_unguarded(item, true).await;
        }
        let id = item.id;
        let mut reply_lost = false;
        let mut tries = 0u32;
        let outcome = loop {
            let error = match self.settler.settle(item.clone()).await {
                Ok(Settled::Done(_)) => break Outcome::Completed,
                // Also when a renewal had seen the entry deleted from the
                // stream: it stays pending for us, so an earlier try may have
                // settled it (seed 635). If instead a peer's reclaim dropped
                // it, that reclaim dead-lettered it in the same step
                // (`autoclaim_recorded`): nothing is left to write either way.
                //
                // Unless the group was found gone while the entry was held:
                // the entry may have gone with it (its stream deleted), and
                // the lost reply is then no proof it was recorded. The
                // attempt's end looks (see `Shared::saw_group_gone`).
                Ok(Settled::NotOwned) if reply_lost && !self.group_gone_while_held(id) => {
                    tracing::debug!(%id, "an earlier settle applied; its reply was lost");
                    break Outcome::Completed;
                }
                Ok(Settled::NotOwned) => {
                    tracing::warn!(%id, "entry was taken over by another consumer; not recording an outcome");
                    break Outcome::Zombie;
                }
                // The group was destroyed (or its stream deleted): the entry
                // is no longer pending to anyone, and no retry can record
                // this outcome. The group is made again below every
                // unfinished entry (group.rs), so this one is delivered and
                // run again; retrying here instead would hold a slot for
                // good, and with every slot held the worker would never
                // read, never see the group missing, never make it again.
                //
                // Unless the entry went with the group (its stream deleted
                // with `DEL`): the attempt's end looks (see
                // [`Shared::saw_group_gone`]). That holds after a try whose
                // reply was lost too: should that try have applied and the
                // finished entry been trimmed since, its dead letter is one
                // too many beside its result, never a task lost.
                Err(Error::NoGroup { .. }) => {
                    self.saw_group_gone();
                    tracing::warn!(%id, "the consumer group is gone; not recording an outcome: the entry runs again once the group is made again");
                    break Outcome::Zombie;
                }
                Ok(Settled::Failed(_)) if self.options.is_mutant(Mutant::FailedItemAcked) => {
                    let acked = self
                        .broker
                        .ack(&self.keys.tasks, &self.keys.group, &[id])
                        .await;
                    break if acked.is_ok() {
                        Outcome::Completed
                    } else {
                        Outcome::Unsettled
                    };
                }
                Ok(Settled::Failed(error)) => {
                    tracing::error!(%id, %error, "the broker refused to record an outcome; the entry stays held, retrying");
                    Error::Backend {
                        message: error,
                        source: None,
                    }
                }
                Err(err) if err.is_transient() => {
                    reply_lost = true;
                    tracing::warn!(%id, error = %err, "settle failed; retrying");
                    err
                }
                Err(err) => {
                    tracing::error!(%id, error = %err, "settle failed; the entry stays held, retrying");
                    err
                }
            };
            if tries == 0 {
                self.failing.fetch_add(1, Ordering::SeqCst);
            }
            tries = tries.saturating_add(1);
            if tries >= SETTLE_TRIES && self.options.is_mutant(Mutant::SettleGivesUp) {
                tracing::error!(%id, "settle failed {tries} times; dropping the outcome");
                break Outcome::Unsettled;
            }
            self.reporter.degraded(duplicate(&error), tries);
            tokio::time::sleep(self.retry_wait(tries)).await;
        };
        if tries > 0 {
            self.failing.fetch_sub(1, Ordering::SeqCst);
        }
        outcome
    }

    /// The mutants' way to record an outcome: its appends (and its ack if
    /// `ack`), with no ownership check.
    pub(crate) async fn write_unguarded(&self, item: SettleItem, ack: bool) -> Outcome {
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

    /// Moves the entry to the dead-letter stream (and, for a task that could
    /// be read, publishes its failure so a supervisor stops waiting).
    ///
    /// Its steps wait in a box of their own: a dead letter is the rare end
    /// of an attempt, and every attempt's state would otherwise be sized
    /// for them (see `launch` in `run.rs`).
    pub(crate) fn dead_letter<P: Sync>(
        &self,
        id: StreamId,
        data: Bytes,
        task: Option<&Task<P>>,
        reason: DeadLetterReason,
        error: String,
        failed: u32,
    ) -> impl Future<Output = Outcome> {
        Box::pin(async move {
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
        })
    }

    /// The dead letter of an entry found deleted from the stream while
    /// pending: reason `deleted_while_pending`, its origin, and `data` if
    /// this worker still has it.
    fn deleted_letter(&self, id: StreamId, data: Bytes) -> NewEntry {
        let letter = DeadLetter::new(data, "deleted from the stream while pending", 0)
            .reason(DeadLetterReason::DeletedWhilePending)
            .origin(self.origin(id))
            .dead_lettered_at(self.now());
        NewEntry::new(&self.keys.dlq, letter.to_fields())
    }

    /// The dead letter a reclaim writes, in the same step as its claim,
    /// for each pending entry it finds deleted
    /// ([`Broker::autoclaim_recorded`]): what is known of it, its id in
    /// `entry_id`, once per entry under the same marker as
    /// [`Shared::deleted_while_pending`] uses.
    pub(crate) fn deleted_record(&self) -> DeletedRecord {
        let template = self.deleted_letter(StreamId::ZERO, Bytes::new());
        let prefix = format!("{}:deleted-while-pending:", self.keys.dlq);
        DeletedRecord::new(template, DLQ_ENTRY_ID, prefix, DELETED_MARKER_WINDOW)
    }

    /// Logs and counts an entry found deleted from the stream while it was
    /// pending.
    pub(crate) fn found_deleted(&self, id: StreamId) {
        tracing::error!(%id, stream = %self.keys.tasks, "an entry was deleted from the stream while pending (trimmed or XDEL'd); dead-lettering what is known of it");
        count(DELETED_WHILE_PENDING, &self.agent_type, 1);
    }

    /// Records an entry found deleted from the stream while it was pending:
    /// never silently. It is logged, counted, and dead-lettered with reason
    /// `deleted_while_pending` and what is known of it (`data` if this
    /// worker still has it). `still_pending` says whether the entry is still
    /// in this consumer's pending list: then the dead letter is settled (and
    /// the entry acknowledged) under the ownership guard; otherwise the
    /// broker already dropped it from the pending list and the dead letter
    /// is a plain append, retried until it is written (and not written
    /// again if the reclaim that dropped it wrote it already).
    pub(crate) fn deleted_while_pending(
        &self,
        id: StreamId,
        data: Bytes,
        still_pending: bool,
    ) -> impl Future<Output = Outcome> {
        // Boxed, as a dead letter is: rare, and large.
        Box::pin(async move {
            self.found_deleted(id);
            let entry = self.deleted_letter(id, data);
            if still_pending {
                return match self.settle(SettleItem::new(id).append(entry)).await {
                    Outcome::Completed => Outcome::Vanished,
                    other => other,
                };
            }
            // Written once per entry, whoever finds it gone (a renewal, a
            // reclaim) and however often a lost reply makes it try again.
            let marker = format!("{}{id}", self.deleted_record().marker_prefix);
            let once = OnceEntry::new(entry, marker, DELETED_MARKER_WINDOW);
            let mut tries = 0u32;
            loop {
                let reply = self.broker.xadd_once(vec![once.clone()]).await;
                match reply.and_then(|mut replies| {
                    replies
                        .pop()
                        .unwrap_or_else(|| Err(Error::Protocol("no reply to an append".into())))
                }) {
                    Ok(_) => return Outcome::Vanished,
                    Err(err) => {
                        tries = tries.saturating_add(1);
                        tracing::warn!(%id, error = %err, "writing a dead letter failed; retrying");
                        tokio::time::sleep(self.retry_wait(tries)).await;
                        // A broker rolled back meanwhile to before the deletion
                        // has the entry again: it is delivered again, not dead.
                        if !self.still_gone(id).await {
                            tracing::warn!(%id, "an entry found deleted is back in the stream (the broker was rolled back); not dead-lettering it");
                            return Outcome::Zombie;
                        }
                    }
                }
            }
        })
    }
}
