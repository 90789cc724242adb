//! What a run proved: each task's [`Class`], the [`Violation`]s of the
//! invariants, and figures; one [`Report`] per seed.

use std::fmt;

use crewq_core::worker::WorkerReport;
use serde::Serialize;

use crate::history::TraceHash;
use crate::hits::Hits;
use crate::plan::FaultPlan;

/// What became of one task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// One success result, no dead letter.
    Ok,
    /// More than one success result (at-least-once allows it; counted).
    Duplicated,
    /// One dead letter, no success.
    DeadLettered,
    /// Its dispatch was acknowledged, and it has no outcome and nothing of
    /// it is pending or unread: gone.
    Lost,
    /// No outcome after the drain, but still pending or unread (or never
    /// dispatched): the system did not finish.
    Stuck,
    /// Outcomes that contradict each other (success and dead letter, two
    /// dead letters).
    Unexpected,
    /// No outcome: its entry was trimmed from the stream before any
    /// delivery, which only a trim that cuts unread entries does (the
    /// unsafe retention opt-ins, an operator's `XTRIM`); or trimmed while
    /// pending and then its group destroyed before any reclaim scan
    /// reported it deleted, so that nothing in the broker names it. What
    /// that setting or command costs, reported apart: not a crewq
    /// violation.
    LostToTrim,
    /// Outcomes that would contradict each other (a success and a dead
    /// letter, two dead letters) because its worker group was destroyed
    /// (`XGROUP DESTROY`) and made again below an entry of it already
    /// delivered: that entry, and the attempts after it, ran again; or
    /// because a broker rollback restored an entry of it a worker had
    /// already found deleted while pending, so that worker dead-lettered it
    /// as `deleted_while_pending` while the restored entry ran again. What
    /// destroying a group or losing writes costs under at-least-once,
    /// reported apart: not a crewq violation.
    Replayed,
    /// No outcome: its dispatch was acknowledged after the snapshot a
    /// broker rollback restored (AOF `everysec`, a failover to a lagging
    /// replica), so the broker forgot its entry. What that persistence
    /// setting costs, reported apart: not a crewq violation.
    LostToRollback,
    /// No outcome: an entry of it was in a task stream deleted (`DEL`, an
    /// operator's command): unread, or held by a worker that could not
    /// report it (crashed, or it learned of the deletion only after a peer
    /// made the group again). What that command costs, reported apart: not
    /// a crewq violation.
    LostToDelete,
}

