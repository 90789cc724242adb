//! Deliberately broken workers, to prove that a checker catches real bugs.
//!
//! A checker that never fails proves nothing. crewq-sim runs the real
//! [`Worker`](super::Worker) with one of these bugs switched on
//! ([`WorkerOptions::mutant`](super::WorkerOptions::mutant), feature
//! `mutants`) and asserts that its invariants catch each one within a few
//! seeds. Each is a one-line change at the place the real worker keeps the
//! promise the mutant breaks. Never switch one on outside a test.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};

use super::attempt::{Outcome, Shared};
use crate::{Broker, StreamId};

/// A deliberate bug in the worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(not(feature = "mutants"), allow(dead_code))]
pub enum Mutant {
    /// `ack-before-handle`: acknowledges each entry as soon as it arrives,
    /// then runs it and writes its outcome without the ownership guard, as
    /// a naive consumer does: a crash in between loses the task.
    AckBeforeHandle,
    /// `no-reclaim`: never takes over the entries of crashed or stalled
    /// consumers, nor its own whose read reply was lost.
    NoReclaim,
    /// `dlq-without-ack`: writes the dead letter but leaves the entry
    /// pending, so it is delivered (and dead-lettered) again.
    DlqWithoutAck,
    /// `dlq-on-first-failure`: dead-letters a task on its first failed
    /// attempt, whatever its `max_retries`.
    DlqOnFirstFailure,
    /// `fatal-on-unavailable`: takes a server refusing calls during a
    /// failover, restart or memory pressure (`READONLY`, `LOADING`, `OOM`:
    /// [`Error::Unavailable`](crate::Error::Unavailable)) for a lasting
    /// error and stops the worker, as crewq once did (issue 9, finding 4).
    FatalOnUnavailable,
    /// `failed-item-acked`: a settle item the broker refused to write
    /// ([`Settled::Failed`](crate::Settled::Failed)) is acknowledged and
    /// taken as recorded: its outcome is lost (issue 9, finding 6).
    FailedItemAcked,
    // --- simulator state-level fault classes (issue 9) ---
    /// `trust-task-agent-type`: validates and runs a task as the agent type
    /// its own `agent_type` field names, not as its stream's (finding 10).
    TrustTaskAgentType,
    /// `ignore-deleted`: the reclaim is a plain `XAUTOCLAIM`, not
    /// [`Broker::autoclaim_recorded`](crate::Broker::autoclaim_recorded), and
    /// the pending entries it reports deleted from the stream (the broker
    /// has already dropped them from the pending list) are ignored instead
    /// of dead-lettered: they vanish silently, the old behaviour
    /// (finding 1).
    IgnoreDeleted,
    // --- simulator half-open links (issue 9) ---
    /// `reclaim-failure-starves-read`: a failed reclaim scan neither puts
    /// the next scan off nor lets the next turn read new entries, so while
    /// scans fail (a silent shared connection) the worker scans again and
    /// again and never reads new work, as crewq once did (finding 2).
    ReclaimFailureStarvesRead,
    /// `no-renew-in-grace`: stops renewing leases as soon as a shutdown
    /// begins, while running tasks still have their grace: with a grace
    /// longer than the lease, peers take those tasks over and run them a
    /// second time while the stopping worker still runs them (finding 7).
    NoRenewInGrace,
    /// `settle-gives-up`: a settle gives up after 5 failed tries and drops
    /// the handler's output, the old behaviour: the entry is delivered again
    /// later and that delivery counts as one that ended without an outcome
    /// (finding 3).
    SettleGivesUp,
    /// `recreate-group-at-end`: re-creates a destroyed consumer group at
    /// `$`: entries unread or pending when it was destroyed, and those
    /// appended before it is made again, are never delivered.
    RecreateGroupAtEnd,
    /// `remember-settled`: a consumer-side idempotency cache, as consumers
    /// that "dedupe by message id" keep: the worker remembers the entries
    /// it settled and acknowledges, without running it, any later delivery
    /// of one of them. A broker rolled back (AOF `everysec`, a failover to
    /// a lagging replica) forgot the settle and delivers the entry again:
    /// the cache acknowledges it unrun, and the task is lost although its
    /// entry survived the rollback.
    RememberSettled,
    /// `trust-newest-sample`: a destroyed consumer group is made again from
    /// the newest sample of its floor alone, ignoring
    /// [`WorkerOptions::rollback_window`](super::WorkerOptions::rollback_window):
    /// a sample taken after a rollback's snapshot saw acknowledgements the
    /// rollback then forgot, so the group comes back above entries pending
    /// again, which are never delivered.
    TrustNewestSample,
    /// `drop-deleted-with-group`: a settle that finds the consumer group
    /// gone takes the entry for one the group, made again, delivers again,
    /// without looking whether the entry is still in the stream. An entry
    /// deleted with its stream (`DEL`), or trimmed before its group was
    /// destroyed, is never delivered again: its outcome is dropped
    /// silently, the old behaviour.
    DropDeletedWithGroup,
    // --- the handler context (issue 12) ---
    /// `record-cancelled`: a handler that finishes after its context was
    /// cancelled because another consumer took the entry over has its
    /// result written anyway, without the ownership guard: the task's
    /// outcome is recorded twice.
    RecordCancelled,
    /// `retry-non-retryable`: a [`NonRetryable`](super::NonRetryable)
    /// error is retried like any other, until max_retries.
    RetryNonRetryable,
    // --- delayed retries (issue 12) ---
    /// `retry-at-once`: the settle of a failed attempt appends its retry to
    /// the task stream at once, skipping the delayed set and its back-off:
    /// the slot is freed, but the retry starts before it is due.
    RetryAtOnce,
    // --- shared rate limits (issue 12) ---
    /// `ignore-rate-limit`: asks the broker for permits, then starts every
    /// entry it read whatever was granted: the ones past the grant run
    /// without a permit, over the agent type's shared budget.
    IgnoreRateLimit,
    /// `ignore-slow-down`: a handler's [`SlowDown`](super::SlowDown) does
    /// not pause its agent type through the broker: the task's retry still
    /// waits the pause, but every other worker goes on starting tasks
    /// against an upstream that asked for a pause.
    IgnoreSlowDown,
    // --- scheduled dispatch (issue 12) ---
    /// `schedule-at-once`: the producer's
    /// [`dispatch_in`](crate::producer::Producer::dispatch_in) and
    /// [`dispatch_at`](crate::producer::Producer::dispatch_at) append the
    /// task to its stream at once, ignoring the delay: it starts before it
    /// is due. A producer's mutant
    /// ([`Producer::with_mutant`](crate::producer::Producer::with_mutant)),
    /// not a worker's.
    ScheduleAtOnce,
    // --- priorities (issue 12) ---
    /// `ignore-priority`: lane 0's reads take the lanes lowest first and as
    /// if all had priority 0 (oldest first within the lowest lane that has
    /// any): a higher-priority task waits behind a lower backlog.
    IgnorePriority,
}

