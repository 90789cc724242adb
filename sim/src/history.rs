//! What happened in a run: an append-only list of events stamped with
//! (virtual) time, canonically encoded one line each and hashed.
//!
//! The same seed gives the same history, byte for byte, so its hash is the
//! run's fingerprint: two runs of a seed that differ in any event differ in
//! hash, and [`History::first_difference`] points at the first event that
//! differs.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use crewq_core::StreamId;
use tokio::time::Instant;

use crate::{Conn, Fault, Op};

/// One thing that happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A dispatch of task `task` was acknowledged: its entry is `entry`.
    Dispatched {
        /// The task's index.
        task: u32,
        /// Its entry in the task stream.
        entry: StreamId,
    },
    /// A dispatch of task `task` for later was acknowledged (issue 12's
    /// scheduled dispatch): it has no entry until a promote appends one.
    DispatchedLater {
        /// The task's index.
        task: u32,
        /// When it is due at the earliest, in ms from the start: its delay
        /// after the first try of its dispatch.
        due_ms: u64,
    },
    /// The broker appended an entry (what it applied, reply lost or not).
    Appended {
        /// The stream.
        stream: String,
        /// The new entry.
        id: StreamId,
    },
    /// The broker delivered an entry to a consumer (a read or a claim).
    Delivered {
        /// The stream.
        stream: String,
        /// The reader.
        consumer: String,
        /// The entry.
        id: StreamId,
    },
    /// An entry was settled by its owner: outcome appended, acknowledged.
    Settled {
        /// The stream.
        stream: String,
        /// The owner.
        consumer: String,
        /// The entry.
        id: StreamId,
        /// What was appended for it.
        appended: Vec<StreamId>,
    },
    /// A settle was refused: the consumer no longer owned the entry.
    Refused {
        /// The stream.
        stream: String,
        /// The consumer that tried.
        consumer: String,
        /// The entry.
        id: StreamId,
    },
    /// Entries were acknowledged outside a settle (`XACK`, `ack_and_add`).
    Acked {
        /// The stream.
        stream: String,
        /// The ids asked for.
        ids: Vec<StreamId>,
        /// How many left the pending list.
        count: u64,
    },
    /// A handler call began.
    HandlerStarted {
        /// The task's index.
        task: u32,
        /// The worker's consumer name.
        consumer: String,
        /// The call, counted from 1 over the crew.
        call: u32,
        /// The entry it runs, as its context says (`None` in hand-built
        /// histories: the checker then takes the first entry of the
        /// task's last delivery not run yet).
        entry: Option<StreamId>,
    },
    /// A handler call returned (a hang never does; a crash cuts it off).
    HandlerEnded {
        /// The task's index.
        task: u32,
        /// The worker's consumer name.
        consumer: String,
        /// The call.
        call: u32,
        /// Whether it succeeded.
        ok: bool,
    },
    /// A handler call found its context cancelled because its entry is
    /// another consumer's ([`Context::extend_lease`] said so): its outcome
    /// must not be recorded.
    ///
    /// [`Context::extend_lease`]: crewq_core::worker::Context::extend_lease
    HandlerCancelled {
        /// The task's index.
        task: u32,
        /// The worker's consumer name.
        consumer: String,
        /// The call.
        call: u32,
    },
    /// A worker was killed.
    Crashed {
        /// Its slot.
        worker: u32,
        /// Its consumer name.
        consumer: String,
    },
    /// A worker (re)started.
    Started {
        /// Its slot.
        worker: u32,
        /// Its consumer name.
        consumer: String,
    },
    /// A worker froze until `until_ms`.
    Paused {
        /// Its slot.
        worker: u32,
        /// The end of the pause, in ms from the start.
        until_ms: u64,
    },
    /// A broker fault took effect on a call of `actor`.
    Fault {
        /// Whose broker handle: a consumer name, `producer` or `supervisor`.
        actor: String,
        /// The call's number on that handle.
        seq: u64,
        /// The operation.
        op: Op,
        /// What was done to it.
        fault: Fault,
    },
    /// Faults were switched off: the drain began.
    FaultsOff,
    /// Nothing was pending or unread any more.
    Quiescent,
    /// The drain reached its limit with work left.
    DrainGaveUp,
    /// A supervisor's gather of workflow `workflow` returned.
    Gathered {
        /// The workflow's index.
        workflow: u32,
        /// Results it got.
        results: usize,
        /// Tasks it missed.
        missing: usize,
        /// Extra results it read.
        duplicates: u64,
    },
    /// A gather still waiting at the end was given up.
    GatherAbandoned {
        /// The workflow's index.
        workflow: u32,
    },
    /// A trim (`XTRIM`, a retention's or an injected one) removed entries.
    Trimmed {
        /// The stream.
        stream: String,
        /// How many entries it removed.
        removed: u64,
    },
    /// A worker's read (a `read_group`: of its own pending entries on the
    /// shared connection, of new ones on a blocking one; or an `autoclaim`)
    /// returned, while faults were on.
    Read {
        /// The worker's consumer name.
        consumer: String,
        /// `read_group`, `autoclaim` or `autoclaim_recorded` (the worker's reclaim scan).
        op: Op,
        /// The connection it went on.
        conn: Conn,
        /// Whether it got a reply rather than an error.
        ok: bool,
    },
    /// A worker was asked to stop gracefully: it reads no more, and its
    /// running tasks get `grace_ms` to finish.
    StopRequested {
        /// Its slot.
        worker: u32,
        /// Its consumer name.
        consumer: String,
        /// The grace given, in ms.
        grace_ms: u64,
    },
    /// A worker asked to stop (by the plan, or at the end of the run) has
    /// stopped: its running tasks finished or, at the end of the grace,
    /// were cut off and handed back.
    Stopped {
        /// Its slot.
        worker: u32,
        /// Its consumer name.
        consumer: String,
        /// Attempts cut off at the end of the grace and handed back (its
        /// report's count).
        handed_back: u64,
    },
    /// A stream's worker group was destroyed (`XGROUP DESTROY`, injected).
    GroupDestroyed {
        /// The stream.
        stream: String,
    },
    /// What an injected trim removed.
    Cut {
        /// The stream.
        stream: String,
        /// Entries the group's pending list still names: crewq must report
        /// them.
        pending: Vec<StreamId>,
        /// Entries not pending (finished, or unread by the group's current
        /// life): lost to the trim if they had no outcome.
        unread: Vec<StreamId>,
    },
    /// A task stream was deleted (`DEL`, injected): its entries and its
    /// group went with it (a `GroupDestroyed` of it comes just before).
    StreamDeleted {
        /// The stream.
        stream: String,
        /// Entries the group's pending list named: a worker that finds the
        /// group gone must dead-letter those it holds.
        pending: Vec<StreamId>,
        /// The other entries (finished, or unread): lost to the delete if
        /// they had no outcome.
        unread: Vec<StreamId>,
    },
    /// A renewal extended the leases of `ids` for `consumer`.
    Renewed {
        /// The stream.
        stream: String,
        /// The worker's consumer name.
        consumer: String,
        /// The entries whose leases it renewed.
        ids: Vec<StreamId>,
    },
    /// A worker's call found its group gone (`NOGROUP`: a read, a reclaim
    /// scan, a renewal or a settle, whose items are also `Refused`). The
    /// worker then knows the group went: what it holds and finds gone from
    /// the stream went with it.
    NoGroupSeen {
        /// The stream.
        stream: String,
        /// The worker's consumer name.
        consumer: String,
        /// The call (`read_group`, `autoclaim`, `renew`, `settle` ...).
        op: &'static str,
    },
    /// A reclaim scan (`XAUTOCLAIM`) reported a pending entry deleted from
    /// its stream: a worker learned of it.
    FoundDeleted {
        /// The stream.
        stream: String,
        /// The entry.
        id: StreamId,
    },
    /// A settle put a task's retry in a delayed set, or a scheduled
    /// dispatch its first attempt (`attempts` 0).
    Scheduled {
        /// The task's index.
        task: u32,
        /// The failed runs the retry records (0: a scheduled dispatch).
        attempts: u32,
        /// When it is due, in ms from the start (the broker's virtual clock).
        due_ms: u64,
        /// The slow-downs the retry records (its `slowed_down` field): a
        /// retry after a slow-down keeps its failed runs, so one of a first
        /// attempt has `attempts` 0 too, and is no scheduled dispatch.
        slowed: u32,
    },
    /// A promote appended a task's retry, or its first attempt dispatched
    /// for later, to its stream.
    Promoted {
        /// The task's index.
        task: u32,
        /// The failed runs the retry records (0: a first attempt).
        attempts: u32,
        /// The new entry.
        id: StreamId,
    },
    /// A settle appended a task's retry straight to its own task stream,
    /// skipping the delayed set: its back-off was not waited.
    RequeuedAtOnce {
        /// The task's index.
        task: u32,
        /// The new entry.
        id: StreamId,
    },
    /// The broker granted shared rate-limit permits (a `rate_acquire`
    /// applied, its reply delivered or not).
    RateGranted {
        /// The rate limit's log of starts: names the agent type.
        starts: String,
        /// The grant's time on the broker's clock, in ms.
        broker_ms: u64,
        /// How long the running permits live unless renewed, in ms.
        lease_ms: u64,
        /// The permits granted.
        permits: Vec<String>,
        /// When the call was sent, in µs from the start (not encoded): the
        /// grant was applied between this and `replied_us`.
        sent_us: u64,
        /// When its reply came back, in µs from the start (not encoded).
        replied_us: u64,
    },
    /// Rate-limit permits were released (a `rate_release` applied).
    RateReleased {
        /// The rate limit's log of starts.
        starts: String,
        /// Permits whose runs ended: their starts stay in the log.
        finished: Vec<String>,
        /// Permits granted and never used: their starts leave the log.
        unused: Vec<String>,
    },
    /// A handler call ran under this rate-limit permit
    /// ([`Context::rate_permit`]), recorded just after its start.
    ///
    /// [`Context::rate_permit`]: crewq_core::worker::Context::rate_permit
    RunPermit {
        /// The task's index.
        task: u32,
        /// The call.
        call: u32,
        /// The permit.
        permit: String,
    },
    /// A handler call said "slow down" (an upstream's 429: it returned a
    /// [`SlowDown`](crewq_core::worker::SlowDown)), recorded as it returned.
    SlowedDown {
        /// The task's index.
        task: u32,
        /// The call.
        call: u32,
        /// The task's agent type.
        agent: String,
        /// The worker that ran it.
        consumer: String,
        /// The pause asked for, in ms.
        pause_ms: u64,
        /// Whether the call's context was cancelled when it returned (its
        /// worker stopping, or the entry lost): the worker then records
        /// nothing and pauses nothing.
        cancelled: bool,
    },
    /// The broker paused an agent type's rate limit (a `rate_pause`
    /// applied, its reply delivered or not).
    RatePaused {
        /// The rate limit's log of starts: names the agent type.
        starts: String,
        /// When the call was sent, in µs from the start: the pause began
        /// between this and `replied_us`.
        sent_us: u64,
        /// When its reply came back, in µs from the start.
        replied_us: u64,
        /// The pause asked for, in ms.
        pause_ms: u64,
        /// How long the agent type was paused from then on, in ms (the
        /// later end wins).
        left_ms: u64,
    },
    /// The broker was restored to its state at `snapshot_ms` (a rollback):
    /// the appends since are forgotten, and so are the acknowledgements,
    /// deliveries and trims since, which the history does not list again.
    RolledBack {
        /// When the restored state was taken, in ms from the start.
        snapshot_ms: u64,
        /// The appends it forgot, in the order they were applied.
        forgotten: Vec<(String, StreamId)>,
        /// The tasks whose scheduled dispatch (a first attempt put in a
        /// delayed set) it forgot, once per schedule, in order.
        unscheduled: Vec<u32>,
    },
    // --- priorities (issue 12) ---
    /// A worker's read across priority lanes (`read_lanes`) applied and
    /// took entries (recorded just before their `Delivered`s; on the memory
    /// backend, in the broker's order of applying).
    LanesRead {
        /// The reader.
        consumer: String,
        /// The broker's clock at the read, in ms since the epoch (as entry
        /// ids count time).
        now_ms: u64,
        /// The lane streams it read, in the order asked, without those
        /// whose group it found missing (`no_group`: nothing was read from
        /// them).
        lanes: Vec<String>,
        /// The entries it took, in the order it took them.
        taken: Vec<(String, StreamId)>,
    },
}