/// An invariant the checker holds every run to (DESIGN.md, "The
/// simulator").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Invariant {
    /// Every acknowledged dispatch ends processed or dead-lettered.
    NoLoss,
    /// Once faults are off, everything settles within the drain limit.
    Liveness,
    /// Nothing is delivered, recorded or dead-lettered that was never
    /// dispatched.
    NoPhantom,
    /// No task both succeeds and is dead-lettered.
    NotOkAndDeadLettered,
    /// Dead-lettered only after max attempts (that many deliveries
    /// happened), or at once as poison (and poison never runs).
    DeadLetterRouting,
    /// At most one dead letter per task.
    OneDeadLetter,
    /// Nothing is left pending after the drain.
    NothingPending,
    /// A task is put back for another attempt at most `max_retries` times.
    RetriesBounded,
    /// A task is delivered at most `max_retries + 2` times, plus once per
    /// disruption (crash, pause, lost reply, failed call) while it was
    /// under way.
    RedeliveriesBounded,
    /// Outcomes are well-formed and belong to their entries' tasks; a
    /// failure result comes only with a dead letter.
    OutcomesConsistent,
    /// Every gather of a workflow returns with each task's first result.
    SupervisorGathers,
    /// The run itself completed (workers, dispatcher and gathers ended
    /// without errors).
    RunCompletes,
    /// A failing scan never starves reading: after a worker's read of its
    /// own pending entries or of peers' stale ones (`autoclaim`) failed,
    /// its next read is of new entries (issue 9, finding 2).
    ReadingNotStarved,
    /// A task never runs on two consumers at once while the first still
    /// holds its lease: a run of an entry begins on one consumer while
    /// another runs it only if the other's lease could have lapsed (it was
    /// paused, or its broker calls failed, within a lease of the takeover),
    /// also through a shutdown's grace.
    NoConcurrentRuns,
    /// A handler's success is never dropped: its worker records the outcome
    /// or finds the entry another consumer's, unless it crashed or its stop's
    /// grace ended first; so no task whose handler succeeded is
    /// dead-lettered for want of an outcome.
    SuccessRecorded,
    /// A cancelled handler's outcome is never recorded: a run whose handler
    /// found its entry another consumer's (its context cancelled) has no
    /// result, unless its worker was stopping or the broker rolled back.
    CancelledNotRecorded,
    /// A non-retryable failure dead-letters at once with its reason: a task
    /// failing for good is dead-lettered as `non_retryable`, never put back
    /// for another attempt.
    NonRetryableAtOnce,
    /// No retry and no task dispatched for later starts before its due
    /// time: a failed run's retry, or a scheduled dispatch's first attempt,
    /// enters the task stream only through the delayed set, promoted no
    /// earlier than the due time its settle or dispatch scheduled, and no
    /// handler runs a task dispatched for later before its delay has
    /// passed (virtual time).
    NotBeforeDue,
    /// An entry deleted with its stream (`DEL`) is reported: a worker
    /// whose settle of it found the group gone dead-letters it
    /// `deleted_while_pending` with its data, unless it crashed or stopped
    /// first or a rollback brought the stream back.
    DeletedWithStreamReported,
    /// An agent type's shared rate limit is never exceeded (virtual time):
    /// every handler run holds a permit of its own granted before it
    /// started, no window of the limit's length holds more grants than its
    /// count, and no more runs hold valid permits at once than its running
    /// limit (see `check/rate.rs` for what "valid" covers).
    RateLimitKept,
    /// A handler's "slow down" (an upstream's 429) is honoured: its worker
    /// pauses the whole agent type through the broker (unless that call was
    /// lost to a fault, a crash or a stop), and the broker grants no permit
    /// of the agent type while a pause runs, so no rate-limited handler of
    /// it starts then (see `check/slowdown.rs`).
    SlowDownHonoured,
    // --- priorities (issue 12) ---
    /// Under a backlog, a higher priority goes first, and no lane starves:
    /// no read across an agent type's priority lanes takes an entry while
    /// a lane of higher priority it read holds an unread one, unless the
    /// entry taken had waited the crew's starvation bound and is no younger
    /// than that one (see `check/priority.rs`).
    PriorityOrderKept,
}

impl Invariant {
    /// Its name in reports (`no_loss` ...).
    pub fn name(self) -> &'static str {
        match self {
            Invariant::NoLoss => "no_loss",
            Invariant::Liveness => "liveness",
            Invariant::NoPhantom => "no_phantom",
            Invariant::NotOkAndDeadLettered => "not_ok_and_dead_lettered",
            Invariant::DeadLetterRouting => "dead_letter_routing",
            Invariant::OneDeadLetter => "one_dead_letter",
            Invariant::NothingPending => "nothing_pending",
            Invariant::RetriesBounded => "retries_bounded",
            Invariant::RedeliveriesBounded => "redeliveries_bounded",
            Invariant::OutcomesConsistent => "outcomes_consistent",
            Invariant::SupervisorGathers => "supervisor_gathers",
            Invariant::RunCompletes => "run_completes",
            Invariant::ReadingNotStarved => "reading_not_starved",
            Invariant::NoConcurrentRuns => "no_concurrent_runs",
            Invariant::SuccessRecorded => "success_recorded",
            Invariant::CancelledNotRecorded => "cancelled_not_recorded",
            Invariant::NonRetryableAtOnce => "non_retryable_at_once",
            Invariant::NotBeforeDue => "not_before_due",
            Invariant::DeletedWithStreamReported => "deleted_with_stream_reported",
            Invariant::RateLimitKept => "rate_limit_kept",
            Invariant::SlowDownHonoured => "slow_down_honoured",
            // priorities
            Invariant::PriorityOrderKept => "priority_order_kept",
        }
    }
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One broken invariant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Which.
    pub invariant: Invariant,
    /// The task it concerns, if one.
    pub task: Option<u32>,
    /// What the checker saw.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.task {
            Some(task) => write!(f, "{}: task {task}: {}", self.invariant, self.detail),
            None => write!(f, "{}: {}", self.invariant, self.detail),
        }
    }
}