/// Tries of one settle before the `settle-gives-up` mutant drops its
/// outcome (the old worker's limit).
#[cfg_attr(not(feature = "mutants"), allow(dead_code))]
pub(crate) const SETTLE_TRIES: u32 = 5;

#[cfg(feature = "mutants")]
impl Mutant {
    /// Every mutant.
    pub const ALL: [Mutant; 22] = [
        Mutant::AckBeforeHandle,
        Mutant::NoReclaim,
        Mutant::DlqWithoutAck,
        Mutant::DlqOnFirstFailure,
        Mutant::FatalOnUnavailable,
        Mutant::FailedItemAcked,
        // simulator state-level fault classes
        Mutant::TrustTaskAgentType,
        Mutant::IgnoreDeleted,
        // simulator half-open links
        Mutant::ReclaimFailureStarvesRead,
        // shutdown grace longer than the lease; outcomes kept through outages
        Mutant::NoRenewInGrace,
        Mutant::SettleGivesUp,
        Mutant::RecreateGroupAtEnd,
        Mutant::RememberSettled,
        Mutant::TrustNewestSample,
        Mutant::DropDeletedWithGroup,
        // the handler context
        Mutant::RecordCancelled,
        Mutant::RetryNonRetryable,
        // delayed retries
        Mutant::RetryAtOnce,
        // shared rate limits
        Mutant::IgnoreRateLimit,
        Mutant::IgnoreSlowDown,
        // scheduled dispatch
        Mutant::ScheduleAtOnce,
        // priorities
        Mutant::IgnorePriority,
    ];