/// An event and when it happened, in ms from the start of the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamped {
    /// Milliseconds from the start (virtual on the memory backend).
    pub at_ms: u64,
    /// What happened.
    pub event: Event,
}

/// A run's history, in the order things happened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    events: Vec<Stamped>,
}

/// A history's fingerprint: the first 64 bits of the BLAKE3 hash of its
/// canonical encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TraceHash(pub u64);

impl fmt::Display for TraceHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Where two histories part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// The index of the first event that differs.
    pub index: usize,
    /// That event in the first history, encoded (none: it ended).
    pub first: Option<String>,
    /// That event in the second history, encoded (none: it ended).
    pub second: Option<String>,
}

impl History {
    /// The events, in order.
    pub fn events(&self) -> &[Stamped] {
        &self.events
    }

    /// The number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// A history of `events` (for tests that tamper with one).
    #[cfg(test)]
    pub(crate) fn from_events(events: Vec<Stamped>) -> History {
        History { events }
    }

    /// Appends an event (for tests that tamper with a history).
    #[cfg(test)]
    pub(crate) fn push(&mut self, stamped: Stamped) {
        self.events.push(stamped);
    }

    /// The canonical encoding: one line per event, `<ms> <event>`.
    pub fn encode(&self) -> String {
        self.events.iter().map(|e| format!("{e}\n")).collect()
    }