/// Tasks per class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// [`Class::Ok`].
    pub ok: u64,
    /// [`Class::Duplicated`].
    pub duplicated: u64,
    /// [`Class::DeadLettered`].
    pub dead_lettered: u64,
    /// [`Class::Lost`].
    pub lost: u64,
    /// [`Class::Stuck`].
    pub stuck: u64,
    /// [`Class::Unexpected`].
    pub unexpected: u64,
    /// [`Class::LostToTrim`]: not a violation, reported apart.
    pub lost_to_trim: u64,
    /// [`Class::Replayed`]: not a violation, reported apart.
    pub replayed: u64,
    /// [`Class::LostToRollback`]: not a violation, reported apart.
    pub lost_to_rollback: u64,
    /// [`Class::LostToDelete`]: not a violation, reported apart.
    pub lost_to_delete: u64,
}

impl Counts {
    pub(crate) fn add(&mut self, class: Class) {
        let slot = match class {
            Class::Ok => &mut self.ok,
            Class::Duplicated => &mut self.duplicated,
            Class::DeadLettered => &mut self.dead_lettered,
            Class::Lost => &mut self.lost,
            Class::Stuck => &mut self.stuck,
            Class::Unexpected => &mut self.unexpected,
            Class::LostToTrim => &mut self.lost_to_trim,
            Class::Replayed => &mut self.replayed,
            Class::LostToRollback => &mut self.lost_to_rollback,
            Class::LostToDelete => &mut self.lost_to_delete,
        };
        *slot += 1;
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &Counts) {
        self.ok += other.ok;
        self.duplicated += other.duplicated;
        self.dead_lettered += other.dead_lettered;
        self.lost += other.lost;
        self.stuck += other.stuck;
        self.unexpected += other.unexpected;
        self.lost_to_trim += other.lost_to_trim;
        self.replayed += other.replayed;
        self.lost_to_rollback += other.lost_to_rollback;
        self.lost_to_delete += other.lost_to_delete;
    }
}

/// Figures of one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RunStats {
    /// Events in the history.
    pub events: u64,
    /// Virtual (or, on Redis, real) time from start to the end of the drain.
    pub elapsed_ms: u64,
    /// Broker faults injected.
    pub broker_faults: u64,
    /// Deliveries of task entries.
    pub deliveries: u64,
    /// Handler calls.
    pub handler_calls: u64,
    /// Whether the drain reached quiescence.
    pub drained: bool,
}

/// What one run of one seed showed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// The history's fingerprint.
    #[serde(serialize_with = "hash_text")]
    pub trace_hash: TraceHash,
    /// Tasks per class.
    pub counts: Counts,
    /// Broken invariants; empty when the run passed.
    pub violations: Vec<Violation>,
    /// The fault plan the run followed.
    pub plan: FaultPlan,
    /// Figures.
    pub stats: RunStats,
    /// How often each fault class fired ([`Hits`]).
    pub hits: Hits,
    /// The workers' own counts, summed over the crew.
    #[serde(skip)]
    pub workers: WorkerReport,
}

impl Report {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for Report {
    /// A summary; every violation on a line of its own.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        write!(
            f,
            "seed {}: {} ok, {} duplicated, {} dead-lettered, {} lost, {} stuck, {} unexpected; \
             {} violations; trace {}",
            self.seed,
            c.ok,
            c.duplicated,
            c.dead_lettered,
            c.lost,
            c.stuck,
            c.unexpected,
            self.violations.len(),
            self.trace_hash
        )?;
        if c.lost_to_trim + c.replayed + c.lost_to_rollback + c.lost_to_delete > 0 {
            write!(
                f,
                " (apart: {} lost to trims, {} replayed after their group was destroyed, \
                 {} lost to rollbacks, {} lost to stream deletions)",
                c.lost_to_trim, c.replayed, c.lost_to_rollback, c.lost_to_delete
            )?;
        }
        for violation in &self.violations {
            write!(f, "\n  {violation}")?;
        }
        Ok(())
    }
}

fn hash_text<S: serde::Serializer>(hash: &TraceHash, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(hash)
}