    /// Its name on the command line (`ack-before-handle` ...).
    pub fn name(self) -> &'static str {
        match self {
            Mutant::AckBeforeHandle => "ack-before-handle",
            Mutant::NoReclaim => "no-reclaim",
            Mutant::DlqWithoutAck => "dlq-without-ack",
            Mutant::DlqOnFirstFailure => "dlq-on-first-failure",
            Mutant::FatalOnUnavailable => "fatal-on-unavailable",
            Mutant::FailedItemAcked => "failed-item-acked",
            Mutant::TrustTaskAgentType => "trust-task-agent-type",
            Mutant::IgnoreDeleted => "ignore-deleted",
            Mutant::ReclaimFailureStarvesRead => "reclaim-failure-starves-read",
            Mutant::NoRenewInGrace => "no-renew-in-grace",
            Mutant::SettleGivesUp => "settle-gives-up",
            Mutant::RecreateGroupAtEnd => "recreate-group-at-end",
            Mutant::RememberSettled => "remember-settled",
            Mutant::TrustNewestSample => "trust-newest-sample",
            Mutant::DropDeletedWithGroup => "drop-deleted-with-group",
            Mutant::RecordCancelled => "record-cancelled",
            Mutant::RetryNonRetryable => "retry-non-retryable",
            Mutant::RetryAtOnce => "retry-at-once",
            Mutant::IgnoreRateLimit => "ignore-rate-limit",
            Mutant::IgnoreSlowDown => "ignore-slow-down",
            Mutant::ScheduleAtOnce => "schedule-at-once",
            Mutant::IgnorePriority => "ignore-priority",
        }
    }
}

#[cfg(feature = "mutants")]
impl std::fmt::Display for Mutant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(feature = "mutants")]
impl std::str::FromStr for Mutant {
    type Err = String;

    /// Reads a mutant's [name](Mutant::name).
    ///
    /// ```
    /// use crewq_core::worker::Mutant;
    /// assert_eq!("no-reclaim".parse::<Mutant>(), Ok(Mutant::NoReclaim));
    /// assert!("no-such-bug".parse::<Mutant>().unwrap_err().contains("dlq-without-ack"));
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mutant::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Mutant::ALL.iter().map(|m| m.name()).collect();
                format!("unknown mutant '{s}'; known: {}", names.join(", "))
            })
    }
}

/// The `remember-settled` mutant's cache: the entries this worker settled.
/// Empty and unused in the real worker.
#[derive(Debug, Default)]
pub(crate) struct SettledIds(Mutex<BTreeSet<StreamId>>);

impl<B, H> Shared<B, H> {
    /// How far back a re-created group's samples must reach
    /// ([`WorkerOptions::rollback_window`](super::WorkerOptions::rollback_window));
    /// none for the `trust-newest-sample` mutant.
    pub(crate) fn rollback_window(&self) -> std::time::Duration {
        if self.options.is_mutant(Mutant::TrustNewestSample) {
            std::time::Duration::ZERO
        } else {
            self.options.rollback_window
        }
    }
}

impl<B: Broker, H> Shared<B, H> {
    /// The `remember-settled` mutant: acknowledges entry `id` unrun if this
    /// worker settled it before. Returns whether it did.
    pub(crate) async fn skips_remembered(&self, id: StreamId) -> bool {
        if !self.options.is_mutant(Mutant::RememberSettled) || !self.settled_ids.holds(id) {
            return false;
        }
        let keys = &self.keys;
        let _ = self.broker.ack(&keys.tasks, &keys.group, &[id]).await;
        true
    }

    /// The `remember-settled` mutant: remembers entry `id` if its attempt
    /// settled it.
    pub(crate) fn remember_settled(&self, id: StreamId, outcome: Outcome) {
        let settled = matches!(
            outcome,
            Outcome::Completed | Outcome::Retried | Outcome::SlowedDown | Outcome::DeadLettered
        );
        if settled && self.options.is_mutant(Mutant::RememberSettled) {
            self.settled_ids.lock().insert(id);
        }
    }
}

impl SettledIds {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<StreamId>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn holds(&self, id: StreamId) -> bool {
        self.lock().contains(&id)
    }
}