    /// The hash of [`History::encode`].
    pub fn hash(&self) -> TraceHash {
        let mut hasher = blake3::Hasher::new();
        let mut line = String::new();
        for event in &self.events {
            line.clear();
            use std::fmt::Write;
            // Writing to a String cannot fail.
            let _ = writeln!(line, "{event}");
            hasher.update(line.as_bytes());
        }
        let digest = hasher.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest.as_bytes()[..8]);
        TraceHash(u64::from_be_bytes(first))
    }

    /// The first event where `self` and `other` differ, if any.
    pub fn first_difference(&self, other: &History) -> Option<Divergence> {
        let longest = self.events.len().max(other.events.len());
        (0..longest).find_map(|index| {
            let (a, b) = (self.events.get(index), other.events.get(index));
            (a != b).then(|| Divergence {
                index,
                first: a.map(ToString::to_string),
                second: b.map(ToString::to_string),
            })
        })
    }
}

/// Appends to a history being made; clones share it.
#[derive(Clone, Debug)]
pub(crate) struct Recorder {
    start: Instant,
    events: Arc<Mutex<Vec<Stamped>>>,
}

impl Recorder {
    /// A recorder whose time 0 is now.
    pub fn new() -> Self {
        Recorder {
            start: Instant::now(),
            events: Arc::default(),
        }
    }

    /// Milliseconds since the start.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Microseconds since the start: finer than the events' stamps, for
    /// ordering a call's send after another's reply.
    pub fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// The instant `ms` after the start.
    pub fn at(&self, ms: u64) -> Instant {
        self.start + std::time::Duration::from_millis(ms)
    }

    pub fn record(&self, event: Event) {
        let at_ms = self.now_ms();
        // Nothing under this lock panics; a poisoned one still holds every
        // event recorded.
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Stamped { at_ms, event });
    }

    /// The history so far.
    pub fn history(&self) -> History {
        History {
            events: self
                .events
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}

impl fmt::Display for Stamped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.at_ms, self.event)
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Dispatched { task, entry } => write!(f, "dispatched task={task} entry={entry}"),
            Event::DispatchedLater { task, due_ms } => {
                write!(f, "dispatched-later task={task} due={due_ms}")
            }
            Event::Appended { stream, id } => write!(f, "appended {stream} {id}"),
            Event::Delivered {
                stream,
                consumer,
                id,
            } => write!(f, "delivered {stream} {id} to={consumer}"),
            Event::Settled {
                stream,
                consumer,
                id,
                appended,
            } => {
                write!(f, "settled {stream} {id} by={consumer} appended=")?;
                ids(f, appended)
            }
            Event::Refused {
                stream,
                consumer,
                id,
            } => write!(f, "refused {stream} {id} by={consumer}"),
            Event::Acked {
                stream,
                ids: acked,
                count,
            } => {
                write!(f, "acked {stream} count={count} ids=")?;
                ids(f, acked)
            }
            Event::HandlerStarted {
                task,
                consumer,
                call,
                ..
            } => write!(f, "handler-start task={task} call={call} by={consumer}"),
            Event::HandlerCancelled {
                task,
                consumer,
                call,
            } => write!(f, "handler-cancelled task={task} call={call} by={consumer}"),
            Event::HandlerEnded {
                task,
                consumer,
                call,
                ok,
            } => write!(
                f,
                "handler-end task={task} call={call} by={consumer} ok={ok}"
            ),
            Event::Crashed { worker, consumer } => write!(f, "crashed w{worker} {consumer}"),
            Event::Started { worker, consumer } => write!(f, "started w{worker} {consumer}"),
            Event::Paused { worker, until_ms } => write!(f, "paused w{worker} until={until_ms}"),
            Event::Fault {
                actor,
                seq,
                op,
                fault,
            } => write!(f, "fault {actor} call={seq} {op} {fault:?}"),
            Event::FaultsOff => f.write_str("faults-off"),
            Event::Quiescent => f.write_str("quiescent"),
            Event::DrainGaveUp => f.write_str("drain-gave-up"),
            Event::Gathered {
                workflow,
                results,
                missing,
                duplicates,
            } => write!(
                f,
                "gathered workflow={workflow} results={results} missing={missing} duplicates={duplicates}"
            ),
            Event::GatherAbandoned { workflow } => {
                write!(f, "gather-abandoned workflow={workflow}")
            }
            Event::Trimmed { stream, removed } => {
                write!(f, "trimmed {stream} removed={removed}")
            }
            Event::Read {
                consumer,
                op,
                conn,
                ok,
            } => write!(f, "read {consumer} {op} conn={conn:?} ok={ok}"),
            Event::StopRequested {
                worker,
                consumer,
                grace_ms,
            } => write!(f, "stop w{worker} {consumer} grace={grace_ms}"),
            Event::Stopped {
                worker,
                consumer,
                handed_back,
            } => write!(f, "stopped w{worker} {consumer} handed_back={handed_back}"),
            Event::GroupDestroyed { stream } => write!(f, "group-destroyed {stream}"),
            Event::Cut {
                stream,
                pending,
                unread,
            } => write!(
                f,
                "cut {stream} pending={} unread={}",
                pending.len(),
                unread.len()
            ),
            Event::StreamDeleted {
                stream,
                pending,
                unread,
            } => write!(
                f,
                "stream-deleted {stream} pending={} unread={}",
                pending.len(),
                unread.len()
            ),
            Event::Renewed {
                stream,
                consumer,
                ids,
            } => write!(f, "renewed {stream} {consumer} n={}", ids.len()),
            Event::NoGroupSeen {
                stream,
                consumer,
                op,
            } => write!(f, "no-group {stream} {consumer} {op}"),
            Event::FoundDeleted { stream, id } => write!(f, "found-deleted {stream} {id}"),
            Event::Scheduled {
                task,
                attempts,
                due_ms,
                slowed,
            } => {
                write!(f, "scheduled t{task} a{attempts} due {due_ms}")?;
                // Only when there are some: histories without slow-downs
                // encode as before.
                if *slowed > 0 {
                    write!(f, " slowed {slowed}")?;
                }
                Ok(())
            }
            Event::Promoted { task, attempts, id } => {
                write!(f, "promoted t{task} a{attempts} {id}")
            }
            Event::RequeuedAtOnce { task, id } => write!(f, "requeued-at-once t{task} {id}"),
            Event::RateGranted {
                starts,
                broker_ms,
                lease_ms,
                permits,
                ..
            } => write!(
                f,
                "rate-granted {starts} at={broker_ms} lease={lease_ms} [{}]",
                permits.join(",")
            ),
            Event::RateReleased {
                starts,
                finished,
                unused,
            } => write!(
                f,
                "rate-released {starts} finished=[{}] unused=[{}]",
                finished.join(","),
                unused.join(",")
            ),
            Event::RunPermit { task, call, permit } => {
                write!(f, "run-permit task={task} call={call} {permit}")
            }
            Event::SlowedDown {
                task,
                call,
                agent,
                consumer,
                pause_ms,
                cancelled,
            } => write!(
                f,
                "slowed-down task={task} call={call} {agent} by={consumer} pause={pause_ms} cancelled={cancelled}"
            ),
            Event::RatePaused {
                starts,
                sent_us,
                replied_us,
                pause_ms,
                left_ms,
            } => write!(
                f,
                "rate-paused {starts} sent={sent_us}us replied={replied_us}us pause={pause_ms} left={left_ms}"
            ),
            Event::RolledBack {
                snapshot_ms,
                forgotten,
                unscheduled,
            } => {
                write!(f, "rolled-back to={snapshot_ms} forgotten=[")?;
                for (n, (stream, id)) in forgotten.iter().enumerate() {
                    let comma = if n > 0 { "," } else { "" };
                    write!(f, "{comma}{stream} {id}")?;
                }
                f.write_str("]")?;
                // Only when there are some: histories without scheduled
                // dispatch encode as before.
                if !unscheduled.is_empty() {
                    write!(f, " unscheduled={unscheduled:?}")?;
                }
                Ok(())
            }
            Event::LanesRead {
                consumer,
                now_ms,
                lanes,
                taken,
            } => {
                write!(
                    f,
                    "lanes-read {consumer} now={now_ms} [{}] taken=[",
                    lanes.join(",")
                )?;
                for (n, (stream, id)) in taken.iter().enumerate() {
                    let comma = if n > 0 { "," } else { "" };
                    write!(f, "{comma}{stream} {id}")?;
                }
                f.write_str("]")
            }
        }
    }
}

fn ids(f: &mut fmt::Formatter<'_>, ids: &[StreamId]) -> fmt::Result {
    f.write_str("[")?;
    for (n, id) in ids.iter().enumerate() {
        if n > 0 {
            f.write_str(",")?;
        }
        write!(f, "{id}")?;
    }
    f.write_str("]")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(events: &[(u64, Event)]) -> History {
        History {
            events: events
                .iter()
                .map(|(at_ms, event)| Stamped {
                    at_ms: *at_ms,
                    event: event.clone(),
                })
                .collect(),
        }
    }

    #[test]
    fn equal_histories_hash_equal_and_do_not_differ() {
        let a = history(&[(0, Event::FaultsOff), (5, Event::Quiescent)]);
        assert_eq!(a.hash(), a.clone().hash());
        assert_eq!(a.first_difference(&a.clone()), None);
        assert_eq!(a.encode(), "0 faults-off\n5 quiescent\n");
    }

    #[test]
    fn the_first_differing_event_is_found_and_changes_the_hash() {
        let a = history(&[(0, Event::FaultsOff), (5, Event::Quiescent)]);
        let b = history(&[(0, Event::FaultsOff), (6, Event::Quiescent)]);
        assert_ne!(a.hash(), b.hash());
        let diff = a.first_difference(&b).expect("they differ");
        assert_eq!(diff.index, 1);
        assert_eq!(diff.first.as_deref(), Some("5 quiescent"));
        assert_eq!(diff.second.as_deref(), Some("6 quiescent"));

        let shorter = history(&[(0, Event::FaultsOff)]);
        let diff = a.first_difference(&shorter).expect("one is longer");
        assert_eq!((diff.index, diff.second), (1, None));
    }
}
